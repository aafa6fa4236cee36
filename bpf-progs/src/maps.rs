//! Every map the programs use. Names come from `weir_common::maps` (they are the pin file names),
//! and so do their kinds (`weir_common::maps::MAP_KINDS`, which user space opens them by): a map
//! declared here as another kind than listed there is a bug the agent's tests catch when they open
//! the pins.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
    },
};
use weir_common::{
    events::LOST_SLOTS,
    maps::{
        COUNTERS_MAX, CT_ANY_MIN, CT_TCP_MIN, ENDPOINTS_MAX, FLOW_EVENTS_BYTES, FLOW_RATE_MAX,
        FRAGS_MAX, HOST_IPS_MAX, HOST_PORTS_MAX, POLICY_PEERS_MAX, POLICY_PORTS_MAX, REMOTES_MAX,
        VERDICTS_MAX,
    },
    CounterKey, CounterValue, CtKey, CtValue, EndpointInfo, EndpointKey, FlowRate, FragKey,
    FragPorts, HostPortKey, NodeConfig, PeerKey, PeerValue, PortKey, PortValue, RemoteKey,
    RemoteNode, VerdictKey,
};

#[map(name = "WEIR_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(ENDPOINTS_MAX, 0);

#[map(name = "WEIR_CONFIG")]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// LRU so a burst of new keys can never make counting fail; per CPU so counting never contends.
#[map(name = "WEIR_COUNTERS")]
pub static COUNTERS: LruPerCpuHashMap<CounterKey, CounterValue> =
    LruPerCpuHashMap::pinned(COUNTERS_MAX, 0);

#[map(name = "WEIR_POLICY_PEERS")]
pub static POLICY_PEERS: LpmTrie<PeerKey, PeerValue> = LpmTrie::pinned(POLICY_PEERS_MAX, 0);

#[map(name = "WEIR_POLICY_PORTS")]
pub static POLICY_PORTS: LpmTrie<PortKey, PortValue> = LpmTrie::pinned(POLICY_PORTS_MAX, 0);

/// LRU: when full, the least recently used flow goes, never a new one (the agent sweeps expired
/// entries so that it rarely comes to that). TCP apart from everything else.
#[map(name = "WEIR_CT_TCP")]
pub static CT_TCP: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(CT_TCP_MIN, 0);
#[map(name = "WEIR_CT_ANY")]
pub static CT_ANY: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(CT_ANY_MIN, 0);

/// The ports of fragmented datagrams, from their first fragment, for the later ones.
#[map(name = "WEIR_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::pinned(FRAGS_MAX, 0);

#[map(name = "WEIR_HOST_IPS")]
pub static HOST_IPS: HashMap<EndpointKey, u32> = HashMap::pinned(HOST_IPS_MAX, 0);

#[map(name = "WEIR_HOST_PORTS")]
pub static HOST_PORTS: HashMap<HostPortKey, u32> = HashMap::pinned(HOST_PORTS_MAX, 0);

#[map(name = "WEIR_REMOTES")]
pub static REMOTES: LpmTrie<RemoteKey, RemoteNode> = LpmTrie::pinned(REMOTES_MAX, 0);

#[map(name = "WEIR_FLOW_EVENTS")]
pub static FLOW_EVENTS: RingBuf = RingBuf::pinned(FLOW_EVENTS_BYTES, 0);

/// Per CPU, so that the rate limit never contends; LRU, so that it never fills.
#[map(name = "WEIR_FLOW_RATE")]
pub static FLOW_RATE: LruPerCpuHashMap<u32, FlowRate> = LruPerCpuHashMap::pinned(FLOW_RATE_MAX, 0);

#[map(name = "WEIR_FLOW_LOST")]
pub static FLOW_LOST: PerCpuArray<u64> = PerCpuArray::pinned(LOST_SLOTS, 0);

#[map(name = "WEIR_VERDICTS")]
pub static VERDICTS: LruPerCpuHashMap<VerdictKey, u64> = LruPerCpuHashMap::pinned(VERDICTS_MAX, 0);

/// Programs `tc_from_pod` tail-calls (`weir_common::maps::TAIL_CALLS`; not pinned).
#[map(name = "WEIR_TAIL_CALLS")]
pub static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(1, 0);
