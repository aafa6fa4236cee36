// SPDX-License-Identifier: Apache-2.0
//! The CNI spec versions this plugin speaks, and the VERSION answer. Depends on nothing else in
//! the crate, so errors, configuration and results can all name a version.

use std::{fmt, str::FromStr};

use serde_json::Value;

/// A CNI spec version this plugin speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// The newest version: used for VERSION output and for errors when the caller's version is
    /// unknown.
    pub const LATEST: Self = Self::V1_1_0;
    /// Every version this plugin accepts, oldest first.
    pub const SUPPORTED: [Self; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn supports_gc_and_status(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results before 1.0.0 carry `"version"` in each `ips` entry.
    pub(crate) fn legacy_ips(self) -> bool {
        self < Self::V1_0_0
    }

    /// Interfaces carry `mtu` from 1.1.0 on.
    pub(crate) fn interface_mtu(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `cniVersion` this plugin does not speak (CNI error code 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI version {requested} is not supported")]
pub struct UnsupportedVersion {
    pub requested: String,
}

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion {
                requested: s.to_owned(),
            })
    }
}

/// The VERSION answer.
pub fn version_info() -> Value {
    serde_json::json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::SUPPORTED.map(CniVersion::as_str),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        let err = crate::error::CniError::from("0.2.0".parse::<CniVersion>().unwrap_err());
        assert_eq!(err.code(), 1);
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_gc_and_status());
        assert!(CniVersion::V1_1_0.supports_gc_and_status());
    }

    #[test]
    fn version_info_lists_everything() {
        assert_eq!(
            version_info().to_string(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
