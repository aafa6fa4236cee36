//! Routing between nodes, planned from the model: which prefixes go to which other node. Pure; the
//! daemon writes the plan into `WEIR_REMOTES` and the kernel's routes (`daemon/routes.rs`).

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weir_agent_api::Routing;
use weir_policy::model::NodeInfo;

/// What the agent programs for the other nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemotePlan {
    /// Prefix → the node address packets for it go to: every other node's pod CIDRs and, with
    /// VXLAN, every other node's own address as a /32 (so that pods' traffic to a node, and replies
    /// to a node's traffic, cross the tunnel both ways: the underlay may not carry pod addresses).
    pub entries: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// The pod CIDRs the host stack must route to `weir0` (node-originated and Service traffic).
    pub kernel_routes: Vec<Ipv4Net>,
    /// Nodes left out, and why: logged by the agent.
    pub skipped: Vec<String>,
}

impl RemotePlan {
    /// The other nodes' addresses (on the uplink's segment, or the tunnel's underlay).
    pub fn node_addresses(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        self.entries.values().copied().collect()
    }
}

/// Plan routes to every node but `local`, whose pod CIDR is `local_cidr`. A node without an
/// address or pod CIDR cannot be routed to yet; a CIDR that overlaps this node's, or another
/// node's already taken (by name order), is left out rather than stealing traffic.
pub fn plan<'a>(
    local: &str,
    local_cidr: Ipv4Net,
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
    routing: Routing,
) -> RemotePlan {
    let mut plan = RemotePlan::default();
    let nodes: Vec<&NodeInfo> = nodes.into_iter().collect();
    // The agent allocates from its own --pod-cidr; a Node object saying otherwise means other nodes
    // route this node's pods somewhere else.
    if let Some(me) = nodes.iter().find(|n| n.name == local) {
        if !me.pod_cidrs.is_empty() && !me.pod_cidrs.contains(&local_cidr) {
            plan.skipped.push(format!(
                "this node: its Node object gives pod CIDR(s) {:?}, but it allocates from {local_cidr}; other nodes will not reach its pods",
                me.pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
        }
    }
    let mut nodes: Vec<&NodeInfo> = nodes.into_iter().filter(|n| n.name != local).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut taken: Vec<(Ipv4Net, &str)> = vec![(local_cidr, local)];
    for node in nodes {
        let Some(ip) = node.ip else {
            plan.skipped.push(format!(
                "node {} has no IPv4 address yet: not routed to",
                node.name
            ));
            continue;
        };
        if node.pod_cidrs.is_empty() {
            plan.skipped.push(format!(
                "node {} has no IPv4 pod CIDR yet: not routed to",
                node.name
            ));
        }
        for &cidr in &node.pod_cidrs {
            let overlap = taken
                .iter()
                .find(|(other, _)| other.contains(&cidr) || cidr.contains(other));
            if let Some((other, owner)) = overlap {
                plan.skipped.push(format!(
                    "node {}: pod CIDR {cidr} overlaps {other} of node {owner}: not routed to",
                    node.name
                ));
                continue;
            }
            taken.push((cidr, &node.name));
            plan.entries.insert(cidr, ip);
            plan.kernel_routes.push(cidr);
        }
        if routing == Routing::Vxlan {
            let host = Ipv4Net::from(ip);
            if !local_cidr.contains(&ip) {
                plan.entries.entry(host).or_insert(ip);
            }
        }
    }
    plan.kernel_routes.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: Option<[u8; 4]>, cidrs: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ip: ip.map(Ipv4Addr::from),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            addresses: ip.map(Ipv4Addr::from).into_iter().collect(),
            labels: Default::default(),
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn native_routes_every_other_nodes_pod_cidrs_to_its_address() {
        let nodes = [
            node("n1", Some([192, 0, 2, 11]), &["10.244.1.0/24"]),
            node("n2", Some([192, 0, 2, 12]), &["10.244.2.0/24"]),
            node(
                "n3",
                Some([192, 0, 2, 13]),
                &["10.244.3.0/24", "10.245.3.0/24"],
            ),
        ];
        let plan = plan("n1", net("10.244.1.0/24"), &nodes, Routing::Native);
        let entries: Vec<_> = plan.entries.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            entries,
            vec![
                (net("10.244.2.0/24"), Ipv4Addr::new(192, 0, 2, 12)),
                (net("10.244.3.0/24"), Ipv4Addr::new(192, 0, 2, 13)),
                (net("10.245.3.0/24"), Ipv4Addr::new(192, 0, 2, 13)),
            ]
        );
        assert_eq!(
            plan.kernel_routes,
            vec![
                net("10.244.2.0/24"),
                net("10.244.3.0/24"),
                net("10.245.3.0/24")
            ]
        );
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn vxlan_also_tunnels_to_each_other_nodes_own_address() {
        let nodes = [
            node("n1", Some([192, 0, 2, 11]), &["10.244.1.0/24"]),
            node("n2", Some([192, 0, 2, 12]), &["10.244.2.0/24"]),
        ];
        let plan = plan("n1", net("10.244.1.0/24"), &nodes, Routing::Vxlan);
        assert_eq!(
            plan.entries.get(&net("192.0.2.12/32")),
            Some(&Ipv4Addr::new(192, 0, 2, 12))
        );
        assert!(!plan.entries.contains_key(&net("192.0.2.11/32")));
        // The kernel needs no route to a node address: the underlay has one.
        assert_eq!(plan.kernel_routes, vec![net("10.244.2.0/24")]);
    }

    #[test]
    fn nodes_without_address_or_cidr_and_overlapping_cidrs_are_skipped_with_a_reason() {
        let nodes = [
            node("a-no-ip", None, &["10.244.9.0/24"]),
            node("b-no-cidr", Some([192, 0, 2, 20]), &[]),
            node("c-steals-mine", Some([192, 0, 2, 21]), &["10.244.1.0/25"]),
            node("d", Some([192, 0, 2, 22]), &["10.244.4.0/24"]),
            node("e-steals-d", Some([192, 0, 2, 23]), &["10.244.4.0/23"]),
        ];
        let plan = plan("me", net("10.244.1.0/24"), &nodes, Routing::Native);
        let routed: Vec<_> = plan.entries.keys().copied().collect();
        assert_eq!(routed, vec![net("10.244.4.0/24")]);
        assert_eq!(plan.skipped.len(), 4, "{:?}", plan.skipped);
        assert!(plan.skipped[2].contains("overlaps 10.244.1.0/24 of node me"));
        assert!(plan.skipped[3].contains("of node d"));
    }

    #[test]
    fn the_local_node_is_never_a_remote() {
        let nodes = [node("me", Some([192, 0, 2, 11]), &["10.244.1.0/24"])];
        let plan = plan("me", net("10.244.1.0/24"), &nodes, Routing::Vxlan);
        assert_eq!(plan, RemotePlan::default());
    }

    #[test]
    fn a_local_node_object_with_another_pod_cidr_is_reported() {
        let nodes = [node("me", Some([192, 0, 2, 11]), &["10.244.7.0/24"])];
        let plan = plan("me", net("10.244.1.0/24"), &nodes, Routing::Native);
        assert!(plan.entries.is_empty());
        assert_eq!(plan.skipped.len(), 1);
        assert!(plan.skipped[0].contains("allocates from 10.244.1.0/24"));
    }
}
