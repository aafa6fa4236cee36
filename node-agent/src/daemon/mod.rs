//! The daemon: the [`Agent`] (the node's state: its endpoints, the model and what was programmed
//! from it), its start-up, the CNI requests it answers, and the loop it lives in.
//!
//! - `agent.rs`: the state and the passes that program it; `start.rs`: start-up and adoption;
//!   `requests.rs`: the plugin's requests; `routes.rs`: other nodes and the node's addresses;
//!   `host_ports.rs`: the pods' hostPorts; `cleanup.rs`: `weir-agent cleanup`.
//! - `server.rs`: the CNI socket; `event_loop.rs`: the loop that owns the agent, so requests and
//!   reconciling never contend for it, and nothing else (metrics, health) needs it.
//!
//! Layer: the top of the agent. It drives `sources`, `program`, `kernel` and `telemetry`;
//! nothing imports it but the CLI.

mod agent;
mod cleanup;
mod event_loop;
mod flows;
mod host_ports;
mod memory;
mod requests;
mod routes;
mod server;
mod start;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{info, warn};
use weir_kube::{events::Notices, KubeSource};

pub use agent::Agent;
pub use cleanup::cleanup;
use event_loop::Problems;

use crate::{
    config::Config,
    kernel::conntrack,
    sources::{kubernetes::Kubernetes, ObjectSource},
    telemetry::Telemetry,
};

/// Requests from the plugin waiting for the loop; more wait to be queued.
const CALLS_QUEUED: usize = 128;
/// Batches of flow events waiting for the loop; beyond that they are dropped and counted.
const FLOW_BATCHES_QUEUED: usize = 256;
/// How often expired conntrack entries are swept out.
const CONNTRACK_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Run the agent until SIGTERM or SIGINT: objects from `kube` (already synced), or from the
/// manifest directory `config` names, or none. The programs stay pinned when it stops, so pods
/// keep working.
pub async fn run(
    config: Config,
    kube: Option<Kubernetes>,
    telemetry: Arc<Telemetry>,
) -> Result<()> {
    let node_name = config.node_name.clone();
    info!(node = %config.node_name, pod_cidr = %config.pod_cidr, cluster_cidr = %config.cluster_cidr, "starting");
    let socket = config.paths.socket();
    let pin_dir = config.paths.pin_dir();
    let endpoints_dir = config.paths.endpoints_dir();
    let objects = match (&kube, &config.manifest_dir) {
        (Some(kube), _) => ObjectSource::kubernetes(kube.source.clone()),
        (None, Some(dir)) => {
            ObjectSource::manifests(dir).context("opening the manifest directory")?
        }
        (None, None) => ObjectSource::none(),
    };
    let mut agent = Agent::start(config, objects, telemetry.clone())
        .await
        .context("starting weir-agent")?;
    let listener = server::bind(&socket)?;
    // A DEL spooled between start-up's drain and the bind above.
    agent.drain_del_queue();
    agent.write_conflist()?;
    release_startup_memory();
    info!(socket = %socket.display(), "ready");
    agent.publish();
    telemetry.set_started(pin_dir.clone(), endpoints_dir);

    let (calls, requests) = mpsc::channel(CALLS_QUEUED);
    let flow_log = agent.flow_log();
    let (flow_events, flow_batches) = mpsc::channel(FLOW_BATCHES_QUEUED);
    let source = kube.as_ref().map(|k| k.source.clone());
    if let Some(kube) = &kube {
        tokio::spawn(Kubernetes::write_cluster_policy_status(
            kube.client.clone(),
            kube.source.clone(),
            node_name.clone(),
        ));
    }
    let problems = kube.map(|kube| {
        let (problems, published) = watch::channel(Problems::default());
        tokio::spawn(publish_events(kube.notices, kube.source, published));
        problems
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        () = server::serve(listener, calls, source.clone(), flow_log) => {}
        () = event_loop::run(agent, requests, flow_batches, source, problems) => {}
        () = read_flow_events(pin_dir.clone(), flow_events, telemetry.clone()) => {}
        () = sweep_conntrack(pin_dir, telemetry) => {}
        _ = term.recv() => info!("SIGTERM: stopping; pinned programs keep pods working"),
        _ = int.recv() => info!("SIGINT: stopping; pinned programs keep pods working"),
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Read the datapath's flow events for ever (they are named in the loop). Should the ring
/// vanish, the rest of the agent goes on without flows.
async fn read_flow_events(
    pin_dir: PathBuf,
    out: mpsc::Sender<Vec<weir_common::FlowEvent>>,
    telemetry: Arc<Telemetry>,
) {
    let dropped = |n| telemetry.count_flow_events_dropped(n);
    if let Err(e) = crate::kernel::flow_events::follow(&pin_dir, out, dropped).await {
        warn!(error = %format!("{e:#}"), "cannot read flow events; `weir-agent flows` will show none");
    }
    std::future::pending::<()>().await;
}

/// Publish what the agent could not program as Events, each once while it lasts (a publication
/// that failed is tried again on the loop's next pass).
async fn publish_events(
    mut notices: Notices,
    source: KubeSource,
    mut problems: watch::Receiver<Problems>,
) {
    while problems.changed().await.is_ok() {
        let (rejected, node_problems) = problems.borrow_and_update().clone();
        notices.publish(&source, &rejected, &node_problems).await;
    }
}

/// Sweep the conntrack tables pinned in `pin_dir` and report their fill, and the other LRU maps'. Runs forever, beside
/// the agent (the tables are read from their pins).
async fn sweep_conntrack(pin_dir: PathBuf, telemetry: Arc<Telemetry>) {
    loop {
        tokio::time::sleep(CONNTRACK_SWEEP_EVERY).await;
        let dir = pin_dir.clone();
        match tokio::task::spawn_blocking(move || conntrack::sweep(&dir)).await {
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
            Ok(Err(e)) => warn!(error = %e, "sweeping conntrack failed"),
            Err(e) => warn!(error = %e, "the conntrack sweep panicked"),
        }
        // The LRU maps nobody else counts, with the same period.
        let dir = pin_dir.clone();
        let fills = tokio::task::spawn_blocking(move || {
            use weir_common::maps::{COUNTERS, FLOW_RATE, FRAGS, VERDICTS};
            [COUNTERS, FRAGS, VERDICTS, FLOW_RATE]
                .map(|name| (name, crate::kernel::pins::lru_fill(&dir, name)))
        })
        .await;
        for (name, fill) in fills.into_iter().flatten() {
            match fill {
                Ok((entries, capacity)) => telemetry.set_map_fill(name, entries, capacity),
                Err(e) => tracing::debug!(map = name, error = %e, "reading a map's fill"),
            }
        }
    }
}

/// Start-up (loading the eBPF object, the first full list, the first compile) peaks well above
/// what the agent needs afterwards; glibc keeps freed heap mapped unless asked to give it back.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers and is
    // safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
