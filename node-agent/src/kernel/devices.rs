//! The node's own devices, over `weir-netlink`: `weir0` (every pod CIDR is routed to it), the
//! VXLAN device, the routes that point at `weir0`, and the node's addresses.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weir_netlink::{Link, LinkUpdate, Netlink, NetlinkError};

/// Make `name` one end of a veth pair (the other end is `peer`), without ARP since the datapath
/// writes the MACs itself, both ends up, `name` with `mtu`. Idempotent: an existing pair keeps
/// its indexes, so attached programs stay. A veth rather than a dummy device because it needs no
/// extra kernel driver: every kernel that runs pods has veth.
pub async fn ensure_host_dev(
    nl: &Netlink,
    name: &str,
    peer: &str,
    mtu: u32,
) -> Result<Link, NetlinkError> {
    if nl.link_by_name(name).await?.is_none() {
        nl.create_veth(name, peer, mtu).await?;
    }
    nl.ensure_link(peer, &LinkUpdate::up().arp(true)).await?;
    nl.ensure_link(name, &LinkUpdate::up().arp(false).mtu(mtu))
        .await
}

/// Make `name` the flow-based VXLAN device on UDP `port` (the eBPF programs set each packet's
/// tunnel key), with the MAC every node's tunnel device has, no learning, and `mtu`, up.
/// Idempotent, like [`ensure_host_dev`].
pub async fn ensure_vxlan_dev(
    nl: &Netlink,
    name: &str,
    port: u16,
    mac: [u8; 6],
    mtu: u32,
) -> Result<Link, NetlinkError> {
    if nl.link_by_name(name).await?.is_none() {
        nl.create_vxlan(name, port, mac, mtu).await?;
    }
    nl.ensure_link(name, &LinkUpdate::up().mtu(mtu).mac(mac))
        .await
}

/// The IPv4 destinations the main table routes out of `ifindex`.
pub async fn routes_via(nl: &Netlink, ifindex: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
    Ok(nl
        .routes()
        .await?
        .into_iter()
        .filter(|route| route.oif == Some(ifindex))
        .map(|route| route.dst)
        .collect())
}

/// Every IPv4 address of the node (loopback's included), once each, with the index of the
/// device that holds it.
pub async fn node_addresses(nl: &Netlink) -> Result<Vec<(Ipv4Addr, u32)>, NetlinkError> {
    let mut out: Vec<(Ipv4Addr, u32)> = Vec::new();
    for address in nl.addresses().await? {
        let ip = address.net.addr();
        if !out.iter().any(|(known, _)| *known == ip) {
            out.push((ip, address.index));
        }
    }
    Ok(out)
}
