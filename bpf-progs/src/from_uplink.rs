//! `tc_from_uplink`: tcx ingress of the node's uplink. Native routing: another node's pod's
//! packets for a local pod, arriving on the shared segment, go straight to the pod (see
//! [`crate::to_pod`]). VXLAN routing: a tunnel datagram that is one packet (not GSO) for a local
//! pod is decapsulated here and goes straight to the pod, skipping the outer IP and UDP receive,
//! netfilter, and the tunnel device's second receive pass; everything else the node receives
//! passes untouched (GSO tunnel packets included: see [`decapsulate`]).

use aya_ebpf::{bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, programs::TcContext};
use weir_common::config::{NODE_F_VXLAN, VXLAN_PORT, VXLAN_VNI};

use crate::{
    flow::IPPROTO_UDP,
    node::{config, endpoint, is_host_ip, remote_node, tunnel_sender_ok},
    packet::{self, EthIpv4, ETH_HLEN, ETH_P_IP, IPV4_HLEN},
    to_pod,
    verdict::{DROP, PASS},
    vxlan::{UdpVxlan, ENCAP_LEN, UDP_HLEN, VXLAN_FLAG_VNI, VXLAN_HLEN},
};

#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return PASS;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return PASS;
    };
    if config().flags & NODE_F_VXLAN != 0 {
        return decapsulate(ctx, &hdr);
    }
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return PASS;
    };
    if remote_node(hdr.saddr).is_none() {
        return PASS;
    }
    to_pod::deliver(ctx, &hdr, &peer)
}

/// A tunnel datagram for a local pod, decapsulated and delivered as `tc_from_tunnel` would have,
/// with the same checks first (Weir's VNI, the outer source another node, the inner source that
/// node or one of its pods, the outer destination this node); anything else, and every packet
/// these checks refuse, passes to the tunnel device, which receives and judges it as before.
///
/// Only packets that are not GSO: this kernel cannot mark a GSO packet as no longer tunnelled
/// (`bpf_skb_adjust_room` has no flag to decapsulate UDP, and shrinking keeps the packet's UDP
/// tunnel GSO type), which would be wrong for a pod that forwards it. The inner checksums stay
/// to be checked by the pod: the shrink resets a checksum the NIC vouched for (which covered the
/// outer packet only).
#[inline(always)]
fn decapsulate(ctx: &TcContext, outer: &EthIpv4) -> i32 {
    if packet::is_gso(ctx) {
        return PASS;
    }
    // No options, not a fragment (MF clear, offset 0; DF may be set).
    if outer.ver_ihl != 0x45
        || outer.protocol != IPPROTO_UDP
        || u16::from_be_bytes(outer.frag_off) & 0x3fff != 0
    {
        return PASS;
    }
    let Some(udp) = packet::load::<UdpVxlan>(ctx, ETH_HLEN + IPV4_HLEN) else {
        return PASS;
    };
    let vni = u32::from_be_bytes([0, udp.vni[0], udp.vni[1], udp.vni[2]]);
    if udp.dport != VXLAN_PORT.to_be_bytes() || udp.flags != VXLAN_FLAG_VNI || vni != VXLAN_VNI {
        return PASS;
    }
    let inner_at = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;
    let Some(inner) = packet::load::<EthIpv4>(ctx, inner_at) else {
        return PASS;
    };
    if inner.eth_proto != ETH_P_IP.to_be_bytes() {
        return PASS;
    }
    let Some(peer) = endpoint(inner.daddr_be()) else {
        return PASS;
    };
    if !is_host_ip(outer.daddr_be()) || !tunnel_sender_ok(outer.saddr_be(), inner.saddr) {
        return PASS;
    }
    if ctx
        .adjust_room(-(ENCAP_LEN as i32), BPF_ADJ_ROOM_MAC, 0)
        .is_err()
    {
        return PASS;
    }
    // The outer Ethernet header (its EtherType IPv4, as the inner one's) now fronts the inner
    // IPv4 packet, which must not go up the uplink's stack as if it had come in plain.
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    to_pod::deliver(ctx, &hdr, &peer)
}
