"""Builds what the cluster runs, each piece only when it is missing or its recipe changed.

Upstream binaries come from their Go modules (the wrapper module in tests/cluster/k8s pins
k8s.io/kubernetes and its staging modules); Weir's from this checkout. Outputs and Go's caches go
under config.CACHE, never into the checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from . import config, images
from .run import Failed, log, out, run

KUBE_COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "agnhost": "k8s.io/kubernetes/test/images/agnhost",
    "ginkgo": "github.com/onsi/ginkgo/v2/ginkgo",
    "etcd": "./etcd",
}
CONTAINERD_COMMANDS = ["containerd", "containerd-shim-runc-v2", "ctr"]


def go_env() -> dict[str, str]:
    return {
        "GOMODCACHE": str(config.CACHE / "go" / "mod"),
        "GOCACHE": str(config.CACHE / "go" / "build"),
        "GOFLAGS": "-mod=mod -buildvcs=false -trimpath",
        "GOTOOLCHAIN": "local",
        # Static binaries: agnhost runs in an image with no libc, the rest do not care.
        "CGO_ENABLED": "0",
    }


def _version_ldflags() -> str:
    major, minor = config.K8S_VERSION.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": config.K8S_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in stamps.items()]
    return " ".join(flags)


def _recipe(*parts: str | Path) -> str:
    """A digest of what a build depends on; a stored digest that differs means rebuild."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.read_bytes() if part.is_file() else str(part).encode())
        else:
            h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _fresh(target: Path, recipe: str) -> bool:
    stamp = target.with_name(target.name + ".recipe")
    return target.exists() and stamp.exists() and stamp.read_text() == recipe


def _stamp(target: Path, recipe: str) -> None:
    target.with_name(target.name + ".recipe").write_text(recipe)


def _go_module_recipe() -> str:
    m = config.GO_MODULE
    return _recipe(config.K8S_VERSION, m / "go.mod", m / "go.sum", m / "etcd" / "main.go", _version_ldflags())


def check_go() -> None:
    if not shutil.which("go"):
        raise Failed("Go is not on PATH: the cluster's upstream binaries build from their Go modules")


def build_kube() -> None:
    """kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl, agnhost, ginkgo,
    etcd and e2e.test, from the wrapper module."""
    config.BIN.mkdir(parents=True, exist_ok=True)
    recipe = _go_module_recipe()
    env = go_env()
    for name, pkg in KUBE_COMMANDS.items():
        target = config.BIN / name
        if _fresh(target, recipe):
            continue
        t = time.monotonic()
        log(f"building {name} ({pkg})")
        run(["go", "build", "-ldflags", _version_ldflags(), "-o", target, pkg], env=env, cwd=config.GO_MODULE)
        _stamp(target, recipe)
        log(f"built {name} in {time.monotonic() - t:.0f}s")
    target = config.BIN / "e2e.test"
    if not _fresh(target, recipe):
        t = time.monotonic()
        log("building e2e.test (k8s.io/kubernetes/test/e2e)")
        run(
            ["go", "test", "-c", "-ldflags", _version_ldflags(), "-o", target, "k8s.io/kubernetes/test/e2e"],
            env=env,
            cwd=config.GO_MODULE,
        )
        _stamp(target, recipe)
        log(f"built e2e.test in {time.monotonic() - t:.0f}s")


def build_containerd() -> None:
    """containerd v2 with its runc shim and ctr, from containerd's own module (no replaces)."""
    recipe = _recipe(config.CONTAINERD_VERSION)
    env = go_env() | {"GOBIN": str(config.BIN)}
    for name in CONTAINERD_COMMANDS:
        target = config.BIN / name
        if _fresh(target, recipe):
            continue
        t = time.monotonic()
        log(f"building {name} {config.CONTAINERD_VERSION}")
        pkg = f"github.com/containerd/containerd/v2/cmd/{name}@{config.CONTAINERD_VERSION}"
        run(["go", "install", "-tags", "no_btrfs", "-ldflags", "-s -w", pkg], env=env, cwd=config.CACHE)
        _stamp(target, recipe)
        log(f"built {name} in {time.monotonic() - t:.0f}s")


def check_agnhost_tag() -> None:
    """The e2e framework names agnhost by tag; the image must carry exactly that name."""
    gomod = out(["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], env=go_env(), cwd=config.GO_MODULE).strip()
    manifest = Path(gomod, "test/utils/image/manifest.go").read_text()
    tag = config.AGNHOST_IMAGE.rsplit(":", 1)[1]
    if f'configs[Agnhost] = Config{{list.PromoterE2eRegistry, "agnhost", "{tag}"}}' not in manifest:
        raise Failed(f"{config.AGNHOST_IMAGE} is not the agnhost that {config.K8S_VERSION}'s e2e framework uses")


def network_policy_api() -> Path:
    """sigs.k8s.io/network-policy-api's module source (its CRDs and conformance suite), from the Go
    module proxy into the cluster's module cache (read-only there)."""
    module = f"sigs.k8s.io/network-policy-api@{config.NETWORK_POLICY_API_VERSION}"
    config.CACHE.mkdir(parents=True, exist_ok=True)
    info = json.loads(out(["go", "mod", "download", "-json", module], env=go_env(), cwd=config.CACHE))
    return Path(info["Dir"])


def cluster_network_policy_crd() -> Path:
    """The ClusterNetworkPolicy CRD with the experimental fields (nodes peers, named ports), which
    Weir enforces too."""
    return network_policy_api() / "config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml"


def build_weir() -> Path:
    """Weir's release binaries from this checkout (cargo decides what is stale)."""
    log("building weir-agent and weir (cargo, release)")
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    run([cargo, "build", "--release", "--locked", "-p", "weir-agent", "-p", "weir-cni"], cwd=config.REPO)
    return config.REPO / "target" / "release"


def build_all() -> None:
    check_go()
    config.CACHE.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    build_containerd()
    build_kube()
    check_agnhost_tag()
    if config.LEAN:
        shutil.rmtree(go_env()["GOCACHE"], ignore_errors=True)
    images.build_all(build_weir())
    log(f"everything built in {time.monotonic() - t:.0f}s")


def env_lines() -> list[str]:
    """Where the built upstream binaries are, for running other suites against the cluster."""
    return [
        f"WEIR_CLUSTER_BIN={config.BIN}",
        f"E2E_TEST={config.BIN / 'e2e.test'}",
        f"GINKGO={config.BIN / 'ginkgo'}",
        f"KUBECTL={config.BIN / 'kubectl'}",
        f"KUBECONFIG={config.STATE / 'admin.kubeconfig'}",
        f"PATH={config.BIN}:{os.environ.get('PATH', '')}",
    ]
