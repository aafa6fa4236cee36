//! ICMP errors the datapath sends itself, where a router on the pod's path would.

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, helpers::bpf_skb_change_tail,
    programs::TcContext,
};
use weir_common::maps::TAIL_FRAG_NEEDED;

use crate::{
    flow::{is_icmp_error, ICMP_DEST_UNREACH, IPPROTO_ICMP},
    maps::TAIL_CALLS,
    node::{config, endpoint},
    packet::{self, EthIpv4, Ipv4Hdr, ETH_HLEN, IPV4_HLEN, IP_DF},
    to_pod,
    verdict::DROP,
};

/// Destination unreachable's code for "fragmentation needed and DF set".
const ICMP_FRAG_NEEDED: u8 = 4;
/// What the answer quotes of the packet it is about: the IPv4 header (without options) and the
/// first 20 bytes after it. RFC 792 asks for 8 (enough for the sender to find its socket; routers
/// may send more, RFC 1812); 20 keep a TCP or UDP checksum inside the quote, which the kernel
/// needs of a packet with checksum offload pending (see [`frag_needed`]).
const QUOTE_L4_LEN: usize = 20;
const QUOTE_LEN: usize = IPV4_HLEN + QUOTE_L4_LEN;
/// The kernel's TOS for ICMP errors (`IPTOS_PREC_INTERNETCONTROL`).
const TOS_INTERNETCONTROL: u8 = 0xc0;

const ICMP_HLEN: usize = 8;

/// May `hdr`'s packet be answered with "fragmentation needed"? Only when it asked not to be
/// fragmented (DF), has no IP options (so it can be quoted whole) and is not an ICMP error itself.
#[inline(always)]
pub fn frag_needed_allowed(ctx: &TcContext, hdr: &EthIpv4) -> bool {
    if hdr.ver_ihl != 0x45 || u16::from_be_bytes(hdr.frag_off) & IP_DF == 0 {
        return false;
    }
    hdr.protocol != IPPROTO_ICMP
        || packet::load::<u8>(ctx, ETH_HLEN + IPV4_HLEN).is_some_and(|t| !is_icmp_error(t))
}

/// Answer `hdr`'s packet, sent by a local pod and too big for its path, with "fragmentation
/// needed" and the `mtu` the path takes (RFC 1191), as the router that cannot forward it would.
/// Check [`frag_needed_allowed`] first. The answer is made by another program, tail-called, with
/// a stack of its own (`tc_from_pod` has little of its 512 bytes to spare); `mtu` goes to it in
/// the packet's control block. Returns the tc verdict when the tail call fails (no program in
/// the slot: an agent restarting): drop.
#[inline(always)]
pub fn send_frag_needed(ctx: &TcContext, mtu: u16) -> i32 {
    // SAFETY: `skb` is the valid context pointer; tc programs may write the control block,
    // which the tail-called program reads. The tail call does not return when it succeeds.
    unsafe {
        (*ctx.skb.skb).cb[0] = u32::from(mtu);
        TAIL_CALLS.tail_call(ctx, TAIL_FRAG_NEEDED);
    }
    DROP
}

/// `tc_frag_needed`: turn the packet into "fragmentation needed" to the pod that sent it, with
/// the MTU [`send_frag_needed`] left in the control block, from the pod's gateway, and hand it
/// to the pod. Returns the tc verdict; the packet itself is gone either way.
///
/// The answer is made in place: the packet is cut to the quote's length and room for the new
/// headers is made in front of its own, which so become the quote. A TCP or UDP packet may still
/// carry "checksum offload pending" (its checksum's position); the kernel refuses to cut it
/// shorter than that, or to deliver it while that position lies beyond the IP length, hence a
/// quote long enough to hold it. The pod then takes the answer's checksum as checked.
#[inline(always)]
pub fn frag_needed(ctx: &TcContext) -> i32 {
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
    let mtu = unsafe { (*ctx.skb.skb).cb[0] } as u16;
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    // The sender was checked by `tc_from_pod` before the tail call.
    let Some(me) = endpoint(hdr.saddr_be()) else {
        return DROP;
    };
    if !frag_needed_allowed(ctx, &hdr) {
        return DROP;
    }
    let cfg = config();
    // The quote: the pod's IP header (its TTL decremented, its checksum patched) and what
    // followed, as they stand in the packet.
    let Some(quote) = packet::load::<[u8; QUOTE_LEN]>(ctx, ETH_HLEN) else {
        return DROP;
    };
    let mut ip = Ipv4Hdr {
        ver_ihl: 0x45,
        tos: TOS_INTERNETCONTROL,
        tot_len: ((IPV4_HLEN + ICMP_HLEN + QUOTE_LEN) as u16).to_be_bytes(),
        id: [0, 0],
        frag_off: [0, 0],
        ttl: 64,
        protocol: IPPROTO_ICMP,
        check: [0, 0],
        saddr: cfg.gateway_ip_be.to_ne_bytes(),
        daddr: hdr.saddr,
    };
    ip.check = ip.checksum().to_be_bytes();
    let mut quoted = 0;
    for word in quote.chunks_exact(2) {
        quoted += packet::word(word[0], word[1]);
    }
    let [mtu_hi, mtu_lo] = mtu.to_be_bytes();
    let check = packet::fold_checksum(
        packet::word(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED) + packet::word(mtu_hi, mtu_lo) + quoted,
    );
    let [check_hi, check_lo] = check.to_be_bytes();
    let icmp = [
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        check_hi,
        check_lo,
        0,
        0,
        mtu_hi,
        mtu_lo,
    ];
    let room = (IPV4_HLEN + ICMP_HLEN) as i32;
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program. Cutting
    // also clears the packet's GSO state.
    let made = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + QUOTE_LEN) as u32, 0) } == 0
        && ctx.adjust_room(room, BPF_ADJ_ROOM_MAC, 0).is_ok()
        && packet::store(ctx, ETH_HLEN + IPV4_HLEN, &icmp).is_some()
        && packet::store(ctx, ETH_HLEN, &ip).is_some()
        && packet::set_macs(ctx, me.pod_mac, me.host_mac).is_some();
    if !made {
        return DROP;
    }
    to_pod::into_pod(&me)
}
