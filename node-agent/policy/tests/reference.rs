//! Random clusters and policies: the compiled tables must decide every flow exactly as a direct,
//! rule-by-rule reading of the NetworkPolicy API does.

mod common;

use std::net::Ipv4Addr;

use common::{all_local, random_world};
use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use rand::{rngs::StdRng, SeedableRng};
use weir_policy::{
    compile::compile,
    model::{Cluster, PodInfo, Protocol},
    selector::Selector,
};

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
        let (cluster, policies) = random_world(&mut rng);
        let local = all_local(&cluster);
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
