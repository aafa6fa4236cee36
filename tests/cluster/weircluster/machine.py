"""The node "machines": network namespaces on one segment, private mount namespaces, cgroups,
and the processes started in them. Everything here is undone by `teardown`, also after a
failed bring-up.

Per node, the processes see:
- a network namespace with eth0 (a veth to the segment's bridge), the node's address and a default
  route to the segment's gateway;
- a mount namespace with their own /var/lib, /run and /var/log (directories under the node's state
  directory), /etc and /opt as overlays over the machine's (so /etc/cni/net.d, /etc/kubernetes and
  /opt/cni/bin are the node's own), a /sys of the node's network namespace, and no bpffs: Weir's
  DaemonSet mounts it, as on a fresh kubeadm node;
- a cgroup root of their own (kubelet's cgroupRoot), so pods of different kubelets never meet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from . import config
from .run import Failed, in_node, log, out, run

CGROUP_ROOT = "weir-cluster"
# What kubelet sets on the machine it runs on (container_manager_linux.go, setupKernelTunables):
# these are the kernel's, not a network namespace's, so `up` saves them and `down` puts them back.
KUBELET_KERNEL_TUNABLES = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
]


def _cgroup_hierarchies() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mnt, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and mnt.startswith("/sys/fs/cgroup"):
            roots.append(Path(mnt))
    return roots


def cgroup_create(relative: str) -> None:
    """A cgroup at /<relative> in every hierarchy (cpuset ones get their parent's CPUs and nodes)."""
    for root in _cgroup_hierarchies():
        path = root
        for part in relative.strip("/").split("/"):
            parent, path = path, path / part
            if path.exists():
                continue
            path.mkdir()
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (parent / knob).exists():
                    (path / knob).write_text((parent / knob).read_text())


def cgroup_join(relative: str, pid: int) -> None:
    for root in _cgroup_hierarchies():
        procs = root / relative.strip("/") / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(pid))


def _cgroup_pids() -> set[int]:
    pids = set()
    for root in _cgroup_hierarchies():
        top = root / CGROUP_ROOT
        if not top.exists():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def _cgroup_remove() -> None:
    for root in _cgroup_hierarchies():
        top = root / CGROUP_ROOT
        if not top.exists():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError as e:
            raise Failed(f"cannot remove cgroup {top}: {e}") from e


def _ns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _pids_in_namespaces(inodes: set[int]) -> set[int]:
    """Processes whose network or mount namespace is one of ours."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for kind in ("net", "mnt"):
            if _ns_inode(entry / "ns" / kind) in inodes:
                found.add(int(entry.name))
                break
    return found


# --- the segment and the nodes' network namespaces ------------------------------------------------


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create_segment(nodes: list[config.Node]) -> None:
    seg = config.SEGMENT_NETNS
    run(["ip", "netns", "add", seg])
    run(["ip", "-n", seg, "link", "set", "lo", "up"])
    run(["ip", "-n", seg, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", seg, "addr", "add", f"{config.SEGMENT_GATEWAY}/{config.SEGMENT.prefixlen}", "dev", "br0"])
    run(["ip", "-n", seg, "link", "set", "br0", "up"])
    for node in nodes:
        add_node_netns(node)


def add_node_netns(node: config.Node) -> None:
    seg = config.SEGMENT_NETNS
    run(["ip", "netns", "add", node.netns])
    # Both ends are made in the segment's namespace; the node's end then moves into the node.
    run(["ip", "-n", seg, "link", "add", node.name, "type", "veth", "peer", "name", "eth0", "netns", node.netns])
    run(["ip", "-n", seg, "link", "set", node.name, "master", "br0", "up"])
    n = ["ip", "-n", node.netns]
    run([*n, "link", "set", "lo", "up"])
    run([*n, "addr", "add", f"{node.ip}/{config.SEGMENT.prefixlen}", "dev", "eth0"])
    run([*n, "link", "set", "eth0", "up"])
    run([*n, "route", "add", "default", "via", str(config.SEGMENT_GATEWAY)])
    # What a Kubernetes node is configured with (kubeadm's preflight checks it).
    run(["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])


# --- the nodes' mount namespaces --------------------------------------------------------------------

_NODE_MOUNTS = r"""
set -eu
node="$1"
# /sys of this network namespace (as `ip netns exec` does), keeping the machine's cgroup mounts.
mount --rbind /sys/fs/cgroup "$node/mnt/cgroup"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$node/mnt/cgroup" /sys/fs/cgroup
# The node's own /etc and /opt (overlays: the machine's files below, the node's changes above),
# /run and /var/log; /var/lib last, since the node's directory lives under it.
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$node/etc,workdir=$node/work/etc" /etc
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$node/opt,workdir=$node/work/opt" /opt
mount --bind "$node/run" /run
mount --bind "$node/var-log" /var/log
mount --bind "$node/var-lib" /var/lib
# Shared within the node, so that a pod's Bidirectional mount (Weir's bpffs) reaches the node.
mount --make-rshared /
"""


def node_dirs(node: config.Node) -> dict[str, Path]:
    d = node.dir
    return {
        "etc": d / "etc",
        "opt": d / "opt",
        "run": d / "run",
        "var-log": d / "var-log",
        "var-lib": d / "var-lib",
        "work-etc": d / "work" / "etc",
        "work-opt": d / "work" / "opt",
        "mnt-cgroup": d / "mnt" / "cgroup",
    }


def prepare_node_dirs(node: config.Node) -> None:
    for path in node_dirs(node).values():
        path.mkdir(parents=True, exist_ok=True)
    # The node's own directories in the /etc and /opt overlays, opaque: the machine's files there
    # (podman's CNI config in /etc/cni/net.d, say) do not show through.
    for own in ("etc/cni", "etc/kubernetes", "etc/containerd", "opt/cni"):
        path = node.dir / own
        path.mkdir(parents=True, exist_ok=True)
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    for sub in ("etc/cni/net.d", "etc/kubernetes/pki", "opt/cni/bin"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)


def _ns_dir() -> Path:
    return config.STATE / "ns"


def _mounts_under(top: Path) -> list[Path]:
    """Mount points at or under `top` in the machine's mount namespace, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if point == top or top in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def create_mount_ns(node: config.Node) -> None:
    ns_dir = _ns_dir()
    if ns_dir not in _mounts_under(ns_dir):
        ns_dir.mkdir(parents=True, exist_ok=True)
        # A namespace can only be pinned by a bind mount on a private mount (as /run/netns is).
        run(["mount", "--bind", ns_dir, ns_dir])
        run(["mount", "--make-private", ns_dir])
    node.mount_ns.touch()
    run(
        [
            "nsenter", f"--net=/run/netns/{node.netns}", "--",
            "unshare", f"--mount={node.mount_ns}", "--propagation", "private",
            "sh", "-c", _NODE_MOUNTS, "node-mounts", node.dir,
        ]
    )


# --- processes --------------------------------------------------------------------------------------


def spawn(name: str, argv: list[str], *, node: config.Node | None = None, netns: str | None = None, env: dict | None = None) -> int:
    """Starts a daemon in the cluster's cgroup, detached, logging to STATE/logs/<name>.log.

    With `node`, it runs in the node's network and mount namespaces; with `netns`, only in that
    network namespace (the control plane reads the cluster's state directory from the machine).
    """
    if node is not None:
        argv = in_node(node, argv)
    elif netns is not None:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    logs = config.STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env["PATH"] = f"{config.BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if env:
        full_env.update(env)
    cgroup = f"{CGROUP_ROOT}/daemons"
    with open(logs / f"{name}.log", "ab") as logf:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=lambda: cgroup_join(cgroup, os.getpid()),
        )
    pids = config.STATE / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"{name}.pid").write_text(str(proc.pid))
    time.sleep(0.2)
    if proc.poll() is not None:
        raise Failed(f"{name} exited at once (exit {proc.returncode}); see {logs / f'{name}.log'}")
    return proc.pid


def alive(name: str) -> bool:
    pidfile = config.STATE / "pids" / f"{name}.pid"
    try:
        return _running(int(pidfile.read_text()))
    except (OSError, ValueError):
        return False


def stop(name: str, timeout: float = 10) -> None:
    pidfile = config.STATE / "pids" / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(name):
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink(missing_ok=True)


# --- the machine's kernel settings that kubelet changes --------------------------------------------


def save_kernel_tunables() -> None:
    saved = config.STATE / "kernel-tunables.json"
    if saved.exists():
        return
    values = {}
    for key in KUBELET_KERNEL_TUNABLES:
        path = Path("/proc/sys", key)
        if path.exists():
            values[key] = path.read_text().strip()
    saved.write_text(json.dumps(values))


def restore_kernel_tunables() -> None:
    saved = config.STATE / "kernel-tunables.json"
    if not saved.exists():
        return
    for key, value in json.loads(saved.read_text()).items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError as e:
            log(f"could not restore {key}={value}: {e}")
    saved.unlink()


# --- teardown ---------------------------------------------------------------------------------------


def _reap_children() -> None:
    """Daemons this process started (`smoke` brings the cluster up and down in one process)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie is dead; only its parent's wait is missing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def our_netns() -> list[str]:
    if not Path("/run/netns").exists():
        return []
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(config.NETNS_PREFIX + "-"))


def teardown() -> None:
    """Removes every trace of the cluster; safe to run at any point, any number of times."""
    inodes = {i for i in (_ns_inode(f"/run/netns/{n}") for n in our_netns()) if i}
    ns_dir = _ns_dir()
    if ns_dir.exists():
        inodes |= {i for i in (_ns_inode(p) for p in ns_dir.glob("*.mnt")) if i}
    # Processes: the cluster's cgroups hold every daemon, shim and container; anything else still
    # inside one of our namespaces (a helper started by hand) goes too. Kill until none is left.
    deadline = time.monotonic() + 60
    while True:
        pids = (_cgroup_pids() | _pids_in_namespaces(inodes)) - {os.getpid()}
        pidfiles = config.STATE / "pids"
        if pidfiles.exists():
            for f in pidfiles.glob("*.pid"):
                try:
                    pids.add(int(f.read_text()))
                except ValueError:
                    pass
        _reap_children()
        pids = {p for p in pids if _running(p)}
        if not pids:
            break
        if time.monotonic() > deadline:
            raise Failed(f"processes survive SIGKILL: {sorted(pids)}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    # The namespace handles and their private bind mount (stacked mounts come off one by one).
    while mounts := _mounts_under(config.STATE):
        run(["umount", mounts[0]])
    for name in our_netns():
        run(["ip", "netns", "del", name])
    _cgroup_remove()
    restore_kernel_tunables()
    if config.STATE.exists():
        # A node's overlay and snapshot mounts die with its mount namespace, a moment after the
        # last process and handle are gone.
        for attempt in range(50):
            proc = run(["rm", "-rf", "--one-file-system", config.STATE], check=False, quiet=True)
            if proc.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise Failed(f"cannot remove {config.STATE}: {proc.stderr.strip()}")


def leftovers() -> list[str]:
    """What of the cluster is still on the machine (empty after a clean teardown)."""
    found = []
    found += [f"netns {n}" for n in our_netns()]
    found += [f"cgroup {root / CGROUP_ROOT}" for root in _cgroup_hierarchies() if (root / CGROUP_ROOT).exists()]
    if config.STATE.exists():
        found.append(f"state directory {config.STATE}")
    found += [f"mount {m}" for m in _mounts_under(config.STATE)]
    procs = out(["pgrep", "-a", "-f", f"{config.BIN}/|weir-cluster"], check=False).strip()
    found += [f"process {p}" for p in procs.splitlines() if p and str(os.getpid()) != p.split()[0]]
    return found
