//! `tc_from_uplink`: tcx ingress of the node's uplink (native routing): another node's pod's
//! packets for a local pod, arriving on the shared segment, go straight to the pod (see
//! [`crate::to_pod`]); everything else the node receives passes untouched.

use aya_ebpf::programs::TcContext;

use crate::{
    node::{endpoint, remote_node},
    packet::{self, EthIpv4, ETH_P_IP},
    to_pod,
    verdict::PASS,
};

#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return PASS;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return PASS;
    };
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return PASS;
    };
    if remote_node(hdr.saddr).is_none() {
        return PASS;
    }
    to_pod::deliver(ctx, &hdr, &peer)
}
