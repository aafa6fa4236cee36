#!/usr/bin/env bash
# A local Kubernetes cluster whose only network is Weir, built from upstream's Go modules and run
# in network namespaces of its own (nothing is added to the machine's own network namespace).
#
#   bash scripts/cluster.sh up [--nodes N] [--routing native|vxlan]   # last line: KUBECONFIG=<path>
#   bash scripts/cluster.sh e2e [--procs N] [-- extra e2e.test flags]  # upstream Netpol specs
#   bash scripts/cluster.sh cnp-conformance   # network-policy-api's ClusterNetworkPolicy suite (1 or more nodes)
#   bash scripts/cluster.sh test      # seed scenario, probes, pod recreation, rollout under a stream, uninstall
#   bash scripts/cluster.sh smoke     # up (1 node), two pods talk, a policy denies, down
#   bash scripts/cluster.sh env       # where e2e.test, ginkgo and kubectl are
#   bash scripts/cluster.sh down      # removes everything; idempotent
#
# Builds (and caches under /var/cache/weir-cluster) kube-apiserver, controller-manager, scheduler,
# kubelet, kube-proxy, kubectl, etcd, agnhost, ginkgo, e2e.test and containerd; see tests/cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "cluster.sh must run as root (namespaces, mounts, cgroups)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"

case "${1:-}" in
  up|smoke|build)
    bash scripts/setup.sh
    # The cluster's own needs: socat (the API server on the machine's loopback), conntrack
    # (kube-proxy), debootstrap (Weir's image from Debian packages), openssl (the PKI).
    pkgs=(socat conntrack debootstrap openssl util-linux)
    missing=()
    for p in "${pkgs[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v go >/dev/null || { echo "cluster.sh needs Go (1.26+) on PATH: the cluster builds from Go modules" >&2; exit 1; }
    ;;
esac
exec env PYTHONPATH=tests/cluster python3 -m weircluster "$@"
