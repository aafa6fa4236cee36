//! Every map the programs use. Names come from `weir_common::maps` (they are the pin file names), so
//! user space and kernel space cannot drift apart.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap},
};
use weir_common::{
    maps::{COUNTERS_MAX, ENDPOINTS_MAX},
    CounterKey, CounterValue, EndpointInfo, EndpointKey, NodeConfig,
};

#[map(name = "WEIR_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(ENDPOINTS_MAX, 0);

#[map(name = "WEIR_CONFIG")]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// LRU so a burst of new keys can never make counting fail; per CPU so counting never contends.
#[map(name = "WEIR_COUNTERS")]
pub static COUNTERS: LruPerCpuHashMap<CounterKey, CounterValue> =
    LruPerCpuHashMap::pinned(COUNTERS_MAX, 0);
