//! Forwarding and policy decisions for the three attach points.
//!
//! Where policy is judged, so that it always sees the real peers and ports:
//! - pod → local pod, pod IP to pod IP: at the sender's veth (`from_pod`), egress and ingress both;
//!   the packet is then redirected straight to the receiver's veth.
//! - pod → Service ClusterIP: not at the sender (the host stack has yet to DNAT it). The flow is
//!   marked deferred and judged after DNAT where it reaches its backend: `from_host` for a local
//!   backend (the sender's egress and the backend's ingress, on the backend's real IP and port).
//! - pod → anything else (other nodes' pods, the node, the outside): egress at `from_pod`.
//! - host stack → local pod (forwarded, DNATed or node-originated): ingress at `from_host`; the
//!   node's own addresses are always allowed (kubelet probes).
//! Replies of a tracked flow pass both ways; a forward packet judged under an older policy epoch is
//! judged again, so a policy change applies to flows that are already open.

use aya_ebpf::{
    bindings::TC_ACT_OK, bindings::TC_ACT_SHOT, helpers::bpf_redirect, programs::TcContext,
};
use weir_common::{
    counters::{DIR_FROM_POD, DIR_TO_POD},
    ct::{CT_F_DEFERRED, CT_F_FROM_NODE, CT_F_VIA_HOST},
    endpoint::ENDPOINT_F_READY,
    CtValue, EndpointInfo, EndpointKey, NodeConfig, Reason,
};

use crate::{
    arp,
    counters::count,
    ct::{self, Hit},
    flow::{self, Flow},
    maps::{CONFIG, ENDPOINTS, HOST_IPS},
    packet::{self, EthIpv4, ETH_P_ARP, ETH_P_IP},
    policy,
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
fn endpoint(ip_be: u32) -> Option<EndpointInfo> {
    // SAFETY: copied out at once; the agent replaces whole values, never writes into them in place.
    unsafe { ENDPOINTS.get(&EndpointKey { ip_be }) }.copied()
}

#[inline(always)]
fn config() -> NodeConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
fn is_host_ip(ip_be: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { HOST_IPS.get(&EndpointKey { ip_be }) }.is_some()
}

/// Is `addr` (wire bytes) inside `net_be/len`? A zero length means "no such range".
#[inline(always)]
fn in_prefix(addr: [u8; 4], net_be: u32, len: u32) -> bool {
    if len == 0 || len > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - len);
    u32::from_be_bytes(addr) & mask == u32::from_be(net_be) & mask
}

#[inline(always)]
fn drop_with(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) -> i32 {
    count(ctx, ifindex, direction, reason);
    DROP
}

/// Count a policy denial on the endpoint whose policy said no.
#[inline(always)]
fn deny(
    ctx: &TcContext,
    reason: Reason,
    src: Option<&EndpointInfo>,
    dst: Option<&EndpointInfo>,
) -> i32 {
    let (ep, direction) = match reason {
        Reason::DropPolicyIngress => (dst, DIR_TO_POD),
        _ => (src, DIR_FROM_POD),
    };
    // A fail-closed denial names the direction by which endpoint it was counted on.
    let (ep, direction) = match (reason, ep) {
        (Reason::DropPolicyFailClosed, None) => (dst, DIR_TO_POD),
        _ => (ep, direction),
    };
    drop_with(ctx, ep.map_or(0, |e| e.host_ifindex), direction, reason)
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
    let Some(flow) = flow::parse(ctx, &hdr) else {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed);
    };
    let peer = endpoint(hdr.daddr_be()).filter(|p| p.flags & ENDPOINT_F_READY != 0);
    let cfg = config();
    let now = ct::now();

    if !flow.is_tcp_open() {
        match ct::lookup(&flow.key, now) {
            Hit::Forward(value) => {
                // SAFETY: map value pointer valid for this run; read by value.
                let v: CtValue = unsafe { *value };
                if v.flags & CT_F_DEFERRED != 0 {
                    ct::touch(value, &flow, false, now);
                    count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
                    return PASS;
                }
                if v.epoch == cfg.policy_epoch {
                    ct::touch(value, &flow, false, now);
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false);
                }
                // Opened under an older policy: judged again below.
            }
            Hit::Reply(value) => {
                ct::touch(value, &flow, true, now);
                // SAFETY: as above.
                let via_host = unsafe { (*value).flags } & CT_F_VIA_HOST != 0;
                return deliver(ctx, ifindex, &hdr, peer.as_ref(), via_host);
            }
            Hit::Miss => {
                if flow.has_icmp_inner && ct::exists(&flow.icmp_inner, now) {
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false);
                }
            }
        }
    }

    // A new flow (or one to judge again).
    if in_prefix(hdr.daddr, cfg.service_cidr_be, cfg.service_prefix_len) {
        ct::open(&flow.key, CT_F_DEFERRED, cfg.policy_epoch, now);
        count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
        return PASS;
    }
    if let Err(reason) = policy::judge(&flow.key, Some(&me), peer.as_ref()) {
        return deny(ctx, reason, Some(&me), peer.as_ref());
    }
    ct::open(&flow.key, 0, cfg.policy_epoch, now);
    deliver(ctx, ifindex, &hdr, peer.as_ref(), false)
}

/// Send an allowed packet on: straight to a local pod's veth, or to the host stack.
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    ifindex: u32,
    hdr: &EthIpv4,
    peer: Option<&EndpointInfo>,
    via_host: bool,
) -> i32 {
    if let Some(peer) = peer {
        // A router decrements TTL; when it would expire, let the host stack send the ICMP error.
        if !via_host
            && hdr.ttl > 1
            && decrement_ttl(ctx, hdr).is_some()
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
        Some(ETH_P_IP) => {
            count(ctx, ifindex, DIR_TO_POD, Reason::Deliver);
            PASS
        }
        Some(ETH_P_ARP) => PASS,
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
    if peer.flags & ENDPOINT_F_READY == 0 {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    let Some(flow) = flow::parse(ctx, &hdr) else {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropMalformed);
    };
    if let Err(reason) = admit_from_host(&flow, &hdr, &peer) {
        // A local sender (Service traffic) is named so that its egress denial counts on it.
        let src = endpoint(hdr.saddr_be());
        return deny(ctx, reason, src.as_ref(), Some(&peer));
    }
    if packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_none() {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropMalformed);
    }
    count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::FromHost);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(peer.host_ifindex, 0) as i32 }
}

/// May this packet from the host stack enter `peer`? Opens or refreshes its flow when it may.
#[inline(always)]
fn admit_from_host(flow: &Flow, hdr: &EthIpv4, peer: &EndpointInfo) -> Result<(), Reason> {
    let cfg = config();
    let now = ct::now();
    if !flow.is_tcp_open() {
        match ct::lookup(&flow.key, now) {
            Hit::Forward(value) => {
                // SAFETY: map value pointer valid for this run; read by value.
                let v: CtValue = unsafe { *value };
                if v.epoch == cfg.policy_epoch || v.flags & CT_F_FROM_NODE != 0 {
                    ct::touch(value, flow, false, now);
                    return Ok(());
                }
            }
            Hit::Reply(value) => {
                ct::touch(value, flow, true, now);
                return Ok(());
            }
            Hit::Miss => {
                if flow.has_icmp_inner && ct::exists(&flow.icmp_inner, now) {
                    return Ok(());
                }
            }
        }
    }
    if is_host_ip(hdr.saddr_be()) {
        ct::open(
            &flow.key,
            CT_F_VIA_HOST | CT_F_FROM_NODE,
            cfg.policy_epoch,
            now,
        );
        return Ok(());
    }
    // A local pod reaching another through the host stack (a Service DNATed to a local backend):
    // its egress is judged here, on the backend's real address and port.
    let src = endpoint(hdr.saddr_be());
    policy::judge(&flow.key, src.as_ref(), Some(peer))?;
    ct::open(&flow.key, CT_F_VIA_HOST, cfg.policy_epoch, now);
    Ok(())
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
