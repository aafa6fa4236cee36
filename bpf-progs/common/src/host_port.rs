//! WEIR_HOST_PORTS: the pods' `hostPort`s on this node, so that a local pod's flow to one of
//! them is judged after the host stack's DNAT (on the pod it reaches), like Service traffic.

/// A published port: the node address it is published on (`0`: every node address), its
/// protocol and port. The value is unused (1).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPortKey {
    /// Network order, as in the packet; 0 for every address of the node.
    pub ip_be: u32,
    /// Network order, as in the packet.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<HostPortKey>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, every byte a named field (the padding is explicit).
unsafe impl aya::Pod for HostPortKey {}
