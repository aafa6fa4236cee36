//! Weir's eBPF datapath. Entry points only; the logic lives in the modules below.
//!
//! Every packet a pod receives was put on its veth by one of these programs (a redirect after
//! ingress policy), so the veth's egress needs no program: one attach per pod, which halves what
//! CNI ADD waits for the kernel.
//!
//! Four tc programs, named by where the packet comes from:
//! - `tc_from_pod`: tcx ingress of each pod's host-side veth. Answers ARP for the gateway, drops
//!   spoofed packets, delivers pod → local pod straight to the destination veth, and hands the rest
//!   to the host stack (node, Services, other nodes, the outside world).
//! - `tc_from_host`: tcx egress of `weir0`, the device the node routes every pod CIDR to (its own
//!   and each other node's). It delivers host-stack traffic (node → pod, forwarded and Service
//!   traffic) to the right veth, or sends it on to the pod's node, so the node needs one route per
//!   node instead of one per pod.
//! - `tc_from_tunnel`: tcx ingress of `weir-vxlan` (VXLAN routing only): traffic from other nodes'
//!   pods, delivered straight to the local pod's veth.
//! - `tc_from_uplink`: tcx ingress of the node's uplink (native routing only): the same for other
//!   nodes' pods' packets arriving on the shared segment; everything else passes untouched.
//!
//! And one socket filter, run by the agent's iptables rules (`-m bpf`, pinned):
//! - `sk_egress_after_dnat`: a pod's egress policy on its Service traffic whose backend is not a
//!   pod (the node, another node, the outside), after DNAT and before masquerading.
#![no_std]
#![no_main]
#![deny(warnings)]

mod after_dnat;
mod arp;
mod counters;
mod ct;
mod flow;
mod maps;
mod packet;
mod policy;
mod route;

use aya_ebpf::{
    macros::{classifier, socket_filter},
    programs::{SkBuffContext, TcContext},
};

#[classifier]
pub fn tc_from_pod(ctx: TcContext) -> i32 {
    route::from_pod(&ctx)
}

#[classifier]
pub fn tc_from_host(ctx: TcContext) -> i32 {
    route::from_host(&ctx)
}

#[classifier]
pub fn tc_from_tunnel(ctx: TcContext) -> i32 {
    route::from_other_node(&ctx, false)
}

#[classifier]
pub fn tc_from_uplink(ctx: TcContext) -> i32 {
    route::from_other_node(&ctx, true)
}

#[socket_filter]
pub fn sk_egress_after_dnat(ctx: SkBuffContext) -> i64 {
    after_dnat::judge(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
