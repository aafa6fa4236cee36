//! The incremental compiler against a fresh one: after every change of long random sequences
//! (pods, labels, addresses, policies, namespaces, this node's endpoints, policies left out), the
//! kept work must give exactly what compiling from nothing gives.

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr};

use common::{random_cluster, random_labels, random_pod, random_policy, NAMESPACES};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::json;
use weir_policy::{
    compile::{compile_excluding, Incremental},
    model::{Cluster, PodKey, PolicyKey},
};

/// A policy the compiler must reject in part (unknown policy type, or an invalid selector).
fn broken_policy(rng: &mut StdRng, i: usize) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    let spec = if rng.random_bool(0.5) {
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]})
    } else {
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]},
               "ingress": [{"from": [{"podSelector": {}}]}]})
    };
    serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACES.choose(rng).unwrap(), "name": format!("np{i}")},
        "spec": spec,
    }))
    .unwrap()
}

/// One random change to the cluster.
fn mutate(rng: &mut StdRng, cluster: &mut Cluster, step: usize) {
    let pods: Vec<PodKey> = cluster.pods().map(|p| p.key.clone()).collect();
    let policies: Vec<PolicyKey> = cluster.policies().map(|p| p.key().clone()).collect();
    match rng.random_range(0..11) {
        0 => {
            let pod = random_pod(rng, cluster, &format!("new{step}"));
            cluster.upsert_pod(pod);
        }
        1 if !pods.is_empty() => {
            cluster.delete_pod(pods.choose(rng).unwrap());
        }
        2 if !pods.is_empty() => {
            let key = pods.choose(rng).unwrap().clone();
            let mut pod = cluster.pod(&key).unwrap().clone();
            pod.labels = random_labels(rng).into();
            cluster.upsert_pod(pod);
        }
        3 if !pods.is_empty() => {
            // A new address (or none), a new set of named ports, or the same content again.
            let key = pods.choose(rng).unwrap().clone();
            let mut pod = cluster.pod(&key).unwrap().clone();
            match rng.random_range(0..3) {
                0 => pod.ip = random_pod(rng, cluster, "x").ip,
                1 => pod.ports = random_pod(rng, cluster, "x").ports,
                _ => {}
            }
            cluster.upsert_pod(pod);
        }
        4 | 5 => {
            let name = if rng.random_bool(0.5) || policies.is_empty() {
                100 + step
            } else {
                // Rewrite an existing one.
                policies.choose(rng).unwrap().name[2..].parse().unwrap()
            };
            cluster.upsert_policy(random_policy(rng, name)).unwrap();
        }
        6 => {
            cluster
                .upsert_policy(broken_policy(rng, 100 + step))
                .unwrap();
        }
        7 if !policies.is_empty() => {
            cluster.delete_policy(policies.choose(rng).unwrap());
        }
        8 => {
            let ns = *NAMESPACES.choose(rng).unwrap();
            cluster.upsert_namespace(ns, random_labels(rng));
        }
        9 => {
            cluster.delete_namespace(NAMESPACES.choose(rng).unwrap());
        }
        _ => {}
    }
}

/// This node's endpoints: most pods with an address, sometimes at another address than the model
/// says, an endpoint without a pod, one whose pod the model lacks.
fn random_local(rng: &mut StdRng, cluster: &Cluster) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    let mut local: Vec<(Ipv4Addr, Option<PodKey>)> = Vec::new();
    for pod in cluster.pods() {
        if !rng.random_bool(0.6) {
            continue;
        }
        match pod.ip {
            Some(_) if rng.random_bool(0.1) => {
                // The endpoint's address wins over a stale status.podIP.
                local.push((
                    Ipv4Addr::new(10, 0, 0, rng.random_range(1..16)),
                    Some(pod.key.clone()),
                ));
            }
            Some(ip) => local.push((ip, Some(pod.key.clone()))),
            None => {}
        }
    }
    if rng.random_bool(0.2) {
        local.push((Ipv4Addr::new(10, 0, 1, 1), None));
    }
    if rng.random_bool(0.2) {
        let ns = *NAMESPACES.choose(rng).unwrap();
        local.push((
            Ipv4Addr::new(10, 0, 1, 2),
            Some(PodKey::new(ns, "not-seen-yet")),
        ));
    }
    local.sort_by_key(|(ip, _)| *ip);
    local.dedup_by_key(|(ip, _)| *ip);
    local
}

fn random_left_out(rng: &mut StdRng, cluster: &Cluster) -> BTreeSet<PolicyKey> {
    if rng.random_bool(0.7) {
        return BTreeSet::new();
    }
    cluster
        .policies()
        .filter(|_| rng.random_bool(0.3))
        .map(|p| p.key().clone())
        .collect()
}

#[test]
fn kept_work_compiles_exactly_like_compiling_from_nothing_after_every_change() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut compared = 0;
    for run in 0..150 {
        let mut cluster = random_cluster(&mut rng);
        let mut incremental = Incremental::default();
        let mut local = random_local(&mut rng, &cluster);
        for step in 0..40 {
            // Usually one change; sometimes several before the next compilation (a burst), and
            // sometimes the node's endpoints change too.
            for _ in 0..if rng.random_bool(0.2) { 5 } else { 1 } {
                mutate(&mut rng, &mut cluster, step * 10 + run);
            }
            if rng.random_bool(0.3) {
                local = random_local(&mut rng, &cluster);
            }
            let left_out = random_left_out(&mut rng, &cluster);
            let kept = incremental.compile(&cluster, &local, &left_out);
            let fresh = compile_excluding(&cluster, &local, &left_out);
            assert_eq!(kept, fresh, "run {run} step {step}: local {local:?}");
            compared += 1;
            // Compiling the same input again changes nothing.
            assert_eq!(incremental.compile(&cluster, &local, &left_out), fresh);
        }
    }
    assert_eq!(compared, 150 * 40);
}
