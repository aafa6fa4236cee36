#!/usr/bin/env bash
# Weir's policy-cost benchmark: same-node throughput, RR and CRR with 0, 1 and 10 000 policy rules,
# beside a plain routed veth pair and an iptables ruleset of the same size, in one run (about
# 5 minutes). Prints a table (or JSON with --json); options go to `weir-bench run` (see --help).
# Runs as root; everything it makes lives in network namespaces it removes again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The bench drives weir-lab, which runs the release weir-agent and weir next to it.
cargo build --release --quiet --bins
exec target/release/weir-bench run "$@"
