// SPDX-License-Identifier: Apache-2.0
//! The lab with the real `weir-agent` and `weir`: the agents watch the lab's manifest directory
//! and answer `Sync`; Services and SCTP work over Weir's datapath; a change returns only once it
//! is programmed, and an object the agent rejects fails loudly. Each test has a lab of its own,
//! torn down on drop, also when the test fails.

mod common;

use std::time::Duration;

use weir_tests::{
    lab::{LabError, MatrixOptions, ProbeOptions, ProbeTarget},
    Lab, LabOptions, PodSpec, Proto,
};

const T: Duration = Duration::from_secs(2);

fn lab(tag: &str) -> Lab {
    Lab::up(&LabOptions::isolated(tag)).expect("lab up")
}

fn probe(lab: &Lab, from: &str, to: &str, opts: ProbeOptions) -> bool {
    let result = lab
        .probe_with(from, &ProbeTarget::Pod(to.to_owned()), &opts)
        .unwrap();
    if !result.connected {
        eprintln!("{from} -> {to} {opts:?}: {result:?}");
    }
    result.connected
}

#[test]
fn services_and_sctp_work_over_the_real_datapath() {
    require_root!();
    let lab = lab("agent-svc");
    lab.add_pod_with(&PodSpec::new("x", "a").label("pod", "a"))
        .unwrap();
    lab.add_pod_with(
        &PodSpec::new("y", "b")
            .label("pod", "b")
            .serve(Proto::Sctp, 3868),
    )
    .unwrap();
    assert_eq!(lab.sync().unwrap(), Vec::new());
    let mut failed = Vec::new();
    for proto in Proto::WITH_PORTS {
        for port in [80, 81] {
            let opts = ProbeOptions::new(proto, port).timeout(T);
            for (from, to, opts) in [
                ("x/a", "y/b", opts),
                ("y/b", "x/a", opts),
                ("x/a", "y/b", opts.via_service()),
                ("y/b", "x/a", opts.via_service()),
                // Hairpin: a pod through its own Service.
                ("x/a", "x/a", opts.via_service()),
            ] {
                if !probe(&lab, from, to, opts) {
                    failed.push(format!("{from} -> {to} {opts:?}"));
                }
            }
        }
    }
    for opts in [
        ProbeOptions::new(Proto::Sctp, 3868),
        ProbeOptions::new(Proto::Sctp, 3868).via_service(),
    ] {
        if !probe(&lab, "x/a", "y/b", opts.timeout(T)) {
            failed.push(format!("x/a -> y/b {opts:?}"));
        }
    }
    assert_eq!(failed, Vec::<String>::new());
    let matrix = lab
        .matrix_with(&MatrixOptions::new(Proto::Sctp, 80).via_service().timeout(T))
        .unwrap();
    assert!(
        matrix.results.iter().all(|e| e.connected),
        "{}",
        matrix.table()
    );
    lab.del_pod("y", "b").unwrap();
    lab.del_pod("x", "a").unwrap();
}

#[test]
fn a_policy_is_enforced_when_apply_returns_and_gone_when_delete_returns() {
    require_root!();
    let lab = lab("agent-apply");
    lab.add_pod_with(&PodSpec::new("x", "a").label("pod", "a"))
        .unwrap();
    lab.add_pod_with(&PodSpec::new("x", "b").label("pod", "b"))
        .unwrap();
    let tcp = ProbeOptions::new(Proto::Tcp, 80).timeout(Duration::from_millis(500));
    assert!(probe(&lab, "x/a", "x/b", tcp));
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny-b, namespace: x}\n\
         spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}\n",
    )
    .unwrap();
    // No waiting: apply returned, so the policy is in the datapath.
    assert!(!probe(&lab, "x/a", "x/b", tcp), "deny-b not enforced");
    assert!(
        probe(&lab, "x/b", "x/a", tcp),
        "egress from b is not affected"
    );
    // Labels move pods in and out of the policy just as promptly.
    lab.label_pod("x", "b", &["pod=c"]).unwrap();
    assert!(probe(&lab, "x/a", "x/b", tcp), "b left the policy");
    lab.label_pod("x", "b", &["pod=b"]).unwrap();
    assert!(
        !probe(&lab, "x/a", "x/b", tcp),
        "b is back under the policy"
    );
    lab.delete_policy("x", "deny-b").unwrap();
    assert!(probe(&lab, "x/a", "x/b", tcp), "deny-b still enforced");
}

#[test]
fn a_policy_the_agent_rejects_fails_apply_loudly() {
    require_root!();
    let lab = lab("agent-reject");
    lab.add_pod_with(&PodSpec::new("x", "a").label("pod", "a"))
        .unwrap();
    // Well-formed for the schema, meaningless to the agent: not a CIDR.
    let err = lab
        .apply_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: bad-cidr, namespace: x}\n\
             spec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: not-a-cidr}}]}]\n",
        )
        .unwrap_err();
    match err.downcast_ref::<LabError>() {
        Some(LabError::Rejected(objects)) => {
            assert!(
                objects[0].starts_with("NetworkPolicy x/bad-cidr"),
                "{objects:?}"
            );
        }
        _ => panic!("not a rejection: {err:#}"),
    }
    assert!(lab
        .sync()
        .unwrap()
        .iter()
        .any(|r| r.object == "NetworkPolicy x/bad-cidr"));
    lab.delete_policy("x", "bad-cidr").unwrap();
    assert_eq!(lab.sync().unwrap(), Vec::new());
}
