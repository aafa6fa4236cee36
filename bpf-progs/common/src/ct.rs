//! WEIR_CT_TCP and WEIR_CT_ANY: Weir's own connection tracking, so that policy is stateful; and
//! WEIR_FRAGS, which gives a datagram's later IP fragments the ports its first one carried.
//!
//! Keyed by the 5-tuple of a flow's first packet as seen where it was judged. A packet whose tuple
//! matches an entry is the flow's forward direction; one whose *reversed* tuple matches is a reply.
//! The maps are LRU hashes (bounded: the least recently used flow is evicted when full) and pinned,
//! so an agent restart leaves established flows alone. Entries expire by `last_seen_ns` on lookup,
//! and the agent sweeps the expired ones out.

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Ports in network order; for ICMP echo the identifier sits in `sport` (request) so that the
    /// reply's reversed tuple finds it.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns` of the last packet (refreshed at most once a second).
    pub last_seen_ns: u64,
    /// The policy epoch ([`crate::NodeConfig::policy_epoch`]) the forward verdict was made under.
    /// A forward packet under a newer epoch is judged again, so policy changes apply to live flows.
    pub epoch: u32,
    /// `CT_F_*` bits.
    pub flags: u32,
}

/// The flow went through the host stack (Service DNAT, forwarding, masquerade): its replies must too,
/// so that the kernel's conntrack can reverse the translation.
pub const CT_F_VIA_HOST: u32 = 1;
/// Judging was deferred to where the flow's real destination is known (a Service ClusterIP).
pub const CT_F_DEFERRED: u32 = 2;
/// Opened by the node itself (always allowed: kubelet probes).
pub const CT_F_FROM_NODE: u32 = 4;
/// A reply has been seen.
pub const CT_F_REPLIED: u32 = 8;
/// A TCP FIN or RST has been seen.
pub const CT_F_CLOSING: u32 = 16;

/// Lifetimes, as Cilium's defaults.
pub const CT_TCP_ESTABLISHED_NS: u64 = 21_600 * 1_000_000_000;
pub const CT_TCP_OPENING_NS: u64 = 60 * 1_000_000_000;
pub const CT_TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
pub const CT_OTHER_NS: u64 = 60 * 1_000_000_000;
/// `last_seen_ns` is rewritten only when older than this, to keep established flows read-only.
pub const CT_REFRESH_NS: u64 = 1_000_000_000;

impl CtValue {
    /// How long after `last_seen_ns` this entry stays valid.
    pub const fn lifetime_ns(&self, proto: u8) -> u64 {
        if proto != 6 {
            CT_OTHER_NS
        } else if self.flags & CT_F_CLOSING != 0 {
            CT_TCP_CLOSING_NS
        } else if self.flags & CT_F_REPLIED != 0 {
            CT_TCP_ESTABLISHED_NS
        } else {
            CT_TCP_OPENING_NS
        }
    }
}

/// One fragmented datagram: an IPv4 packet's (source, destination, identification, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// The IPv4 identification field, network order.
    pub id: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// The transport ports the datagram's first fragment carried, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragPorts>() == 4);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtValue>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, byte arrays only with explicit padding.
unsafe impl aya::Pod for CtKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, byte arrays only with explicit padding.
unsafe impl aya::Pod for FragKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, byte arrays only.
unsafe impl aya::Pod for FragPorts {}
#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, u64 + 2 × u32, no padding.
unsafe impl aya::Pod for CtValue {}
