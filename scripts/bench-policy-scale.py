#!/usr/bin/env python3
"""Policy scale: how long a NetworkPolicy change takes to be programmed, and the agent's memory,
with 1 000 pods and 1 000 policies (targets: p99 <= 20 ms, memory < 30 MiB) and, with --growth,
also at 3 000 and 10 000 (target at 10 000: p99 <= 20 ms, memory <= 60 MiB), so the README shows
how the cost grows with the cluster.

One lab node runs the real weir-agent; LOCAL pods are real (CNI ADD through weir-lab), the rest of
the 1 000 pods are manifests of pods on other nodes (with status.podIP), so they are peers but have
no veth here. Each sample rewrites one policy file (a different allowed peer label), asks the agent
to Sync over its socket and times the answer: re-read, compile, plan and map writes included. The
agent's RSS (VmRSS) and peak (VmHWM) are read from /proc. A benchmark, not a test: it prints numbers.

With --cluster-policies N, N ClusterNetworkPolicies (half Admin, half Baseline, each applying to
the pods of one app in the namespaces of one team, with Accept/Deny/Pass ingress rules on pod peers
and an egress Deny to a network) join the NetworkPolicies, and the changes alternate between a
NetworkPolicy and a ClusterNetworkPolicy, each timed and reported apart.

Usage (root): python3 scripts/bench-policy-scale.py [--pods 1000] [--policies 1000] [--local 50]
                  [--cluster-policies 0]
              python3 scripts/bench-policy-scale.py --growth
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "target/release/weir-lab")
NAMESPACES = 10
APPS = 100
ROLES = 20


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def pod_manifest(ns, name, app, role, ip, node):
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": app, "role": role}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                 "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "phase": "Running"},
    })


def policy_manifest(i, role):
    ns = f"ns{i % NAMESPACES}"
    return json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": f"p{i}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"app{i % APPS}"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": role}}},
                                  {"namespaceSelector": {"matchLabels": {"team": f"t{i % 3}"}},
                                   "podSelector": {"matchLabels": {"role": f"r{(i + 1) % ROLES}"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}, {"port": "http"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"10.{i % 200}.0.0/16"]}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 1000, "endPort": 2000}]}],
        },
    })


def cluster_policy_manifest(i, role):
    """An admin's policy: Admin for even i, Baseline for odd, applying to app{i % APPS} in the
    namespaces of team t{i % 3}."""
    action = ("Deny", "Accept", "Pass")[i % 3]
    return json.dumps({
        "apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"c{i}"},
        "spec": {
            "tier": "Admin" if i % 2 == 0 else "Baseline",
            "priority": i % 1000,
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"team": f"t{i % 3}"}},
                                 "podSelector": {"matchLabels": {"app": f"app{i % APPS}"}}}},
            "ingress": [
                {"name": "by-role", "action": action,
                 "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": role}}}}],
                 "protocols": [{"tcp": {"destinationPort": {"number": 80 + i % 5}}}]},
                {"name": "team", "action": "Pass",
                 "from": [{"namespaces": {"matchLabels": {"team": f"t{(i + 1) % 3}"}}}]},
            ],
            "egress": [{"name": "no-doc-net", "action": "Deny",
                        "to": [{"networks": [f"192.0.{i % 256}.0/24"]}],
                        "protocols": [{"tcp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}}]}],
        },
    })


def sync(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(b'{"op":"sync"}\n')
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    answer = json.loads(data)
    if answer.get("result") != "synced":
        sys.exit(f"agent answered {answer}")
    return answer


def agent_memory(pid):
    mem = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) / 1024
    return mem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--local", type=int, default=50)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--cluster-policies", type=int, default=0)
    ap.add_argument("--growth", action="store_true",
                    help="1 000 (50 local), 3 000 and 10 000 (100 local) pods and policies, in turn")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not args.growth:
        measure(args.pods, args.policies, args.local, args.samples, args.cluster_policies)
        return
    rows = [measure(n, n, local, args.samples) for n, local in ((1000, 50), (3000, 100), (10000, 100))]
    print("\n| pods x policies (local) | first program | change p50 / p99 | agent RSS (peak) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['pods']} x {r['policies']} ({r['local']}) | {r['first']:.1f} ms | "
              f"{r['p50']:.1f} / {r['p99']:.1f} ms | {r['rss']:.1f} MiB ({r['peak']:.1f}) |")


def measure(pods, policies, local, changes, cluster_policies=0):
    """One run: a lab node, `pods` pods (`local` of them on the node), `policies` policies and
    `cluster_policies` ClusterNetworkPolicies, `changes` single-policy changes. Prints the
    figures and returns them."""
    labdir = tempfile.mkdtemp(prefix="weir-lab-scale-")
    keep = os.environ.get("WEIR_BENCH_KEEP_LOG")
    env = dict(os.environ, WEIR_LAB_DIR=labdir)
    subprocess.run([LAB, "up"], env=env, check=True, capture_output=True)
    try:
        state = json.load(open(os.path.join(labdir, "state.json")))
        node = state["nodes"][0]
        manifests = os.path.join(labdir, "manifests")
        sock = os.path.join(node["run_dir"], "agent.sock")
        pid = node["agent"]["pid"]
        for n in range(NAMESPACES):
            write_atomic(os.path.join(manifests, f"namespace.ns{n}.yaml"), json.dumps({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": f"ns{n}", "labels": {"team": f"t{n % 3}"}}}))
        for k in range(pods - local):
            ip = f"10.244.{2 + k // 250}.{2 + k % 250}"
            write_atomic(os.path.join(manifests, f"pod.remote{k}.json"),
                         pod_manifest(f"ns{k % NAMESPACES}", f"remote{k}", f"app{k % APPS}",
                                      f"r{k % ROLES}", ip, "elsewhere"))
        for i in range(policies):
            write_atomic(os.path.join(manifests, f"networkpolicy.p{i}.json"),
                         policy_manifest(i, f"r{i % ROLES}"))
        for i in range(cluster_policies):
            write_atomic(os.path.join(manifests, f"clusternetworkpolicy.c{i}.json"),
                         cluster_policy_manifest(i, f"r{i % ROLES}"))
        t0 = time.perf_counter()
        sync(sock)
        first = time.perf_counter() - t0
        for k in range(local):
            subprocess.run([LAB, "pod", "add", f"ns{k % NAMESPACES}/local{k}", "--labels",
                            f"app=app{k % APPS},role=r{k % ROLES}"], env=env, check=True,
                           capture_output=True)
        sync(sock)
        samples, cluster_samples = [], []
        for s in range(changes):
            if cluster_policies and s % 2 == 1:
                i = (s * 7) % cluster_policies
                write_atomic(os.path.join(manifests, f"clusternetworkpolicy.c{i}.json"),
                             cluster_policy_manifest(i, f"r{(i + s + 3) % ROLES}"))
                into = cluster_samples
            else:
                i = (s * 7) % policies
                write_atomic(os.path.join(manifests, f"networkpolicy.p{i}.json"),
                             policy_manifest(i, f"r{(i + s + 3) % ROLES}"))
                into = samples
            t0 = time.perf_counter()
            sync(sock)
            into.append((time.perf_counter() - t0) * 1e3)
        mem = agent_memory(pid)
    finally:
        if keep:
            shutil.copy(node["log_file"], keep)
        subprocess.run([LAB, "down"], env=env, capture_output=True)
        shutil.rmtree(labdir, ignore_errors=True)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[max(0, int(len(samples) * 0.99) - 1)]
    print(f"policy scale: {pods} pods ({local} on this node), {policies} policies, "
          f"{cluster_policies} cluster policies, {changes} single-policy changes")
    print(f"  first full program: {first * 1e3:.1f} ms")
    print(f"  NetworkPolicy change -> programmed (Sync round trip): p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"max {samples[-1]:.2f} ms (target p99 <= 20 ms)")
    if cluster_samples:
        cluster_samples.sort()
        print(f"  ClusterNetworkPolicy change -> programmed: p50 {statistics.median(cluster_samples):.2f} ms, "
              f"p99 {cluster_samples[max(0, int(len(cluster_samples) * 0.99) - 1)]:.2f} ms, "
              f"max {cluster_samples[-1]:.2f} ms (target p99 <= 20 ms)")
    target = 30 if pods <= 1000 else 60
    print(f"  agent memory: RSS {mem.get('VmRSS', 0):.1f} MiB, peak {mem.get('VmHWM', 0):.1f} MiB "
          f"(target {'<' if target == 30 else '<='} {target} MiB)")
    return {"pods": pods, "policies": policies, "local": local, "first": first * 1e3,
            "p50": p50, "p99": p99, "rss": mem.get("VmRSS", 0), "peak": mem.get("VmHWM", 0)}


if __name__ == "__main__":
    main()
