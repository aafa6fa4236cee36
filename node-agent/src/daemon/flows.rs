//! Flow events, named: the datapath reports each policy verdict on a new flow and each drop by
//! interface index, table and addresses; here they become [`FlowRecord`]s naming the pods and the
//! policies and rules that decided (from the compiler's live state), kept in a bounded ring that
//! `weir-agent flows` reads, and counted by policy. [`Agent::explain`] answers the same question
//! for a flow nobody sent, and asks the datapath's maps too.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context, Result};
use nix::time::{clock_gettime, ClockId};
use tokio::sync::broadcast;
use weir_agent_api::{
    ExplainQuery, ExplainedDirection, Explanation, FlowEnd, FlowFilter, FlowRecord,
};
use weir_common::{
    events::{
        AT_AFTER_DNAT, AT_FROM_HOST, AT_FROM_POD, AT_FROM_REMOTE, VERDICT_ALLOWED, VERDICT_DENIED,
    },
    FlowEvent, Reason,
};
use weir_policy::{
    compile::{ClusterRuleRef, Direction, DirectionVerdict, RuleRef},
    model::{PodKey, PolicyKey, Protocol},
};

use super::Agent;
use crate::kernel::datapath::Datapath;

/// Recent flows, bounded, and the followers waiting for new ones.
pub struct FlowLog {
    recent: Mutex<VecDeque<Arc<FlowRecord>>>,
    capacity: usize,
    new: broadcast::Sender<Arc<FlowRecord>>,
}

impl FlowLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            new: broadcast::channel(1024).0,
        }
    }

    pub fn push(&self, flow: FlowRecord) {
        let flow = Arc::new(flow);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == self.capacity {
                recent.pop_front();
            }
            recent.push_back(flow.clone());
        }
        // No follower is not an error.
        let _ = self.new.send(flow);
    }

    /// The last `last` recent flows matching `filter`, oldest first.
    pub fn recent(&self, filter: &FlowFilter, last: Option<usize>) -> Vec<Arc<FlowRecord>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = recent
            .iter()
            .rev()
            .filter(|f| filter.matches(f))
            .take(last.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FlowRecord>> {
        self.new.subscribe()
    }
}

type ExplainKey = (Ipv4Addr, Direction, Ipv4Addr, u8, u16);

/// The compiler's explanations of recent flows, until policy or endpoints change. Naming a flow
/// walks the rules of the policies selecting its pod (10 000 for a big policy), and a client
/// opening connection after connection asks the same question each time, differing only in its
/// source port.
#[derive(Default)]
pub struct ExplainCache(RefCell<HashMap<ExplainKey, Option<DirectionVerdict>>>);

impl ExplainCache {
    /// Bounds the cache; past it, it starts over.
    const MAX: usize = 4096;

    fn get(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
        explain: impl FnOnce() -> Option<DirectionVerdict>,
    ) -> Option<DirectionVerdict> {
        let key = (endpoint, direction, peer, proto, port);
        if let Some(hit) = self.0.borrow().get(&key) {
            return hit.clone();
        }
        let explained = explain();
        let mut cache = self.0.borrow_mut();
        if cache.len() >= Self::MAX {
            cache.clear();
        }
        cache.insert(key, explained.clone());
        explained
    }

    /// Policy or endpoints changed: every answer may have.
    pub fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC now, in nanoseconds: turns the datapath's timestamps
/// into wall-clock time.
fn wall_clock_offset() -> i128 {
    let ns = |id| {
        clock_gettime(id).map_or(0, |t| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        })
    };
    ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_MONOTONIC)
}

fn rfc3339(unix_ns: i128) -> String {
    jiff::Timestamp::from_nanosecond(unix_ns)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".to_owned(),
        _ => Protocol::from_number(proto).map_or_else(|| proto.to_string(), |p| p.to_string()),
    }
}

fn at_name(at: u8) -> &'static str {
    match at {
        AT_FROM_POD => "from_pod",
        AT_FROM_HOST => "from_host",
        AT_FROM_REMOTE => "from_remote",
        AT_AFTER_DNAT => "after_dnat",
        _ => "drop",
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn rule_name(rule: &RuleRef) -> String {
    rule.to_string()
}

/// `ClusterNetworkPolicy name`, as flows list policies.
fn cluster_policy_name(rule: &ClusterRuleRef) -> String {
    format!("ClusterNetworkPolicy {}", rule.policy)
}

fn policy_names<'a>(keys: impl IntoIterator<Item = &'a PolicyKey>) -> Vec<String> {
    let mut names: Vec<String> = keys.into_iter().map(ToString::to_string).collect();
    names.dedup();
    names
}

impl Agent {
    /// Local endpoints' addresses by host veth index.
    fn endpoints_by_ifindex(&self) -> HashMap<u32, Ipv4Addr> {
        self.endpoints
            .records()
            .map(|r| (r.endpoint.host_ifindex, r.endpoint.ip))
            .collect()
    }

    /// The pod behind `ip`, as the last compilation saw it: a local endpoint's, else the model's
    /// (which never names a pod with a stale claim on a local address).
    fn flow_end(&self, ip: Ipv4Addr) -> FlowEnd {
        let compiler = self.policy.compiler();
        let pod = compiler
            .endpoint_pod(ip)
            .cloned()
            .or_else(|| compiler.pod_at(ip));
        FlowEnd {
            ip: Some(ip),
            namespace: pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            pod: pod.map(|p| p.name).unwrap_or_default(),
        }
    }

    /// Name a batch of datapath events and keep them.
    pub(super) fn record_flows(&mut self, events: Vec<FlowEvent>) {
        let offset = wall_clock_offset();
        let local = self.endpoints_by_ifindex();
        for event in &events {
            for flow in self.name_event(event, &local, offset) {
                if flow.verdict == "denied" {
                    for policy in &flow.policies {
                        self.telemetry.count_policy_denial(policy);
                    }
                }
                self.flow_log.push(flow);
            }
        }
        self.telemetry.count_flow_events(events.len() as u64);
    }

    fn name_event(
        &self,
        event: &FlowEvent,
        local: &HashMap<u32, Ipv4Addr>,
        offset: i128,
    ) -> Vec<FlowRecord> {
        let key = &event.key;
        let (saddr, daddr) = (Ipv4Addr::from(key.saddr), Ipv4Addr::from(key.daddr));
        let (sport, dport) = (u16::from_be_bytes(key.sport), u16::from_be_bytes(key.dport));
        let parsed = key.proto != 0 || saddr != Ipv4Addr::UNSPECIFIED;
        // A frame with no IPv4 header (IPv6, say) is still named by the endpoint it was
        // dropped on.
        let end = |ip: Ipv4Addr, ifindex: u32| {
            if parsed {
                self.flow_end(ip)
            } else if let Some(ip) = local.get(&ifindex).filter(|_| ifindex != 0) {
                // The pod, but not its IPv4 address: the frame did not carry it.
                FlowEnd {
                    ip: None,
                    ..self.flow_end(*ip)
                }
            } else {
                FlowEnd::default()
            }
        };
        let base = FlowRecord {
            time: rfc3339(i128::from(event.time_ns) + offset),
            src: end(saddr, event.src_ifindex),
            dst: end(daddr, event.dst_ifindex),
            proto: match (parsed, event.ethertype) {
                (true, _) => proto_name(key.proto),
                (false, 0x86dd) => "IPv6".to_owned(),
                (false, 0) => "-".to_owned(),
                (false, ethertype) => format!("ethertype 0x{ethertype:04x}"),
            },
            sport,
            dport,
            direction: String::new(),
            verdict: String::new(),
            reason: String::new(),
            policies: Vec::new(),
            rules: Vec::new(),
            at: at_name(event.at).to_owned(),
        };
        let reason = Reason::from_code(event.reason);
        let side = |ifindex: u32, direction: Direction, allowed: bool| -> Option<FlowRecord> {
            if ifindex == 0 {
                return None;
            }
            let (ip, peer) = match direction {
                Direction::Egress => (saddr, daddr),
                Direction::Ingress => (daddr, saddr),
            };
            let mut flow = base.clone();
            flow.direction = direction_name(direction).to_owned();
            // The endpoint judged is the one on that veth; its address is the flow's.
            let endpoint = local.get(&ifindex).copied().unwrap_or(ip);
            let explained = self
                .explained
                .get(endpoint, direction, peer, key.proto, dport, || {
                    self.policy
                        .compiler()
                        .explain(endpoint, direction, peer, key.proto, dport)
                });
            if allowed {
                flow.verdict = "allowed".to_owned();
                match explained {
                    Some(DirectionVerdict::Allowed { rules, .. }) => {
                        flow.reason = "allowed_by_policy".to_owned();
                        flow.policies = policy_names(rules.iter().map(|r| &r.policy));
                        flow.rules = rules.iter().map(rule_name).collect();
                    }
                    Some(DirectionVerdict::Unisolated) => {
                        flow.reason = "not_isolated".to_owned();
                    }
                    Some(DirectionVerdict::Cluster { rule }) => {
                        flow.reason = "accepted_by_cluster_policy".to_owned();
                        flow.policies = vec![cluster_policy_name(&rule)];
                        flow.rules = vec![rule.to_string()];
                    }
                    // The model moved on since the packet was judged.
                    _ => flow.reason = "allowed_by_policy".to_owned(),
                }
            } else {
                flow.verdict = "denied".to_owned();
                flow.reason = reason.map_or_else(
                    || format!("unknown_{}", event.reason),
                    |r| r.name().to_owned(),
                );
                match &explained {
                    Some(DirectionVerdict::Cluster { rule }) => {
                        flow.policies = vec![cluster_policy_name(rule)];
                        flow.rules = vec![rule.to_string()];
                    }
                    Some(explained) => flow.policies = policy_names(explained.isolating()),
                    None => {}
                }
            }
            Some(flow)
        };
        match event.verdict {
            VERDICT_ALLOWED => [
                side(event.src_ifindex, Direction::Egress, true),
                side(event.dst_ifindex, Direction::Ingress, true),
            ]
            .into_iter()
            .flatten()
            .collect(),
            VERDICT_DENIED if event.dst_ifindex != 0 => {
                // Ingress is judged only once egress (when judged) allowed.
                [
                    side(event.src_ifindex, Direction::Egress, true),
                    side(event.dst_ifindex, Direction::Ingress, false),
                ]
                .into_iter()
                .flatten()
                .collect()
            }
            VERDICT_DENIED => side(event.src_ifindex, Direction::Egress, false)
                .into_iter()
                .collect(),
            _ => {
                let mut flow = base;
                flow.verdict = "denied".to_owned();
                flow.direction = if event.dst_ifindex != 0 {
                    "ingress"
                } else {
                    "egress"
                }
                .to_owned();
                flow.reason = reason.map_or_else(
                    || format!("unknown_{}", event.reason),
                    |r| r.name().to_owned(),
                );
                vec![flow]
            }
        }
    }

    /// Resolve `from`/`to` (a pod "namespace/name", or an address) to an address.
    fn resolve_end(&self, what: &str) -> Result<Ipv4Addr> {
        if let Ok(ip) = what.parse::<Ipv4Addr>() {
            return Ok(ip);
        }
        let Some((namespace, name)) = what.split_once('/') else {
            bail!("{what:?} is neither an IPv4 address nor a pod as namespace/name");
        };
        let key = PodKey::new(namespace, name);
        let local = self.endpoints.records().find(|r| {
            r.endpoint.pod_namespace.as_deref() == Some(namespace)
                && r.endpoint.pod_name.as_deref() == Some(name)
        });
        if let Some(r) = local {
            return Ok(r.endpoint.ip);
        }
        self.objects
            .cluster()
            .pod(&key)
            .and_then(|p| p.ip)
            .with_context(|| format!("pod {key} is not known, or has no IPv4 address yet"))
    }

    /// The verdict the live model gives a flow, direction by direction, and whether the
    /// datapath's maps agree.
    pub(super) fn explain(&self, query: &ExplainQuery) -> Result<Explanation> {
        let src = self.resolve_end(&query.from)?;
        let dst = self.resolve_end(&query.to)?;
        let proto = Protocol::from_k8s(&query.proto.to_uppercase())
            .with_context(|| format!("unknown protocol {:?}: TCP, UDP or SCTP", query.proto))?;
        let compiler = self.policy.compiler();
        let mut directions = Vec::new();
        let mut datapath_agrees = true;
        for (direction, endpoint, peer) in [
            (Direction::Egress, src, dst),
            (Direction::Ingress, dst, src),
        ] {
            let Some(verdict) =
                compiler.explain(endpoint, direction, peer, proto.number(), query.port)
            else {
                continue;
            };
            let datapath = self
                .endpoints
                .datapath()
                .endpoint_allows(
                    endpoint,
                    direction == Direction::Ingress,
                    peer,
                    proto.number(),
                    query.port,
                )
                .ok()
                .flatten();
            datapath_agrees &= datapath == Some(verdict.allows());
            let end = self.flow_end(endpoint);
            let (reason, rules, broken) = match &verdict {
                DirectionVerdict::Unisolated => ("not_isolated", Vec::new(), Vec::new()),
                DirectionVerdict::Allowed { rules, .. } => (
                    "allowed_by_policy",
                    rules.iter().map(rule_name).collect(),
                    Vec::new(),
                ),
                DirectionVerdict::Denied { .. } => ("no_rule_admits", Vec::new(), Vec::new()),
                DirectionVerdict::FailClosed { because, .. } => {
                    ("fail_closed", Vec::new(), policy_names(because))
                }
                DirectionVerdict::Cluster { rule } => (
                    if verdict.allows() {
                        "accepted_by_cluster_policy"
                    } else {
                        "denied_by_cluster_policy"
                    },
                    vec![rule.to_string()],
                    Vec::new(),
                ),
            };
            directions.push(ExplainedDirection {
                direction: direction_name(direction).to_owned(),
                pod: if end.pod.is_empty() {
                    endpoint.to_string()
                } else {
                    format!("{}/{}", end.namespace, end.pod)
                },
                verdict: if verdict.allows() {
                    "allowed"
                } else {
                    "denied"
                }
                .to_owned(),
                reason: reason.to_owned(),
                isolated_by: policy_names(verdict.isolating()),
                rules,
                broken,
                datapath_allows: datapath,
            });
        }
        let allowed = directions.iter().all(|d| d.verdict == "allowed");
        Ok(Explanation {
            src: self.flow_end(src),
            dst: self.flow_end(dst),
            proto: proto.to_string(),
            port: query.port,
            verdict: if allowed { "allowed" } else { "denied" }.to_owned(),
            directions,
            datapath_agrees,
        })
    }
}
