// SPDX-License-Identifier: Apache-2.0
//! The two large rulesets, built the same way so that they compare: `rules` rules of which the
//! last one lets the measured flow through and every other one matches nothing the bench sends.
//!
//! - Weir: one NetworkPolicy selecting the server pod with `rules` ingress rules: `rules - 1`
//!   fillers, each allowing one address of 172.16.0.0/12 on its own port (so the compiled maps get
//!   one peer entry and one port set per filler), then one rule allowing the client pod by label on
//!   the benchmark ports.
//! - iptables: in the router's FORWARD chain, `rules - 1` fillers dropping TCP to port 80 from one
//!   address of 172.16.0.0/12 each, then `-j ACCEPT`. Every packet, both directions, walks the
//!   whole chain: the classic linear cost.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Filler peers come from here (2^20 addresses; nothing in any topology uses it).
const FILLER_BASE: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 0);
/// Filler `i` allows its peer on port `FILLER_FIRST_PORT + i`.
const FILLER_FIRST_PORT: u16 = 10_000;
/// Most rules a ruleset may have (fillers need distinct ports above `FILLER_FIRST_PORT`).
pub const MAX_RULES: u32 = 50_000;

/// The address of filler `i` (`i < 2^20`).
pub fn filler_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FILLER_BASE) + i)
}

fn filler_port(i: u32) -> u16 {
    let offset = u16::try_from(i).expect("fewer fillers than MAX_RULES");
    FILLER_FIRST_PORT + offset
}

/// Who the Weir policy is about.
#[derive(Clone, Debug)]
pub struct PolicySpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// `(key, value)` of the label selecting the server pod.
    pub server_label: (&'a str, &'a str),
    /// `(key, value)` of the label selecting the client pod.
    pub client_label: (&'a str, &'a str),
    /// TCP ports the client is allowed to reach.
    pub client_ports: &'a [u16],
    /// Total rules, the client's included (at least 1).
    pub rules: u32,
}

/// The NetworkPolicy, as a JSON document (which is also YAML).
pub fn network_policy(spec: &PolicySpec<'_>) -> Value {
    let label = |(k, v): (&str, &str)| json!({ "matchLabels": { k: v } });
    let fillers = (0..spec.rules.saturating_sub(1)).map(|i| {
        json!({
            "from": [{ "ipBlock": { "cidr": format!("{}/32", filler_ip(i)) } }],
            "ports": [{ "protocol": "TCP", "port": filler_port(i) }],
        })
    });
    let client = json!({
        "from": [{ "podSelector": label(spec.client_label) }],
        "ports": spec.client_ports.iter()
            .map(|port| json!({ "protocol": "TCP", "port": port }))
            .collect::<Vec<_>>(),
    });
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": spec.name, "namespace": spec.namespace },
        "spec": {
            "podSelector": label(spec.server_label),
            "policyTypes": ["Ingress"],
            "ingress": fillers.chain([client]).collect::<Vec<_>>(),
        },
    })
}

/// `count` ClusterNetworkPolicies (even: Admin, odd: Baseline; alternately Deny and Pass, each
/// on its own port, from the pods labelled `bystander_label`: ingress peers are pods or
/// namespaces) and `count` NetworkPolicies (each allowing one filler address, plus one allowing
/// the client on its ports), all applying to the server: the tiers at scale, in one `kind: List`
/// document. The measured flow is decided in the NetworkPolicy tier, after the Admin tier.
pub fn tiered_policies(spec: &PolicySpec<'_>, bystander_label: (&str, &str), count: u32) -> Value {
    let label = |(k, v): (&str, &str)| json!({ "matchLabels": { k: v } });
    let mut items = Vec::new();
    for i in 0..count {
        let filler = |n: u32| format!("{}/32", filler_ip(n));
        items.push(json!({
            "apiVersion": "policy.networking.k8s.io/v1beta1",
            "kind": "ClusterNetworkPolicy",
            "metadata": { "name": format!("{}-c{i}", spec.name) },
            "spec": {
                "tier": if i % 2 == 0 { "Admin" } else { "Baseline" },
                "priority": i % 1000,
                "subject": { "pods": { "namespaceSelector": {}, "podSelector": label(spec.server_label) } },
                "ingress": [{
                    "action": if i % 4 < 2 { "Deny" } else { "Pass" },
                    "from": [{ "pods": {
                        "namespaceSelector": {},
                        "podSelector": label(bystander_label),
                    } }],
                    "protocols": [{ "tcp": { "destinationPort": { "number": filler_port(i) } } }],
                }],
            },
        }));
        items.push(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": format!("{}-n{i}", spec.name), "namespace": spec.namespace },
            "spec": {
                "podSelector": label(spec.server_label),
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{ "ipBlock": { "cidr": filler(count + i) } }],
                    "ports": [{ "protocol": "TCP", "port": filler_port(count + i) }],
                }],
            },
        }));
    }
    items.push(network_policy(&PolicySpec {
        rules: 1,
        ..spec.clone()
    }));
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// An `iptables-restore` input for the filter table: `rules - 1` fillers in FORWARD, then ACCEPT
/// (`rules` = 1: just the ACCEPT).
pub fn iptables_ruleset(rules: u32) -> String {
    let mut out =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..rules.saturating_sub(1) {
        out.push_str(&format!(
            "-A FORWARD -s {}/32 -p tcp -m tcp --dport 80 -j DROP\n",
            filler_ip(i)
        ));
    }
    out.push_str("-A FORWARD -j ACCEPT\nCOMMIT\n");
    out
}

/// How many rules the FORWARD chain holds, from `iptables-save` output.
pub fn count_forward_rules(saved: &str) -> usize {
    saved
        .lines()
        .filter(|l| l.starts_with("-A FORWARD "))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rules: u32) -> PolicySpec<'static> {
        PolicySpec {
            name: "bench-10k",
            namespace: "bench",
            server_label: ("app", "server"),
            client_label: ("role", "client"),
            client_ports: &[80, 5201],
            rules,
        }
    }

    #[test]
    fn tiered_policies_are_both_tiers_and_namespace_policies_then_the_client() {
        let doc = tiered_policies(&spec(1), ("role", "bystander"), 4);
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 9);
        let tiers: Vec<&str> = items
            .iter()
            .filter(|i| i["kind"] == "ClusterNetworkPolicy")
            .map(|i| i["spec"]["tier"].as_str().unwrap())
            .collect();
        assert_eq!(tiers, ["Admin", "Baseline", "Admin", "Baseline"]);
        assert_eq!(
            items[0]["spec"]["ingress"][0]["from"][0]["pods"]["podSelector"]["matchLabels"]["role"],
            "bystander"
        );
        assert_eq!(
            items[1]["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
            "172.16.0.4/32"
        );
        assert_eq!(
            items[8]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["role"],
            "client"
        );
    }

    #[test]
    fn policy_has_the_fillers_then_the_client_rule() {
        let doc = network_policy(&spec(10_000));
        let ingress = doc["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 10_000);
        assert_eq!(
            ingress[0],
            json!({"from": [{"ipBlock": {"cidr": "172.16.0.0/32"}}],
                   "ports": [{"protocol": "TCP", "port": 10000}]})
        );
        assert_eq!(
            ingress[9_998]["from"][0]["ipBlock"]["cidr"],
            "172.16.39.14/32"
        );
        assert_eq!(ingress[9_998]["ports"][0]["port"], 19_998);
        assert_eq!(
            ingress[9_999],
            json!({"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                   "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 5201}]})
        );
        assert_eq!(doc["spec"]["podSelector"]["matchLabels"]["app"], "server");
        assert_eq!(doc["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(
            doc["metadata"],
            json!({"name": "bench-10k", "namespace": "bench"})
        );
    }

    #[test]
    fn policy_of_one_rule_is_the_client_rule() {
        let doc = network_policy(&spec(1));
        let ingress = doc["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1);
        assert!(ingress[0]["from"][0].get("podSelector").is_some());
    }

    #[test]
    fn fillers_are_distinct_up_to_the_limit() {
        let last = MAX_RULES - 2;
        assert_ne!(filler_ip(last), filler_ip(last - 1));
        assert!(filler_port(last) > filler_port(last - 1));
    }

    #[test]
    fn iptables_ruleset_ends_in_accept_and_counts() {
        assert_eq!(
            iptables_ruleset(1),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -j ACCEPT\nCOMMIT\n"
        );
        let big = iptables_ruleset(10_000);
        assert_eq!(count_forward_rules(&big), 10_000);
        assert!(big.contains("-A FORWARD -s 172.16.39.14/32 -p tcp -m tcp --dport 80 -j DROP\n"));
        assert!(big.ends_with("-A FORWARD -j ACCEPT\nCOMMIT\n"));
    }
}
