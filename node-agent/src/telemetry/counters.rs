//! The datapath's packet counters, read from their pinned map with or without a running agent:
//! as rows (`weir-agent counters`) and as the `weir_drops` and `weir_forwarded` metrics.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::counter::ConstCounter,
};
use serde::Serialize;
use tracing::debug;
use weir_common::{counters::DIR_FROM_POD, CounterKey, CounterValue, Reason};

use crate::{
    kernel::{datapath::DatapathError, pins},
    program::endpoints::RetiredCounters,
};

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

/// Every counter pinned in `pin_dir`, as rows by interface, direction and reason.
pub fn rows(pin_dir: &Path) -> Result<Vec<CounterRow>, DatapathError> {
    let mut rows: Vec<CounterRow> = pins::read_counters(pin_dir)?
        .into_iter()
        .map(|(key, value)| row(key, value))
        .collect();
    rows.sort_by(|a, b| {
        (a.ifindex, a.direction, &a.reason).cmp(&(b.ifindex, b.direction, &b.reason))
    });
    Ok(rows)
}

/// Name the pod of each row from `pods` (interface index → `namespace/name`); rows of
/// interfaces it does not name keep `pod: None`.
pub fn name_pods(rows: &mut [CounterRow], pods: &BTreeMap<u32, String>) {
    for row in rows {
        row.pod = pods.get(&row.ifindex).cloned();
    }
}

/// The datapath's packet counters, read from their pinned map at each scrape and summed over
/// endpoints, plus those of the endpoints removed since the agent started (so no total goes
/// backwards when an endpoint leaves).
#[derive(Debug)]
pub(super) struct PacketCounters {
    pin_dir: Arc<OnceLock<PathBuf>>,
    retired: Arc<RetiredCounters>,
}

impl PacketCounters {
    /// Counters of the pins in `pin_dir` once it is set.
    pub(super) fn new(pin_dir: Arc<OnceLock<PathBuf>>, retired: Arc<RetiredCounters>) -> Self {
        Self { pin_dir, retired }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    direction: &'static str,
    reason: String,
}

impl Collector for PacketCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pin_dir) = self.pin_dir.get() else {
            return Ok(());
        };
        let rows = match rows(pin_dir) {
            Ok(rows) => rows,
            Err(e) => {
                debug!(error = %format!("{e:#}"), "reading packet counters");
                return Ok(());
            }
        };
        let mut totals = BTreeMap::<(bool, &'static str, String), u64>::new();
        let retired = self.retired.rows().into_iter().map(|(k, v)| row(k, v));
        for row in rows.into_iter().chain(retired) {
            *totals
                .entry((row.drop, row.direction, row.reason))
                .or_default() += row.packets;
        }
        for (drop, name, help) in [
            (
                true,
                "weir_drops",
                "Packets the datapath dropped, by reason",
            ),
            (
                false,
                "weir_forwarded",
                "Packets the datapath forwarded, by path",
            ),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for ((is_drop, direction, reason), packets) in &totals {
                if *is_drop != drop {
                    continue;
                }
                let labels = PacketLabels {
                    direction,
                    reason: reason.clone(),
                };
                ConstCounter::new(*packets).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
