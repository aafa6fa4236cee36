//! Telemetry: Prometheus metrics (`prometheus-client`) and the health endpoints, served by hyper
//! on `--metrics-address` ([`http`]): `/metrics`, `/healthz` (the agent's loop is alive),
//! `/readyz` (the datapath is up and the conflist written, which, with the Kubernetes source, is
//! only after every kind was listed).
//!
//! Nothing here reaches into the daemon. The daemon publishes a [`Status`] after each change (and
//! renews a heartbeat every few seconds while its loop runs), and the datapath's packet counters
//! are read from their pinned map at each scrape ([`counters`]).
//!
//! Layer: imports [`crate::kernel::pins`] only; the daemon publishes into it.

pub mod counters;
mod flows;
pub mod http;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::program::endpoints::RetiredCounters;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// How stale the agent's heartbeat may get before `/healthz` calls the agent stuck. The agent
/// renews it every [`HEARTBEAT_EVERY`].
const STUCK_AFTER: Duration = Duration::from_secs(30);
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Buckets for the time from an object change to programmed maps: 1 ms to 30 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// "namespace/name".
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

/// What the daemon reports after each change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Pods with an endpoint on this node.
    pub endpoints: usize,
    /// Pods and NetworkPolicies in the model.
    pub pods: usize,
    pub policies: usize,
    /// Objects the agent cannot program.
    pub rejected: usize,
    /// The source's generation last programmed.
    pub generation: u64,
    /// `(map, entries, capacity)` of the maps whose fill the daemon knows.
    pub maps: Vec<(&'static str, usize, u32)>,
}

/// What the agent publishes, and the registry that exposes it.
pub struct Telemetry {
    registry: Registry,
    endpoints: Gauge,
    pods: Gauge,
    policies: Gauge,
    rejected: Gauge,
    generation: Gauge,
    pub policy_failures: Counter,
    pub policy_self_check_failures: Counter,
    pub programming_seconds: Histogram,
    flow_events: Counter,
    policy_denials: Family<PolicyLabels, Counter>,
    flow_sources: Arc<flows::FlowSources>,
    /// Removed endpoints' packet counters, kept in the totals.
    pub retired_counters: Arc<RetiredCounters>,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    started: AtomicBool,
    /// Milliseconds since the epoch of the agent's last heartbeat.
    heartbeat_ms: AtomicU64,
    /// Where the datapath's pins are, once the agent knows.
    pin_dir: Arc<OnceLock<PathBuf>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

fn map_family(registry: &mut Registry, name: &str, help: &str) -> Family<MapLabels, Gauge> {
    let family = Family::<MapLabels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let endpoints = gauge(r, "weir_endpoints", "Pods with an endpoint on this node");
        let pods = gauge(r, "weir_pods", "Pods in the agent's model of the cluster");
        let policies = gauge(
            r,
            "weir_network_policies",
            "NetworkPolicies in the agent's model of the cluster",
        );
        let rejected = gauge(
            r,
            "weir_rejected_objects",
            "Objects the agent cannot program (the pods they select are isolated)",
        );
        let generation = gauge(
            r,
            "weir_source_generation",
            "Generation of the object source last programmed",
        );
        let policy_failures = Counter::default();
        r.register(
            "weir_policy_failures",
            "Times programming policy failed and the node failed closed",
            policy_failures.clone(),
        );
        let policy_self_check_failures = Counter::default();
        r.register(
            "weir_policy_self_check_failures",
            "Times the incremental policy compiler disagreed with a compilation from nothing \
             (then everything is recompiled and reprogrammed)",
            policy_self_check_failures.clone(),
        );
        let programming_seconds = latency_histogram();
        r.register(
            "weir_policy_programming_seconds",
            "Time from an object change seen on the Kubernetes API to the maps enforcing it",
            programming_seconds.clone(),
        );
        let flow_events = Counter::default();
        r.register(
            "weir_flow_events",
            "Flow events the agent received from the datapath",
            flow_events.clone(),
        );
        let policy_denials = Family::<PolicyLabels, Counter>::default();
        r.register(
            "weir_policy_denied_flows",
            "Denied flows seen as flow events, by each policy isolating the pod in that \
             direction (a sample when events are rate limited: see weir_flow_events_lost; one \
             series per policy that ever isolated a denied flow)",
            policy_denials.clone(),
        );
        let flow_sources = Arc::new(flows::FlowSources::default());
        r.register_collector(Box::new(flows::FlowMetrics::new(flow_sources.clone())));
        let map_entries = map_family(r, "weir_map_entries", "Entries in an eBPF map");
        let map_capacity = map_family(r, "weir_map_capacity", "Maximum entries of an eBPF map");
        let pin_dir = Arc::new(OnceLock::new());
        let retired_counters = Arc::new(RetiredCounters::default());
        r.register_collector(Box::new(counters::PacketCounters::new(
            pin_dir.clone(),
            retired_counters.clone(),
        )));
        Self {
            registry,
            endpoints,
            pods,
            policies,
            rejected,
            generation,
            policy_failures,
            policy_self_check_failures,
            programming_seconds,
            flow_events,
            policy_denials,
            flow_sources,
            retired_counters,
            map_entries,
            map_capacity,
            started: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            pin_dir,
        }
    }

    /// The agent is up: its datapath is pinned under `pin_dir` and its conflist written.
    pub fn set_started(&self, pin_dir: PathBuf, endpoints_dir: PathBuf) {
        let _ = self.flow_sources.pin_dir.set(pin_dir.clone());
        let _ = self.flow_sources.endpoints_dir.set(endpoints_dir);
        let _ = self.pin_dir.set(pin_dir);
        self.beat();
        self.started.store(true, Ordering::Release);
    }

    /// The daemon's status after a change; also a heartbeat.
    pub fn publish(&self, status: &Status) {
        self.endpoints.set(status.endpoints as i64);
        self.pods.set(status.pods as i64);
        self.policies.set(status.policies as i64);
        self.rejected.set(status.rejected as i64);
        self.generation.set(status.generation as i64);
        for (map, entries, capacity) in &status.maps {
            self.set_map_fill(map, *entries, *capacity);
        }
        self.beat();
    }

    pub fn count_flow_events(&self, n: u64) {
        self.flow_events.inc_by(n);
    }

    /// Flow events the agent's loop had no room for.
    pub fn count_flow_events_dropped(&self, n: u64) {
        self.flow_sources.agent_busy.fetch_add(n, Ordering::Relaxed);
    }

    /// A denied flow isolated by `policy` ("namespace/name").
    pub fn count_policy_denial(&self, policy: &str) {
        self.policy_denials
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .inc();
    }

    /// The agent's loop is alive.
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Release);
    }

    pub fn set_map_fill(&self, map: &str, entries: usize, capacity: u32) {
        let labels = MapLabels {
            map: map.to_owned(),
        };
        self.map_entries.get_or_create(&labels).set(entries as i64);
        self.map_capacity
            .get_or_create(&labels)
            .set(i64::from(capacity));
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// How long since the last heartbeat.
    fn silent_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Acquire)))
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The status and body for a GET of `path`.
    pub fn respond(&self, path: &str) -> (u16, String) {
        match path {
            // Alive while it starts (the first list of a big cluster takes a while).
            "/healthz" if !self.started() => (200, "starting\n".into()),
            "/healthz" => {
                let silent = self.silent_for();
                if silent > STUCK_AFTER {
                    (
                        503,
                        format!(
                            "the agent's loop has been stuck for {}s\n",
                            silent.as_secs()
                        ),
                    )
                } else {
                    (200, "ok\n".into())
                }
            }
            "/readyz" if self.started() => (200, "ok\n".into()),
            "/readyz" => (503, "starting\n".into()),
            "/metrics" => (200, self.render()),
            _ => (404, "not found\n".into()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        let telemetry = Telemetry::new();
        telemetry.publish(&Status {
            endpoints: 3,
            maps: vec![("WEIR_POLICY_PEERS", 1, 1 << 20)],
            ..Status::default()
        });
        telemetry.policy_failures.inc();
        telemetry.programming_seconds.observe(0.003);
        let text = telemetry.render();
        assert!(text.contains("weir_endpoints 3\n"), "{text}");
        assert!(text.contains("weir_policy_failures_total 1\n"), "{text}");
        assert!(
            text.contains("weir_map_entries{map=\"WEIR_POLICY_PEERS\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("weir_map_capacity{map=\"WEIR_POLICY_PEERS\"} 1048576\n"));
        assert!(
            text.contains("weir_policy_programming_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("weir_policy_programming_seconds_count 1\n"));
    }
}
