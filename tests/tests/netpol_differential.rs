// SPDX-License-Identifier: Apache-2.0
//! Differential test: Weir's policy compiler (`weir-policy`) against an independent model of the
//! NetworkPolicy semantics (`weir-netpol-model`, written from the API documentation apart from
//! the compiler), on seeded random worlds: random namespaces, labels, container ports and
//! policies, every pod local, and every probe (pod ↔ pod, pod ↔ outside address; TCP, UDP, SCTP
//! over 80, 81, every port a policy names ± 1, the endPort boundaries and one random port; ICMP).
//!
//! The compiler's verdict for a probe is what the datapath computes: the source pod's egress
//! rules with the destination address, and the destination pod's ingress rules with the source
//! address (`DirectionRules::allows`, and `Compiled::flow_allowed`, which must say the same).
//!
//! CI runs a fixed set of seeds. By hand:
//! - `WEIR_DIFF_SEEDS=100000 cargo test --release -p weir-tests --test netpol_differential`
//!   runs more (`WEIR_DIFF_FIRST_SEED` moves the start);
//! - `WEIR_DIFF_SEED=1234 …` replays one seed and prints its world even when it passes.
//!
//! On a disagreement the test shrinks the world to a minimal one that still disagrees and prints
//! it as YAML (`World::from_yaml` reads it back) with the disagreeing probes, ready to paste into
//! a unit test.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use weir_common::policy::{
    PEER_KEY_BITS, PORTSET_EMPTY, PORT_KEY_BITS, TABLE_ALLOW_ALL, TABLE_DENY_ALL, TABLE_FAIL_CLOSED,
};
use weir_netpol_model::{
    allowed,
    eval::direction_allows,
    interesting_ports,
    rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng},
    random_relabel, random_world, shrink, Direction, Endpoint, Proto, Size, World,
};
use weir_policy::{
    compile::{Compiled, Incremental},
    plan::{peer_key, port_key, Plan, Programmer},
};

/// Seeds CI runs (about a second of work per hundred).
const CI_SEEDS: u64 = 300;
/// Seeds CI runs through the programmer and the simulated maps (each is five states and four
/// plans, with checks after every single map write).
const CI_PROGRAM_SEEDS: u64 = 100;
/// How many failing seeds are shrunk and printed in full; the rest are only listed.
const SHOWN_FAILURES: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// One probe: a new connection `from → to` with `proto` to destination port `port` (0 for ICMP).
#[derive(Clone, Copy, Debug)]
struct Probe<'w> {
    from: Endpoint<'w>,
    to: Endpoint<'w>,
    proto: Proto,
    port: u16,
}

impl std::fmt::Display for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.proto.has_ports() {
            write!(
                f,
                "{} → {} {}/{}",
                self.from, self.to, self.proto, self.port
            )
        } else {
            write!(f, "{} → {} {}", self.from, self.to, self.proto)
        }
    }
}

/// Every probe of `world`: all ordered pairs of endpoints with at least one pod and no loopback,
/// all protocols, the interesting ports plus `extra_port`.
fn probes(world: &World, extra_port: u16) -> Vec<Probe<'_>> {
    let mut ports = interesting_ports(world);
    ports.insert(extra_port);
    let endpoints = world.endpoints();
    let mut out = Vec::new();
    for from in &endpoints {
        for to in &endpoints {
            let loopback = from.ip() == to.ip();
            let no_pod = from.pod().is_none() && to.pod().is_none();
            if loopback || no_pod {
                continue;
            }
            for proto in Proto::ALL {
                if proto.has_ports() {
                    out.extend(ports.iter().map(|&port| Probe {
                        from: *from,
                        to: *to,
                        proto,
                        port,
                    }));
                } else {
                    out.push(Probe {
                        from: *from,
                        to: *to,
                        proto,
                        port: 0,
                    });
                }
            }
        }
    }
    out
}

/// The world compiled, or the first policy the compiler's model refused.
fn compile_world(world: &World) -> Result<Compiled, String> {
    let (compiled, rejected) = common::netpol::compile_world(world);
    match rejected.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(compiled),
    }
}

/// The compiler's verdict, from the per-endpoint rules.
fn compiler_allows(compiled: &Compiled, probe: &Probe<'_>) -> bool {
    let rules = |ep: &Endpoint<'_>| {
        compiled
            .endpoints
            .get(&ep.ip())
            .unwrap_or_else(|| panic!("local pod {ep} has no compiled rules"))
    };
    let (proto, port) = (probe.proto.number(), probe.port);
    let egress_ok =
        probe.from.pod().is_none() || rules(&probe.from).egress.allows(probe.to.ip(), proto, port);
    let ingress_ok = probe.to.pod().is_none()
        || rules(&probe.to)
            .ingress
            .allows(probe.from.ip(), proto, port);
    egress_ok && ingress_ok
}

/// What went wrong with one world.
#[derive(Default)]
struct Report {
    probes: usize,
    allowed: usize,
    /// One line per disagreeing probe.
    disagreements: Vec<String>,
    /// Compile problems (a valid world should have none) or a rejected input.
    problems: Vec<String>,
}

impl Report {
    fn failed(&self) -> bool {
        !self.disagreements.is_empty() || !self.problems.is_empty()
    }
}

fn check_world(world: &World, extra_port: u16) -> Report {
    let mut report = Report::default();
    let compiled = match compile_world(world) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e);
            return report;
        }
    };
    report
        .problems
        .extend(compiled.problems.iter().map(ToString::to_string));
    let verdict = |b: bool| if b { "allows" } else { "denies" };
    for probe in probes(world, extra_port) {
        let model = allowed(world, probe.from, probe.to, probe.proto, probe.port);
        let compiler = compiler_allows(&compiled, &probe);
        let flow = compiled.flow_allowed(
            probe.from.ip(),
            probe.to.ip(),
            probe.proto.number(),
            probe.port,
        );
        report.probes += 1;
        report.allowed += usize::from(model);
        if model != compiler || compiler != flow {
            let mut line = format!(
                "{probe}: model {}, compiler {}",
                verdict(model),
                verdict(compiler)
            );
            if compiler != flow {
                let _ = write!(line, ", Compiled::flow_allowed {}", verdict(flow));
            }
            report.disagreements.push(line);
        }
        // Each direction on its own too: with the other end on another node, it is all there is.
        for (direction, subject, peer) in [
            (Direction::Egress, probe.from, probe.to),
            (Direction::Ingress, probe.to, probe.from),
        ] {
            let Some(pod) = subject.pod() else { continue };
            let destination = match direction {
                Direction::Ingress => subject,
                Direction::Egress => peer,
            };
            let model = direction_allows(
                world,
                pod,
                direction,
                peer,
                destination,
                probe.proto,
                probe.port,
            );
            let rules = &compiled.endpoints[&pod.ip];
            let rules = match direction {
                Direction::Ingress => &rules.ingress,
                Direction::Egress => &rules.egress,
            };
            let compiler = rules.allows(peer.ip(), probe.proto.number(), probe.port);
            if model != compiler {
                report.disagreements.push(format!(
                    "{probe}, {direction:?} of {subject} alone: model {}, compiler {}",
                    verdict(model),
                    verdict(compiler)
                ));
            }
        }
    }
    report
}

/// A random destination port for the seed, the same for the world and its shrunk versions.
fn extra_port(seed: u64) -> u16 {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).random_range(1..=65535)
}

/// The full story of one failing seed: its first disagreements, then the shrunk world and its
/// disagreements.
fn explain(seed: u64, world: &World, report: &Report) -> String {
    let extra = extra_port(seed);
    let mut out = format!(
        "seed {seed}: {} of {} probes disagree{}\n",
        report.disagreements.len(),
        report.probes,
        if report.problems.is_empty() {
            ""
        } else {
            " (and the compiler reported problems)"
        },
    );
    for line in report.problems.iter().take(5) {
        let _ = writeln!(out, "  problem: {line}");
    }
    for line in report.disagreements.iter().take(5) {
        let _ = writeln!(out, "  {line}");
    }
    let small = shrink(world, |w| check_world(w, extra).failed());
    let small_report = check_world(&small, extra);
    let _ = writeln!(
        out,
        "shrunk world (World::from_yaml reads it; extra port {extra}):\n---\n{}---",
        small.to_yaml()
    );
    for line in &small_report.problems {
        let _ = writeln!(out, "  problem: {line}");
    }
    for line in &small_report.disagreements {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "replay: WEIR_DIFF_SEED={seed} cargo test -p weir-tests --test netpol_differential -- --nocapture"
    );
    out
}

/// The seeds to run: `WEIR_DIFF_SEED`, or `WEIR_DIFF_SEEDS` (default `ci`) from
/// `WEIR_DIFF_FIRST_SEED`.
fn seeds(ci: u64) -> Vec<u64> {
    match env_u64("WEIR_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("WEIR_DIFF_FIRST_SEED").unwrap_or(0);
            let count = env_u64("WEIR_DIFF_SEEDS").unwrap_or(ci);
            (first..first + count).collect()
        }
    }
}

#[test]
fn compiler_agrees_with_the_model_on_random_worlds() {
    compiler_agrees(&Size::default());
}

/// The same with ClusterNetworkPolicies of both tiers in every world.
#[test]
fn compiler_agrees_with_the_model_on_random_worlds_with_cluster_policies() {
    compiler_agrees(&Size::default().with_cluster_policies(1..=4));
}

fn compiler_agrees(size: &Size) {
    let seeds = seeds(CI_SEEDS);
    let replaying = seeds.len() == 1;
    let (mut probes, mut allowed) = (0, 0);
    let mut failing = Vec::new();
    let mut stories = String::new();
    for &seed in &seeds {
        let world = random_world(seed, size);
        let report = check_world(&world, extra_port(seed));
        probes += report.probes;
        allowed += report.allowed;
        if replaying {
            eprintln!("seed {seed} world:\n{}", world.to_yaml());
        }
        if report.failed() {
            if failing.len() < SHOWN_FAILURES {
                stories.push_str(&explain(seed, &world, &report));
                stories.push('\n');
            }
            failing.push(seed);
        }
    }
    eprintln!(
        "{} worlds, {probes} probes, {:.1}% allowed by the model, {} failing seeds",
        seeds.len(),
        100.0 * allowed as f64 / probes.max(1) as f64,
        failing.len()
    );
    assert!(
        failing.is_empty(),
        "the compiler and the model disagree on {} of {} seeds: {failing:?}\n\n{stories}",
        failing.len(),
        seeds.len()
    );
    // A differential test that only ever sees "allowed" (or only "denied") proves little.
    if !replaying {
        let share = allowed as f64 / probes as f64;
        assert!(
            (0.15..0.85).contains(&share),
            "model allows {share:.2} of probes: worlds are lopsided"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The programmer and the kernel's lookups.
//
// `Programmer::plan` turns each compilation into map writes; here they are applied, in the plan's
// order, to an in-memory copy of the two LPM tries and the endpoint rows, keyed by the very bytes
// the kernel sees (`plan::peer_key`/`port_key`), and every probe is judged as
// `bpf-progs/src/policy.rs` does (`table_allows`: the table's sentinels, then a PEERS lookup, then
// a PORTS lookup, each longest-prefix-match on the raw key). Each seed goes through five states
// (the world, then a pod relabelled, a namespace relabelled, a policy deleted, every policy
// replaced by another seed's), and:
// - after each committed plan, every probe matches the model;
// - after every single write of a plan, each endpoint's verdict in each direction is the old or
//   the new model's (the plan's ordering promise);
// - some plans fail part-way (the simulation stops writing), are aborted, and the next plan must
//   repair everything.

/// LPM trie contents: (prefix length, key bytes with the bits past the prefix zeroed) → value.
type Trie = BTreeMap<(u32, [u8; 8]), u32>;

/// What the kernel's policy maps hold.
#[derive(Clone, Debug, Default)]
struct Maps {
    peers: Trie,
    ports: Trie,
    /// Endpoint address → (ingress table, egress table).
    endpoints: BTreeMap<Ipv4Addr, (u32, u32)>,
}

/// Zeroes the bits past `len`, as the kernel's trie ignores them (an update with other trailing
/// bits overwrites the same node).
fn masked(len: u32, mut data: [u8; 8]) -> [u8; 8] {
    assert!(len <= 64, "prefix length {len} over the key size");
    for (i, byte) in data.iter_mut().enumerate() {
        let bit = u32::try_from(i).expect("small") * 8;
        if bit >= len {
            *byte = 0;
        } else if len - bit < 8 {
            *byte &= 0xffu8 << (8 - (len - bit));
        }
    }
    data
}

/// Longest-prefix match of the first `len` bits of `data`.
fn lpm(trie: &Trie, len: u32, data: [u8; 8]) -> Option<u32> {
    (0..=len)
        .rev()
        .find_map(|l| trie.get(&(l, masked(l, data))).copied())
}

fn peer_bytes(key: &weir_common::PeerKey) -> [u8; 8] {
    let mut b = [0; 8];
    b[..4].copy_from_slice(&key.table);
    b[4..].copy_from_slice(&key.ip);
    b
}

fn port_bytes(key: &weir_common::PortKey) -> [u8; 8] {
    let mut b = [0; 8];
    b[..4].copy_from_slice(&key.portset);
    b[4] = key.proto;
    b[5..7].copy_from_slice(&key.port);
    b[7] = key._pad;
    b
}

/// One map write of a plan.
enum Write {
    /// (prefix length, key, 1 allows / 0 denies)
    PortUpsert(u32, [u8; 8], u32),
    PeerUpsert(u32, [u8; 8], u32),
    Endpoint(Ipv4Addr, u32, u32),
    PeerDelete(u32, [u8; 8]),
    PortDelete(u32, [u8; 8]),
}

/// The plan's writes, in the order the agent applies them.
fn writes(plan: &Plan) -> Vec<Write> {
    let mut out = Vec::new();
    for (set, prefix) in &plan.portset_upserts {
        let (len, key) = port_key(*set, *prefix);
        out.push(Write::PortUpsert(
            len,
            port_bytes(&key),
            u32::from(!prefix.deny),
        ));
    }
    for (table, net, set) in &plan.peer_upserts {
        let (len, key) = peer_key(*table, *net);
        out.push(Write::PeerUpsert(len, peer_bytes(&key), *set));
    }
    for (ip, ingress, egress) in &plan.endpoint_tables {
        out.push(Write::Endpoint(*ip, *ingress, *egress));
    }
    for (table, net) in &plan.peer_deletes {
        let (len, key) = peer_key(*table, *net);
        out.push(Write::PeerDelete(len, peer_bytes(&key)));
    }
    for (set, prefix) in &plan.portset_deletes {
        let (len, key) = port_key(*set, *prefix);
        out.push(Write::PortDelete(len, port_bytes(&key)));
    }
    out
}

impl Maps {
    fn apply(&mut self, write: &Write) {
        match *write {
            Write::PortUpsert(len, data, allow) => {
                self.ports.insert((len, masked(len, data)), allow);
            }
            Write::PeerUpsert(len, data, set) => {
                self.peers.insert((len, masked(len, data)), set);
            }
            Write::Endpoint(ip, ingress, egress) => {
                self.endpoints.insert(ip, (ingress, egress));
            }
            // A delete of a missing key is ENOENT, which the agent takes as success.
            Write::PeerDelete(len, data) => {
                self.peers.remove(&(len, masked(len, data)));
            }
            Write::PortDelete(len, data) => {
                self.ports.remove(&(len, masked(len, data)));
            }
        }
    }

    /// `table_allows` of bpf-progs/src/policy.rs.
    fn table_allows(&self, table: u32, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        if table == TABLE_ALLOW_ALL {
            return true;
        }
        if table == TABLE_DENY_ALL || table == TABLE_FAIL_CLOSED {
            return false;
        }
        let key = weir_common::PeerKey::new(table, peer.octets());
        let Some(set) = lpm(&self.peers, PEER_KEY_BITS, peer_bytes(&key)) else {
            return false;
        };
        if set == PORTSET_EMPTY {
            return false;
        }
        let key = weir_common::PortKey::new(set, proto, port);
        // The longest matching entry's value decides (0: a hole denying inside an allow).
        lpm(&self.ports, PORT_KEY_BITS, port_bytes(&key)).is_some_and(|allow| allow != 0)
    }

    /// One direction of a local endpoint (a missing row is a zeroed one: allow all).
    fn direction_allows(
        &self,
        subject: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> bool {
        let (ingress, egress) = self
            .endpoints
            .get(&subject)
            .copied()
            .unwrap_or((TABLE_ALLOW_ALL, TABLE_ALLOW_ALL));
        let table = match direction {
            Direction::Ingress => ingress,
            Direction::Egress => egress,
        };
        self.table_allows(table, peer, proto, port)
    }

    /// `judge`: the source's egress if it is local, the destination's ingress if it is.
    fn flow_allowed(&self, probe: &Probe<'_>) -> bool {
        let (proto, port) = (probe.proto.number(), probe.port);
        let egress_ok = probe.from.pod().is_none()
            || self.direction_allows(
                probe.from.ip(),
                Direction::Egress,
                probe.to.ip(),
                proto,
                port,
            );
        let ingress_ok = probe.to.pod().is_none()
            || self.direction_allows(
                probe.to.ip(),
                Direction::Ingress,
                probe.from.ip(),
                proto,
                port,
            );
        egress_ok && ingress_ok
    }
}

/// The next state of a seed's sequence, and what changed.
fn next_world(
    world: &World,
    step: usize,
    seed: u64,
    size: &Size,
    rng: &mut StdRng,
) -> (World, String) {
    let mut next = world.clone();
    let what = match step {
        0 => {
            let i = random_relabel(&mut next, rng);
            format!(
                "relabel pod {} to {:?}",
                next.pods[i].key(),
                next.pods[i].labels
            )
        }
        1 => {
            let Some(ns) = next.namespaces.choose(rng).map(|n| n.name.clone()) else {
                return (next, "nothing".to_owned());
            };
            let target = next
                .namespaces
                .iter_mut()
                .find(|n| n.name == ns)
                .expect("chosen");
            let (key, values) = [("team", ["red", "blue"]), ("env", ["prod", "dev"])]
                .choose(rng)
                .copied()
                .expect("keys");
            if target.labels.contains_key(key) && rng.random_bool(0.5) {
                target.labels.remove(key);
            } else {
                target
                    .labels
                    .insert(key.to_owned(), (*values.choose(rng).expect("v")).to_owned());
            }
            format!("relabel namespace {ns} to {:?}", target.labels)
        }
        2 if !next.cluster_policies.is_empty() && rng.random_bool(0.5) => {
            let i = rng.random_range(0..next.cluster_policies.len());
            let gone = next.cluster_policies.remove(i);
            format!("delete cluster policy {}", gone["metadata"]["name"])
        }
        2 if !next.policies.is_empty() => {
            let i = rng.random_range(0..next.policies.len());
            let gone = next.policies.remove(i);
            format!("delete policy {:?}", gone.metadata.name)
        }
        _ => {
            let other = seed ^ 0x0dd5_eed5;
            let other_world = random_world(other, size);
            next.policies = other_world.policies;
            next.cluster_policies = other_world.cluster_policies;
            format!("replace every policy with those of seed {other}")
        }
    };
    (next, what)
}

/// The verdict of one direction of one endpoint, as the model has it in `world` (the peer is
/// looked up there by address: its labels and ports may differ from world to world).
fn model_direction(
    world: &World,
    subject: &Ipv4Addr,
    direction: Direction,
    peer: Endpoint<'_>,
    proto: Proto,
    port: u16,
) -> Option<bool> {
    let pod = world.pod_by_ip(*subject)?;
    let peer = world
        .pod_by_ip(peer.ip())
        .map_or(Endpoint::Outside(peer.ip()), Endpoint::Pod);
    let destination = match direction {
        Direction::Ingress => Endpoint::Pod(pod),
        Direction::Egress => peer,
    };
    Some(direction_allows(
        world,
        pod,
        direction,
        peer,
        destination,
        proto,
        port,
    ))
}

/// Runs one seed through the programmer; returns what went wrong.
fn check_programmed(seed: u64, size: &Size, check_each_write: bool) -> Vec<String> {
    let extra = extra_port(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfee1_600d);
    let mut problems = Vec::new();
    let mut programmer = Programmer::new();
    // Kept across the steps: after every change it must give what compiling from nothing gives.
    let mut incremental = Incremental::default();
    let mut maps = Maps::default();
    let mut world = World::default();
    let mut history = String::new();
    for step in 0..5 {
        let (next, what) = if step == 0 {
            (random_world(seed, size), "the world".to_owned())
        } else {
            next_world(&world, step - 1, seed, size, &mut rng)
        };
        let _ = writeln!(history, "  step {step}: {what}");
        let compiled = match compile_world(&next) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("step {step}: {e}"));
                break;
            }
        };
        let (cluster, local, _) = common::netpol::world_cluster(&next);
        if incremental.compile(&cluster, &local, &BTreeSet::new()) != compiled {
            problems.push(format!(
                "step {step}: the incremental compiler differs from compiling from nothing"
            ));
        }
        let plan = programmer.plan(&compiled);
        if std::env::var_os("WEIR_DIFF_SEED").is_some() {
            eprintln!("step {step} ({what}): {plan:#?}");
        }
        let plan_writes = writes(&plan);
        // Now and then the apply fails part-way: abort, and the next plan must repair it all.
        if !plan_writes.is_empty() && rng.random_bool(0.2) {
            let done = rng.random_range(0..plan_writes.len());
            for w in &plan_writes[..done] {
                maps.apply(w);
            }
            programmer
                .abort(plan.id)
                .expect("abort the outstanding plan");
            let _ = writeln!(
                history,
                "    (apply failed after {done} of {} writes; aborted)",
                plan_writes.len()
            );
            let retry = programmer.plan(&compiled);
            for w in writes(&retry) {
                maps.apply(&w);
            }
            programmer
                .commit(retry.id)
                .expect("commit the outstanding plan");
        } else {
            // After every write, each endpoint's direction says the old or the new answer.
            let sample: Vec<(Proto, u16)> = vec![
                (Proto::Tcp, 80),
                (Proto::Udp, 81),
                (Proto::Sctp, extra),
                (Proto::Icmp, 0),
            ];
            for (n, w) in plan_writes.iter().enumerate() {
                maps.apply(w);
                if step == 0 || !check_each_write {
                    continue; // from empty maps: no "old" state to speak of
                }
                for subject in next.pods.iter().map(|p| p.ip) {
                    for peer in next.endpoints() {
                        if peer.ip() == subject {
                            continue;
                        }
                        for direction in [Direction::Ingress, Direction::Egress] {
                            for &(proto, port) in &sample {
                                let got = maps.direction_allows(
                                    subject,
                                    direction,
                                    peer.ip(),
                                    proto.number(),
                                    port,
                                );
                                let old =
                                    model_direction(&world, &subject, direction, peer, proto, port);
                                let new =
                                    model_direction(&next, &subject, direction, peer, proto, port);
                                if Some(got) != old && Some(got) != new {
                                    problems.push(format!(
                                        "step {step} ({what}), after write {} of {}: {subject} {direction:?} with {peer} {proto}/{port} is {got}, old {old:?}, new {new:?}",
                                        n + 1,
                                        plan_writes.len()
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            programmer
                .commit(plan.id)
                .expect("commit the outstanding plan");
        }
        // Committed: each direction of each endpoint, then every probe, as the model says.
        for probe in probes(&next, extra) {
            for (direction, subject, peer) in [
                (Direction::Egress, probe.from, probe.to),
                (Direction::Ingress, probe.to, probe.from),
            ] {
                let Some(pod) = subject.pod() else { continue };
                let model =
                    model_direction(&next, &pod.ip, direction, peer, probe.proto, probe.port);
                let got = maps.direction_allows(
                    pod.ip,
                    direction,
                    peer.ip(),
                    probe.proto.number(),
                    probe.port,
                );
                if model != Some(got) {
                    problems.push(format!(
                        "step {step} ({what}), committed: {probe}, {direction:?} of {subject} alone: model {model:?}, maps {got}"
                    ));
                }
            }
        }
        for probe in probes(&next, extra) {
            let model = allowed(&next, probe.from, probe.to, probe.proto, probe.port);
            let kernel = maps.flow_allowed(&probe);
            if model != kernel {
                problems.push(format!(
                    "step {step} ({what}), committed: {probe}: model {model}, maps {kernel}"
                ));
            }
        }
        world = next;
        if !problems.is_empty() {
            problems.truncate(10);
            problems.insert(0, format!("history:\n{history}"));
            let _ = writeln!(
                problems[0],
                "world at the failing step:\n{}",
                world.to_yaml()
            );
            break;
        }
    }
    problems
}

fn run_programmed(size: &Size, check_each_write: bool) {
    let seeds = seeds(CI_PROGRAM_SEEDS);
    let mut failing = Vec::new();
    let mut stories = String::new();
    for &seed in &seeds {
        let problems = check_programmed(seed, size, check_each_write);
        if !problems.is_empty() {
            if failing.len() < SHOWN_FAILURES {
                let _ = writeln!(stories, "seed {seed}:\n{}\n", problems.join("\n"));
            }
            failing.push(seed);
        }
    }
    eprintln!(
        "{} seeds through the programmer, {} failing",
        seeds.len(),
        failing.len()
    );
    assert!(
        failing.is_empty(),
        "programmed maps disagree with the model on {} of {} seeds: {failing:?}\n\n{stories}",
        failing.len(),
        seeds.len()
    );
}

/// After each committed plan (some of them after a failed, aborted apply), the simulated maps
/// give the model's verdict for every probe and for each direction of each endpoint.
#[test]
fn programmed_maps_agree_with_the_model_through_changes() {
    run_programmed(&Size::default(), false);
}

/// The same, and every single write keeping each verdict old or new, with ClusterNetworkPolicies
/// (whose port sets hold denying entries under allowing ones).
#[test]
fn programmed_maps_with_cluster_policies_agree_with_the_model_write_by_write() {
    run_programmed(&Size::default().with_cluster_policies(1..=4), true);
}

/// While a plan is applied, every endpoint's verdict in each direction is the old or the new one
/// (the promise of `weir_policy::plan`'s module docs).
#[test]
fn every_write_of_a_plan_keeps_each_verdict_old_or_new() {
    run_programmed(&Size::default(), true);
}

#[test]
fn the_lpm_simulation_picks_the_longest_prefix() {
    let mut trie = Trie::new();
    trie.insert((32, masked(32, [0, 0, 0, 7, 10, 244, 1, 3])), 1);
    trie.insert((32 + 24, masked(56, [0, 0, 0, 7, 10, 244, 1, 0])), 2);
    trie.insert((64, [0, 0, 0, 7, 10, 244, 1, 3]), 3);
    assert_eq!(lpm(&trie, 64, [0, 0, 0, 7, 10, 244, 1, 3]), Some(3));
    assert_eq!(lpm(&trie, 64, [0, 0, 0, 7, 10, 244, 1, 4]), Some(2));
    assert_eq!(lpm(&trie, 64, [0, 0, 0, 7, 10, 244, 2, 4]), Some(1));
    assert_eq!(lpm(&trie, 64, [0, 0, 0, 8, 10, 244, 1, 3]), None);
    assert_eq!(masked(13, [0xff; 8]), [0xff, 0xf8, 0, 0, 0, 0, 0, 0]);
}
