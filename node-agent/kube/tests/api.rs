//! The source against a fake API server (kube's client on a tower-test mock): lists, watches,
//! a relist after 410 Gone, outages, and Events. Each test ends in the model's contents.

use std::time::Duration;

use serde_json::{json, Value};
use weir_agent_api::Rejected;
use weir_kube::{events::Notices, testing::FakeApi, KubeSource, Options};
use weir_policy::model::{Cluster, PodKey};

const WAIT: Duration = Duration::from_secs(20);

fn namespace(name: &str, team: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "uid": format!("uid-ns-{name}"), "labels": {"team": team},
                        "managedFields": [{"manager": "kubectl"}]}})
}

fn pod(name: &str, app: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": "x", "name": name, "uid": format!("uid-{name}"), "labels": {"app": app},
                        "annotations": {"big": "x".repeat(4096)}},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 80}]}]},
           "status": {"phase": "Running", "podIP": ip}})
}

fn policy(name: &str, app: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": "x", "name": name, "uid": format!("uid-{name}")},
           "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"]}})
}

fn node(name: &str, cidr: Option<&str>) -> Value {
    let mut node = json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "uid": format!("uid-{name}")},
           "spec": {},
           "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
                      "images": [{"names": ["a/b:c"], "sizeBytes": 1}]}});
    if let Some(cidr) = cidr {
        node["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    node
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"namespace": "x", "name": name},
           "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}})
}

fn seed(api: &FakeApi) {
    api.apply(namespace("x", "a"));
    api.apply(pod("a", "a", "10.244.1.2"));
    api.apply(pod("b", "b", "10.244.1.3"));
    api.apply(policy("p1", "a"));
    api.apply(policy("p2", "b"));
    api.apply(node("n1", Some("10.244.1.0/24")));
    api.apply(service("kube-dns", "10.96.0.10"));
}

fn policy_names(cluster: &Cluster) -> Vec<String> {
    cluster.policies().map(|p| p.key().to_string()).collect()
}

fn pod_names(cluster: &Cluster) -> Vec<String> {
    cluster.pods().map(|p| p.key.to_string()).collect()
}

/// Waits until `done` holds for the source's model.
async fn until(source: &KubeSource, what: &str, done: impl Fn(&Cluster) -> bool) {
    let mut changes = source.changes();
    let wait = async {
        while !done(&source.snapshot().cluster) {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn synced_source(api_seed: impl FnOnce(&FakeApi)) -> (KubeSource, FakeApi) {
    let (source, api, _) = synced_source_and_client(api_seed).await;
    (source, api)
}

async fn synced_source_and_client(
    api_seed: impl FnOnce(&FakeApi),
) -> (KubeSource, FakeApi, kube::Client) {
    let (client, api) = FakeApi::start();
    api_seed(&api);
    let source = KubeSource::spawn(
        client.clone(),
        Options {
            service_cidr: Some("10.96.0.0/12".parse().unwrap()),
        },
    );
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("the source lists every kind");
    (source, api, client)
}

#[tokio::test]
async fn lists_then_watches_fill_the_model_with_trimmed_objects() {
    let (source, api) = synced_source(seed).await;
    let cluster = source.snapshot().cluster;
    assert_eq!(policy_names(&cluster), ["x/p1", "x/p2"]);
    assert_eq!(pod_names(&cluster), ["x/a", "x/b"]);
    assert_eq!(cluster.namespace_labels("x")["team"], "a");
    let a = cluster.pod(&PodKey::new("x", "a")).unwrap();
    assert_eq!(a.ports[0].name, "http");
    assert_eq!(
        cluster.node("n1").unwrap().pod_cidrs,
        vec!["10.244.1.0/24".parse().unwrap()]
    );
    assert!(source.misplaced_services().is_empty());

    // Live changes: a policy created, a pod relabelled, one deleted.
    api.apply(policy("p3", "c"));
    api.apply(pod("a", "c", "10.244.1.2"));
    api.delete(pod("b", "b", "10.244.1.3"));
    until(&source, "the watched changes", |c| {
        policy_names(c).len() == 3 && pod_names(c) == ["x/a"]
    })
    .await;
    let cluster = source.snapshot().cluster;
    assert_eq!(
        cluster.pod(&PodKey::new("x", "a")).unwrap().labels["app"],
        "c"
    );
    let lists = api
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/networking.k8s.io/v1/networkpolicies")
                && !r.contains("watch=true")
        })
        .count();
    assert_eq!(lists, 1, "one list, then watches: {:?}", api.requests());
}

#[tokio::test]
async fn a_410_gone_relists_and_swaps_the_new_list_in_whole() {
    let (source, api) = synced_source(seed).await;
    let mut changes = source.changes();
    // While the watch was away: p2 deleted, p4 created; the history is compacted.
    api.delete_unseen(policy("p2", "b"));
    api.apply_unseen(policy("p4", "d"));
    api.compact("NetworkPolicy");
    // Every model the source hands out until the swap still has both old policies; the first
    // one after it has exactly the new list.
    let swapped = async {
        loop {
            changes.changed().await.unwrap();
            let names = policy_names(&source.snapshot().cluster);
            if names == ["x/p1", "x/p2"] {
                continue;
            }
            return names;
        }
    };
    let names = tokio::time::timeout(WAIT, swapped).await.expect("relisted");
    assert_eq!(names, ["x/p1", "x/p4"]);
    assert!(
        api.requests()
            .iter()
            .filter(
                |r| r.starts_with("GET /apis/networking.k8s.io/v1/networkpolicies")
                    && !r.contains("watch=true")
            )
            .count()
            >= 2
    );
    // The other kinds were not relisted and are intact.
    assert_eq!(pod_names(&source.snapshot().cluster), ["x/a", "x/b"]);
}

#[tokio::test]
async fn an_outage_keeps_the_last_state_and_the_source_catches_up_after_it() {
    let (source, api) = synced_source(seed).await;
    let before = source.snapshot();
    api.set_outage(true);
    // Watches fail and are retried with backoff meanwhile (long enough for a 30 s-capped
    // backoff to have grown past several seconds).
    tokio::time::sleep(Duration::from_millis(12_000)).await;
    let during = source.snapshot();
    assert_eq!(during.generation, before.generation);
    assert_eq!(policy_names(&during.cluster), ["x/p1", "x/p2"]);
    assert_eq!(pod_names(&during.cluster), ["x/a", "x/b"]);
    assert!(source.is_synced());
    let failed = api.requests().len();
    // A change made during the outage arrives once the API is back, promptly: failed watches
    // retry at least once a second (kube-runtime's default backoff would wait up to 30 s).
    api.delete(policy("p1", "a"));
    api.set_outage(false);
    let back = std::time::Instant::now();
    until(&source, "the change made during the outage", |c| {
        policy_names(c) == ["x/p2"]
    })
    .await;
    let caught_up = back.elapsed();
    println!("caught up {caught_up:?} after the outage ended");
    assert!(
        caught_up < Duration::from_secs(2),
        "the change made during the outage took {caught_up:?} to arrive"
    );
    assert!(api.requests().len() > failed);
}

#[tokio::test]
async fn a_first_list_that_fails_is_retried_and_nothing_is_synced_before() {
    let (client, api) = FakeApi::start();
    seed(&api);
    api.set_outage(true);
    let source = KubeSource::spawn(client, Options::default());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!source.is_synced());
    assert_eq!(source.snapshot().cluster.policies().count(), 0);
    api.set_outage(false);
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("synced after the outage");
    assert_eq!(policy_names(&source.snapshot().cluster), ["x/p1", "x/p2"]);
}

#[tokio::test]
async fn the_pod_cidr_comes_from_the_node_once_it_has_one() {
    let (source, api) = synced_source(|api| api.apply(node("n1", None))).await;
    let waiting = tokio::spawn({
        let source = source.clone();
        async move { source.node_pod_cidr("n1").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    api.apply(node("n1", Some("10.244.7.0/24")));
    let cidr = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(cidr, "10.244.7.0/24".parse().unwrap());
}

#[tokio::test]
async fn problems_become_events_once_each() {
    let (source, api, client) = synced_source_and_client(|api| {
        seed(api);
        api.apply(service("odd", "172.20.0.5"));
    })
    .await;
    let rejected = vec![Rejected {
        object: "NetworkPolicy x/p1".into(),
        reason: "named port too long".into(),
    }];
    let mut notices = Notices::new(client, "n1", Some("10.96.0.0/12".parse().unwrap()));
    notices.publish(&source, &rejected, &[]).await;
    notices.publish(&source, &rejected, &[]).await;
    let events = api.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["NetworkPolicyRejected", "ClusterIPOutsideServiceCIDR"]
    );
    assert_eq!(events[0]["regarding"]["uid"], "uid-p1");
    assert_eq!(events[0]["regarding"]["namespace"], "x");
    assert_eq!(events[0]["type"], "Warning");
    assert!(events[1]["note"].as_str().unwrap().contains("172.20.0.5"));
    // Fixed, then broken again: published again.
    notices.publish(&source, &[], &[]).await;
    notices.publish(&source, &rejected, &[]).await;
    assert_eq!(api.events().len(), 3);
}

#[tokio::test]
async fn an_add_can_wait_for_its_pod_and_gives_up_after_its_timeout() {
    let (client, api) = FakeApi::start();
    seed(&api);
    let source = KubeSource::spawn(client, Options::default());
    tokio::time::timeout(WAIT, source.synced()).await.unwrap();
    assert!(source.has_pod(&PodKey::new("x", "a")));

    // A Pod the kubelet created an instant before asking for its network.
    let late = PodKey::new("x", "late");
    let waiting = {
        let source = source.clone();
        let late = late.clone();
        tokio::spawn(async move { source.wait_for_pod(&late, WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.apply(pod("late", "late", "10.244.1.9"));
    assert!(
        waiting.await.unwrap(),
        "the Pod arrived while the ADD waited"
    );

    // One that never comes: the wait ends with its timeout.
    let never = PodKey::new("x", "never");
    assert!(
        !source
            .wait_for_pod(&never, Duration::from_millis(300))
            .await
    );
}

fn cluster_policy(name: &str) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name, "generation": 1},
           "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                    "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}})
}

fn cluster_policy_requests(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.contains("/clusternetworkpolicies"))
        .count()
}

/// Installs the CRD with a policy `name` once the agents have settled into waiting for it, and
/// returns how long the source took to have it.
async fn install_crd_and_policy(source: &KubeSource, api: &FakeApi, name: &str) -> Duration {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let installed = tokio::time::Instant::now();
    api.set_crd_installed(true);
    api.apply(cluster_policy(name));
    until(source, "the cluster policy", |c| {
        c.cluster_policies().count() == 1
    })
    .await;
    installed.elapsed()
}

// Paused time: the clock moves only when every task waits on a timer, so the time taken below is
// the time the agent chose to wait, not how busy the machine was.
#[tokio::test(start_paused = true)]
async fn a_crd_installed_later_is_watched_once_established_not_at_the_next_look() {
    let (source, api) = synced_source(seed).await;
    assert_eq!(source.snapshot().cluster.cluster_policies().count(), 0);
    // Installed, then removed and installed again.
    for round in ["c1", "c2"] {
        let waited = install_crd_and_policy(&source, &api, round).await;
        assert!(
            waited < Duration::from_secs(2),
            "{round}: a policy created right after its CRD was enforced {waited:?} later (the \
             next look at the CRD, every {:?}, not the CRD's watch)",
            weir_kube::ABSENT_CRD_RETRY_MAX
        );
        api.set_crd_installed(false);
        until(&source, "the CRD's removal", |c| {
            c.cluster_policies().count() == 0
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn without_permission_to_watch_the_crd_it_is_looked_for_now_and_then() {
    let (source, api) = synced_source(|api| {
        seed(api);
        api.forbid_crds();
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let asked = cluster_policy_requests(&api);
    assert!(
        (2..=5).contains(&asked),
        "an absent CRD that cannot be watched was asked for {asked} times in 60 s"
    );
    let waited = install_crd_and_policy(&source, &api, "c1").await;
    assert!(waited <= weir_kube::ABSENT_CRD_RETRY_MAX, "{waited:?}");
}

#[tokio::test]
async fn an_uninstalled_crd_is_an_empty_kind_asked_for_rarely_and_its_removal_empties_it() {
    // Not installed: the source is complete without it, and does not keep asking.
    let (source, api) = synced_source(seed).await;
    assert_eq!(source.snapshot().cluster.cluster_policies().count(), 0);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let asked = cluster_policy_requests(&api);
    assert!(
        asked <= 2,
        "an absent CRD was asked for {asked} times in 3 s"
    );

    // Installed from the start: its objects arrive; removed, they go.
    let (client, api) = FakeApi::start();
    seed(&api);
    api.set_crd_installed(true);
    api.apply(cluster_policy("c1"));
    let source = KubeSource::spawn(client, Options::default());
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("synced");
    until(&source, "the cluster policy", |c| {
        c.cluster_policies().count() == 1
    })
    .await;
    api.set_crd_installed(false);
    until(&source, "the CRD's removal", |c| {
        c.cluster_policies().count() == 0
    })
    .await;
}
