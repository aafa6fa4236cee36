//! `tc_from_pod`: tc ingress of each pod's host-side veth, everything a pod sends. Answers ARP
//! for the gateway, drops spoofed packets and pods' packets to a node's tunnel port, judges new
//! flows (egress and, for a local pod, its ingress too) and sends them on: straight to a local pod,
//! straight to another node, or up the host stack (the node, Services, the outside). A flow to a
//! Service ClusterIP is deferred: judged after DNAT, where its real backend is known.

use aya_ebpf::programs::TcContext;
use weir_common::{
    config::{NODE_F_VXLAN, VXLAN_PORT},
    counters::DIR_FROM_POD,
    ct::{CT_F_DEFERRED, CT_F_VIA_HOST},
    endpoint::ENDPOINT_F_READY,
    events::AT_FROM_POD,
    CtValue, NodeConfig, Reason,
};

use crate::{
    arp,
    counters::count,
    ct::{self, is_related, Hit},
    flow::{self, Flow, IPPROTO_UDP},
    forward::deliver,
    node::{config, endpoint, in_prefix, is_host_ip, is_host_port, is_node_address},
    packet::{self, EthIpv4, ETH_P_ARP, ETH_P_IP},
    policy,
    verdict::{deny, drop_with, PASS},
};

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
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, ifindex, DIR_FROM_POD, reason),
    };
    let cfg = config();
    if is_to_tunnel_port(&flow, &cfg) {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropTunnelFromPod);
    }
    let peer = endpoint(hdr.daddr_be()).filter(|p| p.flags & ENDPOINT_F_READY != 0);
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
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg);
                }
                // Opened under an older policy: judged again below.
            }
            Hit::Reply(value) => {
                ct::touch(value, &flow, true, now);
                // SAFETY: as above.
                let via_host = unsafe { (*value).flags } & CT_F_VIA_HOST != 0;
                return deliver(ctx, ifindex, &hdr, peer.as_ref(), via_host, &cfg);
            }
            Hit::Miss => {
                if is_related(&flow, &cfg, now) {
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg);
                }
            }
        }
    }

    // A new flow (or one to judge again). To a Service, or to a pod's hostPort on this node:
    // judged once the host stack has DNATed it, on the pod (or whatever) it really reaches.
    if in_prefix(hdr.daddr, cfg.service_cidr_be, cfg.service_prefix_len)
        || is_host_port(hdr.daddr_be(), flow.key.proto, flow.key.dport)
    {
        ct::open(&flow.key, CT_F_DEFERRED, cfg.policy_epoch, now);
        count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
        return PASS;
    }
    if let Err(reason) = policy::judge(&flow.key, Some(&me), peer.as_ref(), AT_FROM_POD) {
        return deny(ctx, reason, Some(&me), peer.as_ref());
    }
    ct::open(&flow.key, 0, cfg.policy_epoch, now);
    deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg)
}

/// Is this a pod's packet to a node's VXLAN port? A pod that could reach it could hand the
/// tunnel a packet claiming any identity (iptables drops the same through a Service).
#[inline(always)]
fn is_to_tunnel_port(flow: &Flow, cfg: &NodeConfig) -> bool {
    if cfg.flags & NODE_F_VXLAN == 0
        || flow.key.proto != IPPROTO_UDP
        || flow.key.dport != VXLAN_PORT.to_be_bytes()
    {
        return false;
    }
    let daddr_be = u32::from_ne_bytes(flow.key.daddr);
    is_host_ip(daddr_be) || is_node_address(daddr_be)
}
