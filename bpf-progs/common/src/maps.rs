//! Map and program names. The map names are also their file names under the agent's bpffs pin directory,
//! so they are written once here and nowhere else.

/// Bumped whenever a key or value layout changes; the agent pins under `<bpffs root>/v<ABI_VERSION>`.
pub const ABI_VERSION: u32 = 4;

/// Pod IP → endpoint (its host-side veth and MACs).
pub const ENDPOINTS: &str = "WEIR_ENDPOINTS";
pub const ENDPOINTS_MAX: u32 = 65_536;

/// One entry: this node's datapath settings.
pub const CONFIG: &str = "WEIR_CONFIG";

/// (endpoint, direction, reason) → packets and bytes, per CPU.
pub const COUNTERS: &str = "WEIR_COUNTERS";
pub const COUNTERS_MAX: u32 = 65_536;

/// Compiled NetworkPolicy: (rule table, peer prefix) → port set; (port set, proto, port prefix) → allow.
pub const POLICY_PEERS: &str = "WEIR_POLICY_PEERS";
pub const POLICY_PEERS_MAX: u32 = 1_048_576;
pub const POLICY_PORTS: &str = "WEIR_POLICY_PORTS";
pub const POLICY_PORTS_MAX: u32 = 262_144;

/// Connection tracking for stateful policy: TCP flows, and every other protocol's, in tables of
/// their own so that a flood of one kind cannot evict the other. Both are LRU; the agent sizes
/// them at load (the object's sizes are the smallest it uses) and sweeps expired entries.
pub const CT_TCP: &str = "WEIR_CT_TCP";
pub const CT_ANY: &str = "WEIR_CT_ANY";
pub const CT_TCP_MIN: u32 = 131_072;
pub const CT_ANY_MIN: u32 = 65_536;

/// A fragmented datagram → the ports its first fragment carried (Cilium's default size).
pub const FRAGS: &str = "WEIR_FRAGS";
pub const FRAGS_MAX: u32 = 8_192;

/// This node's own IPv4 addresses: traffic from them to local pods is always allowed. Room for
/// every ClusterIP of a big cluster's kube-proxy in IPVS mode (it binds them all to the node).
pub const HOST_IPS: &str = "WEIR_HOST_IPS";
pub const HOST_IPS_MAX: u32 = 65_536;

/// The pods' hostPorts on this node (`weir_common::HostPortKey`).
pub const HOST_PORTS: &str = "WEIR_HOST_PORTS";
pub const HOST_PORTS_MAX: u32 = 4_096;

/// Other nodes' pod CIDRs (and, with VXLAN, their node addresses) → the node to send to.
pub const REMOTES: &str = "WEIR_REMOTES";
pub const REMOTES_MAX: u32 = 16_384;

/// Flow events (`weir_common::events::FlowEvent`), a ring buffer of this many bytes.
pub const FLOW_EVENTS: &str = "WEIR_FLOW_EVENTS";
pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;
/// Endpoint → when its next flow event is due, per CPU (the events' rate limit).
pub const FLOW_RATE: &str = "WEIR_FLOW_RATE";
pub const FLOW_RATE_MAX: u32 = 65_536;
/// Events the rate limit or a full ring kept out, per CPU (`weir_common::events::LOST_*`).
pub const FLOW_LOST: &str = "WEIR_FLOW_LOST";
/// (endpoint, policy direction, verdict) → new flows judged so, per CPU.
pub const VERDICTS: &str = "WEIR_VERDICTS";
pub const VERDICTS_MAX: u32 = 65_536;

/// The kind of each map: the programs declare them so (`bpf-progs/src/maps.rs`), and user space
/// opens a pinned map as the kind named here, never by assumption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    Array,
    LruHash,
    LruPerCpuHash,
    LpmTrie,
    RingBuf,
    PerCpuArray,
}

/// Every map and its kind.
pub const MAP_KINDS: &[(&str, MapKind)] = &[
    (ENDPOINTS, MapKind::Hash),
    (CONFIG, MapKind::Array),
    (COUNTERS, MapKind::LruPerCpuHash),
    (POLICY_PEERS, MapKind::LpmTrie),
    (POLICY_PORTS, MapKind::LpmTrie),
    (CT_TCP, MapKind::LruHash),
    (CT_ANY, MapKind::LruHash),
    (FRAGS, MapKind::LruHash),
    (HOST_IPS, MapKind::Hash),
    (HOST_PORTS, MapKind::Hash),
    (REMOTES, MapKind::LpmTrie),
    (FLOW_EVENTS, MapKind::RingBuf),
    (FLOW_RATE, MapKind::LruPerCpuHash),
    (FLOW_LOST, MapKind::PerCpuArray),
    (VERDICTS, MapKind::LruPerCpuHash),
];

/// The kind of map `name` (one of this module's names).
pub fn kind_of(name: &str) -> Option<MapKind> {
    MAP_KINDS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// Program names (the function names in bpf-progs).
pub const PROG_FROM_POD: &str = "tc_from_pod";
pub const PROG_FROM_HOST: &str = "tc_from_host";
pub const PROG_FROM_TUNNEL: &str = "tc_from_tunnel";
pub const PROG_FROM_UPLINK: &str = "tc_from_uplink";
/// Made by a tail call from `tc_from_pod` (see [`TAIL_CALLS`]): a pod's packet too big for its
/// path turned into ICMP "fragmentation needed" for the pod.
pub const PROG_FRAG_NEEDED: &str = "tc_frag_needed";
/// The program array `tc_from_pod` tail-calls into, for work that needs a stack of its own. Not
/// pinned: each load of the programs fills its own (an agent restarting leaves it empty until the
/// new agent's programs replace the old ones, and a failed tail call drops the packet).
pub const TAIL_CALLS: &str = "WEIR_TAIL_CALLS";
/// [`TAIL_CALLS`] slot of [`PROG_FRAG_NEEDED`].
pub const TAIL_FRAG_NEEDED: u32 = 0;
/// The socket filter the agent's iptables rules run (pinned under `progs/` in the pin directory).
pub const PROG_EGRESS_AFTER_DNAT: &str = "sk_egress_after_dnat";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_has_one_declared_kind() {
        let names = [
            ENDPOINTS,
            CONFIG,
            COUNTERS,
            POLICY_PEERS,
            POLICY_PORTS,
            CT_TCP,
            CT_ANY,
            FRAGS,
            HOST_IPS,
            HOST_PORTS,
            REMOTES,
            FLOW_EVENTS,
            FLOW_RATE,
            FLOW_LOST,
            VERDICTS,
        ];
        assert_eq!(MAP_KINDS.len(), names.len());
        for name in names {
            let declared = MAP_KINDS.iter().filter(|(n, _)| *n == name).count();
            assert_eq!(declared, 1, "{name}");
        }
        assert_eq!(kind_of(COUNTERS), Some(MapKind::LruPerCpuHash));
        assert_eq!(kind_of("WEIR_NOT_A_MAP"), None);
    }
}
