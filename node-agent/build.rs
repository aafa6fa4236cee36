//! Builds the eBPF object from `../bpf-progs` with nightly and bpf-linker, so that a plain
//! `cargo build` of the workspace produces a `weir-agent` with the datapath embedded.
//!
//! The eBPF crate is not a workspace member (it needs nightly, `-Z build-std=core` and the bpfel
//! target); it is built into `OUT_DIR` with its own target directory.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("../bpf-progs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.join("bpf-target");

    for watched in [
        "src",
        "common/src",
        "Cargo.toml",
        "Cargo.lock",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(watched).display());
    }

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release"])
        .args(["-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--manifest-path")
        .arg(bpf_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo (and clippy) export variables that must not leak into the nested build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTUP_TOOLCHAIN"
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("running `rustup run nightly cargo build` for bpf-progs (is rustup installed?)");
    if !status.success() {
        panic!(
            "building the eBPF programs failed; install the toolchain with scripts/setup.sh \
             (nightly rust-src and bpf-linker)"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/weir-bpf");
    copy(&object, &out_dir.join("weir-bpf.o"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
