//! Weir's one netlink vocabulary, used by the agent and the CNI plugin alike: links, veth pairs
//! (one end created straight into a pod's namespace), flow-based VXLAN devices, addresses, routes,
//! kernel-managed neighbour entries, root qdiscs (token bucket filters), and network namespaces.
//! Each operation is a few lines over rtnetlink's builders; errno values callers decide on
//! (`EEXIST`, `ENODEV`, …) are mapped here.
//!
//! Layer: the bottom of the kernel edge. It imports nothing of Weir's, and nothing else of Weir
//! speaks rtnetlink or calls `setns`.
//!
//! [`Netlink`] is asynchronous (the agent runs it on its tokio runtime); [`blocking`] drives the
//! same operations on a current-thread runtime for the plugin, a short-lived process whose every
//! syscall happens on its one thread (which matters for `setns`).

pub mod blocking;
mod error;
mod link;
mod netns;
mod qdisc;
mod route;

use std::net::{IpAddr, Ipv4Addr};

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVeth, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
    },
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST},
    Handle, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

pub use error::NetlinkError;
use error::{absent_is_false, request, DUMP_ATTEMPTS};
pub use link::{Link, LinkUpdate};
pub use netns::{Netns, NetnsGuard};
pub use qdisc::{RootQdisc, Tbf};
pub use route::RouteV4;

/// An IPv4 address of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// The device's index.
    pub index: u32,
    pub net: Ipv4Net,
}

/// One netlink connection, bound for its whole life to the namespace it was opened in.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime (it spawns the
    /// connection's task on it).
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A connection inside `netns`, used from the caller's namespace: the thread enters `netns`
    /// only to create the socket.
    pub fn connect_in(netns: &Netns) -> Result<Self, NetlinkError> {
        let guard = NetnsGuard::enter(netns)?;
        let connection = rtnetlink::new_connection();
        guard.exit();
        let (conn, handle, _) = connection.map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The device called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut replies = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let first = replies.next().await;
        not_found_is_none(first, || format!("looking up link {name}"))
    }

    /// The device with index `index`, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut replies = self.handle.link().get().match_index(index).execute();
        let first = replies.next().await;
        not_found_is_none(first, || format!("looking up link #{index}"))
    }

    /// Every device of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self
            .dump("listing links", || {
                RouteNetlinkMessage::GetLink(LinkMessage::default())
            })
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// The device called `name`, which was just created or configured.
    async fn expect_link(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::Vanished(name.to_owned()))
    }

    /// Create the veth pair `name` ↔ `peer` in this namespace, both ends with `mtu`, both down.
    pub async fn create_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkVeth::new(name, peer).mtu(mtu).build();
        self.add_link(msg, || format!("creating veth {name} with peer {peer}"))
            .await
    }

    /// Create the veth pair `host` ↔ `peer`, with `peer` created directly inside `peer_netns`;
    /// both ends get `mtu`, and the host end is brought up.
    ///
    /// The peer stays down: the kernel configures the peer before it links the two ends, so asking
    /// for it to come up here fails with `ENOTCONN` (`veth_open` without a peer). Bring it up
    /// from inside its namespace.
    pub async fn create_veth_into_netns(
        &self,
        host: &str,
        peer: &str,
        peer_netns: &Netns,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns.raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .mtu(mtu)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(request(|| {
                format!(
                    "creating veth {host} with peer {peer} in {}",
                    peer_netns.path().display()
                )
            }))
    }

    /// Create the flow-based VXLAN device `name` (`external`: whoever sends through it sets each
    /// packet's tunnel key) on UDP `port`, with no learning, `mac` and `mtu`; it stays down.
    pub async fn create_vxlan(
        &self,
        name: &str,
        port: u16,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let msg = LinkVxlan::new(name, 0)
            .collect_metadata(true)
            .learning(false)
            .port(port)
            .mtu(mtu)
            .address(mac.to_vec())
            .build();
        self.add_link(msg, || format!("creating VXLAN device {name}"))
            .await
    }

    /// `ip link set <index> …`.
    pub async fn update_link(&self, index: u32, update: &LinkUpdate) -> Result<(), NetlinkError> {
        let msg = update.message(LinkUnspec::new_with_index(index));
        self.set_link(msg, || format!("setting link #{index}: {update:?}"))
            .await
    }

    /// `ip link set <index> up`.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.update_link(index, &LinkUpdate::up()).await
    }

    /// `ip link set <name> up`.
    pub async fn set_up_by_name(&self, name: &str) -> Result<(), NetlinkError> {
        self.update_link_by_name(name, &LinkUpdate::up()).await
    }

    /// `ip link set <name> …`.
    pub async fn update_link_by_name(
        &self,
        name: &str,
        update: &LinkUpdate,
    ) -> Result<(), NetlinkError> {
        let msg = update.message(LinkUnspec::new_with_name(name));
        self.set_link(msg, || format!("setting link {name}: {update:?}"))
            .await
    }

    async fn add_link(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(request(what))
    }

    async fn set_link(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(request(what))
    }

    /// Apply `update` to the device `name` unless it already looks so; returns the device as it
    /// is afterwards.
    pub async fn ensure_link(&self, name: &str, update: &LinkUpdate) -> Result<Link, NetlinkError> {
        let link = self.expect_link(name).await?;
        if update.is_applied_to(&link) {
            return Ok(link);
        }
        self.update_link(link.index, update).await?;
        self.expect_link(name).await
    }

    /// Delete the device called `name`; `Ok(false)` if there was none. Deleting one end of a veth
    /// pair deletes the other.
    pub async fn del_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let msg = LinkUnspec::new_with_name(name).build();
        let result = self
            .handle
            .link()
            .del_with_message(msg)
            .execute()
            .await
            .map_err(request(|| format!("deleting link {name}")));
        absent_is_false(result)
    }

    /// `ip addr add <addr> dev <index>`.
    pub async fn add_addr(&self, index: u32, addr: Ipv4Net) -> Result<(), NetlinkError> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
        req.execute().await.map_err(request(|| {
            format!("adding address {addr} to link #{index}")
        }))
    }

    /// Every IPv4 address of the namespace (loopback's included).
    pub async fn addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        let replies = self
            .dump("listing addresses", || {
                let mut msg = AddressMessage::default();
                msg.header.family = AddressFamily::Inet;
                RouteNetlinkMessage::GetAddress(msg)
            })
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewAddress(addr) => address_v4(&addr),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 addresses of device `index`.
    pub async fn addrs(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        Ok(self
            .addresses()
            .await?
            .into_iter()
            .filter(|a| a.index == index)
            .map(|a| a.net)
            .collect())
    }

    /// `ip route add …` (main table).
    pub async fn add_route(&self, route: &RouteV4) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(route.message())
            .execute()
            .await
            .map_err(request(|| format!("adding route {route}")))
    }

    /// `ip route replace …` (main table).
    pub async fn replace_route(&self, route: &RouteV4) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(route.message())
            .replace()
            .execute()
            .await
            .map_err(request(|| format!("replacing route {route}")))
    }

    /// `ip route del …`; `Ok(false)` when there was no such route.
    pub async fn del_route(&self, route: &RouteV4) -> Result<bool, NetlinkError> {
        let result = self
            .handle
            .route()
            .del(route.message())
            .execute()
            .await
            .map_err(request(|| format!("deleting route {route}")));
        absent_is_false(result)
    }

    /// The unicast IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<RouteV4>, NetlinkError> {
        let replies = self
            .dump("listing routes", || {
                RouteNetlinkMessage::GetRoute(RouteMessageBuilder::<Ipv4Addr>::new().build())
            })
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewRoute(route) => route::route_v4(route),
                _ => None,
            })
            .collect())
    }

    /// The device of the IPv4 default route, if there is such a route.
    pub async fn default_route_link(&self) -> Result<Option<Link>, NetlinkError> {
        let oif = self
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.dst.prefix_len() == 0)
            .find_map(|r| r.oif);
        match oif {
            Some(index) => self.link_by_index(index).await,
            None => Ok(None),
        }
    }

    /// A kernel-managed neighbour entry for `ip` on `ifindex` (`ip neigh replace <ip> dev <if>
    /// managed`): the kernel resolves it now and keeps it resolved, so no packet ever waits in
    /// the neighbour queue for it.
    pub async fn replace_managed_neighbour(
        &self,
        ip: Ipv4Addr,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let mut request_ = self
            .handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .state(NeighbourState::None)
            .replace();
        request_
            .message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        request_.execute().await.map_err(request(|| {
            format!("managed neighbour {ip} on link #{ifindex}")
        }))
    }

    /// `ip neigh del <ip> dev <ifindex>`; `Ok(false)` when there was no such entry.
    pub async fn del_neighbour(&self, ip: Ipv4Addr, ifindex: u32) -> Result<bool, NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let result = self
            .handle
            .neighbours()
            .del(message)
            .execute()
            .await
            .map_err(request(|| {
                format!("deleting neighbour {ip} on link #{ifindex}")
            }));
        absent_is_false(result)
    }

    /// Run a dump request, retrying while the kernel flags it as interrupted by a concurrent
    /// change (then some entries may be missing or repeated).
    async fn dump(
        &self,
        op: &str,
        message: impl Fn() -> RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut req = NetlinkMessage::from(message());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut handle = self.handle.clone();
            let mut replies = handle.request(req).map_err(request(|| op.to_owned()))?;
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
            if !interrupted {
                return Ok(items);
            }
            tracing::debug!(op, "netlink dump interrupted, retrying");
        }
        Err(NetlinkError::DumpInterrupted { op: op.to_owned() })
    }
}

/// The address `msg` gives, if it is IPv4. `IFA_LOCAL` is the interface's own address
/// (`IFA_ADDRESS` is the peer's on point-to-point links); `IFA_ADDRESS` when it is absent.
fn address_v4(msg: &AddressMessage) -> Option<Address> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let ip = local.or(address)?;
    Some(Address {
        index: msg.header.index,
        net: Ipv4Net::new(ip, msg.header.prefix_len).ok()?,
    })
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
