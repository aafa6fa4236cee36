//! Why a flow is allowed or denied: the policies isolating an endpoint and the rules admitting a
//! peer, for flow events and the `explain` command.
//!
//! [`Incremental::explain`] answers from the state the last [`Incremental::compile`] left: the same
//! selection ([`Incremental::isolating`]), the same selector scopes and the same named-port
//! resolution the tables were built from, evaluated for one peer instead of turned into a table.
//! A rule admits a peer, protocol and port exactly when its entries in the table would allow them:
//!
//! - its addresses (every one when it has no peers, else its ipBlocks minus their excepts) and the
//!   pods its selectors match, with its numeric ports (any protocol and port when it has none);
//! - plus its named ports: for ingress resolved against the local pod, for egress against each
//!   destination pod at the peer's address that the rule covers (selected, or inside its addresses).
//!
//! The differential tests (`tests/explain.rs`) hold `explain(..).allows()` equal to the compiled
//! table's verdict.

use std::{fmt, net::Ipv4Addr};

use super::{
    incremental::{named_ports_allow, Chosen, Isolation, NamespaceTier, TableKey},
    policy::{block_contains, Rule},
    tiers::{Action, Tier},
    Direction, Incremental,
};
use crate::{
    cluster_policy::ClusterRule,
    model::{NamedPort, PodInfo, PodKey, PolicyKey},
};

/// A rule of a ClusterNetworkPolicy that decided a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterRuleRef {
    pub tier: Tier,
    pub policy: String,
    pub direction: Direction,
    /// Its position in the policy's ingress or egress list, as written.
    pub index: usize,
    /// Its `name`, when it has one.
    pub name: Option<String>,
    pub action: Action,
}

/// `Admin deny-metadata egress[0] (block-imds): Deny`.
impl fmt::Display for ClusterRuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        write!(f, "{:?} {} {list}[{}]", self.tier, self.policy, self.index)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, ": {:?}", self.action)
    }
}

/// A rule of a policy: `index` is its position in the policy's ingress or egress list, as written
/// (invalid rules, which the compiler drops, still count).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub direction: Direction,
    pub index: usize,
}

/// `prod/web ingress[2]`.
impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        write!(f, "{} {list}[{}]", self.policy, self.index)
    }
}

/// Why one direction of one endpoint allows or denies a new flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionVerdict {
    /// No policy selects the pod for this direction: allowed.
    Unisolated,
    /// Isolated by `isolated_by` (sorted), and these rules (every one that admits the flow,
    /// sorted) allow it.
    Allowed {
        isolated_by: Vec<PolicyKey>,
        rules: Vec<RuleRef>,
    },
    /// Isolated by `isolated_by` (sorted), and no rule of theirs admits this peer, protocol and
    /// port.
    Denied { isolated_by: Vec<PolicyKey> },
    /// Isolated and failed closed: `because` (sorted) names the policies that cannot be enforced
    /// (invalid selector or policy types, or left out for lack of map room), or is empty when the
    /// endpoint's pod is not known yet (its labels are unknown, so every policy of its namespace
    /// that isolates this direction is in `isolated_by`).
    FailClosed {
        isolated_by: Vec<PolicyKey>,
        because: Vec<PolicyKey>,
    },
    /// A ClusterNetworkPolicy rule decided: `Accept` or `Deny` in the Admin tier (before any
    /// NetworkPolicy), or in the Baseline tier (no NetworkPolicy isolates the pod).
    Cluster { rule: ClusterRuleRef },
}

impl DirectionVerdict {
    /// Whether the flow is allowed in this direction.
    pub fn allows(&self) -> bool {
        match self {
            DirectionVerdict::Unisolated | DirectionVerdict::Allowed { .. } => true,
            DirectionVerdict::Denied { .. } | DirectionVerdict::FailClosed { .. } => false,
            DirectionVerdict::Cluster { rule } => rule.action == Action::Accept,
        }
    }

    /// The policies isolating the endpoint in this direction (empty when unisolated).
    pub fn isolating(&self) -> &[PolicyKey] {
        match self {
            DirectionVerdict::Unisolated | DirectionVerdict::Cluster { .. } => &[],
            DirectionVerdict::Allowed { isolated_by, .. }
            | DirectionVerdict::Denied { isolated_by }
            | DirectionVerdict::FailClosed { isolated_by, .. } => isolated_by,
        }
    }
}

impl Incremental {
    /// Why the last compilation allows or denies a new flow in `direction` of the local endpoint
    /// `endpoint` with `peer` (the source for ingress, the destination for egress), IP protocol
    /// number `proto` and destination port `port`; `None` when `endpoint` was not a local endpoint
    /// of the last compilation.
    ///
    /// Computed afresh from the kept state (nothing is cached): the cost is a walk over the rules
    /// of the policies selecting the endpoint and the pods at `peer`'s address.
    pub fn explain(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<DirectionVerdict> {
        let state = self.endpoints.get(&endpoint)?;
        let d = direction.index();
        let peer_pods: Vec<&PodInfo> = self.pods_at(peer).collect();
        if let (Chosen::Table(table), Some(_)) = (&state.chosen[d], &state.key) {
            if !table.cluster.is_empty() {
                return Some(self.explain_tiers(
                    endpoint,
                    table,
                    direction,
                    &peer_pods,
                    (peer, proto, port),
                ));
            }
        }
        let verdict = match (&state.chosen[d], &state.key) {
            (Chosen::Unisolated, _) => DirectionVerdict::Unisolated,
            // Only an endpoint with a pod key is ever isolated.
            (_, None) => DirectionVerdict::Unisolated,
            (Chosen::FailClosed, Some(_)) => self.explain_fail_closed(endpoint, direction),
            (Chosen::Table(table), Some(_)) => {
                self.explain_namespace_tier(table, direction, &peer_pods, (peer, proto, port))
            }
        };
        Some(verdict)
    }

    /// The policies failing an endpoint direction closed.
    fn explain_fail_closed(&self, endpoint: Ipv4Addr, direction: Direction) -> DirectionVerdict {
        let mut isolated_by = Vec::new();
        let mut because = Vec::new();
        if let Some(state) = self.endpoints.get(&endpoint) {
            if let Some(key) = &state.key {
                self.isolating(key, state.pod.as_deref(), |id, d, how| {
                    if d != direction {
                        return;
                    }
                    let policy = self.policy(id).key();
                    isolated_by.push(policy.clone());
                    if how == Isolation::Unenforceable {
                        because.push(policy.clone());
                    }
                });
            }
        }
        DirectionVerdict::FailClosed {
            isolated_by,
            because,
        }
    }

    /// Tiers in order: the first Admin rule covering the flow that accepts or denies decides; a
    /// `Pass` (or no rule) goes on to the NetworkPolicy tier, which decides if it isolates the
    /// pod; else the first Baseline rule that accepts or denies; else allowed.
    fn explain_tiers(
        &self,
        endpoint: Ipv4Addr,
        table: &TableKey,
        direction: Direction,
        peer_pods: &[&PodInfo],
        flow: (Ipv4Addr, u8, u16),
    ) -> DirectionVerdict {
        let local_ports = table.ports.as_deref().unwrap_or_default();
        let first_match = |tier: Tier| -> Option<ClusterRuleRef> {
            for &i in &table.cluster {
                let policy = &self.cluster[i as usize];
                if policy.tier != tier {
                    continue;
                }
                for rule in &policy.rules[direction.index()] {
                    if self.cluster_rule_admits(rule, direction, local_ports, peer_pods, flow) {
                        return Some(ClusterRuleRef {
                            tier,
                            policy: policy.name.clone(),
                            direction,
                            index: rule.index as usize,
                            name: rule.name.clone(),
                            action: rule.action,
                        });
                    }
                }
            }
            None
        };
        if let Some(rule) = first_match(Tier::Admin).filter(|r| r.action != Action::Pass) {
            return DirectionVerdict::Cluster { rule };
        }
        match table.namespace_tier {
            NamespaceTier::Isolated => {
                self.explain_namespace_tier(table, direction, peer_pods, flow)
            }
            NamespaceTier::FailClosed => self.explain_fail_closed(endpoint, direction),
            NamespaceTier::Unisolated => match first_match(Tier::Baseline) {
                Some(rule) if rule.action != Action::Pass => DirectionVerdict::Cluster { rule },
                _ => DirectionVerdict::Unisolated,
            },
        }
    }

    /// Whether a ClusterNetworkPolicy rule covers a flow: what its blocks in
    /// `cluster_rule_blocks` give the peer's address and the port.
    fn cluster_rule_admits(
        &self,
        rule: &ClusterRule,
        direction: Direction,
        local_ports: &[NamedPort],
        peer_pods: &[&PodInfo],
        (peer, proto, port): (Ipv4Addr, u8, u16),
    ) -> bool {
        let by_address = rule.peers.all
            || rule.peers.networks.iter().any(|n| n.contains(&peer))
            || rule.peers.nodes.iter().any(|selector| {
                self.node_addresses().any(|(labels, addresses)| {
                    selector.matches(labels) && addresses.contains(&peer)
                })
            });
        if by_address && rule.ports.numeric.allows(proto, port) {
            return true;
        }
        peer_pods.iter().any(|pod| {
            let selected = rule
                .peers
                .pods
                .iter()
                .any(|p| self.peer_selects("", p, pod));
            if !selected {
                return false;
            }
            if rule.ports.numeric.allows(proto, port) {
                return true;
            }
            let named_against = match direction {
                Direction::Ingress => local_ports,
                Direction::Egress => &pod.ports[..],
            };
            named_ports_allow(&rule.ports, named_against, proto, port)
        })
    }

    /// The NetworkPolicy tier of an isolated endpoint direction: the rules admitting the flow.
    fn explain_namespace_tier(
        &self,
        table: &TableKey,
        direction: Direction,
        peer_pods: &[&PodInfo],
        (peer, proto, port): (Ipv4Addr, u8, u16),
    ) -> DirectionVerdict {
        let d = direction.index();
        {
            {
                let local_ports = table.ports.as_deref().unwrap_or_default();
                let mut isolated_by = Vec::with_capacity(table.policies.len());
                let mut rules = Vec::new();
                for &id in &table.policies {
                    let policy = self.policy(id);
                    isolated_by.push(policy.key().clone());
                    let namespace = policy.key().namespace.as_str();
                    for rule in &policy.parsed.rules[d] {
                        let admits = self.admits(
                            rule,
                            namespace,
                            direction,
                            local_ports,
                            peer_pods,
                            (peer, proto, port),
                        );
                        if admits {
                            rules.push(RuleRef {
                                policy: policy.key().clone(),
                                direction,
                                index: rule.index as usize,
                            });
                        }
                    }
                }
                if rules.is_empty() {
                    DirectionVerdict::Denied { isolated_by }
                } else {
                    DirectionVerdict::Allowed { isolated_by, rules }
                }
            }
        }
    }

    /// Whether one rule of a policy in `namespace` admits a flow with the peer at `peer_pods`'
    /// address: what the rule's blocks in `build_table` (`push_uniform`, `push_per_destination`)
    /// give that address.
    fn admits(
        &self,
        rule: &Rule,
        namespace: &str,
        direction: Direction,
        local_ports: &[NamedPort],
        peer_pods: &[&PodInfo],
        (peer, proto, port): (Ipv4Addr, u8, u16),
    ) -> bool {
        let by_address =
            rule.peers.all || rule.peers.blocks.iter().any(|b| block_contains(b, peer));
        let selected = |pod: &PodInfo| {
            rule.peers
                .pods
                .iter()
                .any(|p| self.peer_selects(namespace, p, pod))
        };
        let covered = by_address || peer_pods.iter().any(|pod| selected(pod));
        if !covered {
            return false;
        }
        if rule.ports.numeric.allows(proto, port) {
            return true;
        }
        match direction {
            // The destination is the local pod, whatever the peer.
            Direction::Ingress => named_ports_allow(&rule.ports, local_ports, proto, port),
            // The destination is the peer: each pod at its address that the rule covers adds
            // what its own named ports resolve to.
            Direction::Egress => peer_pods.iter().any(|pod| {
                (by_address || selected(pod))
                    && named_ports_allow(&rule.ports, &pod.ports, proto, port)
            }),
        }
    }

    /// The pod of a local endpoint of the last compilation (`None` also for an endpoint without
    /// one).
    pub fn endpoint_pod(&self, ip: Ipv4Addr) -> Option<&PodKey> {
        self.endpoints.get(&ip)?.key.as_ref()
    }

    /// The pod (of any node) at an address, as the last compilation saw peers: a local endpoint's
    /// address overrides `status.podIP`, and a pod without an address or with a stale claim on a
    /// local one is at none. When several pods claim the address, the first by key.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<PodKey> {
        self.pods_at(ip).map(|pod| &pod.key).min().cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{
        compile::Compiled,
        manifest::parse_documents,
        model::{Cluster, PodKey},
    };

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: web, labels: {app: web}}
spec:
  containers:
  - {name: c, image: i, ports: [{name: http, containerPort: 8080}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: api, labels: {app: api}}
spec:
  containers:
  - {name: c, image: i, ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: client, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.2.1}
"#;

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    const API: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
    const UNKNOWN: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 9);
    const NO_POD: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 8);
    const OUTSIDE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    fn policy(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: prod}}\nspec:\n{spec}\n---\n"
        )
    }

    fn key(name: &str) -> PolicyKey {
        PolicyKey::new("prod", name)
    }

    fn rule(name: &str, direction: Direction, index: usize) -> RuleRef {
        RuleRef {
            policy: key(name),
            direction,
            index,
        }
    }

    /// Compiles with every pod local, plus an endpoint whose pod the model lacks and one without a
    /// pod; checks that every explanation agrees with the tables on a few flows.
    fn compiled(policies: &str, left_out: &[&str]) -> (Incremental, Compiled) {
        let mut cluster = Cluster::default();
        let text = format!("{WORLD}\n---\n{policies}");
        cluster
            .apply_all(parse_documents(&text).expect("valid manifests"))
            .expect("valid objects");
        let mut local: Vec<(Ipv4Addr, Option<PodKey>)> = cluster
            .pods()
            .filter_map(|p| Some((p.ip?, Some(p.key.clone()))))
            .collect();
        local.push((UNKNOWN, Some(PodKey::new("prod", "not-seen-yet"))));
        local.push((NO_POD, None));
        let left_out: BTreeSet<PolicyKey> = left_out.iter().map(|n| key(n)).collect();
        let mut incremental = Incremental::default();
        let compiled = incremental.compile(&cluster, &local, &left_out);
        for (ip, rules) in &compiled.endpoints {
            for d in Direction::ALL {
                for peer in [WEB, API, CLIENT, OUTSIDE] {
                    for (proto, port) in [(TCP, 80), (TCP, 8080), (UDP, 53), (TCP, 443)] {
                        let verdict = incremental.explain(*ip, d, peer, proto, port).unwrap();
                        assert_eq!(
                            verdict.allows(),
                            rules.get(d).allows(peer, proto, port),
                            "{ip} {d:?} {peer} {proto}/{port}: {verdict:?}"
                        );
                    }
                }
            }
        }
        (incremental, compiled)
    }

    #[test]
    fn rule_index_counts_the_invalid_rules_the_compiler_drops() {
        let spec = "  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80}]
  - from: [{namespaceSelector: {}}]
    ports: [{port: http}]";
        let (inc, c) = compiled(&policy("allow", spec), &[]);
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        let verdict = inc.explain(API, Direction::Ingress, WEB, TCP, 80).unwrap();
        // Rule 1 by number, rule 2 by the named port "http", which is 80 on api.
        assert_eq!(
            verdict,
            DirectionVerdict::Allowed {
                isolated_by: vec![key("allow")],
                rules: vec![
                    rule("allow", Direction::Ingress, 1),
                    rule("allow", Direction::Ingress, 2)
                ],
            }
        );
        let verdict = inc
            .explain(API, Direction::Ingress, CLIENT, TCP, 80)
            .unwrap();
        assert_eq!(
            verdict,
            DirectionVerdict::Allowed {
                isolated_by: vec![key("allow")],
                rules: vec![rule("allow", Direction::Ingress, 2)],
            }
        );
        assert_eq!(verdict.isolating(), [key("allow")]);
        assert_eq!(
            rule("allow", Direction::Ingress, 2).to_string(),
            "prod/allow ingress[2]"
        );
    }

    #[test]
    fn every_admitting_rule_of_every_policy_is_listed() {
        let policies = policy(
            "b-web",
            "  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {}}]
    ports: [{port: 80}]",
        ) + &policy(
            "a-any",
            "  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16}}]",
        );
        let (inc, _) = compiled(&policies, &[]);
        assert_eq!(
            inc.explain(API, Direction::Ingress, WEB, TCP, 80),
            Some(DirectionVerdict::Allowed {
                isolated_by: vec![key("a-any"), key("b-web")],
                rules: vec![
                    rule("a-any", Direction::Ingress, 0),
                    rule("b-web", Direction::Ingress, 0)
                ],
            })
        );
        // Only a-any admits another namespace's pod; web is selected by a-any alone.
        assert_eq!(
            inc.explain(API, Direction::Ingress, CLIENT, TCP, 80),
            Some(DirectionVerdict::Allowed {
                isolated_by: vec![key("a-any"), key("b-web")],
                rules: vec![rule("a-any", Direction::Ingress, 0)],
            })
        );
        assert_eq!(
            inc.explain(WEB, Direction::Ingress, OUTSIDE, TCP, 80),
            Some(DirectionVerdict::Denied {
                isolated_by: vec![key("a-any")],
            })
        );
    }

    #[test]
    fn denied_names_the_isolating_policies_and_unisolated_directions_say_so() {
        let (inc, _) = compiled(
            &policy(
                "deny",
                "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]",
            ),
            &[],
        );
        let denied = inc.explain(WEB, Direction::Egress, API, TCP, 80).unwrap();
        assert_eq!(
            denied,
            DirectionVerdict::Denied {
                isolated_by: vec![key("deny")]
            }
        );
        assert!(!denied.allows());
        for (ip, d) in [
            (WEB, Direction::Ingress),
            (API, Direction::Egress),
            (NO_POD, Direction::Egress),
        ] {
            let verdict = inc.explain(ip, d, OUTSIDE, TCP, 80).unwrap();
            assert_eq!(verdict, DirectionVerdict::Unisolated, "{ip} {d:?}");
            assert!(verdict.allows() && verdict.isolating().is_empty());
        }
        assert_eq!(inc.explain(OUTSIDE, Direction::Ingress, WEB, TCP, 80), None);
    }

    #[test]
    fn egress_named_ports_resolve_against_the_destination_pod_even_inside_an_ip_block() {
        let spec = "  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16}}]
    ports: [{port: http}, {port: dns, protocol: UDP}]";
        let (inc, _) = compiled(&policy("out", spec), &[]);
        let allowed = DirectionVerdict::Allowed {
            isolated_by: vec![key("out")],
            rules: vec![rule("out", Direction::Egress, 0)],
        };
        assert_eq!(
            inc.explain(WEB, Direction::Egress, API, TCP, 80),
            Some(allowed.clone())
        );
        assert_eq!(
            inc.explain(WEB, Direction::Egress, API, UDP, 53),
            Some(allowed)
        );
        // web's own http port (8080) is not api's, and the client names no ports.
        assert!(!inc
            .explain(WEB, Direction::Egress, API, TCP, 8080)
            .unwrap()
            .allows());
        assert!(!inc
            .explain(WEB, Direction::Egress, CLIENT, TCP, 80)
            .unwrap()
            .allows());
    }

    #[test]
    fn fail_closed_names_invalid_and_left_out_policies() {
        let policies = policy(
            "bad-selector",
            "  podSelector: {matchExpressions: [{key: app, operator: Near, values: [x]}]}",
        ) + &policy(
            "bad-types",
            "  podSelector: {matchLabels: {app: api}}\n  policyTypes: [Ingress, Sideways]",
        ) + &policy(
            "big",
            "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress: [{}]",
        ) + &policy(
            "fine",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]",
        );
        let (inc, _) = compiled(&policies, &["big"]);
        assert_eq!(
            inc.explain(API, Direction::Ingress, WEB, TCP, 80),
            Some(DirectionVerdict::FailClosed {
                isolated_by: vec![key("bad-selector"), key("bad-types")],
                because: vec![key("bad-selector"), key("bad-types")],
            })
        );
        // Invalid policy types isolate both directions.
        assert_eq!(
            inc.explain(API, Direction::Egress, WEB, TCP, 80),
            Some(DirectionVerdict::FailClosed {
                isolated_by: vec![key("bad-types"), key("fine")],
                because: vec![key("bad-types")],
            })
        );
        assert_eq!(
            inc.explain(WEB, Direction::Egress, API, TCP, 80),
            Some(DirectionVerdict::FailClosed {
                isolated_by: vec![key("big"), key("fine")],
                because: vec![key("big")],
            })
        );
        // An unknown pod might be selected by any policy of its namespace.
        let verdict = inc
            .explain(UNKNOWN, Direction::Egress, WEB, TCP, 80)
            .unwrap();
        assert_eq!(
            verdict,
            DirectionVerdict::FailClosed {
                isolated_by: vec![key("bad-types"), key("big"), key("fine")],
                because: vec![],
            }
        );
        assert!(!verdict.allows());
    }

    #[test]
    fn pods_are_named_by_address_as_the_compiler_sees_them() {
        let (inc, _) = compiled("", &[]);
        assert_eq!(inc.pod_at(API), Some(PodKey::new("prod", "api")));
        assert_eq!(inc.pod_at(OUTSIDE), None);
        assert_eq!(inc.endpoint_pod(WEB), Some(&PodKey::new("prod", "web")));
        assert_eq!(inc.endpoint_pod(NO_POD), None);
        assert_eq!(
            inc.endpoint_pod(UNKNOWN),
            Some(&PodKey::new("prod", "not-seen-yet"))
        );
    }
}
