//! Prometheus metrics and health endpoints on a small HTTP/1.1 responder (GET only, one request
//! per connection): `/metrics`, `/healthz` (the agent is alive: its lock can be taken), `/readyz`
//! (the datapath is up and the conflist written, which, with the Kubernetes source, is only after
//! every kind was listed).

use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Mutex,
};
use tracing::debug;
use weir_common::{
    counters::DIR_FROM_POD,
    maps::{ENDPOINTS_MAX, POLICY_PEERS_MAX, POLICY_PORTS_MAX},
    Reason,
};

use crate::{agent::Agent, datapath::Datapath, endpoints::Endpoints, policy::PolicyEngine};

/// A Prometheus histogram with fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Buckets for the time from an object change to programmed maps: 1 ms to 30 s.
    pub fn latency() -> Self {
        const BOUNDS: &[f64] = &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        Self {
            bounds: BOUNDS,
            counts: vec![0; BOUNDS.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The agent's metrics in the Prometheus text format.
pub fn render<D: Datapath>(endpoints: &Endpoints<D>, policy: &PolicyEngine) -> String {
    let mut out = String::new();
    let datapath = endpoints.datapath();
    let one = |v: usize| vec![(String::new(), v as u64)];
    gauge(
        &mut out,
        "weir_endpoints",
        "Pods with an endpoint on this node.",
        "gauge",
        &one(endpoints.len()),
    );
    gauge(
        &mut out,
        "weir_network_policies",
        "NetworkPolicies in the agent's model of the cluster.",
        "gauge",
        &one(policy.cluster().policies().count()),
    );
    gauge(
        &mut out,
        "weir_pods",
        "Pods in the agent's model of the cluster.",
        "gauge",
        &one(policy.cluster().pods().count()),
    );
    gauge(
        &mut out,
        "weir_rejected_objects",
        "Objects the agent cannot program (the pods they select are isolated).",
        "gauge",
        &one(policy.rejected().len()),
    );
    gauge(
        &mut out,
        "weir_policy_failures_total",
        "Times programming policy failed and the node failed closed.",
        "counter",
        &[(String::new(), policy.failures)],
    );
    gauge(
        &mut out,
        "weir_source_generation",
        "Generation of the object source last programmed.",
        "gauge",
        &[(String::new(), policy.generation())],
    );
    let fill = |name: &str, entries: Option<usize>, max: u32| {
        entries.map(|n| {
            (
                (format!("{{map=\"{name}\"}}"), n as u64),
                (format!("{{map=\"{name}\"}}"), u64::from(max)),
            )
        })
    };
    let maps: Vec<_> = [
        fill(
            weir_common::maps::ENDPOINTS,
            datapath.endpoints().ok().map(|e| e.len()),
            ENDPOINTS_MAX,
        ),
        fill(
            weir_common::maps::POLICY_PEERS,
            datapath.peers().ok().map(|e| e.len()),
            POLICY_PEERS_MAX,
        ),
        fill(
            weir_common::maps::POLICY_PORTS,
            datapath.ports().ok().map(|e| e.len()),
            POLICY_PORTS_MAX,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (entries, capacity): (Vec<_>, Vec<_>) = maps.into_iter().unzip();
    gauge(
        &mut out,
        "weir_map_entries",
        "Entries in an eBPF map.",
        "gauge",
        &entries,
    );
    gauge(
        &mut out,
        "weir_map_capacity",
        "Maximum entries of an eBPF map.",
        "gauge",
        &capacity,
    );

    // Summed over endpoints; an endpoint's counters leave with it, which Prometheus sees as a reset.
    let mut packets = std::collections::BTreeMap::<(&str, &str, bool), u64>::new();
    for (key, value) in datapath.counters().unwrap_or_default() {
        let Some(reason) = Reason::from_code(key.reason) else {
            continue;
        };
        let direction = if key.direction == DIR_FROM_POD {
            "from_pod"
        } else {
            "to_pod"
        };
        *packets
            .entry((direction, reason.name(), reason.is_drop()))
            .or_default() += value.packets;
    }
    let drops: Vec<(String, u64)> = packets
        .iter()
        .filter(|((_, _, drop), _)| *drop)
        .map(|((direction, reason, _), n)| {
            (
                format!("{{direction=\"{direction}\",reason=\"{reason}\"}}"),
                *n,
            )
        })
        .collect();
    gauge(
        &mut out,
        "weir_drops_total",
        "Packets the datapath dropped, by reason.",
        "counter",
        &drops,
    );
    let passed: Vec<(String, u64)> = packets
        .iter()
        .filter(|((_, _, drop), _)| !*drop)
        .map(|((direction, reason, _), n)| {
            (
                format!("{{direction=\"{direction}\",reason=\"{reason}\"}}"),
                *n,
            )
        })
        .collect();
    gauge(
        &mut out,
        "weir_forwarded_total",
        "Packets the datapath forwarded, by path.",
        "counter",
        &passed,
    );
    policy.latency.write(
        &mut out,
        "weir_policy_programming_seconds",
        "Time from an object change seen on the Kubernetes API to the maps enforcing it.",
    );
    out
}

/// What the endpoints ask about.
pub trait Status {
    /// The agent is up (datapath loaded, conflist written).
    fn started(&self) -> bool;
    /// The metrics, or `None` when the agent did not answer in time (stuck).
    fn metrics(&self) -> impl std::future::Future<Output = Option<String>> + Send;
}

/// How long a probe waits for the agent's lock before calling it stuck.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running agent, once it is up.
#[derive(Default)]
pub struct Health {
    pub agent: OnceLock<Arc<Mutex<Agent>>>,
}

impl Status for Health {
    fn started(&self) -> bool {
        self.agent.get().is_some()
    }

    async fn metrics(&self) -> Option<String> {
        let agent = self.agent.get()?;
        let agent = tokio::time::timeout(AGENT_TIMEOUT, agent.lock())
            .await
            .ok()?;
        Some(render(agent.endpoints(), agent.policy()))
    }
}

/// The status line and body for a GET of `path`.
pub async fn respond(status: &impl Status, path: &str) -> (u16, String) {
    match path {
        "/healthz" if !status.started() => (200, "starting\n".into()),
        "/healthz" | "/readyz" if status.started() => match status.metrics().await {
            Some(_) => (200, "ok\n".into()),
            None => (503, "the agent did not answer in time\n".into()),
        },
        "/readyz" => (503, "starting\n".into()),
        "/metrics" => match status.metrics().await {
            Some(text) => (200, text),
            None => (503, "not started\n".into()),
        },
        _ => (404, "not found\n".into()),
    }
}

/// Serves one connection: reads a request head, answers, closes.
pub async fn handle_connection<S>(mut stream: S, status: &impl Status) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(AGENT_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (code, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(target)) => {
            let path = target.split('?').next().unwrap_or(target);
            respond(status, path).await
        }
        (Some(_), Some(_)) => (405, "only GET\n".into()),
        _ => (400, "bad request\n".into()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Serves the endpoints forever, one connection at a time (probes and a scraper are all the
/// clients there are).
pub async fn serve(listener: TcpListener, status: Arc<impl Status>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(e) = handle_connection(stream, status.as_ref()).await {
                    debug!(%peer, error = %e, "metrics connection");
                }
            }
            Err(e) => {
                debug!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_common::CounterValue;

    use super::*;
    use crate::datapath::fake::FakeDatapath;

    struct Fixed(Option<String>, bool);

    impl Status for Fixed {
        fn started(&self) -> bool {
            self.1
        }
        async fn metrics(&self) -> Option<String> {
            self.0.clone()
        }
    }

    async fn get(status: &Fixed, request: &str) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.unwrap();
        handle_connection(server, status).await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_answers_follow_the_agent() {
        let starting = Fixed(None, false);
        assert!(get(&starting, "GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(get(&starting, "GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 503"));
        let up = Fixed(Some("weir_endpoints 3\n".into()), true);
        assert!(get(&up, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        let metrics = get(&up, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200"));
        assert!(metrics.contains("Content-Length: 17\r\n"));
        assert!(metrics.ends_with("\r\n\r\nweir_endpoints 3\n"));
        let stuck = Fixed(None, true);
        assert!(get(&stuck, "GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 503"));
        assert!(get(&up, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        assert!(get(&up, "GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::latency();
        for v in [0.0005, 0.003, 0.003, 100.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.write(&mut out, "t", "help");
        assert!(out.contains("t_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("t_bucket{le=\"0.005\"} 3\n"));
        assert!(out.contains("t_bucket{le=\"30\"} 3\n"));
        assert!(out.contains("t_bucket{le=\"+Inf\"} 4\n"));
        assert!(out.contains("t_count 4\n"));
    }

    #[test]
    fn metrics_count_endpoints_maps_and_drops_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut datapath = FakeDatapath::default();
        let drop = (1..200)
            .find_map(|c| Reason::from_code(c).filter(|r| r.is_drop()))
            .unwrap();
        let pass = (1..200)
            .find_map(|c| Reason::from_code(c).filter(|r| !r.is_drop()))
            .unwrap();
        let value = |packets| CounterValue { packets, bytes: 0 };
        datapath
            .counters
            .insert((7, DIR_FROM_POD, drop as u16), value(3));
        datapath
            .counters
            .insert((8, DIR_FROM_POD, drop as u16), value(4));
        datapath
            .counters
            .insert((8, DIR_FROM_POD, pass as u16), value(10));
        datapath.peers.insert(
            crate::datapath::PeerEntry {
                table: 5,
                net: "10.0.0.0/8".parse().unwrap(),
            },
            1,
        );
        let endpoints = Endpoints::open(datapath, dir.path()).unwrap();
        let policy = PolicyEngine::new(None).unwrap();
        let text = render(&endpoints, &policy);
        assert!(text.contains("weir_endpoints 0\n"), "{text}");
        assert!(text.contains(&format!(
            "weir_drops_total{{direction=\"from_pod\",reason=\"{}\"}} 7\n",
            drop.name()
        )));
        assert!(text.contains(&format!(
            "weir_forwarded_total{{direction=\"from_pod\",reason=\"{}\"}} 10\n",
            pass.name()
        )));
        assert!(text.contains("weir_map_entries{map=\"WEIR_POLICY_PEERS\"} 1\n"));
        assert!(text.contains("weir_map_capacity{map=\"WEIR_POLICY_PEERS\"} 1048576\n"));
        assert!(text.contains("weir_policy_programming_seconds_count 0\n"));
    }
}
