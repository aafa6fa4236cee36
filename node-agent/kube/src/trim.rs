//! What is kept of each watched object: only the fields the model reads. Objects are trimmed as
//! they come off the watch stream, before they are buffered for a relist or converted, so a large
//! cluster costs the agent the size of its labels and policies, not of its objects (managed fields,
//! annotations, container specs, node images and conditions are dropped).
//!
//! Each function builds a new object from a keep-list rather than clearing a drop-list, so a field
//! Kubernetes adds later is dropped too.

use k8s_openapi::{
    api::{
        core::v1::{
            Container, ContainerPort, Namespace, Node, NodeSpec, NodeStatus, Pod, PodSpec,
            PodStatus, Service, ServiceSpec,
        },
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// Name, namespace, uid (for Events) and, when asked, labels.
fn meta(meta: &mut ObjectMeta, keep_labels: bool) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        labels: if keep_labels {
            meta.labels.take()
        } else {
            None
        },
        ..ObjectMeta::default()
    }
}

/// Labels, node, host networking, named container ports, phase and addresses.
pub fn pod(pod: &mut Pod) {
    let spec = pod.spec.take().map(|mut spec| PodSpec {
        node_name: spec.node_name.take(),
        host_network: spec.host_network,
        containers: std::mem::take(&mut spec.containers)
            .into_iter()
            .filter_map(|c| {
                let ports: Vec<ContainerPort> = c
                    .ports
                    .into_iter()
                    .flatten()
                    .filter(|p| p.name.is_some())
                    .map(|p| ContainerPort {
                        name: p.name,
                        container_port: p.container_port,
                        protocol: p.protocol,
                        ..ContainerPort::default()
                    })
                    .collect();
                (!ports.is_empty()).then(|| Container {
                    ports: Some(ports),
                    ..Container::default()
                })
            })
            .collect(),
        ..PodSpec::default()
    });
    let status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
    *pod = Pod {
        metadata: meta(&mut pod.metadata, true),
        spec,
        status,
    };
}

/// Name and labels (namespace selectors match them).
pub fn namespace(ns: &mut Namespace) {
    *ns = Namespace {
        metadata: meta(&mut ns.metadata, true),
        ..Namespace::default()
    };
}

/// The spec, whole: every field of it is policy.
pub fn network_policy(policy: &mut NetworkPolicy) {
    *policy = NetworkPolicy {
        metadata: meta(&mut policy.metadata, false),
        spec: policy.spec.take(),
    };
}

/// The ClusterIPs only.
pub fn service(service: &mut Service) {
    let spec = service.spec.take().map(|spec| ServiceSpec {
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        ..ServiceSpec::default()
    });
    *service = Service {
        metadata: meta(&mut service.metadata, false),
        spec,
        status: None,
    };
}

/// The spec and the generation (for the status condition's `observedGeneration`); not the
/// status, annotations or managed fields.
pub fn cluster_network_policy(policy: &mut weir_policy::cluster_policy::ClusterNetworkPolicy) {
    let generation = policy.metadata.generation;
    policy.metadata = ObjectMeta {
        generation,
        ..meta(&mut policy.metadata, false)
    };
    policy.status = None;
}

/// Labels (ClusterNetworkPolicy `nodes` peers), pod CIDRs and addresses (not images, conditions or
/// capacity, which are most of a Node).
pub fn node(node: &mut Node) {
    let spec = node.spec.take().map(|spec| NodeSpec {
        pod_cidr: spec.pod_cidr,
        pod_cidrs: spec.pod_cidrs,
        ..NodeSpec::default()
    });
    let status = node.status.take().map(|status| NodeStatus {
        addresses: status.addresses,
        ..NodeStatus::default()
    });
    *node = Node {
        metadata: meta(&mut node.metadata, true),
        spec,
        status,
    };
}

#[cfg(test)]
mod tests {
    use weir_policy::model::{NodeInfo, PodInfo};

    use super::*;

    fn full_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "prod", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u-0"}]
            },
            "spec": {
                "nodeName": "n1",
                "containers": [
                    {"name": "c", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                     "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80},
                               {"containerPort": 9000}]},
                    {"name": "sidecar", "image": "envoy"}
                ],
                "volumes": [{"name": "v", "emptyDir": {}}]
            },
            "status": {
                "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "hostIP": "192.0.2.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "nginx", "imageID": "x", "ready": true,
                                       "restartCount": 0}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_trimmed_pod_keeps_exactly_what_the_model_reads() {
        let full = full_pod();
        let mut trimmed = full.clone();
        pod(&mut trimmed);
        assert_eq!(
            PodInfo::from_k8s(&trimmed).unwrap(),
            PodInfo::from_k8s(&full).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&trimmed).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [
                    {"name": "", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
            })
        );
    }

    #[test]
    fn a_trimmed_host_network_or_finished_pod_still_has_no_address() {
        for extra in [
            serde_json::json!({"spec": {"hostNetwork": true, "containers": []}}),
            serde_json::json!({"spec": {"containers": []}, "status": {"phase": "Succeeded", "podIP": "10.244.1.5"}}),
        ] {
            let mut value = serde_json::to_value(full_pod()).unwrap();
            for (k, v) in extra.as_object().unwrap() {
                for (kk, vv) in v.as_object().unwrap() {
                    value[k][kk] = vv.clone();
                }
            }
            let mut p: Pod = serde_json::from_value(value).unwrap();
            pod(&mut p);
            assert_eq!(PodInfo::from_k8s(&p).unwrap().ip, None);
        }
    }

    #[test]
    fn a_trimmed_node_keeps_cidrs_and_addresses_and_drops_images() {
        let full: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u", "labels": {"kubernetes.io/hostname": "n1"},
                         "annotations": {"a": "b"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "kind://n1",
                     "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
                       "images": [{"names": ["registry/image:tag"], "sizeBytes": 1000}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "capacity": {"cpu": "2"}}
        }))
        .unwrap();
        let mut trimmed = full.clone();
        node(&mut trimmed);
        assert_eq!(
            NodeInfo::from_k8s(&trimmed).unwrap(),
            NodeInfo::from_k8s(&full).unwrap()
        );
        let status = trimmed.status.unwrap();
        assert!(status.images.is_none() && status.conditions.is_none());
        assert!(trimmed.metadata.labels.is_some() && trimmed.metadata.annotations.is_none());
        assert!(trimmed.spec.unwrap().taints.is_none());
    }

    #[test]
    fn a_trimmed_policy_keeps_its_spec_and_a_service_its_cluster_ips() {
        let full: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "x", "annotations": {"a": "b"}, "generation": 3},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}
        }))
        .unwrap();
        let mut trimmed = full.clone();
        network_policy(&mut trimmed);
        assert_eq!(trimmed.spec, full.spec);
        assert!(trimmed.metadata.annotations.is_none() && trimmed.metadata.generation.is_none());

        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "x", "labels": {"a": "b"}},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "db"},
                     "ports": [{"port": 53}]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        service(&mut svc);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert!(spec.selector.is_none() && spec.ports.is_none() && svc.status.is_none());
        assert!(svc.metadata.labels.is_none());
    }
}
