// SPDX-License-Identifier: Apache-2.0
//! The differential tests' bridge from a `weir-netpol-model` world to the compiler.

use std::net::Ipv4Addr;

use weir_netpol_model::World;
use weir_policy::{
    compile::{compile, Compiled},
    model::{Cluster, NamedPort, PodInfo, PodKey, Protocol},
};

/// The world compiled from nothing, every pod local (as on a one-node lab), and the policies the
/// model refused, each as "upsert_policy rejected NAME: why".
pub fn compile_world(world: &World) -> (Compiled, Vec<String>) {
    let (cluster, local, rejected) = world_cluster(world);
    (compile(&cluster, &local), rejected)
}

/// The local endpoints of a world: every pod.
pub type Local = Vec<(Ipv4Addr, Option<PodKey>)>;

/// The world as the compiler's cluster model, its local endpoints (every pod) and the policies the
/// model refused.
pub fn world_cluster(world: &World) -> (Cluster, Local, Vec<String>) {
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
            labels: pod.labels.clone().into(),
            ip: Some(pod.ip),
            node: None,
            ports,
        });
    }
    let mut rejected = Vec::new();
    for policy in &world.policies {
        if let Err(e) = cluster.upsert_policy(policy.clone()) {
            rejected.push(format!(
                "upsert_policy rejected {:?}: {e}",
                policy.metadata.name
            ));
        }
    }
    for object in &world.cluster_policies {
        // The same strict reading as the agent's manifest source.
        let text = serde_json::to_string(object).expect("JSON");
        match weir_policy::manifest::parse_documents(&text) {
            Ok(objects) => cluster
                .apply_all(objects)
                .expect("a ClusterNetworkPolicy applies"),
            Err(e) => rejected.push(format!("ClusterNetworkPolicy rejected: {e}")),
        }
    }
    if let Some(problem) = cluster.unenforced_cluster_policies().next() {
        rejected.push(problem.to_string());
    }
    let local: Local = world
        .pods
        .iter()
        .map(|p| (p.ip, Some(PodKey::new(p.namespace.clone(), p.name.clone()))))
        .collect();
    (cluster, local, rejected)
}
