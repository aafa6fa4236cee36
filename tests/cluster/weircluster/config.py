"""Versions, paths and addresses of the local cluster: one place to read them all."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GO_MODULE = REPO / "tests" / "cluster" / "k8s"

K8S_VERSION = "v1.37.2"
CONTAINERD_VERSION = "v2.4.2"
# ClusterNetworkPolicy: the CRD (and conformance suite) of this sigs.k8s.io/network-policy-api release.
NETWORK_POLICY_API_VERSION = "v0.3.0"
# The agnhost tag upstream's e2e framework asks for at K8S_VERSION (test/utils/image/manifest.go);
# checked against the module at build time.
AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
# The sandbox image: agnhost's `pause`, named so containerd never tries to pull one.
PAUSE_IMAGE = "localhost/weir-cluster/pause:1"
WEIR_IMAGE = "localhost/weir:dev"

# Build outputs and caches live outside the checkout (and survive `down`).
CACHE = Path(os.environ.get("WEIR_CLUSTER_CACHE", "/var/cache/weir-cluster"))
# WEIR_CLUSTER_LEAN=1 (CI): drop Go's build cache once the binaries exist (~5 GiB); the next run
# rebuilds from the module cache.
LEAN = os.environ.get("WEIR_CLUSTER_LEAN") == "1"
BIN = CACHE / "bin"
IMAGES = CACHE / "images"
# A running cluster's state: certificates, configs, logs, each node's private directories. Not under
# /run, /var/log or /etc: each node mounts its own over those.
STATE = Path(os.environ.get("WEIR_CLUSTER_STATE", "/var/lib/weir-cluster"))

# Networks. The nodes sit on one segment of TEST-NET-2 (a documentation range), in network
# namespaces of their own; nothing is added to the machine's own namespace.
SEGMENT = ipaddress.ip_network("198.51.100.0/24")
SEGMENT_GATEWAY = ipaddress.ip_address("198.51.100.1")
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
# The machine's loopback port forwarded to the API server (socat), so that kubectl and e2e.test
# run from the machine itself. Loopback only.
API_LOCAL_PORT = int(os.environ.get("WEIR_CLUSTER_API_PORT", "16443"))

NETNS_PREFIX = "weir-cluster"


@dataclass(frozen=True)
class Node:
    index: int  # 1-based; node 1 is the control plane

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}-{self.name}"

    @property
    def ip(self) -> str:
        return str(SEGMENT.network_address + 10 + self.index)

    @property
    def dir(self) -> Path:
        """The node's own state: its root for /etc/cni, /opt/cni, /var/lib, /run, /var/log."""
        return STATE / "nodes" / self.name

    @property
    def mount_ns(self) -> Path:
        """A bind mount holding the node's mount namespace (its private /run, /var/lib, bpffs)."""
        return STATE / "ns" / f"{self.name}.mnt"


SEGMENT_NETNS = f"{NETNS_PREFIX}-segment"


def nodes(count: int) -> list[Node]:
    return [Node(i) for i in range(1, count + 1)]
