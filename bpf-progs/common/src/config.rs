//! WEIR_CONFIG: the node's datapath settings, one array entry written by the agent at start-up.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The link-local gateway every pod routes through (169.254.1.1), network order.
    pub gateway_ip_be: u32,
    /// The cluster pod CIDR (all nodes), network order, and its prefix length.
    pub cluster_cidr_be: u32,
    pub cluster_prefix_len: u32,
    /// Index of `weir0`, the device the host stack routes local pod traffic to.
    pub host_dev_ifindex: u32,
    /// `NODE_F_*` bits.
    pub flags: u32,
    /// Bumped by the agent after every policy change; conntrack entries judged under an older
    /// epoch are judged again on their next forward packet.
    pub policy_epoch: u32,
    /// The Service ClusterIP range, network order: traffic to it is DNATed by the host stack, so
    /// egress policy is judged where the real backend is known.
    pub service_cidr_be: u32,
    pub service_prefix_len: u32,
    /// The node's uplink: native routing sends other nodes' pod traffic out of it.
    pub uplink_ifindex: u32,
    /// The flow-based VXLAN device (`weir-vxlan`); 0 in native routing.
    pub tunnel_ifindex: u32,
    /// The VXLAN network identifier every node uses.
    pub vni: u32,
    /// Flow events each endpoint may produce per second on each CPU (a burst of as many is
    /// allowed); 0 turns flow events off. Verdict counts are kept either way.
    pub flow_events_per_sec: u32,
}

/// The agent has written this entry; until then the programs pass everything to the host stack.
pub const NODE_F_CONFIGURED: u32 = 1;
/// Other nodes are reached through the VXLAN device instead of straight over the uplink.
pub const NODE_F_VXLAN: u32 = 2;

/// The VXLAN network identifier of Weir's tunnels; the datapath accepts no other.
pub const VXLAN_VNI: u32 = 1;
/// UDP port of Weir's VXLAN (the Linux default, also Flannel's and Cilium's; IANA's is 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes VXLAN adds to every packet over IPv4: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The MAC address of every node's `weir-vxlan` device. Frames sent into a tunnel are addressed to
/// it, so that the receiving node's stack takes them as its own when they are not for a pod.
pub const TUNNEL_DEV_MAC: [u8; 6] = [0x0e, 0x77, 0x65, 0x69, 0x72, 0x01];
/// The source MAC of frames sent into a tunnel: anything but [`TUNNEL_DEV_MAC`], which the
/// receiving VXLAN device would drop as its own frame looping back.
pub const TUNNEL_SRC_MAC: [u8; 6] = [0x0e, 0x77, 0x65, 0x69, 0x72, 0x02];

const _: () = assert!(core::mem::size_of::<NodeConfig>() == 48);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, all fields are integers with explicit padding.
unsafe impl aya::Pod for NodeConfig {}
