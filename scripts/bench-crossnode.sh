#!/usr/bin/env bash
# Weir's cross-node benchmark: pod → pod between two nodes, in native routing and in VXLAN, beside
# node → node over the same segment, in one run (about 2 minutes). Prints a table (or JSON with
# --json); options go to `weir-bench cross-node` (see --help). Runs as root; everything it makes
# lives in network namespaces it removes again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bins
exec target/release/weir-bench cross-node "$@"
