//! From compiled rules to ordered map writes, remembering what the datapath holds.
//!
//! [`Programmer`] gives rule tables and port sets their ids and, for each new [`Compiled`], returns
//! the [`Plan`] that moves the maps from what is programmed to what is wanted:
//!
//! - Tables are shared by content: endpoints with equal rules point at one table id. When an
//!   endpoint's rules change and every endpoint that used its table moves to the same new content,
//!   the table is edited in place (a pod joining a peer set costs one write per table); otherwise
//!   the new content gets a fresh id, is written completely, and only then do endpoints switch to it.
//! - Port sets are shared by content, counted by the PEERS entries that use them, and deleted when
//!   the last one goes. The empty set is id 0 (`PORTSET_EMPTY`) and never written.
//! - An isolated direction with an empty table uses `TABLE_DENY_ALL`, a fail-closed one
//!   `TABLE_FAIL_CLOSED` (both deny; the kernel counts them apart); a direction that is not
//!   isolated uses `TABLE_ALLOW_ALL`. None has entries.
//!
//! # Applying a plan, and failures
//!
//! Apply the fields of a [`Plan`] in order (port-set upserts, peer upserts, endpoint rows, peer
//! deletes, port-set deletes): a packet judged at any moment sees, for its endpoint, either the old
//! or the new verdict, because nothing is deleted before the endpoint stops needing it and an
//! in-place table edit only mixes old and new entries of the same endpoints (the longest match
//! among them is always an old or a new answer). Upserts overwrite; a delete of a missing key
//! (ENOENT) is success.
//!
//! Then call [`Programmer::commit`] with the plan's id. If applying failed, call
//! [`Programmer::abort`]: the programmer then knows nothing for sure, treats every key the old state
//! or the plan could have written as possibly present, and the next plan rewrites everything under
//! fresh ids, points every endpoint at them, and deletes all of those keys. So a failure can never
//! leave the programmer believing a key is programmed when it is not, nor forget a key that might
//! be. Calling [`Programmer::plan`] while a plan is outstanding aborts it first (the safe
//! assumption). After an agent restart with pinned maps, start from [`Programmer::resume`] with the
//! keys the maps hold.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
};

use ipnet::Ipv4Net;
use thiserror::Error;
use weir_common::policy::{
    PeerKey, PortKey, PORTSET_EMPTY, PORT_PREFIX_ANY_PORT, PORT_PREFIX_ANY_PROTO, TABLE_ALLOW_ALL,
    TABLE_DENY_ALL, TABLE_FAIL_CLOSED,
};

use crate::{
    compile::{Compiled, Direction, DirectionRules, PortPrefix, PortSet, RuleTable},
    fast_hash::FastMap,
    model::Protocol,
};

/// The map writes from one state to the next, in the order they must be applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pass to [`Programmer::commit`] or [`Programmer::abort`].
    pub id: u64,
    /// PORTS entries to add: (port set, prefix).
    pub portset_upserts: Vec<(u32, PortPrefix)>,
    /// PEERS entries to add or overwrite: (table, peer prefix, port set or `PORTSET_EMPTY`).
    pub peer_upserts: Vec<(u32, Ipv4Net, u32)>,
    /// Endpoints whose tables change: (address, ingress table, egress table).
    pub endpoint_tables: Vec<(Ipv4Addr, u32, u32)>,
    /// PEERS entries to remove.
    pub peer_deletes: Vec<(u32, Ipv4Net)>,
    /// PORTS entries to remove.
    pub portset_deletes: Vec<(u32, PortPrefix)>,
}

impl Plan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.portset_upserts.is_empty()
            && self.peer_upserts.is_empty()
            && self.endpoint_tables.is_empty()
            && self.peer_deletes.is_empty()
            && self.portset_deletes.is_empty()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("plan {given} is not the outstanding plan ({outstanding:?})")]
    NotOutstanding {
        given: u64,
        outstanding: Option<u64>,
    },
}

/// What the maps hold (as far as the programmer knows).
#[derive(Clone, Debug, Default)]
struct State {
    tables: BTreeMap<u32, Arc<RuleTable>>,
    table_ids: FastMap<Arc<RuleTable>, u32>,
    portsets: BTreeMap<u32, Arc<PortSet>>,
    portset_ids: FastMap<Arc<PortSet>, u32>,
    /// PEERS entries using each port set.
    portset_refs: FastMap<u32, usize>,
    endpoints: BTreeMap<Ipv4Addr, (u32, u32)>,
}

/// Keys that may be in the maps although [`State`] does not list them (after a failed apply or a
/// restart). Their ids are not reused until a committed plan has deleted them.
#[derive(Clone, Debug, Default)]
struct Uncertain {
    peers: BTreeSet<(u32, Ipv4Net)>,
    ports: BTreeSet<(u32, PortPrefix)>,
    /// The endpoint rows may not say what `State::endpoints` says: rewrite them all.
    endpoints: bool,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    next: State,
}

/// Remembers what is programmed and plans the writes to reach each new compilation.
#[derive(Debug, Default)]
pub struct Programmer {
    state: State,
    uncertain: Uncertain,
    pending: Option<Pending>,
    next_plan: u64,
}

impl Programmer {
    /// A programmer for empty maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// A programmer for maps that already hold these keys (for example pinned maps after an agent
    /// restart): the first plan rewrites everything under other ids and deletes these keys.
    pub fn resume(
        peers: impl IntoIterator<Item = (u32, Ipv4Net)>,
        ports: impl IntoIterator<Item = (u32, PortPrefix)>,
    ) -> Self {
        Self {
            uncertain: Uncertain {
                peers: peers.into_iter().collect(),
                ports: ports.into_iter().collect(),
                endpoints: true,
            },
            ..Self::default()
        }
    }

    /// Plans the writes from the programmed state to `compiled`. The plan is outstanding until
    /// [`commit`](Self::commit) or [`abort`](Self::abort); planning again aborts it.
    pub fn plan(&mut self, compiled: &Compiled) -> Plan {
        if let Some(pending) = &self.pending {
            let id = pending.id;
            let _ = self.abort(id);
        }
        self.next_plan += 1;
        let id = self.next_plan;
        let (plan, next) = Planner::new(&self.state, &self.uncertain).run(compiled);
        self.pending = Some(Pending { id, next });
        Plan { id, ..plan }
    }

    /// The outstanding plan was applied completely.
    pub fn commit(&mut self, plan_id: u64) -> Result<(), PlanError> {
        let pending = self.take_pending(plan_id)?;
        self.state = pending.next;
        self.uncertain = Uncertain::default();
        Ok(())
    }

    /// The outstanding plan was not applied at all (not one write was made): drop it, knowing
    /// what the maps hold as before.
    pub fn discard(&mut self, plan_id: u64) -> Result<(), PlanError> {
        self.take_pending(plan_id).map(drop)
    }

    /// Applying the outstanding plan failed part-way: forget what is known (see the module docs).
    pub fn abort(&mut self, plan_id: u64) -> Result<(), PlanError> {
        let pending = self.take_pending(plan_id)?;
        let old = std::mem::take(&mut self.state);
        for state in [&old, &pending.next] {
            self.uncertain
                .peers
                .extend(state.peer_entries().map(|(t, n, _)| (t, n)));
            self.uncertain.ports.extend(state.port_entries());
        }
        self.uncertain.endpoints = true;
        Ok(())
    }

    /// The maps were emptied (for example recreated): the next plan writes everything.
    pub fn forget(&mut self) {
        *self = Self {
            uncertain: Uncertain {
                endpoints: true,
                ..Uncertain::default()
            },
            next_plan: self.next_plan,
            ..Self::default()
        };
    }

    /// The committed PEERS entries: (table, prefix, port set).
    pub fn peer_entries(&self) -> impl Iterator<Item = (u32, Ipv4Net, u32)> + '_ {
        self.state.peer_entries()
    }

    /// The committed PORTS entries: (port set, prefix).
    pub fn port_entries(&self) -> impl Iterator<Item = (u32, PortPrefix)> + '_ {
        self.state.port_entries()
    }

    /// The committed (ingress, egress) tables of an endpoint.
    pub fn endpoint_tables(&self, ip: Ipv4Addr) -> Option<(u32, u32)> {
        self.state.endpoints.get(&ip).copied()
    }

    /// How many tables and port sets are programmed.
    pub fn counts(&self) -> (usize, usize) {
        (self.state.tables.len(), self.state.portsets.len())
    }

    /// How many entries the PEERS and PORTS maps hold: the committed ones, and any left over
    /// from before that a plan has yet to delete.
    pub fn entry_counts(&self) -> (usize, usize) {
        let peers: usize = self.state.tables.values().map(|t| t.entries.len()).sum();
        let ports: usize = self.state.portsets.values().map(|p| p.len()).sum();
        (
            peers + self.uncertain.peers.len(),
            ports + self.uncertain.ports.len(),
        )
    }

    fn take_pending(&mut self, plan_id: u64) -> Result<Pending, PlanError> {
        match self.pending.take() {
            Some(p) if p.id == plan_id => Ok(p),
            other => {
                let outstanding = other.as_ref().map(|p| p.id);
                self.pending = other;
                Err(PlanError::NotOutstanding {
                    given: plan_id,
                    outstanding,
                })
            }
        }
    }
}

impl State {
    fn peer_entries(&self) -> impl Iterator<Item = (u32, Ipv4Net, u32)> + '_ {
        self.tables.iter().flat_map(move |(&id, table)| {
            table
                .entries
                .iter()
                .map(move |(net, set)| (id, *net, self.portset_id(set)))
        })
    }

    fn port_entries(&self) -> impl Iterator<Item = (u32, PortPrefix)> + '_ {
        self.portsets
            .iter()
            .flat_map(|(&id, set)| set.iter().map(move |p| (id, *p)))
    }

    fn portset_id(&self, set: &PortSet) -> u32 {
        if set.is_empty() {
            PORTSET_EMPTY
        } else {
            self.portset_ids.get(set).copied().unwrap_or(PORTSET_EMPTY)
        }
    }
}

/// Hands out the lowest ids not in use, in increasing order within one plan.
struct Ids {
    next: u32,
    max: u32,
}

impl Ids {
    fn take(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        while self.next < self.max && in_use(self.next) {
            self.next += 1;
        }
        let id = self.next;
        self.next = self.next.saturating_add(1);
        id
    }
}

/// One planning pass: the old state is read, the next one built, the writes recorded.
struct Planner<'s> {
    old: &'s State,
    uncertain: &'s Uncertain,
    next: State,
    plan: Plan,
    table_ids: Ids,
    portset_ids: Ids,
    uncertain_tables: BTreeSet<u32>,
    uncertain_portsets: BTreeSet<u32>,
}

/// The distinct tables wanted, with the endpoint directions wanting each.
struct Wanted {
    tables: Vec<Arc<RuleTable>>,
    /// The endpoint directions wanting each table.
    users: Vec<Vec<(Ipv4Addr, Direction)>>,
    /// Per endpoint, per direction: a fixed table id or an index into `tables`.
    endpoints: BTreeMap<Ipv4Addr, [Target; 2]>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Fixed(u32),
    Table(usize),
}

impl<'s> Planner<'s> {
    fn new(old: &'s State, uncertain: &'s Uncertain) -> Self {
        Self {
            old,
            uncertain,
            next: State {
                portsets: old.portsets.clone(),
                portset_ids: old.portset_ids.clone(),
                portset_refs: old.portset_refs.clone(),
                ..State::default()
            },
            plan: Plan::default(),
            table_ids: Ids {
                next: 1,
                max: TABLE_FAIL_CLOSED - 1,
            },
            portset_ids: Ids {
                next: 1,
                max: u32::MAX,
            },
            uncertain_tables: uncertain.peers.iter().map(|(t, _)| *t).collect(),
            uncertain_portsets: uncertain.ports.iter().map(|(p, _)| *p).collect(),
        }
    }

    fn run(mut self, compiled: &Compiled) -> (Plan, State) {
        let wanted = wanted(compiled);
        let ids = self.assign_table_ids(&wanted);
        for (index, table) in wanted.tables.iter().enumerate() {
            self.write_table(ids[index], table);
        }
        let removed: Vec<u32> = self
            .old
            .tables
            .keys()
            .copied()
            .filter(|id| !self.next.tables.contains_key(id))
            .collect();
        for id in removed {
            self.delete_table(id);
        }
        self.write_endpoints(&wanted, &ids);
        self.delete_unused_portsets();
        self.delete_uncertain();
        let Planner { mut plan, next, .. } = self;
        plan.portset_upserts.sort_unstable();
        // Within a table edited in place, longer prefixes are written first and removed last, so
        // an address is never judged by a new shorter prefix before the new longer prefix that
        // covers it exists, nor by an old shorter prefix once its old longer one is gone: every
        // lookup during the edit sees either its old or its new entry (found by the differential
        // test, which checks this after every single write).
        plan.peer_upserts.sort_unstable_by_key(|(table, net, _)| {
            (*table, std::cmp::Reverse(net.prefix_len()), *net)
        });
        plan.peer_deletes
            .sort_unstable_by_key(|(table, net)| (*table, net.prefix_len(), *net));
        plan.portset_deletes.sort_unstable();
        (plan, next)
    }

    /// Gives each wanted table an id: its current one if the content is programmed, else a table
    /// to edit in place, else a fresh one.
    fn assign_table_ids(&mut self, wanted: &Wanted) -> Vec<u32> {
        let mut ids: Vec<Option<u32>> = wanted
            .tables
            .iter()
            .map(|t| self.old.table_ids.get(t).copied())
            .collect();
        let kept: BTreeSet<u32> = ids.iter().flatten().copied().collect();
        let reusable = self.reusable_tables(wanted, &kept);
        for (index, id) in ids.iter_mut().enumerate() {
            if id.is_none() {
                *id = reusable.get(&index).copied();
            }
        }
        let taken: BTreeSet<u32> = ids.iter().flatten().copied().collect();
        ids.into_iter()
            .map(|id| {
                id.unwrap_or_else(|| {
                    let (old, uncertain) = (&self.old.tables, &self.uncertain_tables);
                    self.table_ids.take(|c| {
                        old.contains_key(&c) || uncertain.contains(&c) || taken.contains(&c)
                    })
                })
            })
            .collect()
    }

    /// Old tables that can be edited in place: nobody wants their content any more, every endpoint
    /// direction that used one (and is still here) wants the same new table, and every endpoint
    /// direction wanting that new table used the old one. While an edit is applied the table mixes
    /// old and new entries, so it must only ever be seen by endpoints for which both are right.
    /// Maps the wanted table's index to the old id.
    fn reusable_tables(&self, wanted: &Wanted, kept: &BTreeSet<u32>) -> FastMap<usize, u32> {
        if self.uncertain.endpoints {
            return FastMap::default();
        }
        let old_table = |ip: &Ipv4Addr, d: Direction| {
            let (ingress, egress) = *self.old.endpoints.get(ip)?;
            let id = if d == Direction::Ingress {
                ingress
            } else {
                egress
            };
            self.old.tables.contains_key(&id).then_some(id)
        };
        // For each old table still in use, the one wanted table all its users now want.
        let mut target_of: BTreeMap<u32, Option<usize>> = BTreeMap::new();
        for (ip, new) in &wanted.endpoints {
            for d in Direction::ALL {
                let Some(old_id) = old_table(ip, d) else {
                    continue;
                };
                let want = match new[d.index()] {
                    Target::Table(i) => Some(i),
                    Target::Fixed(_) => None,
                };
                let entry = target_of.entry(old_id).or_insert(want);
                if *entry != want {
                    *entry = None;
                }
            }
        }
        let mut reuse = FastMap::default();
        for (index, users) in wanted.users.iter().enumerate() {
            let mut sources = users.iter().map(|(ip, d)| old_table(ip, *d));
            let Some(Some(source)) = sources.next() else {
                continue;
            };
            let single_source = sources.all(|s| s == Some(source));
            if single_source
                && !kept.contains(&source)
                && target_of.get(&source) == Some(&Some(index))
            {
                reuse.insert(index, source);
            }
        }
        reuse
    }

    /// Writes `table` under `id`, as a diff against what `id` holds now (nothing for a new id).
    fn write_table(&mut self, id: u32, table: &Arc<RuleTable>) {
        let old = self.old;
        let before = old.tables.get(&id);
        let unchanged = before.is_some_and(|b| Arc::ptr_eq(b, table) || **b == **table);
        if !unchanged {
            let empty = RuleTable::default();
            let before = before.map_or(&empty, |b| &**b);
            for (net, set) in &table.entries {
                let previous = before.entries.get(net);
                if previous == Some(set) {
                    continue;
                }
                let portset = self.use_portset(set);
                if let Some(previous) = previous {
                    self.release_portset(previous);
                }
                self.plan.peer_upserts.push((id, *net, portset));
            }
            for (net, set) in &before.entries {
                if !table.entries.contains_key(net) {
                    self.release_portset(set);
                    self.plan.peer_deletes.push((id, *net));
                }
            }
        }
        self.next.tables.insert(id, table.clone());
        self.next.table_ids.insert(table.clone(), id);
    }

    fn delete_table(&mut self, id: u32) {
        let Some(table) = self.old.tables.get(&id) else {
            return;
        };
        for (net, set) in &table.entries {
            self.release_portset(set);
            self.plan.peer_deletes.push((id, *net));
        }
    }

    /// The id of a port set, programming it if new, counting one more user.
    fn use_portset(&mut self, set: &Arc<PortSet>) -> u32 {
        if set.is_empty() {
            return PORTSET_EMPTY;
        }
        let id = match self.next.portset_ids.get(set) {
            Some(&id) => id,
            None => {
                let (old, next, uncertain) = (
                    &self.old.portsets,
                    &self.next.portsets,
                    &self.uncertain_portsets,
                );
                let id = self.portset_ids.take(|c| {
                    old.contains_key(&c) || next.contains_key(&c) || uncertain.contains(&c)
                });
                self.plan
                    .portset_upserts
                    .extend(set.iter().map(|prefix| (id, *prefix)));
                self.next.portsets.insert(id, set.clone());
                self.next.portset_ids.insert(set.clone(), id);
                id
            }
        };
        *self.next.portset_refs.entry(id).or_default() += 1;
        id
    }

    fn release_portset(&mut self, set: &PortSet) {
        if set.is_empty() {
            return;
        }
        if let Some(&id) = self.next.portset_ids.get(set) {
            if let Some(refs) = self.next.portset_refs.get_mut(&id) {
                *refs = refs.saturating_sub(1);
            }
        }
    }

    fn delete_unused_portsets(&mut self) {
        let unused: Vec<u32> = self
            .next
            .portset_refs
            .iter()
            .filter(|(_, &refs)| refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in unused {
            self.next.portset_refs.remove(&id);
            if let Some(set) = self.next.portsets.remove(&id) {
                self.next.portset_ids.remove(&set);
                // A port set created in this very plan and already unused was never referenced:
                // drop its upserts rather than writing and deleting it.
                if self.old.portsets.contains_key(&id) {
                    self.plan
                        .portset_deletes
                        .extend(set.iter().map(|prefix| (id, *prefix)));
                } else {
                    self.plan.portset_upserts.retain(|(p, _)| *p != id);
                }
            }
        }
    }

    fn write_endpoints(&mut self, wanted: &Wanted, ids: &[u32]) {
        for (ip, targets) in &wanted.endpoints {
            let [ingress, egress] = targets.map(|t| match t {
                Target::Fixed(id) => id,
                Target::Table(index) => ids[index],
            });
            if self.uncertain.endpoints || self.old.endpoints.get(ip) != Some(&(ingress, egress)) {
                self.plan.endpoint_tables.push((*ip, ingress, egress));
            }
            self.next.endpoints.insert(*ip, (ingress, egress));
        }
    }

    /// Keys that may linger from a failed apply or a previous agent are all deleted; their ids were
    /// kept out of this plan's allocations, so none of them is wanted.
    fn delete_uncertain(&mut self) {
        self.plan
            .peer_deletes
            .extend(self.uncertain.peers.iter().copied());
        self.plan
            .portset_deletes
            .extend(self.uncertain.ports.iter().copied());
    }
}

/// Groups the endpoints' tables by content (by pointer first, so shared tables hash once).
fn wanted(compiled: &Compiled) -> Wanted {
    let mut by_pointer: FastMap<*const RuleTable, usize> = FastMap::default();
    let mut by_content: FastMap<Arc<RuleTable>, usize> = FastMap::default();
    let mut wanted = Wanted {
        tables: Vec::new(),
        users: Vec::new(),
        endpoints: BTreeMap::new(),
    };
    for (ip, rules) in &compiled.endpoints {
        let targets = Direction::ALL.map(|d| match rules.get(d) {
            DirectionRules::Unisolated => Target::Fixed(TABLE_ALLOW_ALL),
            DirectionRules::FailClosed => Target::Fixed(TABLE_FAIL_CLOSED),
            DirectionRules::Rules(t) if t.is_empty() => Target::Fixed(TABLE_DENY_ALL),
            DirectionRules::Rules(t) => {
                let index = *by_pointer.entry(Arc::as_ptr(t)).or_insert_with(|| {
                    *by_content.entry(t.clone()).or_insert_with(|| {
                        wanted.tables.push(t.clone());
                        wanted.users.push(Vec::new());
                        wanted.tables.len() - 1
                    })
                });
                wanted.users[index].push((*ip, d));
                Target::Table(index)
            }
        });
        wanted.endpoints.insert(*ip, targets);
    }
    wanted
}

/// The PEERS trie key of an entry: (trie prefix length, key data).
pub fn peer_key(table: u32, net: Ipv4Net) -> (u32, PeerKey) {
    (
        32 + u32::from(net.prefix_len()),
        PeerKey::new(table, net.network().octets()),
    )
}

/// The entry a PEERS trie key stands for (`None` if the prefix length is out of range).
pub fn peer_entry(prefix_len: u32, key: &PeerKey) -> Option<(u32, Ipv4Net)> {
    let len = prefix_len.checked_sub(32).filter(|&l| l <= 32)?;
    let net = Ipv4Net::new(Ipv4Addr::from(key.ip), len as u8)
        .ok()?
        .trunc();
    Some((u32::from_be_bytes(key.table), net))
}

/// The PORTS trie key of an entry: (trie prefix length, key data).
pub fn port_key(portset: u32, prefix: PortPrefix) -> (u32, PortKey) {
    (
        prefix.kernel_prefix_len(),
        PortKey::new(portset, prefix.kernel_proto(), prefix.port),
    )
}

/// The entry a PORTS trie key stands for (`None` for a protocol or length Weir never writes).
pub fn port_entry(prefix_len: u32, key: &PortKey) -> Option<(u32, PortPrefix)> {
    let portset = u32::from_be_bytes(key.portset);
    if prefix_len == PORT_PREFIX_ANY_PROTO {
        return Some((portset, PortPrefix::ANY));
    }
    let len = prefix_len
        .checked_sub(PORT_PREFIX_ANY_PORT)
        .filter(|&l| l <= 16)?;
    let proto = Protocol::from_number(key.proto)?;
    // The verdict is the value's, not the key's; what reads this only deletes.
    let prefix = PortPrefix {
        proto: Some(proto),
        port: u16::from_be_bytes(key.port),
        len: len as u8,
        deny: false,
    };
    // Only canonical keys (bits past the prefix are zero) are Weir's.
    (prefix.port & !mask(prefix.len) == 0).then_some((portset, prefix))
}

fn mask(len: u8) -> u16 {
    if len == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(len))
    }
}
