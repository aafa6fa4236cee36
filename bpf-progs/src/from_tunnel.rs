//! `tc_from_tunnel`: tcx ingress of `weir-vxlan` (VXLAN routing): decapsulated packets from other
//! nodes. Only known nodes may tunnel, with Weir's VNI, on behalf of themselves and their own pods
//! (a forged identity is dropped); packets for a local pod go to it (see [`crate::to_pod`]), the
//! rest up the host stack.

use aya_ebpf::{bindings::bpf_tunnel_key, helpers::bpf_skb_get_tunnel_key, programs::TcContext};
use weir_common::{config::VXLAN_VNI, counters::DIR_TO_POD, Reason};

use crate::{
    node::{endpoint, tunnel_sender_ok},
    packet::{self, EthIpv4, ETH_P_IP},
    to_pod,
    verdict::{drop_with, DROP, PASS},
};

#[inline(always)]
pub fn from_tunnel(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return DROP;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    // Everything out of the tunnel, the node's own traffic included, must come from the node it
    // claims to: checked before anything else.
    if !tunnel_source_ok(ctx, hdr.saddr) {
        let to = endpoint(hdr.daddr_be()).map_or(0, |p| p.host_ifindex);
        return drop_with(ctx, to, DIR_TO_POD, Reason::DropTunnelForged);
    }
    match endpoint(hdr.daddr_be()) {
        Some(peer) => to_pod::deliver(ctx, &hdr, &peer),
        None => PASS,
    }
}

/// May this decapsulated packet come in? Only from a node the source names (the outer source
/// is that node's address, checked against `WEIR_REMOTES`), with Weir's VNI, and only on behalf
/// of that node itself or of one of its pods: the inner source must be one of the outer node's.
/// Anything else is a forged identity, whoever sent it.
#[inline(always)]
fn tunnel_source_ok(ctx: &TcContext, inner_saddr: [u8; 4]) -> bool {
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: `skb` is the valid context pointer; `key` lives on the stack for the call and `size`
    // is its full size.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if rc != 0 || key.tunnel_id != VXLAN_VNI {
        return false;
    }
    // SAFETY: the IPv4 member of the union, which the kernel filled for an IPv4 tunnel (in host
    // order; `to_be` gives the wire order the maps hold).
    let outer_be = unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be();
    tunnel_sender_ok(outer_be, inner_saddr)
}
