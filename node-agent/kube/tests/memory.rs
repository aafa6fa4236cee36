//! What the source keeps for a cluster of 1000 pods and 1000 policies, measured with a counting
//! allocator (this test binary's own), against the size of the model itself: objects trimmed,
//! nothing of the list responses retained. The agent's budget is 30 MiB in all.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use serde_json::json;
use weir_kube::{testing::FakeApi, KubeSource, Options};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PODS: usize = 1000;
const POLICIES: usize = 1000;
const NAMESPACES: usize = 50;

/// A pod as the API server returns it: managed fields, annotations, a full container spec and
/// status, as a Deployment's pod has.
fn pod(i: usize) -> serde_json::Value {
    let ns = format!("ns-{}", i % NAMESPACES);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": format!("app-{i}-7d9f8c6b5-x2x4z"), "uid": format!("0b7a2f9e-1c3d-4e5f-8a9b-{i:012}"),
            "labels": {"app": format!("app-{}", i % 100), "tier": "backend", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z", "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-7d9f8c6b5", "uid": "u", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}}},
                              {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}}}}]},
        "spec": {"nodeName": format!("node-{}", i % 10), "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                "args": ["--port=8080", "--log-level=info"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2),
            "podIPs": [{"ip": format!("10.244.{}.{}", i / 250, i % 250 + 2)}], "hostIP": "192.0.2.10",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "registry.example/app:1.2.3", "imageID": "sha256:abc",
                "ready": true, "restartCount": 0, "started": true, "containerID": "containerd://abc"}]}})
}

fn policy(i: usize) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": format!("ns-{}", i % NAMESPACES), "name": format!("policy-{i}"),
            "uid": format!("uid-{i}"), "annotations": {"a": "b"}},
        "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % 100)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "frontend"}}},
                                  {"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                         "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": "metrics"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}}],
                        "ports": [{"protocol": "UDP", "port": 53}]}]}})
}

#[tokio::test]
async fn the_model_of_1000_pods_and_1000_policies_is_small() {
    let (client, api) = FakeApi::start();
    for i in 0..NAMESPACES {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("ns-{i}"), "labels": {"team": "a"}}}));
    }
    for i in 0..PODS {
        api.apply(pod(i));
    }
    for i in 0..POLICIES {
        api.apply(policy(i));
    }
    let full: usize = (0..PODS).map(|i| pod(i).to_string().len()).sum::<usize>()
        + (0..POLICIES)
            .map(|i| policy(i).to_string().len())
            .sum::<usize>();
    let model = model_size();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);

    let source = KubeSource::spawn(client, Options::default());
    tokio::time::timeout(Duration::from_secs(60), source.synced())
        .await
        .expect("synced");
    let snapshot = source.snapshot();
    assert_eq!(snapshot.cluster.pods().count(), PODS);
    assert_eq!(snapshot.cluster.policies().count(), POLICIES);
    drop(snapshot);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let synced = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    // What the source holds is what dropping it frees (the fake server's own bookkeeping moves
    // meanwhile too, so a difference against the start would not be the source's alone).
    drop(source);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let retained = synced - LIVE.load(Ordering::Relaxed);
    println!(
        "objects as JSON: {} KiB; the model alone: {} KiB; retained by the source: {} KiB; \
         peak while listing: {} KiB (the fake server's list bodies included)",
        full / 1024,
        model / 1024,
        retained / 1024,
        peak / 1024
    );
    // Beyond the model: the key and uid index (for relists and Events), the watcher tasks and
    // the client, about 2 MiB here. A store of the objects themselves would be several MiB more.
    assert!(
        retained < model + (3 << 20),
        "{retained} bytes retained for a model of {model}"
    );
}

/// The bytes a `Cluster` holding the same pods and policies takes, built directly.
fn model_size() -> usize {
    use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
    use weir_policy::model::{Cluster, PodInfo};

    let before = LIVE.load(Ordering::Relaxed);
    let mut cluster = Cluster::default();
    for i in 0..NAMESPACES {
        cluster.upsert_namespace(
            format!("ns-{i}"),
            [("team".to_owned(), "a".to_owned())].into(),
        );
    }
    for i in 0..PODS {
        let pod: Pod = serde_json::from_value(pod(i)).unwrap();
        cluster.upsert_pod(PodInfo::from_k8s(&pod).unwrap());
    }
    for i in 0..POLICIES {
        let policy: NetworkPolicy = serde_json::from_value(policy(i)).unwrap();
        cluster.upsert_policy(policy).unwrap();
    }
    let size = LIVE.load(Ordering::Relaxed) - before;
    drop(cluster);
    size
}
