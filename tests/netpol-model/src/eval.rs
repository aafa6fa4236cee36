// SPDX-License-Identifier: Apache-2.0
//! The semantics, one connection at a time, written from the networking.k8s.io/v1 API reference and
//! the "Network Policies" concept page, with nothing precomputed: every call scans every policy.
//!
//! A connection from A to B (protocol, destination port) is allowed iff
//! - A's egress allows it, when A is a pod, and
//! - B's ingress allows it, when B is a pod.
//!
//! For one pod and one direction (NetworkPolicySpec):
//! - the pod is *isolated* for that direction iff some policy in its namespace selects it
//!   (`spec.podSelector`) and lists the direction in its policy types; policyTypes, when absent,
//!   is `["Ingress"]`, plus `"Egress"` iff `spec.egress` has at least one rule;
//! - a pod that is not isolated allows everything ("Traffic is allowed … if there are no
//!   NetworkPolicies selecting the pod");
//! - an isolated pod allows the connection iff at least one rule of that direction, in any of the
//!   policies that select it for that direction, matches ("the traffic matches at least one …
//!   rule across all of the NetworkPolicy objects whose podSelector matches the pod").
//!
//! A rule matches iff its peers match (`from`/`to` absent or empty: any peer) AND its ports match
//! (`ports` absent or empty: every port of every protocol, ICMP included).
//!
//! Traffic from a pod's own node is always allowed by Kubernetes; the model does not represent
//! the node, and the tests do not probe from it.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use crate::{
    tiers::{self, Decision},
    world::{Endpoint, Pod, Proto, World},
};

/// A policy direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Whether `world`'s policies allow a new connection from `from` to `to` with `proto` to
/// destination `port` (ignored for ICMP).
pub fn allowed(
    world: &World,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> bool {
    let egress_ok = match from {
        Endpoint::Pod(pod) => direction_allows(world, pod, Direction::Egress, to, to, proto, port),
        Endpoint::Outside(_) => true,
    };
    let ingress_ok = match to {
        Endpoint::Pod(pod) => {
            direction_allows(world, pod, Direction::Ingress, from, to, proto, port)
        }
        Endpoint::Outside(_) => true,
    };
    egress_ok && ingress_ok
}

/// One side of [`allowed`]: does `subject`'s `direction` allow a connection whose other end is
/// `peer` and whose destination is `destination` (the peer for egress, the subject for ingress;
/// named ports are looked up on it)? The tiers in order ([`crate::tiers`]): the first Admin rule
/// that accepts or denies; else the NetworkPolicies, if they isolate the pod; else the first
/// Baseline rule that accepts or denies; else allowed.
pub fn direction_allows(
    world: &World,
    subject: &Pod,
    direction: Direction,
    peer: Endpoint<'_>,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> bool {
    let tier = |name| {
        tiers::tier_decision(
            world,
            name,
            subject,
            direction,
            peer,
            destination,
            proto,
            port,
        )
    };
    match tier("Admin") {
        Some(Decision::Accept) => return true,
        Some(Decision::Deny) => return false,
        Some(Decision::Pass) | None => {}
    }
    if let Some(verdict) = namespace_tier(world, subject, direction, peer, destination, proto, port)
    {
        return verdict;
    }
    tier("Baseline") != Some(Decision::Deny)
}

/// The NetworkPolicy tier alone: `None` when no policy isolates `subject` in `direction`, else
/// whether some rule of theirs allows the connection.
pub fn namespace_tier(
    world: &World,
    subject: &Pod,
    direction: Direction,
    peer: Endpoint<'_>,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> Option<bool> {
    let mut isolated = false;
    for policy in &world.policies {
        if !selects(policy, subject) || !has_type(policy, direction) {
            continue;
        }
        isolated = true;
        let namespace = policy_namespace(policy);
        for (peers, ports) in rules(policy, direction) {
            if peers_match(world, namespace, peers, peer)
                && ports_match(ports, destination, proto, port)
            {
                return Some(true);
            }
        }
    }
    isolated.then_some(false)
}

/// The namespace a policy lives in (`metadata.namespace`, `default` when unset).
pub fn policy_namespace(policy: &NetworkPolicy) -> &str {
    policy.metadata.namespace.as_deref().unwrap_or("default")
}

/// Does `policy` select `pod`? Same namespace, and `spec.podSelector` (absent: empty, i.e. every
/// pod) matches its labels.
pub fn selects(policy: &NetworkPolicy, pod: &Pod) -> bool {
    let selector = policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    pod.namespace == policy_namespace(policy)
        && selector.is_none_or(|s| selector_matches(s, &pod.labels))
}

/// The policy's effective policyTypes include `direction`.
pub fn has_type(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = policy.spec.as_ref() else {
        // No spec: an empty one; the default policyTypes are ["Ingress"].
        return direction == Direction::Ingress;
    };
    match &spec.policy_types {
        Some(types) => {
            let wanted = match direction {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            };
            types.iter().any(|t| t == wanted)
        }
        None => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
        },
    }
}

/// The rules of one direction, each as (peers, ports).
#[expect(clippy::type_complexity, reason = "a private pair of optional lists")]
fn rules(
    policy: &NetworkPolicy,
    direction: Direction,
) -> Vec<(
    Option<&Vec<NetworkPolicyPeer>>,
    Option<&Vec<NetworkPolicyPort>>,
)> {
    let Some(spec) = policy.spec.as_ref() else {
        return Vec::new();
    };
    match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    }
}

/// `from`/`to`: absent or empty matches every peer; otherwise any listed peer must match.
fn peers_match(
    world: &World,
    policy_namespace: &str,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    peer: Endpoint<'_>,
) -> bool {
    match peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|p| peer_matches(world, policy_namespace, p, peer)),
    }
}

/// One NetworkPolicyPeer:
/// - `ipBlock`: the endpoint's address (a pod's IP too) is in `cidr` and in none of `except`;
/// - `namespaceSelector` and `podSelector`: pods matching podSelector in namespaces matching
///   namespaceSelector;
/// - `namespaceSelector` alone: every pod in the matching namespaces;
/// - `podSelector` alone: matching pods in the policy's own namespace.
///
/// A peer with none of the three is rejected by API validation; the model lets it match nothing.
pub fn peer_matches(
    world: &World,
    policy_namespace: &str,
    peer: &NetworkPolicyPeer,
    endpoint: Endpoint<'_>,
) -> bool {
    if let Some(block) = &peer.ip_block {
        return ip_block_contains(block, endpoint.ip());
    }
    if peer.namespace_selector.is_none() && peer.pod_selector.is_none() {
        return false;
    }
    let Endpoint::Pod(pod) = endpoint else {
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        Some(selector) => selector_matches(selector, &world.namespace_labels(&pod.namespace)),
        None => pod.namespace == policy_namespace,
    };
    let pod_ok = match &peer.pod_selector {
        Some(selector) => selector_matches(selector, &pod.labels),
        None => true,
    };
    namespace_ok && pod_ok
}

/// `ports`: absent or empty matches everything (every protocol, ICMP included); otherwise some
/// entry must match, and ICMP never does, since an entry always names TCP, UDP or SCTP.
fn ports_match(
    ports: Option<&Vec<NetworkPolicyPort>>,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> bool {
    match ports {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|p| port_matches(p, destination, proto, port)),
    }
}

/// One NetworkPolicyPort: protocol (default TCP) must be the connection's; then
/// - no `port`: every port of that protocol;
/// - a number, no `endPort`: exactly that port;
/// - a number and `endPort`: `port..=endPort`;
/// - a name: a container port of the *destination* pod with that name and that protocol, whose
///   number is the connection's port. A destination that is not a pod has no named ports.
pub fn port_matches(
    entry: &NetworkPolicyPort,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> bool {
    if proto == Proto::Icmp {
        return false;
    }
    let entry_proto = entry.protocol.as_deref().unwrap_or("TCP");
    if entry_proto != proto.k8s_name() {
        return false;
    }
    match &entry.port {
        None => true,
        Some(IntOrString::Int(first)) => {
            let port = i32::from(port);
            match entry.end_port {
                None => port == *first,
                Some(last) => *first <= port && port <= last,
            }
        }
        Some(IntOrString::String(name)) => match destination {
            Endpoint::Pod(pod) => pod.ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name.as_str()) && cp.protocol == proto && cp.port == port
            }),
            Endpoint::Outside(_) => false,
        },
    }
}

/// A LabelSelector: every matchLabels pair and every matchExpressions requirement holds (an
/// empty selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!(
                "label selector operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
            ),
        }
    });
    labels_ok && expressions_ok
}

/// `ip` is in `block.cidr` and in none of `block.except`.
pub fn ip_block_contains(block: &IPBlock, ip: Ipv4Addr) -> bool {
    cidr_contains(&block.cidr, ip) && !block.except.iter().flatten().any(|e| cidr_contains(e, ip))
}

/// `ip` is inside `cidr` ("a.b.c.d/n"; host bits, if any, are ignored).
///
/// # Panics
/// On anything but an IPv4 CIDR: the worlds the model sees are IPv4-only.
pub fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let (net, len) = parse_cidr(cidr);
    let mask = prefix_mask(len);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Parses "a.b.c.d/n".
///
/// # Panics
/// On anything else.
pub fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let (addr, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr:?} is not a CIDR"));
    let addr: Ipv4Addr = addr
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?}: not an IPv4 address"));
    let len: u8 = len
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?}: bad prefix length"));
    assert!(len <= 32, "{cidr:?}: prefix length over 32");
    (addr, len)
}

/// The netmask of a prefix length, as a host-order u32.
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}
