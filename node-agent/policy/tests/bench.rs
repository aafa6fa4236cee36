//! Compile time at scale. Run in release:
//! `cargo test --release -p weir-policy --test bench -- --ignored --nocapture`

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::json;
use weir_policy::{
    compile::compile,
    model::{Cluster, NamedPort, PodInfo, PodKey, Protocol},
    plan::Programmer,
};

const NAMESPACES: usize = 10;
const PODS: usize = 1000;
const POLICIES: usize = 1000;
const APPS: usize = 50;

/// 1000 pods in 10 namespaces (50 apps, 3 teams); 1000 policies mixing pod, namespace and
/// combined selectors, ipBlocks with excepts, numeric, ranged and named ports, in both directions.
fn big_cluster() -> Cluster {
    let mut cluster = Cluster::default();
    for n in 0..NAMESPACES {
        cluster.upsert_namespace(
            format!("ns{n}"),
            [("team".to_owned(), format!("t{}", n % 3))].into(),
        );
    }
    for i in 0..PODS {
        let ip = Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250) as u8 + 1);
        cluster.upsert_pod(PodInfo {
            key: PodKey::new(format!("ns{}", i % NAMESPACES), format!("pod{i}")),
            labels: std::sync::Arc::new(
                [
                    ("app".to_owned(), format!("app{}", i % APPS)),
                    ("tier".to_owned(), format!("{}", i % 3)),
                ]
                .into(),
            ),
            ip: Some(ip),
            node: Some(format!("node{}", i % 10)),
            ports: vec![NamedPort {
                name: "http".into(),
                port: 8000 + (i % 7) as u16,
                protocol: Protocol::Tcp,
            }],
        });
    }
    for j in 0..POLICIES {
        let spec = json!({
            "podSelector": {"matchLabels": {"app": format!("app{}", j % APPS)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": format!("app{}", (j + 1) % APPS)}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 3)}},
                           "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["1"]}]}}],
                 "ports": [{"port": 80}, {"port": "http"}, {"port": 9000, "endPort": 9100 + (j % 50) as i32}]},
                {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}
            ],
            "egress": [
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": format!("app{}", (j + 7) % APPS)}}}],
                 "ports": [{"port": "http"}, {"port": 443}]},
                {"to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}], "ports": [{"port": 53, "protocol": "UDP"}]}
            ]
        });
        let policy = serde_json::from_value(json!({
            "metadata": {"namespace": format!("ns{}", j % NAMESPACES), "name": format!("np{j}")},
            "spec": spec
        }))
        .unwrap();
        cluster.upsert_policy(policy).unwrap();
    }
    cluster
}

fn local_of(cluster: &Cluster, node: Option<&str>) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    cluster
        .pods()
        .filter(|p| node.is_none() || p.node.as_deref() == node)
        .map(|p| (p.ip.unwrap(), Some(p.key.clone())))
        .collect()
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn compile_1000_pods_1000_policies() {
    let cluster = big_cluster();
    for (label, local) in [
        (
            "one node (100 local pods)",
            local_of(&cluster, Some("node3")),
        ),
        ("every pod local (1000)", local_of(&cluster, None)),
    ] {
        let compiled = compile(&cluster, &local);
        let entries: usize = compiled
            .endpoints
            .values()
            .flat_map(|e| [&e.ingress, &e.egress])
            .map(|d| match d {
                weir_policy::compile::DirectionRules::Rules(t) => t.len(),
                _ => 0,
            })
            .sum();
        let compile_time = best_of(5, || {
            compile(&cluster, &local);
        });
        let plan_time = best_of(5, || {
            let mut programmer = Programmer::new();
            let plan = programmer.plan(&compiled);
            programmer.commit(plan.id).unwrap();
        });
        let mut programmer = Programmer::new();
        let first = programmer.plan(&compiled);
        programmer.commit(first.id).unwrap();
        let noop_time = best_of(5, || {
            let plan = programmer.plan(&compiled);
            assert!(plan.is_empty());
            programmer.commit(plan.id).unwrap();
        });
        println!(
            "{label}: compile {compile_time:?}, first plan {plan_time:?} ({} peer and {} port writes), \
             unchanged plan {noop_time:?}; {} endpoints, {entries} table entries (before sharing)",
            first.peer_upserts.len(),
            first.portset_upserts.len(),
            compiled.endpoints.len(),
        );
    }
}
