//! Random clusters and policies shared by the property tests.
#![allow(dead_code, reason = "each test crate uses a different part")]

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng};
use serde_json::{json, Value};
use weir_policy::model::{Cluster, Labels, NamedPort, PodInfo, PodKey, PolicyKey, Protocol};

pub const NAMESPACES: [&str; 3] = ["a", "b", "c"]; // "c" has no Namespace object

/// A cluster holding the objects of `yaml` (Kubernetes manifests, `---`-separated).
pub fn cluster_from_manifests(yaml: &str) -> Cluster {
    let mut cluster = Cluster::default();
    cluster
        .apply_all(weir_policy::manifest::parse_documents(yaml).expect("valid manifests"))
        .expect("valid objects");
    cluster
}

pub fn random_labels(rng: &mut StdRng) -> Labels {
    let mut labels = Labels::new();
    if rng.random_bool(0.8) {
        labels.insert(
            "app".into(),
            ["x", "y", "z"].choose(rng).unwrap().to_string(),
        );
    }
    if rng.random_bool(0.5) {
        labels.insert("tier".into(), ["1", "2"].choose(rng).unwrap().to_string());
    }
    labels
}

pub fn random_ports(rng: &mut StdRng) -> Vec<NamedPort> {
    let mut ports = Vec::new();
    if rng.random_bool(0.6) {
        let port = *[80, 8080, 85].choose(rng).unwrap();
        ports.push(NamedPort {
            name: "http".into(),
            port,
            protocol: Protocol::Tcp,
        });
    }
    if rng.random_bool(0.4) {
        ports.push(NamedPort {
            name: "dns".into(),
            port: 53,
            protocol: Protocol::Udp,
        });
    }
    ports
}

pub fn random_cluster(rng: &mut StdRng) -> Cluster {
    random_world(rng).0
}

/// A random cluster and the NetworkPolicies in it, as written (the model keeps only their
/// compiled form).
pub fn random_world(rng: &mut StdRng) -> (Cluster, Vec<NetworkPolicy>) {
    let mut cluster = Cluster::default();
    let mut policies = Vec::new();
    cluster.upsert_namespace("a", [("team".to_owned(), "red".to_owned())].into());
    cluster.upsert_namespace("b", [("team".to_owned(), "blue".to_owned())].into());
    for i in 0..rng.random_range(2..9) {
        let pod = random_pod(rng, &cluster, &format!("p{i}"));
        cluster.upsert_pod(pod);
    }
    for i in 0..rng.random_range(0..5) {
        let policy = random_policy(rng, i);
        cluster.upsert_policy(policy.clone()).unwrap();
        policies.push(policy);
    }
    (cluster, policies)
}

pub fn random_selector(rng: &mut StdRng, label_keys: &[&str]) -> Value {
    let value = *["x", "y", "red", "blue"].choose(rng).unwrap();
    let exists = *["Exists", "DoesNotExist"].choose(rng).unwrap();
    match rng.random_range(0..5) {
        0 => json!({}),
        1 => json!({"matchLabels": {label_keys[0]: value}}),
        2 => {
            json!({"matchExpressions": [{"key": label_keys[0], "operator": "NotIn", "values": ["x", "blue"]}]})
        }
        3 => json!({"matchExpressions": [{"key": label_keys[1], "operator": exists}]}),
        _ => {
            json!({"matchLabels": {label_keys[0]: "y"}, "matchExpressions": [{"key": label_keys[1], "operator": "In", "values": ["1", "red"]}]})
        }
    }
}

pub fn random_cidr(rng: &mut StdRng) -> (String, Vec<String>) {
    if rng.random_bool(0.2) {
        return (
            "0.0.0.0/0".into(),
            if rng.random_bool(0.5) {
                vec!["10.0.0.0/29".into()]
            } else {
                vec![]
            },
        );
    }
    let len = rng.random_range(26..=32u8);
    let net = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, rng.random_range(0..16)), len)
        .unwrap()
        .trunc();
    let mut except = Vec::new();
    if len < 32 && rng.random_bool(0.5) {
        let e_len = rng.random_range(len + 1..=32);
        let host = u32::from(net.network()) | (rng.random::<u32>() & !u32::from(net.netmask()));
        except.push(
            Ipv4Net::new(Ipv4Addr::from(host), e_len)
                .unwrap()
                .trunc()
                .to_string(),
        );
    }
    (net.to_string(), except)
}

pub fn random_peer(rng: &mut StdRng) -> Value {
    match rng.random_range(0..4) {
        0 => json!({"podSelector": random_selector(rng, &["app", "tier"])}),
        1 => {
            json!({"namespaceSelector": random_selector(rng, &["team", "kubernetes.io/metadata.name"])})
        }
        2 => json!({"podSelector": random_selector(rng, &["app", "tier"]),
                    "namespaceSelector": random_selector(rng, &["team", "kubernetes.io/metadata.name"])}),
        _ => {
            let (cidr, except) = random_cidr(rng);
            json!({"ipBlock": {"cidr": cidr, "except": except}})
        }
    }
}

pub fn random_port(rng: &mut StdRng) -> Value {
    [
        json!({}),
        json!({"port": 80}),
        json!({"port": "http"}),
        json!({"port": "dns", "protocol": "UDP"}),
        json!({"protocol": "UDP", "port": 53}),
        json!({"port": 80, "endPort": 90}),
        json!({"protocol": "SCTP"}),
    ]
    .choose(rng)
    .unwrap()
    .clone()
}

pub fn random_rule(rng: &mut StdRng, peers_field: &str) -> Value {
    let mut rule = serde_json::Map::new();
    if rng.random_bool(0.8) {
        let peers: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_peer(rng))
            .collect();
        rule.insert(peers_field.into(), Value::Array(peers));
    }
    if rng.random_bool(0.7) {
        let ports: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_port(rng))
            .collect();
        rule.insert("ports".into(), Value::Array(ports));
    }
    Value::Object(rule)
}

pub fn random_policy(rng: &mut StdRng, i: usize) -> NetworkPolicy {
    let mut spec = serde_json::Map::new();
    spec.insert("podSelector".into(), random_selector(rng, &["app", "tier"]));
    let types = [
        None,
        Some(json!(["Ingress"])),
        Some(json!(["Egress"])),
        Some(json!(["Ingress", "Egress"])),
    ];
    if let Some(t) = types.choose(rng).unwrap() {
        spec.insert("policyTypes".into(), t.clone());
    }
    if rng.random_bool(0.7) {
        let rules: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_rule(rng, "from"))
            .collect();
        spec.insert("ingress".into(), Value::Array(rules));
    }
    if rng.random_bool(0.6) {
        let rules: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_rule(rng, "to"))
            .collect();
        spec.insert("egress".into(), Value::Array(rules));
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACES.choose(rng).unwrap(), "name": format!("np{i}")},
        "spec": spec,
    }))
    .unwrap()
}

/// A pod with random labels and ports and, usually, an address no other pod has (10.0.0.1-13).
pub fn random_pod(rng: &mut StdRng, cluster: &Cluster, name: &str) -> PodInfo {
    let used: Vec<Ipv4Addr> = cluster.pods().filter_map(|p| p.ip).collect();
    let free: Vec<Ipv4Addr> = (1..14)
        .map(|i| Ipv4Addr::new(10, 0, 0, i))
        .filter(|ip| !used.contains(ip))
        .collect();
    let ip = if rng.random_bool(0.85) {
        free.choose(rng).copied()
    } else {
        None
    };
    PodInfo {
        key: PodKey::new(*NAMESPACES.choose(rng).unwrap(), name),
        labels: random_labels(rng).into(),
        ip,
        node: None,
        ports: random_ports(rng),
    }
}

/// Every pod with an address, as local endpoints.
pub fn all_local(cluster: &Cluster) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    cluster
        .pods()
        .filter_map(|p| p.ip.map(|ip| (ip, Some(p.key.clone()))))
        .collect()
}

/// A policy the compiler must reject in part (unknown policy type, or an invalid selector).
pub fn broken_policy(rng: &mut StdRng, i: usize) -> NetworkPolicy {
    let spec = if rng.random_bool(0.5) {
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]})
    } else {
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]},
               "ingress": [{"from": [{"podSelector": {}}]}]})
    };
    serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACES.choose(rng).unwrap(), "name": format!("np{i}")},
        "spec": spec,
    }))
    .unwrap()
}

/// One random change to the cluster; returns the NetworkPolicy it stored, if it stored one (the
/// model keeps only their compiled form).
pub fn mutate(rng: &mut StdRng, cluster: &mut Cluster, step: usize) -> Option<NetworkPolicy> {
    let pods: Vec<PodKey> = cluster.pods().map(|p| p.key.clone()).collect();
    let policies: Vec<PolicyKey> = cluster.policies().map(|p| p.key().clone()).collect();
    match rng.random_range(0..11) {
        0 => {
            let pod = random_pod(rng, cluster, &format!("new{step}"));
            cluster.upsert_pod(pod);
        }
        1 if !pods.is_empty() => {
            cluster.delete_pod(pods.choose(rng).unwrap());
        }
        2 if !pods.is_empty() => {
            let key = pods.choose(rng).unwrap().clone();
            let mut pod = cluster.pod(&key).unwrap().clone();
            pod.labels = random_labels(rng).into();
            cluster.upsert_pod(pod);
        }
        3 if !pods.is_empty() => {
            // A new address (or none), a new set of named ports, or the same content again.
            let key = pods.choose(rng).unwrap().clone();
            let mut pod = cluster.pod(&key).unwrap().clone();
            match rng.random_range(0..3) {
                0 => pod.ip = random_pod(rng, cluster, "x").ip,
                1 => pod.ports = random_pod(rng, cluster, "x").ports,
                _ => {}
            }
            cluster.upsert_pod(pod);
        }
        4 | 5 => {
            let name = if rng.random_bool(0.5) || policies.is_empty() {
                100 + step
            } else {
                // Rewrite an existing one.
                policies.choose(rng).unwrap().name[2..].parse().unwrap()
            };
            let policy = random_policy(rng, name);
            cluster.upsert_policy(policy.clone()).unwrap();
            return Some(policy);
        }
        6 => {
            let policy = broken_policy(rng, 100 + step);
            cluster.upsert_policy(policy.clone()).unwrap();
            return Some(policy);
        }
        7 if !policies.is_empty() => {
            cluster.delete_policy(policies.choose(rng).unwrap());
        }
        8 => {
            let ns = *NAMESPACES.choose(rng).unwrap();
            cluster.upsert_namespace(ns, random_labels(rng));
        }
        9 => {
            cluster.delete_namespace(NAMESPACES.choose(rng).unwrap());
        }
        _ => {}
    }
    None
}

/// This node's endpoints: most pods with an address, sometimes at another address than the model
/// says, an endpoint without a pod, one whose pod the model lacks.
pub fn random_local(rng: &mut StdRng, cluster: &Cluster) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    let mut local: Vec<(Ipv4Addr, Option<PodKey>)> = Vec::new();
    for pod in cluster.pods() {
        if !rng.random_bool(0.6) {
            continue;
        }
        match pod.ip {
            Some(_) if rng.random_bool(0.1) => {
                // The endpoint's address wins over a stale status.podIP.
                local.push((
                    Ipv4Addr::new(10, 0, 0, rng.random_range(1..16)),
                    Some(pod.key.clone()),
                ));
            }
            Some(ip) => local.push((ip, Some(pod.key.clone()))),
            None => {}
        }
    }
    if rng.random_bool(0.2) {
        local.push((Ipv4Addr::new(10, 0, 1, 1), None));
    }
    if rng.random_bool(0.2) {
        let ns = *NAMESPACES.choose(rng).unwrap();
        local.push((
            Ipv4Addr::new(10, 0, 1, 2),
            Some(PodKey::new(ns, "not-seen-yet")),
        ));
    }
    local.sort_by_key(|(ip, _)| *ip);
    local.dedup_by_key(|(ip, _)| *ip);
    local
}

pub fn random_left_out(rng: &mut StdRng, cluster: &Cluster) -> BTreeSet<PolicyKey> {
    if rng.random_bool(0.7) {
        return BTreeSet::new();
    }
    cluster
        .policies()
        .filter(|_| rng.random_bool(0.3))
        .map(|p| p.key().clone())
        .collect()
}
