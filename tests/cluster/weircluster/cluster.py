"""Bring-up and teardown of a Kubernetes cluster whose only network is Weir.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs in node 1's
network namespace, configured as kubeadm configures it; every node runs containerd, kubelet and
kube-proxy (iptables mode) in its own namespaces. Weir is installed with `kubectl apply -f
install/weir.yaml`, and a node turns Ready only once Weir's agent has written its conflist.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import build, config, images, machine, pki
from .run import Failed, in_node, log, out, run, wait_for

ADMIN_KUBECONFIG = config.STATE / "admin.kubeconfig"
CLUSTER_INFO = config.STATE / "cluster.json"


def kubectl(*args: str, **kw) -> str:
    return out([config.BIN / "kubectl", "--kubeconfig", ADMIN_KUBECONFIG, *args], **kw)


def info() -> dict:
    if not CLUSTER_INFO.exists():
        raise Failed("no cluster is up (run `scripts/cluster.sh up` first)")
    return json.loads(CLUSTER_INFO.read_text())


def cluster_nodes() -> list[config.Node]:
    return config.nodes(info()["nodes"])


# --- configuration files ---------------------------------------------------------------------------


def _write_node_files(node: config.Node, control: config.Node, pki_dir: Path) -> None:
    """The node's /etc/kubernetes and /etc/containerd, as its processes will see them."""
    etc = node.dir / "etc"
    node_pki = etc / "kubernetes" / "pki"
    for name in ("ca.crt", f"kubelet-{node.name}.crt", f"kubelet-{node.name}.key", "kube-proxy.crt", "kube-proxy.key"):
        shutil.copy2(pki_dir / name, node_pki / name)
    seen = Path("/etc/kubernetes/pki")
    server = f"https://{control.ip}:{config.API_PORT}"
    pki.kubeconfig(
        etc / "kubernetes" / "kubelet.conf", server, seen / "ca.crt",
        seen / f"kubelet-{node.name}.crt", seen / f"kubelet-{node.name}.key", f"system:node:{node.name}",
    )
    pki.kubeconfig(
        etc / "kubernetes" / "kube-proxy.conf", server, seen / "ca.crt",
        seen / "kube-proxy.crt", seen / "kube-proxy.key", "system:kube-proxy",
    )
    (etc / "kubernetes" / "kubelet-config.yaml").write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{machine.CGROUP_ROOT}/{node.name}
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: {node.ip}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: /etc/kubernetes/pki/ca.crt}}
authorization: {{mode: Webhook}}
# Imported images are never pulled again: keep them and never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}}
serializeImagePulls: false
resolvConf: /etc/kubernetes/resolv.conf
"""
    )
    # No cluster DNS is installed; pods get an empty resolver rather than the machine's.
    (etc / "kubernetes" / "resolv.conf").write_text("options ndots:1\n")
    (etc / "kubernetes" / "kube-proxy-config.yaml").write_text(
        f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: {config.CLUSTER_CIDR}
hostnameOverride: {node.name}
clientConnection: {{kubeconfig: /etc/kubernetes/kube-proxy.conf}}
# nf_conntrack_max is the machine's, not the node's: leave it alone.
conntrack: {{maxPerCore: 0}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
"""
    )
    (etc / "containerd" / "config.toml").write_text(
        f"""version = 4
root = '/var/lib/containerd'
state = '/run/containerd'

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{config.PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root has no CAP_SYS_RESOURCE, so nothing may lower an OOM score below its own:
  # clamp kubelet's negative scores (system-node-critical pods ask -998) to containerd's 0.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = '/usr/sbin/runc'
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin']
    conf_dir = '/etc/cni/net.d'
    max_conf_num = 1
    use_internal_loopback = true

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
"""
    )


# --- the control plane ------------------------------------------------------------------------------


def _start_control_plane(control: config.Node, pki_dir: Path) -> None:
    state = config.STATE
    server = f"https://{control.ip}:{config.API_PORT}"
    for who, cert in (("controller-manager", "controller-manager"), ("scheduler", "scheduler")):
        pki.kubeconfig(state / f"{who}.kubeconfig", server, pki_dir / "ca.crt", pki_dir / f"{cert}.crt", pki_dir / f"{cert}.key", who)
    machine.spawn(
        "etcd",
        [
            config.BIN / "etcd", "--name=node1", f"--data-dir={state / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=node1=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
            # A test cluster on a shared VM disk: durability is not what it is for.
            "--unsafe-no-fsync", "--log-level=warn",
        ],
        netns=control.netns,
    )
    machine.spawn(
        "kube-apiserver",
        [
            config.BIN / "kube-apiserver",
            f"--advertise-address={control.ip}", "--bind-address=0.0.0.0", f"--secure-port={config.API_PORT}",
            "--etcd-servers=http://127.0.0.1:2379",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}", f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ],
        netns=control.netns,
    )
    wait_for(
        "the API server to be healthy",
        lambda: kubectl("get", "--raw", "/readyz", check=False, timeout=10).strip() == "ok",
        timeout=120,
    )
    machine.spawn(
        "kube-controller-manager",
        [
            config.BIN / "kube-controller-manager",
            f"--kubeconfig={state / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={state / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={state / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", "--leader-elect=false",
            # What fills each Node's spec.podCIDRs, where Weir takes its node's range from.
            "--allocate-node-cidrs=true", f"--cluster-cidr={config.CLUSTER_CIDR}", "--node-cidr-mask-size-ipv4=24",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            f"--root-ca-file={pki_dir / 'ca.crt'}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            "--use-service-account-credentials=true", "--v=1",
        ],
        netns=control.netns,
    )
    machine.spawn(
        "kube-scheduler",
        [
            config.BIN / "kube-scheduler",
            f"--kubeconfig={state / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={state / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={state / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1",
        ],
        netns=control.netns,
    )


def _start_api_forwarder(control: config.Node) -> None:
    """The API server on the machine's loopback, so kubectl and e2e.test run from the machine."""
    machine.spawn(
        "api-forwarder",
        [
            "socat",
            f"TCP-LISTEN:{config.API_LOCAL_PORT},bind=127.0.0.1,reuseaddr,fork",
            f"EXEC:nsenter --net=/run/netns/{control.netns} socat STDIO TCP\\:{control.ip}\\:{config.API_PORT}",
        ],
    )


# --- nodes --------------------------------------------------------------------------------------------


def _ctr(node: config.Node, *args) -> list[str]:
    return in_node(node, [config.BIN / "ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", *args])


def _start_node(node: config.Node) -> None:
    machine.cgroup_create(f"{machine.CGROUP_ROOT}/{node.name}")
    machine.spawn(f"containerd-{node.name}", [config.BIN / "containerd", "--config", "/etc/containerd/config.toml"], node=node)
    wait_for(f"containerd on {node.name}", lambda: run(_ctr(node, "version"), check=False, quiet=True).returncode == 0, timeout=60)
    for archive in images.archives():
        run(_ctr(node, "images", "import", "--platform", "linux/amd64", archive), quiet=True, timeout=600)
    machine.spawn(
        f"kubelet-{node.name}",
        [
            config.BIN / "kubelet",
            "--config=/etc/kubernetes/kubelet-config.yaml",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            f"--node-ip={node.ip}", f"--hostname-override={node.name}", "--v=1",
        ],
        node=node,
    )
    machine.spawn(f"kube-proxy-{node.name}", [config.BIN / "kube-proxy", "--config=/etc/kubernetes/kube-proxy-config.yaml", "--v=1"], node=node)


def add_node(node: config.Node, control: config.Node) -> None:
    machine.add_node_netns(node)
    machine.prepare_node_dirs(node)
    _write_node_files(node, control, config.STATE / "pki")
    machine.create_mount_ns(node)
    _start_node(node)


# --- Weir ---------------------------------------------------------------------------------------------


def weir_manifest(routing: str) -> str:
    """install/weir.yaml as a user applies it, with the ConfigMap's routing set as asked."""
    text = (config.REPO / "install" / "weir.yaml").read_text()
    if "\n  routing: native\n" not in text:
        raise Failed("install/weir.yaml no longer has `routing: native` in its ConfigMap")
    return text.replace("\n  routing: native\n", f"\n  routing: {routing}\n")


def install_weir(routing: str) -> None:
    log(f"kubectl apply -f install/weir.yaml (routing: {routing})")
    out([config.BIN / "kubectl", "--kubeconfig", ADMIN_KUBECONFIG, "apply", "-f", "-"], input=weir_manifest(routing))
    kubectl("-n", "kube-system", "rollout", "status", "daemonset/weir", "--timeout=300s", timeout=320)


def wait_nodes_ready(count: int, timeout: float = 300) -> None:
    def ready() -> bool:
        nodes = json.loads(kubectl("get", "nodes", "-o", "json", timeout=20))["items"]
        ok = [
            n for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        ]
        return len(ok) == count

    wait_for(f"{count} nodes Ready", ready, timeout=timeout, interval=1)


def _nodes_registered_with_cidrs(count: int) -> bool:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json", timeout=20))["items"]
    return len(nodes) == count and all(n["spec"].get("podCIDRs") for n in nodes)


def _waiting_for_network(count: int) -> bool:
    """Every node reports NotReady because its runtime has no network: nothing but Weir
    provides one, so the nodes may turn Ready only once Weir writes its conflist."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json", timeout=20))["items"]
    waiting = 0
    for n in nodes:
        for c in n["status"].get("conditions", []):
            if c["type"] != "Ready":
                continue
            if c["status"] == "True":
                raise Failed(f"node {n['metadata']['name']} is Ready before Weir is installed: another CNI config is visible to it")
            if "network" in c.get("message", "").lower():
                waiting += 1
    return waiting == count


# --- up / down ----------------------------------------------------------------------------------------


def up(count: int, routing: str, skip_build: bool = False) -> None:
    if count < 1:
        raise Failed("--nodes must be at least 1")
    if routing not in ("native", "vxlan"):
        raise Failed("--routing is native or vxlan")
    if CLUSTER_INFO.exists() or machine.our_netns():
        raise Failed("a cluster (or its remains) is already here: run `scripts/cluster.sh down` first")
    if not skip_build:
        build.build_all()
    started = time.monotonic()
    nodes = config.nodes(count)
    control = nodes[0]
    try:
        config.STATE.mkdir(parents=True, exist_ok=True)
        CLUSTER_INFO.write_text(json.dumps({"nodes": count, "routing": routing}))
        machine.save_kernel_tunables()
        machine.cgroup_create(f"{machine.CGROUP_ROOT}/daemons")
        log(f"machines: {count} node namespace(s) on {config.SEGMENT}")
        machine.create_segment([])
        pki_dir = config.STATE / "pki"
        pki.make(pki_dir, nodes)
        pki.kubeconfig(
            ADMIN_KUBECONFIG, f"https://127.0.0.1:{config.API_LOCAL_PORT}",
            pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key", "kubernetes-admin",
        )
        # The control plane's node first: the API server runs in its network namespace.
        machine.add_node_netns(control)
        machine.prepare_node_dirs(control)
        _write_node_files(control, control, pki_dir)
        machine.create_mount_ns(control)
        _start_api_forwarder(control)
        log("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        _start_control_plane(control, pki_dir)
        log("nodes: containerd (images imported), kubelet, kube-proxy")
        _start_node(control)
        for node in nodes[1:]:
            add_node(node, control)
        wait_for("every node registered with a pod CIDR", lambda: _nodes_registered_with_cidrs(count), timeout=180, interval=1)
        wait_for("every node NotReady for want of a network", lambda: _waiting_for_network(count), timeout=60, interval=1)
        install_weir(routing)
        wait_nodes_ready(count)
    except BaseException:
        log("bring-up failed; logs are in " + str(config.STATE / "logs") + " until `down`")
        raise
    log(f"cluster up in {time.monotonic() - started:.0f}s: {count} node(s), routing {routing}")


def down() -> None:
    machine.teardown()
    left = machine.leftovers()
    if left:
        raise Failed("left behind: " + "; ".join(left))
