//! ClusterNetworkPolicy tiers against a literal reading of the API, one flow at a time: random
//! clusters with NetworkPolicies, nodes and ClusterNetworkPolicies of both tiers; the compiled
//! tables (what the datapath looks up) must decide every flow as evaluating Admin rules (priority,
//! name, rule order), then the NetworkPolicy tier, then Baseline rules, then the default does.
//! `explain` must agree, and the incremental compiler must equal a fresh compilation after every
//! change.
//!
//! The NetworkPolicy tier's own decision is taken from compiling the same cluster without
//! ClusterNetworkPolicies (that compilation has its own literal reference in `reference.rs`).

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr};

use common::{all_local, cluster_from_manifests, random_selector, random_world, NAMESPACES};
use ipnet::Ipv4Net;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use weir_policy::{
    cluster_policy::ClusterNetworkPolicy,
    compile::{compile, Compiled, Direction, DirectionRules, Incremental},
    model::{Cluster, Labels, NodeInfo, PodInfo, Protocol},
    selector::Selector,
};

const FLOWS: [(u8, u16); 9] = [
    (6, 80),
    (6, 85),
    (6, 8080),
    (6, 22),
    (17, 53),
    (17, 55),
    (132, 9),
    (132, 10),
    (1, 0),
];

fn peers() -> Vec<Ipv4Addr> {
    let mut peers: Vec<Ipv4Addr> = (0..=16).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    peers.extend([Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7)]);
    peers
}

fn random_nodes(rng: &mut StdRng, cluster: &mut Cluster) {
    let addresses = [
        vec![Ipv4Addr::new(10, 0, 0, 14)],
        vec![Ipv4Addr::new(10, 0, 0, 15), Ipv4Addr::new(192, 0, 2, 1)],
    ];
    for (i, addresses) in addresses.into_iter().enumerate() {
        let mut labels = Labels::new();
        labels.insert(
            "role".into(),
            ["edge", "core"].choose(rng).unwrap().to_string(),
        );
        cluster.upsert_node(NodeInfo {
            name: format!("n{i}"),
            ip: addresses.first().copied(),
            pod_cidrs: Vec::new(),
            addresses,
            labels,
        });
    }
}

fn random_namespaced_pod(rng: &mut StdRng) -> Value {
    json!({
        "namespaceSelector": random_selector(rng, &["team", "kubernetes.io/metadata.name"]),
        "podSelector": random_selector(rng, &["app", "tier"]),
    })
}

fn random_cluster_peer(rng: &mut StdRng, egress: bool) -> Value {
    let kinds = if egress { 6 } else { 2 };
    match rng.random_range(0..kinds) {
        0 => json!({"namespaces": random_selector(rng, &["team", "kubernetes.io/metadata.name"])}),
        1 => json!({"pods": random_namespaced_pod(rng)}),
        2 | 3 => {
            let len = rng.random_range(24..=32u8);
            let net = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, rng.random_range(0..16)), len)
                .unwrap()
                .trunc();
            let mut networks = vec![net.to_string()];
            if rng.random_bool(0.2) {
                networks.push("0.0.0.0/0".into());
            }
            if rng.random_bool(0.1) {
                networks.push("fd00::/8".into());
            }
            json!({"networks": networks})
        }
        4 => json!({"nodes": if rng.random_bool(0.3) { json!({}) } else {
            json!({"matchLabels": {"role": *["edge", "core"].choose(rng).unwrap()}})
        }}),
        // Unsupported: the rule fails closed.
        _ => json!({"domainNames": ["example.com"]}),
    }
}

fn random_protocols(rng: &mut StdRng, named_ok: bool) -> Option<Value> {
    if rng.random_bool(0.35) {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..rng.random_range(1..3) {
        out.push(match rng.random_range(0..6) {
            0 => json!({"tcp": {"destinationPort": {"number": *[80, 22].choose(rng).unwrap()}}}),
            1 => json!({"tcp": {"destinationPort": {"range": {"start": 80, "end": 8080}}}}),
            2 => json!({"udp": {"destinationPort": {"range": {"start": 50, "end": 54}}}}),
            3 => json!({"sctp": {"destinationPort": {"number": 9}}}),
            _ if named_ok => json!({"destinationNamedPort": *["http", "dns"].choose(rng).unwrap()}),
            _ => json!({"udp": {"destinationPort": {"number": 55}}}),
        });
    }
    Some(Value::Array(out))
}

fn random_cluster_rule(rng: &mut StdRng, egress: bool) -> Value {
    let peers: Vec<Value> = (0..rng.random_range(1..3))
        .map(|_| random_cluster_peer(rng, egress))
        .collect();
    let named_ok = peers
        .iter()
        .all(|p| p.get("namespaces").is_some() || p.get("pods").is_some());
    let mut rule = json!({"action": *["Accept", "Deny", "Pass"].choose(rng).unwrap()});
    rule[if egress { "to" } else { "from" }] = Value::Array(peers);
    if let Some(protocols) = random_protocols(rng, named_ok) {
        rule["protocols"] = protocols;
    }
    if rng.random_bool(0.3) {
        rule["name"] = json!("r");
    }
    rule
}

fn random_cluster_policy(rng: &mut StdRng, i: usize) -> ClusterNetworkPolicy {
    let subject = if rng.random_bool(0.5) {
        json!({"namespaces": random_selector(rng, &["team", "kubernetes.io/metadata.name"])})
    } else {
        json!({"pods": random_namespaced_pod(rng)})
    };
    let mut spec = json!({
        "tier": *["Admin", "Baseline"].choose(rng).unwrap(),
        "priority": rng.random_range(0..3),
        "subject": subject,
    });
    for (field, egress) in [("ingress", false), ("egress", true)] {
        if rng.random_bool(0.7) {
            let rules: Vec<Value> = (0..rng.random_range(0..4))
                .map(|_| random_cluster_rule(rng, egress))
                .collect();
            spec[field] = Value::Array(rules);
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1beta1",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": format!("cnp{i}")},
        "spec": spec,
    }))
    .unwrap()
}

// ---- the reference: the API read literally ----

fn selector(value: &Value) -> Selector {
    Selector::parse(&serde_json::from_value(value.clone()).unwrap()).unwrap()
}

fn pod_at(cluster: &Cluster, ip: Ipv4Addr) -> Option<&PodInfo> {
    cluster.pods().find(|p| p.ip == Some(ip))
}

fn namespaced_pod_matches(cluster: &Cluster, spec: &Value, pod: &PodInfo) -> bool {
    selector(&spec["namespaceSelector"]).matches(&cluster.namespace_labels(&pod.key.namespace))
        && selector(&spec["podSelector"]).matches(&pod.labels)
}

fn subject_selects(cluster: &Cluster, subject: &Value, pod: &PodInfo) -> bool {
    if let Some(ns) = subject.get("namespaces") {
        return selector(ns).matches(&cluster.namespace_labels(&pod.key.namespace));
    }
    namespaced_pod_matches(cluster, &subject["pods"], pod)
}

/// Whether a peer covers an address; `None` for a peer Weir cannot honour.
fn peer_covers(cluster: &Cluster, peer: &Value, addr: Ipv4Addr) -> Option<bool> {
    let pod = pod_at(cluster, addr);
    if let Some(ns) = peer.get("namespaces") {
        return Some(
            pod.is_some_and(|p| selector(ns).matches(&cluster.namespace_labels(&p.key.namespace))),
        );
    }
    if let Some(spec) = peer.get("pods") {
        return Some(pod.is_some_and(|p| namespaced_pod_matches(cluster, spec, p)));
    }
    if let Some(networks) = peer.get("networks") {
        return Some(networks.as_array().unwrap().iter().any(|n| {
            n.as_str()
                .unwrap()
                .parse::<Ipv4Net>()
                .is_ok_and(|net| net.contains(&addr))
        }));
    }
    if let Some(nodes) = peer.get("nodes") {
        let selector = selector(nodes);
        return Some(
            cluster
                .nodes()
                .any(|n| selector.matches(&n.labels) && n.addresses.contains(&addr)),
        );
    }
    None
}

fn protocols_match(
    protocols: Option<&Value>,
    dst_pod: Option<&PodInfo>,
    proto: u8,
    port: u16,
) -> bool {
    let Some(protocols) = protocols else {
        return true;
    };
    protocols.as_array().unwrap().iter().any(|p| {
        for (field, number) in [("tcp", 6), ("udp", 17), ("sctp", 132)] {
            if let Some(m) = p.get(field) {
                let d = &m["destinationPort"];
                let (first, last) = match d.get("number") {
                    Some(n) => (n.as_u64().unwrap(), n.as_u64().unwrap()),
                    None => (
                        d["range"]["start"].as_u64().unwrap(),
                        d["range"]["end"].as_u64().unwrap(),
                    ),
                };
                return proto == number && (first..=last).contains(&u64::from(port));
            }
        }
        let name = p["destinationNamedPort"].as_str().unwrap();
        dst_pod.is_some_and(|pod| {
            pod.ports
                .iter()
                .any(|np| np.name == name && np.port == port && np.protocol.number() == proto)
        })
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Decision {
    Accept,
    Deny,
    Pass,
}

/// The first rule of a tier deciding the flow (`Pass` included).
fn tier_decision(
    cluster: &Cluster,
    objects: &[ClusterNetworkPolicy],
    tier: &str,
    pod: &PodInfo,
    direction: Direction,
    peer: Ipv4Addr,
    (proto, port): (u8, u16),
) -> Option<Decision> {
    let mut ordered: Vec<Value> = objects
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .filter(|o| o["spec"]["tier"] == tier)
        .collect();
    ordered.sort_by_key(|o| {
        (
            o["spec"]["priority"].as_i64().unwrap(),
            o["metadata"]["name"].as_str().unwrap().to_owned(),
        )
    });
    let (list, peers_field) = match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    for object in ordered {
        if !subject_selects(cluster, &object["spec"]["subject"], pod) {
            continue;
        }
        for rule in object["spec"][list].as_array().into_iter().flatten() {
            let action = match rule["action"].as_str().unwrap() {
                "Accept" => Decision::Accept,
                "Deny" => Decision::Deny,
                _ => Decision::Pass,
            };
            let covered: Vec<Option<bool>> = rule[peers_field]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| peer_covers(cluster, p, peer))
                .collect();
            if covered.contains(&None) {
                // Fail closed as the API says: Accept matches nothing, Deny/Pass deny all.
                if action == Decision::Accept {
                    continue;
                }
                return Some(Decision::Deny);
            }
            let dst_pod = match direction {
                Direction::Ingress => Some(pod),
                Direction::Egress => pod_at(cluster, peer),
            };
            let peer_ok = rule[peers_field].as_array().unwrap().iter().any(|p| {
                if peer_covers(cluster, p, peer) != Some(true) {
                    return false;
                }
                // Named ports only stand for something on a pod.
                protocols_match(rule.get("protocols"), dst_pod, proto, port)
            });
            if peer_ok {
                return Some(action);
            }
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn reference_allows(
    cluster: &Cluster,
    objects: &[ClusterNetworkPolicy],
    namespace_only: &Compiled,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: Ipv4Addr,
    flow: (u8, u16),
) -> bool {
    let pod = pod_at(cluster, endpoint).unwrap();
    match tier_decision(cluster, objects, "Admin", pod, direction, peer, flow) {
        Some(Decision::Accept) => return true,
        Some(Decision::Deny) => return false,
        _ => {}
    }
    match namespace_only.endpoints[&endpoint].get(direction) {
        DirectionRules::Unisolated => {}
        rules => return rules.allows(peer, flow.0, flow.1),
    }
    tier_decision(cluster, objects, "Baseline", pod, direction, peer, flow) != Some(Decision::Deny)
}

fn check(
    cluster: &Cluster,
    objects: &[ClusterNetworkPolicy],
    compiled: &Compiled,
    inc: &Incremental,
    context: &str,
) {
    let mut namespace_only = cluster.clone();
    for object in objects {
        namespace_only.delete_cluster_policy(object.metadata.name.as_deref().unwrap());
    }
    let local = all_local(cluster);
    let namespace_only = compile(&namespace_only, &local);
    for (endpoint, _) in &local {
        for direction in Direction::ALL {
            for peer in peers() {
                for flow in FLOWS {
                    let want = reference_allows(
                        cluster,
                        objects,
                        &namespace_only,
                        *endpoint,
                        direction,
                        peer,
                        flow,
                    );
                    let got = compiled.endpoints[endpoint]
                        .get(direction)
                        .allows(peer, flow.0, flow.1);
                    assert_eq!(
                        got,
                        want,
                        "{context}: {endpoint} {direction:?} peer {peer} {flow:?}\ncluster \
                         policies {objects:#?}\ntable {:?}",
                        compiled.endpoints[endpoint].get(direction)
                    );
                    let explained = inc
                        .explain(*endpoint, direction, peer, flow.0, flow.1)
                        .unwrap();
                    assert_eq!(explained.allows(), want, "{context}: explain {explained:?} for {endpoint} {direction:?} {peer} {flow:?}");
                }
            }
        }
    }
}

#[test]
fn compiled_tiers_agree_with_the_api_read_literally() {
    let mut rng = StdRng::seed_from_u64(2026);
    for world in 0..150 {
        let (mut cluster, _) = random_world(&mut rng);
        random_nodes(&mut rng, &mut cluster);
        let objects: Vec<ClusterNetworkPolicy> = (0..rng.random_range(1..5))
            .map(|i| random_cluster_policy(&mut rng, i))
            .collect();
        for object in &objects {
            cluster.upsert_cluster_policy(object);
        }
        let local = all_local(&cluster);
        let mut inc = Incremental::default();
        let compiled = inc.compile(&cluster, &local, &BTreeSet::new());
        check(
            &cluster,
            &objects,
            &compiled,
            &inc,
            &format!("world {world}"),
        );
    }
}

#[test]
fn incremental_equals_fresh_under_changes_of_every_kind() {
    let mut rng = StdRng::seed_from_u64(77);
    for world in 0..40 {
        let (mut cluster, _) = random_world(&mut rng);
        random_nodes(&mut rng, &mut cluster);
        let mut objects: Vec<ClusterNetworkPolicy> = Vec::new();
        let mut inc = Incremental::default();
        for step in 0..40 {
            match rng.random_range(0..8) {
                0 | 1 => {
                    let name = rng.random_range(0..4);
                    let object = random_cluster_policy(&mut rng, name);
                    objects.retain(|o| o.metadata.name != object.metadata.name);
                    cluster.upsert_cluster_policy(&object);
                    objects.push(object);
                }
                2 if !objects.is_empty() => {
                    let i = rng.random_range(0..objects.len());
                    let object = objects.remove(i);
                    cluster.delete_cluster_policy(object.metadata.name.as_deref().unwrap());
                }
                3 => random_nodes(&mut rng, &mut cluster),
                _ => {
                    common::mutate(&mut rng, &mut cluster, step);
                }
            }
            let local = all_local(&cluster);
            let incremental = inc.compile(&cluster, &local, &BTreeSet::new());
            let fresh = compile(&cluster, &local);
            assert_eq!(incremental, fresh, "world {world} step {step}");
            if step % 8 == 7 {
                check(
                    &cluster,
                    &objects,
                    &incremental,
                    &inc,
                    &format!("world {world} step {step}"),
                );
            }
        }
    }
}

/// Every pod of the manifests local, compiled.
fn compile_manifests(yaml: &str) -> Compiled {
    let cluster = cluster_from_manifests(yaml);
    compile(&cluster, &all_local(&cluster))
}

#[test]
fn an_admin_deny_beats_a_namespace_allow_and_a_team_policy_beats_a_baseline_deny() {
    let compiled = compile_manifests(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Pod
metadata: {namespace: monitoring, name: prometheus, labels: {app: prometheus}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: monitoring, name: grafana, labels: {app: grafana}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: team, name: web, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.3}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: monitoring-only-prometheus}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}
  ingress:
  - name: prometheus
    action: Accept
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: prometheus}}}}]
  - name: nobody-else
    action: Deny
    from: [{namespaces: {}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: monitoring, name: allow-all}
spec:
  podSelector: {}
  ingress: [{}]
"#,
    );
    let (prometheus, grafana, web) = (
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
    );
    // The admin's rule wins over the namespace's allow-all.
    assert!(compiled.flow_allowed(prometheus, grafana, 6, 3000));
    assert!(!compiled.flow_allowed(web, grafana, 6, 3000));
    // Outside the cluster's pods, the admin policy says nothing: the namespace's policy allows.
    assert!(compiled.endpoints[&grafana]
        .ingress
        .allows(Ipv4Addr::new(192, 0, 2, 1), 6, 3000));
    // team has no NetworkPolicy: the baseline deny applies to pods, not to other addresses.
    assert!(!compiled.flow_allowed(prometheus, web, 6, 80));
    assert!(compiled.endpoints[&web]
        .ingress
        .allows(Ipv4Addr::new(192, 0, 2, 1), 6, 80));
    let _ = (Protocol::Tcp, NAMESPACES);
}

/// network-policy-api's CNPAdminTierEgressNamedPort: rule 5 an Accept on the destination's
/// named port `web` (TCP 80), rule 6 a Deny of everything else to the namespace.
#[test]
fn an_egress_named_port_accept_then_a_deny_of_the_rest() {
    let compiled = compile_manifests(
        r#"
apiVersion: v1
kind: Pod
metadata: {namespace: gryffindor, name: harry, labels: {app: harry}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: hufflepuff, name: cedric, labels: {app: cedric}}
spec:
  containers:
  - {name: c80, image: i, ports: [{containerPort: 80, protocol: TCP, name: web}]}
  - {name: c8080, image: i}
status: {podIP: 10.0.0.2}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: egress-tcp}
spec:
  tier: Admin
  priority: 6
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: gryffindor}}}
  egress:
  - name: allow-to-hufflepuff-at-web
    action: Accept
    to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: hufflepuff}}}]
    protocols: [{destinationNamedPort: web}]
  - name: deny-to-hufflepuff-everything-else
    action: Deny
    to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: hufflepuff}}}]
"#,
    );
    let (harry, cedric) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    assert!(compiled.flow_allowed(harry, cedric, 6, 80));
    assert!(
        !compiled.flow_allowed(harry, cedric, 6, 8080),
        "{:?}",
        compiled.endpoints[&harry].egress
    );
}
