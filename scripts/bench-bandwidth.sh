#!/usr/bin/env bash
# Weir's bandwidth benchmark: how close does a pod get to the rate its `bandwidth` capability asks
# for? A one-node lab (weir-lab: the real agent and plugin), one unshaped peer pod running an
# iperf3 server, and per scenario a fresh pod ADDed straight through the `weir` plugin with
# `runtimeConfig.bandwidth` limiting one direction (the kubelet's "unspecified" burst, so Weir's
# default bucket). One TCP stream for SECONDS (first second omitted: slow start and the initial
# bucket), receiver's rate. Prints direction, asked, achieved and achieved/asked per scenario.
#
#   bash scripts/bench-bandwidth.sh                 # 10 and 100 Mbit/s, egress and ingress, 10 s
#   RATES_MBIT="10 100 1000" SECONDS_EACH=5 bash scripts/bench-bandwidth.sh
#   WEIR_BIN_DIR=$PWD/target/debug bash scripts/bench-bandwidth.sh   # skip the release build
#
# Runs as root; needs iperf3, iproute2 and jq. Everything it makes lives in the lab's network
# namespaces, which it removes again (also when interrupted).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-bandwidth: run as root" >&2; exit 2; }
for tool in iperf3 jq ip; do
  command -v "$tool" >/dev/null || { echo "bench-bandwidth: $tool is missing (scripts/setup.sh)" >&2; exit 2; }
done
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${WEIR_BIN_DIR:-}" ]; then
  cargo build --release --quiet --bins
  export WEIR_BIN_DIR=$PWD/target/release
fi
rates=${RATES_MBIT:-10 100}
seconds=${SECONDS_EACH:-10}

dir=$(mktemp -d /tmp/weir-bw-XXXXXX)
lab() { "$WEIR_BIN_DIR/weir-lab" --dir "$dir" "$@"; }
server_pid=
shaped=()   # "netns container-id" of every pod ADDed here
config=

cni() { # cni COMMAND CONTAINER NETNS CONFIG-JSON
  printf '%s' "$4" | ip netns exec "$node_ns" env CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
    CNI_NETNS="/run/netns/$3" CNI_IFNAME=eth0 CNI_PATH="$WEIR_BIN_DIR" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$2" "$WEIR_BIN_DIR/weir"
}

cleanup() {
  set +e
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  for entry in "${shaped[@]}"; do
    read -r ns cid <<<"$entry"
    cni DEL "$cid" "$ns" "$config" >/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  lab down >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lab up >/dev/null
state=$(lab status)
lab_id=$(jq -r .id <<<"$state")
node_ns=$(jq -r '.nodes[0].netns' <<<"$state")
conf_dir=$(jq -r '.nodes[0].cni_conf_dir' <<<"$state")
config=$(jq -c '.plugins[0] + {cniVersion: .cniVersion, name: .name}' "$conf_dir/10-weir.conflist")

lab pod add bench/peer >/dev/null
peer=$(lab status | jq -c '.pods[] | select(.name == "peer")')
peer_ns=$(jq -r .netns <<<"$peer")
peer_ip=$(jq -r .ip <<<"$peer")
ip netns exec "$peer_ns" iperf3 -s -p 5201 >/dev/null 2>&1 &
server_pid=$!
sleep 0.5

printf '%-8s %10s %14s %9s\n' direction "asked" "achieved" "ratio"
n=0
for mbit in $rates; do
  for direction in egress ingress; do
    n=$((n + 1))
    ns="weir-lab-$lab_id-bw$n"
    cid="bw$n"
    ip netns add "$ns"
    bps=$((mbit * 1000000))
    bandwidth=$(jq -nc --arg d "$direction" --argjson r "$bps" \
      '{($d + "Rate"): $r, ($d + "Burst"): 2147483647}')
    add_config=$(jq -c --argjson b "$bandwidth" '. + {runtimeConfig: {bandwidth: $b}}' <<<"$config")
    shaped+=("$ns $cid")
    if ! out=$(cni ADD "$cid" "$ns" "$add_config"); then
      echo "bench-bandwidth: ADD failed: $out" >&2
      exit 1
    fi
    # egress: the shaped pod sends; ingress: it receives (-R: the server sends).
    reverse=()
    [ "$direction" = ingress ] && reverse=(-R)
    json=$(ip netns exec "$ns" iperf3 -c "$peer_ip" -p 5201 -t "$seconds" -O 1 -J "${reverse[@]}")
    got=$(jq -r '.end.sum_received.bits_per_second' <<<"$json")
    awk -v d="$direction" -v asked="$bps" -v got="$got" 'BEGIN {
      printf "%-8s %5d Mbit/s %8.2f Mbit/s %9.3f\n", d, asked / 1e6, got / 1e6, got / asked }'
  done
done
