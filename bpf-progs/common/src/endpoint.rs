//! WEIR_ENDPOINTS: the pods on this node, keyed by IPv4 address.
//!
//! Looked up by destination to deliver a packet to a local pod, and by source to check that a pod sends
//! only from its own address, MAC and veth (anti-spoofing).

/// An IPv4 address in network byte order, exactly as it sits in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub ip_be: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Index of the host-side veth in the node's network namespace.
    pub host_ifindex: u32,
    /// Stable number of this endpoint, used in counters and (later) policy keys.
    pub endpoint_id: u32,
    /// MAC of the pod's interface (the only source MAC it may use).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: the pod's gateway MAC.
    pub host_mac: [u8; 6],
    /// `ENDPOINT_F_*` bits.
    pub flags: u32,
    /// Rule tables judging traffic to and from this pod (`weir_common::policy::TABLE_*`).
    pub ingress_table: u32,
    pub egress_table: u32,
}

/// The endpoint's datapath is fully programmed; until then nothing is delivered to or from it.
pub const ENDPOINT_F_READY: u32 = 1;
/// Packets for the pod may go straight into its interface (`bpf_redirect_peer`, from a tc
/// ingress hook), skipping the host-side veth and a pass through the backlog. Not set while that
/// veth shapes the pod's ingress: its qdisc must see every packet.
pub const ENDPOINT_F_DIRECT: u32 = 2;

const _: () = assert!(core::mem::size_of::<EndpointKey>() == 4);
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 32);

#[cfg(feature = "user")]
// SAFETY: both types are repr(C), Copy, and every byte pattern is a valid value (no padding holes).
unsafe impl aya::Pod for EndpointKey {}
#[cfg(feature = "user")]
// SAFETY: as above; the 32 bytes are all named fields.
unsafe impl aya::Pod for EndpointInfo {}
