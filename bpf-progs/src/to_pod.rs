//! Another node's packet for a local pod (from the tunnel or the uplink): judged by the pod's
//! ingress policy and delivered straight to it (see [`into_pod`]), skipping the host stack both
//! ways (the pod's replies go straight back from `tc_from_pod`). Replies of flows that crossed the
//! host stack here (which must undo a DNAT) and ICMP errors about them go up the host stack
//! instead.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use weir_common::{
    counters::DIR_TO_POD,
    endpoint::{ENDPOINT_F_DIRECT, ENDPOINT_F_READY},
    events::AT_FROM_REMOTE,
    EndpointInfo, Reason,
};

use crate::{
    counters::count,
    ct::{self, known, Known},
    flow,
    node::config,
    packet::{self, EthIpv4},
    policy,
    verdict::{deny, drop_with, PASS},
};

/// Deliver `hdr`'s packet from another node to local pod `peer`.
#[inline(always)]
pub fn deliver(ctx: &TcContext, hdr: &EthIpv4, peer: &EndpointInfo) -> i32 {
    let peer = *peer;
    let hdr = *hdr;
    if peer.flags & ENDPOINT_F_READY == 0 {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, reason),
    };
    let cfg = config();
    let now = ct::now();
    match known(&flow, &cfg, now) {
        Known::Current => {}
        // Up the host stack, which translates them back if their flow was NATed, then hands
        // them to `from_host`.
        Known::ReplyViaHost | Known::Related => {
            count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::ForwardHost);
            return PASS;
        }
        Known::Unknown => {
            if let Err(reason) = policy::judge(&flow.key, None, Some(&peer), AT_FROM_REMOTE) {
                return deny(ctx, reason, None, Some(&peer));
            }
            ct::open(&flow.key, 0, cfg.policy_epoch, now);
        }
    }
    if packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_none() {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropMalformed);
    }
    count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::FromRemote);
    into_pod(&peer)
}

/// Hand an allowed packet, its MACs set, to local pod `peer`: straight into the pod's interface
/// where the pod allows it ([`ENDPOINT_F_DIRECT`]: no pass through the host veth and the backlog
/// behind it), else out of the host veth, whose qdisc shapes the pod's ingress. Only from a tc
/// ingress hook (the kernel drops a peer redirect made anywhere else).
#[inline(always)]
pub fn into_pod(peer: &EndpointInfo) -> i32 {
    // SAFETY: plain helper calls; the target is a veth, whose peer is the pod's interface.
    unsafe {
        if peer.flags & ENDPOINT_F_DIRECT != 0 {
            bpf_redirect_peer(peer.host_ifindex, 0) as i32
        } else {
            bpf_redirect(peer.host_ifindex, 0) as i32
        }
    }
}
