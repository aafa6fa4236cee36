// SPDX-License-Identifier: Apache-2.0
//! Shrinking a world that exposes a disagreement to one a person can read: greedily take any
//! one-step simplification (drop a policy, a pod, a rule, a peer, a port entry, a label, a
//! selector term, an except block…) that still fails, until none does.
//!
//! Every simplification keeps the world valid for the API server (an `In` keeps at least one
//! value, a peer keeps at least one selector), but not necessarily its meaning: the caller's
//! predicate decides what "still fails" means.

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use crate::world::World;

/// The smallest world reachable from `world` by one-step simplifications that keep `fails` true.
/// `fails(world)` should hold on entry.
pub fn shrink(world: &World, mut fails: impl FnMut(&World) -> bool) -> World {
    let mut current = world.clone();
    'search: loop {
        for candidate in simplifications(&current) {
            if fails(&candidate) {
                current = candidate;
                continue 'search;
            }
        }
        return current;
    }
}

/// Every world one step simpler than `world`, biggest steps first.
pub fn simplifications(world: &World) -> Vec<World> {
    let mut out = Vec::new();
    for i in 0..world.policies.len() {
        let mut w = world.clone();
        w.policies.remove(i);
        out.push(w);
    }
    for i in 0..world.cluster_policies.len() {
        let mut w = world.clone();
        w.cluster_policies.remove(i);
        out.push(w);
    }
    // One rule, one peer or the protocols of a ClusterNetworkPolicy rule.
    for (i, policy) in world.cluster_policies.iter().enumerate() {
        for (list, peers_field) in [("ingress", "from"), ("egress", "to")] {
            let rules = policy["spec"][list].as_array().cloned().unwrap_or_default();
            for (j, rule) in rules.iter().enumerate() {
                let mut w = world.clone();
                if let Some(rules) = w.cluster_policies[i]["spec"][list].as_array_mut() {
                    rules.remove(j);
                }
                out.push(w);
                // A rule keeps at least one peer (the API requires one).
                let peers = rule[peers_field].as_array().map_or(0, Vec::len);
                for k in 0..peers {
                    if peers < 2 {
                        break;
                    }
                    let mut w = world.clone();
                    let list = &mut w.cluster_policies[i]["spec"][list][j][peers_field];
                    if let Some(peers) = list.as_array_mut() {
                        peers.remove(k);
                    }
                    out.push(w);
                }
                if rule.get("protocols").is_some() {
                    let mut w = world.clone();
                    if let Some(rule) = w.cluster_policies[i]["spec"][list][j].as_object_mut() {
                        rule.remove("protocols");
                    }
                    out.push(w);
                }
            }
        }
    }
    for i in 0..world.pods.len() {
        let mut w = world.clone();
        w.pods.remove(i);
        out.push(w);
    }
    for i in 0..world.outside.len() {
        let mut w = world.clone();
        w.outside.remove(i);
        out.push(w);
    }
    for (i, policy) in world.policies.iter().enumerate() {
        let Some(spec) = &policy.spec else { continue };
        for simpler in simplify_spec(spec) {
            let mut w = world.clone();
            w.policies[i].spec = Some(simpler);
            out.push(w);
        }
    }
    for (i, ns) in world.namespaces.iter().enumerate() {
        for key in ns.labels.keys() {
            let mut w = world.clone();
            w.namespaces[i].labels.remove(key);
            out.push(w);
        }
    }
    for (i, pod) in world.pods.iter().enumerate() {
        for key in pod.labels.keys() {
            let mut w = world.clone();
            w.pods[i].labels.remove(key);
            out.push(w);
        }
        for j in 0..pod.ports.len() {
            let mut w = world.clone();
            w.pods[i].ports.remove(j);
            out.push(w);
        }
    }
    // Namespaces nobody uses any more.
    for (i, ns) in world.namespaces.iter().enumerate() {
        let used = world.pods.iter().any(|p| p.namespace == ns.name)
            || world
                .policies
                .iter()
                .any(|p| p.metadata.namespace.as_deref() == Some(ns.name.as_str()));
        if !used {
            let mut w = world.clone();
            w.namespaces.remove(i);
            out.push(w);
        }
    }
    out
}

fn simplify_spec(spec: &NetworkPolicySpec) -> Vec<NetworkPolicySpec> {
    let mut out = Vec::new();
    for ingress in simplify_list(&spec.ingress, simplify_ingress_rule) {
        out.push(NetworkPolicySpec {
            ingress,
            ..spec.clone()
        });
    }
    for egress in simplify_list(&spec.egress, simplify_egress_rule) {
        out.push(NetworkPolicySpec {
            egress,
            ..spec.clone()
        });
    }
    if let Some(selector) = &spec.pod_selector {
        for simpler in simplify_selector(selector) {
            out.push(NetworkPolicySpec {
                pod_selector: Some(simpler),
                ..spec.clone()
            });
        }
        if *selector != LabelSelector::default() {
            out.push(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                ..spec.clone()
            });
        }
    }
    if let Some(types) = &spec.policy_types {
        if types.len() > 1 {
            for i in 0..types.len() {
                let mut fewer = types.clone();
                fewer.remove(i);
                out.push(NetworkPolicySpec {
                    policy_types: Some(fewer),
                    ..spec.clone()
                });
            }
        }
    }
    out
}

fn simplify_ingress_rule(rule: &NetworkPolicyIngressRule) -> Vec<NetworkPolicyIngressRule> {
    let mut out = Vec::new();
    for from in simplify_list(&rule.from, simplify_peer) {
        out.push(NetworkPolicyIngressRule {
            from,
            ..rule.clone()
        });
    }
    for ports in simplify_list(&rule.ports, simplify_port) {
        out.push(NetworkPolicyIngressRule {
            ports,
            ..rule.clone()
        });
    }
    out
}

fn simplify_egress_rule(rule: &NetworkPolicyEgressRule) -> Vec<NetworkPolicyEgressRule> {
    let mut out = Vec::new();
    for to in simplify_list(&rule.to, simplify_peer) {
        out.push(NetworkPolicyEgressRule { to, ..rule.clone() });
    }
    for ports in simplify_list(&rule.ports, simplify_port) {
        out.push(NetworkPolicyEgressRule {
            ports,
            ..rule.clone()
        });
    }
    out
}

/// A list: each item removed, each item simplified, and an empty list made absent.
fn simplify_list<T: Clone>(
    list: &Option<Vec<T>>,
    simplify: impl Fn(&T) -> Vec<T>,
) -> Vec<Option<Vec<T>>> {
    let mut out = Vec::new();
    let Some(items) = list else { return out };
    if items.is_empty() {
        out.push(None);
    }
    for i in 0..items.len() {
        let mut fewer = items.clone();
        fewer.remove(i);
        out.push(Some(fewer));
    }
    for (i, item) in items.iter().enumerate() {
        for simpler in simplify(item) {
            let mut changed = items.clone();
            changed[i] = simpler;
            out.push(Some(changed));
        }
    }
    out
}

fn simplify_peer(peer: &NetworkPolicyPeer) -> Vec<NetworkPolicyPeer> {
    let mut out = Vec::new();
    if peer.namespace_selector.is_some() && peer.pod_selector.is_some() {
        out.push(NetworkPolicyPeer {
            namespace_selector: None,
            ..peer.clone()
        });
        out.push(NetworkPolicyPeer {
            pod_selector: None,
            ..peer.clone()
        });
    }
    if let Some(selector) = &peer.namespace_selector {
        for simpler in simplify_selector(selector) {
            out.push(NetworkPolicyPeer {
                namespace_selector: Some(simpler),
                ..peer.clone()
            });
        }
    }
    if let Some(selector) = &peer.pod_selector {
        for simpler in simplify_selector(selector) {
            out.push(NetworkPolicyPeer {
                pod_selector: Some(simpler),
                ..peer.clone()
            });
        }
    }
    if let Some(block) = &peer.ip_block {
        for except in simplify_list(&block.except, |_| Vec::new()) {
            out.push(NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: block.cidr.clone(),
                    except,
                }),
                ..peer.clone()
            });
        }
    }
    out
}

fn simplify_port(port: &NetworkPolicyPort) -> Vec<NetworkPolicyPort> {
    let mut out = Vec::new();
    if port.end_port.is_some() {
        out.push(NetworkPolicyPort {
            end_port: None,
            ..port.clone()
        });
    }
    if port.protocol.as_deref() == Some("TCP") {
        out.push(NetworkPolicyPort {
            protocol: None,
            ..port.clone()
        });
    }
    out
}

fn simplify_selector(selector: &LabelSelector) -> Vec<LabelSelector> {
    let mut out = Vec::new();
    if let Some(labels) = &selector.match_labels {
        for key in labels.keys() {
            let mut fewer = labels.clone();
            fewer.remove(key);
            out.push(LabelSelector {
                match_labels: if fewer.is_empty() { None } else { Some(fewer) },
                ..selector.clone()
            });
        }
    }
    if let Some(requirements) = &selector.match_expressions {
        for i in 0..requirements.len() {
            let mut fewer = requirements.clone();
            fewer.remove(i);
            out.push(LabelSelector {
                match_expressions: if fewer.is_empty() { None } else { Some(fewer) },
                ..selector.clone()
            });
        }
        for (i, requirement) in requirements.iter().enumerate() {
            let values = requirement.values.as_deref().unwrap_or_default();
            if values.len() > 1 {
                for j in 0..values.len() {
                    let mut changed = requirements.clone();
                    changed[i].values.as_mut().expect("has values").remove(j);
                    out.push(LabelSelector {
                        match_expressions: Some(changed),
                        ..selector.clone()
                    });
                }
            }
        }
    }
    out
}
