//! Sending an allowed packet on: to a local pod, to another node (natively or through the
//! tunnel), or up the host stack.

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_tunnel_key, BPF_F_DONT_FRAGMENT},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use weir_common::{
    config::{NODE_F_VXLAN, TUNNEL_DEV_MAC, TUNNEL_SRC_MAC},
    counters::{DIR_FROM_POD, DIR_TO_POD},
    EndpointInfo, NodeConfig, Reason, RemoteNode,
};

use crate::{
    counters::count,
    icmp,
    node::remote_node,
    packet::{self, EthIpv4, AF_INET, IP_DF},
    to_pod,
    verdict::{drop_with, PASS},
    vxlan::{self, Wrapped},
};

/// Why [`forward_remote`] did not send a packet on.
pub enum NotSent {
    Drop(Reason),
    /// Too big for the route to the other node once wrapped in VXLAN, and not to be fragmented
    /// (DF): the route takes a pod's packets of `mtu` bytes at most. Still untouched.
    TooBig {
        mtu: u16,
    },
}

/// Send a packet to another node: wrapped in VXLAN to it (in eBPF, or by the tunnel device when
/// [`vxlan::encapsulate`] declines), or straight out of the uplink to it (native routing, on a
/// shared L2: the kernel resolves the node's MAC). Returns the tc verdict.
#[inline(always)]
pub fn forward_remote(
    ctx: &TcContext,
    cfg: &NodeConfig,
    hdr: &EthIpv4,
    remote: &RemoteNode,
) -> Result<i32, NotSent> {
    if cfg.flags & NODE_F_VXLAN == 0 {
        return Ok(redirect_neigh_v4(cfg.uplink_ifindex, remote.node_ip_be));
    }
    let dont_fragment = u16::from_be_bytes(hdr.frag_off) & IP_DF != 0;
    match vxlan::encapsulate(ctx, cfg, hdr, remote) {
        Wrapped::Sent(verdict) => Ok(verdict),
        Wrapped::TooBig { mtu } if dont_fragment => Err(NotSent::TooBig { mtu }),
        _ => through_tunnel_device(ctx, cfg, remote, dont_fragment).map_err(NotSent::Drop),
    }
}

/// Send a packet to `remote` through the tunnel device `weir-vxlan`, which wraps it. The outer
/// header's DF is the inner packet's: a packet that may be fragmented is, outside, where the
/// path is narrower than the pod's MTU.
#[inline(always)]
pub fn through_tunnel_device(
    ctx: &TcContext,
    cfg: &NodeConfig,
    remote: &RemoteNode,
    dont_fragment: bool,
) -> Result<i32, Reason> {
    // The far end's stack takes frames to TUNNEL_DEV_MAC as its own (see weir_common::config).
    packet::set_macs(ctx, TUNNEL_DEV_MAC, TUNNEL_SRC_MAC).ok_or(Reason::DropMalformed)?;
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cfg.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(remote.node_ip_be);
    key.tunnel_ttl = vxlan::TUNNEL_TTL;
    let flags = if dont_fragment {
        u64::from(BPF_F_DONT_FRAGMENT)
    } else {
        0
    };
    // SAFETY: `skb` is the valid context pointer; `key` lives on the stack for the call and
    // `size` is its full size.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            flags,
        )
    };
    if rc != 0 {
        return Err(Reason::DropNoRoute);
    }
    // SAFETY: plain helper call.
    Ok(unsafe { bpf_redirect(cfg.tunnel_ifindex, 0) } as i32)
}

/// Send the packet out of `ifindex` to the IPv4 next hop `nexthop_be` (network order): the kernel
/// resolves its MAC and writes the Ethernet header. Returns the tc verdict.
#[inline(always)]
pub fn redirect_neigh_v4(ifindex: u32, nexthop_be: u32) -> i32 {
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    nh.nh_family = u32::from(AF_INET);
    nh.__bindgen_anon_1.ipv4_nh = nexthop_be;
    // SAFETY: `nh` lives on the stack for the call and its size is passed with it.
    unsafe {
        bpf_redirect_neigh(
            ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        ) as i32
    }
}

/// Send a local pod's allowed packet on: straight to a local pod, straight to another node for
/// its pods, or to the host stack (the node, the outside, and replies whose flow came through it).
/// Called at a tc ingress hook (`tc_from_pod`), where [`to_pod::into_pod`] may use a peer redirect.
/// A packet too big for the path to another node is answered as a router would (see [`icmp`]).
#[inline(always)]
pub fn deliver(
    ctx: &TcContext,
    ifindex: u32,
    hdr: &EthIpv4,
    peer: Option<&EndpointInfo>,
    via_host: bool,
    cfg: &NodeConfig,
) -> i32 {
    // A router decrements TTL; when it would expire, let the host stack send the ICMP error.
    if via_host || hdr.ttl <= 1 {
        count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
        return PASS;
    }
    if let Some(peer) = peer {
        if decrement_ttl(ctx, hdr).is_some()
            && packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_some()
        {
            count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardLocal);
            count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::Deliver);
            return to_pod::into_pod(peer);
        }
    } else if let Some(remote) = remote_node(hdr.daddr) {
        if decrement_ttl(ctx, hdr).is_none() {
            return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed);
        }
        return match forward_remote(ctx, cfg, hdr, &remote) {
            Ok(verdict) => {
                count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardRemote);
                verdict
            }
            Err(not_sent) => {
                let (reason, too_big) = match not_sent {
                    NotSent::Drop(reason) => (reason, None),
                    NotSent::TooBig { mtu } => (Reason::DropTooBig, Some(mtu)),
                };
                // Counted (and its event read) while the packet is still the pod's.
                let dropped = drop_with(ctx, ifindex, DIR_FROM_POD, reason);
                match too_big {
                    Some(mtu) if icmp::frag_needed_allowed(ctx, hdr) => {
                        icmp::send_frag_needed(ctx, mtu)
                    }
                    _ => dropped,
                }
            }
        };
    }
    count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
    PASS
}

/// Decrement the IPv4 TTL and patch the header checksum incrementally (RFC 1624).
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, hdr: &EthIpv4) -> Option<()> {
    let csum = u16::from_be_bytes(hdr.check);
    // TTL is the high byte of its 16-bit word, so the word drops by 0x0100 and the checksum rises by it.
    let sum = u32::from(csum) + 0x0100;
    let csum = ((sum & 0xffff) + (sum >> 16)) as u16;
    let [hi, lo] = csum.to_be_bytes();
    packet::store(
        ctx,
        packet::OFF_IP_TTL,
        &[hdr.ttl - 1, hdr.protocol, hi, lo],
    )
}
