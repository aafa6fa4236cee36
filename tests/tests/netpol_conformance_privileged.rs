// SPDX-License-Identifier: Apache-2.0
//! NetworkPolicy conformance: every connectivity case of the upstream Kubernetes e2e suite
//! (`test/e2e/network/netpol/network_policy.go`), run against Weir in the lab, plus the seed's
//! web → api → db scenario.
//!
//! One lab holds the upstream model for the whole suite: namespaces `x`, `y`, `z` (labelled
//! `ns=<name>` as upstream's model does, and `kubernetes.io/metadata.name=<name>` as the API server
//! does), pods `a`, `b`, `c` in each (labelled `pod=<name>`), each serving 80 and 81 over TCP, UDP
//! and SCTP behind its own ClusterIP Service. The cases (data in `netpol_conformance/`) run one
//! after the other; between two cases every policy the case created is deleted and every label it
//! changed is put back. Every probe goes through the server's Service, as upstream's
//! `agnhost connect <service>` does, so the Service DNAT is on every path.
//!
//! As upstream (`ValidateOrFail`), a table that does not match is probed again (here only the
//! pairs that were wrong) before it counts as a failure; pod → itself is never checked. A failing
//! case does not stop the suite: each failure is printed with its expected and observed tables,
//! and the test fails at the end with the list of broken cases.
//!
//! `WEIR_NETPOL_CASES=<substring>` runs only the cases whose name or upstream title contains it
//! (for example `WEIR_NETPOL_CASES=udp/` or `WEIR_NETPOL_CASES=named-port`).

mod common;
mod netpol_conformance;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Mutex,
    time::{Duration, Instant},
};

use weir_tests::{
    lab::{Lab, LabOptions, Matrix, MatrixOptions, PodSpec, ProbeOptions, ProbeTarget},
    state::Routing,
    Proto,
};

use crate::netpol_conformance::{
    cases::CASES, fill_placeholders, render, Case, Expected, Protocol, Step, PODS,
};

/// How long a probe waits before it counts as "no connection". Connections that are allowed
/// answer in well under a millisecond on veths, so this mostly bounds how long denials take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(600);
/// The re-probe of wrong pairs gets longer, so a slow but allowed answer is not called a denial.
const RETRY_TIMEOUT: Duration = Duration::from_millis(1500);
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const POD_NAMES: [&str; 3] = ["a", "b", "c"];
/// Case filter, by substring of the case name or upstream title.
const CASES_ENV: &str = "WEIR_NETPOL_CASES";

/// Every test brings up a lab full of pods; on two cores, running them side by side would only make
/// denials (timeouts) and allowed probes compete for CPU. One at a time.
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn every_upstream_network_policy_case_holds() {
    require_root!();
    every_case_holds(LabOptions::isolated("netpol"));
}

/// The same cases with the nine pods spread over three nodes (round-robin: x/a, y/a and z/a on
/// one node, and so on), so that most probes cross nodes and Services DNAT to remote backends.
#[test]
fn every_upstream_network_policy_case_holds_across_three_nodes_native() {
    require_root!();
    every_case_holds(LabOptions {
        nodes: 3,
        routing: Routing::Native,
        ..LabOptions::isolated("netpol-n3")
    });
}

#[test]
fn every_upstream_network_policy_case_holds_across_three_nodes_vxlan() {
    require_root!();
    every_case_holds(LabOptions {
        nodes: 3,
        routing: Routing::Vxlan,
        ..LabOptions::isolated("netpol-v3")
    });
}

fn every_case_holds(opts: LabOptions) {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let filter = std::env::var(CASES_ENV).unwrap_or_default();
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|c| c.name.contains(&filter) || c.upstream.contains(&filter))
        .collect();
    assert!(
        !selected.is_empty(),
        "{CASES_ENV}={filter:?} matches no case"
    );

    let started = Instant::now();
    let lab = Lab::up(&opts).expect("lab up");
    let ips = add_model_pods(&lab);
    eprintln!(
        "netpol: model up on {} node(s) ({:?}) in {:.1}s; running {} of {} cases",
        opts.nodes,
        opts.routing,
        started.elapsed().as_secs_f64(),
        selected.len(),
        CASES.len()
    );

    let mut failures: Vec<(&str, &str, Vec<String>)> = Vec::new();
    // Before any policy, everything reaches everything; if not, no case below means anything.
    let baseline = check(
        &lab,
        Protocol::Tcp,
        80,
        &Expected::parse(&render(|_, _| Some(true))).expect("all-connected table"),
    );
    if let Err(report) = baseline {
        failures.push((
            "baseline",
            "no policy: every pod reaches every pod",
            vec![report],
        ));
    }
    for case in &selected {
        let t = Instant::now();
        let mut problems = run_case(&lab, case, &ips);
        problems.extend(reset(&lab, case));
        eprintln!(
            "netpol: {} {} ({:.1}s)",
            if problems.is_empty() { "ok  " } else { "FAIL" },
            case.name,
            t.elapsed().as_secs_f64()
        );
        for problem in &problems {
            eprint!("{}", indent(problem));
        }
        if !problems.is_empty() {
            failures.push((case.name, case.upstream, problems));
        }
    }
    let failed_cases = failures.iter().filter(|f| f.0 != "baseline").count();
    eprintln!(
        "netpol: {} of {} cases passed in {:.0}s",
        selected.len() - failed_cases,
        selected.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let mut summary = format!("{} NetworkPolicy case(s) failed:\n", failures.len());
        for (name, upstream, problems) in &failures {
            summary.push_str(&format!(
                "  {name} ({} problem(s))\n      upstream: {upstream}\n",
                problems.len()
            ));
        }
        panic!("{summary}(expected and observed tables are printed above)");
    }
}

/// Add the nine pods and label the namespaces; returns each pod's IP by `ns/pod`.
fn add_model_pods(lab: &Lab) -> BTreeMap<String, Ipv4Addr> {
    let mut ips = BTreeMap::new();
    for ns in NAMESPACES {
        for pod in POD_NAMES {
            let info = lab
                .add_pod_with(&PodSpec::new(ns, pod).label("pod", pod))
                .unwrap_or_else(|e| panic!("adding pod {ns}/{pod}: {e:#}"));
            ips.insert(format!("{ns}/{pod}"), info.ip);
        }
        lab.label_namespace(ns, &[&format!("ns={ns}")])
            .unwrap_or_else(|e| panic!("labelling namespace {ns}: {e:#}"));
    }
    ips
}

/// Run one case's steps; returns what went wrong (empty: the case passed).
fn run_case(lab: &Lab, case: &Case, ips: &BTreeMap<String, Ipv4Addr>) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, step) in case.steps.iter().enumerate() {
        let n = n + 1;
        match *step {
            Step::Apply(yaml) => {
                let result = fill_placeholders(yaml, ips)
                    .map_err(anyhow::Error::msg)
                    .and_then(|yaml| lab.apply_yaml(&yaml));
                if let Err(e) = result {
                    // Later steps assume this policy is in force; checking them would only add noise.
                    problems.push(format!("step {n}: applying a policy failed: {e:#}\n{yaml}"));
                    return problems;
                }
            }
            Step::DeletePolicy(ns, name) => {
                if let Err(e) = lab.delete_policy(ns, name) {
                    problems.push(format!(
                        "step {n}: deleting policy {ns}/{name} failed: {e:#}"
                    ));
                    return problems;
                }
            }
            Step::LabelPod(ns, pod, labels) => {
                if let Err(e) = lab.label_pod(ns, pod, labels) {
                    problems.push(format!(
                        "step {n}: labelling pod {ns}/{pod} {labels:?} failed: {e:#}"
                    ));
                    return problems;
                }
            }
            Step::LabelNamespace(ns, labels) => {
                if let Err(e) = lab.label_namespace(ns, labels) {
                    problems.push(format!(
                        "step {n}: labelling namespace {ns} {labels:?} failed: {e:#}"
                    ));
                    return problems;
                }
            }
            Step::Expect(proto, port, table) => {
                let expected = match Expected::parse(table) {
                    Ok(expected) => expected,
                    Err(e) => {
                        problems.push(format!("step {n}: bad expected table: {e}"));
                        continue;
                    }
                };
                if let Err(report) = check(lab, proto, port, &expected) {
                    problems.push(format!("step {n}: {report}"));
                }
            }
        }
    }
    problems
}

/// Undo what `case` did: delete every policy it created, put back every label it changed.
fn reset(lab: &Lab, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut policies = BTreeSet::new();
    for step in case.steps {
        match *step {
            Step::Apply(yaml) => match policy_id(yaml) {
                Some(id) => {
                    policies.insert(id);
                }
                None => problems.push(format!("reset: no name/namespace in\n{yaml}")),
            },
            Step::DeletePolicy(ns, name) => {
                policies.remove(&(ns, name));
            }
            _ => {}
        }
    }
    for (ns, name) in policies {
        if let Err(e) = lab.delete_policy(ns, name) {
            problems.push(format!("reset: deleting policy {ns}/{name} failed: {e:#}"));
        }
    }
    for (ns, pod, key) in case.pod_labels_touched() {
        let label = if key == "pod" {
            format!("pod={pod}")
        } else {
            format!("{key}-")
        };
        if let Err(e) = lab.label_pod(ns, pod, &[&label]) {
            problems.push(format!(
                "reset: label {label} on pod {ns}/{pod} failed: {e:#}"
            ));
        }
    }
    for (ns, key) in case.namespace_labels_touched() {
        let label = match key {
            "ns" | "kubernetes.io/metadata.name" => format!("{key}={ns}"),
            _ => format!("{key}-"),
        };
        if let Err(e) = lab.label_namespace(ns, &[&label]) {
            problems.push(format!(
                "reset: label {label} on namespace {ns} failed: {e:#}"
            ));
        }
    }
    problems
}

/// `(namespace, name)` from a policy document's `metadata` (the case data writes both, two spaces
/// in, right under `metadata:`).
fn policy_id(yaml: &str) -> Option<(&str, &str)> {
    let field = |key: &str| {
        yaml.lines()
            .find_map(|l| l.strip_prefix(&format!("  {key}: ")))
            .map(str::trim)
    };
    Some((field("namespace")?, field("name")?))
}

fn lab_proto(proto: Protocol) -> Proto {
    match proto {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => Proto::Sctp,
    }
}

/// Probe all pairs through the Services and compare with `expected`; wrong pairs are probed a
/// second time before they count. `Err` holds the report to print.
fn check(lab: &Lab, proto: Protocol, port: u16, expected: &Expected) -> Result<(), String> {
    let what = format!("{}/{port} via Service", lab_proto(proto).k8s_name());
    let opts = MatrixOptions::new(lab_proto(proto), port)
        .via_service()
        .timeout(PROBE_TIMEOUT);
    let first = lab
        .matrix_with(&opts)
        .map_err(|e| format!("{what}: probing failed: {e:#}"))?;
    let mut observed = observations(&first);
    let wrong = wrong_pairs(expected, &observed);
    if wrong.is_empty() {
        return explain_agrees(lab, proto, port, &observed).map_err(|e| format!("{what}: {e}"));
    }
    let retry = ProbeOptions::new(lab_proto(proto), port)
        .via_service()
        .timeout(RETRY_TIMEOUT);
    // In parallel, as the matrix is: a wrong "blocked" costs a whole timeout.
    let again: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = wrong
            .iter()
            .map(|&(i, j)| {
                let target = ProbeTarget::Pod(PODS[j].to_owned());
                scope.spawn(move || lab.probe_with(PODS[i], &target, &retry))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut errors: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (&(i, j), result) in wrong.iter().zip(again) {
        match result {
            Ok(Ok(result)) => {
                observed[i][j] = Some(result.connected);
                if let Some(error) = result.error {
                    errors.insert((i, j), error);
                }
            }
            Ok(Err(e)) => {
                errors.insert((i, j), format!("re-probe failed: {e:#}"));
            }
            Err(_) => {
                errors.insert((i, j), "re-probe thread panicked".to_owned());
            }
        }
    }
    let still = wrong_pairs(expected, &observed);
    if still.is_empty() {
        return explain_agrees(lab, proto, port, &observed).map_err(|e| format!("{what}: {e}"));
    }
    let mut report = format!(
        "{what}: {} of 72 pairs wrong (after one re-probe)\nexpected:\n{}observed:\n{}wrong:\n",
        still.len(),
        indent(&render(|i, j| expected.get(i, j))),
        indent(&render(|i, j| observed[i][j])),
    );
    for (i, j) in still {
        let error = errors.get(&(i, j)).map_or("", String::as_str);
        report.push_str(&format!(
            "    {} -> {}: expected {}, got {} {error}\n",
            PODS[i],
            PODS[j],
            verdict(expected.get(i, j)),
            verdict(observed[i][j]),
        ));
    }
    Err(report)
}

/// `explain` (the agents' models, without a packet) must give every pair the verdict the probes
/// observed, and say that the datapath's maps agree with it.
fn explain_agrees(
    lab: &Lab,
    proto: Protocol,
    port: u16,
    observed: &[[Option<bool>; 9]; 9],
) -> Result<(), String> {
    let mut wrong = String::new();
    for (i, from) in PODS.iter().enumerate() {
        for (j, to) in PODS.iter().enumerate() {
            let Some(connected) = observed[i][j] else {
                continue;
            };
            let explanation = lab
                .explain(from, to, lab_proto(proto).k8s_name(), port)
                .map_err(|e| format!("explain {from} -> {to}: {e:#}"))?;
            let allowed = explanation.verdict == "allowed";
            if allowed != connected || !explanation.datapath_agrees {
                wrong.push_str(&format!(
                    "    {from} -> {to}: probe {}, explain says\n{}",
                    verdict(Some(connected)),
                    indent(&indent(&explanation.to_string()))
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "explain disagrees with the probes (or the datapath):\n{wrong}"
        ))
    }
}

fn observations(matrix: &Matrix) -> [[Option<bool>; 9]; 9] {
    let mut out = [[None; 9]; 9];
    for (i, from) in PODS.iter().enumerate() {
        for (j, to) in PODS.iter().enumerate() {
            if i != j {
                out[i][j] = matrix.connected(from, to);
            }
        }
    }
    out
}

fn wrong_pairs(expected: &Expected, observed: &[[Option<bool>; 9]; 9]) -> Vec<(usize, usize)> {
    let mut wrong = Vec::new();
    for (i, row) in observed.iter().enumerate() {
        for (j, got) in row.iter().enumerate() {
            if expected.get(i, j).is_some_and(|want| *got != Some(want)) {
                wrong.push((i, j));
            }
        }
    }
    wrong
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "connected",
        Some(false) => "blocked",
        None => "not probed",
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

// ---------------------------------------------------------------------------------------------
// The seed scenario (/work/shared/seeds: "Network-Policies", "Basics of traffic flow and rules").

/// The seed's `db-policy`, byte for byte as the seed writes it (no namespace: `kubectl create -f`
/// puts it in `default`).
const DB_POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-policy
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  ingress:
  - from:
    - podSelector:
        matchLabels:
          role: api-pod
    ports:
    - protocol: TCP
      port: 3306
";

#[test]
fn seed_db_policy_lets_only_the_api_pod_reach_the_db_on_3306() {
    require_root!();
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::up(&LabOptions::isolated("seed")).expect("lab up");
    lab.add_pod_with(&PodSpec::new("default", "web").label("role", "web"))
        .expect("web pod");
    lab.add_pod_with(&PodSpec::new("default", "api").label("role", "api-pod"))
        .expect("api pod");
    lab.add_pod_with(
        &PodSpec::new("default", "db")
            .label("role", "db")
            .serve(Proto::Tcp, 3306),
    )
    .expect("db pod");

    let (web, api, db) = ("default/web", "default/api", "default/db");
    // (from, to, port, connected), written out. Before any policy, everything talks.
    let before = [
        (web, api, 80, true),
        (web, db, 80, true),
        (api, web, 80, true),
        (api, db, 80, true),
        (db, web, 80, true),
        (db, api, 80, true),
        (web, db, 3306, true),
        (api, db, 3306, true),
    ];
    let mut failures = seed_check(&lab, "before db-policy", &before);

    lab.apply_yaml(DB_POLICY).expect("db-policy is accepted");
    // After it: only the API pod reaches the DB, and only on TCP 3306. The policy isolates the DB
    // for ingress alone, so the DB still reaches the others, and web ↔ api is untouched.
    let after = [
        (web, api, 80, true),
        (api, web, 80, true),
        (db, web, 80, true),
        (db, api, 80, true),
        (api, db, 3306, true),
        (web, db, 3306, false),
        (api, db, 80, false),
        (web, db, 80, false),
        (api, db, 81, false),
    ];
    failures.extend(seed_check(&lab, "after db-policy", &after));
    assert!(
        failures.is_empty(),
        "seed scenario:\n{}",
        failures.join("\n")
    );
}

/// Probe each expectation through the Service and straight to the pod IP (the policy must hold
/// either way); returns one line per wrong pair, after a re-probe.
fn seed_check(lab: &Lab, when: &str, expect: &[(&str, &str, u16, bool)]) -> Vec<String> {
    let mut failures = Vec::new();
    let ports: BTreeSet<u16> = expect.iter().map(|e| e.2).collect();
    for via_service in [true, false] {
        for &port in &ports {
            let matrix = |timeout| {
                let opts = MatrixOptions::new(Proto::Tcp, port).timeout(timeout);
                let opts = if via_service {
                    opts.via_service()
                } else {
                    opts
                };
                lab.matrix_with(&opts)
            };
            let path = if via_service {
                "via Service"
            } else {
                "to pod IP"
            };
            let first = match matrix(PROBE_TIMEOUT) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{when}: TCP/{port} {path}: probing failed: {e:#}"));
                    continue;
                }
            };
            let mut second: Option<Matrix> = None;
            for &(from, to, _, want) in expect.iter().filter(|e| e.2 == port) {
                if first.connected(from, to) == Some(want) {
                    continue;
                }
                if second.is_none() {
                    match matrix(RETRY_TIMEOUT) {
                        Ok(m) => second = Some(m),
                        Err(e) => {
                            failures.push(format!(
                                "{when}: TCP/{port} {path}: probing again failed: {e:#}"
                            ));
                            break;
                        }
                    }
                }
                let got = second.as_ref().and_then(|m| m.connected(from, to));
                if got != Some(want) {
                    failures.push(format!(
                        "{when}: {from} -> {to} TCP/{port} {path}: expected {}, got {}",
                        verdict(Some(want)),
                        verdict(got)
                    ));
                }
            }
        }
    }
    for failure in &failures {
        eprintln!("seed: {failure}");
    }
    failures
}
