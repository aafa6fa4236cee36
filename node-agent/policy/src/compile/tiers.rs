//! Tiers: what one peer region's traffic gets when ClusterNetworkPolicy `Admin` rules, the
//! namespace's NetworkPolicies and `Baseline` rules are evaluated in that order.
//!
//! # Why one lookup stays exact
//!
//! The datapath does not evaluate tiers: it still does two longest-prefix lookups, peer then port.
//! The compiler resolves precedence before anything is written. A rule table is built over the same
//! candidate prefixes as for NetworkPolicy alone (every peer prefix and except of every rule, of
//! every tier, plus `0.0.0.0/0` for the default), and `table.rs` proves that for any address the
//! longest candidate containing it is covered by exactly the rules that match that address. So the
//! verdict for every address under that candidate is a function of the port alone, computed here
//! once per distinct set of matching rules: rules are applied in evaluation order, each deciding
//! the ports it names that no earlier rule decided ([`PortMarks`]); `Pass` leaves its ports to
//! the NetworkPolicy tier; an isolating NetworkPolicy tier decides every port left (allowed where
//! some rule allows, denied elsewhere), else `Baseline` rules apply, else everything left is
//! allowed. The result is a complete port → verdict function, written as a PORTS set where a
//! longer prefix may deny inside a shorter allowing one ([`PortMarks::to_port_set`]). Nothing of
//! the order survives to the datapath, so a packet costs the same two lookups whatever the number
//! of tiers, policies and rules.

use super::ports::{range_prefixes, PortPrefix, PortSet};
use crate::model::Protocol;

/// What a ClusterNetworkPolicy rule does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Accept,
    Deny,
    /// Skip the rest of the tier: the NetworkPolicy tier (from `Admin`) decides.
    Pass,
}

/// The tier a ClusterNetworkPolicy belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Admin,
    Baseline,
}

/// How far evaluation got for a set of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mark {
    /// No rule decided yet.
    Open,
    Accept,
    Deny,
    /// An `Admin` rule passed it to the NetworkPolicy tier.
    Pass,
}

impl From<Action> for Mark {
    fn from(action: Action) -> Self {
        match action {
            Action::Accept => Mark::Accept,
            Action::Deny => Mark::Deny,
            Action::Pass => Mark::Pass,
        }
    }
}

/// A step function over the ports `0..=65535`: `(first port, mark)`, first ports increasing from
/// 0, adjacent steps different.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Steps(Vec<(u32, Mark)>);

const PORTS_END: u32 = 1 << 16;

impl Steps {
    fn constant(mark: Mark) -> Self {
        Steps(vec![(0, mark)])
    }

    /// Sets `[first, last]` to `mark` where it is still open.
    fn decide(&mut self, first: u32, last: u32, mark: Mark) {
        let end = last + 1;
        let mut out: Vec<(u32, Mark)> = Vec::with_capacity(self.0.len() + 2);
        for (i, &(start, old)) in self.0.iter().enumerate() {
            let stop = self.0.get(i + 1).map_or(PORTS_END, |s| s.0);
            // Up to three pieces: before, inside and after [first, end).
            let pieces = [
                (start, stop.min(first), old),
                (
                    start.max(first),
                    stop.min(end),
                    if old == Mark::Open { mark } else { old },
                ),
                (start.max(end), stop, old),
            ];
            for (lo, hi, m) in pieces {
                if lo < hi && out.last().is_none_or(|l| l.1 != m) {
                    out.push((lo, m));
                }
            }
        }
        self.0 = out;
    }

    fn map(&mut self, f: impl Fn(Mark) -> Mark) {
        let mut out: Vec<(u32, Mark)> = Vec::with_capacity(self.0.len());
        for &(start, m) in &self.0 {
            let m = f(m);
            if out.last().is_none_or(|l| l.1 != m) {
                out.push((start, m));
            }
        }
        self.0 = out;
    }

    /// The maximal runs carrying `mark`, as inclusive ranges.
    fn runs(&self, mark: Mark) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(move |(i, &(start, m))| {
                let stop = self.0.get(i + 1).map_or(PORTS_END, |s| s.0);
                // start < stop <= 65536.
                (m == mark).then(|| (start as u16, (stop - 1) as u16))
            })
    }
}

/// A decision per (protocol, destination port), built rule by rule in evaluation order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PortMarks {
    /// Protocols without ports (ICMP and the rest): only rules without ports match them.
    other: Mark,
    /// TCP, UDP, SCTP, in [`Protocol::ALL`] order.
    protos: [Steps; 3],
}

impl PortMarks {
    pub(crate) fn open() -> Self {
        PortMarks {
            other: Mark::Open,
            protos: [0; 3].map(|_| Steps::constant(Mark::Open)),
        }
    }

    /// Applies a rule: what `ports` (a rule's ports, allowing entries only) covers and no earlier
    /// rule decided gets `action`.
    pub(crate) fn apply(&mut self, ports: &PortSet, action: Action) {
        self.decide(ports, action.into());
    }

    fn decide(&mut self, ports: &PortSet, mark: Mark) {
        if ports.is_any() {
            if self.other == Mark::Open {
                self.other = mark;
            }
            for steps in &mut self.protos {
                steps.decide(0, PORTS_END - 1, mark);
            }
            return;
        }
        for prefix in ports.iter() {
            let Some(proto) = prefix.proto else { continue };
            let range = prefix.range();
            self.protos[proto_index(proto)].decide(
                u32::from(*range.start()),
                u32::from(*range.end()),
                mark,
            );
        }
    }

    /// Ends the `Admin` tier: what it passed is open again for the NetworkPolicy tier.
    pub(crate) fn end_admin_tier(&mut self) {
        self.map(|m| if m == Mark::Pass { Mark::Open } else { m });
    }

    /// The NetworkPolicy tier of an isolated pod: what `allowed` (the union of its rules) covers is
    /// accepted, everything else still open is denied.
    pub(crate) fn isolate(&mut self, allowed: &PortSet) {
        self.decide(allowed, Mark::Accept);
        self.close(Mark::Deny);
    }

    /// The end of evaluation: whatever is still open is allowed.
    pub(crate) fn default_allow(&mut self) {
        self.close(Mark::Accept);
    }

    fn close(&mut self, mark: Mark) {
        self.map(|m| match m {
            Mark::Open | Mark::Pass => mark,
            decided => decided,
        });
    }

    /// Rewrites every mark, protocols without ports included.
    fn map(&mut self, f: impl Fn(Mark) -> Mark + Copy) {
        self.other = f(self.other);
        for steps in &mut self.protos {
            steps.map(f);
        }
    }

    /// The canonical PORTS set giving exactly the accepted ports (everything must be decided):
    /// the "any" entry carries the verdict for protocols without ports; each port protocol whose
    /// verdicts differ from it gets a whole-protocol entry and holes, whichever way round takes
    /// fewer entries. Equal decisions give equal sets, and a set NetworkPolicy alone would build
    /// comes out identical to its (allowing-only) form.
    pub(crate) fn to_port_set(&self) -> PortSet {
        let accepted = |m: Mark| m == Mark::Accept;
        let base = accepted(self.other);
        let mut entries = Vec::new();
        if base {
            entries.push(PortPrefix::ANY);
        }
        for (proto, steps) in Protocol::ALL.into_iter().zip(&self.protos) {
            let prefixes = |mark: Mark| -> Vec<PortPrefix> {
                steps
                    .runs(mark)
                    .flat_map(|(first, last)| range_prefixes(first, last))
                    .map(|(port, len)| PortPrefix {
                        proto: Some(proto),
                        port,
                        len,
                        deny: mark == Mark::Deny,
                    })
                    .collect()
            };
            let (accepts, denies) = (prefixes(Mark::Accept), prefixes(Mark::Deny));
            // Entries needed with the protocol's default allowing or denying.
            let cost = |allow: bool| {
                usize::from(allow != base) + if allow { denies.len() } else { accepts.len() }
            };
            let allow_default = cost(true) < cost(false);
            if allow_default != base {
                entries.push(PortPrefix {
                    deny: !allow_default,
                    ..PortPrefix::all_ports(proto)
                });
            }
            entries.extend(if allow_default { denies } else { accepts });
        }
        PortSet::from_canonical(entries)
    }
}

fn proto_index(proto: Protocol) -> usize {
    match proto {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    fn tcp(first: u16, last: u16) -> PortSet {
        PortSet::from_ranges([(Protocol::Tcp, first..=last)])
    }

    #[test]
    fn everything_but_one_port_is_an_allowing_any_with_a_hole() {
        let mut marks = PortMarks::open();
        marks.apply(&tcp(22, 22), Action::Deny);
        marks.default_allow();
        let set = marks.to_port_set();
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(!set.allows(6, 22));
        assert!(set.allows(6, 21) && set.allows(6, 23) && set.allows(17, 22));
        assert!(set.allows(1, 0), "ICMP");
    }

    #[test]
    fn network_policy_alone_gives_its_own_sets() {
        for allowed in [
            PortSet::empty(),
            PortSet::any(),
            tcp(80, 80),
            PortSet::all_ports(Protocol::Udp),
            PortSet::from_ranges([(Protocol::Tcp, 1000..=2000), (Protocol::Sctp, 9..=9)]),
        ] {
            let mut marks = PortMarks::open();
            marks.end_admin_tier();
            marks.isolate(&allowed);
            assert_eq!(marks.to_port_set(), allowed);
        }
    }

    #[test]
    fn pass_goes_to_the_network_policy_tier_and_first_rule_wins() {
        let mut marks = PortMarks::open();
        marks.apply(&tcp(80, 80), Action::Pass);
        marks.apply(&PortSet::any(), Action::Deny);
        marks.end_admin_tier();
        marks.isolate(&tcp(80, 81));
        let set = marks.to_port_set();
        assert!(set.allows(6, 80), "passed, then allowed by NetworkPolicy");
        assert!(
            !set.allows(6, 81),
            "denied by the admin before NetworkPolicy"
        );
        assert!(!set.allows(1, 0));
    }

    /// Random rule lists against a per-port evaluation straight from the definition.
    #[test]
    fn marks_agree_with_rule_by_rule_evaluation() {
        let mut rng = StdRng::seed_from_u64(11);
        let sample_ports: Vec<u16> = (0..40).chain([79, 80, 81, 443, 8080, 65535]).collect();
        for _ in 0..400 {
            let random_set = |rng: &mut StdRng| match rng.random_range(0..4) {
                0 => PortSet::any(),
                1 => PortSet::all_ports(Protocol::ALL[rng.random_range(0..3)]),
                _ => {
                    let a = rng.random_range(0..45u16);
                    let b = a + rng.random_range(0..10u16);
                    PortSet::from_ranges([(Protocol::ALL[rng.random_range(0..2)], a..=b)])
                }
            };
            let actions = [Action::Accept, Action::Deny, Action::Pass];
            let admin: Vec<(PortSet, Action)> = (0..rng.random_range(0..4))
                .map(|_| (random_set(&mut rng), actions[rng.random_range(0..3)]))
                .collect();
            let isolated = rng.random_bool(0.5).then(|| random_set(&mut rng));
            let baseline: Vec<(PortSet, Action)> = (0..rng.random_range(0..3))
                .map(|_| (random_set(&mut rng), actions[rng.random_range(0..2)]))
                .collect();

            let mut marks = PortMarks::open();
            for (set, action) in &admin {
                marks.apply(set, *action);
            }
            marks.end_admin_tier();
            match &isolated {
                Some(allowed) => marks.isolate(allowed),
                None => {
                    for (set, action) in &baseline {
                        marks.apply(set, *action);
                    }
                    marks.default_allow();
                }
            }
            let set = marks.to_port_set();

            for proto in [6u8, 17, 132, 1] {
                for &port in &sample_ports {
                    let port = if proto == 1 { 0 } else { port };
                    let first = |rules: &[(PortSet, Action)]| {
                        rules
                            .iter()
                            .find(|(s, _)| s.allows(proto, port))
                            .map(|(_, a)| *a)
                    };
                    let want = match first(&admin) {
                        Some(Action::Accept) => true,
                        Some(Action::Deny) => false,
                        Some(Action::Pass) | None => match &isolated {
                            Some(allowed) => allowed.allows(proto, port),
                            None => first(&baseline) != Some(Action::Deny),
                        },
                    };
                    assert_eq!(
                        set.allows(proto, port),
                        want,
                        "{proto}/{port}: admin {admin:?} isolated {isolated:?} \
                         baseline {baseline:?} → {set:?}"
                    );
                }
            }
        }
    }
}
