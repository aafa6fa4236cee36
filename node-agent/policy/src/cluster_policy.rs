//! ClusterNetworkPolicy (`policy.networking.k8s.io`, from sigs.k8s.io/network-policy-api v0.3.0,
//! which serves the same schema as `v1alpha2` and `v1beta1`): the object as the API serves it, and
//! the checked form the compiler uses.
//!
//! A cluster admin's policy: tier `Admin` (evaluated before every NetworkPolicy) or `Baseline`
//! (after them), a priority 0–1000 within the tier (lower first), a subject (pods by namespace, or
//! by namespace and pod labels), and ingress/egress rules evaluated in order with actions `Accept`,
//! `Deny` or `Pass`. How the tiers become one lookup is in `compile/tiers.rs`.
//!
//! Checking follows the API's own "fail closed" rule for what cannot be honoured: a rule with a
//! peer or protocol Weir cannot enforce (a peer with no field it knows, which is what a newer CRD's
//! field looks like to it; a `domainNames` peer, which needs DNS interception Weir does not do;
//! an IPv6 network only, for this IPv4 datapath, matches nothing and is no error) is, for `Accept`,
//! a rule matching nothing, and for `Deny` and `Pass`, a rule denying everything. A policy whose
//! tier, priority or subject cannot be understood is not enforced at all (it cannot be known which
//! pods it means); every such finding is a [`Problem`] for the object's status and an Event.

use std::fmt;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::{
    compile::{
        policy::{check_port_name, PodPeer, RulePorts},
        ports::PortSet,
        tiers::{Action, Tier},
        Direction,
    },
    model::Protocol,
    selector::Selector,
};

/// The API group.
pub const GROUP: &str = "policy.networking.k8s.io";
/// The version Weir watches (the storage version of v0.3.0's CRD).
pub const VERSION: &str = "v1beta1";
/// Versions a manifest may use: both are served by v0.3.0's CRD, with the same schema.
pub const VERSIONS: [&str; 2] = ["v1beta1", "v1alpha2"];
pub const KIND: &str = "ClusterNetworkPolicy";
pub const PLURAL: &str = "clusternetworkpolicies";

/// The object, field for field as the CRD defines it (lists as `Option` so that a manifest's
/// `ingress: []` survives the strict round trip).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClusterNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterNetworkPolicyStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    pub tier: String,
    pub priority: i32,
    pub subject: ClusterNetworkPolicySubject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<IngressPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<EgressPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Experimental channel: nodes by label; their addresses (`status.addresses`) are the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Experimental channel; not supported by Weir (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// Experimental channel: a container port name of the destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    pub start: i32,
    pub end: i32,
}

/// Something in a ClusterNetworkPolicy Weir cannot honour as written, and what it does instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterProblem {
    pub policy: String,
    pub message: String,
}

impl fmt::Display for ClusterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterNetworkPolicy {}: {}", self.policy, self.message)
    }
}

/// Which pods a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Subject {
    pub namespaces: Selector,
    pub pods: Selector,
}

/// The peers of a cluster rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClusterPeers {
    /// Every address (a fail-closed `Deny` or `Pass`).
    pub all: bool,
    /// Pods by namespace and pod labels (a `namespaces` peer has an "everything" pod selector).
    pub pods: Vec<PodPeer>,
    /// Nodes by label: every IPv4 address in their `status.addresses`.
    pub nodes: Vec<Selector>,
    pub networks: Vec<Ipv4Net>,
}

/// One rule, checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClusterRule {
    /// Its position in `ingress` or `egress` as written.
    pub index: u32,
    pub name: Option<String>,
    pub action: Action,
    pub peers: ClusterPeers,
    pub ports: RulePorts,
}

/// A ClusterNetworkPolicy in the compiler's form.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPolicy {
    pub(crate) name: String,
    pub(crate) tier: Tier,
    pub(crate) priority: u32,
    pub(crate) subject: Subject,
    /// Per [`Direction::index`].
    pub(crate) rules: [Vec<ClusterRule>; 2],
    pub(crate) problems: Vec<ClusterProblem>,
    /// `metadata.generation`, for the status condition's `observedGeneration`.
    pub generation: Option<i64>,
    /// `metadata.uid`: a policy deleted and created again under its name is another object
    /// (whose status must be written again).
    pub uid: Option<String>,
}

impl ClusterPolicy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// What Weir does differently from what the object asks (empty: enforced as written).
    pub fn problems(&self) -> &[ClusterProblem] {
        &self.problems
    }

    /// Evaluation order: tier, then priority, then name (the API leaves equal priorities to the
    /// implementation; by name is at least stable across nodes and restarts).
    pub fn order(&self) -> (Tier, u32, &str) {
        (self.tier, self.priority, &self.name)
    }

    /// Checks an object. `Err` when it cannot be enforced at all (no name, an unknown tier, a
    /// priority out of range, an invalid subject): it is then left out, and the message says why.
    pub fn from_object(object: &ClusterNetworkPolicy) -> Result<ClusterPolicy, ClusterProblem> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let fail = |message: String| ClusterProblem {
            policy: name.clone(),
            message: format!("{message}; the policy is not enforced"),
        };
        if name.is_empty() {
            return Err(fail("no metadata.name".to_owned()));
        }
        let spec = &object.spec;
        let tier = match spec.tier.as_str() {
            "Admin" => Tier::Admin,
            "Baseline" => Tier::Baseline,
            other => {
                return Err(fail(format!(
                    "spec.tier {other:?} is not Admin or Baseline"
                )))
            }
        };
        let priority = u32::try_from(spec.priority)
            .ok()
            .filter(|&p| p <= 1000)
            .ok_or_else(|| fail(format!("spec.priority {} is not in 0-1000", spec.priority)))?;
        let subject =
            parse_subject(&spec.subject).map_err(|e| fail(format!("spec.subject: {e}")))?;
        let mut problems = Vec::new();
        let mut rules: [Vec<ClusterRule>; 2] = [Vec::new(), Vec::new()];
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            let peers: Vec<PeerSpec<'_>> = rule
                .from
                .iter()
                .flatten()
                .map(PeerSpec::from_ingress)
                .collect();
            let checked = check_rule(
                i,
                Direction::Ingress,
                rule.name.as_ref(),
                &rule.action,
                &peers,
                rule.protocols.as_deref(),
            );
            push_rule(&name, &mut rules[0], &mut problems, checked);
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            let peers: Vec<PeerSpec<'_>> = rule
                .to
                .iter()
                .flatten()
                .map(PeerSpec::from_egress)
                .collect();
            let checked = check_rule(
                i,
                Direction::Egress,
                rule.name.as_ref(),
                &rule.action,
                &peers,
                rule.protocols.as_deref(),
            );
            push_rule(&name, &mut rules[1], &mut problems, checked);
        }
        Ok(ClusterPolicy {
            name,
            tier,
            priority,
            subject,
            rules,
            problems,
            generation: object.metadata.generation,
            uid: object.metadata.uid.clone(),
        })
    }
}

fn push_rule(
    policy: &str,
    rules: &mut Vec<ClusterRule>,
    problems: &mut Vec<ClusterProblem>,
    checked: (Option<ClusterRule>, Option<String>),
) {
    let (rule, problem) = checked;
    if let Some(message) = problem {
        problems.push(ClusterProblem {
            policy: policy.to_owned(),
            message,
        });
    }
    rules.extend(rule);
}

fn parse_subject(subject: &ClusterNetworkPolicySubject) -> Result<Subject, String> {
    match (&subject.namespaces, &subject.pods) {
        (Some(namespaces), None) => Ok(Subject {
            namespaces: Selector::parse(namespaces).map_err(|e| format!("namespaces: {e}"))?,
            pods: Selector::everything(),
        }),
        (None, Some(pods)) => Ok(Subject {
            namespaces: Selector::parse(&pods.namespace_selector)
                .map_err(|e| format!("pods.namespaceSelector: {e}"))?,
            pods: Selector::parse(&pods.pod_selector)
                .map_err(|e| format!("pods.podSelector: {e}"))?,
        }),
        _ => Err("exactly one of namespaces and pods must be set".to_owned()),
    }
}

/// One peer of either direction, as the fields it sets.
struct PeerSpec<'a> {
    namespaces: Option<&'a LabelSelector>,
    pods: Option<&'a NamespacedPod>,
    nodes: Option<&'a LabelSelector>,
    networks: Option<&'a [String]>,
    domain_names: Option<&'a [String]>,
}

impl<'a> PeerSpec<'a> {
    fn from_ingress(peer: &'a IngressPeer) -> Self {
        PeerSpec {
            namespaces: peer.namespaces.as_ref(),
            pods: peer.pods.as_ref(),
            nodes: None,
            networks: None,
            domain_names: None,
        }
    }

    fn from_egress(peer: &'a EgressPeer) -> Self {
        PeerSpec {
            namespaces: peer.namespaces.as_ref(),
            pods: peer.pods.as_ref(),
            nodes: peer.nodes.as_ref(),
            networks: peer.networks.as_deref(),
            domain_names: peer.domain_names.as_deref(),
        }
    }
}

/// Checks one rule: the rule to enforce (`None`: it matches nothing) and what to report.
fn check_rule(
    index: usize,
    direction: Direction,
    name: Option<&String>,
    action: &str,
    peers: &[PeerSpec<'_>],
    protocols: Option<&[ProtocolMatch]>,
) -> (Option<ClusterRule>, Option<String>) {
    let list = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let field = format!("spec.{list}[{index}]");
    // No spec holds 2^32 rules (the CRD allows 25).
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    let action = match action {
        "Accept" => Action::Accept,
        "Deny" => Action::Deny,
        "Pass" => Action::Pass,
        other => {
            // An action Weir does not know could mean anything: deny, the safe side.
            let rule = deny_all(index, name);
            return (Some(rule), Some(format!("{field}.action {other:?} is not Accept, Deny or Pass; the rule denies all traffic")));
        }
    };
    let checked = check_peers(peers, direction == Direction::Egress)
        .map_err(|e| {
            format!(
                "{field}.{}: {e}",
                if direction == Direction::Ingress {
                    "from"
                } else {
                    "to"
                }
            )
        })
        .and_then(|peers| {
            check_protocols(protocols.unwrap_or_default(), &peers)
                .map_err(|e| format!("{field}.protocols: {e}"))
                .map(|ports| (peers, ports))
        });
    match checked {
        Ok((peers, ports)) => (
            Some(ClusterRule {
                index,
                name: name.cloned(),
                action,
                peers,
                ports,
            }),
            None,
        ),
        // The API's fail closed: an Accept matches nothing; a Deny or Pass denies everything.
        Err(message) if action == Action::Accept => {
            (None, Some(format!("{message}; the rule matches nothing")))
        }
        Err(message) => (
            Some(deny_all(index, name)),
            Some(format!("{message}; the rule denies all traffic")),
        ),
    }
}

fn deny_all(index: u32, name: Option<&String>) -> ClusterRule {
    ClusterRule {
        index,
        name: name.cloned(),
        action: Action::Deny,
        peers: ClusterPeers {
            all: true,
            ..ClusterPeers::default()
        },
        ports: RulePorts {
            numeric: PortSet::any(),
            named: Vec::new(),
        },
    }
}

fn check_peers(peers: &[PeerSpec<'_>], egress: bool) -> Result<ClusterPeers, String> {
    if peers.is_empty() {
        return Err("needs at least one peer".to_owned());
    }
    let mut out = ClusterPeers::default();
    for (i, peer) in peers.iter().enumerate() {
        let set = [
            peer.namespaces.is_some(),
            peer.pods.is_some(),
            peer.nodes.is_some(),
            peer.networks.is_some(),
            peer.domain_names.is_some(),
        ];
        match set.iter().filter(|&&s| s).count() {
            0 => {
                return Err(format!(
                    "[{i}] sets no field Weir knows (a newer API version?)"
                ))
            }
            1 => {}
            _ => return Err(format!("[{i}] sets more than one field")),
        }
        if let Some(namespaces) = peer.namespaces {
            out.pods.push(PodPeer {
                namespaces: Some(
                    Selector::parse(namespaces).map_err(|e| format!("[{i}].namespaces: {e}"))?,
                ),
                pods: Selector::everything(),
            });
        }
        if let Some(pods) = peer.pods {
            out.pods.push(PodPeer {
                namespaces: Some(
                    Selector::parse(&pods.namespace_selector)
                        .map_err(|e| format!("[{i}].pods.namespaceSelector: {e}"))?,
                ),
                pods: Selector::parse(&pods.pod_selector)
                    .map_err(|e| format!("[{i}].pods.podSelector: {e}"))?,
            });
        }
        if let Some(nodes) = peer.nodes {
            debug_assert!(egress);
            out.nodes
                .push(Selector::parse(nodes).map_err(|e| format!("[{i}].nodes: {e}"))?);
        }
        if let Some(networks) = peer.networks {
            if networks.is_empty() {
                return Err(format!("[{i}].networks is empty"));
            }
            for text in networks {
                match text.parse::<IpNet>() {
                    Ok(IpNet::V4(net)) if net.trunc() == net => out.networks.push(net),
                    // IPv6 networks match no IPv4 address.
                    Ok(IpNet::V6(net)) if net.trunc() == net => {}
                    _ => {
                        return Err(format!(
                            "[{i}].networks: {text:?} is not a CIDR with its host bits zero"
                        ))
                    }
                }
            }
        }
        if peer.domain_names.is_some() {
            return Err(format!(
                "[{i}].domainNames is not supported by Weir (it needs DNS interception)"
            ));
        }
    }
    out.networks.sort_unstable();
    out.networks.dedup();
    Ok(out)
}

fn check_protocols(protocols: &[ProtocolMatch], peers: &ClusterPeers) -> Result<RulePorts, String> {
    if protocols.is_empty() {
        return Ok(RulePorts {
            numeric: PortSet::any(),
            named: Vec::new(),
        });
    }
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for (i, protocol) in protocols.iter().enumerate() {
        let set = [
            protocol.tcp.as_ref().map(|p| (Protocol::Tcp, p)),
            protocol.udp.as_ref().map(|p| (Protocol::Udp, p)),
            protocol.sctp.as_ref().map(|p| (Protocol::Sctp, p)),
        ];
        let count =
            set.iter().flatten().count() + usize::from(protocol.destination_named_port.is_some());
        match count {
            0 => {
                return Err(format!(
                    "[{i}] sets no field Weir knows (a newer API version?)"
                ))
            }
            1 => {}
            _ => return Err(format!("[{i}] sets more than one field")),
        }
        if let Some(name) = &protocol.destination_named_port {
            check_port_name(name).map_err(|e| format!("[{i}].destinationNamedPort: {e}"))?;
            if !peers.nodes.is_empty() || !peers.networks.is_empty() {
                return Err(format!(
                    "[{i}].destinationNamedPort cannot be used with nodes or networks peers"
                ));
            }
            // A container port name stands for one port of one protocol, whichever it is.
            for proto in Protocol::ALL {
                named.push((name.clone(), proto));
            }
        }
        for (proto, port) in set.into_iter().flatten() {
            let (first, last) = match &port.destination_port {
                None => {
                    return Err(format!(
                        "[{i}]: destinationPort is required (the CRD's minProperties)"
                    ))
                }
                Some(Port {
                    number: Some(n),
                    range: None,
                }) => {
                    let n = port_number(*n)
                        .ok_or_else(|| format!("[{i}]: port {n} is not in 1-65535"))?;
                    (n, n)
                }
                Some(Port {
                    number: None,
                    range: Some(range),
                }) => {
                    let start = port_number(range.start).ok_or_else(|| {
                        format!("[{i}]: range start {} is not in 1-65535", range.start)
                    })?;
                    let end = port_number(range.end).ok_or_else(|| {
                        format!("[{i}]: range end {} is not in 1-65535", range.end)
                    })?;
                    if start >= end {
                        return Err(format!(
                            "[{i}]: range start {start} is not less than end {end}"
                        ));
                    }
                    (start, end)
                }
                Some(_) => {
                    return Err(format!(
                        "[{i}].destinationPort needs exactly one of number and range"
                    ))
                }
            };
            ranges.push((proto, first..=last));
        }
    }
    named.sort();
    named.dedup();
    Ok(RulePorts {
        numeric: PortSet::from_ranges(ranges),
        named,
    })
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}
