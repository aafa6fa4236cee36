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
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc},
    programs::TcContext,
};
use weir_common::{
    config::{TUNNEL_DEV_MAC, TUNNEL_SRC_MAC, VXLAN_PORT},
    NodeConfig, RemoteNode,
};

use crate::{
    forward::redirect_neigh_v4,
    packet::{self, EthIpv4, AF_INET, ETH_HLEN, ETH_P_IP},
    verdict::DROP,
};

pub const IPPROTO_UDP: u8 = 17;
pub const IPV4_HLEN: usize = 20;
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
/// IP's DF bit in the fragment field: the pod MTU leaves room for VXLAN.
const IP_DF: u16 = 0x4000;

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
struct Encap {
    ver_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
    udp_vxlan: UdpVxlan,
    inner_dst: [u8; 6],
    inner_src: [u8; 6],
    inner_proto: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Encap>() == ENCAP_LEN);

/// Wrap the packet `hdr` heads for `remote` and send it there. `None` when this packet is left
/// to the tunnel device, untouched, to handle as it did before this path existed: no route to
/// the node, a packet that would not fit the route's MTU once wrapped, a packet that is already
/// encapsulated, or a kernel that refuses a step.
#[inline(always)]
pub fn encapsulate(
    ctx: &TcContext,
    cfg: &NodeConfig,
    hdr: &EthIpv4,
    remote: &RemoteNode,
) -> Option<i32> {
    let skb = ctx.skb.skb;
    let gso = packet::is_gso(ctx);
    let outer_len = ctx.len() as usize - ETH_HLEN + ENCAP_LEN;
    if outer_len > usize::from(u16::MAX) {
        return None;
    }
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_UDP;
    fib.dport = VXLAN_PORT.to_be();
    // A single packet is checked against the route's MTU as it will be sent; a GSO packet's
    // segments are sized by the pod's MTU, which leaves room for the encapsulation.
    fib.__bindgen_anon_1.tot_len = if gso { 0 } else { outer_len as u16 };
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
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return None;
    }
    // SAFETY: plain helper call; the hash is of the inner flow.
    let hash = unsafe { bpf_get_hash_recalc(skb) };
    let sport =
        (((u64::from(hash) * u64::from(SPORT_MAX - SPORT_MIN)) >> 32) as u32 + SPORT_MIN) as u16;
    // SAFETY: reading the union members the lookup filled for AF_INET.
    let (saddr_be, nexthop_be) =
        unsafe { (fib.__bindgen_anon_3.ipv4_src, fib.__bindgen_anon_4.ipv4_dst) };
    let egress_ifindex = fib.ifindex;

    let mut encap = Encap {
        ver_ihl: 0x45,
        tos: ecn_encapsulate(hdr.tos),
        tot_len: (outer_len as u16).to_be_bytes(),
        id: [0, 0],
        frag_off: IP_DF.to_be_bytes(),
        ttl: TUNNEL_TTL,
        protocol: IPPROTO_UDP,
        check: [0, 0],
        saddr: saddr_be.to_ne_bytes(),
        daddr: remote.node_ip_be.to_ne_bytes(),
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
    encap.check = ipv4_checksum(&encap).to_be_bytes();

    // Room after the outer Ethernet header; the flags record the new headers (inner offsets,
    // UDP tunnel GSO type, encapsulation) so segmentation and checksum offload stay right.
    // FIXED_GSO keeps the segment size: the pod's MTU already leaves room for the headers.
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
        return None;
    }
    // The packet has grown: from here on it cannot go back to the tunnel device.
    if ctx.store(ETH_HLEN, &encap, 0).is_err() {
        return Some(DROP);
    }
    // The kernel writes the outer Ethernet header for the next hop.
    Some(redirect_neigh_v4(egress_ifindex, nexthop_be))
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

/// The IPv4 header checksum of the outer header at the start of `encap`.
#[inline(always)]
fn ipv4_checksum(encap: &Encap) -> u16 {
    let words = [
        u16::from_be_bytes([encap.ver_ihl, encap.tos]),
        u16::from_be_bytes(encap.tot_len),
        u16::from_be_bytes(encap.id),
        u16::from_be_bytes(encap.frag_off),
        u16::from_be_bytes([encap.ttl, encap.protocol]),
        u16::from_be_bytes([encap.saddr[0], encap.saddr[1]]),
        u16::from_be_bytes([encap.saddr[2], encap.saddr[3]]),
        u16::from_be_bytes([encap.daddr[0], encap.daddr[1]]),
        u16::from_be_bytes([encap.daddr[2], encap.daddr[3]]),
    ];
    let mut sum = 0u32;
    for word in words {
        sum += u32::from(word);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
