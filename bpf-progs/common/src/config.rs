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
}

/// The agent has written this entry; until then the programs pass everything to the host stack.
pub const NODE_F_CONFIGURED: u32 = 1;

const _: () = assert!(core::mem::size_of::<NodeConfig>() == 32);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, all fields are integers with explicit padding.
unsafe impl aya::Pod for NodeConfig {}
