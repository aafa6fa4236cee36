//! WEIR_POLICY_PEERS and WEIR_POLICY_PORTS: NetworkPolicy compiled to two longest-prefix-match tries.
//!
//! Each local endpoint points, per direction, at a *rule table* ([`crate::EndpointInfo::ingress_table`],
//! [`crate::EndpointInfo::egress_table`]). Judging a new flow costs two LPM lookups per direction, no
//! matter how many policies or rules exist:
//! 1. PEERS `(table, peer IPv4)` → the *port set* allowed for the longest matching peer prefix. The
//!    compiler writes disjoint-by-LPM entries whose value is the union over every rule covering that
//!    prefix, so `ipBlock.except` is just a longer prefix with a smaller (often empty) port set.
//! 2. PORTS `(port set, protocol, port)` → the longest matching entry's verdict (no entry: denied).
//!    Prefix lengths encode wildcards: 32 = any protocol and port, 40 = any port of the protocol,
//!    40 + k = a port prefix of k bits (an `endPort` range becomes at most 30 such prefixes).
//!    NetworkPolicy alone only writes allowing entries; cluster-wide tiers add denying ones under
//!    allowing ones ("everything but TCP 22").

/// The endpoint is not isolated in this direction: everything is allowed.
pub const TABLE_ALLOW_ALL: u32 = 0;
/// Isolated with nothing allowed (a policy selects the pod and allows nothing in that direction).
pub const TABLE_DENY_ALL: u32 = u32::MAX;
/// Isolated because its policy could not be compiled or programmed: fail closed, counted apart.
pub const TABLE_FAIL_CLOSED: u32 = u32::MAX - 1;
/// A port set with no entries: the peer matched but no port is allowed.
pub const PORTSET_EMPTY: u32 = 0;

/// Prefix length of a full PEERS lookup key (32 bits of table id + 32 bits of address).
pub const PEER_KEY_BITS: u32 = 64;
/// Prefix length of a full PORTS lookup key (32 bits of port set, 8 of protocol, 16 of port).
pub const PORT_KEY_BITS: u32 = 56;
/// PORTS prefix lengths for the wildcards.
pub const PORT_PREFIX_ANY_PROTO: u32 = 32;
pub const PORT_PREFIX_ANY_PORT: u32 = 40;

/// The data part of a PEERS key; the trie key is `(prefix_len, PeerKey)` (aya's `lpm_trie::Key`),
/// with `prefix_len` = 32 + the peer prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    /// Rule table id, big-endian so that its bytes lead the trie in a fixed order.
    pub table: [u8; 4],
    /// The peer address, network order.
    pub ip: [u8; 4],
}

impl PeerKey {
    pub const fn new(table: u32, ip: [u8; 4]) -> Self {
        Self {
            table: table.to_be_bytes(),
            ip,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerValue {
    /// Port set id; [`PORTSET_EMPTY`] denies.
    pub portset: u32,
}

/// The data part of a PORTS key; the trie key is `(prefix_len, PortKey)` with `prefix_len` 32 (any
/// protocol), 40 (any port) or 40 + bits of `port` that must match.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// Port set id, big-endian.
    pub portset: [u8; 4],
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// Destination port, network order.
    pub port: [u8; 2],
    pub _pad: u8,
}

impl PortKey {
    pub const fn new(portset: u32, proto: u8, port: u16) -> Self {
        Self {
            portset: portset.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            _pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortValue {
    /// 1 allows, 0 denies (a longer prefix refusing part of what a shorter one allows).
    pub allow: u32,
}

const _: () = assert!(core::mem::size_of::<PeerKey>() == 8);
const _: () = assert!(core::mem::size_of::<PeerValue>() == 4);
const _: () = assert!(core::mem::size_of::<PortKey>() == 8);
const _: () = assert!(core::mem::size_of::<PortValue>() == 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, byte arrays and u32 only, no padding holes.
unsafe impl aya::Pod for PeerKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PeerValue {}
#[cfg(feature = "user")]
// SAFETY: as above; `_pad` is an explicit field.
unsafe impl aya::Pod for PortKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PortValue {}
