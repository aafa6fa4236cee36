#!/usr/bin/env bash
# Runs the upstream Kubernetes NetworkPolicy e2e tests (test/e2e/network/netpol, "Netpol") against
# the cluster of the current kubectl context, as CNI projects run them on kind: the e2e.test and
# ginkgo binaries of the server's Kubernetes version, focused on Netpol.
#
#   bash install/netpol-e2e.sh                 # all Netpol cases but SCTP
#   SKIP= bash install/netpol-e2e.sh           # SCTP too (the nodes need the sctp module)
#   NODES=1 FOCUS='Netpol.*should support a .default-deny-ingress' bash install/netpol-e2e.sh
#
# Needs curl, tar and kubectl; writes the binaries and JUnit report under $WORK_DIR.
set -euo pipefail

KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
WORK_DIR=${WORK_DIR:-${TMPDIR:-/tmp}/weir-netpol-e2e}
FOCUS=${FOCUS:-Netpol}
SKIP=${SKIP-SCTPConnectivity}
NODES=${NODES:-4}
ARCH=${ARCH:-$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')}

log() { printf '[netpol-e2e] %s\n' "$*" >&2; }

version=${K8S_VERSION:-$(kubectl version -o json | sed -n 's/.*"gitVersion": *"\(v[0-9.]*\).*/\1/p' | tail -1)}
[ -n "$version" ] || { echo "cannot tell the server's Kubernetes version; set K8S_VERSION=v1.x.y" >&2; exit 1; }

mkdir -p "$WORK_DIR/$version"
cd "$WORK_DIR/$version"
if [ ! -x kubernetes/test/bin/e2e.test ]; then
  log "downloading the $version e2e binaries"
  curl -fsSL "https://dl.k8s.io/$version/kubernetes-test-linux-$ARCH.tar.gz" | tar xz \
    kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
fi

log "waiting for Weir and CoreDNS"
kubectl -n kube-system rollout status daemonset/weir --timeout=5m
kubectl -n kube-system rollout status deployment/coredns --timeout=5m

log "running focus=$FOCUS skip=${SKIP:-none} on $NODES ginkgo processes"
skip_args=()
[ -z "$SKIP" ] || skip_args=(--skip="$SKIP")
./kubernetes/test/bin/ginkgo --nodes="$NODES" --focus="$FOCUS" "${skip_args[@]}" \
  ./kubernetes/test/bin/e2e.test -- \
  --kubeconfig="$KUBECONFIG" --provider=local --report-dir="$WORK_DIR/report"
log "JUnit report in $WORK_DIR/report"
