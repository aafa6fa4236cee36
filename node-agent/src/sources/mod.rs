//! Where the agent's Kubernetes objects come from, as one model ([`Cluster`]): a directory of
//! manifests ([`manifests`]), the Kubernetes API ([`kubernetes`], over `weir-kube`), or nothing
//! (no pod is isolated).
//!
//! Layer: imports nothing of the agent's; the daemon reads the model and hands it to `program`.

pub mod kubernetes;
pub mod manifests;

use std::{os::fd::OwnedFd, path::Path, sync::Arc, time::Instant};

use tracing::warn;
use weir_agent_api::Rejected;
use weir_kube::KubeSource;
use weir_policy::model::Cluster;

use manifests::ManifestDir;

enum Kind {
    None,
    Manifests(Box<ManifestDir>),
    Kubernetes {
        source: KubeSource,
        /// The generation of the snapshot taken last.
        taken: Option<u64>,
    },
}

/// The agent's source of objects and the model it last read from it.
pub struct ObjectSource {
    kind: Kind,
    /// The model when the source is not a manifest directory (which keeps its own).
    cluster: Arc<Cluster>,
    /// Objects the Kubernetes source could not use.
    rejected: Vec<Rejected>,
    /// When the oldest object change not yet handed on happened (Kubernetes source).
    changed_at: Option<Instant>,
}

impl ObjectSource {
    fn with(kind: Kind) -> Self {
        Self {
            kind,
            cluster: Arc::default(),
            rejected: Vec::new(),
            changed_at: None,
        }
    }

    /// No objects: no pod is isolated.
    pub fn none() -> Self {
        Self::with(Kind::None)
    }

    /// The manifests of `dir` (created if missing), watched for changes.
    pub fn manifests(dir: &Path) -> std::io::Result<Self> {
        Ok(Self::with(Kind::Manifests(Box::new(ManifestDir::new(
            dir,
        )?))))
    }

    /// Objects from the Kubernetes API. The source should have listed every kind
    /// ([`KubeSource::synced`]) before the first program, or pods would be judged by part of
    /// the cluster's policies.
    pub fn kubernetes(source: KubeSource) -> Self {
        Self::with(Kind::Kubernetes {
            source,
            taken: None,
        })
    }

    /// Re-read the source. Returns whether anything changed.
    pub fn refresh(&mut self) -> bool {
        match &mut self.kind {
            Kind::None => false,
            Kind::Manifests(source) => match source.refresh() {
                Ok(changed) => changed,
                Err(e) => {
                    // Keep enforcing the last good state: an unreadable directory opens nothing.
                    warn!(dir = %source.dir().display(), error = %e, "reading manifests failed; keeping the last state");
                    false
                }
            },
            Kind::Kubernetes { source, taken } => {
                if *taken == Some(source.generation()) {
                    return false;
                }
                let snapshot = source.snapshot();
                *taken = Some(snapshot.generation);
                self.cluster = snapshot.cluster;
                self.rejected = snapshot.rejected;
                if self.changed_at.is_none() {
                    self.changed_at = snapshot.changed_at;
                }
                true
            }
        }
    }

    /// When the oldest change [`refresh`](Self::refresh) has read happened, if the source knows.
    pub fn take_changed_at(&mut self) -> Option<Instant> {
        self.changed_at.take()
    }

    /// Whether the source is a directory of files (then [`change_fd`](Self::change_fd) or
    /// periodic re-reads follow it).
    pub fn is_manifests(&self) -> bool {
        matches!(self.kind, Kind::Manifests(_))
    }

    /// Readable when the manifest directory changed (see [`ManifestDir::change_fd`]).
    pub fn change_fd(&self) -> Option<OwnedFd> {
        match &self.kind {
            Kind::Manifests(source) => source.change_fd(),
            _ => None,
        }
    }

    /// Make the next re-read of a manifest directory look at every file.
    pub fn request_full_scan(&mut self) {
        if let Kind::Manifests(source) = &mut self.kind {
            source.request_full_scan();
        }
    }

    pub fn generation(&self) -> u64 {
        match &self.kind {
            Kind::None => 0,
            Kind::Manifests(source) => source.generation(),
            Kind::Kubernetes { taken, .. } => taken.unwrap_or(0),
        }
    }

    /// Objects the source could not use.
    pub fn rejected(&self) -> Vec<Rejected> {
        match &self.kind {
            Kind::Manifests(source) => source.rejected(),
            _ => self.rejected.clone(),
        }
    }

    /// The model the source describes (nodes included).
    pub fn cluster(&self) -> &Cluster {
        match &self.kind {
            Kind::Manifests(source) => source.cluster(),
            _ => &self.cluster,
        }
    }
}
