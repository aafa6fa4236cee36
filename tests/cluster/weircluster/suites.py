"""What runs against the cluster: upstream's Netpol e2e specs, the smoke, and the cluster checks.

Every runner prints one line per case and ends with `N passed, M failed`; it exits non-zero if
anything failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import build, cluster, config, machine
from .cluster import kubectl
from .run import Failed, in_node, log, out, run, wait_for

# Upstream's NetworkPolicy specs (test/e2e/network/netpol). SCTP connectivity specs need the
# kernel's SCTP, which this machine does not have.
E2E_FOCUS = r"\[sig-network\] Netpol"
E2E_SKIP = r"SCTPConnectivity"
REPORTS = Path("/var/tmp/weir-cluster-reports")


@dataclass
class Tally:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        s = f"{len(self.passed)} passed, {len(self.failed)} failed"
        if self.skipped:
            s += f", {len(self.skipped)} skipped"
        return s


# --- upstream e2e -------------------------------------------------------------------------------------


def e2e(extra: list[str], procs: int = 3) -> Tally:
    info = cluster.info()
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = REPORTS / f"netpol-{info['nodes']}n-{info['routing']}-{stamp}"
    report_dir.mkdir()
    print(f"SCTP specs are skipped: this kernel has no SCTP sockets (--ginkgo.skip={E2E_SKIP})", flush=True)
    argv = [
        config.BIN / "ginkgo", f"--procs={procs}", "--no-color", "--timeout=4h",
        f"--focus={E2E_FOCUS}", f"--skip={E2E_SKIP}",
        "--junit-report=junit.xml", f"--output-dir={report_dir}",
        config.BIN / "e2e.test", "--",
        f"--kubeconfig={cluster.ADMIN_KUBECONFIG}", "--provider=local",
        f"--report-dir={report_dir}", *extra,
    ]
    log(f"e2e: {' '.join(str(a) for a in argv)}")
    started = time.monotonic()
    # e2e.test writes a kubeconfig per spec under $TMPDIR and never removes it: give it a
    # directory of its own, removed afterwards.
    scratch = Path(tempfile.mkdtemp(prefix="weir-e2e-"))
    try:
        with open(report_dir / "ginkgo.log", "w") as logf:
            proc = subprocess.run([str(a) for a in argv], stdout=logf, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TMPDIR": str(scratch)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tally = _junit_tally(report_dir / "junit.xml")
    _print_tally(tally)
    print(f"took {time.monotonic() - started:.0f}s; JUnit report and log in {report_dir}", flush=True)
    if proc.returncode != 0 and not tally.failed:
        tally.failed.append(f"ginkgo exited {proc.returncode} (see {report_dir / 'ginkgo.log'})")
    return tally


def cnp_conformance() -> Tally:
    """network-policy-api's conformance suite (ClusterNetworkPolicy, every feature of the release:
    the experimental CRD, named ports and nodes peers) against the cluster that is up, as
    build.build_cnp_conformance builds it (its SCTP parts taken out: no SCTP on this kernel; on
    one node, its host-network server StatefulSet has one replica: two bind the same host ports)."""
    info = cluster.info()
    one_node = info["nodes"] == 1
    binary = build.build_cnp_conformance(one_node)
    counts = build.cnp_conformance_patch_counts(one_node)
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = REPORTS / f"cnp-conformance-{info['nodes']}n-{info['routing']}-{stamp}"
    report_dir.mkdir()
    print(f"network-policy-api {config.NETWORK_POLICY_API_VERSION} conformance, SCTP taken out (no SCTP "
          f"sockets on this kernel): {counts['sctp_tests']} SCTP-only specs, {counts['sctp_pokes']} of "
          f"{counts['pokes']} pokes, {counts['sctp_servers']} SCTP server containers", flush=True)
    if one_node:
        print("one node: the host-network server StatefulSet (centaur) runs one replica, not two (both "
              "would bind the same host ports on the one node); its specs use centaur-0", flush=True)
    kubectl("apply", "--server-side", "-f", str(build.cluster_network_policy_crd()))
    kubectl("wait", "--for=condition=Established", "crd/clusternetworkpolicies.policy.networking.k8s.io",
            "--timeout=60s", timeout=70)
    argv = [binary, "-test.run", "^TestConformance$", "-test.v", "-test.timeout", "90m", "--all-features"]
    log(f"cnp conformance: {' '.join(str(a) for a in argv)}")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="weir-cnp-"))
    try:
        with open(report_dir / "go-test.log", "w") as logf:
            subprocess.run([str(a) for a in argv], stdout=logf, stderr=subprocess.STDOUT, cwd=report_dir,
                           env={**os.environ, "KUBECONFIG": str(cluster.ADMIN_KUBECONFIG), "TMPDIR": str(scratch)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tally = _go_test_tally((report_dir / "go-test.log").read_text(), "TestConformance")
    _print_tally(tally)
    print(f"cnp conformance: {time.monotonic() - started:.0f}s, log in {report_dir}", flush=True)
    return tally


def _print_tally(tally: Tally) -> None:
    for name in tally.passed:
        print(f"PASS {name}")
    for name in tally.failed:
        print(f"FAIL {name}")
    for name, why in tally.skipped:
        print(f"SKIP {name}" + (f" ({why})" if why else ""))


def _go_test_tally(text: str, parent: str) -> Tally:
    """The specs directly under `parent` in `go test -v` output (`--- PASS: parent/Name (1.2s)`)."""
    tally = Tally()
    for m in re.finditer(rf"--- (PASS|FAIL|SKIP): {re.escape(parent)}/([^/\s]+) \(", text):
        outcome, name = m.groups()
        if outcome == "PASS":
            tally.passed.append(name)
        elif outcome == "FAIL":
            tally.failed.append(name)
        else:
            tally.skipped.append((name, ""))
    if not tally.passed and not tally.failed:
        tally.failed.append(f"{parent} (no spec ran; see the log)")
    return tally


def _junit_tally(path: Path) -> Tally:
    """Pass/fail per Netpol spec; the rest of e2e.test's specs are skipped by the focus and not
    counted, but any failure (a suite-level setup node, say) is."""
    tally = Tally()
    if not path.exists():
        tally.failed.append(f"no JUnit report at {path}")
        return tally
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        failed = case.find("failure") is not None or case.find("error") is not None or case.get("status") == "failed"
        skipped = case.find("skipped") is not None or case.get("status") == "skipped"
        if failed:
            tally.failed.append(name)
        elif "Netpol" not in name:
            continue
        elif skipped:
            tally.skipped.append((name, case.find("skipped").get("message", "") if case.find("skipped") is not None else ""))
        else:
            tally.passed.append(name)
    return tally


# --- helpers for the checks ---------------------------------------------------------------------------


def apply(yaml_text: str, namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    out([config.BIN / "kubectl", "--kubeconfig", cluster.ADMIN_KUBECONFIG, *args], input=yaml_text, timeout=60)


def pod_yaml(name: str, labels: dict[str, str], args: list[str], node: str | None = None, extra: str = "") -> str:
    label_lines = "".join(f"\n    {k}: {v}" for k, v in labels.items())
    node_line = f"\n  nodeName: {node}" if node else ""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:{label_lines}
spec:
  terminationGracePeriodSeconds: 0{node_line}
  containers:
  - name: main
    image: {config.AGNHOST_IMAGE}
    imagePullPolicy: IfNotPresent
    args: {json.dumps(args)}{extra}
"""


def wait_pods_ready(namespace: str, timeout: float = 180) -> None:
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod", "--all", f"--timeout={int(timeout)}s", timeout=timeout + 10)


def pod_ip(namespace: str, name: str) -> str:
    return kubectl("-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.podIP}").strip()


def service_ip(namespace: str, name: str) -> str:
    return kubectl("-n", namespace, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}").strip()


def connects(namespace: str, pod: str, target: str, timeout_s: int = 2) -> bool:
    """A TCP connect from `pod` to `target` (host:port) with agnhost, as upstream's probes do."""
    proc = run(
        [
            config.BIN / "kubectl", "--kubeconfig", cluster.ADMIN_KUBECONFIG, "-n", namespace, "exec", pod, "--",
            "/agnhost", "connect", target, f"--timeout={timeout_s}s", "--protocol=tcp",
        ],
        check=False, capture=True, timeout=60,
    )
    return proc.returncode == 0


def delete_namespace(namespace: str) -> None:
    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False, timeout=150)


def node_names() -> list[str]:
    return [n.name for n in cluster.cluster_nodes()]


DENY_ALL_INGRESS = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""


class Checks:
    """Runs named checks, each a function that raises (Failed or AssertionError) on failure."""

    def __init__(self) -> None:
        self.tally = Tally()

    def check(self, name: str, fn: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            fn()
        except (Failed, AssertionError, subprocess.SubprocessError) as e:
            self.tally.failed.append(name)
            print(f"FAIL {name} ({time.monotonic() - started:.0f}s): {e}", flush=True)
            return
        self.tally.passed.append(name)
        print(f"PASS {name} ({time.monotonic() - started:.0f}s)", flush=True)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


# --- smoke ----------------------------------------------------------------------------------------------


def smoke_checks(checks: Checks) -> None:
    ns = "weir-smoke"

    def pods_talk() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(pod_yaml("server", {"app": "server"}, ["netexec", "--http-port=8080", "--udp-port=-1"]), ns)
        apply(pod_yaml("client", {"app": "client"}, ["pause"]), ns)
        wait_pods_ready(ns)
        target = f"{pod_ip(ns, 'server')}:8080"
        expect(connects(ns, "client", target), f"client cannot reach server at {target}")

    def policy_denies() -> None:
        apply(DENY_ALL_INGRESS, ns)
        target = f"{pod_ip(ns, 'server')}:8080"
        # The agent programs within milliseconds; allow the API's watch a moment to deliver.
        wait_for("the policy to deny client → server", lambda: not connects(ns, "client", target), timeout=30, interval=1)
        # What an operator asks the node's agent: the denial, naming the policy that isolates.
        flows = kubectl("-n", "kube-system", "exec", "ds/weir", "-c", "weir-agent", "--",
                        "weir-agent", "flows", "--verdict", "denied", "--namespace", ns, "--output", "json")
        named = [json.loads(line) for line in flows.splitlines() if line.strip()]
        expect(any(f["dst"]["pod"] == "server" and f["src"]["pod"] == "client"
                   and f["policies"] == [f"{ns}/default-deny-ingress"] for f in named),
               f"no flow event names {ns}/default-deny-ingress for client → server:\n{flows}")
        explained = json.loads(kubectl("-n", "kube-system", "exec", "ds/weir", "-c", "weir-agent", "--",
                                       "weir-agent", "explain", "--from", f"{ns}/client", "--to", f"{ns}/server",
                                       "--port", "8080", "--output", "json"))
        expect(explained["verdict"] == "denied" and explained["datapath_agrees"],
               f"explain client → server: {explained}")
        kubectl("-n", ns, "delete", "networkpolicy", "default-deny-ingress")
        wait_for("client → server allowed again", lambda: connects(ns, "client", target), timeout=30, interval=1)

    checks.check("smoke: two pods talk", pods_talk)
    checks.check("smoke: a policy denies (a flow event and explain name it), and its removal allows again", policy_denies)
    delete_namespace(ns)


def host_port(checks: Checks) -> None:
    """A Deployment publishing a hostPort on the first node, reached on that node's address from
    every node's own network namespace (the node itself and the others) and from a pod on the
    last node, as the kubelet hands the port to the plugin through the portMappings capability."""
    ns = "weir-hostport"
    nodes = cluster.cluster_nodes()
    published_on = nodes[0]
    deployment = f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: published
spec:
  replicas: 1
  selector: {{matchLabels: {{app: published}}}}
  template:
    metadata:
      labels: {{app: published}}
    spec:
      terminationGracePeriodSeconds: 0
      nodeSelector: {{kubernetes.io/hostname: {published_on.name}}}
      containers:
      - name: main
        image: {config.AGNHOST_IMAGE}
        imagePullPolicy: IfNotPresent
        args: ["netexec", "--http-port=8080", "--udp-port=-1"]
        ports: [{{containerPort: 8080, hostPort: {HOST_PORT}, protocol: TCP}}]
"""

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(deployment, ns)
        apply(pod_yaml("client", {"app": "client"}, ["pause"], node=nodes[-1].name), ns)
        wait_pods_ready(ns)
        target = f"{published_on.ip}:{HOST_PORT}"
        for node in nodes:
            reached = run(
                in_node(node, [config.BIN / "agnhost", "connect", target, "--timeout=2s", "--protocol=tcp"]),
                check=False, capture=True, timeout=30,
            )
            expect(reached.returncode == 0, f"{node.name}'s namespace cannot reach the hostPort at {target}: {reached.stderr}")
        expect(connects(ns, "client", target), f"a pod on {nodes[-1].name} cannot reach the hostPort at {target}")
        # Scaled to zero, the port is unpublished. A grace period of 0 deletes the Pod object at
        # once, before the kubelet has stopped the container and called DEL: wait for the rule
        # to go (DEL), then nothing may answer.
        kubectl("-n", ns, "scale", "deployment/published", "--replicas=0")

        def rule_left() -> bool:
            rules = out(in_node(published_on, ["iptables", "-t", "nat", "-S", "WEIR-HOSTPORTS"]), check=False)
            return f"--dport {HOST_PORT} " in rules

        wait_for("the hostPort's DNAT rule to go with its pod", lambda: not rule_left(), timeout=90, interval=1)
        gone = run(in_node(nodes[-1], [config.BIN / "agnhost", "connect", target, "--timeout=2s", "--protocol=tcp"]),
                   check=False, capture=True, timeout=30)
        expect(gone.returncode != 0, f"{target} still answers after its pod is gone")

    checks.check(f"a Deployment's hostPort is reached on its node's address from {len(nodes)} node(s) and a pod", run_check)
    delete_namespace(ns)


HOST_PORT = 18080


def bandwidth(checks: Checks) -> None:
    """A pod annotated `kubernetes.io/egress-bandwidth: 10M` sends at 10 Mbit/s: iperf3 (the
    machine's, run in the pod's network namespace) to the first node's own namespace, for 10 s."""
    ns = "weir-bandwidth"
    nodes = cluster.cluster_nodes()
    runs_on, server_on = nodes[-1], nodes[0]
    shaped = pod_yaml("shaped", {"app": "shaped"}, ["pause"], node=runs_on.name).replace(
        "  labels:", "  annotations: {kubernetes.io/egress-bandwidth: 10M}\n  labels:", 1)

    def pod_netns(ip: str) -> str:
        """The pod's network namespace, found among the node's by its address."""
        for name in out(in_node(runs_on, ["ip", "netns", "list"])).split():
            if name.startswith("cni-") and f" {ip}/" in out(in_node(runs_on, ["ip", "-n", name, "-4", "-o", "addr"]), check=False):
                return name
        raise Failed(f"no network namespace on {runs_on.name} holds {ip}")

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(shaped, ns)
        wait_pods_ready(ns)
        netns = pod_netns(pod_ip(ns, "shaped"))
        server = subprocess.Popen(in_node(server_on, ["iperf3", "-s", "-1", "-p", "5210"]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            report = json.loads(out(in_node(runs_on, ["ip", "netns", "exec", netns, "iperf3", "-c", server_on.ip,
                                                      "-p", "5210", "-t", "10", "-O", "1", "-J"]), timeout=60))
        finally:
            server.kill()
            server.wait()
        mbps = report["end"]["sum_received"]["bits_per_second"] / 1e6
        print(f"  egress-bandwidth 10M: iperf3 received {mbps:.2f} Mbit/s", flush=True)
        expect(9.0 <= mbps <= 11.0, f"a pod limited to 10 Mbit/s sent {mbps:.2f} Mbit/s")

    checks.check("a pod annotated egress-bandwidth: 10M sends at 9-11 Mbit/s (iperf3)", run_check)
    delete_namespace(ns)


# --- the cluster checks (the seed scenario and what a real cluster shows) -----------------------------


def seed_scenario(checks: Checks) -> None:
    """The user's web → API → DB example: Deployments and Services, then examples/db-policy.yaml."""
    ns = "weir-seed"
    nodes = node_names()

    def deployment(name: str, role: str, port: int, node_index: int) -> str:
        node = nodes[node_index % len(nodes)]
        return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector: {{matchLabels: {{role: {role}}}}}
  template:
    metadata:
      labels: {{role: {role}}}
    spec:
      terminationGracePeriodSeconds: 0
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
      - name: main
        image: {config.AGNHOST_IMAGE}
        imagePullPolicy: IfNotPresent
        args: ["netexec", "--http-port={port}", "--udp-port=-1"]
        ports: [{{containerPort: {port}}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{role: {role}}}
  ports: [{{port: {port}, targetPort: {port}, protocol: TCP}}]
"""

    def client_pod(deploy: str) -> str:
        return kubectl("-n", ns, "get", "pods", "-l", f"role={ {'web': 'web', 'api': 'api-pod', 'db': 'db'}[deploy] }",
                       "-o", "jsonpath={.items[0].metadata.name}").strip()

    def setup() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(deployment("web", "web", 80, 0) + "---\n" + deployment("api", "api-pod", 80, 1) + "---\n" + deployment("db", "db", 3306, 2), ns)
        for d in ("web", "api", "db"):
            kubectl("-n", ns, "rollout", "status", f"deployment/{d}", "--timeout=180s", timeout=200)

    def probe(src: str, dst: str, port: int) -> bool:
        return connects(ns, client_pod(src), f"{service_ip(ns, dst)}:{port}")

    def before() -> None:
        expect(probe("web", "db", 3306), "before db-policy: web → db:3306 should connect")
        expect(probe("api", "db", 3306), "before db-policy: api → db:3306 should connect")
        expect(probe("web", "api", 80), "before db-policy: web → api:80 should connect")

    def after() -> None:
        policy = (config.REPO / "examples" / "db-policy.yaml").read_text()
        out([config.BIN / "kubectl", "--kubeconfig", cluster.ADMIN_KUBECONFIG, "-n", ns, "create", "-f", "-"], input=policy)
        wait_for("db-policy to deny web → db:3306", lambda: not probe("web", "db", 3306), timeout=30, interval=1)
        expect(probe("api", "db", 3306), "with db-policy: api → db:3306 should connect")
        expect(probe("web", "api", 80), "with db-policy: web → api:80 should still connect")
        expect(probe("db", "web", 80), "with db-policy: db → web:80 should still connect (no egress rule)")

    checks.check("seed: web, api and db Deployments with Services come up", setup)
    checks.check("seed: before db-policy every tier reaches every other", before)
    checks.check("seed: db-policy (kubectl create): web → db denied, api → db:3306 allowed", after)
    delete_namespace(ns)


def probes_to_isolated_pods(checks: Checks) -> None:
    ns = "weir-probes"
    probe = """
    readinessProbe: {httpGet: {path: /hostname, port: 8080}, periodSeconds: 2, failureThreshold: 2}
    livenessProbe: {httpGet: {path: /hostname, port: 8080}, periodSeconds: 2, failureThreshold: 2}"""

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(DENY_ALL_INGRESS, ns)
        apply(pod_yaml("isolated", {"app": "isolated"}, ["netexec", "--http-port=8080", "--udp-port=-1"], extra=probe), ns)
        apply(pod_yaml("client", {"app": "client"}, ["pause"]), ns)
        wait_pods_ready(ns)
        target = f"{pod_ip(ns, 'isolated')}:8080"
        expect(not connects(ns, "client", target), "the isolated pod is reachable: the probe check would prove nothing")
        # Ten probe periods: a failing probe would flip Ready and restart the container by now.
        time.sleep(20)
        pod = json.loads(kubectl("-n", ns, "get", "pod", "isolated", "-o", "json"))
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        expect(ready and restarts == 0, f"isolated pod: Ready={ready}, restarts={restarts}")

    checks.check("kubelet liveness and readiness probes reach a pod isolated by default-deny", run_check)
    delete_namespace(ns)


def pod_recreated_same_name(checks: Checks) -> None:
    ns = "weir-recreate"

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(pod_yaml("client", {"app": "client"}, ["pause"]), ns)
        server = pod_yaml("server", {"app": "server"}, ["netexec", "--http-port=8080", "--udp-port=-1"], node=node_names()[-1])
        for round_ in range(3):
            apply(server, ns)
            wait_pods_ready(ns)
            target = f"{pod_ip(ns, 'server')}:8080"
            expect(connects(ns, "client", target), f"round {round_}: client cannot reach the recreated server at {target}")
            kubectl("-n", ns, "delete", "pod", "server", "--wait=true", "--timeout=60s", timeout=90)

    checks.check("a pod deleted and recreated with the same name gets a working network (3 rounds)", run_check)
    delete_namespace(ns)


# busybox nc ends the connection when its stdin ends: the server's must stay open.
STREAM_SERVER = "sleep 36000 | nc -l -p 9000 > /tmp/received; sleep 3600"
# Lines numbered from 0, one every 20 ms, until /tmp/stop appears; then the count goes to /tmp/sent.
STREAM_CLIENT = (
    "mkfifo /tmp/fifo; "
    "(i=0; while [ ! -e /tmp/stop ]; do echo $i; i=$((i+1)); usleep 20000; done; echo $i > /tmp/sent) > /tmp/fifo & "
    "nc {ip} 9000 < /tmp/fifo; sleep 3600"
)


def daemonset_roll_under_stream(checks: Checks) -> None:
    """The Weir DaemonSet rolled (a template change, as a config or image change makes) while two
    pods on different nodes keep a TCP connection streaming: every line arrives, in order."""
    ns = "weir-roll"
    nodes = node_names()

    def shell_pod(name: str, script: str, node: str) -> str:
        return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  nodeName: {node}
  containers:
  - name: main
    image: {config.AGNHOST_IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", {json.dumps(script)}]
"""

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(shell_pod("server", STREAM_SERVER, nodes[-1]), ns)
        wait_pods_ready(ns)
        ip = pod_ip(ns, "server")
        apply(shell_pod("client", STREAM_CLIENT.format(ip=ip), nodes[0]), ns)
        wait_pods_ready(ns)
        time.sleep(2)
        before = kubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=weir", "-o", "jsonpath={.items[*].metadata.uid}").split()
        kubectl("-n", "kube-system", "rollout", "restart", "daemonset/weir")
        kubectl("-n", "kube-system", "rollout", "status", "daemonset/weir", "--timeout=300s", timeout=320)
        after = kubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=weir", "-o", "jsonpath={.items[*].metadata.uid}").split()
        expect(not set(before) & set(after), "the rollout did not replace every Weir pod")
        time.sleep(2)
        kubectl("-n", ns, "exec", "client", "--", "touch", "/tmp/stop")
        sent = int(wait_for("the client's count", lambda: kubectl("-n", ns, "exec", "client", "--", "cat", "/tmp/sent", check=False).strip(), timeout=30))

        def received() -> list[str]:
            return kubectl("-n", ns, "exec", "server", "--", "cat", "/tmp/received").split()

        wait_for(f"the server to receive {sent} lines", lambda: len(received()) >= sent, timeout=30, interval=1)
        lines = received()
        expect(sent > 100, f"only {sent} lines were sent: the stream did not run through the rollout")
        expect(lines == [str(i) for i in range(sent)], f"sent {sent} lines, received {len(lines)} (first gap at {_first_gap(lines)})")

    checks.check("Weir's DaemonSet rolled under a cross-node TCP stream: no byte lost", run_check)
    delete_namespace(ns)


def _first_gap(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if line != str(i):
            return i
    return None


def uninstall_leaves_nodes_clean(checks: Checks) -> None:
    def run_check() -> None:
        kubectl("delete", "-f", str(config.REPO / "install" / "weir.yaml"), "--wait=true", "--timeout=120s", timeout=150)
        kubectl("apply", "-f", str(config.REPO / "install" / "uninstall.yaml"))
        kubectl("-n", "kube-system", "rollout", "status", "daemonset/weir-uninstall", "--timeout=300s", timeout=320)
        kubectl("delete", "-f", str(config.REPO / "install" / "uninstall.yaml"), "--wait=true", "--timeout=120s", timeout=150)
        problems = []
        for node in cluster.cluster_nodes():
            problems += [f"{node.name}: {p}" for p in node_weir_traces(node)]
        expect(not problems, "; ".join(problems))

    checks.check("kubectl delete -f install/weir.yaml + install/uninstall.yaml leave every node clean", run_check)


def node_weir_traces(node: config.Node) -> list[str]:
    """What Weir left on a node: links, pins, files, iptables chains."""
    found = []
    links = out(in_node(node, ["ip", "-o", "link", "show"])).splitlines()
    found += [f"link {line.split(':')[1].strip()}" for line in links if re.search(r": (weir\S*)[:@]", line)]
    for path in ("/sys/fs/bpf/weir", "/etc/cni/net.d/10-weir.conflist", "/opt/cni/bin/weir", "/run/weir", "/var/lib/weir", "/var/log/weir"):
        if run(in_node(node, ["test", "-e", path]), check=False).returncode == 0:
            found.append(path)
    neighbours = out(in_node(node, ["ip", "neigh", "show", "nud", "all"]), check=False)
    found += [f"managed neighbour {line}" for line in neighbours.splitlines() if "managed" in line]
    for table in ("nat", "filter", "raw"):
        rules = out(in_node(node, ["iptables-save", "-t", table]), check=False)
        found += [f"iptables {table}: {line}" for line in rules.splitlines() if "WEIR" in line]
    return found


def egress_to_the_api_server(checks: Checks) -> None:
    """The `kubernetes` Service's backend is the API server on the control-plane node (host
    network): a pod with no egress must not reach it, a pod without policy must."""
    ns = "weir-api-egress"
    deny_egress = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: no-egress
spec:
  podSelector: {matchLabels: {app: shut}}
  policyTypes: [Egress]
"""

    def run_check() -> None:
        delete_namespace(ns)
        kubectl("create", "namespace", ns)
        apply(deny_egress, ns)
        for name in ("open", "shut"):
            for node in node_names():
                apply(pod_yaml(f"{name}-{node}", {"app": name}, ["pause"], node=node), ns)
        wait_pods_ready(ns)
        api = f"{config.KUBERNETES_SERVICE_IP}:443"
        for node in node_names():
            expect(connects(ns, f"open-{node}", api), f"a pod without policy on {node} cannot reach {api}")
            expect(not connects(ns, f"shut-{node}", api), f"a pod with no egress on {node} reached the API server at {api}")

    checks.check("egress through the kubernetes Service (a host-network backend) is judged", run_check)
    delete_namespace(ns)


CNP_DENY_FROM_A = """apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata:
  name: weir-check-b-closed-to-a
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: weir-cnp-b}}
  ingress:
  - name: not-from-a
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: weir-cnp-a}}}]
"""

CNP_DOMAIN_NAMES = """apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata:
  name: weir-check-domain-names
spec:
  tier: Baseline
  priority: 10
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: weir-cnp-a}}
  egress:
  - {action: Accept, to: [{domainNames: [example.com]}]}
"""

ALLOW_ALL_INGRESS = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
spec:
  podSelector: {}
  ingress: [{}]
"""


def cluster_network_policy(checks: Checks) -> None:
    """ClusterNetworkPolicy on the real cluster: the CRD (network-policy-api's, experimental
    channel) installed after Weir, an Admin Deny beating the namespace's own allow-all
    NetworkPolicy, the status condition written (Accepted, or why not), explain naming the rule,
    and the CRD's removal leaving no cluster policy enforced."""
    ns_a, ns_b = "weir-cnp-a", "weir-cnp-b"
    crd = build.cluster_network_policy_crd()
    crd_name = "clusternetworkpolicies.policy.networking.k8s.io"

    def condition(name: str) -> tuple[str, str]:
        text = kubectl("get", "clusternetworkpolicy", name, "-o",
                       'jsonpath={.status.conditions[?(@.type=="Accepted")].status} '
                       '{.status.conditions[?(@.type=="Accepted")].reason}', check=False).split()
        return (text[0], text[1]) if len(text) == 2 else ("", "")

    def run_check() -> None:
        for ns in (ns_a, ns_b):
            delete_namespace(ns)
            kubectl("create", "namespace", ns)
        # Server-side: the CRD is larger than client-side apply's annotation allows.
        kubectl("apply", "--server-side", "-f", str(crd))
        kubectl("wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s", timeout=70)
        apply(pod_yaml("server", {"app": "server"}, ["netexec", "--http-port=8080", "--udp-port=-1"]), ns_b)
        apply(pod_yaml("neighbour", {"app": "neighbour"}, ["pause"]), ns_b)
        apply(pod_yaml("client", {"app": "client"}, ["pause"]), ns_a)
        wait_pods_ready(ns_a)
        wait_pods_ready(ns_b)
        target = f"{pod_ip(ns_b, 'server')}:8080"
        expect(connects(ns_a, "client", target), f"before any policy, {ns_a}/client cannot reach {target}")
        apply(ALLOW_ALL_INGRESS, ns_b)
        apply(CNP_DENY_FROM_A)
        # The agents watch the CRD object, so the policy applies once they see it (seconds).
        wait_for("the Admin Deny to apply", lambda: not connects(ns_a, "client", target), timeout=90, interval=1)
        expect(connects(ns_b, "neighbour", target), f"{ns_b}/neighbour is denied too")
        wait_for("status Accepted=True", lambda: condition("weir-check-b-closed-to-a") == ("True", "Accepted"),
                 timeout=60, interval=1)
        explained = json.loads(kubectl("-n", "kube-system", "exec", "ds/weir", "-c", "weir-agent", "--",
                                       "weir-agent", "explain", "--from", f"{ns_a}/client", "--to", f"{ns_b}/server",
                                       "--port", "8080", "--output", "json"))
        rules = [r for d in explained["directions"] for r in d["rules"]]
        expect(explained["verdict"] == "denied" and explained["datapath_agrees"]
               and "Admin weir-check-b-closed-to-a ingress[0] (not-from-a): Deny" in rules,
               f"explain {ns_a}/client → {ns_b}/server: {explained}")
        apply(CNP_DOMAIN_NAMES)
        wait_for("status Accepted=False RuleFailedClosed for domainNames",
                 lambda: condition("weir-check-domain-names") == ("False", "RuleFailedClosed"), timeout=60, interval=1)
        # Without the CRD there are no cluster policies: the namespace's own policy decides again.
        kubectl("delete", "-f", str(crd), "--wait=true", "--timeout=120s", timeout=150)
        wait_for("the CRD's removal to open b to a again", lambda: connects(ns_a, "client", target), timeout=90, interval=1)

    checks.check("ClusterNetworkPolicy: an Admin Deny beats a namespace's allow-all, status written, CRD removal", run_check)
    kubectl("delete", "-f", str(crd), "--ignore-not-found", "--wait=true", "--timeout=120s", check=False, timeout=150)
    for ns in (ns_a, ns_b):
        delete_namespace(ns)


def cluster_checks() -> Tally:
    checks = Checks()
    cluster_network_policy(checks)
    egress_to_the_api_server(checks)
    host_port(checks)
    bandwidth(checks)
    seed_scenario(checks)
    probes_to_isolated_pods(checks)
    pod_recreated_same_name(checks)
    daemonset_roll_under_stream(checks)
    uninstall_leaves_nodes_clean(checks)
    return checks.tally


def smoke() -> Tally:
    """Up (1 node), two pods talk, a policy denies, down: what CI can afford."""
    checks = Checks()
    try:
        checks.check("smoke: cluster up (1 node) with Weir from install/weir.yaml", lambda: cluster.up(1, "native"))
        if not checks.tally.failed:
            smoke_checks(checks)
            host_port(checks)
            bandwidth(checks)
            cluster_network_policy(checks)
    finally:
        if checks.tally.failed:
            keep_logs("smoke")
        checks.check("smoke: down leaves nothing behind", cluster.down)
    return checks.tally


def keep_logs(what: str) -> None:
    """The components' logs, copied out of the state directory that `down` removes."""
    logs = config.STATE / "logs"
    if not logs.exists():
        return
    dest = REPORTS / f"{what}-logs-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(logs, dest)
    print(f"logs of the failed run kept in {dest}", flush=True)
