// SPDX-License-Identifier: Apache-2.0
//! Where the lab finds the Weir binaries and its own directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::names::{normalize_dir, DEFAULT_LAB_DIR, LAB_DIR_ENV};

/// Environment variable naming the directory holding `weir`, `weir-agent` and `weir-lab`.
pub const BIN_DIR_ENV: &str = "WEIR_BIN_DIR";

/// The directory the binaries are looked up in: `$WEIR_BIN_DIR`, else the current executable's
/// directory, or its parent when that is cargo's `target/<profile>/deps/` (test executables).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    bin_dir_for_exe(&exe)
}

/// [`bin_dir`] for a given executable path.
pub fn bin_dir_for_exe(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of the Weir binary `name` (which may not exist; see [`require_bin`]).
pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Path of the Weir binary `name`, or an error saying how to get it.
pub fn require_bin(name: &str) -> Result<PathBuf> {
    let path = bin_path(name);
    if !path.is_file() {
        bail!(
            "{name} not found at {} (build the workspace with `cargo build`, or point {BIN_DIR_ENV} at the directory holding it)",
            path.display()
        );
    }
    Ok(path)
}

/// The lab directory: `explicit`, else `$WEIR_LAB_DIR`, else `/run/weir-lab`; normalized.
pub fn lab_dir(explicit: Option<&Path>) -> PathBuf {
    let dir = explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os(LAB_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_LAB_DIR), PathBuf::from)
    });
    normalize_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_sit_next_to_the_executable_or_above_deps() {
        assert_eq!(
            bin_dir_for_exe(Path::new("/w/target/debug/weir-lab")),
            PathBuf::from("/w/target/debug")
        );
        assert_eq!(
            bin_dir_for_exe(Path::new("/w/target/release/deps/lab-0123abcd")),
            PathBuf::from("/w/target/release")
        );
    }

    #[test]
    fn explicit_lab_dir_wins_and_is_normalized() {
        assert_eq!(
            lab_dir(Some(Path::new("/tmp/x/../lab"))),
            PathBuf::from("/tmp/lab")
        );
    }
}
