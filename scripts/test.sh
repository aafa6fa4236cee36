#!/usr/bin/env bash
# Every check Weir has: formatting, clippy with warnings as errors, unit tests, the real-kernel
# integration tests (network namespaces, the real CNI binary and agent, real packets, podman), and
# a smoke of Weir as the only network of a real Kubernetes cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export RUST_BACKTRACE=1 WEIR_REQUIRE_PODMAN=1
# Incremental caches double target/ and buy nothing in a run that builds everything once.
export CARGO_INCREMENTAL=0
# WEIR_LEAN_DISK=1 (set by .ci/run): drop each step's build output once the step no longer needs it,
# so the whole run fits a machine with ~12 GiB free.
lean=${WEIR_LEAN_DISK:-0}

step() { printf '\n=== %s (free disk: %s)\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')" >&2; }

step "rustfmt"
cargo fmt --all -- --check
(cd bpf-progs && cargo fmt -- --check)

step "clippy (user space)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --locked

step "tests"
# Integration tests build their own namespaces with unique names; two threads fit two cores.
# --no-fail-fast: one run reports every failing test binary, not just the first.
cargo test --workspace --locked --no-fail-fast -- --test-threads=2

step "fuzzing (45 s a target, from the committed corpus)"
# New inputs go to a scratch directory; a crash fails the step and is kept under fuzz/artifacts.
for target in cni_config policy_compile; do
  scratch=$(mktemp -d)
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$scratch" "corpus/$target" -- \
     -max_total_time=45 -timeout=10 -print_final_stats=1)
  rm -rf "$scratch"
done
if [ "$lean" = 1 ]; then rm -rf fuzz/target; fi

step "real cluster smoke (scripts/cluster.sh smoke)"
# Kubernetes from its Go modules, Weir installed from install/weir.yaml, two pods talk, a policy
# denies, down. The full upstream suite is `scripts/cluster.sh e2e` (README: the real cluster).
if [ "$lean" = 1 ]; then cargo clean --profile dev; fi
WEIR_CLUSTER_LEAN=$lean bash scripts/cluster.sh smoke
