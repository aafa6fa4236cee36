//! Flow metrics read from the datapath's pins at each scrape: new-flow verdicts per pod and
//! direction (`WEIR_VERDICTS`, never rate limited), and the flow events that were lost, by cause.
//!
//! Cardinality: `weir_policy_verdicts_total` has at most 4 series per pod of this node (2
//! directions × 2 verdicts); a pod's series leave with it. `weir_flow_events_lost_total` has 3.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::counter::ConstCounter,
};
use tracing::debug;
use weir_common::{counters::DIR_FROM_POD, events::VERDICT_ALLOWED};

use crate::{kernel::flow_events, program::endpoints::pod_names};

/// Where the pins and the endpoint records are, once the agent knows.
#[derive(Debug, Default)]
pub(super) struct FlowSources {
    pub pin_dir: OnceLock<PathBuf>,
    pub endpoints_dir: OnceLock<PathBuf>,
    /// Event batches the agent's loop was too busy to take.
    pub agent_busy: AtomicU64,
}

#[derive(Debug)]
pub(super) struct FlowMetrics {
    sources: Arc<FlowSources>,
}

impl FlowMetrics {
    pub(super) fn new(sources: Arc<FlowSources>) -> Self {
        Self { sources }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    namespace: String,
    pod: String,
    direction: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    cause: &'static str,
}

impl Collector for FlowMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pin_dir) = self.sources.pin_dir.get() else {
            return Ok(());
        };
        let pods = self
            .sources
            .endpoints_dir
            .get()
            .map(|dir| pod_names(dir))
            .unwrap_or_default();
        let verdicts = flow_events::verdicts(pin_dir).unwrap_or_else(|e| {
            debug!(error = %format!("{e:#}"), "reading verdict counts");
            Vec::new()
        });
        let mut totals = BTreeMap::<(String, String, &'static str, &'static str), u64>::new();
        for (key, count) in verdicts {
            // An interface no endpoint record names is one being added or removed.
            let Some((namespace, pod)) = pods.get(&key.ifindex).and_then(|p| p.split_once('/'))
            else {
                continue;
            };
            let direction = if key.direction == DIR_FROM_POD {
                "egress"
            } else {
                "ingress"
            };
            let verdict = if key.verdict == VERDICT_ALLOWED {
                "allowed"
            } else {
                "denied"
            };
            *totals
                .entry((namespace.to_owned(), pod.to_owned(), direction, verdict))
                .or_default() += count;
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "weir_policy_verdicts",
            "New flows judged by policy, by pod of this node, policy direction and verdict",
            None,
            counter.metric_type(),
        )?;
        for ((namespace, pod, direction, verdict), count) in totals {
            let labels = VerdictLabels {
                namespace,
                pod,
                direction,
                verdict,
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let (ring_full, rate_limited) = flow_events::lost(pin_dir).unwrap_or_else(|e| {
            debug!(error = %format!("{e:#}"), "reading lost flow events");
            (0, 0)
        });
        let mut family = encoder.encode_descriptor(
            "weir_flow_events_lost",
            "Flow events that never reached the flow log: the ring was full, the endpoint was \
             over its --flow-events-per-sec, or the agent was too busy to take them",
            None,
            counter.metric_type(),
        )?;
        for (cause, n) in [
            ("ring_full", ring_full),
            ("rate_limited", rate_limited),
            (
                "agent_busy",
                self.sources.agent_busy.load(Ordering::Relaxed),
            ),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&LostLabels { cause })?)?;
        }
        Ok(())
    }
}
