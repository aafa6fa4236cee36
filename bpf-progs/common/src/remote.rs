//! WEIR_REMOTES: where traffic for another node's pods goes. An LPM trie from an IPv4 prefix (each
//! other node's pod CIDRs; with VXLAN also each other node's own address, so that replies to a
//! node's traffic come back through the tunnel it arrived by) to that node's address.

/// The data part of a REMOTES key; the trie key is `(prefix_len, RemoteKey)` (aya's `lpm_trie::Key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    /// Network order.
    pub ip: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteNode {
    /// The node's address on the network nodes share, network order: the next hop (native) or the
    /// tunnel's far end (VXLAN).
    pub node_ip_be: u32,
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<RemoteKey>() == 4);
const _: () = assert!(core::mem::size_of::<RemoteNode>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, byte array only.
unsafe impl aya::Pod for RemoteKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, integer fields with explicit padding.
unsafe impl aya::Pod for RemoteNode {}
