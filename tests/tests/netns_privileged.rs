// SPDX-License-Identifier: Apache-2.0
//! The lab's building blocks on real namespaces: netns lifetime, the server, and the probes, over
//! a veth between two namespaces. Needs root; touches nothing outside its own namespaces.

mod common;

use std::{net::Ipv4Addr, process::Command, time::Duration};

use weir_tests::{
    in_netns,
    netns::{ip_in, list_netns, netns_exists, netns_inode, pids_in_netns},
    probe_in,
    process::{spawn_detached, Spawn},
    Netns, ProbeSpec, Proto, ServeConfig, Server,
};

use crate::common::root_netns_snapshot;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// On B's loopback, to exercise source-address binding from A's side.
const B_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn name(test: &str, side: &str) -> String {
    format!("weir-lab-t{:x}-{test}-{side}", std::process::id())
}

/// Two namespaces joined by a veth: a (10.99.0.1/24) and b (10.99.0.2/24, plus 198.51.100.7/32 on
/// lo); a routes 198.51.100.0/24 via b.
fn pair(test: &str) -> (Netns, Netns) {
    let a = Netns::create(name(test, "a")).unwrap();
    let b = Netns::create(name(test, "b")).unwrap();
    a.ip(&[
        "link",
        "add",
        "va",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        b.name(),
    ])
    .unwrap();
    a.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", "va"])
        .unwrap();
    a.ip(&["link", "set", "va", "up"]).unwrap();
    b.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "vb"])
        .unwrap();
    b.ip(&["link", "set", "vb", "up"]).unwrap();
    b.ip(&["addr", "add", &format!("{B_HOST}/32"), "dev", "lo"])
        .unwrap();
    a.ip(&["route", "add", "198.51.100.0/24", "via", &B_IP.to_string()])
        .unwrap();
    (a, b)
}

fn spec(proto: Proto, dest: Ipv4Addr, port: u16) -> ProbeSpec {
    ProbeSpec {
        source: None,
        dest,
        proto,
        port,
        timeout: Duration::from_millis(1500),
    }
}

#[test]
fn netns_is_deleted_on_drop_unless_persisted() {
    require_root!();
    let before = root_netns_snapshot();
    let ns = Netns::create(name("drop", "x")).unwrap();
    let ns_name = ns.name().to_owned();
    assert!(netns_exists(&ns_name));
    assert!(ns.path().starts_with("/run/netns"));
    // lo is up inside, and the thread that entered it sees only its own links.
    let links = ns.ip(&["-o", "link", "show"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    drop(ns);
    assert!(!netns_exists(&ns_name));

    let kept = Netns::create(name("drop", "y")).unwrap().persist();
    assert!(netns_exists(&kept));
    assert_eq!(list_netns(&kept), vec![kept.clone()]);
    weir_tests::netns::delete_netns(&kept).unwrap();
    weir_tests::netns::delete_netns(&kept).unwrap(); // idempotent
    assert_eq!(root_netns_snapshot(), before);
}

#[test]
fn in_netns_runs_on_a_thread_inside_and_leaves_the_caller_alone() {
    require_root!();
    let ns = Netns::create(name("inside", "x")).unwrap();
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = in_netns(ns.name(), || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    })
    .unwrap();
    assert_ne!(inside, own);
    assert_eq!(
        inside.to_string_lossy(),
        format!("net:[{}]", netns_inode(ns.name()).unwrap())
    );
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    // Per-netns sysctls written from inside stay inside.
    let root_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    in_netns(ns.name(), || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            "1\n"
        );
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        root_forwarding
    );
    assert!(in_netns("weir-lab-does-not-exist", || ()).is_err());
}

#[test]
fn probes_over_a_veth_report_connected_refused_and_silent() {
    require_root!();
    let before = root_netns_snapshot();
    let (a, b) = pair("probe");
    let server = Server::start_in(
        b.name(),
        &ServeConfig {
            name: "default/b".to_owned(),
            bind: Ipv4Addr::UNSPECIFIED,
            tcp_ports: vec![80, 81],
            udp_ports: vec![80, 81],
            sctp_ports: vec![],
        },
    )
    .unwrap();

    for port in [80, 81] {
        let tcp = probe_in(a.name(), &spec(Proto::Tcp, B_IP, port)).unwrap();
        assert!(tcp.connected, "tcp/{port}: {tcp:?}");
        assert_eq!(tcp.reply.as_deref(), Some("default/b"));
        assert!(tcp.rtt.is_some());
        let udp = probe_in(a.name(), &spec(Proto::Udp, B_IP, port)).unwrap();
        assert!(udp.connected, "udp/{port}: {udp:?}");
        assert!(udp.reply.unwrap().starts_with("weir-lab probe"));
    }
    let icmp = probe_in(a.name(), &spec(Proto::Icmp, B_IP, 0)).unwrap();
    assert!(icmp.connected, "{icmp:?}");
    assert!(icmp.rtt.unwrap() < Duration::from_millis(1500));

    // Nothing listens on 82: refused, both ways.
    let tcp = probe_in(a.name(), &spec(Proto::Tcp, B_IP, 82)).unwrap();
    assert!(!tcp.connected);
    assert!(tcp.error.unwrap().contains("refused"));
    let udp = probe_in(a.name(), &spec(Proto::Udp, B_IP, 82)).unwrap();
    assert!(!udp.connected);
    assert!(udp.error.unwrap().contains("refused"));

    // A silent drop (the kind a policy makes) is a timeout, not an error.
    b.ip(&["link", "set", "vb", "down"]).unwrap();
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let mut silent = spec(proto, B_IP, 80);
        silent.timeout = Duration::from_millis(400);
        let outcome = probe_in(a.name(), &silent).unwrap();
        assert!(!outcome.connected, "{proto}: {outcome:?}");
        assert!(outcome.error.is_some());
        assert!(outcome.rtt.is_none());
    }
    b.ip(&["link", "set", "vb", "up"]).unwrap();

    // No route: an immediate error.
    let unroutable = probe_in(
        a.name(),
        &spec(Proto::Tcp, Ipv4Addr::new(203, 0, 113, 9), 80),
    )
    .unwrap();
    assert!(!unroutable.connected);
    assert!(unroutable.error.unwrap().contains("unreachable"));

    server.stop().unwrap();
    drop((a, b));
    assert_eq!(root_netns_snapshot(), before);
}

#[test]
fn probes_can_speak_from_a_chosen_source_address() {
    require_root!();
    let (a, b) = pair("src");
    // a serves; b speaks from its loopback address, which a reaches through its route.
    let a_ip_on_lo = Ipv4Addr::new(192, 0, 2, 200);
    a.ip(&["addr", "add", &format!("{a_ip_on_lo}/32"), "dev", "lo"])
        .unwrap();
    b.ip(&[
        "route",
        "add",
        &format!("{a_ip_on_lo}/32"),
        "via",
        &A_IP.to_string(),
    ])
    .unwrap();
    let _server = Server::start_in(
        a.name(),
        &ServeConfig {
            name: "a".to_owned(),
            bind: a_ip_on_lo,
            tcp_ports: vec![80],
            udp_ports: vec![80],
            sctp_ports: vec![],
        },
    )
    .unwrap();
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let mut from_host = spec(proto, a_ip_on_lo, 80);
        from_host.source = Some(B_HOST);
        let outcome = probe_in(b.name(), &from_host).unwrap();
        assert!(outcome.connected, "{proto}: {outcome:?}");
    }
    // The server bound 192.0.2.200 only: A_IP:80 is refused.
    let other = probe_in(b.name(), &spec(Proto::Tcp, A_IP, 80)).unwrap();
    assert!(!other.connected);
    // Binding a source the netns does not have is a local error.
    let mut bogus = spec(Proto::Tcp, a_ip_on_lo, 80);
    bogus.source = Some(Ipv4Addr::new(10, 1, 2, 3));
    assert!(probe_in(b.name(), &bogus).is_err());
}

#[test]
fn serve_subcommand_runs_detached_inside_the_netns() {
    require_root!();
    let (a, b) = pair("serve");
    let log = std::env::temp_dir().join(format!("weir-lab-serve-{}.log", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir-lab"));
    command.args([
        "serve",
        "--netns",
        b.name(),
        "--name",
        "default/db",
        "--tcp",
        "80,81",
        "--udp",
        "80,81",
    ]);
    let server = spawn_detached(Spawn {
        command,
        netns: None,
        log: &log,
        ready_timeout: Some(Duration::from_secs(5)),
    })
    .unwrap();
    assert!(server.is_alive());
    // The server process lives in b.
    assert!(pids_in_netns(netns_inode(b.name()).unwrap()).contains(&server.pid));
    let tcp = probe_in(a.name(), &spec(Proto::Tcp, B_IP, 81)).unwrap();
    assert_eq!(tcp.reply.as_deref(), Some("default/db"), "{tcp:?}");
    let udp = probe_in(a.name(), &spec(Proto::Udp, B_IP, 80)).unwrap();
    assert!(udp.connected, "{udp:?}");
    assert!(server.terminate(Duration::from_secs(2)));
    let after = probe_in(a.name(), &spec(Proto::Tcp, B_IP, 81)).unwrap();
    assert!(!after.connected);

    // A server that cannot start (no such netns) fails with its log, not a hang.
    let mut bad = Command::new(env!("CARGO_BIN_EXE_weir-lab"));
    bad.args(["serve", "--netns", "weir-lab-does-not-exist", "--tcp", "80"]);
    let err = spawn_detached(Spawn {
        command: bad,
        netns: None,
        log: &log,
        ready_timeout: Some(Duration::from_secs(5)),
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("weir-lab-does-not-exist"),
        "{err:#}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn ip_in_refuses_an_empty_netns_name() {
    // No root needed: it must fail before running anything.
    assert!(ip_in("", &["link", "show"]).is_err());
}
