// SPDX-License-Identifier: Apache-2.0
//! ClusterNetworkPolicy on the real kernel with the real plugin and agent: the admin's tiers and
//! the teams' NetworkPolicies together in one lookup, with real packets. The example
//! (`examples/cluster-policies.yaml`) before and after; an Admin egress deny of one port to the
//! outside (a denying hole in an allowing entry); fail-closed for what Weir cannot honour;
//! `explain` naming the deciding rule and agreeing with the maps; deleting restores.

mod common;

use common::reach;

use std::{net::Ipv4Addr, time::Duration};

use weir_tests::{
    lab::{LabError, ProbeOptions, ProbeTarget},
    Lab, LabOptions, PodSpec, Proto,
};

const QUICK: Duration = Duration::from_millis(600);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const EXAMPLE: &str = include_str!("../../examples/cluster-policies.yaml");

fn reach_ext(lab: &Lab, from: &str, port: u16) -> bool {
    lab.probe_with(
        from,
        &ProbeTarget::Ip(EXT_IP),
        &ProbeOptions::new(Proto::Tcp, port).timeout(QUICK),
    )
    .unwrap()
    .connected
}

/// The ingress direction of a flow as the agents explain it: (verdict, reason, rules).
fn explain_ingress(lab: &Lab, from: &str, to: &str, port: u16) -> (String, String, Vec<String>) {
    let explanation = lab.explain(from, to, "tcp", port).unwrap();
    assert!(explanation.datapath_agrees, "{explanation:?}");
    let ingress = explanation
        .directions
        .iter()
        .find(|d| d.direction == "ingress")
        .unwrap_or_else(|| panic!("no ingress direction in {explanation:?}"));
    (
        ingress.verdict.clone(),
        ingress.reason.clone(),
        ingress.rules.clone(),
    )
}

#[test]
fn admin_and_baseline_tiers_with_team_policies_on_real_packets() {
    require_root!();
    let lab = Lab::up(&LabOptions::isolated("cnp")).expect("lab up");
    for (ns, name, key, value) in [
        ("monitoring", "prometheus", "app", "prometheus"),
        ("monitoring", "grafana", "app", "grafana"),
        ("team", "web", "app", "web"),
        ("team", "client", "role", "client"),
        ("team", "other", "app", "other"),
    ] {
        lab.add_pod_with(&PodSpec::new(ns, name).label(key, value))
            .unwrap();
    }
    // Before: one flat network.
    for (from, to) in [
        ("team/web", "monitoring/grafana"),
        ("team/web", "team/client"),
        ("team/other", "team/web"),
    ] {
        assert!(reach(&lab, from, to, Proto::Tcp, 80), "{from} -> {to}");
    }
    assert!(reach(&lab, "team/client", "team/other", Proto::Icmp, 0));

    lab.apply_yaml(EXAMPLE).unwrap();
    // Admin: only Prometheus reaches monitoring, even though monitoring has no policy at all.
    assert!(reach(
        &lab,
        "monitoring/prometheus",
        "monitoring/grafana",
        Proto::Tcp,
        80
    ));
    assert!(!reach(
        &lab,
        "team/client",
        "monitoring/prometheus",
        Proto::Tcp,
        80
    ));
    assert!(!reach(
        &lab,
        "team/web",
        "monitoring/grafana",
        Proto::Tcp,
        80
    ));
    assert!(!reach(
        &lab,
        "team/web",
        "monitoring/grafana",
        Proto::Udp,
        80
    ));
    let (verdict, reason, rules) = explain_ingress(&lab, "team/web", "monitoring/grafana", 80);
    assert_eq!(
        (verdict.as_str(), reason.as_str()),
        ("denied", "denied_by_cluster_policy")
    );
    assert_eq!(
        rules,
        ["Admin monitoring-only-prometheus ingress[1] (nobody-else): Deny"]
    );
    let (verdict, _, rules) =
        explain_ingress(&lab, "monitoring/prometheus", "monitoring/grafana", 80);
    assert_eq!(verdict, "allowed");
    assert_eq!(
        rules,
        ["Admin monitoring-only-prometheus ingress[0] (prometheus-scrapes): Accept"]
    );
    // The team's NetworkPolicy overrides the baseline deny for web, and isolates web.
    assert!(reach(&lab, "team/client", "team/web", Proto::Tcp, 80));
    assert!(!reach(&lab, "team/client", "team/web", Proto::Tcp, 81));
    assert!(!reach(&lab, "team/other", "team/web", Proto::Tcp, 80));
    let (_, reason, rules) = explain_ingress(&lab, "team/client", "team/web", 80);
    assert_eq!(reason, "allowed_by_policy");
    assert_eq!(rules, ["team/web-from-clients ingress[0]"]);
    // Pods without a NetworkPolicy of their own get the baseline: no pod reaches them, on any
    // protocol; their replies and their own connections out are untouched.
    assert!(!reach(&lab, "team/web", "team/client", Proto::Tcp, 80));
    assert!(!reach(&lab, "team/client", "team/other", Proto::Icmp, 0));
    assert!(reach_ext(&lab, "team/other", 80));
    assert!(common::packets(&lab, "drop_policy_ingress") > 0);

    // An Admin egress rule denying one port to the outside: the rest stays open.
    assert!(reach_ext(&lab, "team/client", 81));
    lab.apply_yaml(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-81-out}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team}}, podSelector: {}}}
  egress:
  - action: Deny
    to: [{networks: [203.0.113.0/24]}]
    protocols: [{tcp: {destinationPort: {number: 81}}}]
"#,
    )
    .unwrap();
    assert!(!reach_ext(&lab, "team/client", 81));
    assert!(reach_ext(&lab, "team/client", 80));
    assert!(reach(&lab, "team/client", "team/web", Proto::Tcp, 80));
    assert!(
        reach_ext(&lab, "monitoring/grafana", 81),
        "another namespace"
    );

    // What Weir cannot honour fails closed the API's way, and the apply says so: an Accept of
    // domain names matches nothing (so the Deny after it applies).
    let err = lab
        .apply_yaml(
            r#"
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: only-example-com}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: team}}}
  egress:
  - {action: Accept, to: [{domainNames: [example.com]}]}
  - {action: Deny, to: [{networks: [203.0.113.0/24]}]}
"#,
        )
        .unwrap_err();
    match err.downcast_ref::<LabError>() {
        Some(LabError::Rejected(hits)) => assert!(
            hits.iter()
                .any(|h| h.starts_with("ClusterNetworkPolicy only-example-com")
                    && h.contains("domainNames")),
            "{hits:?}"
        ),
        _ => panic!("{err:#}"),
    }
    assert!(!reach_ext(&lab, "team/client", 80));
    lab.delete_cluster_policy("only-example-com").unwrap();
    assert!(reach_ext(&lab, "team/client", 80));

    // Deleting restores: without the admin policy the baseline still closes monitoring; without
    // the baseline the network is flat again but for the team's own policy.
    lab.delete_cluster_policy("monitoring-only-prometheus")
        .unwrap();
    assert!(!reach(
        &lab,
        "monitoring/prometheus",
        "monitoring/grafana",
        Proto::Tcp,
        80
    ));
    lab.delete_cluster_policy("default-deny-between-pods")
        .unwrap();
    lab.delete_cluster_policy("no-81-out").unwrap();
    assert!(reach(
        &lab,
        "team/web",
        "monitoring/grafana",
        Proto::Tcp,
        80
    ));
    assert!(reach(&lab, "team/web", "team/client", Proto::Tcp, 80));
    assert!(reach_ext(&lab, "team/client", 81));
    assert!(!reach(&lab, "team/other", "team/web", Proto::Tcp, 80));
    assert!(matches!(
        lab.delete_cluster_policy("no-81-out")
            .unwrap_err()
            .downcast_ref::<LabError>(),
        Some(LabError::NoSuchObject(_))
    ));
}
