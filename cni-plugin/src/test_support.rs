// SPDX-License-Identifier: Apache-2.0
//! Helpers for unit tests.

pub use tempfile::TempDir;
