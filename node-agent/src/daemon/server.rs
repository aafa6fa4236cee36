//! The root-only unix socket the CNI plugin talks to: one JSON request and one JSON answer per
//! connection (see `weir-agent-api`).

use std::{fs, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot},
};
use tracing::{debug, warn};
use weir_agent_api::{FlowFilter, Request, Response};
use weir_kube::KubeSource;
use weir_policy::model::PodKey;

use super::flows::FlowLog;

/// A request for the daemon's loop, and where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

/// Largest request accepted; an endpoint is a few hundred bytes, a GC list of thousands of pods fits.
const MAX_REQUEST: u64 = 4 << 20;
/// How long an ADD waits for its Pod to reach the agent from the API (the kubelet creates the Pod
/// first, so this is the watch's delay). After that the endpoint starts closed wherever a policy
/// of its namespace isolates, and opens as the Pod arrives.
const ADD_POD_WAIT: Duration = Duration::from_secs(2);
/// A client must send its whole request within this long (the plugin sends it at once).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn bind(path: &Path) -> Result<UnixListener> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve the plugin: each request goes to the daemon's loop (`calls`), which answers requests
/// one at a time. With the Kubernetes source (`pods`), an ADD first waits (before it queues) for
/// its Pod to be known, so that it starts with the Pod's own policy.
pub async fn serve(
    listener: UnixListener,
    calls: mpsc::Sender<Call>,
    pods: Option<KubeSource>,
    flows: Arc<FlowLog>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let calls = calls.clone();
                let pods = pods.clone();
                let flows = flows.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_connection(stream, calls, pods, flows).await {
                        debug!(error = %format!("{e:#}"), "connection");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning on the error.
                warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_connection(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    pods: Option<KubeSource>,
    flows: Arc<FlowLog>,
) -> Result<()> {
    // The socket is root's (0600); refuse anyone else should its mode ever be loosened.
    let peer = stream.peer_cred()?;
    if peer.uid() != 0 {
        anyhow::bail!("refusing a connection from uid {}", peer.uid());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        READ_TIMEOUT,
        BufReader::new(read).take(MAX_REQUEST).read_line(&mut line),
    )
    .await
    .context("the request did not arrive in time")??;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Flows {
            filter,
            follow,
            last,
        }) => return serve_flows(write, &flows, filter, follow, last).await,
        Ok(request) => {
            debug!(?request, "request");
            if let (Request::Add { endpoint }, Some(pods)) = (&request, &pods) {
                if let (Some(ns), Some(name)) = (&endpoint.pod_namespace, &endpoint.pod_name) {
                    let key = PodKey::new(ns.clone(), name.clone());
                    if !pods.wait_for_pod(&key, ADD_POD_WAIT).await {
                        warn!(pod = %key, "ADD before its Pod reached the agent: the pod starts closed wherever its namespace's policies isolate");
                    }
                }
            }
            let (answer, answered) = oneshot::channel();
            calls
                .send((request, answer))
                .await
                .context("the agent's loop has stopped")?;
            answered
                .await
                .context("the agent's loop dropped the request")?
        }
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Write recent flows matching `filter` as JSON lines; with `follow`, then every new one until
/// the client goes away. A follower too slow for the flow rate skips what it missed.
async fn serve_flows(
    mut write: tokio::net::unix::OwnedWriteHalf,
    flows: &FlowLog,
    filter: FlowFilter,
    follow: bool,
    last: Option<usize>,
) -> Result<()> {
    // Subscribed before the dump, so nothing falls between the two.
    let mut new = flows.subscribe();
    let mut out = Vec::new();
    for flow in flows.recent(&filter, last) {
        serde_json::to_writer(&mut out, &*flow)?;
        out.push(b'\n');
    }
    write.write_all(&out).await?;
    if !follow {
        return Ok(());
    }
    loop {
        match new.recv().await {
            Ok(flow) if filter.matches(&flow) => {
                let mut line = serde_json::to_vec(&*flow)?;
                line.push(b'\n');
                write.write_all(&line).await?;
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}
