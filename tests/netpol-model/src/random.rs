// SPDX-License-Identifier: Apache-2.0
//! Seeded random worlds small enough to probe exhaustively and dense enough that selectors hit.
//!
//! Labels come from a tiny vocabulary, so most selectors select something and most pods are
//! selected by something. The policies use every feature of networking.k8s.io/v1: matchLabels,
//! the four matchExpressions operators, empty and absent selectors, namespace and pod selectors
//! alone and together, ipBlock with except over pod IPs and outside addresses, numeric, named,
//! ranged and port-less port entries over TCP, UDP and SCTP, absent and present policyTypes, and
//! absent and empty rule lists. Everything generated passes API validation.
//!
//! The same seed gives the same world. Pod IPs come from a separate stream, so a world built with
//! given IPs ([`Size::pod_ips`], as the lab's IPAM hands them out) has the same namespaces, pods
//! and policy shapes as the one without; only the addresses (and the ipBlocks drawn around them)
//! differ.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::RangeInclusive,
};

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};

use crate::{
    eval::{cidr_contains, parse_cidr, prefix_mask},
    world::{ContainerPort, Namespace, Pod, Proto, World, NAMESPACE_NAME_LABEL},
};

/// The address the lab's "internet" host has.
pub const OUTSIDE_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// An address inside the node's pod CIDR that no pod has.
pub const UNUSED_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 200);

const NAMESPACE_NAMES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];
const NAMESPACE_VOCABULARY: [(&str, &[&str]); 2] =
    [("team", &["red", "blue"]), ("env", &["prod", "dev"])];
const POD_VOCABULARY: [(&str, &[&str]); 3] = [
    ("app", &["web", "api", "db"]),
    ("tier", &["front", "back"]),
    ("env", &["prod", "dev"]),
];

/// The container ports a pod may declare: the lab's servers (80 and 81 over each protocol),
/// plus names shared between pods with different numbers, and one that nobody serves.
const SERVED_PORTS: [(&str, u16, Proto); 6] = [
    ("serve-80-tcp", 80, Proto::Tcp),
    ("serve-81-tcp", 81, Proto::Tcp),
    ("serve-80-udp", 80, Proto::Udp),
    ("serve-81-udp", 81, Proto::Udp),
    ("serve-80-sctp", 80, Proto::Sctp),
    ("serve-81-sctp", 81, Proto::Sctp),
];
/// (name, protocol, candidate numbers): each pod that has the name picks one number.
const SHARED_NAMES: [(&str, Proto, &[u16]); 4] = [
    ("http", Proto::Tcp, &[80, 81]),
    ("dns", Proto::Udp, &[80, 81]),
    ("assoc", Proto::Sctp, &[80, 81]),
    ("metrics", Proto::Tcp, &[9090]),
];
/// Names a policy's named port may use: every declared name, one nobody declares.
const POLICY_PORT_NAMES: [&str; 11] = [
    "serve-80-tcp",
    "serve-81-tcp",
    "serve-80-udp",
    "serve-81-udp",
    "serve-80-sctp",
    "serve-81-sctp",
    "http",
    "dns",
    "assoc",
    "metrics",
    "nope",
];

/// Which container ports pods get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPorts {
    /// A random subset of the lab's server ports, plus names several pods share with different
    /// numbers (`http` is 80 on one pod, 81 on another), an unnamed port and one nobody serves.
    Random,
    /// Exactly what a lab pod declares: `serve-<port>-<proto>` for 80 and 81 over TCP, UDP and
    /// SCTP.
    LabServers,
}

/// How big a random world is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Size {
    pub namespaces: RangeInclusive<usize>,
    pub pods: RangeInclusive<usize>,
    pub policies: RangeInclusive<usize>,
    /// The pods' IPs, in the order the pods are generated; `None`: drawn from 10.244.1.2–17.
    /// Must have at least as many entries as the world gets pods.
    pub pod_ips: Option<Vec<Ipv4Addr>>,
    /// Addresses that are not pods, probed and used as ipBlock anchors.
    pub outside: Vec<Ipv4Addr>,
    pub pod_ports: PodPorts,
    /// ClusterNetworkPolicies (both tiers); none unless asked ([`Size::with_cluster_policies`]),
    /// so that the NetworkPolicy-only worlds of a seed stay what they were.
    pub cluster_policies: RangeInclusive<usize>,
}

impl Default for Size {
    /// 2–3 namespaces, 3–6 pods, 1–6 policies, IPs drawn, the lab's internet host and one unused
    /// pod address outside.
    fn default() -> Self {
        Size {
            namespaces: 2..=3,
            pods: 3..=6,
            policies: 1..=6,
            pod_ips: None,
            outside: vec![OUTSIDE_HOST, UNUSED_POD_IP],
            pod_ports: PodPorts::Random,
            cluster_policies: 0..=0,
        }
    }
}

impl Size {
    /// Worlds for the lab: 2–3 namespaces, 3–5 pods that declare exactly the lab servers' ports,
    /// 1–5 policies, and the lab's internet host as the only outside address.
    pub fn lab() -> Self {
        Size {
            namespaces: 2..=3,
            pods: 3..=5,
            policies: 1..=5,
            pod_ips: None,
            outside: vec![OUTSIDE_HOST],
            pod_ports: PodPorts::LabServers,
            cluster_policies: 0..=0,
        }
    }

    /// The same size with ClusterNetworkPolicies too.
    pub fn with_cluster_policies(mut self, count: RangeInclusive<usize>) -> Self {
        self.cluster_policies = count;
        self
    }

    /// The same size with the pods' IPs given.
    pub fn with_pod_ips(mut self, ips: Vec<Ipv4Addr>) -> Self {
        self.pod_ips = Some(ips);
        self
    }
}

/// The world for `seed`.
///
/// # Panics
/// When `size.pod_ips` has fewer addresses than the world has pods.
pub fn random_world(seed: u64, size: &Size) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ip_rng = StdRng::seed_from_u64(seed ^ 0x5eed_1b5e_ed1b_5eed);

    let namespace_count = rng
        .random_range(size.namespaces.clone())
        .min(NAMESPACE_NAMES.len());
    let namespaces: Vec<Namespace> = NAMESPACE_NAMES[..namespace_count]
        .iter()
        .map(|name| Namespace {
            name: (*name).to_owned(),
            labels: random_labels(&mut rng, &NAMESPACE_VOCABULARY),
        })
        .collect();

    let pod_count = rng.random_range(size.pods.clone());
    let ips = match &size.pod_ips {
        Some(ips) => {
            assert!(
                ips.len() >= pod_count,
                "{pod_count} pods but only {} IPs given",
                ips.len()
            );
            ips[..pod_count].to_vec()
        }
        None => {
            let mut pool: Vec<Ipv4Addr> = (2..=17)
                .map(|host| Ipv4Addr::new(10, 244, 1, host))
                .collect();
            let mut ips = Vec::new();
            for _ in 0..pod_count {
                ips.push(pool.remove(ip_rng.random_range(0..pool.len())));
            }
            ips
        }
    };
    let pods: Vec<Pod> = ips
        .into_iter()
        .enumerate()
        .map(|(i, ip)| Pod {
            namespace: namespaces
                .choose(&mut rng)
                .expect("at least one namespace")
                .name
                .clone(),
            name: format!("pod-{i}"),
            ip,
            labels: random_labels(&mut rng, &POD_VOCABULARY),
            ports: match size.pod_ports {
                PodPorts::Random => random_container_ports(&mut rng),
                PodPorts::LabServers => lab_server_ports(),
            },
        })
        .collect();

    let mut world = World {
        namespaces,
        pods,
        outside: size.outside.clone(),
        policies: Vec::new(),
        cluster_policies: Vec::new(),
    };
    let policy_count = rng.random_range(size.policies.clone());
    for i in 0..policy_count {
        let policy = random_policy(&mut rng, &world, &format!("pol-{i}"));
        world.policies.push(policy);
    }
    if *size.cluster_policies.end() > 0 {
        for i in 0..rng.random_range(size.cluster_policies.clone()) {
            let policy = random_cluster_policy(&mut rng, &world, &format!("cnp-{i}"));
            world.cluster_policies.push(policy);
        }
    }
    world
}

/// A ClusterNetworkPolicy using every field of network-policy-api v0.3.0 but `nodes` (the
/// worlds have no nodes): both tiers, a few priorities (ties included), subjects by namespace or
/// namespace and pod, every action, namespace/pod/network peers (a `domainNames` one now and
/// then, which fails closed), and ports by number, range and name over TCP, UDP and SCTP.
fn random_cluster_policy(rng: &mut impl Rng, world: &World, name: &str) -> serde_json::Value {
    use serde_json::json;
    let namespaced_pod = |rng: &mut dyn rand::RngCore| {
        let mut rng = rng;
        json!({
            "namespaceSelector": random_selector(&mut rng, &NAMESPACE_VOCABULARY, true),
            "podSelector": random_selector(&mut rng, &POD_VOCABULARY, false),
        })
    };
    let subject = if rng.random_bool(0.5) {
        json!({"namespaces": random_selector(rng, &NAMESPACE_VOCABULARY, true)})
    } else {
        json!({"pods": namespaced_pod(rng)})
    };
    let mut spec = json!({
        "tier": if rng.random_bool(0.5) { "Admin" } else { "Baseline" },
        "priority": rng.random_range(0..3),
        "subject": subject,
    });
    for (list, peers_field, egress) in [("ingress", "from", false), ("egress", "to", true)] {
        if rng.random_bool(0.3) {
            continue;
        }
        let mut rules = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let mut peers = Vec::new();
            for _ in 0..rng.random_range(1..=2) {
                peers.push(match rng.random_range(0..100) {
                    0..30 => {
                        json!({"namespaces": random_selector(rng, &NAMESPACE_VOCABULARY, true)})
                    }
                    30..65 => json!({"pods": namespaced_pod(rng)}),
                    65..95 if egress => {
                        let block = random_ip_block(rng, world);
                        json!({"networks": [block.cidr]})
                    }
                    95.. if egress => json!({"domainNames": ["example.com"]}),
                    _ => json!({"namespaces": {}}),
                });
            }
            let named_ok = peers
                .iter()
                .all(|p| p.get("networks").is_none() && p.get("domainNames").is_none());
            let action = *["Accept", "Deny", "Pass"].choose(rng).expect("actions");
            let mut rule = json!({"action": action, peers_field: peers});
            if rng.random_bool(0.6) {
                let mut protocols = Vec::new();
                for _ in 0..rng.random_range(1..=2) {
                    protocols.push(match rng.random_range(0..100) {
                        0..30 => json!({"tcp": {"destinationPort": {"number": *[80, 81, 82].choose(rng).expect("ports")}}}),
                        30..50 => json!({"udp": {"destinationPort": {"range": {"start": 79, "end": *[80, 81, 90].choose(rng).expect("ends")}}}}),
                        50..65 => json!({"sctp": {"destinationPort": {"number": *[80, 81].choose(rng).expect("ports")}}}),
                        65..80 => json!({"tcp": {"destinationPort": {"range": {"start": 1, "end": 80}}}}),
                        _ if named_ok => json!({"destinationNamedPort": *POLICY_PORT_NAMES.choose(rng).expect("names")}),
                        _ => json!({"udp": {"destinationPort": {"number": 81}}}),
                    });
                }
                rule["protocols"] = json!(protocols);
            }
            rules.push(rule);
        }
        spec[list] = json!(rules);
    }
    json!({
        "apiVersion": "policy.networking.k8s.io/v1beta1",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Changes one random pod's labels (sets one vocabulary key to another value, or removes it);
/// returns the index of the pod changed.
pub fn random_relabel(world: &mut World, rng: &mut impl Rng) -> usize {
    let index = rng.random_range(0..world.pods.len());
    let pod = &mut world.pods[index];
    let (key, values) = POD_VOCABULARY.choose(rng).expect("vocabulary is not empty");
    if pod.labels.contains_key(*key) && rng.random_bool(0.3) {
        pod.labels.remove(*key);
    } else {
        // Always a change: a value other than the current one.
        let current = pod.labels.get(*key).cloned();
        let others: Vec<&str> = values
            .iter()
            .copied()
            .filter(|v| current.as_deref() != Some(*v))
            .collect();
        let value = *others.choose(rng).expect("two values or more");
        pod.labels.insert((*key).to_owned(), value.to_owned());
    }
    index
}

/// The destination ports worth probing in `world`: 80 and 81, every container port, every
/// number a policy names with its neighbours (port ± 1, endPort ± 1), and inside each range
/// the first port of every aligned power-of-two block (± 1).
pub fn interesting_ports(world: &World) -> BTreeSet<u16> {
    let mut ports: BTreeSet<u16> = [80, 81].into();
    for pod in &world.pods {
        ports.extend(pod.ports.iter().map(|p| p.port));
    }
    let mut around = |n: i32| {
        for candidate in [n - 1, n, n + 1] {
            if let Ok(p) = u16::try_from(candidate) {
                if p != 0 {
                    ports.insert(p);
                }
            }
        }
    };
    for n in cluster_policy_ports(world) {
        around(n);
    }
    for policy in &world.policies {
        let Some(spec) = &policy.spec else { continue };
        let entries = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.ports.iter().flatten())
            .chain(
                spec.egress
                    .iter()
                    .flatten()
                    .flat_map(|r| r.ports.iter().flatten()),
            );
        for entry in entries {
            if let Some(IntOrString::Int(first)) = entry.port {
                around(first);
                if let Some(last) = entry.end_port {
                    around(last);
                    // Inside a range, the points where an aligned power-of-two block starts
                    // (and the port just before): where a range splits into prefixes.
                    for bits in 1..16 {
                        let block = 1i32 << bits;
                        let start = (first / block + 1) * block;
                        if start <= last {
                            around(start);
                        }
                    }
                }
            }
        }
    }
    ports
}

/// The port numbers a ClusterNetworkPolicy names (numbers, range ends).
fn cluster_policy_ports(world: &World) -> Vec<i32> {
    let mut out = Vec::new();
    let mut visit = |value: &serde_json::Value| {
        for rule in value.as_array().into_iter().flatten() {
            for protocol in rule["protocols"].as_array().into_iter().flatten() {
                for field in ["tcp", "udp", "sctp"] {
                    let d = &protocol[field]["destinationPort"];
                    for n in [&d["number"], &d["range"]["start"], &d["range"]["end"]] {
                        if let Some(n) = n.as_i64() {
                            out.push(n as i32);
                        }
                    }
                }
            }
        }
    };
    for policy in &world.cluster_policies {
        visit(&policy["spec"]["ingress"]);
        visit(&policy["spec"]["egress"]);
    }
    out
}

fn random_labels(rng: &mut impl Rng, vocabulary: &[(&str, &[&str])]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (key, values) in vocabulary {
        if rng.random_bool(0.6) {
            let value = *values.choose(rng).expect("values");
            labels.insert((*key).to_owned(), value.to_owned());
        }
    }
    labels
}

/// The container ports every lab pod declares.
pub fn lab_server_ports() -> Vec<ContainerPort> {
    SERVED_PORTS
        .iter()
        .map(|(name, port, protocol)| ContainerPort {
            name: Some((*name).to_owned()),
            port: *port,
            protocol: *protocol,
        })
        .collect()
}

fn random_container_ports(rng: &mut impl Rng) -> Vec<ContainerPort> {
    let mut ports: Vec<ContainerPort> = SERVED_PORTS
        .iter()
        .filter(|_| rng.random_bool(0.7))
        .map(|(name, port, protocol)| ContainerPort {
            name: Some((*name).to_owned()),
            port: *port,
            protocol: *protocol,
        })
        .collect::<Vec<_>>();
    for (name, protocol, numbers) in SHARED_NAMES {
        if rng.random_bool(0.45) {
            ports.push(ContainerPort {
                name: Some(name.to_owned()),
                port: *numbers.choose(rng).expect("numbers"),
                protocol,
            });
        }
    }
    if rng.random_bool(0.2) {
        // An unnamed port: only numeric rules can reach it by number.
        ports.push(ContainerPort {
            name: None,
            port: 8080,
            protocol: Proto::Tcp,
        });
    }
    ports
}

fn random_policy(rng: &mut impl Rng, world: &World, name: &str) -> NetworkPolicy {
    let namespace = world
        .namespaces
        .choose(rng)
        .expect("namespaces")
        .name
        .clone();
    let pod_selector = if rng.random_bool(0.15) {
        None
    } else {
        Some(random_selector(rng, &POD_VOCABULARY, false))
    };
    let policy_types = match rng.random_range(0..4) {
        0 => None,
        1 => Some(vec!["Ingress".to_owned()]),
        2 => Some(vec!["Egress".to_owned()]),
        _ if rng.random_bool(0.5) => Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
        _ => Some(vec!["Egress".to_owned(), "Ingress".to_owned()]),
    };
    let ingress = random_rule_list(rng, |rng| NetworkPolicyIngressRule {
        from: random_peers(rng, world),
        ports: random_ports(rng),
    });
    let egress = random_rule_list(rng, |rng| NetworkPolicyEgressRule {
        to: random_peers(rng, world),
        ports: random_ports(rng),
    });
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector,
            policy_types,
            ingress,
            egress,
        }),
    }
}

/// Absent (20%), empty (15%), or one to three rules.
fn random_rule_list<R: Rng, T>(rng: &mut R, mut rule: impl FnMut(&mut R) -> T) -> Option<Vec<T>> {
    match rng.random_range(0..100) {
        0..20 => None,
        20..35 => Some(Vec::new()),
        _ => {
            let n = rng.random_range(1..=3);
            Some((0..n).map(|_| rule(rng)).collect())
        }
    }
}

/// Absent (15%), empty (10%), or one to three peers.
fn random_peers(rng: &mut impl Rng, world: &World) -> Option<Vec<NetworkPolicyPeer>> {
    match rng.random_range(0..100) {
        0..15 => None,
        15..25 => Some(Vec::new()),
        _ => {
            let n = rng.random_range(1..=3);
            Some((0..n).map(|_| random_peer(rng, world)).collect())
        }
    }
}

fn random_peer(rng: &mut impl Rng, world: &World) -> NetworkPolicyPeer {
    let mut peer = NetworkPolicyPeer::default();
    match rng.random_range(0..100) {
        0..30 => peer.pod_selector = Some(random_selector(rng, &POD_VOCABULARY, false)),
        30..50 => peer.namespace_selector = Some(random_selector(rng, &NAMESPACE_VOCABULARY, true)),
        50..70 => {
            peer.namespace_selector = Some(random_selector(rng, &NAMESPACE_VOCABULARY, true));
            peer.pod_selector = Some(random_selector(rng, &POD_VOCABULARY, false));
        }
        _ => peer.ip_block = Some(random_ip_block(rng, world)),
    }
    peer
}

/// Empty (20%), matchLabels (30%), matchExpressions (30%) or both (20%). With `namespace`, the
/// `kubernetes.io/metadata.name` label joins the vocabulary.
fn random_selector(
    rng: &mut impl Rng,
    vocabulary: &[(&str, &[&str])],
    namespace: bool,
) -> LabelSelector {
    let mut keys: Vec<(&str, &[&str])> = vocabulary.to_vec();
    if namespace {
        keys.push((NAMESPACE_NAME_LABEL, &NAMESPACE_NAMES));
    }
    fn value(rng: &mut impl Rng, values: &[&str]) -> String {
        if rng.random_bool(0.1) {
            "other".to_owned()
        } else {
            (*values.choose(rng).expect("values")).to_owned()
        }
    }
    let mut selector = LabelSelector::default();
    let kind = rng.random_range(0..100);
    if (20..50).contains(&kind) || kind >= 80 {
        let mut labels = BTreeMap::new();
        for _ in 0..rng.random_range(1..=2) {
            let (key, values) = keys.choose(rng).expect("keys");
            labels.insert((*key).to_owned(), value(rng, values));
        }
        selector.match_labels = Some(labels);
    }
    if (50..100).contains(&kind) {
        let mut requirements = Vec::new();
        for _ in 0..rng.random_range(1..=2) {
            let (key, values) = keys.choose(rng).expect("keys");
            let operator = *["In", "NotIn", "Exists", "DoesNotExist"]
                .choose(rng)
                .expect("ops");
            let values = match operator {
                "In" | "NotIn" => {
                    let mut chosen = BTreeSet::new();
                    for _ in 0..rng.random_range(1..=2) {
                        chosen.insert(value(rng, values));
                    }
                    Some(chosen.into_iter().collect())
                }
                _ => None,
            };
            requirements.push(LabelSelectorRequirement {
                key: (*key).to_owned(),
                operator: operator.to_owned(),
                values,
            });
        }
        selector.match_expressions = Some(requirements);
    }
    selector
}

/// A CIDR around a pod's IP, an outside address or a random cluster address, with zero to two
/// `except` blocks strictly inside it (often around another pod's IP).
fn random_ip_block(rng: &mut impl Rng, world: &World) -> IPBlock {
    let anchors: Vec<Ipv4Addr> = world
        .pods
        .iter()
        .map(|p| p.ip)
        .chain(world.outside.iter().copied())
        .collect();
    let anchor = if rng.random_bool(0.85) {
        *anchors.choose(rng).expect("at least one pod")
    } else {
        Ipv4Addr::new(10, 244, rng.random_range(0..4), rng.random())
    };
    let len = *[0u8, 8, 16, 23, 24, 25, 26, 28, 29, 30, 31, 32, 32]
        .choose(rng)
        .expect("lens");
    let cidr = canonical(anchor, len);
    let mut except = Vec::new();
    if len < 32 && rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..=2) {
            let inside: Vec<Ipv4Addr> = anchors
                .iter()
                .copied()
                .filter(|ip| cidr_contains(&cidr, *ip))
                .collect();
            let ip = if !inside.is_empty() && rng.random_bool(0.8) {
                *inside.choose(rng).expect("not empty")
            } else {
                let (net, _) = parse_cidr(&cidr);
                Ipv4Addr::from(u32::from(net) | (rng.random::<u32>() & !prefix_mask(len)))
            };
            let except_len = rng.random_range(len + 1..=32);
            except.push(canonical(ip, except_len));
        }
    }
    IPBlock {
        cidr,
        except: if except.is_empty() && rng.random_bool(0.7) {
            None
        } else {
            Some(except)
        },
    }
}

fn canonical(ip: Ipv4Addr, len: u8) -> String {
    format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & prefix_mask(len)))
}

/// Absent (30%), empty (10%), or one to three entries.
fn random_ports(rng: &mut impl Rng) -> Option<Vec<NetworkPolicyPort>> {
    match rng.random_range(0..100) {
        0..30 => None,
        30..40 => Some(Vec::new()),
        _ => {
            let n = rng.random_range(1..=3);
            Some((0..n).map(|_| random_port(rng)).collect())
        }
    }
}

fn random_protocol(rng: &mut impl Rng) -> Option<String> {
    if rng.random_bool(0.3) {
        None
    } else {
        Some(
            Proto::WITH_PORTS
                .choose(rng)
                .expect("protocols")
                .k8s_name()
                .to_owned(),
        )
    }
}

/// `{}` (10%), protocol only (15%), a number (35%), a range (20%) or a name (20%).
fn random_port(rng: &mut impl Rng) -> NetworkPolicyPort {
    let mut entry = NetworkPolicyPort::default();
    match rng.random_range(0..100) {
        0..10 => {}
        10..25 => {
            entry.protocol = Some(
                Proto::WITH_PORTS
                    .choose(rng)
                    .expect("protocols")
                    .k8s_name()
                    .to_owned(),
            )
        }
        25..60 => {
            entry.protocol = random_protocol(rng);
            let port = *[80, 80, 81, 81, 82, 8080, 9090].choose(rng).expect("ports");
            entry.port = Some(IntOrString::Int(if rng.random_bool(0.1) {
                rng.random_range(1..=65535)
            } else {
                port
            }));
        }
        60..80 => {
            entry.protocol = random_protocol(rng);
            let first: i32 = if rng.random_bool(0.2) {
                rng.random_range(1..=65535)
            } else {
                *[1, 79, 80, 81].choose(rng).expect("ports")
            };
            let width = if rng.random_bool(0.2) {
                rng.random_range(0..=1000)
            } else {
                *[0, 1, 2].choose(rng).expect("widths")
            };
            entry.port = Some(IntOrString::Int(first));
            entry.end_port = Some((first + width).min(65535));
        }
        _ => {
            let name = *POLICY_PORT_NAMES.choose(rng).expect("names");
            entry.port = Some(IntOrString::String(name.to_owned()));
            // Mostly the protocol the name is declared with, sometimes another (never matches).
            let natural = SERVED_PORTS
                .iter()
                .map(|(n, _, p)| (*n, *p))
                .chain(SHARED_NAMES.iter().map(|(n, p, _)| (*n, *p)))
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p);
            entry.protocol = match natural {
                Some(Proto::Tcp) if rng.random_bool(0.5) => None,
                Some(p) if rng.random_bool(0.8) => Some(p.k8s_name().to_owned()),
                _ => random_protocol(rng),
            };
        }
    }
    entry
}
