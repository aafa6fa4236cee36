//! The same operations, blocking: a current-thread tokio runtime drives the connections, so
//! everything (the runtime, every socket, every `setns`) happens on the calling thread. For the
//! CNI plugin, which runs one command and exits.

use std::future::Future;

use crate::{NetlinkError, Netns};

/// Drives the netlink connections of one invocation.
#[derive(Debug)]
pub struct Runtime {
    rt: tokio::runtime::Runtime,
}

impl Runtime {
    pub fn new() -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Runtime)?;
        Ok(Self { rt })
    }

    /// A connection in the calling thread's namespace.
    pub fn connect(&self) -> Result<Netlink<'_>, NetlinkError> {
        let _ctx = self.rt.enter();
        Ok(Netlink {
            rt: &self.rt,
            inner: crate::Netlink::connect()?,
        })
    }

    /// A connection inside `netns`, usable from the calling thread's namespace.
    pub fn connect_in(&self, netns: &Netns) -> Result<Netlink<'_>, NetlinkError> {
        let _ctx = self.rt.enter();
        Ok(Netlink {
            rt: &self.rt,
            inner: crate::Netlink::connect_in(netns)?,
        })
    }
}

/// A [`crate::Netlink`] whose operations block until the kernel answers.
#[derive(Debug)]
pub struct Netlink<'rt> {
    rt: &'rt tokio::runtime::Runtime,
    inner: crate::Netlink,
}

impl Netlink<'_> {
    /// Run one of [`crate::Netlink`]'s operations to completion:
    /// `host.run(|nl| nl.link_by_name("eth0"))`.
    pub fn run<'a, F: Future>(&'a self, op: impl FnOnce(&'a crate::Netlink) -> F) -> F::Output {
        self.rt.block_on(op(&self.inner))
    }
}
