//! Telemetry: Prometheus metrics (`prometheus-client`) and the health endpoints, served by hyper
//! on `--metrics-address`: `/metrics`, `/healthz` (the agent's loop is alive), `/readyz` (the
//! datapath is up and the conflist written, which, with the Kubernetes source, is only after every
//! kind was listed).
//!
//! Nothing here takes the agent's lock. The agent publishes what the endpoints report into
//! [`Telemetry`] (atomic gauges and counters, and a heartbeat it renews every few seconds while its
//! loop runs), and the datapath's packet counters are read from their pinned map at each scrape.
//! Connections are served concurrently, each with its own header timeout, so idle or slow clients
//! cannot starve the kubelet's probes.

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::debug;

/// How stale the agent's heartbeat may get before `/healthz` calls the agent stuck. The agent
/// renews it every [`HEARTBEAT_EVERY`].
const STUCK_AFTER: Duration = Duration::from_secs(30);
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A client must send its request head within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;

/// Buckets for the time from an object change to programmed maps: 1 ms to 30 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

/// What the agent publishes, and the registry that exposes it.
pub struct Telemetry {
    registry: Registry,
    pub endpoints: Gauge,
    pub pods: Gauge,
    pub policies: Gauge,
    pub rejected: Gauge,
    pub generation: Gauge,
    pub policy_failures: Counter,
    pub programming_seconds: Histogram,
    pub map_entries: Family<MapLabels, Gauge>,
    pub map_capacity: Family<MapLabels, Gauge>,
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

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let t = |name: &str, help: &str| (name.to_owned(), help.to_owned());
        let endpoints = Gauge::default();
        let pods = Gauge::default();
        let policies = Gauge::default();
        let rejected = Gauge::default();
        let generation = Gauge::default();
        let policy_failures = Counter::default();
        let programming_seconds = latency_histogram();
        let map_entries = Family::<MapLabels, Gauge>::default();
        let map_capacity = Family::<MapLabels, Gauge>::default();
        for ((name, help), metric) in [
            (
                t("weir_endpoints", "Pods with an endpoint on this node"),
                endpoints.clone(),
            ),
            (
                t("weir_pods", "Pods in the agent's model of the cluster"),
                pods.clone(),
            ),
            (
                t(
                    "weir_network_policies",
                    "NetworkPolicies in the agent's model of the cluster",
                ),
                policies.clone(),
            ),
            (
                t(
                    "weir_rejected_objects",
                    "Objects the agent cannot program (the pods they select are isolated)",
                ),
                rejected.clone(),
            ),
            (
                t(
                    "weir_source_generation",
                    "Generation of the object source last programmed",
                ),
                generation.clone(),
            ),
        ] {
            registry.register(name, help, metric);
        }
        registry.register(
            "weir_policy_failures",
            "Times programming policy failed and the node failed closed",
            policy_failures.clone(),
        );
        registry.register(
            "weir_policy_programming_seconds",
            "Time from an object change seen on the Kubernetes API to the maps enforcing it",
            programming_seconds.clone(),
        );
        registry.register(
            "weir_map_entries",
            "Entries in an eBPF map",
            map_entries.clone(),
        );
        registry.register(
            "weir_map_capacity",
            "Maximum entries of an eBPF map",
            map_capacity.clone(),
        );
        let pin_dir = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(PacketCounters {
            pin_dir: pin_dir.clone(),
        }));
        Self {
            registry,
            endpoints,
            pods,
            policies,
            rejected,
            generation,
            policy_failures,
            programming_seconds,
            map_entries,
            map_capacity,
            started: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            pin_dir,
        }
    }

    /// The agent is up: its datapath is pinned under `pin_dir` and its conflist written.
    pub fn set_started(&self, pin_dir: PathBuf) {
        let _ = self.pin_dir.set(pin_dir);
        self.beat();
        self.started.store(true, Ordering::Release);
    }

    /// The agent's loop is alive (it just held its lock and published).
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

/// The datapath's packet counters, read from their pinned map at each scrape and summed over
/// endpoints (an endpoint's counters leave with it, which Prometheus sees as a reset).
#[derive(Debug)]
struct PacketCounters {
    pin_dir: Arc<OnceLock<PathBuf>>,
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
        let rows = match crate::counters::read_pinned(pin_dir) {
            Ok(rows) => rows,
            Err(e) => {
                debug!(error = %format!("{e:#}"), "reading packet counters");
                return Ok(());
            }
        };
        let mut totals = std::collections::BTreeMap::<(bool, &'static str, String), u64>::new();
        for row in rows {
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

/// Serves the endpoints forever, each connection on a task of its own.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                debug!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(answer(&telemetry, &request)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics connection");
            }
            drop(slot);
        });
    }
}

fn answer<B>(telemetry: &Telemetry, request: &Request<B>) -> Response<Full<Bytes>> {
    let (code, body) = if request.method() == Method::GET {
        telemetry.respond(request.uri().path())
    } else {
        (405, "only GET\n".to_owned())
    };
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid status and header")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn serving() -> (std::net::SocketAddr, Arc<Telemetry>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let telemetry = Arc::new(Telemetry::new());
        tokio::spawn(serve(listener, telemetry.clone()));
        (address, telemetry)
    }

    #[tokio::test]
    async fn health_answers_follow_the_agent_and_its_heartbeat() {
        let (address, telemetry) = serving().await;
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        telemetry.set_started(PathBuf::from("/nonexistent"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        // A heartbeat older than STUCK_AFTER: the loop is stuck.
        telemetry.heartbeat_ms.store(
            now_ms() - STUCK_AFTER.as_millis() as u64 - 1000,
            Ordering::Release,
        );
        let stuck = get(address, "/healthz").await;
        assert!(stuck.starts_with("HTTP/1.1 503"), "{stuck}");
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn a_hundred_idle_connections_do_not_delay_a_probe() {
        let (address, telemetry) = serving().await;
        telemetry.set_started(PathBuf::from("/nonexistent"));
        let mut idle = Vec::new();
        for _ in 0..100 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            // Half a request head, then nothing.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            idle.push(stream);
        }
        let started = Instant::now();
        let answer = get(address, "/healthz").await;
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            took < Duration::from_secs(1),
            "/healthz took {took:?} behind idle connections"
        );
        drop(idle);
    }

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        let telemetry = Telemetry::new();
        telemetry.endpoints.set(3);
        telemetry.policy_failures.inc();
        telemetry.programming_seconds.observe(0.003);
        telemetry.set_map_fill("WEIR_POLICY_PEERS", 1, 1 << 20);
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
