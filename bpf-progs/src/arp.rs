//! ARP responder for the pod's link-local gateway.
//!
//! Every pod routes through 169.254.1.1 on its only interface. No device owns that address: the
//! host-side veth's tc program answers the pod's ARP request with the veth's own MAC. Nothing needs
//! proxy_arp, a bridge, or per-pod configuration in the node.

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_redirect, programs::TcContext};
use weir_common::{counters::DIR_FROM_POD, EndpointKey, Reason};

use crate::{
    counters::count,
    maps::{CONFIG, ENDPOINTS},
    packet::{self, ETH_HLEN},
};

const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;

/// Ethernet/IPv4 ARP body.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct ArpIpv4 {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    op: [u8; 2],
    sha: [u8; 6],
    spa: u32,
    tha: [u8; 6],
    tpa: u32,
}

#[inline(always)]
pub fn answer_gateway(ctx: &TcContext, ifindex: u32) -> i32 {
    let drop = |reason| {
        count(ctx, ifindex, DIR_FROM_POD, reason);
        TC_ACT_SHOT as i32
    };
    let Some(arp) = packet::load::<ArpIpv4>(ctx, ETH_HLEN) else {
        return drop(Reason::DropMalformed);
    };
    let Some(config) = CONFIG.get(0) else {
        return drop(Reason::DropMalformed);
    };
    if u16::from_be_bytes(arp.op) != ARP_OP_REQUEST || arp.hlen != 6 || arp.plen != 4 {
        return drop(Reason::DropSpoofedArp);
    }
    // Only the endpoint that owns this veth may ask, with its own addresses.
    // SAFETY: copied out at once.
    let Some(me) = (unsafe { ENDPOINTS.get(&EndpointKey { ip_be: arp.spa }) }).copied() else {
        return drop(Reason::DropSpoofedArp);
    };
    if me.host_ifindex != ifindex || me.pod_mac != arp.sha || arp.tpa != config.gateway_ip_be {
        return drop(Reason::DropSpoofedArp);
    }
    let reply = ArpIpv4 {
        op: ARP_OP_REPLY.to_be_bytes(),
        sha: me.host_mac,
        spa: config.gateway_ip_be,
        tha: arp.sha,
        tpa: arp.spa,
        ..arp
    };
    if packet::store(ctx, ETH_HLEN, &reply).is_none()
        || packet::set_macs(ctx, arp.sha, me.host_mac).is_none()
    {
        return drop(Reason::DropMalformed);
    }
    count(ctx, ifindex, DIR_FROM_POD, Reason::ArpReply);
    // Back out of the same veth, towards the pod.
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}
