//! NetworkPolicy → per-endpoint rule tables.
//!
//! [`compile`] turns the [`Cluster`] into, for each local endpoint and direction, either "not
//! isolated", "fail closed" or a [`RuleTable`] (the PEERS entries the datapath looks up). Work is
//! shared: each policy is checked once, each peer selector is evaluated once over the cluster, each
//! rule's peer set is computed once, and endpoints selected by the same policies share one table
//! (`Arc`). Only endpoints of this node get tables.
//!
//! Semantics (networking.k8s.io/v1): a pod is isolated in a direction iff some policy selecting it
//! has that policy type; what is allowed is then the union over those policies' rules. Named ports
//! resolve against the destination pod: the selected pod itself for ingress, each peer pod for egress
//! (so an egress rule with named ports gives each destination pod its own `/32` entry).

mod policy;
pub mod ports;
mod table;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    sync::Arc,
};

use ipnet::Ipv4Net;

use self::{
    policy::{block_contains, parse_policy, ParsedPolicy, PodPeer, Rule},
    table::{Block, PortSets, EMPTY},
};
pub use self::{
    ports::{range_prefixes, PortPrefix, PortSet},
    table::RuleTable,
};
use crate::{
    fast_hash::{FastMap, FastSet},
    model::{Cluster, Labels, NamedPort, PodKey, PolicyKey},
};

/// Traffic direction, relative to the local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic to the pod; the peer is the source.
    Ingress,
    /// Traffic from the pod; the peer is the destination.
    Egress,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn index(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// Something wrong in a policy (or elsewhere) that made the compiler deny more than asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub policy: Option<PolicyKey>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(key) => write!(f, "NetworkPolicy {key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What one direction of one endpoint enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionRules {
    /// No policy isolates the pod in this direction: everything is allowed.
    Unisolated,
    /// Isolated, and a policy that applies is invalid: nothing is allowed.
    FailClosed,
    /// Isolated: only what the table allows.
    Rules(Arc<RuleTable>),
}

impl DirectionRules {
    /// Whether a new flow with this peer, IP protocol number and destination port is allowed.
    pub fn allows(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        match self {
            DirectionRules::Unisolated => true,
            DirectionRules::FailClosed => false,
            DirectionRules::Rules(table) => table.allows(peer, proto, port),
        }
    }
}

/// The rules of one local endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRules {
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl EndpointRules {
    pub fn get(&self, direction: Direction) -> &DirectionRules {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn unisolated() -> Self {
        Self {
            ingress: DirectionRules::Unisolated,
            egress: DirectionRules::Unisolated,
        }
    }
}

/// The result of [`compile`].
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// Every local endpoint, by address.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointRules>,
    pub problems: Vec<Problem>,
    /// Local endpoints whose pod the model does not (yet) have, by address: closed wherever a
    /// policy of the pod's namespace isolates, until the pod appears.
    pub unknown_pods: BTreeMap<Ipv4Addr, PodKey>,
    /// PEERS entries each policy's tables take (a table shared by several policies counts for
    /// each): which policies to leave out first when the maps cannot hold them all.
    pub footprints: BTreeMap<PolicyKey, usize>,
}

impl Compiled {
    /// The datapath's verdict on a new flow `src → dst`: the source's egress rules if it is a local
    /// endpoint, and the destination's ingress rules if it is one.
    pub fn flow_allowed(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
        let egress_ok = self
            .endpoints
            .get(&src)
            .is_none_or(|e| e.egress.allows(dst, proto, port));
        let ingress_ok = self
            .endpoints
            .get(&dst)
            .is_none_or(|e| e.ingress.allows(src, proto, port));
        egress_ok && ingress_ok
    }
}

/// Compiles the rules of this node's endpoints. `local` lists each endpoint's address and, when
/// known, its pod. The local address is authoritative for that pod (it overrides the model's
/// `status.podIP`), and another pod in the model claiming it is treated as stale. An endpoint with
/// no pod key is selected by no policy (not isolated) but its address still falls in ipBlocks. One
/// whose pod is missing from the model (its Pod not seen yet, or rejected by the source) fails
/// closed in every direction a policy of its namespace isolates: its labels, unknown, might be
/// selected by any of them, and guessing "no labels" would open a pod a policy means to isolate.
pub fn compile(cluster: &Cluster, local: &[(Ipv4Addr, Option<PodKey>)]) -> Compiled {
    compile_excluding(cluster, local, &BTreeSet::new())
}

/// [`compile`], with the policies in `left_out` failed closed (the pods they select deny every
/// direction they isolate) and reported: for policies that do not fit in the datapath's maps.
pub fn compile_excluding(
    cluster: &Cluster,
    local: &[(Ipv4Addr, Option<PodKey>)],
    left_out: &BTreeSet<PolicyKey>,
) -> Compiled {
    let mut problems = Vec::new();
    let policies: Vec<ParsedPolicy> = cluster
        .policies()
        .map(|p| {
            let (mut parsed, found) = parse_policy(p);
            problems.extend(found);
            if left_out.contains(&parsed.key) {
                parsed.fail_closed = true;
                problems.push(Problem {
                    policy: Some(parsed.key.clone()),
                    message: "its rules do not fit in the datapath's policy maps (with the rest \
                              of the node's); the pods it selects are isolated"
                        .to_owned(),
                });
            }
            parsed
        })
        .collect();
    let mut compiler = Compiler::new(cluster, local, &policies);
    let endpoints = local
        .iter()
        .map(|(ip, key)| (*ip, compiler.endpoint(key.as_ref())))
        .collect();
    let unknown_pods = local
        .iter()
        .filter_map(|(ip, key)| Some((*ip, key.clone()?)))
        .filter(|(_, key)| cluster.pod(key).is_none())
        .collect();
    let footprints = compiler.footprints();
    Compiled {
        endpoints,
        problems,
        unknown_pods,
        footprints,
    }
}

/// A pod that can be a peer: it has an address.
struct PeerPod<'a> {
    ip: Ipv4Addr,
    ports: &'a [NamedPort],
}

/// Tables are shared between endpoints selected by the same policies (and, when the ingress rules
/// name ports, having the same named ports).
#[derive(PartialEq, Eq, Hash)]
struct TableKey {
    direction: Direction,
    policies: Vec<u32>,
    ports: Option<Vec<NamedPort>>,
}

struct Compiler<'a> {
    cluster: &'a Cluster,
    policies: &'a [ParsedPolicy],
    policies_by_ns: FastMap<&'a str, Vec<u32>>,
    pods: Vec<PeerPod<'a>>,
    pod_labels: Vec<&'a Labels>,
    pods_by_ns: FastMap<&'a str, Vec<u32>>,
    namespaces: Vec<(&'a str, Labels)>,
    sets: PortSets,
    /// Interned numeric port set of every rule: `[policy][direction][rule]`.
    numeric: Vec<[Vec<u32>; 2]>,
    selected: FastMap<(Option<&'a str>, &'a PodPeer), Arc<[u32]>>,
    rule_pods: FastMap<(u32, Direction, u32), Arc<[u32]>>,
    tables: FastMap<TableKey, Arc<RuleTable>>,
    distinct: FastSet<Arc<RuleTable>>,
    /// PEERS entries of the distinct tables each policy is part of, by policy index.
    footprint: Vec<usize>,
}

impl<'a> Compiler<'a> {
    fn new(
        cluster: &'a Cluster,
        local: &'a [(Ipv4Addr, Option<PodKey>)],
        policies: &'a [ParsedPolicy],
    ) -> Self {
        let mut policies_by_ns: FastMap<&str, Vec<u32>> = FastMap::default();
        for (i, p) in policies.iter().enumerate() {
            policies_by_ns
                .entry(p.namespace())
                .or_default()
                .push(i as u32);
        }
        let mut sets = PortSets::new();
        let numeric = policies
            .iter()
            .map(|p| {
                p.rules.each_ref().map(|rules| {
                    rules
                        .iter()
                        .map(|r| sets.intern(r.ports.numeric.clone()))
                        .collect()
                })
            })
            .collect();
        let mut compiler = Self {
            cluster,
            policies,
            policies_by_ns,
            pods: Vec::new(),
            pod_labels: Vec::new(),
            pods_by_ns: FastMap::default(),
            namespaces: cluster
                .namespace_names()
                .map(|ns| (ns, cluster.namespace_labels(ns)))
                .collect(),
            sets,
            numeric,
            selected: FastMap::default(),
            rule_pods: FastMap::default(),
            tables: FastMap::default(),
            distinct: FastSet::default(),
            footprint: vec![0; policies.len()],
        };
        compiler.index_pods(local);
        compiler
    }

    /// Indexes the pods that have an address, with local addresses taking precedence.
    fn index_pods(&mut self, local: &'a [(Ipv4Addr, Option<PodKey>)]) {
        let mut local_ip: FastMap<&PodKey, Ipv4Addr> = FastMap::default();
        let mut local_owner: FastMap<Ipv4Addr, Option<&PodKey>> = FastMap::default();
        for (ip, key) in local {
            local_owner.insert(*ip, key.as_ref());
            if let Some(key) = key {
                local_ip.insert(key, *ip);
            }
        }
        for pod in self.cluster.pods() {
            let ip = match local_ip.get(&pod.key) {
                Some(ip) => Some(*ip),
                None => pod.ip.filter(|ip| match local_owner.get(ip) {
                    Some(Some(owner)) => *owner == &pod.key,
                    _ => true,
                }),
            };
            let Some(ip) = ip else { continue };
            let index = self.pods.len() as u32;
            self.pods.push(PeerPod {
                ip,
                ports: &pod.ports,
            });
            self.pod_labels.push(&pod.labels);
            self.pods_by_ns
                .entry(pod.key.namespace.as_str())
                .or_default()
                .push(index);
        }
    }

    fn endpoint(&mut self, key: Option<&PodKey>) -> EndpointRules {
        let Some(key) = key else {
            return EndpointRules::unisolated();
        };
        let Some(pod) = self.cluster.pod(key) else {
            return self.unknown_pod(key);
        };
        let (labels, ports) = (&pod.labels, &pod.ports[..]);
        let mut fail = [false; 2];
        let mut selecting: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for &i in self
            .policies_by_ns
            .get(key.namespace.as_str())
            .into_iter()
            .flatten()
        {
            let policy = &self.policies[i as usize];
            let selected = policy.selects(labels);
            if selected == Some(false) {
                continue;
            }
            for d in Direction::ALL {
                if !policy.isolates[d.index()] {
                    continue;
                }
                if selected.is_none() || policy.fail_closed {
                    fail[d.index()] = true;
                } else {
                    selecting[d.index()].push(i);
                }
            }
        }
        let [ingress, egress] = Direction::ALL.map(|d| {
            if fail[d.index()] {
                DirectionRules::FailClosed
            } else if selecting[d.index()].is_empty() {
                DirectionRules::Unisolated
            } else {
                DirectionRules::Rules(self.table(d, &selecting[d.index()], ports))
            }
        });
        EndpointRules { ingress, egress }
    }

    fn footprints(&self) -> BTreeMap<PolicyKey, usize> {
        self.policies
            .iter()
            .zip(&self.footprint)
            .filter(|(_, &n)| n > 0)
            .map(|(p, &n)| (p.key.clone(), n))
            .collect()
    }

    /// Closed in each direction some policy of the pod's namespace isolates: any of them might
    /// select the pod once its labels are known.
    fn unknown_pod(&self, key: &PodKey) -> EndpointRules {
        let isolated = |d: Direction| {
            self.policies_by_ns
                .get(key.namespace.as_str())
                .into_iter()
                .flatten()
                .any(|&i| self.policies[i as usize].isolates[d.index()])
        };
        let [ingress, egress] = Direction::ALL.map(|d| {
            if isolated(d) {
                DirectionRules::FailClosed
            } else {
                DirectionRules::Unisolated
            }
        });
        EndpointRules { ingress, egress }
    }

    fn table(&mut self, d: Direction, policies: &[u32], ports: &[NamedPort]) -> Arc<RuleTable> {
        let names_ports = d == Direction::Ingress
            && policies.iter().any(|&p| {
                self.policies[p as usize].rules[d.index()]
                    .iter()
                    .any(|r| !r.ports.named.is_empty())
            });
        let key = TableKey {
            direction: d,
            policies: policies.to_vec(),
            ports: names_ports.then(|| ports.to_vec()),
        };
        if let Some(table) = self.tables.get(&key) {
            return table.clone();
        }
        let built = self.build_table(d, policies, ports);
        let table = match self.distinct.get(&built) {
            Some(existing) => existing.clone(),
            None => {
                for &p in policies {
                    self.footprint[p as usize] += built.entries.len();
                }
                let table = Arc::new(built);
                self.distinct.insert(table.clone());
                table
            }
        };
        self.tables.insert(key, table.clone());
        table
    }

    fn build_table(
        &mut self,
        d: Direction,
        policies: &[u32],
        local_ports: &[NamedPort],
    ) -> RuleTable {
        let all_policies = self.policies;
        let mut blocks: Vec<Block<'a>> = Vec::new();
        for &p in policies {
            for (r, rule) in all_policies[p as usize].rules[d.index()].iter().enumerate() {
                let numeric = self.numeric[p as usize][d.index()][r];
                let rule_pods = self.rule_pods(p, d, r as u32);
                if d == Direction::Ingress || rule.ports.named.is_empty() {
                    let ports = self.resolve(numeric, rule, local_ports);
                    self.push_uniform(&mut blocks, rule, &rule_pods, ports);
                } else {
                    self.push_per_destination(&mut blocks, rule, &rule_pods, numeric);
                }
            }
        }
        table::build(&blocks, &mut self.sets)
    }

    /// Blocks of a rule whose port set is the same for every peer.
    fn push_uniform(&self, blocks: &mut Vec<Block<'a>>, rule: &'a Rule, pods: &[u32], ports: u32) {
        if ports == EMPTY {
            return;
        }
        if rule.peers.all {
            blocks.push(block(Ipv4Net::default(), &[], ports));
            return;
        }
        for b in &rule.peers.blocks {
            blocks.push(block(b.cidr, &b.except, ports));
        }
        for &pod in pods {
            blocks.push(block(host(self.pods[pod as usize].ip), &[], ports));
        }
    }

    /// Blocks of an egress rule with named ports: addresses get the numeric ports, and every
    /// destination pod the rule covers gets a `/32` with the ports its own containers name.
    fn push_per_destination(
        &mut self,
        blocks: &mut Vec<Block<'a>>,
        rule: &'a Rule,
        pods: &[u32],
        numeric: u32,
    ) {
        // Addresses (every one, or the ipBlocks) with the numeric ports...
        self.push_uniform(blocks, rule, &[], numeric);
        // ...plus, for the pods among them, what their named ports add;
        for i in 0..self.pods.len() {
            let PeerPod { ip, ports } = self.pods[i];
            let in_block = rule.peers.blocks.iter().any(|b| block_contains(b, ip));
            if rule.peers.all || in_block {
                let resolved = self.resolve(numeric, rule, ports);
                if resolved != numeric {
                    blocks.push(block(host(ip), &[], resolved));
                }
            }
        }
        // ...and the pods the selectors match, with their numeric and named ports.
        for &pod in pods {
            let PeerPod { ip, ports } = self.pods[pod as usize];
            let resolved = self.resolve(numeric, rule, ports);
            if resolved != EMPTY {
                blocks.push(block(host(ip), &[], resolved));
            }
        }
    }

    /// The rule's port set for a destination pod with these named ports.
    fn resolve(&mut self, numeric: u32, rule: &Rule, ports: &[NamedPort]) -> u32 {
        if rule.ports.named.is_empty() {
            return numeric;
        }
        let named: Vec<_> = ports
            .iter()
            .filter(|np| {
                rule.ports
                    .named
                    .iter()
                    .any(|(name, proto)| *name == np.name && *proto == np.protocol)
            })
            .map(|np| (np.protocol, np.port..=np.port))
            .collect();
        if named.is_empty() {
            return numeric;
        }
        let named = self.sets.intern(PortSet::from_ranges(named));
        let mut ids = [numeric, named];
        ids.sort_unstable();
        self.sets.union(&ids)
    }

    /// The pods a rule's selector peers match (sorted indices into `self.pods`).
    fn rule_pods(&mut self, p: u32, d: Direction, r: u32) -> Arc<[u32]> {
        if let Some(pods) = self.rule_pods.get(&(p, d, r)) {
            return pods.clone();
        }
        let policy = &self.policies[p as usize];
        let rule = &policy.rules[d.index()][r as usize];
        let mut pods: Vec<u32> = Vec::new();
        for peer in &rule.peers.pods {
            pods.extend(self.selected_pods(policy.namespace(), peer).iter());
        }
        pods.sort_unstable();
        pods.dedup();
        let pods: Arc<[u32]> = pods.into();
        self.rule_pods.insert((p, d, r), pods.clone());
        pods
    }

    /// The pods one selector peer matches, cached by (scope, selectors).
    fn selected_pods(&mut self, policy_ns: &'a str, peer: &'a PodPeer) -> Arc<[u32]> {
        let scope = peer.namespaces.is_none().then_some(policy_ns);
        if let Some(pods) = self.selected.get(&(scope, peer)) {
            return pods.clone();
        }
        let namespaces: Vec<&str> = match &peer.namespaces {
            None => vec![policy_ns],
            Some(selector) => self
                .namespaces
                .iter()
                .filter(|(_, labels)| selector.matches(labels))
                .map(|(ns, _)| *ns)
                .collect(),
        };
        let mut pods = Vec::new();
        for ns in namespaces {
            let candidates = self.pods_by_ns.get(ns).into_iter().flatten();
            pods.extend(candidates.filter(|&&i| peer.pods.matches(self.pod_labels[i as usize])));
        }
        pods.sort_unstable();
        let pods: Arc<[u32]> = pods.into();
        self.selected.insert((scope, peer), pods.clone());
        pods
    }
}

fn block(net: Ipv4Net, except: &[Ipv4Net], ports: u32) -> Block<'_> {
    Block { net, except, ports }
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(ip)
}
