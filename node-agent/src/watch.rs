//! Keeps the agent in step with its source: the manifest directory's inotify descriptor wakes it on
//! every change, and a slow periodic full re-read covers anything inotify cannot see; the
//! Kubernetes source's change channel does the same for the API. The node's own addresses are
//! re-read periodically too.

use std::{
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::Arc,
    time::Duration,
};

use tokio::{io::unix::AsyncFd, sync::Mutex};
use tracing::warn;

use crate::{agent::Agent, kubernetes::Kubernetes};

/// Several writes usually come together (the lab writes a pod and its service); wait this long
/// after the first before reading, so they are programmed in one pass.
const SETTLE: Duration = Duration::from_millis(5);
const RESYNC: Duration = Duration::from_secs(30);

struct ChangeFd(OwnedFd);

impl AsRawFd for ChangeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Runs forever; pending forever when the agent has no manifest directory.
pub async fn manifests(agent: Arc<Mutex<Agent>>) {
    let (has_source, fd) = {
        let agent = agent.lock().await;
        (agent.manifest_dir().is_some(), agent.manifest_change_fd())
    };
    if !has_source {
        return std::future::pending().await;
    }
    // SAFETY: `ChangeFd` owns its descriptor, which stays open and the same for as long as the
    // `AsyncFd` that owns the `ChangeFd` lives.
    let fd = match fd.map(|fd| unsafe { AsyncFd::register(ChangeFd(fd)) }) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => {
            warn!(error = %e, "cannot wait on inotify; re-reading manifests periodically only");
            None
        }
        None => None,
    };
    loop {
        let mut full = false;
        match &fd {
            Some(fd) => {
                tokio::select! {
                    ready = fd.readable() => {
                        tokio::time::sleep(SETTLE).await;
                        sync(&agent, false).await;
                        // Cleared only if nothing arrived since the guard was taken, so a change
                        // made while syncing wakes the loop again.
                        if let Ok(mut guard) = ready {
                            guard.clear_ready();
                        }
                        continue;
                    }
                    () = tokio::time::sleep(RESYNC) => full = true,
                }
            }
            None => tokio::time::sleep(Duration::from_secs(2)).await,
        }
        sync(&agent, full || fd.is_none()).await;
    }
}

async fn sync(agent: &Mutex<Agent>, full: bool) {
    let mut agent = agent.lock().await;
    if full {
        agent.request_full_scan();
    }
    if let Err(e) = agent.sync().await {
        warn!(error = %format!("{e:#}"), "programming policy after a manifest change failed");
    }
}

/// How often the node's own addresses are re-read.
const HOST_ADDRESSES_EVERY: Duration = Duration::from_secs(10);

/// Keep the datapath's set of node addresses current. Runs forever.
pub async fn host_addresses(agent: Arc<Mutex<Agent>>) {
    loop {
        tokio::time::sleep(HOST_ADDRESSES_EVERY).await;
        if let Err(e) = agent.lock().await.refresh_host_ips().await {
            warn!(error = %format!("{e:#}"), "re-reading the node's addresses failed");
        }
    }
}

/// Publish the agent's status for the metrics and health endpoints, and renew the heartbeat that
/// tells `/healthz` the agent's loop is alive (a deadlock stops it). Runs forever.
pub async fn heartbeat(agent: Arc<Mutex<Agent>>) {
    loop {
        tokio::time::sleep(crate::metrics::HEARTBEAT_EVERY).await;
        agent.lock().await.publish();
    }
}

/// How often expired conntrack entries are swept out.
const CONNTRACK_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Sweep the conntrack tables pinned in `pin_dir` and report their fill. Runs forever, without
/// the agent's lock (the tables are read from their pins).
pub async fn conntrack(pin_dir: std::path::PathBuf, telemetry: Arc<crate::metrics::Telemetry>) {
    loop {
        tokio::time::sleep(CONNTRACK_SWEEP_EVERY).await;
        let dir = pin_dir.clone();
        match tokio::task::spawn_blocking(move || crate::conntrack::sweep(&dir)).await {
            Ok(Ok(tables)) => {
                for (name, swept) in tables {
                    if swept.removed > 0 {
                        tracing::debug!(
                            map = name,
                            removed = swept.removed,
                            live = swept.live,
                            "conntrack swept"
                        );
                    }
                    telemetry.set_map_fill(name, swept.live, swept.capacity);
                }
            }
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "sweeping conntrack failed"),
            Err(e) => warn!(error = %e, "the conntrack sweep panicked"),
        }
    }
}

/// How often the DEL spool is looked at.
const DEL_SPOOL_EVERY: Duration = Duration::from_secs(2);

/// Apply DELs the plugin spooled while it could not reach the agent (a restart's gap). Runs
/// forever.
pub async fn del_spool(agent: Arc<Mutex<Agent>>) {
    loop {
        tokio::time::sleep(DEL_SPOOL_EVERY).await;
        agent.lock().await.drain_del_queue();
    }
}

/// A burst of API events (a Deployment rolling out) is programmed in one pass.
const KUBE_SETTLE: Duration = Duration::from_millis(20);

/// Keeps the agent in step with the Kubernetes API: each change of the source's model is
/// programmed, then what the agent could not program is published as Events (once each). A
/// periodic pass retries a failed programming. Runs forever; pending forever without the source.
pub async fn kubernetes(agent: Arc<Mutex<Agent>>, kube: Option<Kubernetes>) {
    let Some(mut kube) = kube else {
        return std::future::pending().await;
    };
    let mut changes = kube.source.changes();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                tokio::time::sleep(KUBE_SETTLE).await;
            }
            () = tokio::time::sleep(RESYNC) => {}
        }
        let (rejected, node_problems) = {
            let mut agent = agent.lock().await;
            if let Err(e) = agent.sync().await {
                warn!(error = %format!("{e:#}"), "programming after a Kubernetes API change failed");
            }
            (agent.policy().rejected(), agent.node_problems())
        };
        kube.notices
            .publish(&kube.source, &rejected, &node_problems)
            .await;
    }
}
