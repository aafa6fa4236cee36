//! Weir's VXLAN on the wire, and encapsulation in eBPF.
//!
//! A packet for another node's pod is wrapped here and sent straight out of the uplink (or
//! whichever device the route to that node leaves by), instead of through `weir-vxlan`: that
//! skips the tunnel device's transmit, the outer packet's IP output and its netfilter hooks.
//! The result is what the tunnel device would have sent (same outer addresses, port, VNI, TTL,
//! DF and ECN), so the receiving node cannot tell, and GSO packets stay GSO: the encapsulation
//! flags make the kernel segment them as UDP tunnel packets, as it does the device's.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup, BPF_ADJ_ROOM_ENCAP_L2_SHIFT,
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc},
    programs::TcContext,
};
use weir_common::{
    config::{TUNNEL_DEV_MAC, TUNNEL_SRC_MAC, VXLAN_PORT},
    NodeConfig, RemoteNode,
};

use crate::{
    flow::{IPPROTO_TCP, IPPROTO_UDP},
    forward::redirect_neigh_v4,
    packet::{self, EthIpv4, Ipv4Hdr, AF_INET, ETH_HLEN, ETH_P_IP, IPV4_HLEN, IP_DF},
    verdict::DROP,
};

pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
/// Outer IPv4 (no options), UDP, VXLAN and the inner Ethernet header: what encapsulation adds
/// after the outer Ethernet header, and decapsulation removes.
pub const ENCAP_LEN: usize = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
/// VXLAN flags: the VNI is valid (RFC 7348), and nothing else may be set.
pub const VXLAN_FLAG_VNI: u8 = 0x08;

/// The outer TTL (the kernel's default IP TTL, as the tunnel device uses).
pub const TUNNEL_TTL: u8 = 64;
/// Outer UDP source ports, chosen per inner flow so that the underlay can spread flows (the
/// kernel's default ephemeral range, which the tunnel device uses too).
const SPORT_MIN: u32 = 32768;
const SPORT_MAX: u32 = 60999;

/// The UDP and VXLAN headers after an outer IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpVxlan {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
    pub flags: u8,
    pub reserved: [u8; 3],
    /// VNI (3 bytes) and a reserved byte.
    pub vni: [u8; 4],
}

/// Everything encapsulation writes after the outer Ethernet header, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct EncapHeaders {
    outer: Ipv4Hdr,
    udp_vxlan: UdpVxlan,
    inner_dst: [u8; 6],
    inner_src: [u8; 6],
    inner_proto: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<EncapHeaders>() == ENCAP_LEN);

/// What [`encapsulate`] did with a packet.
pub enum Wrapped {
    /// Wrapped and sent: the tc verdict.
    Sent(i32),
    /// Left untouched: wrapped, it (or for a GSO packet, each of its segments) would not fit the
    /// route to the other node, whose MTU allows a pod's packets of `mtu` bytes at most.
    TooBig { mtu: u16 },
    /// Left untouched, for the tunnel device: no route to the node, a packet that is already
    /// encapsulated or too large to wrap whole, or a kernel that refuses a step.
    Declined,
}

/// Wrap the packet `hdr` heads for `remote` and send it there, or say why not (see [`Wrapped`]).
#[inline(always)]
pub fn encapsulate(
    ctx: &TcContext,
    cfg: &NodeConfig,
    hdr: &EthIpv4,
    remote: &RemoteNode,
) -> Wrapped {
    let skb = ctx.skb.skb;
    let gso = packet::is_gso(ctx);
    let outer_len = ctx.len() as usize - ETH_HLEN + ENCAP_LEN;
    if outer_len > usize::from(u16::MAX) {
        return Wrapped::Declined;
    }
    // The largest outer packet this one becomes on the wire: itself, or each segment of a GSO
    // packet. Checked against the route's MTU, which PMTU discovery lowers when a router between
    // the nodes takes less than the uplink does.
    let wire_len = if gso {
        segment_len(ctx, hdr).map_or(0, |len| len + ENCAP_LEN)
    } else {
        outer_len
    };
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_UDP;
    fib.dport = VXLAN_PORT.to_be();
    fib.__bindgen_anon_1.tot_len = wire_len as u16;
    fib.ifindex = cfg.uplink_ifindex;
    fib.__bindgen_anon_4.ipv4_dst = remote.node_ip_be;
    // SAFETY: `fib` lives on the stack for the call and its size is passed with it. SRC asks for
    // the route's preferred source address, the one the tunnel device would have used.
    let rc = unsafe {
        fib_lookup(
            skb.cast(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC,
        )
    };
    if rc == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        // SAFETY: the lookup reports the route's MTU in the union's other member.
        let route_mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
        return Wrapped::TooBig {
            mtu: route_mtu.saturating_sub(ENCAP_LEN as u16),
        };
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Wrapped::Declined;
    }
    // SAFETY: plain helper call; the hash is of the inner flow.
    let hash = unsafe { bpf_get_hash_recalc(skb) };
    let sport =
        (((u64::from(hash) * u64::from(SPORT_MAX - SPORT_MIN)) >> 32) as u32 + SPORT_MIN) as u16;
    // SAFETY: reading the union members the lookup filled for AF_INET.
    let (saddr_be, nexthop_be) =
        unsafe { (fib.__bindgen_anon_3.ipv4_src, fib.__bindgen_anon_4.ipv4_dst) };
    let egress_ifindex = fib.ifindex;

    let mut headers = EncapHeaders {
        outer: Ipv4Hdr {
            ver_ihl: 0x45,
            tos: ecn_encapsulate(hdr.tos),
            tot_len: (outer_len as u16).to_be_bytes(),
            id: [0, 0],
            // DF: the route's MTU was checked above; a router that takes less tells this node.
            frag_off: IP_DF.to_be_bytes(),
            ttl: TUNNEL_TTL,
            protocol: IPPROTO_UDP,
            check: [0, 0],
            saddr: saddr_be.to_ne_bytes(),
            daddr: remote.node_ip_be.to_ne_bytes(),
        },
        udp_vxlan: UdpVxlan {
            sport: sport.to_be_bytes(),
            dport: VXLAN_PORT.to_be_bytes(),
            len: ((outer_len - IPV4_HLEN) as u16).to_be_bytes(),
            // Zero: no UDP checksum over IPv4, as the tunnel device sends by default.
            check: [0, 0],
            flags: VXLAN_FLAG_VNI,
            reserved: [0; 3],
            vni: {
                let [_, a, b, c] = cfg.vni.to_be_bytes();
                [a, b, c, 0]
            },
        },
        inner_dst: TUNNEL_DEV_MAC,
        inner_src: TUNNEL_SRC_MAC,
        inner_proto: ETH_P_IP.to_be_bytes(),
    };
    headers.outer.check = headers.outer.checksum().to_be_bytes();

    // Room after the outer Ethernet header; the flags record the new headers (inner offsets,
    // UDP tunnel GSO type, encapsulation) so segmentation and checksum offload stay right.
    // FIXED_GSO keeps the segment size, checked against the route above.
    let flags = u64::from(
        BPF_F_ADJ_ROOM_FIXED_GSO
            | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
            | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
    ) | ((ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    if ctx
        .adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        return Wrapped::Declined;
    }
    // The packet has grown: from here on it cannot go back to the tunnel device.
    if ctx.store(ETH_HLEN, &headers, 0).is_err() {
        return Wrapped::Sent(DROP);
    }
    // The kernel writes the outer Ethernet header for the next hop.
    Wrapped::Sent(redirect_neigh_v4(egress_ifindex, nexthop_be))
}

/// The IP length of each segment of GSO packet `hdr` (its headers and one segment's payload), or
/// `None` for a kind of GSO packet this does not size (then the route's MTU is not checked).
#[inline(always)]
fn segment_len(ctx: &TcContext, hdr: &EthIpv4) -> Option<usize> {
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    let ihl = usize::from(hdr.ver_ihl & 0x0f) * 4;
    let l4_len = match hdr.protocol {
        IPPROTO_TCP => usize::from(packet::load::<u8>(ctx, ETH_HLEN + ihl + 12)? >> 4) * 4,
        IPPROTO_UDP => UDP_HLEN,
        _ => return None,
    };
    Some(ihl + l4_len + gso_size)
}

/// The outer TOS: ECN copied from the inner packet, CE sent as ECT(0) (RFC 6040's normal mode,
/// the kernel's `INET_ECN_encapsulate`); the rest zero, as the tunnel device sends.
#[inline(always)]
fn ecn_encapsulate(inner_tos: u8) -> u8 {
    match inner_tos & 0b11 {
        0b11 => 0b10,
        ecn => ecn,
    }
}
