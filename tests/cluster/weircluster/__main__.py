"""scripts/cluster.sh's commands: up, down, e2e, cnp-conformance, smoke, test, env, build."""

from __future__ import annotations

import argparse
import sys

from . import build, cluster, suites
from .run import Failed


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster.sh", description="A local Kubernetes cluster whose only network is Weir.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="build what is missing, bring the cluster up with Weir installed")
    p_up.add_argument("--nodes", type=int, default=1)
    p_up.add_argument("--routing", choices=["native", "vxlan"], default="native")
    sub.add_parser("down", help="remove everything the cluster put on the machine (idempotent)")
    p_e2e = sub.add_parser("e2e", help="upstream's Netpol e2e specs against the cluster that is up")
    p_e2e.add_argument("--procs", type=int, default=3, help="ginkgo parallel processes")
    p_e2e.add_argument("extra", nargs=argparse.REMAINDER, help="extra e2e.test flags")
    sub.add_parser("cnp-conformance", help="network-policy-api's ClusterNetworkPolicy conformance suite (1 or more nodes)")
    sub.add_parser("smoke", help="up (1 node), two pods talk, a policy denies, down")
    sub.add_parser("test", help="the cluster checks: the seed scenario, probes, recreation, a rollout under a stream, uninstall")
    sub.add_parser("env", help="where the upstream binaries and the kubeconfig are")
    sub.add_parser("build", help="build (or check) everything the cluster runs")
    args = parser.parse_args()

    try:
        if args.command == "up":
            cluster.up(args.nodes, args.routing)
            print(f"KUBECONFIG={cluster.ADMIN_KUBECONFIG}")
            return 0
        if args.command == "down":
            cluster.down()
            return 0
        if args.command == "build":
            build.build_all()
            return 0
        if args.command == "env":
            print("\n".join(build.env_lines()))
            return 0
        if args.command == "e2e":
            extra = [a for a in args.extra if a != "--"]
            tally = suites.e2e(extra, procs=args.procs)
        elif args.command == "cnp-conformance":
            tally = suites.cnp_conformance()
        elif args.command == "smoke":
            tally = suites.smoke()
        else:
            tally = suites.cluster_checks()
    except Failed as e:
        print(f"cluster.sh {args.command}: {e}", file=sys.stderr)
        return 1
    print(tally.line())
    return 0 if not tally.failed else 1


if __name__ == "__main__":
    sys.exit(main())
