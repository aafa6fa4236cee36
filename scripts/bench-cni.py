#!/usr/bin/env python3
"""CNI ADD and DEL latency: weir (agent handshake included) against Debian's reference plugins
(bridge + host-local, containernetworking-plugins), invoked the same way, in the same node netns,
in the same run. Prints medians, p90s and the weir/reference ratio. A benchmark, not a test.

The agent attaches its tc programs as it would on the node (`--attach-mode auto`: a clsact filter on
each pod veth, tcx on the node's own devices) unless `--attach-mode` says otherwise; the mode is
printed with the results. With `--attach-mode tcx` the pod's one attach waits for an RCU grace
period in the kernel, which then dominates weir's ADD.

Usage (root): python3 scripts/bench-cni.py [--iterations 100] [--attach-mode auto|tcx|clsact]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "target/release/weir-lab")
REF_DIR = "/usr/lib/cni"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def invoke(node_ns, plugin, cni_path, command, cid, netns, conf):
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": f"/run/netns/{netns}" if netns else "",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": cni_path,
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
    }
    start = time.perf_counter()
    out = subprocess.run(["nsenter", f"--net=/run/netns/{node_ns}", plugin], env=env,
                         input=json.dumps(conf), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{plugin} {command} failed: {out.stdout}{out.stderr}")
    return elapsed, (json.loads(out.stdout) if out.stdout.strip() else None)


def measure(name, node_ns, plugin, cni_path, conf, iterations, prefix):
    adds, dels = [], []
    for i in range(iterations + 5):
        netns = f"{prefix}-b{i}"
        sh("ip", "netns", "add", netns)
        try:
            cid = f"{name}{i:05d}"
            t_add, result = invoke(node_ns, plugin, cni_path, "ADD", cid, netns, conf)
            t_del, _ = invoke(node_ns, plugin, cni_path, "DEL", cid, netns, dict(conf, prevResult=result))
        finally:
            sh("ip", "netns", "del", netns)
        if i >= 5:  # warm-up
            adds.append(t_add * 1e3)
            dels.append(t_del * 1e3)
    return adds, dels


def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.9) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--attach-mode", choices=["auto", "tcx", "clsact"], default="auto")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.path.exists(os.path.join(REF_DIR, "bridge")):
        sys.exit("reference plugins missing: apt-get install containernetworking-plugins")
    labdir = tempfile.mkdtemp(prefix="weir-lab-bench-")
    env = dict(os.environ, WEIR_LAB_DIR=labdir, WEIR_LAB_AGENT_ARGS=f"--attach-mode {args.attach_mode}")
    subprocess.run([LAB, "up"], env=env, check=True, capture_output=True)
    try:
        state = json.load(open(os.path.join(labdir, "state.json")))
        node = state["nodes"][0]
        agent_log = open(node["log_file"]).read()
        modes = [l.split("mode=")[1].split()[0] for l in agent_log.splitlines() if "tc attach mode" in l]
        attach_mode = modes[-1] if modes else "unknown"
        if args.attach_mode == "auto":
            attach_mode = f"clsact on pod veths ({attach_mode} on the node's devices)"
        conflist = json.load(open(os.path.join(node["cni_conf_dir"], "10-weir.conflist")))
        weir_conf = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"], name=conflist["name"])
        prefix = node["netns"].rsplit("-", 1)[0]
        ref_conf = {
            "cniVersion": "1.0.0", "name": "refbench", "type": "bridge", "bridge": "cni-ref0",
            "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "subnet": "10.88.0.0/16",
                     "dataDir": os.path.join(labdir, "host-local")},
        }
        weir_bin = os.path.join(ROOT, "target/release/weir")
        results = {
            "weir": measure("weir", node["netns"], weir_bin, os.path.dirname(weir_bin), weir_conf,
                            args.iterations, prefix),
            "bridge+host-local": measure("ref", node["netns"], os.path.join(REF_DIR, "bridge"),
                                         REF_DIR, ref_conf, args.iterations, prefix),
        }
    finally:
        subprocess.run([LAB, "down"], env=env, capture_output=True)
        shutil.rmtree(labdir, ignore_errors=True)
    print(f"CNI latency over {args.iterations} ADD+DEL pairs (ms, process start included); "
          f"weir-agent --attach-mode {args.attach_mode}: attaching with {attach_mode}")
    print(f"{'plugin':<20}{'ADD p50':>10}{'ADD p90':>10}{'DEL p50':>10}{'DEL p90':>10}")
    for name, (adds, dels) in results.items():
        a50, a90 = summary(adds)
        d50, d90 = summary(dels)
        print(f"{name:<20}{a50:>10.2f}{a90:>10.2f}{d50:>10.2f}{d90:>10.2f}")
    wa, wd = results["weir"]
    ra, rd = results["bridge+host-local"]
    print(f"ratio weir/reference: ADD p50 {summary(wa)[0] / summary(ra)[0]:.2f}, "
          f"DEL p50 {summary(wd)[0] / summary(rd)[0]:.2f} (target: ADD <= 0.50)")


if __name__ == "__main__":
    main()
