//! Weir's eBPF datapath: the entry points, one module each, over small libraries.
//!
//! Every packet a pod receives was put on its veth, or straight into its interface, by one of
//! these programs (a redirect after ingress policy), so the veth's egress needs no program: one
//! attach per pod, which halves what CNI ADD waits for the kernel.
//!
//! Attach points (a module each):
//! - [`from_pod`] — `tc_from_pod`, ingress of each pod's host-side veth: everything a pod sends.
//! - [`from_host`] — `tc_from_host`, egress of `weir0`, where the node routes every pod CIDR:
//!   host-stack traffic for local pods and for other nodes' pods.
//! - [`from_tunnel`] — `tc_from_tunnel`, ingress of `weir-vxlan` (VXLAN routing).
//! - [`from_uplink`] — `tc_from_uplink`, ingress of the uplink (native routing; with VXLAN, the
//!   tunnel datagrams it decapsulates).
//! - [`icmp`] — `tc_frag_needed`, tail-called by `tc_from_pod`: "fragmentation needed" for a pod.
//! - [`after_dnat`] — `sk_egress_after_dnat`, a socket filter the agent's iptables run: pods'
//!   Service traffic whose backend is not a pod.
//!
//! Libraries: [`node`] (what the node knows), [`flow`] (a packet's 5-tuple), [`ct`] (connection
//! tracking), [`policy`] (the verdict of a new flow), [`forward`] (sending on), [`to_pod`] (another
//! node's packet for a local pod), [`vxlan`] (VXLAN's wire format and encapsulation), [`icmp`] (errors sent to pods), [`arp`],
//! [`packet`], [`counters`], [`verdict`], [`maps`].
//!
//! Where policy is judged, so that it always sees the real peers and ports:
//! - pod → local pod, pod IP to pod IP: at the sender's veth, egress and ingress both; the packet
//!   is then redirected straight into the receiver (see [`to_pod::into_pod`]).
//! - pod → another node's pod: egress at the sender's veth, which sends it straight to that node;
//!   ingress on the receiving node, from the host stack, the uplink or the tunnel.
//! - pod → Service ClusterIP: deferred (the host stack has yet to DNAT it) and judged where the
//!   flow leaves for its real backend: at `weir0` for a pod backend, by the socket filter for any
//!   other.
//! - pod → anything else (the node, the outside): egress at the sender's veth.
//! - host stack → local pod: ingress at `weir0`; the node's own addresses are always allowed.
//! Replies of a tracked flow pass both ways; a forward packet judged under an older policy epoch is
//! judged again, so a policy change applies to flows that are already open.
#![no_std]
#![no_main]
#![deny(warnings)]

mod after_dnat;
mod arp;
mod counters;
mod ct;
mod events;
mod flow;
mod forward;
mod from_host;
mod from_pod;
mod from_tunnel;
mod from_uplink;
mod icmp;
mod maps;
mod node;
mod packet;
mod policy;
mod to_pod;
mod verdict;
mod vxlan;

use aya_ebpf::{
    macros::{classifier, socket_filter},
    programs::{SkBuffContext, TcContext},
};

#[classifier]
pub fn tc_from_pod(ctx: TcContext) -> i32 {
    from_pod::from_pod(&ctx)
}

#[classifier]
pub fn tc_from_host(ctx: TcContext) -> i32 {
    from_host::from_host(&ctx)
}

#[classifier]
pub fn tc_from_tunnel(ctx: TcContext) -> i32 {
    from_tunnel::from_tunnel(&ctx)
}

#[classifier]
pub fn tc_from_uplink(ctx: TcContext) -> i32 {
    from_uplink::from_uplink(&ctx)
}

/// Tail-called by `tc_from_pod` only (see `icmp`), never attached.
#[classifier]
pub fn tc_frag_needed(ctx: TcContext) -> i32 {
    icmp::frag_needed(&ctx)
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
