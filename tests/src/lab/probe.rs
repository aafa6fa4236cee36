// SPDX-License-Identifier: Apache-2.0
//! Probes between pods, addresses and Services, one at a time or as a matrix of every pair.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{
    names::{Endpoint, PodRef},
    probe::{probe_in, ProbeSpec, Proto},
    state::{LabState, PodState},
};

use super::{LabError, MATRIX_PARALLELISM};

/// One probe's result, as `weir-lab probe` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub from: String,
    pub to: String,
    pub ip: Ipv4Addr,
    pub proto: Proto,
    /// `None` for ICMP.
    pub port: Option<u16>,
    /// The probe went to the target pod's ClusterIP (`ip`), not to the pod.
    pub via_service: bool,
    pub connected: bool,
    pub rtt_us: Option<u64>,
    pub error: Option<String>,
    /// TCP: the line the server wrote (its name); UDP: the echoed payload.
    pub reply: Option<String>,
}

/// What to probe: a pod (`"ns/name"`) or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    Pod(String),
    Ip(Ipv4Addr),
}

impl ProbeTarget {
    pub fn pod(namespace: &str, name: &str) -> Self {
        Self::Pod(format!("{namespace}/{name}"))
    }

    pub(super) fn endpoint(&self) -> Result<Endpoint> {
        match self {
            Self::Pod(pod) => Ok(Endpoint::Pod(pod.parse()?)),
            Self::Ip(ip) => Ok(Endpoint::Ip(*ip)),
        }
    }
}

/// How to probe: `ProbeOptions::new(Proto::Tcp, 80).via_service().timeout(d)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    pub proto: Proto,
    /// Ignored for ICMP.
    pub port: u16,
    /// Probe the target pod's ClusterIP instead of the pod.
    pub via_service: bool,
    pub timeout: Duration,
}

impl ProbeOptions {
    /// Straight to the pod, 1 s timeout.
    pub fn new(proto: Proto, port: u16) -> Self {
        Self {
            proto,
            port,
            via_service: false,
            timeout: Duration::from_secs(1),
        }
    }

    pub fn via_service(mut self) -> Self {
        self.via_service = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What a [`Matrix`] probes: `MatrixOptions::new(Proto::Udp, 53).via_service()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixOptions {
    pub proto: Proto,
    pub port: u16,
    pub via_service: bool,
    pub timeout: Duration,
    /// The pods (`"ns/name"`) whose every ordered pair is probed; `None`: all of them.
    pub pods: Option<Vec<String>>,
}

impl MatrixOptions {
    /// Every pod, straight to the pod, 1 s timeout.
    pub fn new(proto: Proto, port: u16) -> Self {
        Self {
            proto,
            port,
            via_service: false,
            timeout: Duration::from_secs(1),
            pods: None,
        }
    }

    pub fn via_service(mut self) -> Self {
        self.via_service = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn pods<S: AsRef<str>>(mut self, pods: &[S]) -> Self {
        self.pods = Some(pods.iter().map(|p| p.as_ref().to_owned()).collect());
        self
    }
}

/// One cell of a [`Matrix`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixEntry {
    pub from: String,
    pub to: String,
    /// A pod probing itself (through its own IP, or through its ClusterIP and back by hairpin
    /// NAT with `via_service`). Kubernetes' NetworkPolicy model always allows the former.
    pub loopback: bool,
    pub connected: bool,
    pub error: Option<String>,
}

/// Every ordered pair of pods probed, loopback pairs included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub proto: Proto,
    pub port: Option<u16>,
    pub via_service: bool,
    pub results: Vec<MatrixEntry>,
}

impl Matrix {
    /// Did `from` reach `to`? `None` if that pair was not probed.
    pub fn connected(&self, from: &str, to: &str) -> Option<bool> {
        self.results
            .iter()
            .find(|e| e.from == from && e.to == to)
            .map(|e| e.connected)
    }

    /// Rows are sources, columns destinations: `ok`, `--` (no connection), `.` (self, not
    /// probed) or `?` (not probed).
    pub fn table(&self) -> String {
        let mut pods: Vec<&str> = self
            .results
            .iter()
            .flat_map(|e| [e.from.as_str(), e.to.as_str()])
            .collect();
        pods.sort_unstable();
        pods.dedup();
        let mut title = match self.port {
            Some(port) => format!("{}/{port}", self.proto),
            None => self.proto.to_string(),
        };
        if self.via_service {
            title.push_str(" via service");
        }
        let corner = format!("{title} from\\to");
        let first = pods
            .iter()
            .map(|p| p.len())
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let mut lines = Vec::with_capacity(pods.len() + 1);
        let mut header = format!("{corner:<first$}");
        for to in &pods {
            let _ = write!(header, "  {to}");
        }
        lines.push(header);
        for from in &pods {
            let mut row = format!("{from:<first$}");
            for to in &pods {
                let cell = match self.connected(from, to) {
                    Some(true) => "ok",
                    Some(false) => "--",
                    None if from == to => ".",
                    None => "?",
                };
                let _ = write!(row, "  {cell:<width$}", width = to.len());
            }
            lines.push(row.trim_end().to_owned());
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

/// Where a probe runs from: netns and source address.
pub(super) fn resolve_from(
    state: &LabState,
    from: &Endpoint,
) -> Result<(String, Option<Ipv4Addr>)> {
    match from {
        Endpoint::Pod(pod) => {
            let found = state
                .pod(pod)
                .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
            Ok((found.netns.clone(), None))
        }
        Endpoint::Node(k) => Ok((
            state
                .node(*k)
                .ok_or(LabError::NoSuchNode(*k))?
                .netns
                .clone(),
            None,
        )),
        // The outside host speaks from its own address, not from the segment's gateway.
        Endpoint::Ext => Ok((state.ext.netns.clone(), Some(state.ext.host_ip))),
        Endpoint::Ip(ip) => bail!("a probe must start from a pod, a node or ext, not {ip}"),
    }
}

pub(super) fn resolve_to(state: &LabState, to: &Endpoint) -> Result<Ipv4Addr> {
    match to {
        Endpoint::Pod(pod) => Ok(state
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?
            .ip),
        Endpoint::Node(k) => Ok(state.node(*k).ok_or(LabError::NoSuchNode(*k))?.ip),
        Endpoint::Ext => Ok(state.ext.host_ip),
        Endpoint::Ip(ip) => Ok(*ip),
    }
}

/// Probe between two endpoints of a lab whose state is `state`.
pub fn probe_endpoints(
    state: &LabState,
    from: &Endpoint,
    to: &Endpoint,
    proto: Proto,
    port: u16,
    timeout: Duration,
) -> Result<ProbeResult> {
    let opts = ProbeOptions::new(proto, port).timeout(timeout);
    probe_via(state, from, to, &opts)
}

/// Probe from `from` to `to`, or with `via_service` to the ClusterIP of pod `to`.
pub fn probe_via(
    state: &LabState,
    from: &Endpoint,
    to: &Endpoint,
    opts: &ProbeOptions,
) -> Result<ProbeResult> {
    let (netns, source) = resolve_from(state, from)?;
    let dest = if opts.via_service {
        let Endpoint::Pod(pod) = to else {
            bail!("probing via a Service needs a pod as the target, not {to}");
        };
        let found = state
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
        found
            .cluster_ip
            .with_context(|| format!("pod {pod} has no Service"))?
    } else {
        resolve_to(state, to)?
    };
    let outcome = probe_in(
        &netns,
        &ProbeSpec {
            source,
            dest,
            proto: opts.proto,
            port: opts.port,
            timeout: opts.timeout,
        },
    )?;
    Ok(ProbeResult {
        from: from.to_string(),
        to: to.to_string(),
        ip: dest,
        proto: opts.proto,
        port: opts.proto.has_ports().then_some(opts.port),
        via_service: opts.via_service,
        connected: outcome.connected,
        rtt_us: outcome
            .rtt
            .map(|rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
        error: outcome.error,
        reply: outcome.reply,
    })
}

/// Run `f` on every item with at most `workers` threads; results in item order.
pub(super) fn run_bounded<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    break;
                };
                let result = f(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Probe every ordered pair of pods, loopback pairs included, [`MATRIX_PARALLELISM`] at a time.
pub fn matrix(state: &LabState, proto: Proto, port: u16, timeout: Duration) -> Result<Matrix> {
    matrix_with(state, &MatrixOptions::new(proto, port).timeout(timeout))
}

/// [`matrix`] with options: a subset of pods, via their Services.
pub fn matrix_with(state: &LabState, opts: &MatrixOptions) -> Result<Matrix> {
    let mut pods: Vec<PodRef> = match &opts.pods {
        None => state.pods.iter().map(PodState::pod_ref).collect(),
        Some(list) => list
            .iter()
            .map(|p| {
                let pod: PodRef = p.parse()?;
                state
                    .pod(&pod)
                    .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
                Ok(pod)
            })
            .collect::<Result<_>>()?,
    };
    pods.sort();
    pods.dedup();
    let pairs: Vec<(Endpoint, Endpoint)> = pods
        .iter()
        .flat_map(|from| {
            pods.iter()
                .map(move |to| (Endpoint::Pod(from.clone()), Endpoint::Pod(to.clone())))
        })
        .collect();
    let probe = ProbeOptions {
        proto: opts.proto,
        port: opts.port,
        via_service: opts.via_service,
        timeout: opts.timeout,
    };
    let outcomes = run_bounded(&pairs, MATRIX_PARALLELISM, |(from, to)| {
        probe_via(state, from, to, &probe)
    });
    let mut results = Vec::with_capacity(pairs.len());
    for ((from, to), outcome) in pairs.iter().zip(outcomes) {
        let result = outcome?;
        results.push(MatrixEntry {
            from: result.from,
            to: result.to,
            loopback: from == to,
            connected: result.connected,
            error: result.error,
        });
    }
    Ok(Matrix {
        proto: opts.proto,
        port: opts.proto.has_ports().then_some(opts.port),
        via_service: opts.via_service,
        results,
    })
}
