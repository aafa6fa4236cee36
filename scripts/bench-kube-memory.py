#!/usr/bin/env python3
"""Agent memory with the Kubernetes API source: the real weir-agent (`run --source kubernetes`)
against a stand-in API server that lists 1 000 pods, 1 000 NetworkPolicies, their namespaces, a
few Services and two Nodes, then holds every watch open. DEVELOPERS.md's target: under 30 MiB.

Everything runs in a network namespace of its own (the API server on its loopback); the agent pins
under a bpffs directory of its own, and both go again at the end. The pods are all on another node,
so this measures the source and the model, not local endpoints (bench-policy-scale.py measures those
with the manifest source). A benchmark, not a test: it prints numbers.

Usage (root): python3 scripts/bench-kube-memory.py [--pods 1000] [--policies 1000] [--settle 5]
"""
import argparse, http.server, json, os, shutil, socketserver, subprocess, sys, tempfile, time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target/release/weir-agent")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
SCALE = __import__("bench-policy-scale")  # the object generators and agent_memory
NAMESPACES = 10
PORT = 18080


def objects(pods, policies):
    """Every object the stand-in serves, by list path, in API list order."""
    scale = SCALE
    items = {
        "/api/v1/namespaces": [
            {"metadata": {"name": f"ns{n}", "uid": f"ns{n}", "resourceVersion": "1",
                          "labels": {"team": f"t{n % 3}", "kubernetes.io/metadata.name": f"ns{n}"}}}
            for n in range(NAMESPACES)],
        "/api/v1/pods": [],
        "/apis/networking.k8s.io/v1/networkpolicies": [],
        "/api/v1/services": [
            {"metadata": {"namespace": "ns0", "name": f"svc{k}", "uid": f"svc{k}",
                          "resourceVersion": "1"},
             "spec": {"clusterIP": f"10.96.0.{10 + k}", "clusterIPs": [f"10.96.0.{10 + k}"],
                      "ports": [{"port": 80, "protocol": "TCP"}]}}
            for k in range(20)],
        "/api/v1/nodes": [
            {"metadata": {"name": name, "uid": name, "resourceVersion": "1"},
             "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
             "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
            for name, cidr, ip in [("n1", "10.244.1.0/24", "192.0.2.11"),
                                   ("elsewhere", "10.244.2.0/23", "192.0.2.12")]],
    }
    for k in range(pods):
        pod = json.loads(scale.pod_manifest(f"ns{k % NAMESPACES}", f"remote{k}", f"app{k % scale.APPS}",
                                            f"r{k % scale.ROLES}", f"10.244.{2 + k // 250}.{2 + k % 250}",
                                            "elsewhere"))
        pod["metadata"].update(uid=f"pod{k}", resourceVersion="1",
                               managedFields=[{"manager": "kubelet", "operation": "Update"}],
                               annotations={"kubectl.kubernetes.io/last-applied-configuration": "x" * 400})
        items["/api/v1/pods"].append(pod)
    for i in range(policies):
        policy = json.loads(scale.policy_manifest(i, f"r{i % scale.ROLES}"))
        policy["metadata"].update(uid=f"np{i}", resourceVersion="1")
        items["/apis/networking.k8s.io/v1/networkpolicies"].append(policy)
    return items


KINDS = {"/api/v1/namespaces": ("v1", "NamespaceList"), "/api/v1/pods": ("v1", "PodList"),
         "/apis/networking.k8s.io/v1/networkpolicies": ("networking.k8s.io/v1", "NetworkPolicyList"),
         "/api/v1/services": ("v1", "ServiceList"), "/api/v1/nodes": ("v1", "NodeList")}


def serve(pods, policies):
    items = objects(pods, policies)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path not in items:
                return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404})
            if query.get("watch") == ["true"]:
                # Nothing changes: hold the watch open until the client's timeout.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                time.sleep(int(query.get("timeoutSeconds", ["290"])[0]))
                self.wfile.write(b"0\r\n\r\n")
                return
            limit = int(query.get("limit", ["500"])[0])
            start = int(query.get("continue", ["0"])[0] or 0)
            page = items[url.path][start:start + limit]
            meta = {"resourceVersion": "1"}
            if start + limit < len(items[url.path]):
                meta["continue"] = str(start + limit)
            api_version, kind = KINDS[url.path]
            self.reply(200, {"apiVersion": api_version, "kind": kind, "metadata": meta, "items": page})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            self.reply(201, body)

        do_PATCH = do_POST

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    Server(("127.0.0.1", PORT), Handler).serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to run after ready")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.pods, args.policies)
    if os.geteuid() != 0:
        sys.exit("run as root")
    tag = f"weir-kmem-{os.getpid()}"
    work = tempfile.mkdtemp(prefix=tag + "-")
    bpffs = f"/sys/fs/bpf/{tag}"
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "bench",
                   "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{PORT}"}}],
                   "users": [{"name": "bench", "user": {}}],
                   "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]},
                  f)
    flags = ["--node-name", "n1", "--pod-cidr", "10.244.1.0/24", "--cni-conf-dir", f"{work}/net.d",
             "--state-dir", f"{work}/state", "--run-dir", f"{work}/run", "--bpffs-dir", bpffs,
             "--cni-log-file", f"{work}/cni.log"]
    subprocess.run(["ip", "netns", "add", tag], check=True)
    procs = []
    try:
        subprocess.run(["ip", "-n", tag, "link", "set", "lo", "up"], check=True)
        enter = ["nsenter", f"--net=/run/netns/{tag}"]
        procs.append(subprocess.Popen(enter + [sys.executable, __file__, "--serve", "--pods",
                                               str(args.pods), "--policies", str(args.policies)]))
        time.sleep(1.0)
        started = time.time()
        agent = subprocess.Popen(enter + [AGENT, "run", "--source", "kubernetes", "--metrics-address",
                                          "127.0.0.1:19962", "--log-file", f"{work}/agent.log"] + flags,
                                 env=dict(os.environ, KUBECONFIG=kubeconfig))
        procs.append(agent)
        conflist = f"{work}/net.d/10-weir.conflist"
        while not os.path.exists(conflist):
            if agent.poll() is not None or time.time() - started > 120:
                sys.exit(f"the agent did not get ready; its log: {work}/agent.log")
            time.sleep(0.05)
        ready = time.time() - started
        time.sleep(args.settle)
        mem = SCALE.agent_memory(agent.pid)
        print(f"kube source: {args.pods} pods, {args.policies} policies, {NAMESPACES} namespaces, "
              f"20 Services, 2 Nodes (pods carry managedFields and a 400-byte annotation)")
        print(f"  listed, programmed and ready in {ready:.2f} s")
        print(f"  agent memory: RSS {mem['VmRSS']:.1f} MiB, peak {mem['VmHWM']:.1f} MiB (target < 30 MiB)")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["nsenter", f"--net=/run/netns/{tag}", AGENT, "cleanup"] + flags,
                       capture_output=True)
        subprocess.run(["ip", "netns", "del", tag])
        shutil.rmtree(bpffs, ignore_errors=True)
        if not os.environ.get("WEIR_BENCH_KEEP_LOG"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
