// SPDX-License-Identifier: Apache-2.0
//! Shared by the privileged integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Return early (loudly) from a test that needs root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !weir_tests::is_root() {
            eprintln!("SKIPPED: {} needs root", module_path!());
            return;
        }
    };
}

/// What the machine's own network namespace looks like; must be identical before and after.
pub fn root_netns_snapshot() -> String {
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    format!(
        "{}\n{}\n{}\n{}\nip_forward={forwarding}",
        run(&["-o", "link", "show"]),
        run(&["-o", "addr", "show"]),
        run(&["route", "show", "table", "all"]),
        run(&["rule", "show"]),
    )
}

/// A directory holding `weir-agent` and `weir` (both the fake) and `weir-lab`, for `WEIR_BIN_DIR`.
pub fn fake_bin_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-lab-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = Path::new(env!("CARGO_BIN_EXE_weir-lab-fake"));
    let lab = Path::new(env!("CARGO_BIN_EXE_weir-lab"));
    for (name, target) in [("weir-agent", fake), ("weir", fake), ("weir-lab", lab)] {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    dir
}

/// Lab namespaces (and bpffs dirs) still there for lab id `id`.
pub fn leftovers(id: &str) -> Vec<String> {
    let prefix = weir_tests::names::lab_prefix(id);
    let mut left = weir_tests::netns::list_netns(&prefix);
    left.extend(
        std::fs::read_dir(weir_tests::names::BPFFS_ROOT)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix)),
    );
    left
}
