//! weir-kube: the Kubernetes API as the agent's source of objects.
//!
//! One kube-runtime watcher per kind (Namespaces, Pods, NetworkPolicies, Services, Nodes, all
//! namespaces) feeds a [`State`]: objects are trimmed as they arrive ([`trim`]), relists are
//! swapped in whole, and API errors only delay updates, with backoff — the model is never emptied
//! because the API server is unreachable, so enforcement goes on with the last known state.
//!
//! The agent waits on [`KubeSource::changes`], takes a [`Snapshot`] (cheap: the model is shared
//! copy-on-write) and programs it. [`events::Notices`] turns what the agent could not program
//! into Kubernetes Events.

pub mod crd;
pub mod events;
pub mod state;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trim;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, ObjectReference, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
pub use state::{ClusterNetworkPolicyObject, Kind, ObjectKey, Snapshot, State, Watched};
use tokio::{sync::watch, task::AbortHandle};
use tracing::{debug, info, warn};
use weir_agent_api::Rejected;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The Service ClusterIP range the datapath defers to after DNAT; Services with a ClusterIP
    /// outside it are reported.
    pub service_cidr: Option<Ipv4Net>,
}

/// The watched cluster. Clones share the same watchers, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct KubeSource {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped whenever the model changes or a kind finishes its first list.
    changes: watch::Sender<u64>,
}

struct Tasks(Vec<AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent model (every change is one call).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle<K: Watched>(&self, event: watcher::Event<K>) {
        let (changed, synced, generation) = {
            let mut state = self.state();
            let was_synced = state.is_synced();
            let changed = state.handle(event);
            (
                changed,
                !was_synced && state.is_synced(),
                state.generation(),
            )
        };
        if synced {
            info!(generation, "every kind listed: the model is complete");
        }
        if changed || synced {
            self.changes.send_replace(generation);
        }
    }
}

impl KubeSource {
    /// Starts the watchers on the current tokio runtime.
    pub fn spawn(client: Client, options: Options) -> Self {
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(options.service_cidr)),
            changes,
        });
        let tasks = vec![
            spawn_watcher::<Namespace>(&client, &shared),
            spawn_watcher::<Pod>(&client, &shared),
            spawn_watcher::<NetworkPolicy>(&client, &shared),
            spawn_watcher::<Service>(&client, &shared),
            spawn_watcher::<Node>(&client, &shared),
            spawn_watcher::<ClusterNetworkPolicyObject>(&client, &shared),
        ];
        Self {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// Changes whenever the model does (and when it first becomes complete).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    pub fn is_synced(&self) -> bool {
        self.shared.state().is_synced()
    }

    /// Returns once every kind has been listed: before that, the model is a part of the cluster,
    /// and programming it would open pods that policies not yet listed isolate.
    pub async fn synced(&self) {
        let mut changes = self.changes();
        let mut waiting = Duration::ZERO;
        const LOG_EVERY: Duration = Duration::from_secs(15);
        while !self.is_synced() {
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(LOG_EVERY) => {
                    waiting += LOG_EVERY;
                    info!(waited_s = waiting.as_secs(), "waiting for the first list of every kind from the Kubernetes API");
                }
            }
        }
    }

    pub fn generation(&self) -> u64 {
        self.shared.state().generation()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.shared.state().snapshot()
    }

    pub fn rejected(&self) -> Vec<Rejected> {
        self.shared.state().rejected()
    }

    /// Services with a ClusterIP outside the configured service CIDR.
    pub fn misplaced_services(&self) -> Vec<(ObjectKey, Vec<std::net::Ipv4Addr>)> {
        self.shared.state().misplaced_services()
    }

    /// A reference to an object the source knows, for an Event about it.
    pub fn reference(&self, key: &ObjectKey) -> ObjectReference {
        ObjectReference {
            api_version: Some(key.kind.api_version().to_owned()),
            kind: Some(key.kind.as_str().to_owned()),
            namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: self.shared.state().uid(key).map(str::to_owned),
            ..ObjectReference::default()
        }
    }

    /// Whether the model has Pod `key` (a Pod the source rejected is not in it).
    pub fn has_pod(&self, key: &weir_policy::model::PodKey) -> bool {
        self.shared.state().cluster().pod(key).is_some()
    }

    /// Waits up to `timeout` for Pod `key` to be in the model; returns whether it is. The kubelet
    /// creates a Pod before it asks for its network, so this is the watch's delay, normally
    /// milliseconds.
    pub async fn wait_for_pod(&self, key: &weir_policy::model::PodKey, timeout: Duration) -> bool {
        let mut changes = self.changes();
        let wait = async {
            while !self.has_pod(key) {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Waits until Node `name` has an IPv4 pod CIDR (`spec.podCIDRs`, set by the controller
    /// manager's node IPAM), logging while it waits.
    pub async fn node_pod_cidr(&self, name: &str) -> Ipv4Net {
        let mut changes = self.changes();
        const LOG_EVERY: Duration = Duration::from_secs(15);
        let mut logged = false;
        loop {
            let cidr = self
                .shared
                .state()
                .cluster()
                .node(name)
                .and_then(|n| n.pod_cidrs.first().copied());
            if let Some(cidr) = cidr {
                return cidr;
            }
            if !logged {
                info!(
                    node = name,
                    "waiting for Node {name} to have spec.podCIDRs (kube-controller-manager \
                     --allocate-node-cidrs, as kubeadm --pod-network-cidr and kind set up); or \
                     pass --pod-cidr"
                );
            }
            tokio::select! {
                _ = changes.changed() => logged = true,
                () = tokio::time::sleep(LOG_EVERY) => logged = false,
            }
        }
    }
}

/// Retries of a failed watch: 100 ms, doubling to at most [`RETRY_MAX`], each with up to half of
/// itself added at random (so nodes do not retry in step), and back to 100 ms once a watch works.
/// The cap is short on purpose: once the API server is back, every node picks up the changes made
/// meanwhile within about a second (kube-runtime's default grows to 30 s).
#[derive(Clone, Debug)]
pub struct RetryBackoff {
    next: Duration,
    jitter: u64,
}

/// The wait between two looks for a CRD that is not installed when its CRD object cannot be
/// watched (see [`crd::CrdWatch`]): every node asks, so not every second.
pub const ABSENT_CRD_RETRY_MAX: Duration = Duration::from_secs(20);

/// The longest wait between two retries of a failed watch.
pub const RETRY_MAX: Duration = Duration::from_millis(1000);
const RETRY_FIRST: Duration = Duration::from_millis(100);

impl Default for RetryBackoff {
    fn default() -> Self {
        // Seeded per process: nodes start at different times, so they draw different jitter.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64 | 1);
        Self {
            next: RETRY_FIRST,
            jitter: seed,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: good enough to spread retries.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let base = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        let spread = base.as_millis() as u64 / 2;
        let extra = if spread == 0 { 0 } else { self.jitter % spread };
        Some((base + Duration::from_millis(extra)).min(RETRY_MAX))
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Whether a watch failed because the API does not serve the kind (a CRD not installed).
fn not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

fn spawn_watcher<K: Watched>(client: &Client, shared: &Arc<Shared>) -> AbortHandle {
    let api: Api<K> = Api::all(client.clone());
    let shared = Arc::clone(shared);
    // ClusterNetworkPolicy is a CRD a cluster may not have: while it is not served there are no
    // such policies (the kind counts as listed, empty), and the CRD object is watched so that the
    // kind is watched as soon as it is served. The kind's own watcher cannot wait for it: it
    // reports each failed relist after an `Init` event, which resets its backoff, so an absent
    // kind would be asked for ten times a second.
    let optional = K::KIND == Kind::ClusterNetworkPolicy;
    let mut crd = crd::CrdWatch::new(client, &K::plural(&()), &K::group(&()), &K::version(&()));
    tokio::spawn(async move {
        if !optional {
            watch(api, &shared, false).await;
            return;
        }
        let mut absent = false;
        let mut seen_served = false;
        let mut lag_wait = RETRY_MAX;
        loop {
            match api.list_metadata(&kube::api::ListParams::default().limit(1)).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    if !std::mem::replace(&mut absent, true) {
                        info!(
                            kind = K::KIND.as_str(),
                            "not served by the API (its CRD is not installed): none are \
                             enforced; watching for the CRD"
                        );
                        // An empty list: none exist (and any seen before are gone).
                        shared.handle(watcher::Event::<K>::Init);
                        shared.handle(watcher::Event::<K>::InitDone);
                    }
                    if seen_served {
                        // The CRD looked served and the API does not serve the kind yet: a
                        // moment's lag, or a CRD this cannot read; wait longer each time.
                        tokio::time::sleep(lag_wait).await;
                        lag_wait = (lag_wait * 2).min(ABSENT_CRD_RETRY_MAX);
                    }
                    seen_served = crd.until_served().await;
                }
                Err(e) => {
                    // The API server is unreachable: keep what is known, as for every kind.
                    debug!(kind = K::KIND.as_str(), error = %e, "cannot tell whether the kind is served");
                    tokio::time::sleep(RETRY_MAX).await;
                }
                Ok(_) => {
                    if std::mem::take(&mut absent) {
                        info!(kind = K::KIND.as_str(), "served by the API now: watching");
                    }
                    (seen_served, lag_wait) = (false, RETRY_MAX);
                    // Returns when the kind stops being served (its CRD deleted).
                    watch(api.clone(), &shared, true).await;
                }
            }
        }
    })
    .abort_handle()
}

/// Feeds one kind's watch into the model; returns only when `optional` and the kind is no longer
/// served.
async fn watch<K: Watched>(api: Api<K>, shared: &Shared, optional: bool) {
    // Small list pages: a relist of a big cluster holds one page of untrimmed objects at a time,
    // not 500.
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .backoff(RetryBackoff::default())
        .modify(K::trim);
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    info!(kind = K::KIND.as_str(), "watch recovered");
                }
                shared.handle(event);
            }
            Err(e) if optional && not_served(&e) => return,
            Err(e) if failing => {
                debug!(kind = K::KIND.as_str(), error = %e, "watch still failing")
            }
            Err(e) => {
                failing = true;
                warn!(
                    kind = K::KIND.as_str(),
                    error = %e,
                    "watch failed; enforcing the last known state and retrying with backoff"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff;

    use super::*;

    #[test]
    fn retries_start_short_double_stay_under_a_second_and_reset() {
        let mut backoff = RetryBackoff::default();
        let waits: Vec<Duration> = backoff.by_ref().take(8).collect();
        assert!(
            waits[0] >= RETRY_FIRST && waits[0] < RETRY_FIRST * 2,
            "{waits:?}"
        );
        assert!(waits[2] >= RETRY_FIRST * 4, "{waits:?}");
        assert!(waits.iter().all(|w| *w <= RETRY_MAX), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), RETRY_MAX, "{waits:?}");
        backoff.reset();
        assert!(backoff.next().unwrap() < RETRY_FIRST * 2);
    }
}
