// SPDX-License-Identifier: Apache-2.0
//! The kernel edge: the only module that speaks rtnetlink or calls `setns`.
//!
//! It offers a small typed vocabulary — [`Netlink::create_veth_into_netns`], [`Netlink::set_up`],
//! [`Netlink::add_addr`], [`Netlink::add_route`], [`Netlink::link_by_name`], [`Netlink::del_link`], …
//! — each a few lines over rtnetlink's builders, and maps the errno values callers care about
//! (`EEXIST`, `ENODEV`) at this edge.
//!
//! # Runtime
//!
//! rtnetlink is asynchronous; the plugin is a short-lived process whose ADD latency matters, so it
//! drives rtnetlink on a tokio *current-thread* runtime ([`Runtime`]) and exposes blocking methods.
//! Everything — the runtime, both netlink sockets and every `setns` — happens on the calling thread.
//!
//! # Namespaces
//!
//! A netlink socket belongs to the network namespace its creator was in when it was created, for
//! its whole life. [`Runtime::connect_in`] therefore enters the pod's namespace on the current
//! thread (through a [`NetnsGuard`]), creates the socket, and returns to the original namespace
//! before doing anything else; the socket is then used from the host namespace. The veth peer is
//! created directly inside the pod namespace (`IFLA_NET_NS_FD` on the peer), so no device ever
//! appears in the host namespace under the pod's interface name.

use std::{
    fs::File,
    future::Future,
    io,
    marker::PhantomData,
    net::{IpAddr, Ipv4Addr},
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType},
    AddressFamily, RouteNetlinkMessage,
};
use nix::sched::{setns, CloneFlags};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST},
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// How often a dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is retried.
const DUMP_ATTEMPTS: usize = 5;

/// The current thread's network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("network namespace {} does not exist", path.display())]
    NetnsNotFound { path: PathBuf },

    #[error("{} is not a network namespace", path.display())]
    NotANetns { path: PathBuf },

    #[error("{} is the plugin's own (host) network namespace, not a pod's", path.display())]
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

fn request(op: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { op: op(), source }
}

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

/// A current-thread tokio runtime that drives the netlink connections of one invocation.
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

    /// A netlink connection in the calling thread's current namespace.
    pub fn connect(&self) -> Result<Netlink<'_>, NetlinkError> {
        let _ctx = self.rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        self.rt.spawn(conn);
        Ok(Netlink {
            rt: &self.rt,
            handle,
        })
    }

    /// A netlink connection inside `netns`, usable from the current namespace.
    pub fn connect_in(&self, netns: &Netns) -> Result<Netlink<'_>, NetlinkError> {
        let _ctx = self.rt.enter();
        let guard = NetnsGuard::enter(netns)?;
        let connection = rtnetlink::new_connection();
        guard.exit();
        let (conn, handle, _) = connection.map_err(NetlinkError::Socket)?;
        self.rt.spawn(conn);
        Ok(Netlink {
            rt: &self.rt,
            handle,
        })
    }
}

/// What the plugin needs to know about a network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The `IFLA_INFO_KIND` ("veth", "bridge", …), if any.
    pub kind: Option<String>,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes).ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.into_iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// An IPv4 route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// The output device (the first next hop's, for multipath routes).
    pub oif: Option<u32>,
    /// `scope link` (a directly connected destination) rather than `scope global`.
    pub link_scope: bool,
}

/// One netlink connection, bound to the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink<'rt> {
    rt: &'rt tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink<'_> {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The device called `name`, if there is one.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut replies = self.handle.link().get().match_name(name).execute();
        let first = self.block_on(replies.next());
        not_found_is_none(first, || format!("looking up link {name}"))
    }

    /// The device with index `index`, if there is one.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut replies = self.handle.link().get().match_index(index).execute();
        let first = self.block_on(replies.next());
        not_found_is_none(first, || format!("looking up link #{index}"))
    }

    /// Every device of the namespace.
    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.dump("listing links", || {
            RouteNetlinkMessage::GetLink(LinkMessage::default())
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Create the veth pair `host` ↔ `peer`, with `peer` created directly inside `peer_netns`;
    /// both ends get `mtu`, and the host end is brought up.
    ///
    /// The peer stays down: the kernel configures the peer before it links the two ends, so asking
    /// for it to come up here fails with `ENOTCONN` (`veth_open` without a peer). Bring it up
    /// from inside its namespace.
    pub fn create_veth_into_netns(
        &self,
        host: &str,
        peer: &str,
        peer_netns: &Netns,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns.file.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .mtu(mtu)
            .up()
            .build();
        self.block_on(self.handle.link().add(msg).execute())
            .map_err(request(|| {
                format!(
                    "creating veth {host} with peer {peer} in {}",
                    peer_netns.path.display()
                )
            }))
    }

    /// `ip link set <index> up`.
    pub fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(request(|| format!("setting link #{index} up")))
    }

    /// `ip link set <name> up`.
    pub fn set_up_by_name(&self, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(request(|| format!("setting link {name} up")))
    }

    /// Delete the device called `name`; `Ok(false)` if there was none. Deleting one end of a veth
    /// pair deletes the other.
    pub fn del_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.block_on(self.handle.link().del_with_message(msg).execute()) {
            Ok(()) => Ok(true),
            Err(source) => {
                let err = NetlinkError::Request {
                    op: format!("deleting link {name}"),
                    source,
                };
                if err.is_not_found() {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `ip addr add <addr> dev <index>`.
    pub fn add_addr(&self, index: u32, addr: Ipv4Net) -> Result<(), NetlinkError> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
        self.block_on(req.execute()).map_err(request(|| {
            format!("adding address {addr} to link #{index}")
        }))
    }

    /// The IPv4 addresses of device `index`.
    pub fn addrs(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let replies = self.dump("listing addresses", || {
            let mut msg = AddressMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.index = index;
            RouteNetlinkMessage::GetAddress(msg)
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewAddress(addr) if addr.header.index == index => {
                    let prefix = addr.header.prefix_len;
                    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
                    // point-to-point links); fall back to IFA_ADDRESS when it is absent.
                    let local = addr.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    });
                    let address = addr.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    });
                    local
                        .or(address)
                        .and_then(|ip| Ipv4Net::new(ip, prefix).ok())
                }
                _ => None,
            })
            .collect())
    }

    /// Add a route to the main table: `ip route add <dst> [via <gateway>] dev <oif> [scope link]`.
    pub fn add_route(&self, route: &RouteV4) -> Result<(), NetlinkError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new();
        if route.dst.prefix_len() > 0 {
            builder = builder.destination_prefix(route.dst.addr(), route.dst.prefix_len());
        }
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        }
        if let Some(oif) = route.oif {
            builder = builder.output_interface(oif);
        }
        if route.link_scope {
            builder = builder.scope(RouteScope::Link);
        }
        self.block_on(self.handle.route().add(builder.build()).execute())
            .map_err(request(|| {
                format!("adding route {}", describe_route(route))
            }))
    }

    /// The unicast IPv4 routes of the main table.
    pub fn routes(&self) -> Result<Vec<RouteV4>, NetlinkError> {
        let replies = self.dump("listing routes", || {
            RouteNetlinkMessage::GetRoute(RouteMessageBuilder::<Ipv4Addr>::new().build())
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewRoute(route) => route_v4(route),
                _ => None,
            })
            .collect())
    }

    /// The MTU of the device holding the IPv4 default route, if there is such a route.
    pub fn default_route_mtu(&self) -> Result<Option<u32>, NetlinkError> {
        let oif = self
            .routes()?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0)
            .and_then(|r| r.oif);
        match oif {
            Some(index) => Ok(self.link_by_index(index)?.and_then(|l| l.mtu)),
            None => Ok(None),
        }
    }

    /// Run a dump request, retrying while the kernel flags it as interrupted.
    fn dump(
        &self,
        op: &str,
        message: impl Fn() -> RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut req = NetlinkMessage::from(message());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut handle = self.handle.clone();
            let mut replies = handle.request(req).map_err(request(|| op.to_owned()))?;
            let (items, interrupted) = self.block_on(async {
                let mut items = Vec::new();
                let mut interrupted = false;
                while let Some(reply) = replies.next().await {
                    interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                    match reply.payload {
                        NetlinkPayload::InnerMessage(inner) => items.push(inner),
                        NetlinkPayload::Error(e) => {
                            return Err(NetlinkError::Request {
                                op: op.to_owned(),
                                source: rtnetlink::Error::NetlinkError(e),
                            })
                        }
                        _ => {}
                    }
                }
                Ok((items, interrupted))
            })?;
            if !interrupted {
                return Ok(items);
            }
            tracing::debug!(op, "netlink dump interrupted, retrying");
        }
        Err(NetlinkError::DumpInterrupted { op: op.to_owned() })
    }
}

fn not_found_is_none(
    reply: Option<Result<LinkMessage, rtnetlink::Error>>,
    op: impl FnOnce() -> String,
) -> Result<Option<Link>, NetlinkError> {
    match reply {
        None => Ok(None),
        Some(Ok(msg)) => Ok(Some(Link::from_message(msg))),
        Some(Err(source)) => {
            let err = NetlinkError::Request { op: op(), source };
            if err.is_not_found() {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

fn route_v4(msg: RouteMessage) -> Option<RouteV4> {
    let header = &msg.header;
    if header.address_family != AddressFamily::Inet || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    oif = oif.or(Some(hop.interface_index));
                    gateway = gateway.or_else(|| {
                        hop.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                            _ => None,
                        })
                    });
                }
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(RouteV4 {
        dst: Ipv4Net::new(dst, header.destination_prefix_length).ok()?,
        gateway,
        oif,
        link_scope: header.scope == RouteScope::Link,
    })
}

/// `10.0.0.0/8 via 169.254.1.1 dev #3 scope link`, for messages.
pub fn describe_route(route: &RouteV4) -> String {
    let mut s = if route.dst.prefix_len() == 0 {
        "default".to_owned()
    } else {
        route.dst.to_string()
    };
    if let Some(gw) = route.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = route.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if route.link_scope {
        s.push_str(" scope link");
    }
    s
}
