// SPDX-License-Identifier: Apache-2.0
//! hostPort on the real kernel: the plugin gets `runtimeConfig.portMappings` as the kubelet sends
//! them, the agent publishes them on the node's addresses, and the datapath judges the traffic
//! after the DNAT, on the pod it reaches and the client it really comes from. Each test has a lab
//! of its own, torn down on drop, also when the test fails.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use weir_tests::{
    ip_in,
    probe::{probe_in, ProbeSpec},
    services::parse_host_port,
    state::Routing,
    Lab, LabOptions, PodSpec, Proto,
};

const T: Duration = Duration::from_secs(2);
/// A short timeout for probes expected to fail.
const NO: Duration = Duration::from_millis(400);

fn lab(tag: &str, nodes: u32, routing: Routing) -> Lab {
    let opts = LabOptions {
        nodes,
        routing,
        ..LabOptions::isolated(tag)
    };
    Lab::up(&opts).expect("lab up")
}

fn node_ip(lab: &Lab, index: u32) -> Ipv4Addr {
    lab.node(index).unwrap().ip
}

/// `default/web` on node 1, publishing TCP 8080, UDP 8053 and SCTP 8132 (all to its port 81).
fn add_web(lab: &Lab) {
    let spec = PodSpec::new("default", "web")
        .label("app", "web")
        .on_node(1)
        .host_port(parse_host_port("8080:81").unwrap())
        .host_port(parse_host_port("8053:81/udp").unwrap())
        .host_port(parse_host_port("8132:81/sctp").unwrap());
    lab.add_pod_with(&spec).unwrap();
}

/// The DNAT rules of node `index`'s host-port chain.
fn dnat_rules(lab: &Lab, index: u32) -> Vec<String> {
    let node = lab.node(index).unwrap().netns;
    common::output_in(&node, "iptables", &["-t", "nat", "-S", "WEIR-HOSTPORTS"])
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

/// A sample of node 1's /metrics.
fn metric(lab: &Lab, name: &str) -> u64 {
    let node = lab.node(1).unwrap().netns;
    let metrics = common::http_get(&node, "127.0.0.1:9962", "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} sample in\n{metrics}"))
}

fn assert_reaches_web(lab: &Lab, from: &str, to: Ipv4Addr, proto: Proto, port: u16) {
    let r = lab.probe(from, &to.to_string(), proto, port, T).unwrap();
    assert!(r.connected, "{from} -> {to}:{port}/{proto}: {r:?}");
    if proto == Proto::Tcp {
        assert_eq!(r.reply.as_deref(), Some("default/web"), "{r:?}");
    }
}

/// From the outside host, the node itself, another node, a pod on the same node, a pod on
/// another node, and the pod itself (hairpin): TCP and UDP.
fn reached_from_everywhere(routing: Routing) {
    let lab = lab(
        match routing {
            Routing::Native => "hostport-native",
            Routing::Vxlan => "hostport-vxlan",
        },
        2,
        routing,
    );
    add_web(&lab);
    lab.add_pod_with(&PodSpec::new("default", "near").on_node(1))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("default", "far").on_node(2))
        .unwrap();
    let node1 = node_ip(&lab, 1);
    for from in [
        "ext",
        "node",
        "node2",
        "default/near",
        "default/far",
        "default/web",
    ] {
        assert_reaches_web(&lab, from, node1, Proto::Tcp, 8080);
        assert_reaches_web(&lab, from, node1, Proto::Udp, 8053);
    }
    // SCTP (raw INIT/INIT-ACK: this kernel has no SCTP sockets) from outside and from a pod.
    for from in ["ext", "default/far"] {
        assert_reaches_web(&lab, from, node1, Proto::Sctp, 8132);
    }
    // Published on node 1 only; node 2 does not answer on the port.
    let r = lab
        .probe("ext", &node_ip(&lab, 2).to_string(), Proto::Tcp, 8080, NO)
        .unwrap();
    assert!(!r.connected, "{r:?}");
    assert_eq!(metric(&lab, "weir_map_entries{map=\"WEIR_HOST_PORTS\"}"), 3);
}

#[test]
fn a_host_port_is_reached_from_everywhere_native() {
    require_root!();
    reached_from_everywhere(Routing::Native);
}

#[test]
fn a_host_port_is_reached_from_everywhere_vxlan() {
    require_root!();
    reached_from_everywhere(Routing::Vxlan);
}

/// The node's veths and the plugin's IPAM state, to show that a refused ADD left nothing.
fn node_footprint(lab: &Lab) -> (usize, serde_json::Value) {
    let veths = common::pod_veths(lab).len();
    let node = lab.node(1).unwrap();
    let ipam = std::fs::read(node.state_dir.join("ipam/weir/allocations.json")).unwrap();
    let ipam: serde_json::Value = serde_json::from_slice(&ipam).unwrap();
    // The allocator's round-robin cursor moves; the reservations must not.
    (veths, ipam["allocations"].clone())
}

#[test]
fn a_taken_host_port_fails_add_with_the_conflict_error_and_del_frees_it() {
    require_root!();
    let lab = lab("hostport-conflict", 1, Routing::Native);
    add_web(&lab);
    let before = node_footprint(&lab);
    for taken in [
        "8080:80",
        "8080:80@192.0.2.11",
        "8053:53/udp",
        "8132:80/sctp",
    ] {
        let spec = PodSpec::new("default", "second").host_port(parse_host_port(taken).unwrap());
        let err = lab.add_pod_with(&spec).unwrap_err().to_string();
        assert!(
            err.contains("CNI error 120") && err.contains("default/web"),
            "{taken}: {err}"
        );
        assert_eq!(
            node_footprint(&lab),
            before,
            "{taken}: a refused ADD left something"
        );
    }
    // Another protocol or another port is free.
    lab.add_pod_with(
        &PodSpec::new("default", "udp").host_port(parse_host_port("8080:81/udp").unwrap()),
    )
    .unwrap();
    assert_eq!(dnat_rules(&lab, 1).len(), 4, "{:?}", dnat_rules(&lab, 1));

    // A hostIP is honoured: a port published on one of the node's addresses answers there and
    // not on the node's other address, where the port published on every address answers.
    let node1 = node_ip(&lab, 1);
    let second = Ipv4Addr::new(192, 0, 2, 111);
    let node = lab.node(1).unwrap();
    ip_in(
        &node.netns,
        &["addr", "add", &format!("{second}/24"), "dev", &node.uplink],
    )
    .unwrap();
    lab.add_pod_with(
        &PodSpec::new("default", "bound")
            .host_port(parse_host_port(&format!("8090:81@{node1}")).unwrap()),
    )
    .unwrap();
    let reply = |to: Ipv4Addr, port: u16, timeout: Duration| {
        lab.probe("ext", &to.to_string(), Proto::Tcp, port, timeout)
            .unwrap()
            .reply
    };
    assert_eq!(reply(node1, 8090, T).as_deref(), Some("default/bound"));
    assert_eq!(reply(second, 8090, NO), None);
    assert_eq!(reply(second, 8080, T).as_deref(), Some("default/web"));
    lab.del_pod("default", "bound").unwrap();

    // DEL takes the pod's rules and map entries along, and frees the port for another pod.
    lab.del_pod("default", "web").unwrap();
    let rules = dnat_rules(&lab, 1);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains("udp"), "{rules:?}");
    assert_eq!(metric(&lab, "weir_map_entries{map=\"WEIR_HOST_PORTS\"}"), 1);
    let r = lab
        .probe("ext", &node_ip(&lab, 1).to_string(), Proto::Tcp, 8080, NO)
        .unwrap();
    assert!(!r.connected, "{r:?}");
    lab.add_pod_with(
        &PodSpec::new("default", "second").host_port(parse_host_port("8080:81").unwrap()),
    )
    .unwrap();
    let r = lab
        .probe("ext", &node_ip(&lab, 1).to_string(), Proto::Tcp, 8080, T)
        .unwrap();
    assert_eq!(r.reply.as_deref(), Some("default/second"), "{r:?}");
    lab.del_pod("default", "second").unwrap();
    lab.del_pod("default", "udp").unwrap();
    assert!(dnat_rules(&lab, 1).is_empty());
    assert_eq!(metric(&lab, "weir_map_entries{map=\"WEIR_HOST_PORTS\"}"), 0);
}

const ONLY_DOC_NET: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-doc-net, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24}}, {podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 81, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-out-to-doc-net, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-only-to-web, namespace: default}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 81, protocol: TCP}]
"#;

#[test]
fn policy_judges_host_port_traffic_after_dnat_on_the_real_client_and_pod() {
    require_root!();
    let lab = lab("hostport-policy", 2, Routing::Native);
    add_web(&lab);
    lab.add_pod_with(
        &PodSpec::new("default", "client")
            .label("role", "client")
            .on_node(1),
    )
    .unwrap();
    lab.add_pod_with(&PodSpec::new("default", "other").on_node(1))
        .unwrap();
    lab.apply_yaml(ONLY_DOC_NET).unwrap();
    let node1 = node_ip(&lab, 1);
    // A second outside network, on the outside host.
    let other_net = Ipv4Addr::new(198, 51, 100, 1);
    ip_in(
        &lab.ext_netns(),
        &["addr", "add", &format!("{other_net}/32"), "dev", "lo"],
    )
    .unwrap();
    let from_ext = |source: Ipv4Addr, timeout: Duration| {
        probe_in(
            &lab.ext_netns(),
            &ProbeSpec {
                source: Some(source),
                dest: node1,
                proto: Proto::Tcp,
                port: 8080,
                timeout,
            },
        )
        .unwrap()
    };
    let ext_ip = lab.state().unwrap().ext.host_ip;
    let admitted = from_ext(ext_ip, T);
    assert_eq!(
        admitted.reply.as_deref(),
        Some("default/web"),
        "{admitted:?}"
    );
    assert!(
        !from_ext(other_net, NO).connected,
        "198.51.100.1 is not admitted"
    );
    // Another node is outside the ipBlock; the node itself always passes.
    assert!(
        !lab.probe("node2", &node1.to_string(), Proto::Tcp, 8080, NO)
            .unwrap()
            .connected
    );
    assert_reaches_web(&lab, "node", node1, Proto::Tcp, 8080);
    // A pod is judged as itself: the admitted client passes, another pod does not.
    assert!(
        !lab.probe("default/other", &node1.to_string(), Proto::Tcp, 8080, NO)
            .unwrap()
            .connected
    );
    // The client's egress allows only web's port 81: its flow to the node's port 8080 is judged
    // after the DNAT, on web:81, not on the node's address.
    assert_reaches_web(&lab, "default/client", node1, Proto::Tcp, 8080);
    // The published pod's own egress is its policy's, hostPort or not (calico#5104: an ipBlock
    // egress rule stopped applying once a hostPort was defined): the outside network it names
    // on port 80 is reached, a pod is not.
    let r = lab.probe("default/web", "ext", Proto::Tcp, 80, T).unwrap();
    assert!(r.connected, "{r:?}");
    let r = lab
        .probe("default/web", "default/other", Proto::Tcp, 80, NO)
        .unwrap();
    assert!(!r.connected, "{r:?}");
    // The UDP hostPort leads to port 81 over UDP, which the client's egress does not allow.
    let r = lab
        .probe("default/client", &node1.to_string(), Proto::Udp, 8053, NO)
        .unwrap();
    assert!(!r.connected, "{r:?}");
}

#[test]
fn an_agent_restart_under_a_host_port_connection_loses_no_byte() {
    require_root!();
    let lab = lab("hostport-restart", 1, Routing::Native);
    let spec = PodSpec::new("default", "web")
        .on_node(1)
        .host_port(parse_host_port("8090:9000").unwrap())
        .host_port(parse_host_port("8080:81").unwrap())
        .host_port(parse_host_port("8053:81/udp").unwrap());
    let web = lab.add_pod_with(&spec).unwrap();
    // A UDP flow through the hostPort: its translation must outlive the restarts (flushing the
    // published ports' UDP flows is for ports newly published, not for an agent starting up).
    let udp = lab
        .probe("ext", &node_ip(&lab, 1).to_string(), Proto::Udp, 8053, T)
        .unwrap();
    assert!(udp.connected, "{udp:?}");
    let udp_flows = || {
        let node = lab.node(1).unwrap().netns;
        common::output_in(
            &node,
            "conntrack",
            &["-L", "-p", "udp", "--orig-port-dst", "8053"],
        )
        .lines()
        .filter(|l| l.contains("dport=8053"))
        .count()
    };
    assert_eq!(udp_flows(), 1);
    let stream = common::Stream::start_via(
        &lab.ext_netns(),
        SocketAddrV4::new(node_ip(&lab, 1), 8090),
        &web.netns,
        SocketAddrV4::new(web.ip, 9000),
    );
    // A crash, then a graceful stop; the lab's teardown stops the last agent by its netns.
    let mut agent = lab.node(1).unwrap().agent.unwrap();
    for kill in [true, false] {
        agent = common::restart_agent(&lab, 1, agent, kill, &[]);
    }
    stream.finish();
    assert_eq!(
        udp_flows(),
        1,
        "the restarts cut the UDP flow's translation"
    );
    // The restarted agent kept the rules (rewritten in one transaction) and new connections work.
    assert_eq!(dnat_rules(&lab, 1).len(), 3, "{:?}", dnat_rules(&lab, 1));
    let r = lab
        .probe("ext", &node_ip(&lab, 1).to_string(), Proto::Tcp, 8080, T)
        .unwrap();
    assert_eq!(r.reply.as_deref(), Some("default/web"), "{r:?}");

    // Someone flushes the chain (a firewall reload): the agent puts the rules back.
    let node = lab.node(1).unwrap().netns;
    weir_tests::in_netns(&node, || {
        std::process::Command::new("iptables")
            .args(["-t", "nat", "-F", "WEIR-HOSTPORTS"])
            .status()
            .unwrap()
    })
    .unwrap();
    assert!(dnat_rules(&lab, 1).is_empty());
    assert!(
        weir_tests::process::wait_until(Duration::from_secs(30), || dnat_rules(&lab, 1).len() == 3),
        "the agent did not restore the flushed rules"
    );
    let r = lab
        .probe("ext", &node_ip(&lab, 1).to_string(), Proto::Tcp, 8080, T)
        .unwrap();
    assert_eq!(r.reply.as_deref(), Some("default/web"), "{r:?}");
}

#[test]
fn check_verifies_the_host_ports_and_a_full_add_del_cycle_leaves_no_rule() {
    require_root!();
    let lab = lab("hostport-check", 1, Routing::Native);
    let mut config = lab.plugin_config(1).unwrap();
    config["runtimeConfig"] = serde_json::json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": ""},
        {"hostPort": 8053, "containerPort": 53, "protocol": "UDP", "hostIP": ""},
    ]});
    let prefix = weir_tests::names::lab_prefix(lab.id());
    let netns = weir_tests::Netns::create(format!("{prefix}-check")).unwrap();
    let env = |command: &str| {
        weir_tests::cni::CniEnv::for_pod(
            command,
            "hostportcheck",
            &weir_tests::netns::netns_path(netns.name()),
            "default",
            "checked",
        )
        .run_in(&lab.node_netns())
    };
    let result = weir_tests::cni::run_cni(&env("ADD"), &config)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(dnat_rules(&lab, 1).len(), 2);
    let checked = |config: &serde_json::Value| {
        weir_tests::cni::run_cni(
            &env("CHECK"),
            &weir_tests::cni::with_prev_result(config, &result),
        )
        .unwrap()
    };
    let out = checked(&config);
    assert!(out.success(), "{out:?}");
    let mut asks_more = config.clone();
    asks_more["runtimeConfig"]["portMappings"][1]["hostPort"] = serde_json::json!(9053);
    let out = checked(&asks_more);
    let error = out.error().expect("CHECK passed with other host ports");
    assert_eq!(error.code, 100);
    assert!(error.msg.contains("host ports"), "{error:?}");

    let out = weir_tests::cni::run_cni(&env("DEL"), &config).unwrap();
    assert!(out.success(), "{out:?}");
    assert!(dnat_rules(&lab, 1).is_empty());
    assert_eq!(metric(&lab, "weir_map_entries{map=\"WEIR_HOST_PORTS\"}"), 0);

    // GC of an attachment the runtime no longer knows unpublishes its ports too.
    weir_tests::cni::run_cni(&env("ADD"), &config)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(dnat_rules(&lab, 1).len(), 2);
    let mut gc = config.clone();
    gc["cniVersion"] = serde_json::json!("1.1.0");
    gc["cni.dev/valid-attachments"] = serde_json::json!([]);
    let out = weir_tests::cni::run_cni(
        &weir_tests::cni::CniEnv::new("GC").run_in(&lab.node_netns()),
        &gc,
    )
    .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(dnat_rules(&lab, 1).is_empty());
    assert_eq!(metric(&lab, "weir_map_entries{map=\"WEIR_HOST_PORTS\"}"), 0);
}
