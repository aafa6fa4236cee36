// SPDX-License-Identifier: Apache-2.0
//! Kernel differential test: the real datapath (agent, eBPF policy, conntrack) in the lab against
//! the independent NetworkPolicy model (`weir-netpol-model`), on seeded random worlds.
//!
//! For each seed: a random lab-shaped world (2–3 namespaces with labels, 3–5 pods with labels,
//! each serving 80 and 81 over TCP, UDP and SCTP, 1–5 random policies). The pods are added to one
//! lab through the real CNI; the world is then drawn again with the addresses IPAM gave them
//! (same pods and policy shapes, ipBlocks around the real addresses); namespaces and policies
//! are applied. Each round probes a few (protocol, port) combinations, straight to pod IPs:
//! every ordered pair of pods (loopback excluded), every pod → the internet host, and the
//! internet host → every pod, and compares each result with the model. Between rounds one pod's
//! labels change. A pair that disagrees is probed once more, with a longer timeout, before it
//! counts.
//!
//! Each disagreement is printed with the compiler's verdict next to the model's and the
//! kernel's, which says where to look: compiler = model ≠ kernel is the datapath or the agent,
//! compiler = kernel ≠ model is the compiler (the pure `netpol_differential` should then find
//! it too, faster). The failing world is printed as YAML.
//!
//! CI runs [`CI_WORLDS`] fixed seeds. By hand: `WEIR_DIFF_LAB_WORLDS=20` runs more (starting at
//! `WEIR_DIFF_LAB_FIRST_SEED`), `WEIR_DIFF_LAB_SEED=n` runs one.

mod common;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use weir_netpol_model::{
    allowed,
    rand::{rngs::StdRng, seq::SliceRandom, SeedableRng},
    random_relabel, random_world, Endpoint, Proto as ModelProto, Size, World, OUTSIDE_HOST,
};
use weir_policy::compile::Compiled;
use weir_tests::{
    lab::{Lab, LabOptions, MatrixOptions, PodSpec, ProbeOptions, ProbeTarget},
    state::Routing,
    Proto,
};

/// Worlds CI runs.
const CI_WORLDS: u64 = 4;
/// The first seed CI runs (any fixed number; this one is just not 0).
const CI_FIRST_SEED: u64 = 7000;
/// Rounds per world: the policies as applied, then after each of `ROUNDS - 1` label changes.
const ROUNDS: usize = 2;
/// (protocol, port) combinations probed per round, drawn from [`CONFIGS`].
const CONFIGS_PER_ROUND: usize = 2;
/// What a lab pod serves, and ICMP.
const CONFIGS: [(Proto, u16); 7] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 81),
    (Proto::Udp, 80),
    (Proto::Udp, 81),
    (Proto::Sctp, 80),
    (Proto::Sctp, 81),
    (Proto::Icmp, 0),
];
/// Allowed connections answer in well under a millisecond; this bounds how long a denial takes.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The second chance of a pair that disagreed.
const RETRY_TIMEOUT: Duration = Duration::from_millis(1500);

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn model_proto(proto: Proto) -> ModelProto {
    match proto {
        Proto::Tcp => ModelProto::Tcp,
        Proto::Udp => ModelProto::Udp,
        Proto::Sctp => ModelProto::Sctp,
        Proto::Icmp => ModelProto::Icmp,
    }
}

fn key(pod: &weir_netpol_model::Pod) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}

/// The namespaces of the world, with their labels, as manifests.
fn namespaces_yaml(world: &World) -> String {
    world
        .namespaces
        .iter()
        .map(|ns| {
            let labels: String = ns
                .labels
                .iter()
                .map(|(k, v)| format!("    {k}: {v}\n"))
                .collect();
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    kubernetes.io/metadata.name: {}\n{labels}",
                ns.name, ns.name
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One probe to compare.
struct Check<'w> {
    from: Endpoint<'w>,
    to: Endpoint<'w>,
    /// The lab's names: `ns/name` or `ext`; the target is always an address.
    lab_from: String,
    lab_to: Ipv4Addr,
}

fn checks(world: &World) -> Vec<Check<'_>> {
    let mut out = Vec::new();
    for from in &world.pods {
        for to in &world.pods {
            if from.ip != to.ip {
                out.push(Check {
                    from: Endpoint::Pod(from),
                    to: Endpoint::Pod(to),
                    lab_from: key(from),
                    lab_to: to.ip,
                });
            }
        }
        out.push(Check {
            from: Endpoint::Pod(from),
            to: Endpoint::Outside(OUTSIDE_HOST),
            lab_from: key(from),
            lab_to: OUTSIDE_HOST,
        });
        out.push(Check {
            from: Endpoint::Outside(OUTSIDE_HOST),
            to: Endpoint::Pod(from),
            lab_from: "ext".to_owned(),
            lab_to: from.ip,
        });
    }
    out
}

/// Probes one (protocol, port) and returns a line per disagreement that survives a re-probe,
/// and how many probes the model (allowed, denied).
fn check_config(
    lab: &Lab,
    world: &World,
    compiled: &Compiled,
    proto: Proto,
    port: u16,
) -> (Vec<String>, [usize; 2]) {
    let pods: Vec<String> = world.pods.iter().map(key).collect();
    let matrix = lab
        .matrix_with(
            &MatrixOptions::new(proto, port)
                .timeout(PROBE_TIMEOUT)
                .pods(&pods),
        )
        .expect("probing the pod matrix");
    let checks = checks(world);
    // Pod → pod results come from the matrix; the rest is probed here, in parallel.
    let first: Vec<Option<bool>> = std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|c| {
                let to_key = c.to.pod().map(key);
                let matrix = &matrix;
                s.spawn(move || match (&c.from, to_key) {
                    (Endpoint::Pod(_), Some(to)) => matrix.connected(&c.lab_from, &to),
                    _ => lab
                        .probe_with(
                            &c.lab_from,
                            &ProbeTarget::Ip(c.lab_to),
                            &ProbeOptions::new(proto, port).timeout(PROBE_TIMEOUT),
                        )
                        .ok()
                        .map(|r| r.connected),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let mut problems = Vec::new();
    let mut counts = [0, 0];
    let mproto = model_proto(proto);
    for (check, got) in checks.iter().zip(first) {
        let want = allowed(world, check.from, check.to, mproto, port);
        counts[usize::from(!want)] += 1;
        if got == Some(want) {
            continue;
        }
        // Once more, with time to spare, before it counts.
        let retry = lab.probe_with(
            &check.lab_from,
            &ProbeTarget::Ip(check.lab_to),
            &ProbeOptions::new(proto, port).timeout(RETRY_TIMEOUT),
        );
        let (kernel, error) = match &retry {
            Ok(r) => (Some(r.connected), r.error.clone()),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        if kernel == Some(want) {
            eprintln!(
                "netpol-diff: {} → {} {}: first probe disagreed, re-probe agreed",
                check.from,
                check.to,
                proto.k8s_name()
            );
            continue;
        }
        let compiler = compiled.flow_allowed(check.from.ip(), check.to.ip(), mproto.number(), port);
        let verdict = |b: bool| if b { "allows" } else { "denies" };
        let what = if mproto.has_ports() {
            format!("{}/{port}", proto.k8s_name())
        } else {
            proto.k8s_name().to_owned()
        };
        problems.push(format!(
            "{} → {} {what}: model {}, compiler {}, kernel {}{}",
            check.from,
            check.to,
            verdict(want),
            verdict(compiler),
            kernel.map_or("could not probe", |k| if k {
                "connects"
            } else {
                "does not connect"
            }),
            error.map(|e| format!(" ({e})")).unwrap_or_default(),
        ));
    }
    (problems, counts)
}

/// `k=v` / `k-` changes that turn `old` into `new`.
fn label_changes(
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut changes: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    changes.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| format!("{k}-")),
    );
    changes
}

/// Runs one world in `lab` (which it leaves without pods or policies); returns its failures.
fn run_world(lab: &Lab, seed: u64, size: &Size) -> Vec<String> {
    let t = Instant::now();
    let shape = random_world(seed, size);
    let mut ips = Vec::new();
    for pod in &shape.pods {
        let mut spec = PodSpec::new(&pod.namespace, &pod.name);
        for (k, v) in &pod.labels {
            spec = spec.label(k, v);
        }
        let info = lab
            .add_pod_with(&spec)
            .unwrap_or_else(|e| panic!("seed {seed}: adding {}: {e:#}", key(pod)));
        ips.push(info.ip);
    }
    let mut world = random_world(seed, &size.clone().with_pod_ips(ips));
    for (a, b) in shape.pods.iter().zip(&world.pods) {
        assert_eq!(
            (&a.namespace, &a.name, &a.labels),
            (&b.namespace, &b.name, &b.labels)
        );
    }
    lab.apply_yaml(&namespaces_yaml(&world))
        .unwrap_or_else(|e| panic!("seed {seed}: applying namespaces: {e:#}"));
    if let Err(e) = lab.apply_yaml(&world.policies_yaml()) {
        // A cluster policy with a `domainNames` peer is applied and reported (it fails closed,
        // as the model says); anything else refused is a failure of the test's input.
        let only_domain_names = matches!(
            e.downcast_ref::<weir_tests::lab::LabError>(),
            Some(weir_tests::lab::LabError::Rejected(hits))
                if hits.iter().all(|h| h.starts_with("ClusterNetworkPolicy") && h.contains("domainNames"))
        );
        assert!(
            only_domain_names,
            "seed {seed}: applying policies: {e:#}\n{}",
            world.policies_yaml()
        );
    }

    let mut rng = StdRng::seed_from_u64(seed ^ 0x1abe_11ed);
    let mut failures = Vec::new();
    let mut allowed_denied = [0, 0];
    for round in 0..ROUNDS {
        if round > 0 {
            let before = world.clone();
            let i = random_relabel(&mut world, &mut rng);
            let pod = &world.pods[i];
            let changes = label_changes(&before.pods[i].labels, &pod.labels);
            let changes: Vec<&str> = changes.iter().map(String::as_str).collect();
            lab.label_pod(&pod.namespace, &pod.name, &changes)
                .unwrap_or_else(|e| panic!("seed {seed}: labelling {}: {e:#}", key(pod)));
            eprintln!(
                "netpol-diff: seed {seed} round {round}: {} {changes:?}",
                key(pod)
            );
        }
        let (compiled, rejected) = common::netpol::compile_world(&world);
        for why in rejected {
            eprintln!("netpol-diff: the compiler model: {why}");
        }
        let mut configs = CONFIGS.to_vec();
        configs.shuffle(&mut rng);
        for &(proto, port) in &configs[..CONFIGS_PER_ROUND] {
            let (problems, [yes, no]) = check_config(lab, &world, &compiled, proto, port);
            allowed_denied[0] += yes;
            allowed_denied[1] += no;
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("seed {seed} round {round}: {p}")),
            );
        }
        if failures
            .iter()
            .any(|f| f.contains(&format!("round {round}:")))
        {
            eprintln!(
                "netpol-diff: seed {seed} round {round} world:\n{}",
                world.to_yaml()
            );
        }
    }

    for policy in &world.policies {
        let name = policy
            .metadata
            .name
            .as_deref()
            .expect("generated policies have names");
        let namespace = policy
            .metadata
            .namespace
            .as_deref()
            .expect("and namespaces");
        lab.delete_policy(namespace, name)
            .unwrap_or_else(|e| panic!("seed {seed}: deleting policy {namespace}/{name}: {e:#}"));
    }
    for policy in &world.cluster_policies {
        let name = policy["metadata"]["name"].as_str().expect("named");
        lab.delete_cluster_policy(name)
            .unwrap_or_else(|e| panic!("seed {seed}: deleting cluster policy {name}: {e:#}"));
    }
    for pod in &world.pods {
        lab.del_pod(&pod.namespace, &pod.name)
            .unwrap_or_else(|e| panic!("seed {seed}: deleting {}: {e:#}", key(pod)));
    }
    eprintln!(
        "netpol-diff: seed {seed}: {} pods, {} policies, {} cluster policies, {} probes allowed and {} denied by the model, {} disagreements ({:.1}s)",
        world.pods.len(),
        world.policies.len(),
        world.cluster_policies.len(),
        allowed_denied[0],
        allowed_denied[1],
        failures.len(),
        t.elapsed().as_secs_f64()
    );
    failures
}

#[test]
fn kernel_agrees_with_the_model_on_random_worlds() {
    require_root!();
    kernel_agrees(1, Routing::Native, "netpol-diff", &Size::lab());
}

/// Worlds with ClusterNetworkPolicies of both tiers too (their own seeds), on one node.
#[test]
fn kernel_agrees_with_the_model_on_random_worlds_with_cluster_policies() {
    require_root!();
    kernel_agrees(
        1,
        Routing::Native,
        "netpol-diff-cnp",
        &Size::lab().with_cluster_policies(1..=3),
    );
}

/// The same worlds with their pods spread over three nodes, in both routing modes.
#[test]
fn kernel_agrees_with_the_model_across_three_nodes_native() {
    require_root!();
    kernel_agrees(3, Routing::Native, "netpol-diff-n3", &Size::lab());
}

#[test]
fn kernel_agrees_with_the_model_across_three_nodes_vxlan() {
    require_root!();
    kernel_agrees(3, Routing::Vxlan, "netpol-diff-v3", &Size::lab());
}

/// Each test brings up a lab full of pods; side by side on two cores, denials (timeouts) and
/// allowed probes would compete for CPU. One at a time.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kernel_agrees(nodes: u32, routing: Routing, tag: &str, size: &Size) {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seeds: Vec<u64> = match env_u64("WEIR_DIFF_LAB_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("WEIR_DIFF_LAB_FIRST_SEED").unwrap_or(CI_FIRST_SEED);
            let count = env_u64("WEIR_DIFF_LAB_WORLDS").unwrap_or(CI_WORLDS);
            (first..first + count).collect()
        }
    };
    let started = Instant::now();
    let opts = LabOptions {
        nodes,
        routing,
        // The internet host reaches pod IPs directly, so ingress from outside can be probed.
        ext_pod_routes: true,
        ..LabOptions::isolated(tag)
    };
    let lab = Lab::up(&opts).expect("lab up");
    let mut failures = Vec::new();
    for &seed in &seeds {
        failures.extend(run_world(&lab, seed, size));
    }
    eprintln!(
        "netpol-diff: {} worlds in {:.0}s, {} disagreements",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "the kernel and the model disagree ({} probes; worlds printed above):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
