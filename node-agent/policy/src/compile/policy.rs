//! A NetworkPolicy checked and turned into the compiler's form, once, when the model stores it.
//!
//! Everything the API server would reject is caught here and reported as a [`Problem`], failing
//! closed: an invalid `podSelector` or `policyTypes` makes the pods the policy may select deny the
//! affected directions; an invalid peer or port drops its whole rule, while the policy still isolates
//! the pods it selects. Nothing is ever opened because of an error.

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{ports::PortSet, Direction, Problem};
use crate::{
    model::{PolicyKey, Protocol},
    selector::Selector,
};

/// A policy in the compiler's form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParsedPolicy {
    pub key: PolicyKey,
    /// `None` when the pod selector is invalid: every pod of the namespace fails closed.
    pub selector: Option<Selector>,
    /// The directions the policy isolates, indexed by [`Direction::index`].
    pub isolates: [bool; 2],
    /// The selected pods deny every isolated direction (the policy types were invalid).
    pub fail_closed: bool,
    /// The valid rules per direction (empty for a direction the policy does not isolate).
    pub rules: [Vec<Rule>; 2],
}

impl ParsedPolicy {
    /// Whether pods of the namespace with these labels are selected; `None` if it cannot be known.
    pub fn selects(&self, labels: &crate::model::Labels) -> Option<bool> {
        self.selector.as_ref().map(|s| s.matches(labels))
    }
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rule {
    /// Its position in the spec's `ingress` or `egress` list, counting the invalid rules parsing
    /// drops, so that an explanation names the rule the user wrote.
    pub index: u32,
    pub peers: Peers,
    pub ports: RulePorts,
}

/// The peers of a rule. `all` (no `from`/`to`) means every address and every pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Peers {
    pub all: bool,
    pub pods: Vec<PodPeer>,
    pub blocks: Vec<IpBlockPeer>,
}

/// Pods selected by labels, in the policy's namespace (`namespaces: None`) or in the namespaces a
/// namespace selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PodPeer {
    pub namespaces: Option<Selector>,
    pub pods: Selector,
}

/// An IPv4 `ipBlock`: `cidr` minus every `except`, each strictly inside `cidr`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IpBlockPeer {
    pub cidr: Ipv4Net,
    pub except: Vec<Ipv4Net>,
}

/// The ports of a rule: numeric ones (any protocol when the rule has no `ports`) and named ones,
/// which are resolved per pod.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RulePorts {
    pub numeric: PortSet,
    pub named: Vec<(String, Protocol)>,
}

/// Checks a policy; problems name the policy and the field.
pub(crate) fn parse_policy(
    key: PolicyKey,
    spec: &NetworkPolicySpec,
) -> (ParsedPolicy, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut report = |message: String| {
        problems.push(Problem {
            policy: Some(key.clone()),
            message,
        });
    };

    let (isolates, types_valid) = isolated_directions(spec, &mut report);
    let selector = match Selector::parse_optional(spec.pod_selector.as_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            report(format!(
                "spec.podSelector: {e}; every pod in namespace {} denies {}",
                key.namespace,
                directions_text(isolates)
            ));
            None
        }
    };
    if !types_valid {
        report(format!(
            "the pods it selects deny {} until it is fixed",
            directions_text(isolates)
        ));
    }

    let mut rules: [Vec<Rule>; 2] = [Vec::new(), Vec::new()];
    if isolates[Direction::Ingress.index()] {
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let field = || format!("spec.ingress[{i}]");
            push_rule(
                &mut rules[0],
                i,
                field,
                "from",
                r.from.as_deref(),
                r.ports.as_deref(),
                &mut report,
            );
        }
    }
    if isolates[Direction::Egress.index()] {
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let field = || format!("spec.egress[{i}]");
            push_rule(
                &mut rules[1],
                i,
                field,
                "to",
                r.to.as_deref(),
                r.ports.as_deref(),
                &mut report,
            );
        }
    }
    // A pushed-to `Vec` keeps room for four; the model keeps every policy for as long as it
    // exists, so they keep exactly what they hold.
    for rules in &mut rules {
        rules.shrink_to_fit();
    }
    let parsed = ParsedPolicy {
        key,
        selector,
        isolates,
        fail_closed: !types_valid,
        rules,
    };
    (parsed, problems)
}

fn directions_text(isolates: [bool; 2]) -> &'static str {
    match isolates {
        [true, true] => "ingress and egress",
        [true, false] => "ingress",
        [false, true] => "egress",
        [false, false] => "nothing",
    }
}

/// The directions a policy isolates. Omitted (or empty) `policyTypes`: Ingress, plus Egress when the
/// policy has egress rules. An unknown type makes both directions isolated and fail closed.
fn isolated_directions(
    spec: &NetworkPolicySpec,
    report: &mut impl FnMut(String),
) -> ([bool; 2], bool) {
    let types = spec.policy_types.as_deref().unwrap_or_default();
    if types.is_empty() {
        let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        return ([true, has_egress], true);
    }
    let mut isolates = [false, false];
    let mut valid = true;
    for t in types {
        match t.as_str() {
            "Ingress" => isolates[Direction::Ingress.index()] = true,
            "Egress" => isolates[Direction::Egress.index()] = true,
            other => {
                report(format!("spec.policyTypes: unknown type {other:?}"));
                valid = false;
            }
        }
    }
    if valid {
        (isolates, true)
    } else {
        ([true, true], false)
    }
}

fn push_rule(
    rules: &mut Vec<Rule>,
    index: usize,
    field: impl Fn() -> String,
    peers_field: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    report: &mut impl FnMut(String),
) {
    let parsed = parse_peers(peers.unwrap_or_default())
        .map_err(|(i, e)| format!("{}.{peers_field}[{i}]: {e}", field()))
        .and_then(|peers| {
            parse_ports(ports.unwrap_or_default())
                .map(|ports| Rule {
                    // No spec holds 2^32 rules (objects are limited to a few MiB).
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    peers,
                    ports,
                })
                .map_err(|(i, e)| format!("{}.ports[{i}]: {e}", field()))
        });
    match parsed {
        Ok(rule) => rules.push(rule),
        Err(message) => report(format!("{message}; the rule allows nothing")),
    }
}

/// Peers of a rule; an empty list means all peers. Errors carry the index of the bad peer.
fn parse_peers(peers: &[NetworkPolicyPeer]) -> Result<Peers, (usize, String)> {
    let mut out = Peers {
        all: peers.is_empty(),
        ..Peers::default()
    };
    for (i, peer) in peers.iter().enumerate() {
        match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (None, None, None) => {
                return Err((
                    i,
                    "a peer needs podSelector, namespaceSelector or ipBlock".to_owned(),
                ))
            }
            (Some(block), None, None) => {
                if let Some(block) = parse_ip_block(block).map_err(|e| (i, e))? {
                    out.blocks.push(block);
                }
            }
            (Some(_), _, _) => {
                return Err((
                    i,
                    "ipBlock cannot be combined with podSelector or namespaceSelector".to_owned(),
                ))
            }
            (None, pods, namespaces) => {
                let pods = Selector::parse_optional(pods.as_ref())
                    .map_err(|e| (i, format!("podSelector: {e}")))?;
                let namespaces = namespaces
                    .as_ref()
                    .map(Selector::parse)
                    .transpose()
                    .map_err(|e| (i, format!("namespaceSelector: {e}")))?;
                out.pods.push(PodPeer { namespaces, pods });
            }
        }
    }
    out.pods.shrink_to_fit();
    out.blocks.shrink_to_fit();
    Ok(out)
}

/// An ipBlock; `Ok(None)` for a valid IPv6 block, which matches no IPv4 address.
fn parse_ip_block(block: &IPBlock) -> Result<Option<IpBlockPeer>, String> {
    let cidr = parse_cidr(&block.cidr)?;
    let mut except = Vec::new();
    for text in block.except.iter().flatten() {
        let e = parse_cidr(text)?;
        let strictly_inside = match (cidr, e) {
            (IpNet::V4(c), IpNet::V4(e)) => {
                e.prefix_len() > c.prefix_len() && c.contains(&e.network())
            }
            (IpNet::V6(c), IpNet::V6(e)) => {
                e.prefix_len() > c.prefix_len() && c.contains(&e.network())
            }
            _ => false,
        };
        if !strictly_inside {
            return Err(format!(
                "ipBlock.except {text:?} is not a strict subset of cidr {:?}",
                block.cidr
            ));
        }
        if let IpNet::V4(e) = e {
            except.push(e);
        }
    }
    Ok(match cidr {
        IpNet::V4(cidr) => {
            except.shrink_to_fit();
            Some(IpBlockPeer { cidr, except })
        }
        IpNet::V6(_) => None,
    })
}

/// A CIDR, normalized to its network address (the API server accepts host bits).
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("ipBlock: {text:?} is not a CIDR"))
}

/// Ports of a rule; an empty list means every protocol and port. Errors carry the entry's index.
fn parse_ports(ports: &[NetworkPolicyPort]) -> Result<RulePorts, (usize, String)> {
    if ports.is_empty() {
        return Ok(RulePorts {
            numeric: PortSet::any(),
            named: Vec::new(),
        });
    }
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        match parse_port(port).map_err(|e| (i, e))? {
            PortSpec::Range(proto, first, last) => ranges.push((proto, first..=last)),
            PortSpec::Named(name, proto) => named.push((name, proto)),
        }
    }
    named.sort();
    named.dedup();
    named.shrink_to_fit();
    Ok(RulePorts {
        numeric: PortSet::from_ranges(ranges),
        named,
    })
}

enum PortSpec {
    Range(Protocol, u16, u16),
    Named(String, Protocol),
}

fn parse_port(port: &NetworkPolicyPort) -> Result<PortSpec, String> {
    let proto = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => Protocol::from_k8s(text)
            .ok_or_else(|| format!("protocol {text:?} is not TCP, UDP or SCTP"))?,
    };
    match (&port.port, port.end_port) {
        (None, None) => Ok(PortSpec::Range(proto, 0, u16::MAX)),
        (None, Some(_)) => Err("endPort needs a numeric port".to_owned()),
        (Some(IntOrString::String(name)), None) => {
            check_port_name(name)?;
            Ok(PortSpec::Named(name.clone(), proto))
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            Err("endPort cannot be used with a named port".to_owned())
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n, "port")?;
            let last = end.map_or(Ok(first), |e| port_number(e, "endPort"))?;
            if last < first {
                return Err(format!("endPort {last} is less than port {first}"));
            }
            Ok(PortSpec::Range(proto, first, last))
        }
    }
}

fn port_number(n: i32, field: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{field} {n} is not in 1-65535"))
}

/// A port name must be an IANA service name: 1-15 lowercase letters, digits and inner single
/// hyphens, with at least one letter (so "80" is not a name).
pub(crate) fn check_port_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid port name"))
    }
}

/// Whether an address is inside a block and outside its excepts.
pub(crate) fn block_contains(block: &IpBlockPeer, ip: std::net::Ipv4Addr) -> bool {
    block.cidr.contains(&ip) && !block.except.iter().any(|e| e.contains(&ip))
}
