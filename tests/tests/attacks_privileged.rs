// SPDX-License-Identifier: Apache-2.0
//! Hostile pods, on the real kernel with the real plugin and agents: each test is an attack an
//! ordinary pod can make on the datapath (forged tunnel packets, forged ICMP errors, ...), run as
//! an attacker would, and the verdict it must get: nothing delivered, and the drop counted.

mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use weir_common::config::{VXLAN_PORT, VXLAN_VNI};
use weir_tests::{in_netns, state::Routing, Lab, LabOptions, PodSpec};

/// A UDP socket on `ip:port` in `netns`, with a short read timeout.
fn listen_udp(netns: &str, ip: Ipv4Addr, port: u16) -> UdpSocket {
    in_netns(netns, || {
        let socket = UdpSocket::bind((ip, port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        socket
    })
    .unwrap()
}

/// What `socket` received next, if anything arrives within its timeout.
fn received(socket: &UdpSocket) -> Option<(Vec<u8>, Ipv4Addr)> {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    let std::net::IpAddr::V4(from) = from.ip() else {
        return None;
    };
    Some((buf[..n].to_vec(), from))
}

/// Hole 1: a pod forges a VXLAN packet to another node whose inner source is a pod that node's
/// policy admits. The tunnel must take packets only from known nodes (outer source, checked
/// against the Node objects) with Weir's VNI, and pods may not send to any node's VXLAN port.
#[test]
fn a_pod_cannot_forge_an_identity_through_the_vxlan_tunnel() {
    require_root!();
    let lab = Lab::up(&LabOptions {
        nodes: 3,
        routing: Routing::Vxlan,
        ..LabOptions::isolated("atk-vxlan")
    })
    .expect("lab up");
    for (name, app, node) in [("a", "a", 1), ("b", "b", 2), ("c", "c", 3), ("d", "a", 3)] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", app).on_node(node))
            .unwrap();
    }
    // x/b admits app=a only (x/a on node 1, x/d on node 3); x/c (node 3) is the attacker.
    lab.apply_yaml(B_FROM_A).unwrap();
    let ip = |name: &str| lab.pod("x", name).unwrap().ip;
    let netns = |name: &str| lab.pod("x", name).unwrap().netns;
    let target = listen_udp(&netns("b"), ip("b"), 9999);

    // The controls: x/a's own datagram arrives, x/c's is denied by policy.
    common::send_raw_ipv4(
        &netns("a"),
        &common::ipv4_udp_packet(ip("a"), ip("b"), 4000, 9999, b"honest"),
    );
    assert_eq!(received(&target), Some((b"honest".to_vec(), ip("a"))));
    common::send_raw_ipv4(
        &netns("c"),
        &common::ipv4_udp_packet(ip("c"), ip("b"), 4000, 9999, b"denied"),
    );
    assert_eq!(
        received(&target),
        None,
        "the policy lets x/c in: the attack would prove nothing"
    );

    // The attack: from x/c, a VXLAN datagram to node 2's tunnel port whose inner packet claims to
    // come from x/a. Sent from an ordinary UDP socket, as any unprivileged pod can.
    let node2 = lab.node(2).unwrap().ip;
    let forged = vxlan_datagram(&common::ipv4_udp_packet(
        ip("a"),
        ip("b"),
        4000,
        9999,
        b"forged",
    ));
    let from_pod_before = common::node_packets(&lab, 3, "drop_tunnel_from_pod");
    send_udp(&netns("c"), ip("c"), (node2, VXLAN_PORT), &forged);
    assert_eq!(
        received(&target),
        None,
        "x/b received a packet a pod forged through the tunnel"
    );
    assert!(common::node_packets(&lab, 3, "drop_tunnel_from_pod") >= from_pod_before + 3);

    // The same from a host on the nodes' segment that is not a node (the lab's outside host, on
    // the segment's bridge): node 2 itself must refuse it, by its outer source.
    let forged_before = common::node_packets(&lab, 2, "drop_tunnel_forged");
    send_udp(&lab.ext_netns(), GATEWAY, (node2, VXLAN_PORT), &forged);
    assert_eq!(
        received(&target),
        None,
        "x/b received a packet forged by a non-node"
    );
    assert!(common::node_packets(&lab, 2, "drop_tunnel_forged") >= forged_before + 3);

    // And through a Service: node 3's host stack DNATs a ClusterIP to node 2's tunnel port (as
    // kube-proxy would for a Service whose endpoint someone pointed there) and masquerades it, so
    // it leaves from node 3's address. Claiming to be x/d, a pod of node 3 that x/b admits, it
    // would pass node 2's source checks: only the node refusing pods' traffic to a tunnel port
    // stops it.
    let forged = vxlan_datagram(&common::ipv4_udp_packet(
        ip("d"),
        ip("b"),
        4000,
        9999,
        b"forged",
    ));
    let node3 = lab.node(3).unwrap().netns;
    let status = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &node3,
            "iptables",
            "-t",
            "nat",
            "-I",
            "PREROUTING",
        ])
        .args([
            "-d",
            "10.96.200.1",
            "-p",
            "udp",
            "--dport",
            "8472",
            "-j",
            "DNAT",
        ])
        .args(["--to-destination", &format!("{node2}:{VXLAN_PORT}")])
        .status()
        .unwrap();
    assert!(status.success());
    send_udp(
        &netns("c"),
        ip("c"),
        (Ipv4Addr::new(10, 96, 200, 1), VXLAN_PORT),
        &forged,
    );
    assert_eq!(
        received(&target),
        None,
        "x/b received a packet forged through a Service"
    );
}

/// The outside host's address on the nodes' segment (the segment bridge's).
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A VXLAN payload (Weir's VNI) carrying `inner` in an Ethernet frame to `weir-vxlan`'s MAC.
fn vxlan_datagram(inner: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0x08, 0, 0, 0];
    datagram.extend_from_slice(&(VXLAN_VNI << 8).to_be_bytes());
    datagram.extend_from_slice(&weir_common::config::TUNNEL_DEV_MAC);
    datagram.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x66]);
    datagram.extend_from_slice(&0x0800u16.to_be_bytes());
    datagram.extend_from_slice(inner);
    datagram
}

/// Three copies of `payload` from an ordinary UDP socket on `from` in `netns`.
fn send_udp(netns: &str, from: Ipv4Addr, to: (Ipv4Addr, u16), payload: &[u8]) {
    in_netns(netns, || {
        let socket = UdpSocket::bind((from, 0)).unwrap();
        for _ in 0..3 {
            socket.send_to(payload, to).unwrap();
        }
    })
    .unwrap();
}

/// An ICMP error from `src` to `dst` (type `kind`, code `code`) quoting the first 28 bytes of
/// `quoted` (its IPv4 header and 8 bytes of its transport header).
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    common::icmp_error(src, dst, kind, code, [0; 4], &quoted[..28])
}

/// A raw ICMP socket in `netns`: it sees every ICMP packet the pod receives.
fn icmp_listener(netns: &str) -> std::os::fd::OwnedFd {
    in_netns(netns, || {
        // SAFETY: socket(2); the descriptor is owned by the returned OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(fd >= 0);
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 700_000,
        };
        // SAFETY: setsockopt with a timeval that lives for the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            std::os::fd::FromRawFd::from_raw_fd(fd)
        }
    })
    .unwrap()
}

/// The sources of the ICMP errors (type 3) `socket` receives before it times out.
fn icmp_errors_from(socket: &std::os::fd::OwnedFd) -> Vec<Ipv4Addr> {
    let mut sources = Vec::new();
    loop {
        let mut buf = [0u8; 1500];
        // SAFETY: recv(2) into a buffer we own, of its length.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(socket),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            return sources;
        }
        if n >= 21 && buf[20] == 3 {
            sources.push(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
        }
    }
}

/// Hole 3: an ICMP error is let through when its quoted packet belongs to a tracked flow. A pod
/// that a target's policy keeps out must not get in by quoting one of the target's flows with
/// someone else: as Linux conntrack requires, the error must go back to whoever sent the quoted
/// packet, and a pod (never a router on another pod's path) may only report its own flows.
#[test]
fn a_pod_cannot_reach_an_isolated_pod_with_forged_icmp_errors() {
    require_root!();
    let lab = Lab::up(&LabOptions {
        nodes: 2,
        ..LabOptions::isolated("atk-icmp")
    })
    .expect("lab up");
    // x/a (node 1) and x/b (node 2) talk; x/b admits x/a only. The attackers: x/c on x/b's node,
    // x/d on x/a's.
    for (name, node) in [("a", 1), ("b", 2), ("c", 2), ("d", 1)] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", name).on_node(node))
            .unwrap();
    }
    lab.apply_yaml(B_FROM_A).unwrap();
    let ip = |name: &str| lab.pod("x", name).unwrap().ip;
    let netns = |name: &str| lab.pod("x", name).unwrap().netns;

    // A flow x/b → x/a:80 (UDP; x/a's server answers it), which the datapath now tracks.
    let flow = in_netns(&netns("b"), || {
        let socket = UdpSocket::bind((ip("b"), 5555)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(b"hello", (ip("a"), 80)).unwrap();
        let mut buf = [0u8; 64];
        socket.recv_from(&mut buf).expect("x/a answers x/b");
        socket
    })
    .unwrap();
    let quoted = common::ipv4_udp_packet(ip("b"), ip("a"), 5555, 80, b"hello");
    let listener = icmp_listener(&netns("b"));

    // The attacks: port unreachable and "fragmentation needed" about x/b's flow, sent to x/b by
    // pods that x/b's policy keeps out, from its own node and from the other.
    let denied_before = common::node_packets(&lab, 2, "drop_policy_ingress");
    for attacker in ["c", "d"] {
        for (kind, code) in [(3, 3), (3, 4)] {
            common::send_raw_ipv4(
                &netns(attacker),
                &icmp_error(ip(attacker), ip("b"), kind, code, &quoted),
            );
        }
    }
    let got = icmp_errors_from(&listener);
    assert!(
        got.is_empty(),
        "x/b received forged ICMP errors from {got:?}"
    );
    assert!(
        common::node_packets(&lab, 2, "drop_policy_ingress") >= denied_before + 4,
        "the forged errors were not judged by x/b's policy and counted"
    );

    // The control: the flow's real peer reporting it is delivered (errors about tracked flows
    // still pass, isolation or not).
    common::send_raw_ipv4(&netns("a"), &icmp_error(ip("a"), ip("b"), 3, 3, &quoted));
    assert_eq!(icmp_errors_from(&listener), vec![ip("a")]);
    drop(flow);
}

/// Hole 2: a pod whose Pod object has not reached the agent when the runtime asks for its network
/// (the API's watch behind the kubelet) was compiled as a pod with no labels, so a policy that
/// isolates it by label did not apply: it started open to everyone. Now it starts closed wherever
/// its namespace's policies isolate (the node still reaches it), and its own policy applies once
/// the Pod arrives.
#[test]
fn a_pod_whose_pod_object_is_not_known_yet_starts_closed() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-unknown")).expect("lab up");
    for (name, app) in [("web", "web"), ("api", "api")] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", app))
            .unwrap();
    }
    // db admits api only.
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: db, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  \
         ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]\n",
    )
    .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "db").label("app", "db").unpublished())
        .unwrap();
    let tcp = |from: &str, to: &str| {
        let (ns, name) = to.split_once('/').unwrap();
        lab.probe_with(
            from,
            &weir_tests::lab::ProbeTarget::pod(ns, name),
            &weir_tests::lab::ProbeOptions::new(weir_tests::Proto::Tcp, 80),
        )
        .unwrap()
        .connected
    };
    let denied_before = common::packets(&lab, "drop_policy_fail_closed");
    assert!(
        !tcp("x/web", "x/db"),
        "x/db started open to a pod its policy denies"
    );
    assert!(
        !tcp("x/api", "x/db"),
        "closed, not judged by a guess at its labels"
    );
    assert!(common::packets(&lab, "drop_policy_fail_closed") > denied_before);
    assert!(
        tcp("node", "x/db"),
        "the node (kubelet probes) still reaches it"
    );
    assert!(
        tcp("x/db", "x/web"),
        "x's policies isolate no egress: db's egress is open"
    );

    // The Pod arrives: db's own policy applies.
    lab.publish_pod("x", "db").unwrap();
    assert!(!tcp("x/web", "x/db"));
    assert!(tcp("x/api", "x/db"));
}

/// Hole 9 (the agent's socket): an ADD must name the attachment's own veth. Anything root can
/// reach the socket with (a privileged pod with the host's /run/weir) could otherwise have the pod
/// program attached to the node's uplink or weir0, or take over another pod's veth.
#[test]
fn the_agent_programs_only_the_attachments_own_veth() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-add")).expect("lab up");
    let victim = lab.add_pod_with(&PodSpec::new("x", "victim")).unwrap();
    let node = lab.node(1).unwrap();
    let index = |name: &str| -> u32 {
        let out = weir_tests::ip_in(&node.netns, &["-o", "link", "show", name]).unwrap();
        out.split(':').next().unwrap().trim().parse().unwrap()
    };
    let victim_veth = weir_agent_api::host_veth_name(&victim.container_id, "eth0");
    for (ifname, why) in [
        ("eth0", "the node's uplink"),
        ("weir0", "the node's own pod-CIDR device"),
        (victim_veth.as_str(), "another attachment's veth"),
    ] {
        let request = weir_agent_api::Request::Add {
            endpoint: weir_agent_api::Endpoint {
                attachment: weir_agent_api::AttachmentId {
                    container_id: "mallory".into(),
                    ifname: "eth0".into(),
                },
                netns: String::new(),
                pod_namespace: None,
                pod_name: None,
                ip: Ipv4Addr::new(10, 244, 1, 200),
                pod_mac: "02:00:00:00:00:01".into(),
                host_ifname: ifname.into(),
                host_ifindex: index(ifname),
                host_mac: "02:00:00:00:00:02".into(),
                port_mappings: Vec::new(),
                ingress_shaped: Some(false),
            },
        };
        let answer = weir_agent_api::call(
            &node.run_dir.join("agent.sock"),
            &request,
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            matches!(answer, weir_agent_api::Response::Error { .. }),
            "an ADD naming {why} ({ifname}) was accepted: {answer:?}"
        );
    }
    // The victim's endpoint was not touched.
    assert!(
        lab.probe(
            "node",
            "x/victim",
            weir_tests::Proto::Tcp,
            80,
            Duration::from_secs(2)
        )
        .unwrap()
        .connected
    );
}

/// A TCP connect from `source` (an address of `netns`) to `dst:port`: did it open?
fn connects_from(netns: &str, source: Ipv4Addr, dst: Ipv4Addr, port: u16) -> bool {
    let script = format!(
        "import socket\ns = socket.socket()\ns.settimeout(1.5)\ns.bind(('{source}', 0))\n\
         try:\n    s.connect(('{dst}', {port}))\nexcept OSError:\n    raise SystemExit(1)\n"
    );
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", &script])
        .status()
        .unwrap()
        .success()
}

const DENY_ALL_INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: deny, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: isolated}}\n  \
    policyTypes: [Ingress]\n";

/// Hole 4: kube-proxy in IPVS mode binds every ClusterIP to the node (kube-ipvs0), so a node can
/// have thousands of addresses; the agent refused to start past 256. Now it starts, trusts the
/// uplink's addresses first, and past --max-host-addresses judges the rest like any other source
/// instead of failing.
#[test]
fn a_node_with_hundreds_of_addresses_keeps_its_network() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-addrs")).expect("lab up");
    let pod = lab
        .add_pod_with(&PodSpec::new("x", "isolated").label("app", "isolated"))
        .unwrap();
    lab.apply_yaml(DENY_ALL_INGRESS).unwrap();
    let node = lab.node(1).unwrap();
    // 400 ClusterIP-like addresses, as kube-ipvs0 would hold them.
    let mut batch = String::new();
    for i in 0..400u32 {
        batch.push_str(&format!(
            "address add 10.99.{}.{}/32 dev lo\n",
            i / 200,
            i % 200 + 1
        ));
    }
    let mut ip = std::process::Command::new("ip")
        .args(["-n", &node.netns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(ip.stdin.as_mut().unwrap(), batch.as_bytes()).unwrap();
    assert!(ip.wait().unwrap().success());

    let agent = lab.state().unwrap().node(1).unwrap().agent.unwrap();
    let agent = common::restart_agent(&lab, 1, agent, false, &[]);
    // Every address is the node's: kubelet-style probes from any of them get in.
    assert!(connects_from(&node.netns, node.ip, pod.ip, 80));
    assert!(connects_from(
        &node.netns,
        Ipv4Addr::new(10, 99, 1, 150),
        pod.ip,
        80
    ));

    // Capped at 50: the uplink's address still comes first; one left out is an ordinary source,
    // which the pod's policy keeps out.
    let _agent = common::restart_agent(&lab, 1, agent, false, &["--max-host-addresses", "50"]);
    assert!(connects_from(&node.netns, node.ip, pod.ip, 80));
    assert!(!connects_from(
        &node.netns,
        Ipv4Addr::new(10, 99, 1, 150),
        pod.ip,
        80
    ));
}

/// x/b admits pods labelled app=a only: the policy most attacks try to get past.
const B_FROM_A: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: b-from-a, namespace: x}\n\
    spec:\n  podSelector: {matchLabels: {app: b}}\n  \
    ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]\n";

/// A TCP SYN from `src:sport` to `dst:dport` (checksum left out: the datapath tracks the flow
/// before anyone checks it).
fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut pkt = common::ipv4_header(src, dst, libc::IPPROTO_TCP as u8, 20).to_vec();
    pkt.extend_from_slice(&sport.to_be_bytes());
    pkt.extend_from_slice(&dport.to_be_bytes());
    pkt.extend_from_slice(&1u32.to_be_bytes());
    pkt.extend_from_slice(&0u32.to_be_bytes());
    pkt.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    pkt
}

/// Send every packet of `packets` (whole IPv4 packets) on one raw socket from inside `netns`;
/// what the kernel refuses (a full queue) is left unsent, as a flood would.
fn flood(netns: &str, packets: impl Iterator<Item = Vec<u8>>) {
    let socket = common::RawIpv4::open_in(netns);
    for pkt in packets {
        let _ = socket.send(&pkt);
    }
}

/// Hole 6: one conntrack table for the whole node let one pod's junk flows evict other pods'
/// flows; a flow into an ingress-isolated pod whose entry is gone loses its replies. Now TCP and
/// everything else have tables of their own, sized by flag (here tiny, so the flood fills them
/// many times over), expired entries are swept, and flows in use keep their entries. A pod floods
/// 20 000 UDP flows, then 20 000 TCP flows (two packets each), while an isolated pod keeps a TCP
/// stream to a server (its replies exist only by conntrack) and holds an idle TCP connection: the
/// UDP junk evicts no TCP flow, and the stream loses no byte through either flood.
#[test]
fn a_flood_of_junk_flows_does_not_break_another_pods_flows() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-ctflood")).expect("lab up");
    for (name, app) in [
        ("attacker", "attacker"),
        ("isolated", "isolated"),
        ("server", "server"),
    ] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", app))
            .unwrap();
    }
    lab.apply_yaml(DENY_ALL_INGRESS).unwrap();
    // Tiny tables (resized from the defaults, which carries their entries over).
    let agent = lab.state().unwrap().node(1).unwrap().agent.unwrap();
    let _agent = common::restart_agent(
        &lab,
        1,
        agent,
        false,
        &["--ct-tcp-max", "2048", "--ct-any-max", "2048"],
    );
    let ip = |name: &str| lab.pod("x", name).unwrap().ip;
    let netns = |name: &str| lab.pod("x", name).unwrap().netns;

    // The isolated pod opens two connections to the server: one idle, one streaming.
    let listener = in_netns(&netns("server"), || {
        std::net::TcpListener::bind((ip("server"), 7000)).unwrap()
    })
    .unwrap();
    let mut idle_client = in_netns(&netns("isolated"), || {
        std::net::TcpStream::connect((ip("server"), 7000)).unwrap()
    })
    .unwrap();
    let (mut idle_server, _) = listener.accept().unwrap();
    let stream = common::Stream::start(&netns("isolated"), &netns("server"), ip("server"), 7001);

    // Two packets a junk flow, so each gets the second chance LRU gives entries seen again (one
    // packet each would only churn among themselves).
    let server = ip("server");
    let attacker = ip("attacker");
    let forwarded = || common::packets(&lab, "forward_local");
    let before = forwarded();
    flood(
        &netns("attacker"),
        (0..40_000u32).map(|i| {
            common::ipv4_udp_packet(attacker, server, 10_000 + (i / 2) as u16, 53, b"junk")
        }),
    );
    assert!(
        forwarded() - before >= 40_000,
        "the UDP junk did not go through the datapath"
    );

    // UDP junk has a table of its own: the idle TCP flow still carries the server's bytes into
    // the isolated pod.
    use std::io::{Read, Write};
    idle_server.write_all(b"still here").unwrap();
    idle_client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 10];
    idle_client
        .read_exact(&mut buf)
        .expect("UDP junk evicted an idle TCP flow into the isolated pod");
    assert_eq!(&buf, b"still here");

    // TCP junk may push idle TCP flows out (LRU keeps what is used), but not a flow in use: the
    // stream loses nothing.
    let before = forwarded();
    flood(
        &netns("attacker"),
        (0..40_000u32).map(|i| tcp_syn(attacker, server, 10_000 + (i / 2) as u16, 81)),
    );
    assert!(
        forwarded() - before >= 40_000,
        "the TCP junk did not go through the datapath"
    );
    stream.finish();
}

/// The sweeper removes what has outlived its lifetime from the pinned tables, and leaves live
/// flows alone (planted entries: a UDP flow last seen long ago, and one seen just now).
#[test]
fn the_conntrack_sweeper_frees_expired_entries() {
    use aya::maps::{HashMap, Map, MapData};
    use weir_common::{maps::CT_ANY, CtKey, CtValue};
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-sweep")).expect("lab up");
    let node = lab.node(1).unwrap();
    let pin_dir = node
        .bpffs_dir
        .join(format!("v{}", weir_common::maps::ABI_VERSION));
    let key = |port: u16| CtKey {
        saddr: [10, 244, 1, 77],
        daddr: [10, 244, 1, 78],
        sport: port.to_be_bytes(),
        dport: 53u16.to_be_bytes(),
        proto: 17,
        _pad: [0; 3],
    };
    let now = weir_agent::kernel::conntrack::monotonic_ns();
    let value = |last_seen_ns| CtValue {
        last_seen_ns,
        epoch: 0,
        flags: 0,
    };
    let mut table: HashMap<_, CtKey, CtValue> = HashMap::try_from(Map::LruHashMap(
        MapData::from_pin(pin_dir.join(CT_ANY)).unwrap(),
    ))
    .unwrap();
    table
        // An hour ago, or at boot on a machine up for less (still far past any lifetime).
        .insert(key(1), value(now.saturating_sub(3_600_000_000_000)), 0)
        .unwrap();
    table.insert(key(2), value(now), 0).unwrap();
    let swept = weir_agent::kernel::conntrack::sweep(&pin_dir).unwrap();
    let (_, any) = swept.iter().find(|(name, _)| *name == CT_ANY).unwrap();
    assert!(any.removed >= 1, "{swept:?}");
    assert!(
        table.get(&key(1), 0).is_err(),
        "the expired entry is still there"
    );
    assert!(table.get(&key(2), 0).is_ok(), "the live entry was swept");
}

/// Hole 5: when the policy maps filled up, every isolated pod on the node failed closed, every
/// resync: one tenant's oversized policy took every tenant's network. Now the biggest policies are
/// left out until the rest fit: the pods they select are isolated (and the object reported), every
/// other pod keeps its verdicts. Here the peer map holds 64 entries (resized from the default on
/// restart) and tenant y's policy needs 100.
#[test]
fn one_tenants_oversized_policy_isolates_only_its_own_pods() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("atk-mapfull")).expect("lab up");
    for (ns, name) in [("x", "a"), ("x", "b"), ("y", "c"), ("y", "d")] {
        lab.add_pod_with(&PodSpec::new(ns, name).label("app", name))
            .unwrap();
    }
    let agent = lab.state().unwrap().node(1).unwrap().agent.unwrap();
    let _agent = common::restart_agent(&lab, 1, agent, false, &["--policy-peers-max", "64"]);
    // Tenant x: b admits a.
    lab.apply_yaml(B_FROM_A).unwrap();
    // Tenant y: c admits d and 100 networks.
    let blocks: String = (0..100)
        .map(|i| format!("{{ipBlock: {{cidr: 198.18.{i}.0/24}}}}, "))
        .collect();
    let big = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: big, namespace: y}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: c}}}}\n  \
         ingress: [{{from: [{blocks}{{podSelector: {{matchLabels: {{app: d}}}}}}]}}]\n"
    );
    let rejected = lab
        .apply_yaml(&big)
        .expect_err("the oversized policy is reported");
    assert!(format!("{rejected:#}").contains("y/big"), "{rejected:#}");

    let tcp = |from: &str, to: &str| {
        let (ns, name) = to.split_once('/').unwrap();
        lab.probe_with(
            from,
            &weir_tests::lab::ProbeTarget::pod(ns, name),
            &weir_tests::lab::ProbeOptions::new(weir_tests::Proto::Tcp, 80),
        )
        .unwrap()
        .connected
    };
    // Tenant x keeps exactly its policy.
    assert!(
        tcp("x/a", "x/b"),
        "tenant x lost a verdict its policy gives"
    );
    assert!(!tcp("y/d", "x/b"), "tenant x's policy stopped isolating");
    // Tenant y's pod selected by the policy left out is isolated, not opened; the rest of y is not.
    let closed_before = common::packets(&lab, "drop_policy_fail_closed");
    assert!(
        !tcp("y/d", "y/c"),
        "the pod of the policy left out is not isolated"
    );
    assert!(common::packets(&lab, "drop_policy_fail_closed") > closed_before);
    assert!(tcp("y/c", "y/d"), "a pod no policy selects was isolated");
}

/// Hole 11: later IP fragments carry no ports and were judged as port 0, so a fragmented datagram
/// of a flow allowed on its port lost its tail, and so did a fragmented UDP reply into an isolated
/// pod. Now each fragment gets the verdict of its datagram: 4 000-byte UDP datagrams (three
/// fragments at MTU 1500) arrive whole when allowed, across nodes and on one, as a request and as a
/// reply, and not at all when denied.
#[test]
fn fragmented_datagrams_arrive_whole_or_not_at_all() {
    require_root!();
    let lab = Lab::up(&LabOptions {
        nodes: 2,
        ..LabOptions::isolated("atk-frag")
    })
    .expect("lab up");
    // b (node 1) admits a (node 2) on UDP 9999 only; c (node 1) is denied.
    for (name, node) in [("a", 2), ("b", 1), ("c", 1)] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", name).on_node(node))
            .unwrap();
    }
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: b-from-a, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {app: b}}\n  \
         ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{protocol: UDP, port: 9999}]}]\n",
    )
    .unwrap();
    let ip = |name: &str| lab.pod("x", name).unwrap().ip;
    let netns = |name: &str| lab.pod("x", name).unwrap().netns;
    let big = |tag: u8| vec![tag; 4000];
    let send = |from: &str, port: u16, to: (Ipv4Addr, u16), payload: &[u8]| {
        in_netns(&netns(from), || {
            let socket = UdpSocket::bind((ip(from), port)).unwrap();
            socket.send_to(payload, to).unwrap();
        })
        .unwrap();
    };
    let whole = |socket: &UdpSocket| {
        let mut buf = vec![0u8; 8192];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (n, from.ip()))
    };
    let b = listen_udp(&netns("b"), ip("b"), 9999);

    send("a", 5000, (ip("b"), 9999), &big(1));
    assert_eq!(
        whole(&b),
        Some((4000, std::net::IpAddr::V4(ip("a")))),
        "a's datagram across nodes, on the port b admits it on"
    );
    let dropped = common::node_packets(&lab, 1, "drop_policy_ingress");
    send("c", 5001, (ip("b"), 9999), &big(2));
    assert_eq!(
        whole(&b),
        None,
        "a fragment of c's denied datagram got through"
    );
    assert!(common::node_packets(&lab, 1, "drop_policy_ingress") > dropped);

    // A reply into the isolated pod from a pod its policy keeps out: b asks c, c answers with
    // 4 000 bytes, every fragment of which is a reply.
    let c = listen_udp(&netns("c"), ip("c"), 9998);
    let asking = in_netns(&netns("b"), || {
        let socket = UdpSocket::bind((ip("b"), 6000)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(b"?", (ip("c"), 9998)).unwrap();
        socket
    })
    .unwrap();
    let mut buf = [0u8; 16];
    let (_, asker) = c.recv_from(&mut buf).unwrap();
    in_netns(&netns("c"), || c.send_to(&big(3), asker).unwrap()).unwrap();
    assert_eq!(
        whole(&asking).map(|(n, _)| n),
        Some(4000),
        "the fragmented reply did not arrive whole"
    );
}

/// Hole 10: a pod's traffic through a Service whose backend is not a pod (a host-network backend,
/// on this node or another, or an endpoint outside the cluster: the `kubernetes` Service among
/// them) never reached weir0 and was not judged at all. Here three ClusterIPs are DNATed on the
/// pods' node as kube-proxy would: to the node itself, to the other node, to the outside host.
#[test]
fn egress_through_a_service_to_a_non_pod_backend_is_judged() {
    require_root!();
    let lab = Lab::up(&LabOptions {
        nodes: 2,
        ..LabOptions::isolated("atk-svc-host")
    })
    .expect("lab up");
    for name in ["open", "shut", "web"] {
        lab.add_pod_with(&PodSpec::new("x", name).label("app", name).on_node(1))
            .unwrap();
    }
    // shut: no egress at all; web: egress to the outside host's network on port 80 only.
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: shut, namespace: x}\n\
         spec: {podSelector: {matchLabels: {app: shut}}, policyTypes: [Egress]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: web, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{ipBlock: {cidr: 203.0.113.0/24}}], ports: [{protocol: TCP, port: 80}]}]\n",
    )
    .unwrap();
    let node1 = lab.node(1).unwrap();
    let node2 = lab.node(2).unwrap();
    // Host-network servers on both nodes.
    let serve = |netns: &str, ip: Ipv4Addr| {
        let listener =
            in_netns(netns, || std::net::TcpListener::bind((ip, 8080)).unwrap()).unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut stream, b"host\n");
            }
        });
    };
    serve(&node1.netns, node1.ip);
    serve(&node2.netns, node2.ip);
    let services = [
        (
            "the node itself",
            Ipv4Addr::new(10, 96, 201, 1),
            node1.ip,
            8080,
        ),
        (
            "the other node",
            Ipv4Addr::new(10, 96, 201, 2),
            node2.ip,
            8080,
        ),
        (
            "the outside",
            Ipv4Addr::new(10, 96, 201, 3),
            Ipv4Addr::new(203, 0, 113, 1),
            80,
        ),
    ];
    for (_, vip, backend, port) in services {
        let status = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &node1.netns,
                "iptables",
                "-t",
                "nat",
                "-I",
                "PREROUTING",
            ])
            .args([
                "-d",
                &vip.to_string(),
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
            ])
            .args([
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{backend}:{port}"),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let connects = |from: &str, vip: Ipv4Addr, port: u16| {
        lab.probe_with(
            &format!("x/{from}"),
            &weir_tests::lab::ProbeTarget::Ip(vip),
            &weir_tests::lab::ProbeOptions::new(weir_tests::Proto::Tcp, port)
                .timeout(Duration::from_millis(1500)),
        )
        .unwrap()
        .connected
    };
    let denied_before = common::packets(&lab, "drop_policy_egress");
    for (what, vip, _, port) in services {
        assert!(
            connects("open", vip, port),
            "a pod without policy cannot reach {what}"
        );
        assert!(
            !connects("shut", vip, port),
            "a pod with no egress reached {what} through a Service"
        );
    }
    assert!(
        connects("web", services[2].1, 80),
        "web's policy admits the outside on 80"
    );
    for (what, vip, _, port) in &services[..2] {
        assert!(
            !connects("web", *vip, *port),
            "web reached {what}, which its policy does not admit"
        );
    }
    assert!(
        common::packets(&lab, "drop_policy_egress") >= denied_before + 5,
        "the denials were not counted on the pods"
    );
}
