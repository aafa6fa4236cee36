#!/usr/bin/env bash
# Installs everything Weir needs to build, test and run its demo on a Debian 12 machine, as root.
# Idempotent: each step checks first and does nothing when its piece is already there.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "setup.sh must run as root (it installs packages and loads eBPF)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages: the LLVM that bpf-linker links against, iproute2/iptables for nodes and the lab,
# podman/runc/busybox-static for the independent-runtime test, the reference CNI plugins for the
# ADD/DEL benchmark, conntrack for the tests that read a node's connection tracking, and
# iperf3/tcpdump/procps/python3 for the benchmarks and debugging.
PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev iproute2 iptables iputils-ping
      podman runc busybox-static containernetworking-plugins conntrack iperf3 tcpdump procps
      python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: the machine's default toolchain builds everything. The eBPF programs need `-Z build-std=core`,
# which node-agent/build.rs enables on any toolchain with RUSTC_BOOTSTRAP=1; it only needs rust-src.
# Nightly is neither required nor used.
command -v rustup >/dev/null || { echo "rustup is required" >&2; exit 1; }
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to $(rustup show active-toolchain | awk '{print $1}')"
  rustup component add rust-src || {
    echo "setup.sh: rustup could not install rust-src for the default toolchain;" \
         "the eBPF programs cannot be built without it" >&2
    exit 1
  }
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

if ! command -v bpf-linker >/dev/null || ! bpf-linker --version >/dev/null 2>&1; then
  log "building bpf-linker against LLVM 22"
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install bpf-linker --locked --version 0.13.0 --no-default-features --features llvm-22
fi

# cargo-fuzz: the fuzz targets in fuzz/ (built with this toolchain and RUSTC_BOOTSTRAP=1).
if ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# bpffs: pinned maps and links are what keep pods working while the agent restarts.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ready"
