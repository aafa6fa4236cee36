// SPDX-License-Identifier: Apache-2.0
//! ClusterNetworkPolicy (`policy.networking.k8s.io`, sigs.k8s.io/network-policy-api v0.3.0), read
//! from the API's own documentation, one connection at a time. The objects are kept as JSON and
//! read field by field; nothing is checked or precomputed.
//!
//! For one pod and one direction:
//! - a policy applies when its `spec.subject` selects the pod (`namespaces`: its namespace's
//!   labels; `pods`: namespace labels and pod labels) — "CNPs with no ingress rules do not affect
//!   ingress traffic", and likewise for egress;
//! - tiers come in order: `Admin`, then the NetworkPolicy tier, then `Baseline`. Within a tier,
//!   policies by `spec.priority`, lower first ("the implementation can apply any of the matching
//!   policies" when two share a priority: the model takes them by name, as Weir documents), and
//!   each policy's rules in the order written;
//! - the first rule whose peers and protocols match decides: `Accept` allows, `Deny` denies,
//!   `Pass` "skips all further ClusterNetworkPolicy rules in the current tier";
//! - "v1.NetworkPolicy always makes a final decision for selected pods": when a NetworkPolicy
//!   isolates the pod in that direction, it decides whatever Admin left; otherwise Baseline does;
//!   "if a given connection wasn't allowed or denied by any of the tiers", it is allowed.
//!
//! Peers: `namespaces` (pods in namespaces whose labels match), `pods` (namespace and pod labels),
//! `networks` (the address is in one of the CIDRs, pods included; IPv6 CIDRs match no IPv4
//! address), `nodes` (node addresses: the model's worlds have no nodes, so none), `domainNames`
//! (not an address: by the API's fail-closed rule, a rule holding a peer that cannot be honoured
//! matches nothing if it is an `Accept`, and denies everything if it is a `Deny` or `Pass`).
//! Protocols: absent, every protocol and port (ICMP too); otherwise any entry: `tcp`/`udp`/`sctp`
//! with `destinationPort.number` or `destinationPort.range` [start, end], or
//! `destinationNamedPort`, a container port name of the destination pod (with its protocol).

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::{
    eval::{cidr_contains, selector_matches, Direction},
    world::{Endpoint, Pod, Proto, World},
};

/// What a ClusterNetworkPolicy rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Deny,
    Pass,
}

/// The first rule of `tier` ("Admin" or "Baseline") deciding the connection for `subject` in
/// `direction` (`peer`: the other end; `destination`: where named ports are looked up).
#[allow(clippy::too_many_arguments)]
pub fn tier_decision(
    world: &World,
    tier: &str,
    subject: &Pod,
    direction: Direction,
    peer: Endpoint<'_>,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> Option<Decision> {
    let mut policies: Vec<&Value> = world
        .cluster_policies
        .iter()
        .filter(|p| p["spec"]["tier"] == tier)
        .collect();
    policies.sort_by_key(|p| {
        (
            p["spec"]["priority"].as_i64().unwrap_or(0),
            p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    });
    let (list, peers_field) = match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    for policy in policies {
        if !subject_selects(world, &policy["spec"]["subject"], subject) {
            continue;
        }
        for rule in policy["spec"][list].as_array().into_iter().flatten() {
            let decision = match rule["action"].as_str() {
                Some("Accept") => Decision::Accept,
                Some("Deny") => Decision::Deny,
                _ => Decision::Pass,
            };
            let peers = rule[peers_field].as_array().cloned().unwrap_or_default();
            if peers.iter().any(|p| p.get("domainNames").is_some()) {
                if decision == Decision::Accept {
                    continue;
                }
                return Some(Decision::Deny);
            }
            let peer_matches = peers.iter().any(|p| peer_covers(world, p, peer));
            if peer_matches && protocols_match(rule.get("protocols"), destination, proto, port) {
                return Some(decision);
            }
        }
    }
    None
}

fn selector(value: &Value) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

fn subject_selects(world: &World, subject: &Value, pod: &Pod) -> bool {
    if let Some(namespaces) = subject.get("namespaces") {
        return selector_matches(
            &selector(namespaces),
            &world.namespace_labels(&pod.namespace),
        );
    }
    let pods = &subject["pods"];
    selector_matches(
        &selector(&pods["namespaceSelector"]),
        &world.namespace_labels(&pod.namespace),
    ) && selector_matches(&selector(&pods["podSelector"]), &pod.labels)
}

fn peer_covers(world: &World, peer: &Value, endpoint: Endpoint<'_>) -> bool {
    if let Some(namespaces) = peer.get("namespaces") {
        return endpoint.pod().is_some_and(|pod| {
            selector_matches(
                &selector(namespaces),
                &world.namespace_labels(&pod.namespace),
            )
        });
    }
    if let Some(pods) = peer.get("pods") {
        return endpoint.pod().is_some_and(|pod| {
            selector_matches(
                &selector(&pods["namespaceSelector"]),
                &world.namespace_labels(&pod.namespace),
            ) && selector_matches(&selector(&pods["podSelector"]), &pod.labels)
        });
    }
    if let Some(networks) = peer.get("networks") {
        let ip: Ipv4Addr = endpoint.ip();
        return networks.as_array().into_iter().flatten().any(|n| {
            n.as_str()
                .is_some_and(|cidr| !cidr.contains(':') && cidr_contains(cidr, ip))
        });
    }
    // `nodes`: no nodes in the model's worlds.
    false
}

fn protocols_match(
    protocols: Option<&Value>,
    destination: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> bool {
    let Some(protocols) = protocols.and_then(Value::as_array) else {
        return true;
    };
    protocols.iter().any(|entry| {
        for (field, p) in [
            ("tcp", Proto::Tcp),
            ("udp", Proto::Udp),
            ("sctp", Proto::Sctp),
        ] {
            if let Some(m) = entry.get(field) {
                let d = &m["destinationPort"];
                let (first, last) = match d.get("number") {
                    Some(n) => (n.as_u64().unwrap_or(0), n.as_u64().unwrap_or(0)),
                    None => (
                        d["range"]["start"].as_u64().unwrap_or(1),
                        d["range"]["end"].as_u64().unwrap_or(0),
                    ),
                };
                return proto == p && (first..=last).contains(&u64::from(port));
            }
        }
        let Some(name) = entry["destinationNamedPort"].as_str() else {
            return false;
        };
        destination.pod().is_some_and(|pod| {
            pod.ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name) && cp.port == port && cp.protocol == proto
            })
        })
    })
}
