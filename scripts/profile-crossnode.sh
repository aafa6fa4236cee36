#!/usr/bin/env bash
# Where the CPU goes, pod → pod across two nodes (issue: VXLAN costs more CPU per GB and per
# connection than native routing). Brings up a 2-node lab per routing mode, runs one workload from
# a pod on node 1 to a pod on node 2 while `perf record -a` samples every CPU (cpu-clock: no PMU
# needed), and prints the CPU time per unit of work (per MB streamed, per connection) spent in each
# part of the kernel, the modes side by side with their ratio (scripts/profile-report.py).
#
#   bash scripts/profile-crossnode.sh [--workload stream|crr] [--seconds N] [--modes native,vxlan]
#
# Runs as root; the labs are network namespaces it removes again (also on failure). Needs perf.
# WEIR_PROFILE_KEEP=1 keeps the perf data (MODE.data) for `perf report -i`.
set -euo pipefail
cd "$(dirname "$0")/.."
workload=stream seconds=8 modes=native,vxlan
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) workload=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    *) echo "usage: $0 [--workload stream|crr] [--seconds N] [--modes native,vxlan]" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bins
lab=target/release/weir-lab bench=target/release/weir-bench
work=$(mktemp -d /tmp/weir-profile.XXXXXX)
labs=()
cleanup() {
  for dir in "${labs[@]}"; do WEIR_LAB_DIR=$dir "$lab" down >/dev/null 2>&1 || true; done
  pkill -f "iperf3 --server --port 5299" 2>/dev/null || true
  if [ -n "${WEIR_PROFILE_KEEP:-}" ]; then echo "perf data kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

for mode in ${modes//,/ }; do
  dir=$work/lab-$mode
  labs+=("$dir")
  export WEIR_LAB_DIR=$dir
  "$lab" up --nodes 2 --routing "$mode" >/dev/null
  "$lab" pod add prof/client --node 1 >/dev/null
  "$lab" pod add prof/server --node 2 >/dev/null
  status=$("$lab" status)
  field() { python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pods'] if p['name'].endswith('$1')][0]; print(p['$2'])" <<<"$status"; }
  client=$(field client netns) server=$(field server netns) server_ip=$(field server ip)
  if [ "$workload" = stream ]; then
    ip netns exec "$server" iperf3 --server --port 5299 --daemon --one-off >/dev/null
    sleep 0.5
    ip netns exec "$client" iperf3 --client "$server_ip" --port 5299 --time $((seconds + 2)) --json >"$work/$mode.rate" &
  else
    ip netns exec "$server" "$bench" rr-server --port 5298 >/dev/null &
    sleep 0.5
    ip netns exec "$client" "$bench" rr-client --addr "$server_ip:5298" --mode crr --seconds $((seconds + 2)) >"$work/$mode.rate" &
  fi
  load=$!
  sleep 1
  perf record -a -g -e cpu-clock -F 997 -o "$work/$mode.data" -- sleep "$seconds" 2>/dev/null
  wait "$load" || true
  if [ "$workload" = crr ]; then pkill -f "rr-server --port 5298" || true; fi
  perf report -i "$work/$mode.data" --no-children --sort sym --stdio -g none 2>/dev/null >"$work/$mode.txt"
  WEIR_LAB_DIR=$dir "$lab" down >/dev/null
done

python3 scripts/profile-report.py "$work" "$workload" "$seconds" ${modes//,/ }
