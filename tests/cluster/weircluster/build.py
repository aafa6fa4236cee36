"""Builds what the cluster runs, each piece only when it is missing or its recipe changed.

Upstream binaries come from their Go modules (the wrapper module in tests/cluster/k8s pins
k8s.io/kubernetes and its staging modules); Weir's from this checkout. Outputs and Go's caches go
under config.CACHE, never into the checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


# What the machine cannot run in network-policy-api's conformance suite, and how the copy built
# here differs from upstream's: this kernel has no SCTP sockets, so its SCTP servers would never
# start (their pods never Ready, and no spec runs) and every SCTP poke fails for the kernel, not
# the network. The copy drops the four SCTP-only specs, the SCTP server containers and the SCTP
# pokes of the other specs (98 of 397 pokes in all), and
# runs its pods on the agnhost this cluster builds (the same program, tagged for the e2e suite,
# with busybox's sh for the suite's `/bin/bash -c`). Everything else is upstream's.
CNP_SCTP_POKE = re.compile(r'\s*kubernetes\.PokeServer\((?:[^()]|\([^()]*\))*"sctp"(?:[^()]|\([^()]*\))*\)')
CNP_SCTP_SERVER = re.compile(
    r'\n(?P<i>\s+)- name: [^\n]+\n(?P=i)  image: [^\n]+\n(?P=i)  command: \[[^\n]*porter"\]\n'
    r'(?P=i)  env:\n(?P=i)  - name: SERVE_SCTP_PORT_[^\n]+\n(?P=i)    value: "foo"'
)


# On one node: the suite's host-network server StatefulSet (centaur, in forbidden-forrest) has two
# replicas binding the same host ports, which one node cannot hold (the second pod never
# schedules, and the suite waits for both). The one-node copy runs it with one replica, waits for
# each StatefulSet's own replica count, and uses centaur-0 where the specs use centaur-1 (the
# node-peer specs' server); nothing else differs.
CNP_CENTAUR_REPLICAS = re.compile(r"(\n  name: centaur\n(?:[^\n]*\n)*?  replicas: )2\n")
CNP_READY_REPLICAS = ("statefulSet.Status.ReadyReplicas != numStatufulSetReplicas",
                      "statefulSet.Status.ReadyReplicas != *statefulSet.Spec.Replicas")


def _patch_cnp_conformance_one_node(src: Path) -> None:
    manifests = src / "conformance" / "base" / "manifests.yaml"
    text, n = CNP_CENTAUR_REPLICAS.subn(r"\g<1>1\n", manifests.read_text())
    if n != 1:
        raise Failed("the conformance suite's centaur StatefulSet (replicas: 2) was not found")
    manifests.write_text(text)
    helper = src / "conformance" / "utils" / "kubernetes" / "helper.go"
    text = helper.read_text()
    if text.count(CNP_READY_REPLICAS[0]) != 1:
        raise Failed(f"{helper}: the StatefulSet readiness check was not found")
    helper.write_text(text.replace(*CNP_READY_REPLICAS))
    specs = sorted((src / "conformance" / "tests").glob("*experimental-egress-rules.go"))
    uses = 0
    for spec in specs:
        text = spec.read_text()
        uses += text.count('"centaur-1"')
        spec.write_text(text.replace('"centaur-1"', '"centaur-0"'))
    if uses == 0:
        raise Failed("the conformance suite's node-peer specs no longer use centaur-1")


def _patch_cnp_conformance(src: Path) -> dict[str, int]:
    counts = {"sctp_pokes": 0, "pokes": 0, "sctp_servers": 0, "sctp_tests": 0}
    tests = src / "conformance" / "tests"
    # Specs about SCTP alone (`*-sctp-rules.go`): nothing of them is left to run.
    for test in sorted(tests.glob("*-sctp-rules.go")):
        counts["pokes"] += test.read_text().count("kubernetes.PokeServer(")
        counts["sctp_pokes"] += test.read_text().count("kubernetes.PokeServer(")
        counts["sctp_tests"] += 1
        test.unlink()
    for test in sorted(tests.glob("*.go")):
        text = test.read_text()
        counts["pokes"] += text.count("kubernetes.PokeServer(")
        text, n = CNP_SCTP_POKE.subn("", text)
        counts["sctp_pokes"] += n
        test.write_text(text)
    manifests = src / "conformance" / "base" / "manifests.yaml"
    text, n = CNP_SCTP_SERVER.subn("", manifests.read_text())
    counts["sctp_servers"] = n
    text = text.replace("registry.k8s.io/e2e-test-images/agnhost:2.45", config.AGNHOST_IMAGE)
    text = text.replace('"/bin/bash", "-c"', '"/bin/sh", "-c"')
    manifests.write_text(text)
    return counts


def build_cnp_conformance(one_node: bool = False) -> Path:
    """network-policy-api's conformance suite (its `go test` package, with the manifests it
    embeds) as one test binary, built from a copy of the module patched as CNP_SCTP_* say (and,
    for a one-node cluster, as CNP_CENTAUR_REPLICAS says)."""
    suffix = "-1node" if one_node else ""
    target = config.BIN / f"cnp-conformance{suffix}.test"
    recipe = _recipe(config.NETWORK_POLICY_API_VERSION, config.AGNHOST_IMAGE, CNP_SCTP_POKE.pattern,
                     CNP_SCTP_SERVER.pattern, "sh",
                     *((CNP_CENTAUR_REPLICAS.pattern, *CNP_READY_REPLICAS) if one_node else ()))
    if _fresh(target, recipe):
        return target
    src = config.CACHE / f"npapi-conformance-src{suffix}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(network_policy_api(), src)
    for path in [src, *src.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    counts = _patch_cnp_conformance(src)
    if counts["sctp_pokes"] == 0 or counts["sctp_servers"] == 0:
        raise Failed(f"the conformance suite's SCTP parts were not found to take out: {counts}")
    if one_node:
        _patch_cnp_conformance_one_node(src)
    log(f"network-policy-api conformance: {counts['sctp_pokes']} of {counts['pokes']} pokes are SCTP and "
        f"{counts['sctp_servers']} server containers serve SCTP: taken out (no SCTP on this kernel)")
    (src / "SCTP-REMOVED.json").write_text(json.dumps(counts))
    t = time.monotonic()
    log(f"building network-policy-api {config.NETWORK_POLICY_API_VERSION}'s conformance suite")
    run(["go", "test", "-c", "-o", target, "./conformance"], env=go_env(), cwd=src)
    _stamp(target, recipe)
    log(f"built {target.name} in {time.monotonic() - t:.0f}s")
    return target


def cnp_conformance_patch_counts(one_node: bool = False) -> dict[str, int]:
    suffix = "-1node" if one_node else ""
    return json.loads((config.CACHE / f"npapi-conformance-src{suffix}" / "SCTP-REMOVED.json").read_text())


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
