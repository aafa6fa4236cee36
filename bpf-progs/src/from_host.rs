//! `tc_from_host`: tcx egress of `weir0`, where the host stack routes every pod CIDR (this node's
//! and each other node's). Host-stack traffic for a local pod (node-originated, forwarded, or a
//! Service flow after DNAT) is judged by the pod's ingress (the node's own addresses always pass)
//! and, when a local pod sent it through a Service, by that pod's egress, on the real backend;
//! traffic for another node's pod is sent on to that node, a local sender's egress judged first.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use weir_common::{
    counters::{DIR_FROM_POD, DIR_TO_POD},
    ct::{CT_F_FROM_NODE, CT_F_VIA_HOST},
    endpoint::ENDPOINT_F_READY,
    events::AT_FROM_HOST,
    EndpointInfo, NodeConfig, Reason,
};

use crate::{
    counters::count,
    ct::{self, known, Known},
    flow::{self, Flow},
    forward::{forward_remote, through_tunnel_device, NotSent},
    node::{config, endpoint, is_host_ip, remote_node},
    packet::{self, EthIpv4, ETH_P_IP},
    policy,
    verdict::{deny, drop_with, DROP},
};

/// tcx egress of `weir0`: host-stack traffic routed to a pod CIDR, this node's or another's.
#[inline(always)]
pub fn from_host(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return DROP;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return from_host_to_remote(ctx, &hdr);
    };
    if peer.flags & ENDPOINT_F_READY == 0 {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, reason),
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

/// Host-stack traffic for another node's pod: node-originated, forwarded, or a local pod's
/// Service traffic DNATed to a remote backend, whose egress is judged here, after DNAT.
#[inline(always)]
fn from_host_to_remote(ctx: &TcContext, hdr: &EthIpv4) -> i32 {
    let Some(remote) = remote_node(hdr.daddr) else {
        return drop_with(ctx, 0, DIR_TO_POD, Reason::DropNoRoute);
    };
    let cfg = config();
    let src = endpoint(hdr.saddr_be());
    let counted_on = src.map_or(0, |s| s.host_ifindex);
    if let Some(src) = &src {
        let flow = match flow::parse(ctx, hdr) {
            Ok(flow) => flow,
            Err(reason) => return drop_with(ctx, counted_on, DIR_FROM_POD, reason),
        };
        if let Err(reason) = admit_egress_via_host(&flow, src, &cfg) {
            return deny(ctx, reason, Some(src), None);
        }
    }
    // Too big for the path once wrapped: the tunnel device takes it and records the path's MTU
    // in the route the packet took, which a local socket of the node's adapts to. (A pod's own
    // packets to other nodes' pods are answered in `tc_from_pod`; its Service traffic through
    // the stack is not told: the kernel's forwarding does not use learned path MTUs.)
    let sent = forward_remote(ctx, &cfg, hdr, &remote).or_else(|not_sent| match not_sent {
        NotSent::Drop(reason) => Err(reason),
        NotSent::TooBig { .. } => through_tunnel_device(ctx, &cfg, &remote, true),
    });
    match sent {
        Ok(verdict) => {
            count(ctx, counted_on, DIR_FROM_POD, Reason::ForwardRemote);
            verdict
        }
        Err(reason) => drop_with(ctx, counted_on, DIR_FROM_POD, reason),
    }
}

/// May a local pod's packet, DNATed by the host stack, leave for another node? Its replies are
/// marked to go back through the host stack, which undoes the DNAT.
#[inline(always)]
fn admit_egress_via_host(flow: &Flow, src: &EndpointInfo, cfg: &NodeConfig) -> Result<(), Reason> {
    let now = ct::now();
    if !matches!(known(flow, cfg, now), Known::Unknown) {
        return Ok(());
    }
    policy::judge(&flow.key, Some(src), None, AT_FROM_HOST)?;
    ct::open(&flow.key, CT_F_VIA_HOST, cfg.policy_epoch, now);
    Ok(())
}

/// May this packet from the host stack enter `peer`? Opens or refreshes its flow when it may.
#[inline(always)]
fn admit_from_host(flow: &Flow, hdr: &EthIpv4, peer: &EndpointInfo) -> Result<(), Reason> {
    let cfg = config();
    let now = ct::now();
    if !matches!(known(flow, &cfg, now), Known::Unknown) {
        return Ok(());
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
    policy::judge(&flow.key, src.as_ref(), Some(peer), AT_FROM_HOST)?;
    ct::open(&flow.key, CT_F_VIA_HOST, cfg.policy_epoch, now);
    Ok(())
}
