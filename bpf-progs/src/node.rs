//! What this node knows, as the datapath reads it: its settings, its endpoints, the other nodes,
//! its own addresses.

use aya_ebpf::maps::lpm_trie::Key;
use weir_common::{EndpointInfo, EndpointKey, HostPortKey, NodeConfig, RemoteKey, RemoteNode};

use crate::maps::{CONFIG, ENDPOINTS, HOST_IPS, HOST_PORTS, REMOTES};

#[inline(always)]
pub fn endpoint(ip_be: u32) -> Option<EndpointInfo> {
    // SAFETY: copied out at once; the agent replaces whole values, never writes into them in place.
    unsafe { ENDPOINTS.get(&EndpointKey { ip_be }) }.copied()
}

#[inline(always)]
pub fn config() -> NodeConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// The other node that hosts `ip`, if any.
#[inline(always)]
pub fn remote_node(ip: [u8; 4]) -> Option<RemoteNode> {
    REMOTES.get(&Key::new(32, RemoteKey { ip })).copied()
}

/// Is `ip_be` another node's own address (its /32 entry in `WEIR_REMOTES`, VXLAN routing)?
#[inline(always)]
pub fn is_node_address(ip_be: u32) -> bool {
    remote_node(ip_be.to_ne_bytes()).is_some_and(|r| r.node_ip_be == ip_be)
}

/// May a tunnel datagram from `outer_be` carry a packet from `inner_saddr`? Only if `outer_be`
/// is another node's address and the inner source is that node or one of its pods: anything else
/// is a forged identity, whoever sent it.
#[inline(always)]
pub fn tunnel_sender_ok(outer_be: u32, inner_saddr: [u8; 4]) -> bool {
    is_node_address(outer_be) && remote_node(inner_saddr).is_some_and(|r| r.node_ip_be == outer_be)
}

#[inline(always)]
pub fn is_host_ip(ip_be: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { HOST_IPS.get(&EndpointKey { ip_be }) }.is_some()
}

/// Is `port` (wire bytes) of `proto` published as a pod's hostPort on `ip_be`, one of this
/// node's addresses?
#[inline(always)]
pub fn is_host_port(ip_be: u32, proto: u8, port: [u8; 2]) -> bool {
    let published = |ip_be| {
        let key = HostPortKey {
            ip_be,
            port,
            proto,
            _pad: 0,
        };
        // SAFETY: presence check only.
        unsafe { HOST_PORTS.get(&key) }.is_some()
    };
    is_host_ip(ip_be) && (published(0) || published(ip_be))
}

/// Is `addr` (wire bytes) inside `net_be/len`? A zero length means "no such range".
#[inline(always)]
pub fn in_prefix(addr: [u8; 4], net_be: u32, len: u32) -> bool {
    if len == 0 || len > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - len);
    u32::from_be_bytes(addr) & mask == u32::from_be(net_be) & mask
}
