"""The table of scripts/profile-crossnode.sh: busy CPU time per unit of work, by kernel area.

Arguments: WORKDIR WORKLOAD SECONDS MODE... ; WORKDIR holds, per mode, `perf report --stdio
--sort sym -g none` output (MODE.txt) and the workload's result (MODE.rate: iperf3 --json, or
weir-bench rr-client's JSON line)."""
import json
import re
import sys

HZ = 997  # perf record -F
# Kernel areas by symbol name; the first match wins.
AREAS = [
    ("idle", r"^(default_idle|cpuidle|intel_idle|acpi_idle|poll_idle|native_safe_halt|pv_native_safe_halt|arch_cpu_idle|do_idle|mwait)"),
    ("vxlan / UDP tunnel", r"(vxlan|udp_tunnel|iptunnel|ip_tunnel|gro_cells|udp4_gro|udp_gro|__udp4_lib|udp_rcv|udp_queue|udp_unicast|udp4_ufo|__skb_udp_tunnel)"),
    ("netfilter", r"^(nf_|nft_|ipt_|iptable_|__nf_|ipv4_conntrack|xt_)"),
    ("eBPF programs", r"^(bpf_prog_|bpf_)"),
    ("veth", r"^(veth_|__veth)"),
    ("IP", r"^(ip_|__ip_|ipv4_|fib_|inet_|dst_|rt_)"),
    ("TCP", r"^(tcp_|__tcp_|inet_csk|__inet)"),
    ("copy / checksum", r"(copy_user|_copy_|memcpy|memmove|csum|rep_movs|copyout|copyin|skb_copy)"),
    ("skb / device core", r"^(skb_|__skb|kfree_skb|__kfree_skb|alloc_skb|__alloc_skb|netif_|__netif|net_rx|napi_|__napi|dev_|__dev|process_backlog|sch_|qdisc|__qdisc|tc_|tcf_|sk_)"),
]


def units(work: str, mode: str, workload: str, seconds: float) -> tuple[float, str]:
    """Work done while perf sampled: MB streamed, or connections."""
    text = open(f"{work}/{mode}.rate").read()
    if workload == "stream":
        return json.loads(text)["end"]["sum_received"]["bits_per_second"] / 8e6 * seconds, "MB"
    return json.loads(text.strip().splitlines()[-1])["per_second"] * seconds, "connection"


def symbols(work: str, mode: str) -> tuple[int, list[tuple[float, str, str]]]:
    """perf's sample count and (percent, area, symbol) rows."""
    text = open(f"{work}/{mode}.txt").read()
    samples = int(re.search(r"# Samples: ([\d,.]+K?)", text).group(1).replace(",", "").replace("K", "000"))
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
        if m:
            pct, space, sym = float(m.group(1)), m.group(2), m.group(3)
            area = "user space" if space == "." else next((a for a, r in AREAS if re.search(r, sym)), "other kernel")
            rows.append((pct, area, sym))
    return samples, rows


def cost(work: str, mode: str, workload: str, seconds: float) -> tuple[dict[str, float], str]:
    """Busy CPU microseconds per unit of work, per area."""
    samples, rows = symbols(work, mode)
    shares: dict[str, float] = {}
    for pct, area, _ in rows:
        shares[area] = shares.get(area, 0.0) + pct
    shares.pop("idle", None)
    n, unit = units(work, mode, workload, seconds)
    return {a: pct / 100 * samples / HZ * 1e6 / n for a, pct in shares.items()}, unit


def main() -> None:
    work, workload, seconds, modes = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    results = {m: cost(work, m, workload, seconds) for m in modes}
    unit = next(iter(results.values()))[1]
    names = sorted({a for c, _ in results.values() for a in c},
                   key=lambda a: -max(results[m][0].get(a, 0) for m in modes))
    ratio = len(modes) == 2
    print(f"busy CPU µs per {unit} ({workload})".ljust(30) + "".join(f"{m:>10}" for m in modes)
          + (f"{'ratio':>8}" if ratio else ""))
    for area in names + ["total"]:
        vals = [sum(results[m][0].values()) if area == "total" else results[m][0].get(area, 0) for m in modes]
        line = f"{area:30}" + "".join(f"{v:>10.2f}" for v in vals)
        if ratio:
            line += f"{vals[1] / vals[0]:>8.2f}" if vals[0] > 0 else f"{'–':>8}"
        print(line)
    for m in modes:
        top = [r for r in symbols(work, m)[1] if r[1] != "idle"][:12]
        print(f"\n{m}: busiest symbols (share of all samples)")
        for pct, area, sym in top:
            print(f"  {pct:5.1f}%  {sym:40} {area}")


if __name__ == "__main__":
    main()
