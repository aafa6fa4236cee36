//! WEIR_COUNTERS: per-endpoint packet and byte counts by direction and verdict reason.
//!
//! Reasons are ABI: never renumber one, retire it as `Unused<N>` instead.

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The endpoint's host-side ifindex, 0 for traffic not tied to an endpoint.
    pub ifindex: u32,
    /// [`DIR_FROM_POD`] or [`DIR_TO_POD`].
    pub direction: u8,
    pub _pad: u8,
    /// A [`Reason`] code.
    pub reason: u16,
}

pub const DIR_FROM_POD: u8 = 0;
pub const DIR_TO_POD: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<CounterKey>() == 8);
const _: () = assert!(core::mem::size_of::<CounterValue>() == 16);

/// Why a packet was forwarded or dropped. Codes below 100 are forwards, 100 and up are drops.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Delivered to a pod on this node by eBPF redirect.
    ForwardLocal = 1,
    /// Passed to the host stack (node, outside world, Services).
    ForwardHost = 2,
    /// ARP request for the gateway answered in eBPF.
    ArpReply = 3,
    /// Delivered from the host stack to a pod.
    FromHost = 4,
    /// Delivered from a pod on this node (counted on the receiver's veth, direction to-pod).
    Deliver = 5,
    /// Sent to another node (straight out of the uplink, or into the VXLAN tunnel).
    ForwardRemote = 6,
    /// Arrived from another node's pod (through the tunnel, or on the uplink) and delivered
    /// straight to a pod.
    FromRemote = 7,
    /// Source IP is not the pod's own.
    DropSpoofedIp = 100,
    /// Source MAC is not the pod's own.
    DropSpoofedMac = 101,
    /// Not IPv4 or ARP (Weir is IPv4-only for now).
    DropUnsupportedL3 = 102,
    /// Malformed or truncated header.
    DropMalformed = 103,
    /// Addressed to a pod IP with no endpoint on this node.
    DropNoEndpoint = 104,
    /// ARP with a spoofed sender.
    DropSpoofedArp = 105,
    /// Denied by the sending pod's egress policy.
    DropPolicyEgress = 106,
    /// Denied by the receiving pod's ingress policy.
    DropPolicyIngress = 107,
    /// The pod's policy could not be programmed, so it is isolated (fail closed).
    DropPolicyFailClosed = 108,
    /// Addressed to another node's pod CIDR, but no node is known for it (or it cannot be reached).
    DropNoRoute = 109,
    /// A tunnelled packet not from a known node (outer source), not of Weir's VNI, or whose
    /// inner source is not that node or one of its pods: a forged identity.
    DropTunnelForged = 110,
    /// A pod sending to a node's VXLAN port (it could forge tunnelled packets).
    DropTunnelFromPod = 111,
    /// A later IP fragment of a datagram whose first fragment was not seen (or was denied).
    DropFragment = 112,
    /// Too big for the path to another node once wrapped in VXLAN, and not to be fragmented
    /// (DF): answered with ICMP "fragmentation needed" and the MTU the path takes.
    DropTooBig = 113,
}

impl Reason {
    pub const fn is_drop(self) -> bool {
        self as u16 >= 100
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::ForwardLocal,
            2 => Self::ForwardHost,
            3 => Self::ArpReply,
            4 => Self::FromHost,
            5 => Self::Deliver,
            6 => Self::ForwardRemote,
            7 => Self::FromRemote,
            100 => Self::DropSpoofedIp,
            101 => Self::DropSpoofedMac,
            102 => Self::DropUnsupportedL3,
            103 => Self::DropMalformed,
            104 => Self::DropNoEndpoint,
            105 => Self::DropSpoofedArp,
            106 => Self::DropPolicyEgress,
            107 => Self::DropPolicyIngress,
            108 => Self::DropPolicyFailClosed,
            109 => Self::DropNoRoute,
            110 => Self::DropTunnelForged,
            111 => Self::DropTunnelFromPod,
            112 => Self::DropFragment,
            113 => Self::DropTooBig,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::ForwardLocal => "forward_local",
            Self::ForwardHost => "forward_host",
            Self::ArpReply => "arp_reply",
            Self::FromHost => "from_host",
            Self::Deliver => "deliver",
            Self::ForwardRemote => "forward_remote",
            Self::FromRemote => "from_remote",
            Self::DropSpoofedIp => "drop_spoofed_ip",
            Self::DropSpoofedMac => "drop_spoofed_mac",
            Self::DropUnsupportedL3 => "drop_unsupported_l3",
            Self::DropMalformed => "drop_malformed",
            Self::DropNoEndpoint => "drop_no_endpoint",
            Self::DropSpoofedArp => "drop_spoofed_arp",
            Self::DropPolicyEgress => "drop_policy_egress",
            Self::DropPolicyIngress => "drop_policy_ingress",
            Self::DropPolicyFailClosed => "drop_policy_fail_closed",
            Self::DropNoRoute => "drop_no_route",
            Self::DropTunnelForged => "drop_tunnel_forged",
            Self::DropTunnelFromPod => "drop_tunnel_from_pod",
            Self::DropFragment => "drop_fragment",
            Self::DropTooBig => "drop_too_big",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding byte.
unsafe impl aya::Pod for CounterKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), two u64.
unsafe impl aya::Pod for CounterValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_round_trip_and_drops_start_at_100() {
        for code in 0..200u16 {
            if let Some(r) = Reason::from_code(code) {
                assert_eq!(r as u16, code);
                assert_eq!(r.is_drop(), code >= 100);
            }
        }
    }
}
