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

use std::{fmt::Write as _, net::Ipv4Addr};

use weir_netpol_model::{
    allowed, interesting_ports,
    rand::{rngs::StdRng, Rng, SeedableRng},
    random_world, shrink, Endpoint, Proto, Size, World,
};
use weir_policy::{
    compile::{compile, Compiled},
    model::{Cluster, NamedPort, PodInfo, PodKey, Protocol},
};

/// Seeds CI runs (about a second of work each… for a hundred of them).
const CI_SEEDS: u64 = 300;
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

/// The world as the compiler's cluster model, every pod local.
fn compile_world(world: &World) -> Result<Compiled, String> {
    let mut cluster = Cluster::default();
    for ns in &world.namespaces {
        cluster.upsert_namespace(ns.name.clone(), ns.labels.clone());
    }
    for pod in &world.pods {
        let ports = pod
            .ports
            .iter()
            .filter_map(|cp| {
                Some(NamedPort {
                    name: cp.name.clone()?,
                    port: cp.port,
                    protocol: Protocol::from_k8s(cp.protocol.k8s_name()).expect("TCP, UDP or SCTP"),
                })
            })
            .collect();
        cluster.upsert_pod(PodInfo {
            key: PodKey::new(pod.namespace.clone(), pod.name.clone()),
            labels: pod.labels.clone(),
            ip: Some(pod.ip),
            node: Some("node-1".to_owned()),
            ports,
        });
    }
    for policy in &world.policies {
        cluster
            .upsert_policy(policy.clone())
            .map_err(|e| format!("upsert_policy rejected {:?}: {e}", policy.metadata.name))?;
    }
    let local: Vec<(Ipv4Addr, Option<PodKey>)> = world
        .pods
        .iter()
        .map(|p| (p.ip, Some(PodKey::new(p.namespace.clone(), p.name.clone()))))
        .collect();
    Ok(compile(&cluster, &local))
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
            let verdict = |b: bool| if b { "allows" } else { "denies" };
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

#[test]
fn compiler_agrees_with_the_model_on_random_worlds() {
    let seeds: Vec<u64> = match env_u64("WEIR_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("WEIR_DIFF_FIRST_SEED").unwrap_or(0);
            let count = env_u64("WEIR_DIFF_SEEDS").unwrap_or(CI_SEEDS);
            (first..first + count).collect()
        }
    };
    let replaying = seeds.len() == 1;
    let size = Size::default();
    let (mut probes, mut allowed) = (0, 0);
    let mut failing = Vec::new();
    let mut stories = String::new();
    for &seed in &seeds {
        let world = random_world(seed, &size);
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
