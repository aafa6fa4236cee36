//! What can go wrong talking to the kernel, with the errno values callers decide on.

use std::{io, path::PathBuf};

/// How often a dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is retried.
pub(crate) const DUMP_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("network namespace {} does not exist", path.display())]
    NetnsNotFound { path: PathBuf },

    #[error("{} is not a network namespace", path.display())]
    NotANetns { path: PathBuf },

    #[error("{} is the caller's own network namespace, not a pod's", path.display())]
    HostNetns { path: PathBuf },

    #[error("opening network namespace {}", path.display())]
    NetnsOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("switching the thread to network namespace {}", path.display())]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("starting the netlink runtime")]
    Runtime(#[source] io::Error),

    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),

    #[error("{op}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("{op}: the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times")]
    DumpInterrupted { op: String },

    #[error("interface {0} disappeared while being configured")]
    Vanished(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a kernel rejection.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(msg.raw_code().abs()),
            _ => None,
        }
    }

    /// The object to create already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object to act on does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH)
        )
    }
}

/// Wrap an rtnetlink error with what was being done.
pub(crate) fn request(
    op: impl FnOnce() -> String,
) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { op: op(), source }
}

/// `Ok(true)` when done, `Ok(false)` when there was nothing to act on.
pub(crate) fn absent_is_false(result: Result<(), NetlinkError>) -> Result<bool, NetlinkError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
