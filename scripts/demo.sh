#!/usr/bin/env bash
# The demo: one node, three pods (web, api, db) on Weir, probed and shown as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bins
exec target/release/weir-lab demo "$@"
