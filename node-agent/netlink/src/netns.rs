//! Network namespaces: opening a pod's, and moving the calling thread into it and back.
//!
//! A netlink socket belongs to the namespace its creator was in when it was created, for its whole
//! life; [`crate::Netlink::connect_in`] uses [`NetnsGuard`] to create one inside a pod's namespace
//! and returns to the original namespace before doing anything else.

use std::{
    fs::File,
    io,
    marker::PhantomData,
    os::{
        fd::{AsFd, AsRawFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use crate::NetlinkError;

/// The current thread's network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace file (`/var/run/netns/…` or `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Open `path` and check that it is a network namespace other than the caller's own.
    pub fn open(path: &Path) -> Result<Self, NetlinkError> {
        let file = File::open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                NetlinkError::NetnsNotFound {
                    path: path.to_path_buf(),
                }
            } else {
                NetlinkError::NetnsOpen {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        if namespace_type(&file) != Some(libc::CLONE_NEWNET) {
            return Err(NetlinkError::NotANetns {
                path: path.to_path_buf(),
            });
        }
        let netns = Self {
            file,
            path: path.to_path_buf(),
        };
        if netns.is_current()? {
            return Err(NetlinkError::HostNetns {
                path: path.to_path_buf(),
            });
        }
        Ok(netns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's descriptor, for `IFLA_NET_NS_FD`; valid while `self` lives.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Is this the namespace the calling thread is in? (Namespaces are identified by their nsfs
    /// inode.)
    fn is_current(&self) -> Result<bool, NetlinkError> {
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetlinkError::NetnsOpen { path, source }
        };
        let ours = std::fs::metadata(THREAD_NETNS).map_err(open_err(Path::new(THREAD_NETNS)))?;
        let theirs = self.file.metadata().map_err(open_err(&self.path))?;
        Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
    }
}

/// `_IO(0xb7, 0x3)` from `<linux/nsfs.h>`: which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: u32 = 0xb703;

/// The `CLONE_NEW*` type of the namespace `file` refers to, or `None` if it is not a namespace.
fn namespace_type(file: &File) -> Option<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reports the type of the namespace behind
    // the descriptor, which stays open (borrowed from `file`) for the whole call. On anything
    // that is not an nsfs file the kernel answers -1/ENOTTY.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    (kind >= 0).then_some(kind)
}

/// The calling thread, moved into another network namespace until this guard is dropped or
/// [`NetnsGuard::exit`]ed.
///
/// `!Send` on purpose: a namespace belongs to a thread, and the guard must restore the thread it
/// was created on. If the thread cannot be moved back the process aborts — carrying on would
/// configure the host from inside a pod, or the reverse.
#[derive(Debug)]
pub struct NetnsGuard {
    original: File,
    restored: bool,
    _not_send: PhantomData<*const ()>,
}

impl NetnsGuard {
    pub fn enter(target: &Netns) -> Result<Self, NetlinkError> {
        let original = File::open(THREAD_NETNS).map_err(|source| NetlinkError::NetnsOpen {
            path: PathBuf::from(THREAD_NETNS),
            source,
        })?;
        setns(target.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
            NetlinkError::Setns {
                path: target.path.clone(),
                source,
            }
        })?;
        Ok(Self {
            original,
            restored: false,
            _not_send: PhantomData,
        })
    }

    /// Go back to the original namespace.
    pub fn exit(mut self) {
        self.restore();
    }

    fn restore(&mut self) {
        if self.restored {
            return;
        }
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            tracing::error!(error = %e, "cannot return to the original network namespace; aborting");
            std::process::abort();
        }
        self.restored = true;
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        self.restore();
    }
}
