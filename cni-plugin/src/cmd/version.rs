// SPDX-License-Identifier: Apache-2.0
//! VERSION: which spec versions this plugin speaks.

/// The VERSION answer: `{"cniVersion":"1.1.0","supportedVersions":[…]}`.
pub fn run() -> String {
    crate::version::version_info().to_string()
}
