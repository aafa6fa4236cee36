//! The daemon's loop: the one place the [`Agent`] lives. It answers the plugin's requests one at
//! a time, and keeps the agent in step with its source (the manifest directory's inotify
//! descriptor, or the Kubernetes source's change channel, wake it; a slow periodic pass covers
//! what they cannot see and retries a failed programming), the node's own addresses, and the DEL
//! spool. Each pass publishes the agent's status, which is also the heartbeat `/healthz` reads:
//! a stuck loop stops it.

use std::{
    os::fd::{AsRawFd, OwnedFd, RawFd},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    time::{interval, sleep_until, Instant, Interval, MissedTickBehavior},
};
use tracing::warn;
use weir_agent_api::Rejected;
use weir_kube::{events::NodeProblem, KubeSource};

use super::{server::Call, Agent};
use crate::telemetry::HEARTBEAT_EVERY;

/// Passes after a manifest change are at least this far apart: a change arriving while the loop
/// is idle is programmed at once, and the writes that follow it within this time (the lab writes
/// a pod and then its service) are programmed together in the next pass.
const MANIFEST_SETTLE: Duration = Duration::from_millis(5);
/// The same for API events: a burst (a Deployment rolling out) costs one pass per 20 ms, and a
/// lone change waits for nothing.
const KUBE_SETTLE: Duration = Duration::from_millis(20);
/// The periodic full pass over the source.
const RESYNC: Duration = Duration::from_secs(30);
/// The periodic pass over a manifest directory that inotify cannot watch.
const POLL_WITHOUT_INOTIFY: Duration = Duration::from_secs(2);
/// How often the node's own addresses are re-read.
const HOST_ADDRESSES_EVERY: Duration = Duration::from_secs(10);
/// How often the DEL spool is looked at.
const DEL_SPOOL_EVERY: Duration = Duration::from_secs(2);
/// How often the incremental policy compiler is checked against a compilation from nothing
/// (a full compilation: ~0.6 s of CPU at 10 000 pods x 10 000 policies).
const POLICY_SELF_CHECK_EVERY: Duration = Duration::from_secs(300);

/// What the agent could not program, for Events (published by a task of their own, so the API's
/// latency never holds up the loop).
pub type Problems = (Vec<Rejected>, Vec<NodeProblem>);

struct ChangeFd(OwnedFd);

impl AsRawFd for ChangeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Readable when the manifest directory changed.
fn manifest_changes(agent: &Agent) -> Option<AsyncFd<ChangeFd>> {
    let fd = agent.objects.change_fd()?;
    // SAFETY: `ChangeFd` owns its descriptor, which stays open and the same for as long as the
    // `AsyncFd` that owns the `ChangeFd` lives.
    match unsafe { AsyncFd::register(ChangeFd(fd)) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!(error = %e, "cannot wait on inotify; re-reading manifests periodically only");
            None
        }
    }
}

fn every(period: Duration) -> Interval {
    let mut timer = interval(period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer.reset();
    timer
}

/// Runs forever: `calls` are the plugin's requests, `flow_events` the datapath's, `kube` the Kubernetes source if the agent
/// has one, `problems` where what it cannot program goes.
pub async fn run(
    mut agent: Agent,
    mut calls: mpsc::Receiver<Call>,
    mut flow_events: mpsc::Receiver<Vec<weir_common::FlowEvent>>,
    kube: Option<KubeSource>,
    problems: Option<watch::Sender<Problems>>,
) {
    let manifests = manifest_changes(&agent);
    let mut kube_changes = kube.as_ref().map(KubeSource::changes);
    let has_source = agent.objects.is_manifests() || kube.is_some();
    let polls = agent.objects.is_manifests() && manifests.is_none();
    let mut resync = every(if polls { POLL_WITHOUT_INOTIFY } else { RESYNC });
    let mut heartbeat = every(HEARTBEAT_EVERY);
    let mut host_addresses = every(HOST_ADDRESSES_EVERY);
    let mut del_spool = every(DEL_SPOOL_EVERY);
    let mut self_check = every(POLICY_SELF_CHECK_EVERY);
    // A change was seen: the pass that programs it runs at this instant.
    let mut pass_at: Option<Instant> = None;
    // When the last pass after a change ended.
    let mut last_pass: Option<Instant> = None;
    loop {
        tokio::select! {
            Some((request, answer)) = calls.recv() => {
                let _ = answer.send(agent.handle(request).await);
            }
            Some(events) = flow_events.recv() => agent.record_flows(events),
            Ok(mut ready) = readable(manifests.as_ref()) => {
                // Cleared before the pass reads the events: one arriving meanwhile makes the
                // descriptor readable again, and wakes the loop for another pass.
                ready.clear_ready();
                pass_at.get_or_insert_with(|| next_pass(last_pass, MANIFEST_SETTLE, Instant::now()));
            }
            changed = changed(kube_changes.as_mut()) => {
                match changed {
                    Ok(()) => {
                        pass_at.get_or_insert_with(|| next_pass(last_pass, KUBE_SETTLE, Instant::now()));
                    }
                    // The source is gone: nothing more will come from it.
                    Err(_) => kube_changes = None,
                }
            }
            () = at(pass_at) => {
                pass_at = None;
                pass(&mut agent, false, problems.as_ref()).await;
                last_pass = Some(Instant::now());
            }
            _ = resync.tick(), if has_source => pass(&mut agent, true, problems.as_ref()).await,
            _ = heartbeat.tick() => agent.publish(),
            _ = host_addresses.tick() => {
                if let Err(e) = agent.refresh_host_ips().await {
                    warn!(error = %format!("{e:#}"), "re-reading the node's addresses failed");
                }
                if let Err(e) = agent.repair_host_ports() {
                    warn!(error = %format!("{e:#}"), "checking the host-port rules failed");
                }
            }
            _ = del_spool.tick() => {
                agent.drain_del_queue();
            }
            _ = self_check.tick(), if has_source => {
                if let Err(e) = agent.policy_self_check() {
                    warn!(error = %format!("{e:#}"), "reprogramming after the policy self-check failed");
                }
                if let Some(problems) = problems.as_ref() {
                    problems.send_replace((agent.rejected(), agent.node_problems()));
                }
            }
        }
    }
}

/// When to program a change seen `now`: at once, unless the last pass ended less than `settle`
/// ago; then `settle` after it, so a burst is coalesced into one pass per `settle`.
fn next_pass(last_pass: Option<Instant>, settle: Duration, now: Instant) -> Instant {
    match last_pass {
        Some(last) if last + settle > now => last + settle,
        _ => now,
    }
}

/// Re-read the source (every file of a manifest directory when `full`) and program what
/// changed; then hand what could not be programmed to the task that publishes Events.
async fn pass(agent: &mut Agent, full: bool, problems: Option<&watch::Sender<Problems>>) {
    if full {
        agent.objects_mut().request_full_scan();
    }
    if let Err(e) = agent.sync().await {
        warn!(error = %format!("{e:#}"), "programming after a change of the source failed");
    }
    if let Some(problems) = problems {
        problems.send_replace((agent.rejected(), agent.node_problems()));
    }
}

async fn readable(
    fd: Option<&AsyncFd<ChangeFd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, ChangeFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

async fn changed(
    changes: Option<&mut watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_change_is_programmed_at_once_and_a_burst_once_per_settle_time() {
        let now = Instant::now();
        let settle = Duration::from_millis(20);
        assert_eq!(next_pass(None, settle, now), now, "first change ever");
        let long_ago = now - Duration::from_secs(1);
        assert_eq!(next_pass(Some(long_ago), settle, now), now, "idle loop");
        let just = now - Duration::from_millis(5);
        assert_eq!(
            next_pass(Some(just), settle, now),
            just + settle,
            "during a burst"
        );
    }
}
