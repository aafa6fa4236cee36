// SPDX-License-Identifier: Apache-2.0
//! The `bandwidth` capability on the real kernel, with the real `weir` plugin and `weir-agent`:
//! ADD with `runtimeConfig.bandwidth` puts a `tbf` root qdisc on the host veth (ingress) and on
//! the pod's `eth0` (egress), CHECK verifies them, DEL leaves nothing, and real TCP traffic is
//! held to the asked rate. Each test has a lab of its own, torn down on drop, also on failure.

mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use weir_agent_api::host_veth_name;
use weir_tests::{
    cni::{run_cni, with_prev_result, CniEnv},
    in_netns, ip_in, Lab, LabOptions, Netns,
};

const PORT: u16 = 5201;

fn lab(tag: &str) -> Lab {
    Lab::up(&LabOptions::isolated(tag)).expect("lab up")
}

/// The lab's plugin configuration with `runtimeConfig.bandwidth` as the kubelet sends it (rates
/// in bit/s, the "unspecified" burst of `math.MaxInt32` bits).
fn shaped_config(lab: &Lab, ingress_bps: u64, egress_bps: u64) -> Value {
    let mut config = lab.plugin_config(1).unwrap();
    config["runtimeConfig"] = json!({"bandwidth": {
        "ingressRate": ingress_bps, "ingressBurst": i32::MAX,
        "egressRate": egress_bps, "egressBurst": i32::MAX,
    }});
    config
}

fn env(lab: &Lab, command: &str, netns: &Netns, cid: &str) -> CniEnv {
    CniEnv::for_pod(command, cid, &netns.path(), "t", cid).run_in(&lab.node_netns())
}

/// `(kind, rate bytes/s, burst bytes)` of the root qdisc of `dev` in `netns`, from `tc -j`.
fn root_qdisc(netns: &str, dev: &str) -> Option<(String, u64, u64)> {
    let out = std::process::Command::new("tc")
        .args(["-n", netns, "-j", "qdisc", "show", "dev", dev, "root"])
        .output()
        .expect("run tc");
    if !out.status.success() {
        return None;
    }
    let qdiscs: Value = serde_json::from_slice(&out.stdout).ok()?;
    let root = qdiscs.as_array()?.first()?.clone();
    let options = &root["options"];
    Some((
        root["kind"].as_str()?.to_owned(),
        options["rate"].as_u64().unwrap_or(0),
        options["burst"].as_u64().unwrap_or(0),
    ))
}

#[test]
fn add_shapes_both_directions_check_verifies_and_del_leaves_nothing() {
    require_root!();
    let lab = lab("bw-qdisc");
    let netns = Netns::create(format!("{}-bw", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    // 10 Mbit/s in (64 KiB default bucket), 100 Mbit/s out (20 ms at the rate: 250 000 B).
    let config = shaped_config(&lab, 10_000_000, 100_000_000);
    let add = run_cni(&env(&lab, "ADD", &netns, "shaped"), &config).unwrap();
    let result = add.into_result().expect("ADD with bandwidth limits");
    let host = host_veth_name("shaped", "eth0");

    // tc recomputes the burst from the buffer time: a byte or so off.
    let (kind, rate, burst) = root_qdisc(&lab.node_netns(), &host).expect("ingress qdisc");
    assert_eq!(
        (kind.as_str(), rate),
        ("tbf", 1_250_000),
        "ingress: tbf on the host veth"
    );
    assert!(burst.abs_diff(65_536) < 64, "ingress burst {burst}");
    let (kind, rate, burst) = root_qdisc(netns.name(), "eth0").expect("egress qdisc");
    assert_eq!(
        (kind.as_str(), rate),
        ("tbf", 12_500_000),
        "egress: tbf on eth0"
    );
    assert!(burst.abs_diff(250_000) < 1_000, "egress burst {burst}");

    let check_config = with_prev_result(&config, &result);
    let check = || run_cni(&env(&lab, "CHECK", &netns, "shaped"), &check_config).unwrap();
    let out = check();
    assert!(out.success(), "CHECK of an intact attachment: {out:?}");

    // The pod removes its egress qdisc (it would need CAP_NET_ADMIN), the host's goes too.
    let tc_del = |ns: &str, dev: &str| {
        let status = std::process::Command::new("tc")
            .args(["-n", ns, "qdisc", "del", "dev", dev, "root"])
            .status()
            .unwrap();
        assert!(status.success(), "tc qdisc del dev {dev}");
    };
    tc_del(netns.name(), "eth0");
    let err = check().error().expect("CHECK must fail");
    assert_eq!(err.code, 100, "{err:?}");
    assert!(
        err.msg
            .contains("egress limit: eth0 has no tbf root qdisc (root qdisc: noqueue)"),
        "{err:?}"
    );
    assert!(!err.msg.contains("ingress"), "{err:?}");
    tc_del(&lab.node_netns(), &host);
    let err = check().error().expect("CHECK must fail");
    assert!(err.msg.contains("ingress limit: "), "{err:?}");
    assert!(err.msg.contains("egress limit: "), "{err:?}");

    let out = run_cni(&env(&lab, "DEL", &netns, "shaped"), &check_config).unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        common::pod_veths(&lab),
        Vec::<String>::new(),
        "host veths left"
    );
    let links = ip_in(netns.name(), &["-o", "link", "show"]).unwrap();
    assert!(!links.contains("eth0"), "pod interface left: {links}");
    assert_eq!(root_qdisc(netns.name(), "eth0"), None);
}

#[test]
fn a_burst_below_the_mtu_fails_add_and_leaves_nothing() {
    require_root!();
    let lab = lab("bw-small");
    let netns = Netns::create(format!("{}-bs", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    let mut config = lab.plugin_config(1).unwrap();
    config["runtimeConfig"] = json!({"bandwidth": {"egressRate": 1_000_000, "egressBurst": 800}});
    let err = run_cni(&env(&lab, "ADD", &netns, "small"), &config)
        .unwrap()
        .error()
        .expect("a 100-byte bucket cannot work");
    assert_eq!(err.code, 7, "{err:?}");
    assert!(err.msg.contains("below the MTU"), "{err:?}");
    assert_eq!(
        common::pod_veths(&lab),
        Vec::<String>::new(),
        "host veths left"
    );
}

/// Bits per second received by a server in `server_ns` on `server_ip` from a client in
/// `client_ns` that sends as fast as it can for `duration`; timed at the receiver, from accept to
/// end of stream, so what was still queued when the client stopped counts at the rate it drained.
fn tcp_throughput(
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
    duration: Duration,
) -> f64 {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            in_netns(server_ns, move || {
                let listener = TcpListener::bind(SocketAddrV4::new(server_ip, PORT)).unwrap();
                ready_tx.send(()).unwrap();
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let started = Instant::now();
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
                (total, started.elapsed())
            })
            .unwrap()
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server listening");
        in_netns(client_ns, move || {
            let mut stream = TcpStream::connect_timeout(
                &SocketAddrV4::new(server_ip, PORT).into(),
                Duration::from_secs(5),
            )
            .unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let chunk = vec![0x5au8; 1 << 16];
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline {
                stream.write_all(&chunk).unwrap();
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
        .unwrap();
        let (bytes, elapsed) = server.join().unwrap();
        assert!(bytes > 0, "no data flowed");
        bytes as f64 * 8.0 / elapsed.as_secs_f64()
    })
}

#[test]
fn real_tcp_traffic_is_held_to_the_asked_rates() {
    require_root!();
    let lab = lab("bw-tcp");
    let peer = lab.add_pod("default", "peer", &[]).unwrap();
    let netns = Netns::create(format!("{}-bt", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    let (ingress_bps, egress_bps) = (8_000_000u64, 4_000_000u64);
    let config = shaped_config(&lab, ingress_bps, egress_bps);
    let add = run_cni(&env(&lab, "ADD", &netns, "tcp"), &config).unwrap();
    let result = add.into_result().expect("ADD with bandwidth limits");
    let ip: Ipv4Addr = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let seconds = Duration::from_secs(3);
    let egress = tcp_throughput(&peer.netns, peer.ip, netns.name(), seconds);
    let ingress = tcp_throughput(netns.name(), ip, &peer.netns, seconds);
    // Unshaped, the same path carries gigabits: the peer → node path as the control.
    let unshaped = tcp_throughput(&peer.netns, peer.ip, &lab.node_netns(), seconds);
    eprintln!(
        "egress {egress:.0} bit/s (asked {egress_bps}), ingress {ingress:.0} bit/s (asked \
         {ingress_bps}), unshaped {unshaped:.0} bit/s"
    );
    // Noise only slows traffic down: the bound that matters is the upper one.
    assert!(egress <= 1.5 * egress_bps as f64, "egress {egress} bit/s");
    assert!(
        ingress <= 1.5 * ingress_bps as f64,
        "ingress {ingress} bit/s"
    );
    assert!(
        unshaped > 3.0 * ingress_bps as f64,
        "the control path is not faster than the limits: {unshaped} bit/s"
    );

    let mut del =
        CniEnv::for_pod("DEL", "tcp", Path::new(""), "t", "tcp").run_in(&lab.node_netns());
    del.netns = None;
    let out = run_cni(&del, &with_prev_result(&config, &result)).unwrap();
    assert!(out.success(), "{out:?}");
    lab.del_pod("default", "peer").unwrap();
    assert_eq!(
        common::pod_veths(&lab),
        Vec::<String>::new(),
        "host veths left"
    );
}
