// SPDX-License-Identifier: Apache-2.0
//! NetworkPolicy properties the upstream e2e suite does not probe, on the real kernel with the real
//! plugin and agent: no first-packet window for a new pod, stateful replies, flows surviving an
//! agent restart under policy, node → pod always allowed, post-DNAT judgement of Service traffic,
//! ipBlock to the outside, fail-closed on a rejected policy, and per-pod counters.

mod common;

use common::reach;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    time::Duration,
};

use weir_tests::{
    agent::{start_agent, wait_agent_ready, AgentConfig},
    in_netns,
    lab::{ProbeOptions, ProbeTarget},
    probe::{probe_in, ProbeSpec},
    Lab, LabOptions, PodSpec, Proto,
};

const QUICK: Duration = Duration::from_millis(600);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn lab(tag: &str) -> Lab {
    Lab::up(&LabOptions::isolated(tag)).expect("lab up")
}

fn reach_service(lab: &Lab, from: &str, to: &str, port: u16) -> bool {
    let (ns, name) = to.split_once('/').unwrap();
    lab.probe_with(
        from,
        &ProbeTarget::pod(ns, name),
        &ProbeOptions::new(Proto::Tcp, port)
            .via_service()
            .timeout(QUICK),
    )
    .unwrap()
    .connected
}

fn reach_ip(lab: &Lab, from: &str, ip: Ipv4Addr, port: u16) -> bool {
    lab.probe_with(
        from,
        &ProbeTarget::Ip(ip),
        &ProbeOptions::new(Proto::Tcp, port).timeout(QUICK),
    )
    .unwrap()
    .connected
}

fn pod_netns(lab: &Lab, pod: &str) -> String {
    let (ns, name) = pod.split_once('/').unwrap();
    lab.pod(ns, name).unwrap().netns
}

fn pod_ip(lab: &Lab, pod: &str) -> Ipv4Addr {
    let (ns, name) = pod.split_once('/').unwrap();
    lab.pod(ns, name).unwrap().ip
}

const DENY_INGRESS_TO_SERVER_BUT_FROM_CLIENTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports:
    - {protocol: TCP, port: 80}
"#;

#[test]
fn a_new_pod_is_judged_by_its_policy_and_is_a_peer_before_add_returns() {
    require_root!();
    let lab = lab("pol-first");
    lab.add_pod_with(&PodSpec::new("x", "other")).unwrap();
    lab.apply_yaml(DENY_INGRESS_TO_SERVER_BUT_FROM_CLIENTS)
        .unwrap();
    // The server is isolated from its very first packet...
    lab.add_pod_with(&PodSpec::new("x", "server").label("app", "server"))
        .unwrap();
    assert!(!reach(&lab, "x/other", "x/server", Proto::Tcp, 80));
    assert!(
        common::packets(&lab, "drop_policy_ingress") > 0,
        "the denial is counted"
    );
    // ...and a client that joins later is in the server's peer set as soon as its ADD returns.
    lab.add_pod_with(&PodSpec::new("x", "client").label("role", "client"))
        .unwrap();
    assert!(reach(&lab, "x/client", "x/server", Proto::Tcp, 80));
    assert!(!reach(&lab, "x/client", "x/server", Proto::Tcp, 81));
    assert!(!reach(&lab, "x/client", "x/server", Proto::Udp, 80));

    // A deleted client's IP leaves the peer set; the pod that gets a new IP next has no rights.
    lab.del_pod("x", "client").unwrap();
    lab.add_pod_with(&PodSpec::new("x", "client2")).unwrap();
    assert!(!reach(&lab, "x/client2", "x/server", Proto::Tcp, 80));
    // Relabelled, it is allowed without restarting anything.
    lab.label_pod("x", "client2", &["role=client"]).unwrap();
    assert!(reach(&lab, "x/client2", "x/server", Proto::Tcp, 80));
    // Deleting the policy opens the server again.
    lab.delete_policy("x", "server-from-clients").unwrap();
    assert!(reach(&lab, "x/other", "x/server", Proto::Tcp, 80));
}

#[test]
fn replies_pass_where_new_flows_are_denied_and_the_node_always_reaches_its_pods() {
    require_root!();
    let lab = lab("pol-state");
    lab.add_pod_with(&PodSpec::new("x", "a").label("app", "a"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b").label("app", "b"))
        .unwrap();
    // b: nothing in, nothing out. a: may only open connections to b.
    lab.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-isolated, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: b}}}]
"#,
    )
    .unwrap();
    // a → b works both ways for the connection a opened (b's egress denies new flows only).
    for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp] {
        assert!(reach(&lab, "x/a", "x/b", proto, 80), "{proto:?} a → b");
        assert!(!reach(&lab, "x/b", "x/a", proto, 80), "{proto:?} b → a");
    }
    // Node → pod (kubelet probes) is always allowed, even into a fully isolated pod.
    let node_netns = lab.node_netns();
    let b_ip = pod_ip(&lab, "x/b");
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let seen = probe_in(
            &node_netns,
            &ProbeSpec {
                source: None,
                dest: b_ip,
                proto,
                port: 80,
                timeout: QUICK,
            },
        )
        .unwrap();
        assert!(seen.connected, "node → b over {proto:?}: {seen:?}");
    }
    // The denials were counted as b's egress, not as anything else.
    assert!(common::packets(&lab, "drop_policy_egress") > 0);
    assert_eq!(common::packets(&lab, "drop_policy_fail_closed"), 0);
}

#[test]
fn service_traffic_is_judged_on_the_backend_and_its_real_port() {
    require_root!();
    let lab = lab("pol-svc");
    lab.add_pod_with(&PodSpec::new("x", "client").label("app", "client"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "server").label("app", "server"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "other")).unwrap();
    assert!(reach_service(&lab, "x/client", "x/server", 80));
    lab.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-named, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: server}}}]
    ports: [{port: serve-80-tcp}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
"#,
    )
    .unwrap();
    // Egress by named port resolves on the backend behind the ClusterIP; ingress sees the client.
    assert!(reach_service(&lab, "x/client", "x/server", 80));
    assert!(!reach_service(&lab, "x/client", "x/server", 81));
    assert!(!reach_service(&lab, "x/client", "x/other", 80));
    assert!(!reach_service(&lab, "x/other", "x/server", 80));
    // The same verdicts straight to the pod IP.
    assert!(reach(&lab, "x/client", "x/server", Proto::Tcp, 80));
    assert!(!reach(&lab, "x/client", "x/server", Proto::Tcp, 81));
}

#[test]
fn ip_blocks_select_the_outside_and_pods_alike() {
    require_root!();
    let lab = lab("pol-ipblock");
    lab.add_pod_with(&PodSpec::new("x", "a").label("app", "a"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b")).unwrap();
    lab.add_pod_with(&PodSpec::new("x", "c")).unwrap();
    assert!(reach_ip(&lab, "x/a", EXT_IP, 80));
    let c_ip = pod_ip(&lab, "x/c");
    lab.apply_yaml(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-egress, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 203.0.113.0/24}}}}]
    ports: [{{protocol: TCP, port: 80}}]
  - to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [{c_ip}/32]}}}}]
"#
    ))
    .unwrap();
    assert!(
        reach_ip(&lab, "x/a", EXT_IP, 80),
        "outside on an allowed port"
    );
    assert!(
        !reach_ip(&lab, "x/a", EXT_IP, 81),
        "outside on another port"
    );
    assert!(
        reach(&lab, "x/a", "x/b", Proto::Tcp, 81),
        "a pod inside the ipBlock"
    );
    assert!(
        !reach(&lab, "x/a", "x/c", Proto::Tcp, 80),
        "a pod in the except"
    );
}

#[test]
fn a_rejected_policy_isolates_the_pods_it_selects_and_fails_loudly() {
    require_root!();
    let lab = lab("pol-reject");
    lab.add_pod_with(&PodSpec::new("x", "a")).unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b").label("app", "b"))
        .unwrap();
    let err = lab
        .apply_yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-peer, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: app, operator: Bogus, values: [a]}]
"#,
        )
        .expect_err("a policy with an unknown operator must be rejected");
    assert!(format!("{err:#}").contains("bad-peer"), "{err:#}");
    // Never opened: b is isolated for ingress, and nothing of the bad rule lets a in.
    assert!(!reach(&lab, "x/a", "x/b", Proto::Tcp, 80));
    assert!(
        common::packets(&lab, "drop_policy_ingress")
            + common::packets(&lab, "drop_policy_fail_closed")
            > 0,
        "the denial is counted"
    );
    assert!(
        reach(&lab, "x/b", "x/a", Proto::Tcp, 80),
        "egress is not isolated"
    );
}

#[test]
fn an_established_flow_under_policy_survives_an_agent_restart() {
    require_root!();
    let lab = lab("pol-restart");
    lab.add_pod_with(&PodSpec::new("x", "a").label("app", "a"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b").label("app", "b"))
        .unwrap();
    lab.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{protocol: TCP, port: 7000}]
"#,
    )
    .unwrap();
    let b_ip = pod_ip(&lab, "x/b");
    let b_netns = pod_netns(&lab, "x/b");
    let a_netns = pod_netns(&lab, "x/a");
    let listener = in_netns(&b_netns, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000))
    })
    .unwrap()
    .unwrap();
    let mut client = in_netns(&a_netns, || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(b_ip, 7000).into(),
            Duration::from_secs(2),
        )
    })
    .unwrap()
    .expect("a → b:7000 is allowed");
    let (mut server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut ping = |round: u8| {
        client.write_all(&[round]).unwrap();
        let mut buf = [0u8; 1];
        server.read_exact(&mut buf).unwrap();
        server.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(buf[0], round);
    };
    ping(1);

    // Restart the agent after SIGKILL: CT, tables and links are pinned and adopted.
    let state = lab.state().unwrap();
    let node = state.node(1).unwrap();
    let agent = node.agent.expect("agent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    weir_tests::process::wait_until(Duration::from_secs(5), || !agent.is_alive());
    ping(2);
    let config = AgentConfig::for_node(&state, node);
    let process = start_agent(&node.netns, &config, &node.stdout_log).unwrap();
    wait_agent_ready(&process, &config, &node.stdout_log, Duration::from_secs(30)).unwrap();
    ping(3);
    // Still enforced after the restart: b may not open anything, a may not reach port 80.
    assert!(!reach(&lab, "x/a", "x/b", Proto::Tcp, 80));
    assert!(!reach(&lab, "x/b", "x/a", Proto::Tcp, 80));
    ping(4);
}

#[test]
fn icmp_errors_about_an_allowed_flow_reach_an_isolated_pod() {
    require_root!();
    let lab = lab("pol-icmp");
    lab.add_pod_with(&PodSpec::new("x", "a").label("app", "a"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b")).unwrap();
    // a accepts nothing new from anyone, b's ICMP included.
    lab.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-deny-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
"#,
    )
    .unwrap();
    assert!(
        !reach(&lab, "x/b", "x/a", Proto::Icmp, 0),
        "b → a echo is denied"
    );
    // a → b UDP to a port nobody serves: b answers with ICMP port unreachable, which belongs to
    // a's allowed flow and must reach a, so the probe fails fast as "refused", not by timeout.
    let seen = lab
        .probe_with(
            "x/a",
            &ProbeTarget::pod("x", "b"),
            &ProbeOptions::new(Proto::Udp, 9999).timeout(Duration::from_secs(2)),
        )
        .unwrap();
    assert!(!seen.connected);
    let error = seen.error.unwrap_or_default();
    assert!(
        error.contains("refused"),
        "the ICMP error did not arrive: {error}"
    );
}
