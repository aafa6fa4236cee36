//! [`Incremental`]: the compiler that keeps its work between compilations, so that a change costs
//! what it touches rather than what the cluster holds.
//!
//! # What is kept, and when each piece is redone
//!
//! Every compilation first compares the model with what the last one saw (by `Arc` pointer, then by
//! content), which is a walk over the model's keys and no more:
//!
//! - **Policies** get a stable id while they exist. One whose content changed, or that was left out
//!   or put back, is *changed*, and so is its namespace.
//! - **Peer pods** (pods with an address, a local endpoint's address overriding `status.podIP`) get
//!   a stable id too. One that appeared, went, or whose content or address changed is *changed*,
//!   with how it looked before and after.
//! - **Namespaces**' labels as namespace selectors see them; a namespace whose labels changed is
//!   changed.
//!
//! Then what those changes can reach is dropped, and only that is recomputed:
//!
//! - A **selector result** (a peer's pod selector in its scope → pod ids) is dropped when a changed
//!   pod matches it before or after the change (joining, leaving, or moving while selected), or a
//!   changed namespace's labels flip its namespace selector. A pod that matches neither before nor
//!   after is in the result neither time, so nothing else can change it.
//! - A **table** (direction, the policies selecting the endpoint, its named ports where they
//!   matter) is a function of those policies, the selector results it read and the addresses and
//!   ports of the pods in them: it is dropped when one of its policies changed or one of its
//!   selector results was dropped. An egress rule with named ports and address peers reads every
//!   pod in its blocks, so a table holding one is dropped on any pod change.
//! - An **endpoint's selection** (which policies isolate it and select it) is redone when its pod
//!   changed or a policy of its namespace did.
//!
//! What a compilation no longer uses is dropped at its end, so what is kept is what this node
//! needs. When many pods changed at once (a relist), everything derived is rebuilt, which is cheaper
//! than checking each change against each selector. Tables equal in content share one `Arc`, so the
//! planner's comparisons stay pointer comparisons.
//!
//! [`super::compile`] is this code starting empty; tests compare the two after every change of long
//! random sequences.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
};

use ipnet::Ipv4Net;

use super::{
    policy::{block_contains, PodPeer, Rule, RulePorts},
    table::{self, Block, PortSets, EMPTY},
    tiers::{Action, PortMarks, Tier},
    Compiled, Direction, DirectionRules, EndpointRules, Problem, RuleTable,
};
use crate::{
    cluster_policy::{ClusterPolicy, ClusterRule},
    fast_hash::{FastMap, FastSet},
    model::{Cluster, Labels, NamedPort, PodInfo, PodKey, Policy, PolicyKey},
};

/// More changed pods than this in one compilation: rebuild what is derived instead of checking.
const MASS_CHANGE: usize = 1024;

/// Values under stable `u32` ids; freed ids are reused.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, item: T) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.items[id as usize] = Some(item);
                id
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        }
    }

    fn remove(&mut self, id: u32) -> Option<T> {
        let item = self.items.get_mut(id as usize)?.take();
        if item.is_some() {
            self.free.push(id);
        }
        item
    }

    fn get(&self, id: u32) -> &T {
        self.items[id as usize].as_ref().expect("ids are live")
    }

    fn get_mut(&mut self, id: u32) -> &mut T {
        self.items[id as usize].as_mut().expect("ids are live")
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flatten()
    }
}

struct PolicyEntry {
    policy: Arc<Policy>,
    /// Left out of this compilation (it does not fit the maps): its pods fail closed.
    left_out: bool,
}

impl PolicyEntry {
    fn fail_closed(&self) -> bool {
        self.left_out || self.policy.parsed.fail_closed
    }
}

/// A pod that can be a peer: it has an address.
struct PeerPod {
    info: Arc<PodInfo>,
    ip: Ipv4Addr,
}

/// A pod selector peer in its scope: the policy's namespace when it has no namespace selector.
type SelectorKey = (Option<String>, PodPeer);

/// Tables are shared between endpoints selected by the same policies (and, when the ingress rules
/// name ports, having the same named ports).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TableKey {
    direction: Direction,
    /// The NetworkPolicies selecting the endpoint, in key order.
    pub(super) policies: Vec<u32>,
    /// The endpoint's named ports, when an ingress rule of those policies names ports.
    pub(super) ports: Option<Vec<NamedPort>>,
    /// The ClusterNetworkPolicies applying to the endpoint in this direction, as positions in
    /// [`Incremental::cluster`] (evaluation order); empty for NetworkPolicy alone.
    pub(super) cluster: Vec<u32>,
    /// What the NetworkPolicy tier does (always `Isolated` when `cluster` is empty).
    pub(super) namespace_tier: NamespaceTier,
}

/// The NetworkPolicy tier of one endpoint direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum NamespaceTier {
    /// No NetworkPolicy isolates it: the Baseline tier and the default decide.
    Unisolated,
    /// `policies` isolate it: they decide whatever reaches this tier.
    Isolated,
    /// A NetworkPolicy that would isolate it cannot be enforced: whatever reaches this tier is
    /// denied.
    FailClosed,
}

struct CachedTable {
    table: Arc<RuleTable>,
    /// The selector results it was built from.
    selectors: Vec<SelectorKey>,
    /// It has an egress rule with named ports and address peers, which reads every pod.
    reads_every_pod: bool,
    /// It has a ClusterNetworkPolicy `nodes` peer, which reads the nodes.
    reads_nodes: bool,
    /// The compilation that last used it.
    used: u64,
}

/// What one direction of an endpoint gets, before tables are looked up.
#[derive(Clone)]
pub(super) enum Chosen {
    Unisolated,
    FailClosed,
    Table(TableKey),
}

pub(super) struct EndpointState {
    pub(super) key: Option<PodKey>,
    /// The model's pod (`None`: no key, or the model does not have it).
    pub(super) pod: Option<Arc<PodInfo>>,
    /// Per [`Direction::index`].
    pub(super) chosen: [Chosen; 2],
}

/// How a policy of an endpoint's namespace bears on one direction of it (see
/// [`Incremental::isolating`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isolation {
    /// It selects the pod and isolates the direction: its rules apply.
    Selects,
    /// It isolates the direction and selects the pod, or may (its pod selector is invalid), but
    /// cannot be enforced: invalid selector or policy types, or left out.
    Unenforceable,
    /// It isolates the direction and the pod's labels are unknown: it might select the pod.
    MaySelect,
}

/// A peer pod that appeared, went or changed: how it looked before and after.
struct PodChange {
    namespace: String,
    before: Option<Arc<PodInfo>>,
    after: Option<Arc<PodInfo>>,
}

#[derive(Default)]
struct Changes {
    policies: FastSet<u32>,
    policy_namespaces: FastSet<String>,
    pods: Vec<PodChange>,
    /// Namespaces whose labels changed: (name, before, after).
    namespaces: Vec<(String, Option<Labels>, Option<Labels>)>,
    /// The ClusterNetworkPolicies changed (any of them: they are few, and cluster-wide).
    cluster: bool,
    /// A node's labels or addresses changed.
    nodes: bool,
}

/// The compiler with its work kept between calls (see the module documentation).
#[derive(Default)]
pub struct Incremental {
    policies: Slab<PolicyEntry>,
    policy_ids: BTreeMap<PolicyKey, u32>,
    /// Policy ids per namespace, in key order.
    policies_by_ns: FastMap<String, Vec<u32>>,
    pods: Slab<PeerPod>,
    pod_ids: BTreeMap<PodKey, u32>,
    /// Peer pod ids by address (two pods can claim one), for [`Incremental::explain`].
    pods_by_ip: BTreeSet<(Ipv4Addr, u32)>,
    pods_by_ns: FastMap<String, BTreeSet<u32>>,
    /// Every namespace's labels as namespace selectors see them.
    namespaces: BTreeMap<String, Labels>,
    selected: FastMap<SelectorKey, Arc<[u32]>>,
    tables: FastMap<TableKey, CachedTable>,
    /// Every live table, so that equal contents share one `Arc`.
    distinct: FastSet<Arc<RuleTable>>,
    /// Every local endpoint of the last compilation.
    pub(super) endpoints: FastMap<Ipv4Addr, EndpointState>,
    generation: u64,
    /// The enforced ClusterNetworkPolicies in evaluation order (tier, priority, name).
    pub(super) cluster: Vec<Arc<ClusterPolicy>>,
    /// Every node's labels and IPv4 addresses, as `nodes` peers see them.
    nodes: BTreeMap<String, (Labels, Vec<Ipv4Addr>)>,
}

impl Incremental {
    /// Every node's labels and IPv4 addresses, as the last compilation saw them.
    pub(super) fn node_addresses(&self) -> impl Iterator<Item = &(Labels, Vec<Ipv4Addr>)> {
        self.nodes.values()
    }
}

impl Incremental {
    /// What [`super::compile_excluding`] gives for the same arguments, redoing only what changed
    /// since the last call.
    pub fn compile(
        &mut self,
        cluster: &Cluster,
        local: &[(Ipv4Addr, Option<PodKey>)],
        left_out: &BTreeSet<PolicyKey>,
    ) -> Compiled {
        self.generation += 1;
        let mut changes = Changes::default();
        self.sync_policies(cluster, left_out, &mut changes);
        let old_namespaces = self.sync_namespaces(cluster, &mut changes);
        self.sync_pods(cluster, local, &mut changes);
        self.sync_cluster_policies(cluster, &mut changes);
        self.sync_nodes(cluster, &mut changes);
        self.invalidate(&changes, &old_namespaces);

        let mut sets = PortSets::new();
        let endpoints = local
            .iter()
            .map(|(ip, key)| {
                let rules = self.endpoint(cluster, *ip, key.as_ref(), &changes, &mut sets);
                (*ip, rules)
            })
            .collect();
        let unknown_pods = local
            .iter()
            .filter_map(|(ip, key)| Some((*ip, key.clone()?)))
            .filter(|(_, key)| cluster.pod(key).is_none())
            .collect();
        let compiled = Compiled {
            endpoints,
            problems: self.problems(),
            cluster_problems: cluster
                .cluster_policies()
                .flat_map(|p| p.problems().iter().cloned())
                .chain(cluster.unenforced_cluster_policies().cloned())
                .collect(),
            unknown_pods,
            footprints: self.footprints(local),
        };
        self.forget_unused(local);
        compiled
    }

    /// Brings the policy ids in line with the model.
    fn sync_policies(
        &mut self,
        cluster: &Cluster,
        left_out: &BTreeSet<PolicyKey>,
        changes: &mut Changes,
    ) {
        enum Action {
            Add(Arc<Policy>, bool),
            Replace(u32, Arc<Policy>, bool),
            Remove(PolicyKey, u32),
        }
        let mut actions = Vec::new();
        let mut refreshed: Vec<(u32, Arc<Policy>)> = Vec::new();
        merge_join(
            cluster.policy_entries().iter(),
            self.policy_ids.iter(),
            |key, new, old| match (new, old) {
                (Some(policy), None) => {
                    actions.push(Action::Add(policy.clone(), left_out.contains(key)));
                }
                (None, Some(&id)) => actions.push(Action::Remove(key.clone(), id)),
                (Some(policy), Some(&id)) => {
                    let entry = self.policies.get(id);
                    let out = left_out.contains(key);
                    if Arc::ptr_eq(&entry.policy, policy) && entry.left_out == out {
                        return;
                    }
                    if entry.left_out == out && *entry.policy == **policy {
                        // Equal content under a new `Arc` (a model rebuilt): share the model's.
                        refreshed.push((id, policy.clone()));
                        return;
                    }
                    actions.push(Action::Replace(id, policy.clone(), out));
                }
                (None, None) => {}
            },
        );
        for (id, policy) in refreshed {
            self.policies.get_mut(id).policy = policy;
        }
        for action in actions {
            let (id, namespace) = match action {
                Action::Add(policy, left_out) => {
                    let key = policy.key().clone();
                    let id = self.policies.insert(PolicyEntry { policy, left_out });
                    self.policy_ids.insert(key.clone(), id);
                    let ids = self
                        .policies_by_ns
                        .entry(key.namespace.clone())
                        .or_default();
                    let policies = &self.policies;
                    let at = ids
                        .binary_search_by(|&other| policies.get(other).policy.key().cmp(&key))
                        .unwrap_or_else(|at| at);
                    ids.insert(at, id);
                    (id, key.namespace)
                }
                Action::Replace(id, policy, left_out) => {
                    let namespace = policy.key().namespace.clone();
                    *self.policies.get_mut(id) = PolicyEntry { policy, left_out };
                    (id, namespace)
                }
                Action::Remove(key, id) => {
                    self.policy_ids.remove(&key);
                    self.policies.remove(id);
                    if let Some(ids) = self.policies_by_ns.get_mut(&key.namespace) {
                        ids.retain(|&other| other != id);
                        if ids.is_empty() {
                            self.policies_by_ns.remove(&key.namespace);
                        }
                    }
                    (id, key.namespace)
                }
            };
            changes.policies.insert(id);
            changes.policy_namespaces.insert(namespace);
        }
    }

    /// Takes the namespaces' labels from the model; returns the previous ones.
    fn sync_namespaces(
        &mut self,
        cluster: &Cluster,
        changes: &mut Changes,
    ) -> BTreeMap<String, Labels> {
        let now: BTreeMap<String, Labels> = cluster
            .namespace_names()
            .map(|ns| (ns.to_owned(), cluster.namespace_labels(ns)))
            .collect();
        merge_join(now.iter(), self.namespaces.iter(), |name, new, old| {
            if new != old {
                changes
                    .namespaces
                    .push((name.clone(), old.cloned(), new.cloned()));
            }
        });
        std::mem::replace(&mut self.namespaces, now)
    }

    /// Brings the peer pods in line with the model and this node's endpoints.
    fn sync_pods(
        &mut self,
        cluster: &Cluster,
        local: &[(Ipv4Addr, Option<PodKey>)],
        changes: &mut Changes,
    ) {
        let mut local_ip: FastMap<&PodKey, Ipv4Addr> = FastMap::default();
        let mut local_owner: FastMap<Ipv4Addr, Option<&PodKey>> = FastMap::default();
        for (ip, key) in local {
            local_owner.insert(*ip, key.as_ref());
            if let Some(key) = key {
                local_ip.insert(key, *ip);
            }
        }
        // The address a pod has as a peer: its local one, else its own unless a local endpoint
        // of another pod holds it (then it is stale).
        let address = |pod: &PodInfo| match local_ip.get(&pod.key) {
            Some(ip) => Some(*ip),
            None => pod.ip.filter(|ip| match local_owner.get(ip) {
                Some(Some(owner)) => *owner == &pod.key,
                _ => true,
            }),
        };
        // Each pod that changed, and what it is now (`None`: no longer a peer).
        let mut actions: Vec<(PodKey, Option<PeerPod>)> = Vec::new();
        let mut refreshed: Vec<(u32, Arc<PodInfo>)> = Vec::new();
        merge_join(
            cluster.pod_entries().iter(),
            self.pod_ids.iter(),
            |key, new, old| {
                let new = new.and_then(|info| Some((info, address(info)?)));
                let old = old.map(|&id| (id, self.pods.get(id)));
                match (new, old) {
                    (None, None) => {}
                    (Some((info, ip)), Some((id, old))) if old.ip == ip => {
                        if Arc::ptr_eq(&old.info, info) {
                            return;
                        }
                        if old.info == *info {
                            // Equal content under a new `Arc`: share the model's.
                            refreshed.push((id, info.clone()));
                            return;
                        }
                        let info = info.clone();
                        actions.push((key.clone(), Some(PeerPod { info, ip })));
                    }
                    (new, _) => {
                        let new = new.map(|(info, ip)| PeerPod {
                            info: info.clone(),
                            ip,
                        });
                        actions.push((key.clone(), new));
                    }
                }
            },
        );
        for (id, info) in refreshed {
            self.pods.get_mut(id).info = info;
        }
        for (key, new) in actions {
            let before = match self.pod_ids.get(&key) {
                Some(&id) if new.is_some() => Some(self.pods.get(id).info.clone()),
                Some(&id) => {
                    self.pod_ids.remove(&key);
                    self.pods_by_ip.remove(&(self.pods.get(id).ip, id));
                    if let Some(ids) = self.pods_by_ns.get_mut(&key.namespace) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.pods_by_ns.remove(&key.namespace);
                        }
                    }
                    self.pods.remove(id).map(|p| p.info)
                }
                None => None,
            };
            let after = new.as_ref().map(|pod| pod.info.clone());
            if let Some(pod) = new {
                let ip = pod.ip;
                match self.pod_ids.get(&key) {
                    Some(&id) => {
                        let old = std::mem::replace(self.pods.get_mut(id), pod);
                        self.pods_by_ip.remove(&(old.ip, id));
                        self.pods_by_ip.insert((ip, id));
                    }
                    None => {
                        let id = self.pods.insert(pod);
                        self.pods_by_ip.insert((ip, id));
                        self.pod_ids.insert(key.clone(), id);
                        self.pods_by_ns
                            .entry(key.namespace.clone())
                            .or_default()
                            .insert(id);
                    }
                }
            }
            changes.pods.push(PodChange {
                namespace: key.namespace,
                before,
                after,
            });
        }
    }

    /// Takes the ClusterNetworkPolicies from the model, in evaluation order.
    fn sync_cluster_policies(&mut self, cluster: &Cluster, changes: &mut Changes) {
        let mut now: Vec<Arc<ClusterPolicy>> =
            cluster.cluster_policy_entries().values().cloned().collect();
        now.sort_by(|a, b| a.order().cmp(&b.order()));
        let same = now.len() == self.cluster.len()
            && now
                .iter()
                .zip(&self.cluster)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if !same {
            changes.cluster = true;
        }
        self.cluster = now;
    }

    /// Takes the nodes' labels and addresses from the model (only while some policy could read
    /// them: without ClusterNetworkPolicies nothing does).
    fn sync_nodes(&mut self, cluster: &Cluster, changes: &mut Changes) {
        if self.cluster.is_empty() {
            self.nodes.clear();
            return;
        }
        // Compared in place first: this runs on every compilation, and nodes rarely change.
        let same = cluster.nodes().count() == self.nodes.len()
            && cluster
                .nodes()
                .zip(&self.nodes)
                .all(|(n, (name, (labels, addresses)))| {
                    n.name == *name && n.labels == *labels && n.addresses == *addresses
                });
        if !same {
            changes.nodes = true;
            self.nodes = cluster
                .nodes()
                .map(|n| (n.name.clone(), (n.labels.clone(), n.addresses.clone())))
                .collect();
        }
    }

    /// Drops the selector results and tables the changes can reach.
    fn invalidate(&mut self, changes: &Changes, old_namespaces: &BTreeMap<String, Labels>) {
        if changes.cluster || changes.nodes {
            self.tables.retain(|key, cached| {
                !(changes.cluster && !key.cluster.is_empty() || changes.nodes && cached.reads_nodes)
            });
        }
        if changes.pods.len() > MASS_CHANGE {
            self.selected.clear();
            self.tables.clear();
            self.distinct.clear();
            return;
        }
        let mut dirty: FastSet<SelectorKey> = FastSet::default();
        if !changes.pods.is_empty() || !changes.namespaces.is_empty() {
            let new_namespaces = &self.namespaces;
            self.selected.retain(|key, _| {
                let stale = reaches(key, changes, old_namespaces, new_namespaces);
                if stale {
                    dirty.insert(key.clone());
                }
                !stale
            });
        }
        if changes.policies.is_empty() && dirty.is_empty() && changes.pods.is_empty() {
            return;
        }
        self.tables.retain(|key, cached| {
            let stale = key.policies.iter().any(|p| changes.policies.contains(p))
                || cached.selectors.iter().any(|s| dirty.contains(s))
                || (cached.reads_every_pod && !changes.pods.is_empty());
            !stale
        });
    }

    fn endpoint(
        &mut self,
        cluster: &Cluster,
        ip: Ipv4Addr,
        key: Option<&PodKey>,
        changes: &Changes,
        sets: &mut PortSets,
    ) -> EndpointRules {
        let pod = key.and_then(|k| cluster.pod_entries().get(k)).cloned();
        let current = self.endpoints.get(&ip).is_some_and(|state| {
            state.key.as_ref() == key
                && match (&state.pod, &pod) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
                && key.is_none_or(|k| !changes.policy_namespaces.contains(&k.namespace))
                // Which ClusterNetworkPolicies apply depends on every one of them and on the
                // namespace's labels.
                && !changes.cluster
                && (self.cluster.is_empty() || changes.namespaces.is_empty())
        });
        if !current {
            let chosen = self.choose(key, pod.as_deref());
            self.endpoints.insert(
                ip,
                EndpointState {
                    key: key.cloned(),
                    pod,
                    chosen,
                },
            );
        }
        let chosen = self.endpoints[&ip].chosen.clone();
        let [ingress, egress] = chosen.map(|c| match c {
            Chosen::Unisolated => DirectionRules::Unisolated,
            Chosen::FailClosed => DirectionRules::FailClosed,
            Chosen::Table(key) => DirectionRules::Rules(self.table(key, sets)),
        });
        EndpointRules { ingress, egress }
    }

    /// Which policies isolate and select the endpoint, per direction.
    fn choose(&self, key: Option<&PodKey>, pod: Option<&PodInfo>) -> [Chosen; 2] {
        let Some(key) = key else {
            return [Chosen::Unisolated, Chosen::Unisolated];
        };
        let mut fail = [false; 2];
        let mut selecting: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        self.isolating(key, pod, |id, d, how| match how {
            Isolation::Selects => selecting[d.index()].push(id),
            Isolation::Unenforceable | Isolation::MaySelect => fail[d.index()] = true,
        });
        let namespace_labels = self.namespaces.get(&key.namespace);
        Direction::ALL.map(|d| {
            let policies = std::mem::take(&mut selecting[d.index()]);
            let cluster = match self.applying_cluster_policies(namespace_labels, pod, d) {
                Some(cluster) => cluster,
                // Unknown labels, and some ClusterNetworkPolicy might apply.
                None => return Chosen::FailClosed,
            };
            let namespace_tier = if fail[d.index()] {
                NamespaceTier::FailClosed
            } else if policies.is_empty() {
                NamespaceTier::Unisolated
            } else {
                NamespaceTier::Isolated
            };
            if cluster.is_empty() {
                match namespace_tier {
                    NamespaceTier::FailClosed => return Chosen::FailClosed,
                    NamespaceTier::Unisolated => return Chosen::Unisolated,
                    NamespaceTier::Isolated => {}
                }
            }
            let names_ports = d == Direction::Ingress
                && (policies.iter().any(|&id| {
                    self.policies.get(id).policy.parsed.rules[d.index()]
                        .iter()
                        .any(|r| !r.ports.named.is_empty())
                }) || cluster.iter().any(|&i| {
                    self.cluster[i as usize].rules[d.index()]
                        .iter()
                        .any(|r| !r.ports.named.is_empty())
                }));
            Chosen::Table(TableKey {
                direction: d,
                policies,
                // A policy selects the pod only when its labels are known.
                ports: pod.filter(|_| names_ports).map(|p| p.ports.clone()),
                cluster,
                namespace_tier,
            })
        })
    }

    /// The ClusterNetworkPolicies with rules in direction `d` whose subject is the pod, as
    /// positions in [`Self::cluster`]; `None` when the pod's labels are unknown and one of them
    /// might select it (its namespace matches).
    pub(super) fn applying_cluster_policies(
        &self,
        namespace_labels: Option<&Labels>,
        pod: Option<&PodInfo>,
        d: Direction,
    ) -> Option<Vec<u32>> {
        let empty = Labels::new();
        let namespace_labels = namespace_labels.unwrap_or(&empty);
        let mut out = Vec::new();
        for (i, policy) in self.cluster.iter().enumerate() {
            if policy.rules[d.index()].is_empty()
                || !policy.subject.namespaces.matches(namespace_labels)
            {
                continue;
            }
            match pod {
                None => return None,
                Some(pod) if policy.subject.pods.matches(&pod.labels) => out.push(i as u32),
                Some(_) => {}
            }
        }
        Some(out)
    }

    /// Calls `f(policy id, direction, how)` for every policy of the pod's namespace, in key order,
    /// and every direction it isolates the pod in (or may: `pod` is `None` when its labels are
    /// unknown). The one place selection is decided, for [`Self::choose`] and
    /// [`Incremental::explain`] alike.
    pub(super) fn isolating(
        &self,
        key: &PodKey,
        pod: Option<&PodInfo>,
        mut f: impl FnMut(u32, Direction, Isolation),
    ) {
        let in_namespace = self
            .policies_by_ns
            .get(&key.namespace)
            .map_or(&[][..], Vec::as_slice);
        for &id in in_namespace {
            let entry = self.policies.get(id);
            let policy = &entry.policy.parsed;
            let how = match pod {
                // Unknown labels: closed wherever a policy of the namespace isolates, as any of
                // them might select the pod.
                None => Isolation::MaySelect,
                Some(pod) => match policy.selects(&pod.labels) {
                    Some(false) => continue,
                    None => Isolation::Unenforceable,
                    Some(true) if entry.fail_closed() => Isolation::Unenforceable,
                    Some(true) => Isolation::Selects,
                },
            };
            for d in Direction::ALL {
                if policy.isolates[d.index()] {
                    f(id, d, how);
                }
            }
        }
    }

    /// The policy under an id that is live.
    pub(super) fn policy(&self, id: u32) -> &Policy {
        &self.policies.get(id).policy
    }

    /// The peer pods at an address, as the last compilation saw them (a local endpoint's address
    /// overrides `status.podIP`; a stale claim on a local address is no peer).
    pub(super) fn pods_at(&self, ip: Ipv4Addr) -> impl Iterator<Item = &PodInfo> + '_ {
        self.pods_by_ip
            .range((ip, 0)..=(ip, u32::MAX))
            .map(|&(_, id)| &*self.pods.get(id).info)
    }

    /// Whether a pod selector peer of a policy in `policy_ns` matches a pod: [`Self::selected_pods`]
    /// for one pod.
    pub(super) fn peer_selects(&self, policy_ns: &str, peer: &PodPeer, pod: &PodInfo) -> bool {
        let namespace = pod.key.namespace.as_str();
        let in_scope = match &peer.namespaces {
            None => namespace == policy_ns,
            Some(selector) => self
                .namespaces
                .get(namespace)
                .is_some_and(|labels| selector.matches(labels)),
        };
        in_scope && peer.pods.matches(&pod.labels)
    }

    fn table(&mut self, key: TableKey, sets: &mut PortSets) -> Arc<RuleTable> {
        if let Some(cached) = self.tables.get_mut(&key) {
            cached.used = self.generation;
            return cached.table.clone();
        }
        let mut built = if key.cluster.is_empty() {
            self.build_table(&key, sets)
        } else {
            self.build_tiered_table(&key, sets)
        };
        built.table = match self.distinct.get(&built.table) {
            Some(existing) => existing.clone(),
            None => {
                self.distinct.insert(built.table.clone());
                built.table
            }
        };
        let table = built.table.clone();
        self.tables.insert(key, built);
        table
    }

    fn build_table(&mut self, key: &TableKey, sets: &mut PortSets) -> CachedTable {
        let mut selectors = FastSet::default();
        let mut blocks: Vec<Block<'_>> = Vec::new();
        let policies = self.key_policies(key);
        let reads_every_pod =
            self.namespace_blocks(key, &policies, sets, &mut blocks, &mut selectors);
        let table = Arc::new(table::build(&blocks, sets));
        CachedTable {
            table,
            selectors: selectors.into_iter().collect(),
            reads_every_pod,
            reads_nodes: false,
            used: self.generation,
        }
    }

    fn key_policies(&self, key: &TableKey) -> Vec<Arc<Policy>> {
        key.policies
            .iter()
            .map(|&id| self.policies.get(id).policy.clone())
            .collect()
    }

    /// A table for an endpoint direction some ClusterNetworkPolicy applies to: every rule of every
    /// tier becomes blocks at its own layer (layers in evaluation order: the Admin rules, the
    /// NetworkPolicy tier, the Baseline rules), and each entry's value is what evaluating the
    /// layers covering it gives (`tiers.rs`).
    fn build_tiered_table(&mut self, key: &TableKey, sets: &mut PortSets) -> CachedTable {
        let d = key.direction;
        let mut selectors = FastSet::default();
        let mut blocks: Vec<Block<'_>> = Vec::new();
        let mut layers: Vec<Layer> = Vec::new();
        let mut reads_nodes = false;
        let cluster: Vec<Arc<ClusterPolicy>> = key
            .cluster
            .iter()
            .map(|&i| self.cluster[i as usize].clone())
            .collect();
        let local_ports = key.ports.clone().unwrap_or_default();
        let mut rule_blocks = |this: &mut Self,
                               tier: Tier,
                               blocks: &mut Vec<Block<'static>>,
                               layers: &mut Vec<Layer>,
                               selectors: &mut FastSet<SelectorKey>,
                               sets: &mut PortSets| {
            for policy in cluster.iter().filter(|p| p.tier == tier) {
                for rule in &policy.rules[d.index()] {
                    let layer = layers.len() as u32;
                    layers.push(Layer::Cluster(rule.action));
                    reads_nodes |= !rule.peers.nodes.is_empty();
                    this.cluster_rule_blocks(rule, d, &local_ports, layer, blocks, selectors, sets);
                }
            }
        };
        let mut owned: Vec<Block<'static>> = Vec::new();
        rule_blocks(
            self,
            Tier::Admin,
            &mut owned,
            &mut layers,
            &mut selectors,
            sets,
        );
        let namespace_layer = layers.len() as u32;
        layers.push(Layer::Namespace);
        rule_blocks(
            self,
            Tier::Baseline,
            &mut owned,
            &mut layers,
            &mut selectors,
            sets,
        );
        // Every address gets a verdict, even one no rule names (the default allows).
        owned.push(Block {
            layer: namespace_layer,
            ..block(Ipv4Net::default(), &[], EMPTY)
        });
        let policies = self.key_policies(key);
        let mut reads_every_pod = false;
        if key.namespace_tier == NamespaceTier::Isolated {
            reads_every_pod =
                self.namespace_blocks(key, &policies, sets, &mut blocks, &mut selectors);
            for b in &mut blocks {
                b.layer = namespace_layer;
            }
        }
        blocks.extend(owned);
        let namespace_tier = key.namespace_tier;
        let mut cache: FastMap<Vec<(u32, u32)>, u32> = FastMap::default();
        let mut active: Vec<(u32, u32)> = Vec::new();
        let table = table::build_with(&blocks, sets, |here, sets| {
            active.clear();
            active.extend(here.iter().map(|&b| {
                let b = &blocks[b as usize];
                (b.layer, b.ports)
            }));
            active.sort_unstable();
            active.dedup();
            if let Some(&id) = cache.get(&active) {
                return id;
            }
            let id = evaluate(&active, &layers, namespace_layer, namespace_tier, sets);
            cache.insert(active.clone(), id);
            id
        });
        CachedTable {
            table: Arc::new(table),
            selectors: selectors.into_iter().collect(),
            reads_every_pod,
            reads_nodes,
            used: self.generation,
        }
    }

    /// The blocks of one ClusterNetworkPolicy rule at `layer`.
    #[allow(clippy::too_many_arguments)]
    fn cluster_rule_blocks(
        &mut self,
        rule: &ClusterRule,
        d: Direction,
        local_ports: &[NamedPort],
        layer: u32,
        blocks: &mut Vec<Block<'static>>,
        selectors: &mut FastSet<SelectorKey>,
        sets: &mut PortSets,
    ) {
        let numeric = sets.intern_ref(&rule.ports.numeric);
        let at = |net, ports| Block {
            layer,
            ..block(net, &[], ports)
        };
        if rule.peers.all {
            blocks.push(at(Ipv4Net::default(), numeric));
        }
        for net in &rule.peers.networks {
            blocks.push(at(*net, numeric));
        }
        for selector in &rule.peers.nodes {
            for (labels, addresses) in self.nodes.values() {
                if selector.matches(labels) {
                    blocks.extend(addresses.iter().map(|ip| at(host(*ip), numeric)));
                }
            }
        }
        let mut pods: Vec<u32> = Vec::new();
        for peer in &rule.peers.pods {
            // Cluster-scoped: a namespace selector always, so no scope.
            pods.extend(self.selected_pods("", peer, selectors).iter());
        }
        pods.sort_unstable();
        pods.dedup();
        for id in pods {
            let pod = self.pods.get(id);
            // Named ports resolve against the destination: the local pod for ingress, the peer
            // for egress.
            let named_against = match d {
                Direction::Ingress => local_ports,
                Direction::Egress => &pod.info.ports[..],
            };
            let ports = resolve(sets, numeric, &rule.ports, named_against);
            if ports != EMPTY {
                blocks.push(at(host(pod.ip), ports));
            }
        }
    }

    /// The blocks of the NetworkPolicies of a table (at layer 0); returns whether they read every
    /// pod.
    fn namespace_blocks<'a>(
        &mut self,
        key: &TableKey,
        policies: &'a [Arc<Policy>],
        sets: &mut PortSets,
        blocks: &mut Vec<Block<'a>>,
        selectors: &mut FastSet<SelectorKey>,
    ) -> bool {
        let d = key.direction;
        let local_ports = key.ports.as_deref().unwrap_or_default();
        let mut reads_every_pod = false;
        for policy in policies {
            let namespace = policy.key().namespace.as_str();
            for rule in &policy.parsed.rules[d.index()] {
                let numeric = sets.intern_ref(&rule.ports.numeric);
                let mut pods: Vec<u32> = Vec::new();
                for peer in &rule.peers.pods {
                    pods.extend(self.selected_pods(namespace, peer, selectors).iter());
                }
                pods.sort_unstable();
                pods.dedup();
                if d == Direction::Ingress || rule.ports.named.is_empty() {
                    let ports = resolve(sets, numeric, &rule.ports, local_ports);
                    self.push_uniform(blocks, rule, &pods, ports);
                } else {
                    reads_every_pod |= rule.peers.all || !rule.peers.blocks.is_empty();
                    self.push_per_destination(blocks, rule, &pods, numeric, sets);
                }
            }
        }
        // A table is the union of every policy selecting the endpoint, so the same peer with the
        // same ports often comes from many of them: keep one block of each (the union is the
        // same), so the build sorts it once.
        let mut seen: FastSet<(Ipv4Net, u32)> = FastSet::default();
        blocks.retain(|b| !b.except.is_empty() || seen.insert((b.net, b.ports)));
        reads_every_pod
    }

    /// Blocks of a rule whose port set is the same for every peer.
    fn push_uniform<'a>(
        &self,
        blocks: &mut Vec<Block<'a>>,
        rule: &'a Rule,
        pods: &[u32],
        ports: u32,
    ) {
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
            blocks.push(block(host(self.pods.get(pod).ip), &[], ports));
        }
    }

    /// Blocks of an egress rule with named ports: addresses get the numeric ports, and every
    /// destination pod the rule covers gets a `/32` with the ports its own containers name.
    fn push_per_destination<'a>(
        &self,
        blocks: &mut Vec<Block<'a>>,
        rule: &'a Rule,
        pods: &[u32],
        numeric: u32,
        sets: &mut PortSets,
    ) {
        // Addresses (every one, or the ipBlocks) with the numeric ports...
        self.push_uniform(blocks, rule, &[], numeric);
        // ...plus, for the pods among them, what their named ports add;
        for pod in self.pods.iter() {
            let in_block = rule.peers.blocks.iter().any(|b| block_contains(b, pod.ip));
            if rule.peers.all || in_block {
                let resolved = resolve(sets, numeric, &rule.ports, &pod.info.ports);
                if resolved != numeric {
                    blocks.push(block(host(pod.ip), &[], resolved));
                }
            }
        }
        // ...and the pods the selectors match, with their numeric and named ports.
        for &id in pods {
            let pod = self.pods.get(id);
            let resolved = resolve(sets, numeric, &rule.ports, &pod.info.ports);
            if resolved != EMPTY {
                blocks.push(block(host(pod.ip), &[], resolved));
            }
        }
    }

    /// The pods one selector peer matches, kept until a change reaches them.
    fn selected_pods(
        &mut self,
        policy_ns: &str,
        peer: &PodPeer,
        used: &mut FastSet<SelectorKey>,
    ) -> Arc<[u32]> {
        let key: SelectorKey = (
            peer.namespaces.is_none().then(|| policy_ns.to_owned()),
            peer.clone(),
        );
        if let Some(pods) = self.selected.get(&key) {
            let pods = pods.clone();
            used.insert(key);
            return pods;
        }
        let namespaces: Vec<&str> = match &peer.namespaces {
            None => vec![policy_ns],
            Some(selector) => self
                .namespaces
                .iter()
                .filter(|(_, labels)| selector.matches(labels))
                .map(|(ns, _)| ns.as_str())
                .collect(),
        };
        let mut pods = Vec::new();
        for ns in namespaces {
            let candidates = self.pods_by_ns.get(ns).into_iter().flatten();
            pods.extend(
                candidates.filter(|&&id| peer.pods.matches(&self.pods.get(id).info.labels)),
            );
        }
        let pods: Arc<[u32]> = pods.into();
        self.selected.insert(key.clone(), pods.clone());
        used.insert(key);
        pods
    }

    /// Every policy's problems, in key order, and those left out.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (key, &id) in &self.policy_ids {
            let entry = self.policies.get(id);
            problems.extend(entry.policy.problems.iter().cloned());
            if entry.left_out {
                problems.push(Problem {
                    policy: Some(key.clone()),
                    message: "its rules do not fit in the datapath's policy maps (with the rest \
                              of the node's); the pods it selects are isolated"
                        .to_owned(),
                });
            }
        }
        problems
    }

    /// PEERS entries of the distinct tables each policy is part of: each table counted once, for
    /// the policies of the first endpoint direction (in `local` order) that uses it.
    fn footprints(&self, local: &[(Ipv4Addr, Option<PodKey>)]) -> BTreeMap<PolicyKey, usize> {
        let mut seen_keys: FastSet<&TableKey> = FastSet::default();
        let mut seen_tables: FastSet<*const RuleTable> = FastSet::default();
        let mut entries: FastMap<u32, usize> = FastMap::default();
        for (ip, _) in local {
            let Some(state) = self.endpoints.get(ip) else {
                continue;
            };
            for chosen in &state.chosen {
                let Chosen::Table(key) = chosen else { continue };
                if !seen_keys.insert(key) {
                    continue;
                }
                let table = &self.tables[key].table;
                if !seen_tables.insert(Arc::as_ptr(table)) || table.is_empty() {
                    continue;
                }
                for &id in &key.policies {
                    *entries.entry(id).or_default() += table.len();
                }
            }
        }
        entries
            .into_iter()
            .map(|(id, n)| (self.policies.get(id).policy.key().clone(), n))
            .collect()
    }

    /// Drops what this compilation did not use: endpoints gone, tables nobody points at, and
    /// selector results no kept table reads.
    fn forget_unused(&mut self, local: &[(Ipv4Addr, Option<PodKey>)]) {
        let here: FastSet<Ipv4Addr> = local.iter().map(|(ip, _)| *ip).collect();
        self.endpoints.retain(|ip, _| here.contains(ip));
        let generation = self.generation;
        self.tables.retain(|_, t| t.used == generation);
        self.distinct.retain(|t| Arc::strong_count(t) > 1);
        let read: FastSet<&SelectorKey> = self
            .tables
            .values()
            .flat_map(|t| t.selectors.iter())
            .collect();
        if read.len() < self.selected.len() {
            let keep: FastSet<SelectorKey> = read.into_iter().cloned().collect();
            self.selected.retain(|key, _| keep.contains(key));
        }
    }
}

/// Whether a change can alter what a selector peer matches.
fn reaches(
    (scope, peer): &SelectorKey,
    changes: &Changes,
    old_namespaces: &BTreeMap<String, Labels>,
    new_namespaces: &BTreeMap<String, Labels>,
) -> bool {
    if let Some(selector) = &peer.namespaces {
        let matches =
            |labels: &Option<Labels>| labels.as_ref().is_some_and(|l| selector.matches(l));
        if changes
            .namespaces
            .iter()
            .any(|(_, before, after)| matches(before) != matches(after))
        {
            return true;
        }
    }
    let selects = |namespace: &str, namespaces: &BTreeMap<String, Labels>, pod: &PodInfo| {
        let in_scope = match (&peer.namespaces, scope) {
            (Some(selector), _) => namespaces
                .get(namespace)
                .is_some_and(|l| selector.matches(l)),
            (None, Some(scope)) => scope == namespace,
            (None, None) => false,
        };
        in_scope && peer.pods.matches(&pod.labels)
    };
    changes.pods.iter().any(|c| {
        c.before
            .as_deref()
            .is_some_and(|p| selects(&c.namespace, old_namespaces, p))
            || c.after
                .as_deref()
                .is_some_and(|p| selects(&c.namespace, new_namespaces, p))
    })
}

/// The rule's port set for a destination pod with these named ports.
fn resolve(sets: &mut PortSets, numeric: u32, rule: &RulePorts, ports: &[NamedPort]) -> u32 {
    if rule.named.is_empty() {
        return numeric;
    }
    let named: Vec<_> = ports
        .iter()
        .filter(|np| {
            rule.named
                .iter()
                .any(|(name, proto)| *name == np.name && *proto == np.protocol)
        })
        .map(|np| (np.protocol, np.port..=np.port))
        .collect();
    if named.is_empty() {
        return numeric;
    }
    let named = sets.intern(super::PortSet::from_ranges(named));
    let mut ids = [numeric, named];
    ids.sort_unstable();
    sets.union(&ids)
}

/// Whether what [`resolve`] adds to a rule's numeric ports for a pod with these named ports allows
/// a packet with this protocol number and destination port.
pub(super) fn named_ports_allow(
    rule: &RulePorts,
    ports: &[NamedPort],
    proto: u8,
    port: u16,
) -> bool {
    ports.iter().any(|np| {
        np.port == port
            && np.protocol.number() == proto
            && rule
                .named
                .iter()
                .any(|(name, p)| *name == np.name && *p == np.protocol)
    })
}

/// Walks two maps sorted by the same key together, calling `f` once per key with the value each
/// has.
fn merge_join<'a, K: Ord + 'a, A: 'a, B: 'a>(
    a: impl Iterator<Item = (&'a K, &'a A)>,
    b: impl Iterator<Item = (&'a K, &'a B)>,
    mut f: impl FnMut(&'a K, Option<&'a A>, Option<&'a B>),
) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(&(ka, va)), None) => {
                f(ka, Some(va), None);
                a.next();
            }
            (None, Some(&(kb, vb))) => {
                f(kb, None, Some(vb));
                b.next();
            }
            (Some(&(ka, va)), Some(&(kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(ka, Some(va), None);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kb, None, Some(vb));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    f(ka, Some(va), Some(vb));
                    a.next();
                    b.next();
                }
            },
        }
    }
}

fn block(net: Ipv4Net, except: &[Ipv4Net], ports: u32) -> Block<'_> {
    Block {
        net,
        except,
        ports,
        layer: 0,
    }
}

/// What a layer of a tiered table is.
#[derive(Clone, Copy)]
enum Layer {
    /// One ClusterNetworkPolicy rule.
    Cluster(Action),
    /// The NetworkPolicy tier.
    Namespace,
}

/// The port set an entry gets from the (layer, port set) pairs covering it, sorted: Admin rules in
/// order, then the NetworkPolicy tier, then Baseline rules, then the default (`tiers.rs`).
fn evaluate(
    active: &[(u32, u32)],
    layers: &[Layer],
    namespace_layer: u32,
    namespace_tier: NamespaceTier,
    sets: &mut PortSets,
) -> u32 {
    let mut marks = PortMarks::open();
    let mut allowed_by_namespace: Vec<u32> = Vec::new();
    let mut admin_done = false;
    for &(layer, ports) in active {
        if layer >= namespace_layer && !admin_done {
            marks.end_admin_tier();
            admin_done = true;
        }
        match layers[layer as usize] {
            Layer::Namespace => allowed_by_namespace.push(ports),
            Layer::Cluster(action) if layer < namespace_layer => {
                marks.apply(sets.get(ports), action);
            }
            // Baseline is reached only when no NetworkPolicy isolates: one that does decides
            // everything left.
            Layer::Cluster(action) => {
                if namespace_tier == NamespaceTier::Unisolated {
                    marks.apply(sets.get(ports), action);
                }
            }
        }
    }
    if !admin_done {
        marks.end_admin_tier();
    }
    match namespace_tier {
        NamespaceTier::Unisolated => marks.default_allow(),
        NamespaceTier::Isolated => {
            allowed_by_namespace.sort_unstable();
            allowed_by_namespace.dedup();
            let allowed = sets.union(&allowed_by_namespace);
            marks.isolate(sets.get(allowed));
        }
        NamespaceTier::FailClosed => marks.isolate(&super::PortSet::empty()),
    }
    sets.intern(marks.to_port_set())
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(ip)
}
