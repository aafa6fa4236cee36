//! Keeps the agent in step with its manifest directory: inotify wakes it on every change, and a
//! slow periodic re-read covers anything inotify cannot see (a directory replaced wholesale).

use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::{io::unix::AsyncFd, sync::Mutex};
use tracing::warn;

use crate::agent::Agent;

/// Several writes usually come together (the lab writes a pod and its service); wait this long
/// after the first before reading, so they are programmed in one pass.
const SETTLE: Duration = Duration::from_millis(5);
const RESYNC: Duration = Duration::from_secs(30);

struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn watch(dir: &PathBuf) -> nix::Result<Watch> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF,
    )?;
    Ok(Watch(inotify))
}

/// Runs forever; returns at once (pending) when there is no directory to watch.
pub async fn manifests(dir: Option<PathBuf>, agent: Arc<Mutex<Agent>>) {
    let Some(dir) = dir else {
        return std::future::pending().await;
    };
    // SAFETY: `Watch` owns the inotify descriptor, which stays open, and is the same descriptor,
    // for as long as the `AsyncFd` that owns the `Watch` lives.
    let inotify = match watch(&dir).map(|w| unsafe { AsyncFd::register(w) }) {
        Ok(Ok(fd)) => Some(fd),
        Ok(Err(e)) => {
            warn!(%e, "inotify unusable; re-reading manifests periodically only");
            None
        }
        Err(e) => {
            warn!(%e, dir = %dir.display(), "cannot watch; re-reading manifests periodically only");
            None
        }
    };
    loop {
        match &inotify {
            Some(fd) => {
                tokio::select! {
                    ready = fd.readable() => {
                        if let Ok(mut guard) = ready {
                            // Drain every queued event; one re-read covers them all.
                            while guard.get_inner().0.read_events().is_ok_and(|e| !e.is_empty()) {}
                            guard.clear_ready();
                        }
                        tokio::time::sleep(SETTLE).await;
                    }
                    () = tokio::time::sleep(RESYNC) => {}
                }
            }
            None => tokio::time::sleep(RESYNC.min(Duration::from_secs(2))).await,
        }
        if let Err(e) = agent.lock().await.sync() {
            warn!(error = %format!("{e:#}"), "programming policy after a manifest change failed");
        }
    }
}
