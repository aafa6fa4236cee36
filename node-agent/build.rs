//! Builds the eBPF object from `../bpf-progs` with bpf-linker, so that a plain `cargo build` of the
//! workspace produces a `weir-agent` with the datapath embedded.
//!
//! The eBPF crate is not a workspace member (it needs `-Z build-std=core` and the bpfel target); it
//! is built into `OUT_DIR` with its own target directory, by the same toolchain as the outer build.
//! `RUSTC_BOOTSTRAP=1` lets a stable toolchain take `-Z build-std` (it then needs only its own
//! `rust-src`), so no nightly toolchain is required; on nightly the variable changes nothing.

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

    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release"])
        .args(["-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--manifest-path")
        .arg(bpf_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo (and clippy) export variables that must not leak into the nested build.
    // RUSTUP_TOOLCHAIN stays: it keeps the nested build on the outer build's toolchain.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUSTC_BOOTSTRAP", "1");
    // BTF (with function info): the kernel accepts a tail call (`tc_from_pod`'s) in a program
    // with subprograms (the memcpy/memset the linker emits) only when the object carries it.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=--btf");
    let status = cmd
        .status()
        .expect("running `cargo build` for bpf-progs (is cargo on PATH?)");
    if !status.success() {
        panic!(
            "building the eBPF programs failed; install the toolchain with scripts/setup.sh \
             (rust-src for this toolchain, and bpf-linker)"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/weir-bpf");
    copy(&object, &out_dir.join("weir-bpf.o"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
