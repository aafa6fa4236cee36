// SPDX-License-Identifier: Apache-2.0
//! Pods on different nodes, on the real kernel with the real plugin and agents: a 3-node lab on one
//! shared segment, in native routing and in VXLAN. Cross-node TCP, UDP and ICMP; node → remote pod;
//! a Service whose backend is on another node; no masquerading between pods, masquerading to the
//! outside; one route per node and none per pod; nodes joining, changing pod CIDR and leaving; an
//! agent restart during a cross-node stream; full-size TCP through the tunnel without fragments.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use weir_tests::{
    in_netns,
    lab::{ProbeOptions, ProbeTarget},
    state::Routing,
    Lab, LabOptions, PodSpec, Proto,
};

const QUICK: Duration = Duration::from_millis(800);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn lab(tag: &str, routing: Routing) -> Lab {
    let opts = LabOptions {
        nodes: 3,
        routing,
        ..LabOptions::isolated(tag)
    };
    Lab::up(&opts).expect("lab up")
}

/// x/a on node 1, x/b on node 2, x/c on node 3.
fn add_pods(lab: &Lab) {
    for (name, node) in [("a", 1), ("b", 2), ("c", 3)] {
        lab.add_pod_with(&PodSpec::new("x", name).on_node(node))
            .unwrap();
    }
}

fn reach(lab: &Lab, from: &str, to: &str, proto: Proto) -> bool {
    let (ns, name) = to.split_once('/').unwrap();
    let result = lab
        .probe_with(
            from,
            &ProbeTarget::pod(ns, name),
            &ProbeOptions::new(proto, 80).timeout(QUICK),
        )
        .unwrap();
    if !result.connected {
        eprintln!("{from} → {to} over {proto:?}: {:?}", result.error);
    }
    result.connected
}

fn pod_netns(lab: &Lab, pod: &str) -> String {
    let (ns, name) = pod.split_once('/').unwrap();
    lab.pod(ns, name).unwrap().netns
}

fn pod_ip(lab: &Lab, pod: &str) -> Ipv4Addr {
    let (ns, name) = pod.split_once('/').unwrap();
    lab.pod(ns, name).unwrap().ip
}

/// The source address a TCP server in `server_netns` sees for a connection from `client_netns`.
fn seen_source(client_netns: &str, server_netns: &str, server_ip: Ipv4Addr, port: u16) -> Ipv4Addr {
    let listener = in_netns(server_netns, || {
        TcpListener::bind(SocketAddrV4::new(server_ip, port))
    })
    .unwrap()
    .unwrap();
    let client = in_netns(client_netns, || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(server_ip, port).into(),
            Duration::from_secs(3),
        )
    })
    .unwrap()
    .expect("connecting");
    let (_conn, peer) = listener.accept().unwrap();
    drop(client);
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("IPv6 peer {other}"),
    }
}

/// `ip -o route` of a node's netns, one route a line.
fn routes(netns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "-4", "route", "show", "table", "main"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The pod CIDRs a node routes to `weir0`.
fn weir0_routes(netns: &str) -> BTreeSet<String> {
    routes(netns)
        .iter()
        .filter(|r| r.contains("dev weir0"))
        .map(|r| r.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// `weir-agent remotes` on a node: prefix → node address.
fn remotes(lab: &Lab, node: u32) -> BTreeSet<(String, String)> {
    let state = lab.state().unwrap();
    let node = state.node(node).unwrap();
    let agent = weir_tests::paths::require_bin("weir-agent").unwrap();
    let mut command = Command::new(agent);
    command
        .args(["remotes", "--bpffs-dir"])
        .arg(&node.bpffs_dir);
    weir_tests::netns::command_in_netns(&mut command, &node.netns).unwrap();
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                row["prefix"].as_str().unwrap().to_owned(),
                row["node_ip"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Counter total of `reason` on one node.
/// Everything but the VXLAN-only checks, for either routing mode.
fn pods_on_three_nodes_talk_flat(routing: Routing, tag: &str) {
    let lab = lab(tag, routing);
    add_pods(&lab);
    let pods = ["x/a", "x/b", "x/c"];

    // Every pod reaches every other, on its own node or not, over TCP, UDP and ICMP.
    for from in pods {
        for to in pods.iter().filter(|&&to| to != from) {
            for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
                assert!(reach(&lab, from, to, proto), "{from} → {to} {proto:?}");
            }
        }
    }
    // A node reaches another node's pods; a pod reaches another node's Service backend.
    assert!(reach(&lab, "node1", "x/b", Proto::Tcp));
    assert!(reach(&lab, "node3", "x/a", Proto::Icmp));
    for (from, to) in [("x/a", "x/c"), ("x/c", "x/b")] {
        let (ns, name) = to.split_once('/').unwrap();
        let r = lab
            .probe_with(
                from,
                &ProbeTarget::pod(ns, name),
                &ProbeOptions::new(Proto::Tcp, 80)
                    .via_service()
                    .timeout(QUICK),
            )
            .unwrap();
        assert!(r.connected, "{from} → Service of {to}: {r:?}");
        assert_eq!(r.reply.as_deref(), Some(to));
    }

    // Pods see each other's real addresses; the outside sees the node's.
    let a_ns = pod_netns(&lab, "x/a");
    let b_ns = pod_netns(&lab, "x/b");
    assert_eq!(
        seen_source(&a_ns, &b_ns, pod_ip(&lab, "x/b"), 7001),
        pod_ip(&lab, "x/a")
    );
    let state = lab.state().unwrap();
    let node1 = state.node(1).unwrap().clone();
    assert_eq!(
        seen_source(&a_ns, &state.ext.netns, EXT_IP, 7002),
        node1.ip,
        "pod → outside is masqueraded to its node"
    );

    // One route per node, none per pod; the maps hold one entry per other node's CIDR.
    let cidrs: BTreeSet<String> = state.nodes.iter().map(|n| n.pod_cidr.clone()).collect();
    for node in &state.nodes {
        assert_eq!(weir0_routes(&node.netns), cidrs, "routes of {}", node.name);
        for route in routes(&node.netns) {
            assert!(
                !route.starts_with("10.244.") || route.contains("/24"),
                "{route}"
            );
        }
    }
    let mut expected = vec![
        ("10.244.2.0/24", "192.0.2.12"),
        ("10.244.3.0/24", "192.0.2.13"),
    ];
    if routing == Routing::Vxlan {
        expected.extend([
            ("192.0.2.12/32", "192.0.2.12"),
            ("192.0.2.13/32", "192.0.2.13"),
        ]);
    }
    assert_eq!(remotes(&lab, 1), set(&expected));
    assert!(common::node_packets(&lab, 1, "forward_remote") > 0);
    // Straight from the other node to the pod, not through the receiving node's stack.
    assert!(common::node_packets(&lab, 2, "from_remote") > 0);

    // An established cross-node stream survives a crash and a graceful restart of both agents.
    let stream = common::Stream::start(&a_ns, &b_ns, pod_ip(&lab, "x/b"), 9100);
    for (index, kill) in [(2, true), (1, false)] {
        let agent = lab.node(index).unwrap().agent.unwrap();
        common::restart_agent(&lab, index, agent, kill, &[]);
    }
    stream.finish();
    assert_eq!(remotes(&lab, 1), set(&expected), "adopted, not rebuilt");

    // Nodes join, change pod CIDR and leave while the agents run.
    lab.put_node_object("n9", Ipv4Addr::new(192, 0, 2, 99), "10.244.99.0/24")
        .unwrap();
    assert!(remotes(&lab, 1).contains(&("10.244.99.0/24".into(), "192.0.2.99".into())));
    assert!(weir0_routes(&node1.netns).contains("10.244.99.0/24"));
    lab.put_node_object("n9", Ipv4Addr::new(192, 0, 2, 99), "10.244.98.0/24")
        .unwrap();
    let now = remotes(&lab, 1);
    assert!(now.contains(&("10.244.98.0/24".into(), "192.0.2.99".into())));
    assert!(!now.iter().any(|(prefix, _)| prefix == "10.244.99.0/24"));
    assert!(!weir0_routes(&node1.netns).contains("10.244.99.0/24"));
    lab.delete_node_object("n9").unwrap();
    assert_eq!(remotes(&lab, 1), set(&expected));

    // Node 3 leaves: its routes and entries go from every other node, and its pods are unreachable.
    lab.delete_node_object("n3").unwrap();
    for index in [1, 2] {
        let node = state.node(index).unwrap();
        assert!(!weir0_routes(&node.netns).contains("10.244.3.0/24"));
        assert!(!remotes(&lab, index)
            .iter()
            .any(|(p, n)| p == "10.244.3.0/24" || n == "192.0.2.13"));
    }
    let sent_remote = common::node_packets(&lab, 1, "forward_remote");
    assert!(!reach(&lab, "x/a", "x/c", Proto::Tcp));
    assert_eq!(common::node_packets(&lab, 1, "forward_remote"), sent_remote);
    assert!(reach(&lab, "x/a", "x/b", Proto::Tcp));
    lab.down().unwrap();
}

#[test]
fn native_routing_pods_on_three_nodes_talk_flat() {
    require_root!();
    pods_on_three_nodes_talk_flat(Routing::Native, "mn-native");
}

#[test]
fn vxlan_routing_pods_on_three_nodes_talk_flat() {
    require_root!();
    pods_on_three_nodes_talk_flat(Routing::Vxlan, "mn-vxlan");
}

/// SYNs `netns` has retransmitted so far (`TcpExt: TCPSynRetrans`).
fn syn_retransmits(netns: &str) -> u64 {
    let text = in_netns(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap()
    })
    .unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names
        .zip(values)
        .find(|(name, _)| *name == "TCPSynRetrans")
        .map(|(_, value)| value.parse().unwrap())
        .expect("TCPSynRetrans in /proc/net/netstat")
}

/// On a fresh lab, the first connection from each node's own stack to each other node's pod, and
/// (on another fresh lab, so neither kind resolves addresses for the other) the first from a pod
/// through a Service to a backend on each other node, open without a single retransmitted SYN:
/// nothing waits for (or is lost while) the peer node's address resolves.
fn first_connections_to_other_nodes_need_no_retransmission(routing: Routing, tag: &str) {
    let pods = [(1, "x/a"), (2, "x/b"), (3, "x/c")];
    let mut slow = Vec::new();
    for via_service in [false, true] {
        let lab = lab(
            &format!("{tag}-{}", if via_service { "svc" } else { "node" }),
            routing,
        );
        add_pods(&lab);
        for (from_node, from_pod) in pods {
            for (to_node, to_pod) in pods {
                if from_node == to_node {
                    continue;
                }
                let (ns, name) = to_pod.split_once('/').unwrap();
                let mut opts = ProbeOptions::new(Proto::Tcp, 80).timeout(Duration::from_secs(5));
                let (from, netns) = if via_service {
                    opts = opts.via_service();
                    (from_pod.to_owned(), pod_netns(&lab, from_pod))
                } else {
                    (
                        format!("node{from_node}"),
                        lab.node(from_node).unwrap().netns,
                    )
                };
                let before = syn_retransmits(&netns);
                let result = lab
                    .probe_with(&from, &ProbeTarget::pod(ns, name), &opts)
                    .unwrap();
                let retransmitted = syn_retransmits(&netns) - before;
                assert!(result.connected, "{from} → {to_pod}: {:?}", result.error);
                let what = format!(
                    "{from} → {to_pod}{}",
                    if via_service {
                        " through its Service"
                    } else {
                        ""
                    }
                );
                eprintln!(
                    "{what}: {} µs, {retransmitted} SYN retransmissions",
                    result.rtt_us.unwrap_or(0)
                );
                if retransmitted > 0 {
                    slow.push(what);
                }
            }
        }
    }
    assert!(
        slow.is_empty(),
        "first connections that needed a retransmitted SYN: {slow:?}"
    );
}

#[test]
fn native_routing_first_connections_need_no_retransmission() {
    require_root!();
    first_connections_to_other_nodes_need_no_retransmission(Routing::Native, "first-native");
}

#[test]
fn vxlan_routing_first_connections_need_no_retransmission() {
    require_root!();
    first_connections_to_other_nodes_need_no_retransmission(Routing::Vxlan, "first-vxlan");
}

/// IP fragments a node's stack created or reassembled (from `/proc/net/snmp` of its netns).
fn fragments(netns: &str) -> u64 {
    let text = in_netns(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap()
    })
    .unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    ["ReasmReqds", "FragCreates", "FragFails"]
        .iter()
        .map(|want| {
            let i = names.iter().position(|n| n == want).unwrap();
            values[i].parse::<u64>().unwrap()
        })
        .sum()
}

/// Packets the nodes' `weir-vxlan` devices received and sent, summed over the nodes.
fn tunnel_packets(nodes: &[String]) -> (u64, u64) {
    nodes
        .iter()
        .map(|n| {
            let dev = in_netns(n, || std::fs::read_to_string("/proc/thread-self/net/dev"))
                .unwrap()
                .unwrap();
            // "weir-vxlan: rx_bytes rx_packets (6 more rx fields) tx_bytes tx_packets ..."
            let fields: Vec<u64> = dev
                .lines()
                .find_map(|l| l.trim().strip_prefix("weir-vxlan:"))
                .expect("a weir-vxlan device")
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            (fields[1], fields[9])
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// `size` bytes from a pod in `a_ns` to a TCP server in `b_ns` at `b_ip`, which echoes them:
/// both ways, byte for byte; each side gives up after 30 s without progress.
fn echo_exchange(a_ns: &str, b_ns: &str, b_ip: Ipv4Addr, port: u16, size: usize) {
    let listener = in_netns(b_ns, || TcpListener::bind(SocketAddrV4::new(b_ip, port)))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = vec![0u8; size];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(&got).unwrap();
        got
    });
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut client = in_netns(a_ns, || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(b_ip, port).into(),
            Duration::from_secs(3),
        )
    })
    .unwrap()
    .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client.write_all(&payload).unwrap();
    let mut echoed = vec![0u8; size];
    client.read_exact(&mut echoed).unwrap();
    assert!(server.join().unwrap() == payload, "server got other bytes");
    assert!(echoed == payload, "echo differs");
}

/// One ping of `size` payload bytes (IP length `size` + 28) from `netns` to `dst`, with DF
/// (`-M do`) or without (`-M dont`), waiting 2 s for the answer.
fn ping(netns: &str, dst: Ipv4Addr, size: usize, dont_fragment: bool) -> std::process::Output {
    let mode = if dont_fragment { "do" } else { "dont" };
    Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-c1", "-W2", "-M", mode, "-s",
        ])
        .arg(size.to_string())
        .arg(dst.to_string())
        .output()
        .unwrap()
}

/// ICMP "fragmentation needed" (`mtu`) from `router` to node `from` about a VXLAN datagram it
/// sent to node `to`, sent from `netns`: what a router between the nodes sends.
fn router_says_frag_needed(netns: &str, router: Ipv4Addr, from: Ipv4Addr, to: Ipv4Addr, mtu: u16) {
    // The quote: the datagram's IP and UDP headers and its VXLAN header (VNI 1), which the
    // kernel checks before it believes the error.
    let vxlan = [0x08, 0, 0, 0, 0, 0, 1, 0];
    let quote = common::ipv4_udp_packet(from, to, 40000, 8472, &vxlan);
    let [hi, lo] = mtu.to_be_bytes();
    let pkt = common::icmp_error(router, from, 3, 4, [0, 0, hi, lo], &quote);
    common::send_raw_ipv4(netns, &pkt);
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn full_size_tcp_crosses_vxlan_without_fragments() {
    require_root!();
    let lab = lab("mn-mtu", Routing::Vxlan);
    add_pods(&lab);
    let a_ns = pod_netns(&lab, "x/a");
    let b_ns = pod_netns(&lab, "x/b");
    let b_ip = pod_ip(&lab, "x/b");

    // The pod MTU leaves room for VXLAN on the 1500-byte segment.
    let link = Command::new("ip")
        .args(["-n", &a_ns, "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("mtu 1450 "),
        "{}",
        String::from_utf8_lossy(&link.stdout)
    );
    let state = lab.state().unwrap();
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.netns.clone()).collect();
    let before: u64 = nodes.iter().map(|n| fragments(n)).sum();
    let (_, tx_before) = tunnel_packets(&nodes);

    // Full-size segments both ways, 16 MiB each, byte for byte.
    echo_exchange(&a_ns, &b_ns, b_ip, 7100, 16 << 20);
    let after: u64 = nodes.iter().map(|n| fragments(n)).sum();
    assert_eq!(
        after, before,
        "the nodes fragmented or reassembled IP packets"
    );

    // A DF datagram of exactly the pod MTU crosses; one byte more is refused at the pod.
    assert!(
        ping(&a_ns, b_ip, 1422, true).status.success(),
        "1450-byte DF ping across the tunnel"
    );
    assert!(!ping(&a_ns, b_ip, 1423, true).status.success());

    // Single packets (not GSO) for a local pod are decapsulated at the uplink and go straight to
    // the pod: the tunnel devices receive none of 40 pings and their replies (the bulk transfer
    // above came through them, as GSO packets do).
    let (rx_before, _) = tunnel_packets(&nodes);
    let pings = Command::new("ip")
        .args([
            "netns", "exec", &a_ns, "ping", "-c40", "-i0.01", "-W2", "-q",
        ])
        .arg(b_ip.to_string())
        .output()
        .unwrap();
    assert!(pings.status.success(), "{pings:?}");
    let (rx_after, tx_after) = tunnel_packets(&nodes);
    let through_tunnel = rx_after - rx_before;
    assert!(
        through_tunnel < 10,
        "{through_tunnel} of 80 single packets were received by the tunnel devices, not \
         decapsulated at the uplink"
    );
    // And every packet of the test, GSO or not, was encapsulated in eBPF: the tunnel devices
    // sent none of the 16 MiB each way, the pings or their replies.
    let sent_by_tunnel = tx_after - tx_before;
    assert!(
        sent_by_tunnel < 10,
        "the tunnel devices sent {sent_by_tunnel} packets: not encapsulated in eBPF"
    );

    lab.down().unwrap();
}

/// A path between two nodes narrower than their uplinks (a router that takes 1400 bytes, which
/// PMTU discovery records in each node's route to the other): a pod's full-size DF packets are
/// answered with "fragmentation needed" and the MTU the path leaves a pod, so its TCP sizes
/// segments to the path (before, they went to the tunnel device, which told only the node: on an
/// underlay that drops them, a black hole), and a datagram that may be fragmented is, outside
/// the tunnel. (The lab's veths pass a GSO packet whole whatever its size, so only single
/// packets are really dropped here; the pods' learned MTU shows they were told.)
#[test]
fn a_narrower_path_between_nodes_is_told_to_the_pods() {
    require_root!();
    let lab = lab("mn-pmtu", Routing::Vxlan);
    add_pods(&lab);
    let a_ns = pod_netns(&lab, "x/a");
    let b_ns = pod_netns(&lab, "x/b");
    let a_ip = pod_ip(&lab, "x/a");
    let b_ip = pod_ip(&lab, "x/b");
    let state = lab.state().unwrap();
    let (n1, n2) = (state.node(1).unwrap(), state.node(2).unwrap());
    // The segment's port to node 2 takes 1400 bytes (larger frames are dropped, unannounced);
    // the "router" tells each node, as one would of a tunnel datagram too big for it, which
    // gives the node's route to the other its path MTU.
    ip(&[
        "-n",
        &state.ext.netns,
        "link",
        "set",
        &n2.ext_ifname,
        "mtu",
        "1400",
    ]);
    for (from, to) in [(n1, n2), (n2, n1)] {
        router_says_frag_needed(&state.ext.netns, state.ext.gateway_ip, from.ip, to.ip, 1400);
        let route = Command::new("ip")
            .args(["-n", &from.netns, "route", "get", &to.ip.to_string()])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains("mtu 1400"),
            "{}'s route to {}: {route}",
            from.name,
            to.ip
        );
    }

    // A datagram without DF is fragmented outside the tunnel and arrives whole, both ways.
    let out = ping(&a_ns, b_ip, 1422, false);
    assert!(out.status.success(), "1450-byte ping without DF: {out:?}");

    // Full-size TCP both ways: each pod's first full-size segments are answered by its node with
    // the path's MTU less the 50 bytes of VXLAN, and the rest fit.
    echo_exchange(&a_ns, &b_ns, b_ip, 7200, 4 << 20);
    for (index, ns, dst) in [(1, &a_ns, b_ip), (2, &b_ns, a_ip)] {
        assert!(
            common::node_packets(&lab, index, "drop_too_big") > 0,
            "node {index} answered no packet as too big"
        );
        let route = Command::new("ip")
            .args(["-n", ns, "route", "get", &dst.to_string()])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(route.contains("mtu 1350"), "route to {dst}: {route}");
    }
    echo_exchange(&b_ns, &a_ns, a_ip, 7201, 4 << 20);

    // A pod new to the path learns it from a DF ping: the answer comes from its gateway.
    lab.add_pod_with(&PodSpec::new("x", "d").on_node(1))
        .unwrap();
    let d_ns = pod_netns(&lab, "x/d");
    let out = ping(&d_ns, b_ip, 1422, true);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("From 169.254.1.1")
            && said.contains("Frag needed")
            && said.contains("mtu = 1350"),
        "1450-byte DF ping: {said}"
    );
    assert!(ping(&d_ns, b_ip, 1322, true).status.success());
    lab.down().unwrap();
}
