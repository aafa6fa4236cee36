//! Port sets: what a rule allows at layer 4, as the prefixes the datapath's PORTS trie holds.
//!
//! A [`PortSet`] is kept canonical: per protocol the allowed ports are merged into maximal ranges and
//! each range is cut into the fewest aligned prefixes ([`range_prefixes`]); "any protocol" absorbs
//! everything else. Two sets allowing the same traffic are therefore equal, which lets the compiler
//! and the programmer share them by content.

use std::ops::RangeInclusive;

use weir_common::policy::{PORT_PREFIX_ANY_PORT, PORT_PREFIX_ANY_PROTO};

use crate::model::Protocol;

/// One PORTS trie entry: a protocol (or any) and the first `len` bits of the destination port, with
/// its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPrefix {
    /// `None`: any IP protocol, any port (including ICMP and every protocol without ports).
    pub proto: Option<Protocol>,
    /// The port's leading bits; the other bits are zero.
    pub port: u16,
    /// How many leading bits of the port must match, 0..=16 (0 = any port).
    pub len: u8,
    /// The entry refuses what it matches (a hole in a shorter allowing entry). NetworkPolicy alone
    /// never needs one; cluster-wide tiers do ("everything but TCP 22").
    pub deny: bool,
}

impl PortPrefix {
    /// Any protocol, any port.
    pub const ANY: PortPrefix = PortPrefix {
        proto: None,
        port: 0,
        len: 0,
        deny: false,
    };

    /// Every port of one protocol.
    pub fn all_ports(proto: Protocol) -> Self {
        PortPrefix {
            proto: Some(proto),
            port: 0,
            len: 0,
            deny: false,
        }
    }

    /// The trie prefix length of this entry's key (see `weir_common::policy::PortKey`).
    pub fn kernel_prefix_len(&self) -> u32 {
        match self.proto {
            None => PORT_PREFIX_ANY_PROTO,
            Some(_) => PORT_PREFIX_ANY_PORT + u32::from(self.len),
        }
    }

    /// The protocol number stored in the key (0 for "any", which the prefix length masks out).
    pub fn kernel_proto(&self) -> u8 {
        self.proto.map_or(0, Protocol::number)
    }

    /// The first and last port covered.
    pub fn range(&self) -> RangeInclusive<u16> {
        let span = span(self.len);
        let first = u32::from(self.port);
        // first + span - 1 <= 65535 for aligned prefixes; saturate anyway rather than panic.
        let last = u16::try_from(first + span - 1).unwrap_or(u16::MAX);
        self.port..=last
    }

    /// Whether a packet with this protocol number and destination port matches the entry.
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        match self.proto {
            None => true,
            Some(p) => p.number() == proto && self.range().contains(&port),
        }
    }
}

/// Number of ports a prefix of `len` bits covers.
fn span(len: u8) -> u32 {
    1u32 << (16 - u32::from(len.min(16)))
}

/// Cuts `[first, last]` into the fewest aligned prefixes `(port, len)`, in ascending order
/// (at most 30 for 16-bit ports). Empty when `first > last`.
pub fn range_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let mut lo = u32::from(first);
    let end = u32::from(last) + 1; // exclusive, up to 65536
    while lo < end {
        // The largest block aligned at `lo` that fits before `end`.
        let align = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros()
        };
        let mut size = align.min(1 << 16);
        while lo + size > end {
            size >>= 1;
        }
        let len = 16 - size.trailing_zeros();
        // lo < 65536 here, and len <= 16.
        out.push((lo as u16, len as u8));
        lo += size;
    }
    out
}

/// A canonical, minimal set of [`PortPrefix`]es, sorted (a slice: a policy holds several sets, and
/// a tree node per set would be most of a policy's memory).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSet(Box<[PortPrefix]>);

impl PortSet {
    /// Allows nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Allows every protocol and port (a rule without `ports`).
    pub fn any() -> Self {
        Self(Box::new([PortPrefix::ANY]))
    }

    /// Allows every port of one protocol (a port entry without `port`).
    pub fn all_ports(proto: Protocol) -> Self {
        Self(Box::new([PortPrefix::all_ports(proto)]))
    }

    /// The set allowing exactly the given inclusive port ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (Protocol, RangeInclusive<u16>)>) -> Self {
        let mut per_proto: Vec<(Protocol, u16, u16)> = ranges
            .into_iter()
            .filter(|(_, r)| r.start() <= r.end())
            .map(|(p, r)| (p, *r.start(), *r.end()))
            .collect();
        per_proto.sort_unstable();
        let mut prefixes = Vec::new();
        for (proto, first, last) in merge_ranges(per_proto) {
            prefixes.extend(range_prefixes(first, last).into_iter().map(|(port, len)| {
                PortPrefix {
                    proto: Some(proto),
                    port,
                    len,
                    deny: false,
                }
            }));
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        Self(prefixes.into())
    }

    /// Everything either set allows (sets without denying entries: NetworkPolicy's).
    pub fn union(&self, other: &PortSet) -> PortSet {
        if self.is_any() || other.is_empty() {
            return self.clone();
        }
        if other.is_any() || self.is_empty() {
            return other.clone();
        }
        Self::from_ranges(self.ranges().chain(other.ranges()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this set allows every protocol and port.
    pub fn is_any(&self) -> bool {
        self.0.binary_search(&PortPrefix::ANY).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PortPrefix> + '_ {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether a packet with this protocol number and destination port is allowed, exactly as the
    /// PORTS lookup decides (the longest matching entry's verdict, none denies; ICMP and others
    /// use port 0).
    pub fn allows(&self, proto: u8, port: u16) -> bool {
        self.0
            .iter()
            .filter(|p| p.matches(proto, port))
            .max_by_key(|p| p.kernel_prefix_len())
            .is_some_and(|p| !p.deny)
    }

    /// A set from entries already canonical (see [`crate::compile::tiers`]).
    pub(crate) fn from_canonical(mut entries: Vec<PortPrefix>) -> Self {
        entries.sort_unstable();
        Self(entries.into())
    }

    /// The port ranges per protocol (not meaningful for the "any" set).
    fn ranges(&self) -> impl Iterator<Item = (Protocol, RangeInclusive<u16>)> + '_ {
        self.0
            .iter()
            .filter_map(|p| p.proto.map(|proto| (proto, p.range())))
    }
}

/// Merges sorted `(proto, first, last)` ranges that overlap or touch.
fn merge_ranges(sorted: Vec<(Protocol, u16, u16)>) -> Vec<(Protocol, u16, u16)> {
    let mut merged: Vec<(Protocol, u16, u16)> = Vec::with_capacity(sorted.len());
    for (proto, first, last) in sorted {
        match merged.last_mut() {
            Some((p, _, end)) if *p == proto && u32::from(first) <= u32::from(*end) + 1 => {
                *end = (*end).max(last);
            }
            _ => merged.push((proto, first, last)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    fn covered(prefixes: &[(u16, u8)]) -> Vec<u32> {
        let mut ports: Vec<u32> = prefixes
            .iter()
            .flat_map(|&(port, len)| {
                let first = u32::from(port);
                assert!(
                    first.is_multiple_of(span(len)),
                    "prefix {port}/{len} not aligned"
                );
                first..first + span(len)
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The fewest aligned blocks covering [a, b], by dynamic programming over every split point.
    fn brute_force_minimum(first: u32, last: u32) -> usize {
        let n = (last - first + 1) as usize;
        let mut best = vec![usize::MAX; n + 1];
        best[0] = 0;
        for covered_upto in 0..n {
            if best[covered_upto] == usize::MAX {
                continue;
            }
            let lo = first + covered_upto as u32;
            for bits in 0..=16u32 {
                let size = 1u32 << bits;
                if lo.is_multiple_of(size) && lo + size <= last + 1 {
                    let next = covered_upto + size as usize;
                    best[next] = best[next].min(best[covered_upto] + 1);
                }
            }
        }
        best[n]
    }

    #[test]
    fn range_prefixes_cover_exactly_and_minimally_for_every_small_range() {
        for first in 0u16..=70 {
            for last in first..=70 {
                let prefixes = range_prefixes(first, last);
                let expected: Vec<u32> = (u32::from(first)..=u32::from(last)).collect();
                assert_eq!(covered(&prefixes), expected, "[{first}, {last}]");
                assert_eq!(
                    prefixes.len(),
                    brute_force_minimum(first.into(), last.into()),
                    "[{first}, {last}] not minimal"
                );
            }
        }
    }

    #[test]
    fn range_prefixes_match_brute_force_on_random_ranges() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let a: u16 = rng.random();
            let b: u16 = rng.random();
            let (first, last) = (a.min(b), a.max(b));
            let prefixes = range_prefixes(first, last);
            assert!(prefixes.len() <= 30);
            let c = covered(&prefixes);
            assert_eq!(c.len(), usize::from(last - first) + 1);
            assert_eq!(c.first().copied(), Some(u32::from(first)));
            assert_eq!(c.last().copied(), Some(u32::from(last)));
            assert!(c.windows(2).all(|w| w[1] == w[0] + 1), "gap or overlap");
            if last - first < 5000 {
                assert_eq!(
                    prefixes.len(),
                    brute_force_minimum(first.into(), last.into())
                );
            }
        }
    }

    #[test]
    fn range_prefix_edge_cases() {
        assert_eq!(range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(range_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(range_prefixes(65535, 65535), vec![(65535, 16)]);
        assert_eq!(range_prefixes(1, 65535).len(), 16);
        assert_eq!(range_prefixes(1, 65534).len(), 30);
        assert!(range_prefixes(5, 4).is_empty());
    }

    #[test]
    fn port_set_is_canonical_and_minimal() {
        let a = PortSet::from_ranges([(Protocol::Tcp, 80..=80), (Protocol::Tcp, 81..=81)]);
        let b = PortSet::from_ranges([(Protocol::Tcp, 80..=81)]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1, "80-81 is one /15 prefix");
        let covered_twice =
            PortSet::from_ranges([(Protocol::Udp, 0..=65535), (Protocol::Udp, 53..=53)]);
        assert_eq!(covered_twice, PortSet::all_ports(Protocol::Udp));
        let any = PortSet::any().union(&PortSet::all_ports(Protocol::Tcp));
        assert_eq!(any, PortSet::any());
        assert_eq!(
            PortSet::from_ranges([(Protocol::Tcp, 10..=20)])
                .union(&PortSet::from_ranges([(Protocol::Tcp, 21..=30)])),
            PortSet::from_ranges([(Protocol::Tcp, 10..=30)])
        );
    }

    #[test]
    fn port_set_allows_like_the_ports_trie() {
        let set = PortSet::from_ranges([(Protocol::Tcp, 8000..=8100), (Protocol::Sctp, 9..=9)]);
        assert!(set.allows(6, 8000) && set.allows(6, 8100) && set.allows(6, 8050));
        assert!(!set.allows(6, 7999) && !set.allows(6, 8101));
        assert!(!set.allows(17, 8050), "UDP is not TCP");
        assert!(set.allows(132, 9) && !set.allows(132, 10));
        assert!(!set.allows(1, 0), "ICMP only matches any-protocol entries");
        assert!(PortSet::any().allows(1, 0));
        assert!(PortSet::all_ports(Protocol::Udp).allows(17, 0));
        assert!(!PortSet::empty().allows(6, 80));
    }

    #[test]
    fn kernel_prefix_lengths_follow_the_abi() {
        assert_eq!(PortPrefix::ANY.kernel_prefix_len(), 32);
        assert_eq!(PortPrefix::all_ports(Protocol::Tcp).kernel_prefix_len(), 40);
        let single = PortPrefix {
            proto: Some(Protocol::Udp),
            port: 53,
            len: 16,
            deny: false,
        };
        assert_eq!(single.kernel_prefix_len(), 56);
        assert_eq!(single.kernel_proto(), 17);
    }
}
