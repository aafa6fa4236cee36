//! Rule tables: the PEERS trie content of one endpoint direction, built so that a longest-prefix
//! match gives exactly the union of what every rule allows.
//!
//! # Why the construction is exact
//!
//! The input is a list of [`Block`]s, one per (rule, peer): a prefix `C`, the prefixes `E` it
//! excepts (each strictly inside `C`, which parsing enforces), and the rule's port set. The table
//! holds one candidate entry per prefix `X` that is some block's `C` or `E`, with value
//!
//! > `value(X)` = union of `ports(b)` over blocks `b` with `X ⊆ C(b)` and `X ⊄ E` for every `E` of `b`.
//!
//! Claim: for any address `a`, the longest candidate `X` containing `a` has `value(X)` = the union of
//! `ports(b)` over blocks with `a ∈ C(b)` and `a` in none of `b`'s excepts (the NetworkPolicy meaning),
//! and if no candidate contains `a`, no block matches `a`.
//!
//! Proof. Two IPv4 prefixes are always nested or disjoint. Take a block `b`.
//! - If `a ∈ C(b)`: `C(b)` is a candidate containing `a` and `X` is the longest one, so both contain
//!   `a` and `X ⊆ C(b)`. For an except `E` of `b`: if `a ∈ E`, `E` is also a candidate, so `X ⊆ E`
//!   and `b` is left out, as it must be; if `a ∉ E`, then `X` (which contains `a`) is not inside
//!   `E`, so that except does not exclude `b`. So `b` counts in `value(X)` iff `a` is in `C(b)`
//!   and outside its excepts.
//! - If `a ∉ C(b)`: `X` contains `a`, so `X ⊄ C(b)` and `b` does not count.
//!
//! If no candidate contains `a`, no `C(b)` contains `a`. ∎
//!
//! The table then drops every candidate whose value equals what the longest *shorter* kept entry
//! containing it would give (or is empty with no such entry): addresses under a dropped `X` that are
//! not under a longer kept entry now resolve to that shorter entry, which has the same value, so no
//! lookup changes. This is why an `except` stays as an empty entry only under a non-empty one.
//!
//! The walk: candidates sorted by (network address, prefix length) come in pre-order of the
//! containment tree, so a stack of enclosing prefixes carries the set of blocks active at each one.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    net::Ipv4Addr,
    sync::Arc,
};

use ipnet::Ipv4Net;

use super::ports::PortSet;
use crate::fast_hash::FastMap;

/// The PEERS entries of one endpoint direction: peer prefix → allowed port set. Canonical: network
/// addresses only, and no entry that the longest-prefix match would not need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTable {
    pub entries: BTreeMap<Ipv4Net, Arc<PortSet>>,
}

/// Hashes a sample (the size, and the first and last few entries with their port-set sizes), so
/// that sharing tables by content does not cost a pass over every entry; equal tables still hash
/// equal, and equality settles the rest.
impl Hash for RuleTable {
    fn hash<H: Hasher>(&self, state: &mut H) {
        const SAMPLE: usize = 4;
        self.entries.len().hash(state);
        let sample = |(net, set): (&Ipv4Net, &Arc<PortSet>)| (*net, set.len());
        for entry in self.entries.iter().take(SAMPLE).map(sample) {
            entry.hash(state);
        }
        for entry in self.entries.iter().rev().take(SAMPLE).map(sample) {
            entry.hash(state);
        }
    }
}

impl RuleTable {
    /// The entry the datapath's longest-prefix match finds for `peer`.
    pub fn lookup(&self, peer: Ipv4Addr) -> Option<(&Ipv4Net, &Arc<PortSet>)> {
        (0..=32u8).rev().find_map(|len| {
            let net = Ipv4Net::new(peer, len).ok()?.trunc();
            self.entries.get_key_value(&net)
        })
    }

    /// Whether a new flow with this peer, IP protocol number and destination port is allowed, as the
    /// datapath decides: longest matching peer prefix, then any matching port prefix.
    pub fn allows(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.lookup(peer)
            .is_some_and(|(_, ports)| ports.allows(proto, port))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Port-set id 0 is always the empty set.
pub(crate) const EMPTY: u32 = 0;

/// Port sets interned for one compilation: equal sets get one id and one `Arc`, and unions of ids
/// are computed once.
pub(crate) struct PortSets {
    sets: Vec<Arc<PortSet>>,
    ids: FastMap<Arc<PortSet>, u32>,
    unions: FastMap<Vec<u32>, u32>,
}

impl PortSets {
    pub(crate) fn new() -> Self {
        let empty = Arc::new(PortSet::empty());
        Self {
            sets: vec![empty.clone()],
            ids: FastMap::from_iter([(empty, EMPTY)]),
            unions: FastMap::default(),
        }
    }

    pub(crate) fn intern(&mut self, set: PortSet) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        let set = Arc::new(set);
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }

    /// [`Self::intern`], cloning the set only when it is new.
    pub(crate) fn intern_ref(&mut self, set: &PortSet) -> u32 {
        match self.ids.get(set) {
            Some(&id) => id,
            None => self.intern(set.clone()),
        }
    }

    pub(crate) fn get(&self, id: u32) -> &Arc<PortSet> {
        &self.sets[id as usize]
    }

    /// The id of the union of sets; `ids` must be sorted and free of duplicates.
    pub(crate) fn union(&mut self, ids: &[u32]) -> u32 {
        match ids {
            [] => EMPTY,
            [one] => *one,
            _ => {
                if let Some(&id) = self.unions.get(ids) {
                    return id;
                }
                let set = ids
                    .iter()
                    .fold(PortSet::empty(), |acc, &id| acc.union(self.get(id)));
                let id = self.intern(set);
                self.unions.insert(ids.to_vec(), id);
                id
            }
        }
    }
}

/// What one peer of one rule contributes: `net` minus `except`, with the rule's port set, at an
/// evaluation layer (always 0 for NetworkPolicy alone; see `tiers.rs`).
#[derive(Clone, Debug)]
pub(crate) struct Block<'a> {
    pub net: Ipv4Net,
    pub except: &'a [Ipv4Net],
    pub ports: u32,
    pub layer: u32,
}

/// Whether `outer` contains `inner` (both normalized).
pub(crate) fn covers(outer: Ipv4Net, inner: Ipv4Net) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(&inner.network())
}

struct Frame {
    net: Ipv4Net,
    /// Indices of the blocks that cover `net` and do not except it.
    active: Vec<u32>,
    /// The port set the longest kept entry at or above `net` gives.
    effective: u32,
}

/// Builds the canonical table for a list of blocks (see the module documentation): the value of
/// an entry is the union of its blocks' port sets.
pub(crate) fn build(blocks: &[Block<'_>], sets: &mut PortSets) -> RuleTable {
    let mut ids = Vec::new();
    build_with(blocks, sets, |active, sets| {
        ids.clear();
        ids.extend(active.iter().map(|&b| blocks[b as usize].ports));
        ids.sort_unstable();
        ids.dedup();
        sets.union(&ids)
    })
}

/// [`build`] with the value of an entry computed by `value` from the indices of the blocks
/// covering it (the proof above holds for any function of that set).
pub(crate) fn build_with(
    blocks: &[Block<'_>],
    sets: &mut PortSets,
    mut value: impl FnMut(&[u32], &mut PortSets) -> u32,
) -> RuleTable {
    // (prefix, block, starts here?) sorted so that prefixes come in pre-order of containment.
    let mut events: Vec<(Ipv4Net, u32, bool)> = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let i = i as u32;
        events.push((block.net.trunc(), i, true));
        events.extend(block.except.iter().map(|e| (e.trunc(), i, false)));
    }
    events.sort_unstable();

    let mut entries = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut here: Vec<u32> = Vec::new();
    for group in events.chunk_by(|a, b| a.0 == b.0) {
        let net = group[0].0;
        while stack.last().is_some_and(|top| !covers(top.net, net)) {
            stack.pop();
        }
        let parent = stack.last();
        let parent_effective = parent.map_or(EMPTY, |top| top.effective);
        let ends = |block: u32| group.iter().any(|&(_, b, starts)| !starts && b == block);
        let inherited = parent.map_or(&[][..], |top| &top.active[..]);
        // Blocks active here: the parent's, minus those excepting this prefix, plus those starting.
        let active = inherited
            .iter()
            .copied()
            .filter(|&b| !ends(b))
            .chain(group.iter().filter(|e| e.2).map(|e| e.1));
        here.clear();
        here.extend(active.clone());
        let value = value(&here, sets);
        let effective = if value == parent_effective {
            parent_effective
        } else {
            entries.insert(net, sets.get(value).clone());
            value
        };
        // A /32 contains no other prefix: it never becomes a parent, so needs no frame.
        if net.prefix_len() < 32 {
            let active = active.collect();
            stack.push(Frame {
                net,
                active,
                effective,
            });
        }
    }
    RuleTable { entries }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::model::Protocol;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn tcp(port: u16) -> PortSet {
        PortSet::from_ranges([(Protocol::Tcp, port..=port)])
    }

    /// The NetworkPolicy meaning, straight from the definition.
    fn reference_allows(
        blocks: &[Block<'_>],
        sets: &PortSets,
        a: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> bool {
        blocks.iter().any(|b| {
            b.net.contains(&a)
                && !b.except.iter().any(|e| e.contains(&a))
                && sets.get(b.ports).allows(proto, port)
        })
    }

    #[test]
    fn except_is_an_empty_entry_under_the_allowing_prefix() {
        let mut sets = PortSets::new();
        let any = sets.intern(PortSet::any());
        let except = [net("10.0.0.0/8")];
        let table = build(
            &[Block {
                net: net("0.0.0.0/0"),
                except: &except,
                ports: any,
                layer: 0,
            }],
            &mut sets,
        );
        assert_eq!(table.len(), 2);
        assert!(table.entries[&net("10.0.0.0/8")].is_empty());
        assert!(table.allows(Ipv4Addr::new(1, 1, 1, 1), 6, 80));
        assert!(!table.allows(Ipv4Addr::new(10, 1, 1, 1), 6, 80));
    }

    #[test]
    fn lpm_entry_holds_the_union_of_every_covering_rule() {
        let mut sets = PortSets::new();
        let p80 = sets.intern(tcp(80));
        let p443 = sets.intern(tcp(443));
        let table = build(
            &[
                Block {
                    net: net("10.0.0.0/8"),
                    except: &[],
                    ports: p80,
                    layer: 0,
                },
                Block {
                    net: net("10.1.2.3/32"),
                    except: &[],
                    ports: p443,
                    layer: 0,
                },
            ],
            &mut sets,
        );
        let pod = Ipv4Addr::new(10, 1, 2, 3);
        assert!(table.allows(pod, 6, 80) && table.allows(pod, 6, 443));
        assert!(!table.allows(Ipv4Addr::new(10, 1, 2, 4), 6, 443));
    }

    #[test]
    fn redundant_entries_are_dropped() {
        let mut sets = PortSets::new();
        let p80 = sets.intern(tcp(80));
        let table = build(
            &[
                Block {
                    net: net("10.0.0.0/8"),
                    except: &[],
                    ports: p80,
                    layer: 0,
                },
                Block {
                    net: net("10.1.0.0/16"),
                    except: &[],
                    ports: p80,
                    layer: 0,
                },
                Block {
                    net: net("192.168.0.0/16"),
                    except: &[],
                    ports: EMPTY,
                    layer: 0,
                },
            ],
            &mut sets,
        );
        assert_eq!(
            table.entries.keys().copied().collect::<Vec<_>>(),
            vec![net("10.0.0.0/8")]
        );
    }

    fn random_net(rng: &mut StdRng, base: u32, min_len: u8) -> Ipv4Net {
        // Addresses in a small space so that prefixes overlap often.
        let addr = base | (rng.random::<u32>() & 0xff);
        let len = rng.random_range(min_len..=32);
        Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()
    }

    #[test]
    fn table_lookup_agrees_with_the_definition_on_random_blocks() {
        let mut rng = StdRng::seed_from_u64(42);
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        for _ in 0..300 {
            let mut sets = PortSets::new();
            let choices = [
                sets.intern(PortSet::any()),
                sets.intern(tcp(80)),
                sets.intern(tcp(81)),
                sets.intern(PortSet::all_ports(Protocol::Udp)),
                EMPTY,
            ];
            let mut excepts: Vec<Vec<Ipv4Net>> = Vec::new();
            let mut nets = Vec::new();
            for _ in 0..rng.random_range(0..8) {
                let n = random_net(&mut rng, base, 22);
                let inner: Vec<Ipv4Net> = (0..rng.random_range(0..3))
                    .filter_map(|_| {
                        let e = random_net(&mut rng, base, 24);
                        (covers(n, e) && e.prefix_len() > n.prefix_len()).then_some(e)
                    })
                    .collect();
                nets.push(n);
                excepts.push(inner);
            }
            let blocks: Vec<Block<'_>> = nets
                .iter()
                .zip(&excepts)
                .map(|(n, e)| Block {
                    net: *n,
                    except: e,
                    ports: choices[rng.random_range(0..choices.len())],
                    layer: 0,
                })
                .collect();
            let table = build(&blocks, &mut sets);
            for last in 0..=255u32 {
                let a = Ipv4Addr::from(base | last);
                for (proto, port) in [(6, 80), (6, 81), (17, 53), (1, 0)] {
                    assert_eq!(
                        table.allows(a, proto, port),
                        reference_allows(&blocks, &sets, a, proto, port),
                        "{a} {proto}/{port} blocks {blocks:?} table {table:?}"
                    );
                }
            }
            // Minimality: no entry equals what its enclosing entry would give.
            for (n, v) in &table.entries {
                let parent = (0..n.prefix_len()).rev().find_map(|len| {
                    table
                        .entries
                        .get(&Ipv4Net::new(n.network(), len).unwrap().trunc())
                });
                let parent_set = parent.map_or(PortSet::empty(), |p| (**p).clone());
                assert_ne!(**v, parent_set, "redundant entry {n}");
            }
        }
    }
}
