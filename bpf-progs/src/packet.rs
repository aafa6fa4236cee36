//! Header access through `bpf_skb_load_bytes`/`bpf_skb_store_bytes`.
//!
//! The programs copy the headers they need onto the stack in one helper call instead of holding
//! pointers into packet data: LLVM sometimes spills such pointers as 32-bit values, which the
//! verifier rejects, and a 34-byte copy costs less than a second verifier fight per change.

use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
/// The kernel's address family of IPv4, as FIB lookups and neighbour redirects take it.
pub const AF_INET: u8 = 2;
pub const IPV4_HLEN: usize = 20;
/// IP's DF bit in the fragment field.
pub const IP_DF: u16 = 0x4000;

/// Offsets from the start of the frame.
pub const OFF_ETH_DST: usize = 0;
/// From the TTL to the end of the header checksum: ttl, protocol, checksum.
pub const OFF_IP_TTL: usize = ETH_HLEN + 8;

/// Ethernet header followed by a minimal IPv4 header, as copied out of the packet.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthIpv4 {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub eth_proto: [u8; 2],
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

// Byte arrays only, so `repr(C)` adds no padding: the struct is the 34 bytes on the wire.
const _: () = assert!(core::mem::size_of::<EthIpv4>() == 34);

impl EthIpv4 {
    /// Source address as a map key expects it: the wire bytes read as a native u32.
    #[inline(always)]
    pub fn saddr_be(&self) -> u32 {
        u32::from_ne_bytes(self.saddr)
    }
    #[inline(always)]
    pub fn daddr_be(&self) -> u32 {
        u32::from_ne_bytes(self.daddr)
    }
}

/// An IPv4 header without options, as the programs write it (encapsulation, ICMP errors).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == IPV4_HLEN);

impl Ipv4Hdr {
    /// The sum of the header's words, its checksum included, for [`fold_checksum`].
    #[inline(always)]
    pub fn sum(&self) -> u32 {
        word(self.ver_ihl, self.tos)
            + word(self.tot_len[0], self.tot_len[1])
            + word(self.id[0], self.id[1])
            + word(self.frag_off[0], self.frag_off[1])
            + word(self.ttl, self.protocol)
            + word(self.check[0], self.check[1])
            + words4(self.saddr)
            + words4(self.daddr)
    }

    /// The header checksum, over every field but the checksum itself.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        fold_checksum(self.sum() - word(self.check[0], self.check[1]))
    }
}

/// Bytes `hi` and `lo` as a big-endian 16-bit word, to sum for [`fold_checksum`]. (Sums are
/// built from words like this, not by walking byte slices: LLVM puts such slices on the stack,
/// which `tc_from_pod` cannot spare.)
#[inline(always)]
pub fn word(hi: u8, lo: u8) -> u32 {
    u32::from(u16::from_be_bytes([hi, lo]))
}

/// The sum of four bytes as two big-endian words (an IPv4 address), for [`fold_checksum`].
#[inline(always)]
pub fn words4(bytes: [u8; 4]) -> u32 {
    word(bytes[0], bytes[1]) + word(bytes[2], bytes[3])
}

/// The Internet checksum (RFC 1071) of data whose words sum to `sum`.
#[inline(always)]
pub fn fold_checksum(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The Ethernet type in host order, or `None` for a runt frame.
#[inline(always)]
pub fn ethertype(ctx: &TcContext) -> Option<u16> {
    ctx.load::<[u8; 2]>(12).ok().map(u16::from_be_bytes)
}

#[inline(always)]
pub fn load<T>(ctx: &TcContext, offset: usize) -> Option<T> {
    ctx.load::<T>(offset).ok()
}

#[inline(always)]
pub fn store<T>(ctx: &TcContext, offset: usize, value: &T) -> Option<()> {
    ctx.store(offset, value, 0).ok()
}

/// The ifindex of the device the program runs on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Is the packet GSO (several segments' worth, cut up only on the way out)?
#[inline(always)]
pub fn is_gso(ctx: &TcContext) -> bool {
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).gso_size != 0 }
}

/// Rewrite the Ethernet addresses for delivery on a veth.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst);
    macs[6..].copy_from_slice(&src);
    store(ctx, OFF_ETH_DST, &macs)
}
