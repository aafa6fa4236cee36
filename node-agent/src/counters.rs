//! Reading the datapath's counters from the pinned map, with or without a running agent.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuHashMap};
use serde::Serialize;
use weir_common::{counters::DIR_FROM_POD, maps::COUNTERS, CounterKey, CounterValue, Reason};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CounterRow {
    pub ifindex: u32,
    /// "namespace/name" of the pod behind `ifindex`, when the agent's records say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub direction: &'static str,
    pub reason: String,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

pub fn row(key: CounterKey, value: CounterValue) -> CounterRow {
    let reason = Reason::from_code(key.reason);
    CounterRow {
        ifindex: key.ifindex,
        pod: None,
        direction: if key.direction == DIR_FROM_POD {
            "from_pod"
        } else {
            "to_pod"
        },
        reason: reason.map_or_else(
            || format!("unknown_{}", key.reason),
            |r| r.name().to_owned(),
        ),
        drop: reason.is_some_and(Reason::is_drop),
        packets: value.packets,
        bytes: value.bytes,
    }
}

/// Read every counter from the map pinned in `pin_dir`.
pub fn read_pinned(pin_dir: &Path) -> Result<Vec<CounterRow>> {
    let path = pin_dir.join(COUNTERS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map: PerCpuHashMap<_, CounterKey, CounterValue> =
        PerCpuHashMap::try_from(Map::PerCpuLruHashMap(data))?;
    let mut rows = Vec::new();
    for item in map.iter() {
        let (key, per_cpu) = item?;
        let total = per_cpu
            .iter()
            .fold(CounterValue::default(), |a, v| CounterValue {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            });
        rows.push(row(key, total));
    }
    rows.sort_by(|a, b| {
        (a.ifindex, a.direction, &a.reason).cmp(&(b.ifindex, b.direction, &b.reason))
    });
    Ok(rows)
}

/// Name the pod of each row from the agent's endpoint records in `endpoints_dir` (rows of
/// interfaces no record names keep `pod: None`).
pub fn name_pods(rows: &mut [CounterRow], endpoints_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(endpoints_dir) else {
        return;
    };
    let mut pods = std::collections::BTreeMap::new();
    for entry in entries.flatten() {
        let record = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::endpoints::EndpointRecord>(&b).ok());
        if let Some(record) = record {
            let ep = record.endpoint;
            if let (Some(ns), Some(name)) = (ep.pod_namespace, ep.pod_name) {
                pods.insert(ep.host_ifindex, format!("{ns}/{name}"));
            }
        }
    }
    for row in rows {
        row.pod = pods.get(&row.ifindex).cloned();
    }
}
