//! Forwarding decisions for the three attach points.

use aya_ebpf::{
    bindings::TC_ACT_OK, bindings::TC_ACT_SHOT, helpers::bpf_redirect, programs::TcContext,
};
use weir_common::{
    counters::{DIR_FROM_POD, DIR_TO_POD},
    endpoint::ENDPOINT_F_READY,
    EndpointInfo, EndpointKey, Reason,
};

use crate::{
    arp,
    counters::count,
    maps::ENDPOINTS,
    packet::{self, EthIpv4, ETH_P_ARP, ETH_P_IP},
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
fn endpoint(ip_be: u32) -> Option<EndpointInfo> {
    // SAFETY: copied out at once; the agent replaces whole values, never writes into them in place.
    unsafe { ENDPOINTS.get(&EndpointKey { ip_be }) }.copied()
}

#[inline(always)]
fn drop_with(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) -> i32 {
    count(ctx, ifindex, direction, reason);
    DROP
}

/// tcx ingress of a host-side veth: everything a pod sends.
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> i32 {
    let ifindex = packet::ifindex(ctx);
    match packet::ethertype(ctx) {
        Some(ETH_P_IP) => from_pod_ipv4(ctx, ifindex),
        Some(ETH_P_ARP) => arp::answer_gateway(ctx, ifindex),
        Some(_) => drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropUnsupportedL3),
        None => drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed),
    }
}

#[inline(always)]
fn from_pod_ipv4(ctx: &TcContext, ifindex: u32) -> i32 {
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed);
    };

    // Anti-spoofing: the source must be the endpoint that owns this veth, with its own MAC.
    let Some(me) = endpoint(hdr.saddr_be()) else {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedIp);
    };
    if me.host_ifindex != ifindex {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedIp);
    }
    if me.pod_mac != hdr.eth_src {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedMac);
    }

    if let Some(peer) = endpoint(hdr.daddr_be()) {
        // A router decrements TTL; when it would expire, let the host stack send the ICMP error.
        if peer.flags & ENDPOINT_F_READY != 0
            && hdr.ttl > 1
            && decrement_ttl(ctx, &hdr).is_some()
            && packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_some()
        {
            count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardLocal);
            // SAFETY: plain helper call; the target is a veth whose egress delivers to the pod.
            return unsafe { bpf_redirect(peer.host_ifindex, 0) } as i32;
        }
    }
    count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
    PASS
}

/// tcx egress of a host-side veth: everything a pod receives.
#[inline(always)]
pub fn to_pod(ctx: &TcContext) -> i32 {
    let ifindex = packet::ifindex(ctx);
    match packet::ethertype(ctx) {
        Some(ETH_P_IP) | Some(ETH_P_ARP) => PASS,
        // The host side may emit IPv6 neighbour discovery on its own; Weir pods are IPv4-only.
        Some(_) => drop_with(ctx, ifindex, DIR_TO_POD, Reason::DropUnsupportedL3),
        None => drop_with(ctx, ifindex, DIR_TO_POD, Reason::DropMalformed),
    }
}

/// tcx egress of `weir0`: host-stack traffic routed to this node's pod CIDR.
#[inline(always)]
pub fn from_host(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return DROP;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return drop_with(ctx, 0, DIR_TO_POD, Reason::DropNoEndpoint);
    };
    if peer.flags & ENDPOINT_F_READY == 0
        || packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_none()
    {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::FromHost);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(peer.host_ifindex, 0) as i32 }
}

/// Decrement the IPv4 TTL and patch the header checksum incrementally (RFC 1624).
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, hdr: &EthIpv4) -> Option<()> {
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
