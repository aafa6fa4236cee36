//! Random clusters and policies: the compiled tables must decide every flow exactly as a direct,
//! rule-by-rule reading of the NetworkPolicy API does.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use weir_policy::{
    compile::compile,
    model::{Cluster, Labels, NamedPort, PodInfo, PodKey, Protocol},
    selector::Selector,
};

const NAMESPACES: [&str; 3] = ["a", "b", "c"]; // "c" has no Namespace object

fn random_labels(rng: &mut StdRng) -> Labels {
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

fn random_ports(rng: &mut StdRng) -> Vec<NamedPort> {
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

fn random_cluster(rng: &mut StdRng) -> Cluster {
    let mut cluster = Cluster::default();
    cluster.upsert_namespace("a", [("team".to_owned(), "red".to_owned())].into());
    cluster.upsert_namespace("b", [("team".to_owned(), "blue".to_owned())].into());
    let mut addresses: Vec<u8> = (1..14).collect();
    for i in 0..rng.random_range(2..9) {
        let ip = if rng.random_bool(0.85) && !addresses.is_empty() {
            let k = rng.random_range(0..addresses.len());
            Some(Ipv4Addr::new(10, 0, 0, addresses.swap_remove(k)))
        } else {
            None
        };
        cluster.upsert_pod(PodInfo {
            key: PodKey::new(*NAMESPACES.choose(rng).unwrap(), format!("p{i}")),
            labels: random_labels(rng),
            ip,
            node: None,
            ports: random_ports(rng),
        });
    }
    for i in 0..rng.random_range(0..5) {
        cluster.upsert_policy(random_policy(rng, i)).unwrap();
    }
    cluster
}

fn random_selector(rng: &mut StdRng, label_keys: &[&str]) -> Value {
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

fn random_cidr(rng: &mut StdRng) -> (String, Vec<String>) {
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

fn random_peer(rng: &mut StdRng) -> Value {
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

fn random_port(rng: &mut StdRng) -> Value {
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

fn random_rule(rng: &mut StdRng, peers_field: &str) -> Value {
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

fn random_policy(rng: &mut StdRng, i: usize) -> NetworkPolicy {
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

// ---- the reference: the API read literally, one flow at a time ----

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Ingress,
    Egress,
}

fn pod_at(cluster: &Cluster, ip: Ipv4Addr) -> Option<&PodInfo> {
    cluster.pods().find(|p| p.ip == Some(ip))
}

fn selector(
    value: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Selector {
    Selector::parse_optional(value).unwrap()
}

fn policy_types(policy: &NetworkPolicy) -> (bool, bool) {
    let spec = policy.spec.as_ref().unwrap();
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn peer_matches(
    cluster: &Cluster,
    policy_ns: &str,
    peer: &NetworkPolicyPeer,
    addr: Ipv4Addr,
) -> bool {
    if let Some(block) = &peer.ip_block {
        let cidr: Ipv4Net = block.cidr.parse().unwrap();
        return cidr.contains(&addr)
            && !block
                .except
                .iter()
                .flatten()
                .any(|e| e.parse::<Ipv4Net>().unwrap().contains(&addr));
    }
    let Some(pod) = pod_at(cluster, addr) else {
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        None => pod.key.namespace == policy_ns,
        Some(s) => selector(Some(s)).matches(&cluster.namespace_labels(&pod.key.namespace)),
    };
    namespace_ok && selector(peer.pod_selector.as_ref()).matches(&pod.labels)
}

fn port_matches(port: &NetworkPolicyPort, dest: Option<&PodInfo>, proto: u8, number: u16) -> bool {
    let protocol = Protocol::from_k8s(port.protocol.as_deref().unwrap_or("TCP")).unwrap();
    if protocol.number() != proto {
        return false;
    }
    match &port.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let last = port.end_port.unwrap_or(*n);
            (*n..=last).contains(&i32::from(number))
        }
        Some(IntOrString::String(name)) => dest.is_some_and(|pod| {
            pod.ports
                .iter()
                .any(|p| p.name == *name && p.protocol == protocol && p.port == number)
        }),
    }
}

/// One new flow as seen from a pod: the peer's address, the destination pod (for named ports),
/// protocol and destination port.
struct Flow<'a> {
    peer: Ipv4Addr,
    dest: Option<&'a PodInfo>,
    proto: u8,
    port: u16,
}

fn rule_matches(
    cluster: &Cluster,
    policy_ns: &str,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    flow: &Flow<'_>,
) -> bool {
    let Flow {
        peer,
        dest,
        proto,
        port,
    } = *flow;
    let peers_ok = match peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|p| peer_matches(cluster, policy_ns, p, peer)),
    };
    let ports_ok = match ports {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| port_matches(p, dest, proto, port)),
    };
    peers_ok && ports_ok
}

/// Whether `pod`'s `dir` policies allow talking with `peer` (destination pod `dest`).
fn direction_allows(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    pod: &PodInfo,
    dir: Dir,
    flow: &Flow<'_>,
) -> bool {
    let mut isolated = false;
    for policy in policies {
        let ns = policy.metadata.namespace.as_deref().unwrap();
        let spec = policy.spec.as_ref().unwrap();
        if ns != pod.key.namespace || !selector(spec.pod_selector.as_ref()).matches(&pod.labels) {
            continue;
        }
        let (ingress, egress) = policy_types(policy);
        let allowed = match dir {
            Dir::Ingress if ingress => spec
                .ingress
                .iter()
                .flatten()
                .any(|r| rule_matches(cluster, ns, r.from.as_ref(), r.ports.as_ref(), flow)),
            Dir::Egress if egress => spec
                .egress
                .iter()
                .flatten()
                .any(|r| rule_matches(cluster, ns, r.to.as_ref(), r.ports.as_ref(), flow)),
            _ => continue,
        };
        isolated = true;
        if allowed {
            return true;
        }
    }
    !isolated
}

fn reference_allows(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let src_pod = pod_at(cluster, src);
    let dst_pod = pod_at(cluster, dst);
    let to_dst = Flow {
        peer: dst,
        dest: dst_pod,
        proto,
        port,
    };
    let from_src = Flow {
        peer: src,
        dest: dst_pod,
        proto,
        port,
    };
    let egress_ok =
        src_pod.is_none_or(|p| direction_allows(cluster, policies, p, Dir::Egress, &to_dst));
    let ingress_ok =
        dst_pod.is_none_or(|p| direction_allows(cluster, policies, p, Dir::Ingress, &from_src));
    egress_ok && ingress_ok
}

fn as_k8s(cluster: &Cluster) -> Vec<NetworkPolicy> {
    cluster
        .policies()
        .map(|p| {
            let mut np = NetworkPolicy::default();
            np.metadata.namespace = Some(p.key.namespace.clone());
            np.metadata.name = Some(p.key.name.clone());
            np.spec = Some(p.spec.clone());
            np
        })
        .collect()
}

#[test]
fn compiled_tables_decide_every_flow_like_the_api_definition() {
    let mut rng = StdRng::seed_from_u64(2024);
    let probes: [(u8, u16); 8] = [
        (6, 80),
        (6, 8080),
        (6, 85),
        (6, 91),
        (17, 53),
        (17, 80),
        (132, 7),
        (1, 0),
    ];
    let (mut checked, mut denied) = (0usize, 0usize);
    for round in 0..400 {
        let cluster = random_cluster(&mut rng);
        let policies = as_k8s(&cluster);
        let local: Vec<_> = cluster
            .pods()
            .filter_map(|p| p.ip.map(|ip| (ip, Some(p.key.clone()))))
            .collect();
        let compiled = compile(&cluster, &local);
        assert!(
            compiled.problems.is_empty(),
            "generated policies are valid: {:?}",
            compiled.problems
        );
        let mut addresses: Vec<Ipv4Addr> = local.iter().map(|(ip, _)| *ip).collect();
        addresses.extend([Ipv4Addr::new(10, 0, 0, 15), Ipv4Addr::new(8, 8, 8, 8)]);
        for &src in &addresses {
            for &dst in &addresses {
                if src == dst {
                    continue;
                }
                for (proto, port) in probes {
                    let expected = reference_allows(&cluster, &policies, src, dst, proto, port);
                    let got = compiled.flow_allowed(src, dst, proto, port);
                    assert_eq!(
                        got, expected,
                        "round {round}: {src} -> {dst} proto {proto} port {port}\npolicies: {}\npods: {:#?}",
                        serde_json::to_string_pretty(&policies).unwrap(),
                        cluster.pods().collect::<Vec<_>>()
                    );
                    checked += 1;
                    denied += usize::from(!expected);
                }
            }
        }
    }
    assert!(checked > 10_000, "only {checked} flows checked");
    // Both verdicts must be common, or the comparison proves little.
    assert!(
        denied > checked / 10 && denied < checked * 9 / 10,
        "{denied} of {checked} denied"
    );
}
