//! The datapath's pinned maps, opened as the kind `weir_common::maps::MAP_KINDS` declares, and
//! read the same way whether the agent holds them (through [`super::datapath`]) or not (the CLI,
//! the conntrack sweeper, the metrics collector).

use std::{borrow::Borrow, net::Ipv4Addr, path::Path};

use aya::maps::{lpm_trie::LpmTrie, Map, MapData, MapError, PerCpuHashMap};
use ipnet::Ipv4Net;
use weir_common::{
    maps::{kind_of, MapKind, COUNTERS, REMOTES},
    CounterKey, CounterValue, RemoteKey, RemoteNode,
};

use super::datapath::DatapathError;

/// The aya view of a map of `kind`.
pub fn as_kind(kind: MapKind, data: MapData) -> Map {
    match kind {
        MapKind::Hash => Map::HashMap(data),
        MapKind::Array => Map::Array(data),
        MapKind::LruHash => Map::LruHashMap(data),
        MapKind::LruPerCpuHash => Map::PerCpuLruHashMap(data),
        MapKind::LpmTrie => Map::LpmTrie(data),
        MapKind::RingBuf => Map::RingBuf(data),
        MapKind::PerCpuArray => Map::PerCpuArray(data),
    }
}

/// Whether aya sees `map` as `kind` (the object's declaration agrees with `weir-common`'s).
pub fn is_kind(map: &Map, kind: MapKind) -> bool {
    matches!(
        (kind, map),
        (MapKind::Hash, Map::HashMap(_))
            | (MapKind::Array, Map::Array(_))
            | (MapKind::LruHash, Map::LruHashMap(_))
            | (MapKind::LruPerCpuHash, Map::PerCpuLruHashMap(_))
            | (MapKind::LpmTrie, Map::LpmTrie(_))
            | (MapKind::RingBuf, Map::RingBuf(_))
            | (MapKind::PerCpuArray, Map::PerCpuArray(_))
    )
}

/// Open the map `name` pinned in `pin_dir`.
pub fn open(pin_dir: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let kind = kind_of(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let data = MapData::from_pin(pin_dir.join(name))
        .map_err(|source| DatapathError::Map { name, source })?;
    Ok(as_kind(kind, data))
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// Every counter of `map`, summed over CPUs.
pub fn counters_of<T: Borrow<MapData>>(
    map: &PerCpuHashMap<T, CounterKey, CounterValue>,
) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (key, per_cpu) = item.map_err(map_err(COUNTERS))?;
        let total = per_cpu
            .iter()
            .fold(CounterValue::default(), |acc, v| CounterValue {
                packets: acc.packets + v.packets,
                bytes: acc.bytes + v.bytes,
            });
        out.push((key, total));
    }
    Ok(out)
}

/// Every prefix of `map` and the node it goes to.
pub fn remotes_of<T: Borrow<MapData>>(
    map: &LpmTrie<T, RemoteKey, RemoteNode>,
) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, DatapathError> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(REMOTES))?;
        let len = key.prefix_len().min(32) as u8;
        let net =
            Ipv4Net::new(Ipv4Addr::from(key.data().ip), len).expect("prefix length clamped to 32");
        out.push((net, Ipv4Addr::from(u32::from_be(value.node_ip_be))));
    }
    Ok(out)
}

/// The counters pinned in `pin_dir`, summed over CPUs.
pub fn read_counters(pin_dir: &Path) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
    let map = PerCpuHashMap::try_from(open(pin_dir, COUNTERS)?).map_err(map_err(COUNTERS))?;
    counters_of(&map)
}

/// The routes to other nodes pinned in `pin_dir`, by prefix.
pub fn read_remotes(pin_dir: &Path) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, DatapathError> {
    let map = LpmTrie::try_from(open(pin_dir, REMOTES)?).map_err(map_err(REMOTES))?;
    let mut rows = remotes_of(&map)?;
    rows.sort();
    Ok(rows)
}

/// How many entries the pinned LRU map `name` holds now, and how many it can: for the maps
/// whose fill nobody else tracks (counters, fragments, verdict counts, flow event budgets).
pub fn lru_fill(pin_dir: &Path, name: &'static str) -> Result<(usize, u32), DatapathError> {
    use aya::maps::HashMap;
    use weir_common::{
        maps::{FLOW_RATE, FRAGS, VERDICTS},
        FlowRate, FragKey, FragPorts, VerdictKey,
    };
    let map = open(pin_dir, name)?;
    let capacity = match &map {
        Map::PerCpuLruHashMap(data) | Map::LruHashMap(data) => {
            data.info().map(|i| i.max_entries()).unwrap_or(0)
        }
        _ => 0,
    };
    let entries = match name {
        COUNTERS => PerCpuHashMap::<_, CounterKey, CounterValue>::try_from(map)
            .map_err(map_err(name))?
            .keys()
            .count(),
        VERDICTS => PerCpuHashMap::<_, VerdictKey, u64>::try_from(map)
            .map_err(map_err(name))?
            .keys()
            .count(),
        FLOW_RATE => PerCpuHashMap::<_, u32, FlowRate>::try_from(map)
            .map_err(map_err(name))?
            .keys()
            .count(),
        FRAGS => HashMap::<_, FragKey, FragPorts>::try_from(map)
            .map_err(map_err(name))?
            .keys()
            .count(),
        _ => 0,
    };
    Ok((entries, capacity))
}
