// SPDX-License-Identifier: Apache-2.0
//! The lab itself: a small "cluster" of network namespaces on one machine.
//!
//! ```text
//!                 weir-lab-<id>-ext  ("the internet")
//!   lo: 203.0.113.1/32 (outside host, serves tcp/udp 80,81)
//!   br0: 192.0.2.1/24 ── n1 ── n2 ...            (veth peers, bridged)
//!                         │     │
//!   weir-lab-<id>-n1: eth0 192.0.2.11/24, default via 192.0.2.1, ip_forward=1
//!       weir-agent run --pod-cidr 10.244.1.0/24 ... (bpffs /sys/fs/bpf/weir-lab-<id>-n1)
//!       pods: weir-lab-<id>-p-<hash>, wired up by `weir` ADD, each serving tcp/udp/sctp 80,81
//!       iptables nat: one ClusterIP (10.96.0.0/12) per pod, DNAT as kube-proxy does
//!   <lab dir>/manifests: the Namespaces, Pods, Services and NetworkPolicies every agent watches
//! ```
//!
//! Objects reach the agents as files in the manifest directory (see [`crate::manifest`]); after
//! writing, the lab sends every agent `Sync`, which answers once the change is programmed and
//! names the objects it rejects. Every change the lab makes (pod add/del, apply, delete, label)
//! returns only then, and fails if an object it wrote is rejected.
//!
//! Nothing is ever created in the machine's own network namespace: links are made with `ip -n`
//! inside lab namespaces, and processes enter a lab namespace before they do anything.
//!
//! [`up`], [`down`] and the [`Lab`] methods are what the `weir-lab` CLI runs; integration tests use
//! them directly. Each takes the lab's lock, so several processes can drive one lab.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use weir_agent_api::Rejected;

use crate::{
    agent::{agent_sync, run_agent_cleanup, start_agent, wait_agent_ready, AgentConfig},
    cni::{parse_add_result, plugin_config_from_dir, run_cni, with_prev_result, CniEnv, CniError},
    manifest::{
        change_labels, namespace_object, node_object, parse_documents, pod_object, service_object,
        Kind, ManifestDir, Object, ObjectRef, NAMESPACE_NAME_LABEL,
    },
    names::{self, Endpoint, PodRef},
    netns::{
        create_netns, delete_netns, in_netns, ip_in, list_netns, netns_exists, netns_inode,
        netns_path, pids_in_netns, Netns,
    },
    paths::{self, require_bin},
    probe::{probe_in, ProbeSpec, Proto},
    process::{spawn_detached, ProcessRef, Spawn},
    service::{self, ServePort},
    state::{ExtState, LabState, NodeState, Phase, PodState, Routing, StateLock, STATE_VERSION},
};

/// Most nodes a lab may have.
pub const MAX_NODES: u32 = 8;
/// How long `down` gives an agent between SIGTERM and SIGKILL.
pub const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Longest unix socket path (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;
/// How long an agent may take to answer `Sync` (compiling and programming every policy).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Most probes a matrix runs at once.
pub const MATRIX_PARALLELISM: usize = 24;

/// Errors a caller may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("no lab is up in {0} (run `weir-lab up`)")]
    NotUp(PathBuf),
    #[error("a lab is already up in {0} (run `weir-lab down` first)")]
    AlreadyUp(PathBuf),
    #[error("the lab in {0} is half-built (an earlier `up` failed); run `weir-lab down`")]
    HalfBuilt(PathBuf),
    #[error("no pod {0} in the lab")]
    NoSuchPod(PodRef),
    #[error("pod {0} already exists")]
    PodExists(PodRef),
    #[error("the lab has no node {0}")]
    NoSuchNode(u32),
    /// The CNI plugin refused an ADD; `stderr` is the plugin's.
    #[error("CNI ADD for {pod} failed: {error}")]
    CniAdd {
        pod: PodRef,
        error: CniError,
        stderr: String,
    },
    #[error("CNI DEL for {pod} failed: {error}")]
    CniDel {
        pod: PodRef,
        error: CniError,
        stderr: String,
    },
    /// An agent rejected objects the lab just wrote: `"NetworkPolicy x/a: reason"` each. The
    /// objects stay in the manifest directory (an agent isolates the pods a rejected policy
    /// selects) until they are deleted or fixed.
    #[error("rejected by the agents: {}", .0.join("; "))]
    Rejected(Vec<String>),
    #[error("no {0} in the lab")]
    NoSuchObject(String),
}

/// How to bring a lab up.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Lab directory (state, logs, agent dirs); its path determines the lab id.
    pub dir: PathBuf,
    pub nodes: u32,
    pub routing: Routing,
    /// How long to wait for every agent to be ready.
    pub ready_timeout: Duration,
    /// Give ext routes to every pod CIDR (as if pod IPs were routable from outside). Off by
    /// default: the internet knows nothing of pod IPs, so pod → ext needs masquerading.
    pub ext_pod_routes: bool,
    /// Leave a failed `up` in place for debugging instead of tearing it down.
    pub keep_on_failure: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            dir: paths::lab_dir(None),
            nodes: 1,
            routing: Routing::Native,
            ready_timeout: Duration::from_secs(30),
            ext_pod_routes: false,
            keep_on_failure: false,
        }
    }
}

impl LabOptions {
    /// Options for a lab in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    /// Options for a lab of its own, for one test: `<tmp>/weir-lab-<tag>-<pid>`.
    pub fn isolated(tag: &str) -> Self {
        Self::in_dir(std::env::temp_dir().join(format!("weir-lab-{tag}-{}", std::process::id())))
    }
}

/// A pod as the lab reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// Node name (`n1`).
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub mac: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Everything the pod serves (`serve-<port>-<proto>` container ports).
    pub ports: Vec<ServePort>,
    /// The pod's Service address.
    pub cluster_ip: Option<Ipv4Addr>,
}

impl PodInfo {
    fn new(state: &LabState, pod: &PodState) -> Self {
        Self {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            ip: pod.ip,
            node: state
                .node(pod.node)
                .map_or_else(|| names::node_name(pod.node), |n| n.name.clone()),
            netns: pod.netns.clone(),
            container_id: pod.container_id.clone(),
            mac: pod.mac.clone(),
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
            cluster_ip: pod.cluster_ip,
        }
    }

    pub fn pod_ref(&self) -> PodRef {
        PodRef::new(&self.namespace, &self.name)
    }
}

/// What to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub pod: PodRef,
    pub labels: BTreeMap<String, String>,
    /// 1-based node index; `None`: the lab spreads pods over its nodes, round-robin.
    pub node: Option<u32>,
    /// Served on top of TCP, UDP and SCTP 80 and 81.
    pub serve: Vec<ServePort>,
    /// ADD runs before the agents know the Pod (the API's watch lagging behind the kubelet), and
    /// the Pod stays unknown until [`Lab::publish_pod`].
    pub unpublished: bool,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            pod: PodRef::new(namespace, name),
            labels: BTreeMap::new(),
            node: None,
            serve: Vec::new(),
            unpublished: false,
        }
    }

    /// Add the pod (CNI ADD) before its Pod object exists; see [`Lab::publish_pod`].
    pub fn unpublished(mut self) -> Self {
        self.unpublished = true;
        self
    }

    /// Also serve `proto`/`port` (a container port named `serve-<port>-<proto>`).
    pub fn serve(mut self, proto: Proto, port: u16) -> Self {
        self.serve.push(ServePort::new(proto, port));
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn on_node(mut self, node: u32) -> Self {
        self.node = Some(node);
        self
    }
}

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

    fn endpoint(&self) -> Result<Endpoint> {
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

/// What `down` could not do, short of leaving something behind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    pub deleted_netns: Vec<String>,
    pub warnings: Vec<String>,
}

/// A lab, driven from this process.
///
/// [`Lab::up`] brings one up and tears it down when the value is dropped (so a failing test leaves
/// nothing behind); [`Lab::open`] attaches to a running one and leaves it alone on drop.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    id: String,
    down_on_drop: bool,
}

impl Lab {
    /// Bring a lab up; it goes down when this value is dropped.
    pub fn up(opts: &LabOptions) -> Result<Self> {
        let state = up(opts)?;
        Ok(Self {
            dir: state.dir,
            id: state.id,
            down_on_drop: true,
        })
    }

    /// Attach to the lab that is up in `dir` (see [`paths::lab_dir`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = names::normalize_dir(dir);
        let state = read_state(&dir)?;
        Ok(Self {
            dir,
            id: state.id,
            down_on_drop: false,
        })
    }

    /// Keep (or stop keeping) the lab when this value is dropped.
    pub fn set_down_on_drop(&mut self, down_on_drop: bool) {
        self.down_on_drop = down_on_drop;
    }

    /// Tear the lab down now.
    pub fn down(mut self) -> Result<DownReport> {
        self.down_on_drop = false;
        down(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A snapshot of the state file.
    pub fn state(&self) -> Result<LabState> {
        read_state(&self.dir)
    }

    /// Node 1's netns.
    pub fn node_netns(&self) -> String {
        names::node_netns(&self.id, 1)
    }

    /// The ext ("internet") netns.
    pub fn ext_netns(&self) -> String {
        names::ext_netns(&self.id)
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: u32) -> Result<NodeState> {
        self.state()?
            .node(index)
            .cloned()
            .ok_or_else(|| LabError::NoSuchNode(index).into())
    }

    /// The CNI plugin configuration node `index`'s agent published (from its conflist).
    pub fn plugin_config(&self, index: u32) -> Result<Value> {
        plugin_config_from_dir(&self.node(index)?.cni_conf_dir)
    }

    /// A `weir` invocation as node `index`'s runtime would make it (runs in the node netns).
    pub fn cni_env(&self, index: u32, command: &str) -> Result<CniEnv> {
        let node = self.node(index)?;
        Ok(CniEnv::new(command).run_in(&node.netns))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo> {
        let state = self.state()?;
        let pod = PodRef::new(namespace, name);
        let found = state.pod(&pod).ok_or(LabError::NoSuchPod(pod))?;
        Ok(PodInfo::new(&state, found))
    }

    pub fn pods(&self) -> Result<Vec<PodInfo>> {
        let state = self.state()?;
        Ok(state.pods.iter().map(|p| PodInfo::new(&state, p)).collect())
    }

    /// Add a pod on node 1.
    pub fn add_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Result<PodInfo> {
        let spec = labels
            .iter()
            .fold(PodSpec::new(namespace, name), |spec, (k, v)| {
                spec.label(k, v)
            });
        self.add_pod_with(&spec)
    }

    /// Create the pod's netns, run `weir` ADD, start its server, record it.
    pub fn add_pod_with(&self, spec: &PodSpec) -> Result<PodInfo> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let mut state = load_up(&lock)?;
        add_pod_locked(&lock, &mut state, spec)
    }

    /// Stop the pod's server, run `weir` DEL (with prevResult), delete its netns.
    pub fn del_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let mut state = load_up(&lock)?;
        del_pod_locked(&lock, &mut state, &PodRef::new(namespace, name))
    }

    /// Give a pod added [`PodSpec::unpublished`] its Pod object (and Service), as the API's watch
    /// finally delivers it; returns once every agent has programmed it.
    pub fn publish_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let mut state = load_up(&lock)?;
        publish_pod(&lock, &mut state, &PodRef::new(namespace, name))
    }

    /// Probe from `from` to `to`; each is `NS/NAME`, `node`, `nodeK`, `ext` or (`to` only) an
    /// IPv4 address. `port` is ignored for ICMP.
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        proto: Proto,
        port: u16,
        timeout: Duration,
    ) -> Result<ProbeResult> {
        let from: Endpoint = from.parse()?;
        let to: Endpoint = to.parse()?;
        probe_endpoints(&self.state()?, &from, &to, proto, port, timeout)
    }

    /// Probe every ordered pair of pods (loopback pairs included), in parallel.
    pub fn matrix(&self, proto: Proto, port: u16, timeout: Duration) -> Result<Matrix> {
        matrix(&self.state()?, proto, port, timeout)
    }

    /// Probe from `from` (a pod `ns/name`, or `node`, `nodeK`, `ext`) to `to`, straight or
    /// through the target pod's Service.
    pub fn probe_with(
        &self,
        from: &str,
        to: &ProbeTarget,
        opts: &ProbeOptions,
    ) -> Result<ProbeResult> {
        let from: Endpoint = from.parse()?;
        probe_via(&self.state()?, &from, &to.endpoint()?, opts)
    }

    /// Probe every ordered pair of `opts.pods` (or of every pod), loopback pairs included, up to
    /// [`MATRIX_PARALLELISM`] at a time.
    pub fn matrix_with(&self, opts: &MatrixOptions) -> Result<Matrix> {
        matrix_with(&self.state()?, opts)
    }

    /// Apply Kubernetes objects, as `kubectl apply -f` would: YAML documents separated by `---`,
    /// or JSON; Namespaces, Pods and NetworkPolicies only. Namespaces that objects need are
    /// created. A Pod that is in the lab gets the applied labels; one that is not is added (with
    /// the labels, `spec.nodeName` and container ports the manifest gives). Returns once every
    /// agent has programmed the change; fails, before writing anything, if a document is
    /// malformed, and with [`LabError::Rejected`] if an agent rejects an applied object.
    pub fn apply_yaml(&self, yaml: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let mut state = load_up(&lock)?;
        apply_locked(&lock, &mut state, yaml)
    }

    /// Delete a NetworkPolicy and wait until every agent has programmed that.
    pub fn delete_policy(&self, namespace: &str, name: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let state = load_up(&lock)?;
        let id = ObjectRef::namespaced(Kind::NetworkPolicy, namespace, name);
        if !manifests(&state).remove(&id)? {
            return Err(LabError::NoSuchObject(id.to_string()).into());
        }
        sync_agents(&state).map(drop)
    }

    /// Change a pod's labels (`"k=v"` sets, `"k-"` removes) and wait until every agent has
    /// programmed that.
    pub fn label_pod(&self, namespace: &str, name: &str, changes: &[&str]) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let mut state = load_up(&lock)?;
        let pod = PodRef::new(namespace, name);
        let index = state
            .pods
            .iter()
            .position(|p| p.pod_ref() == pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
        let mut labels = state.pods[index].labels.clone();
        change_labels(&mut labels, changes)?;
        set_pod_labels(&lock, &mut state, index, labels)
    }

    /// Change a namespace's labels (`"k=v"`, `"k-"`) and wait until every agent has programmed
    /// that. `kubernetes.io/metadata.name` cannot be changed.
    pub fn label_namespace(&self, namespace: &str, changes: &[&str]) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let state = load_up(&lock)?;
        let manifests = manifests(&state);
        let id = ObjectRef::namespace(namespace);
        let mut object = manifests
            .read(&id)?
            .ok_or_else(|| LabError::NoSuchObject(id.to_string()))?;
        let mut labels = object.labels();
        change_labels(&mut labels, changes)?;
        if labels.get(NAMESPACE_NAME_LABEL).map(String::as_str) != Some(namespace) {
            bail!("{NAMESPACE_NAME_LABEL} is set by Kubernetes and cannot be changed");
        }
        object.set_labels(&labels);
        manifests.write(&object)?;
        check_sync(&state, &[id])
    }

    /// Write (or rewrite) a Node object, as the API server would hold one for a node joining or
    /// changing its pod CIDR, and wait until every agent has programmed it. The node need not be
    /// one of the lab's: agents route to whatever the objects say.
    pub fn put_node_object(&self, name: &str, ip: Ipv4Addr, pod_cidr: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let state = load_up(&lock)?;
        let object = node_object(name, ip, pod_cidr);
        let id = object.id.clone();
        manifests(&state).write(&object)?;
        check_sync(&state, &[id])
    }

    /// Delete a Node object (a node leaving the cluster) and wait until every agent has
    /// programmed that.
    pub fn delete_node_object(&self, name: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let state = load_up(&lock)?;
        let id = ObjectRef::node(name);
        if !manifests(&state).remove(&id)? {
            return Err(LabError::NoSuchObject(id.to_string()).into());
        }
        sync_agents(&state).map(drop)
    }

    /// The ClusterIP of the pod's Service.
    pub fn service_ip(&self, namespace: &str, name: &str) -> Result<Ipv4Addr> {
        let pod = self.pod(namespace, name)?;
        pod.cluster_ip
            .ok_or_else(|| anyhow::anyhow!("pod {namespace}/{name} has no Service"))
    }

    /// Sync every agent with the manifest directory; returns every object they reject.
    pub fn sync(&self) -> Result<Vec<Rejected>> {
        sync_agents(&self.state()?)
    }

    /// The lab's manifest directory.
    pub fn manifest_dir(&self) -> Result<PathBuf> {
        Ok(self.state()?.manifest_dir)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down_on_drop {
            match down(&self.dir) {
                Ok(report) => {
                    for warning in report.warnings {
                        eprintln!("weir-lab down: {warning}");
                    }
                }
                Err(err) => eprintln!("weir-lab down: {err:#}"),
            }
        }
    }
}

/// Read the state of the lab that is up in `dir`.
pub fn read_state(dir: &Path) -> Result<LabState> {
    let dir = names::normalize_dir(dir);
    if !dir.join(crate::state::STATE_FILE).exists() {
        return Err(LabError::NotUp(dir).into());
    }
    let lock = StateLock::acquire(&dir, false)?;
    load_up(&lock)
}

fn load_up(lock: &StateLock) -> Result<LabState> {
    match lock.load()? {
        Some(state) if state.phase == Phase::Up => Ok(state),
        Some(_) => Err(LabError::HalfBuilt(lock.dir().to_path_buf()).into()),
        None => Err(LabError::NotUp(lock.dir().to_path_buf()).into()),
    }
}

/// The `weir-lab` binary, which runs the servers (`weir-lab serve`).
fn lab_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    if exe.file_name().is_some_and(|n| n == "weir-lab") {
        return Ok(exe);
    }
    require_bin("weir-lab")
}

/// Start `weir-lab serve` in `netns` answering as `name` on `bind`, on `ports`.
fn start_server(
    netns: &str,
    name: &str,
    bind: Ipv4Addr,
    log: &Path,
    ports: &[ServePort],
) -> Result<ProcessRef> {
    let list = |proto: Proto| {
        ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| p.port.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut command = Command::new(lab_binary()?);
    command
        .args(["serve", "--netns", netns, "--name", name, "--bind"])
        .arg(bind.to_string())
        .args(["--tcp", &list(Proto::Tcp), "--udp", &list(Proto::Udp)])
        .args(["--sctp", &list(Proto::Sctp)]);
    spawn_detached(Spawn {
        command,
        netns: None,
        log,
        ready_timeout: Some(Duration::from_secs(5)),
    })
    .with_context(|| format!("starting the server for {name}"))
}

/// Mount bpffs on `/sys/fs/bpf` if nothing is mounted there (as a Kubernetes node would have it).
/// Returns whether it mounted it. This is a mount, not a network change; it is left in place.
pub fn ensure_bpffs() -> Result<bool> {
    use nix::{
        mount::{mount, MsFlags},
        sys::statfs::{statfs, BPF_FS_MAGIC},
    };
    let root = Path::new(names::BPFFS_ROOT);
    let fs = statfs(root).with_context(|| format!("statfs {}", root.display()))?;
    if fs.filesystem_type() == BPF_FS_MAGIC {
        return Ok(false);
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {}", root.display()))?;
    Ok(true)
}

/// The state `up` will build, before anything exists.
pub fn plan(dir: &Path, opts: &LabOptions) -> LabState {
    let id = names::lab_id(dir);
    let nodes = (1..=opts.nodes)
        .map(|k| {
            let node_dir = dir.join(names::node_name(k));
            NodeState {
                index: k,
                name: names::node_name(k),
                netns: names::node_netns(&id, k),
                uplink: "eth0".to_owned(),
                ext_ifname: names::node_name(k),
                ip: names::node_ip(k),
                pod_cidr: names::node_pod_cidr(k),
                bpffs_dir: names::node_bpffs_dir(&id, k),
                cni_conf_dir: node_dir.join("cni/net.d"),
                state_dir: node_dir.join("state"),
                run_dir: node_dir.join("run"),
                log_file: node_dir.join("agent.log"),
                cni_log_file: node_dir.join("cni.log"),
                stdout_log: node_dir.join("agent.out"),
                agent: None,
            }
        })
        .collect();
    LabState {
        version: STATE_VERSION,
        id: id.clone(),
        dir: dir.to_path_buf(),
        phase: Phase::Creating,
        routing: opts.routing,
        cluster_cidr: names::CLUSTER_CIDR.to_owned(),
        manifest_dir: dir.join(crate::manifest::MANIFEST_DIR),
        service_cidr: service::SERVICE_CIDR.to_owned(),
        last_service_index: 0,
        pods_placed: 0,
        ext: ExtState {
            netns: names::ext_netns(&id),
            bridge: "br0".to_owned(),
            gateway_ip: names::EXT_GATEWAY_IP,
            host_ip: names::EXT_HOST_IP,
            server: None,
            server_log: dir.join("ext/server.log"),
        },
        nodes,
        pods: Vec::new(),
    }
}

/// Bring a lab up as `opts` says: namespaces, links, the outside host's server, one agent per
/// node; returns once every agent is ready. On failure everything is torn down again (unless
/// `keep_on_failure`), and the error carries the agents' log tails.
pub fn up(opts: &LabOptions) -> Result<LabState> {
    if !(1..=MAX_NODES).contains(&opts.nodes) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    let dir = names::normalize_dir(&opts.dir);
    let lock = StateLock::acquire(&dir, true)?;
    match lock.load()? {
        Some(state) if state.phase == Phase::Up => return Err(LabError::AlreadyUp(dir).into()),
        Some(_) => return Err(LabError::HalfBuilt(dir).into()),
        None => {}
    }
    let mut state = plan(&dir, opts);
    let leftovers = list_netns(&names::lab_prefix(&state.id));
    if !leftovers.is_empty() {
        bail!(
            "network namespaces of an earlier lab with this id are still there ({}); run `weir-lab down` first",
            leftovers.join(", ")
        );
    }
    require_bin("weir-agent")?;
    lab_binary()?;
    for node in &state.nodes {
        let socket = AgentConfig::for_node(&state, node).socket();
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the agent socket path {} is too long for a unix socket; use a shorter lab directory",
                socket.display()
            );
        }
    }
    lock.save(&state)?;
    match build(&lock, &mut state, opts) {
        Ok(()) => {
            state.phase = Phase::Up;
            lock.save(&state)?;
            Ok(state)
        }
        Err(err) if opts.keep_on_failure => Err(err.context(format!(
            "lab left half-built in {} for debugging (--keep-on-failure)",
            dir.display()
        ))),
        Err(err) => {
            let mut err = err.context("bringing the lab up failed; tore it down again");
            match down_locked(&lock, Some(state)) {
                Ok(report) if !report.warnings.is_empty() => {
                    err = err.context(format!("teardown warnings: {}", report.warnings.join("; ")));
                }
                Ok(_) => {}
                Err(down_err) => {
                    err = err.context(format!("teardown failed too: {down_err:#}"));
                }
            }
            Err(err)
        }
    }
}

fn build(lock: &StateLock, state: &mut LabState, opts: &LabOptions) -> Result<()> {
    ensure_bpffs()?;
    let ext = state.ext.clone();
    let segment = |ip: Ipv4Addr| format!("{ip}/{}", names::SEGMENT_PREFIX_LEN);

    create_netns(&ext.netns)?;
    ip_in(&ext.netns, &["link", "add", &ext.bridge, "type", "bridge"])?;
    ip_in(
        &ext.netns,
        &["addr", "add", &segment(ext.gateway_ip), "dev", &ext.bridge],
    )?;
    ip_in(&ext.netns, &["link", "set", &ext.bridge, "up"])?;
    ip_in(
        &ext.netns,
        &["addr", "add", &format!("{}/32", ext.host_ip), "dev", "lo"],
    )?;

    for node in &state.nodes {
        create_netns(&node.netns)?;
        ip_in(
            &ext.netns,
            &[
                "link",
                "add",
                &node.ext_ifname,
                "type",
                "veth",
                "peer",
                "name",
                &node.uplink,
                "netns",
                &node.netns,
            ],
        )?;
        ip_in(
            &ext.netns,
            &["link", "set", &node.ext_ifname, "master", &ext.bridge, "up"],
        )?;
        ip_in(
            &node.netns,
            &["addr", "add", &segment(node.ip), "dev", &node.uplink],
        )?;
        ip_in(&node.netns, &["link", "set", &node.uplink, "up"])?;
        ip_in(
            &node.netns,
            &[
                "route",
                "add",
                "default",
                "via",
                &ext.gateway_ip.to_string(),
            ],
        )?;
        in_netns(&node.netns, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .with_context(|| format!("enabling forwarding in {}", node.netns))?;
        for dir in [
            &node.cni_conf_dir,
            &node.state_dir,
            &node.run_dir,
            &node.bpffs_dir,
        ] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }

    if opts.ext_pod_routes {
        for node in &state.nodes {
            ip_in(
                &ext.netns,
                &["route", "add", &node.pod_cidr, "via", &node.ip.to_string()],
            )?;
        }
    }

    state.ext.server = Some(start_server(
        &ext.netns,
        "ext",
        ext.host_ip,
        &ext.server_log,
        &service::default_ports(),
    )?);
    std::fs::create_dir_all(&state.manifest_dir)
        .with_context(|| format!("creating {}", state.manifest_dir.display()))?;
    // Every agent learns every node (address, pod CIDR) from these, as from the API's Nodes.
    let manifests = manifests(state);
    for node in &state.nodes {
        manifests.write(&node_object(&node.name, node.ip, &node.pod_cidr))?;
    }
    lock.save(state)?;

    for i in 0..state.nodes.len() {
        let config = AgentConfig::for_node(state, &state.nodes[i]);
        let node = &state.nodes[i];
        let agent = start_agent(&node.netns, &config, &node.stdout_log)?;
        state.nodes[i].agent = Some(agent);
        lock.save(state)?;
    }

    let deadline = Instant::now() + opts.ready_timeout;
    for node in &state.nodes {
        let config = AgentConfig::for_node(state, node);
        let agent = node.agent.context("agent not recorded")?;
        let left = deadline.saturating_duration_since(Instant::now());
        wait_agent_ready(&agent, &config, &node.stdout_log, left)?;
    }
    Ok(())
}

/// The lab's manifest directory.
fn manifests(state: &LabState) -> ManifestDir {
    if state.manifest_dir.as_os_str().is_empty() {
        // A state written before the lab had objects.
        ManifestDir::new(state.dir.join(crate::manifest::MANIFEST_DIR))
    } else {
        ManifestDir::new(&state.manifest_dir)
    }
}

/// Send `Sync` to every node's agent at once; the union of what they reject. Fails if an agent
/// cannot be reached or answers with an error.
fn sync_agents(state: &LabState) -> Result<Vec<Rejected>> {
    let answers: Vec<Result<Vec<Rejected>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let config = AgentConfig::for_node(state, node);
                    agent_sync(&config.socket(), SYNC_TIMEOUT)
                        .map(|(_, rejected)| rejected)
                        .with_context(|| format!("syncing the agent of node {}", node.name))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sync thread panicked")))
            })
            .collect()
    });
    let mut all: Vec<Rejected> = Vec::new();
    for answer in answers {
        for rejected in answer? {
            if !all.contains(&rejected) {
                all.push(rejected);
            }
        }
    }
    Ok(all)
}

/// [`LabError::Rejected`] if `rejected` names any of `ids`.
fn fail_if_rejected(rejected: &[Rejected], ids: &[ObjectRef]) -> Result<()> {
    let hits: Vec<String> = rejected
        .iter()
        .filter(|r| ids.iter().any(|id| id.is_named_by(&r.object)))
        .map(|r| format!("{}: {}", r.object, r.reason))
        .collect();
    if hits.is_empty() {
        Ok(())
    } else {
        Err(LabError::Rejected(hits).into())
    }
}

/// Sync every agent and fail if one rejects any of `ids`.
fn check_sync(state: &LabState, ids: &[ObjectRef]) -> Result<()> {
    fail_if_rejected(&sync_agents(state)?, ids)
}

/// Write the Namespace `name` unless it exists; returns its id.
fn ensure_namespace(manifests: &ManifestDir, name: &str) -> Result<ObjectRef> {
    let id = ObjectRef::namespace(name);
    if !manifests.exists(&id) {
        manifests.write(&namespace_object(name, &BTreeMap::new()))?;
    }
    Ok(id)
}

/// The Pod object of a recorded pod, with its status.
fn recorded_pod_object(state: &LabState, pod: &PodState) -> Object {
    let node = state
        .node(pod.node)
        .map_or_else(|| names::node_name(pod.node), |n| n.name.clone());
    pod_object(&pod.pod_ref(), &pod.labels, &node, &pod.ports, Some(pod.ip))
}

/// Set pod `index`'s labels: state, Pod manifest, sync.
fn set_pod_labels(
    lock: &StateLock,
    state: &mut LabState,
    index: usize,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    state.pods[index].labels = labels;
    lock.save(state)?;
    let object = recorded_pod_object(state, &state.pods[index]);
    manifests(state).write(&object)?;
    check_sync(state, &[object.id])
}

/// Add a pod: Namespace (if missing) and Pod manifests, sync, CNI ADD, server, then the pod's
/// status and Service (manifest and DNAT rules), sync. Undone on failure.
fn add_pod_locked(lock: &StateLock, state: &mut LabState, spec: &PodSpec) -> Result<PodInfo> {
    let pod = spec.pod.clone();
    if !names::is_dns_name(&pod.namespace) || !names::is_dns_name(&pod.name) {
        bail!("{pod} is not NAMESPACE/NAME (lowercase letters, digits, '-' and '.')");
    }
    for (key, value) in &spec.labels {
        crate::manifest::check_label(key, value).with_context(|| format!("pod {pod}"))?;
    }
    if state.pod(&pod).is_some() {
        return Err(LabError::PodExists(pod).into());
    }
    let node = match spec.node {
        Some(index) => state
            .node(index)
            .cloned()
            .ok_or(LabError::NoSuchNode(index))?,
        None => {
            let count = u32::try_from(state.nodes.len()).unwrap_or(u32::MAX).max(1);
            let node = state
                .nodes
                .get((state.pods_placed % count) as usize)
                .cloned()
                .context("the lab has no nodes")?;
            state.pods_placed = state.pods_placed.wrapping_add(1);
            node
        }
    };
    let netns_name = names::pod_netns(&state.id, &pod);
    if let Some(other) = state.pods.iter().find(|p| p.netns == netns_name) {
        bail!(
            "pods {pod} and {} hash to the same netns name {netns_name}; pick another name",
            other.pod_ref()
        );
    }
    if netns_exists(&netns_name) {
        bail!("netns {netns_name} already exists (a leftover?); run `weir-lab down`");
    }
    let weir = require_bin("weir")?;
    let config = plugin_config_from_dir(&node.cni_conf_dir)?;
    let ports = service::all_ports(&spec.serve);

    // The Pod exists (scheduled, no IP yet) before the runtime calls the plugin, as in a cluster.
    let manifests = manifests(state);
    let namespace_id = ensure_namespace(&manifests, &pod.namespace)?;
    let pending = pod_object(&pod, &spec.labels, &node.name, &ports, None);
    let pod_id = pending.id.clone();
    if !spec.unpublished {
        manifests.write(&pending)?;
    }
    let unpublish = |state: &LabState, err: anyhow::Error| {
        let err = err.context(format!("adding pod {pod}"));
        match manifests.remove(&pod_id).and_then(|_| sync_agents(state)) {
            Ok(_) => err,
            Err(undo) => err.context(format!("and removing its Pod manifest failed: {undo:#}")),
        }
    };
    let written: &[_] = if spec.unpublished {
        std::slice::from_ref(&namespace_id)
    } else {
        &[namespace_id.clone(), pod_id.clone()]
    };
    if let Err(err) = check_sync(state, written) {
        return Err(unpublish(state, err));
    }

    let netns = match Netns::create(&netns_name) {
        Ok(netns) => netns,
        Err(err) => return Err(unpublish(state, err)),
    };
    let container_id = names::random_container_id()?;
    let env = CniEnv {
        plugin: weir,
        ..CniEnv::for_pod(
            "ADD",
            &container_id,
            &netns.path(),
            &pod.namespace,
            &pod.name,
        )
        .run_in(&node.netns)
    };
    let out = match run_cni(&env, &config) {
        Ok(out) => out,
        Err(err) => return Err(unpublish(state, err)),
    };
    if let Some(error) = out.error() {
        // What runtimes do after a failed ADD: DEL, so the plugin releases anything half-made.
        let del = CniEnv {
            command: "DEL".to_owned(),
            ..env.clone()
        };
        let _ = run_cni(&del, &config);
        let _ = manifests.remove(&pod_id);
        let _ = sync_agents(state);
        return Err(LabError::CniAdd {
            pod,
            error,
            stderr: out.stderr,
        }
        .into());
    }
    let result = out.json.unwrap_or(Value::Null);
    let undo = |state: &LabState, err: anyhow::Error| {
        let del = CniEnv {
            command: "DEL".to_owned(),
            ..env.clone()
        };
        let err = match run_cni(&del, &with_prev_result(&config, &result)) {
            Ok(out) if out.success() => err,
            Ok(out) => err.context(format!(
                "and the undoing DEL failed: {}",
                out.error().map(|e| e.to_string()).unwrap_or_default()
            )),
            Err(del_err) => err.context(format!("and the undoing DEL failed: {del_err:#}")),
        };
        unpublish(state, err)
    };
    let parsed = match parse_add_result(&result) {
        Ok(parsed) => parsed,
        Err(err) => {
            return Err(undo(
                state,
                err.context(format!("CNI ADD result for {pod}: {result}")),
            ))
        }
    };
    let server_log = state
        .dir
        .join("pods")
        .join(format!("{}.log", names::pod_hash(&pod)));
    let server = match start_server(
        &netns_name,
        &pod.to_string(),
        Ipv4Addr::UNSPECIFIED,
        &server_log,
        &ports,
    ) {
        Ok(server) => server,
        Err(err) => return Err(undo(state, err)),
    };
    state.pods.push(PodState {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        node: node.index,
        netns: netns_name,
        container_id,
        ifname: "eth0".to_owned(),
        ip: parsed.ip,
        mac: parsed.mac,
        labels: spec.labels.clone(),
        ports,
        cluster_ip: None,
        server: Some(server),
        server_log,
        cni_config: config.clone(),
        cni_result: result.clone(),
    });
    if let Err(err) = lock.save(state) {
        server.terminate(Duration::from_secs(1));
        state.pods.pop();
        return Err(undo(state, err));
    }
    netns.persist();

    // Recorded: from here on a failure deletes the pod the ordinary way.
    if spec.unpublished {
        let added = state.pod(&pod).context("pod just added")?;
        return Ok(PodInfo::new(state, added));
    }
    if let Err(err) = publish_pod(lock, state, &pod) {
        let err = err.context(format!("adding pod {pod}"));
        return Err(match del_pod_locked(lock, state, &pod) {
            Ok(()) => err,
            Err(del) => err.context(format!("and deleting the pod again failed: {del:#}")),
        });
    }
    let added = state.pod(&pod).context("pod just added")?;
    Ok(PodInfo::new(state, added))
}

/// Give a recorded pod its Service (ClusterIP, DNAT rules, manifest) and its status (IP,
/// Running) in the Pod manifest; sync.
fn publish_pod(lock: &StateLock, state: &mut LabState, pod: &PodRef) -> Result<()> {
    let index = state
        .pods
        .iter()
        .position(|p| p.pod_ref() == *pod)
        .context("pod not recorded")?;
    state.last_service_index += 1;
    let vip = service::cluster_ip(state.last_service_index)
        .context("the Service CIDR is used up (this lab has handed out every ClusterIP)")?;
    lock.save(state)?;
    let recorded = state.pods[index].clone();
    // Every node translates the ClusterIP, as kube-proxy does: clients on any node reach it.
    let (dnat, hairpin) =
        service::service_rules(vip, recorded.ip, &recorded.ports, &pod.to_string());
    for (k, node) in state.nodes.iter().enumerate() {
        let installed = service::ensure_chains(&node.netns).and_then(|()| {
            service::apply_rules(&node.netns, &service::restore_script('A', &dnat, &hairpin))
        });
        if let Err(err) = installed {
            for earlier in &state.nodes[..k] {
                let _ = service::apply_rules(
                    &earlier.netns,
                    &service::restore_script('D', &dnat, &hairpin),
                );
            }
            return Err(err.context(format!(
                "installing the Service rules of {pod} on {}",
                node.name
            )));
        }
    }
    // Recorded once the rules are in (iptables-restore commits all or nothing), so DEL
    // removes exactly what is there.
    state.pods[index].cluster_ip = Some(vip);
    lock.save(state)?;

    let manifests = manifests(state);
    let service = service_object(pod, vip, &recorded.ports);
    manifests.write(&service)?;
    let running = recorded_pod_object(state, &state.pods[index]);
    manifests.write(&running)?;
    check_sync(state, &[running.id, service.id])
}

/// `weir` DEL for a recorded pod, with the conflist's current configuration (or the one used at
/// ADD, if the conflist is gone) and the ADD result as `prevResult`.
fn cni_del(state: &LabState, pod: &PodState, timeout: Duration) -> Result<()> {
    let node = state.node(pod.node).ok_or(LabError::NoSuchNode(pod.node))?;
    if !netns_exists(&node.netns) {
        bail!(
            "node netns {} is gone; cannot run DEL for {}",
            node.netns,
            pod.pod_ref()
        );
    }
    let config =
        plugin_config_from_dir(&node.cni_conf_dir).unwrap_or_else(|_| pod.cni_config.clone());
    let env = CniEnv {
        plugin: require_bin("weir")?,
        timeout,
        ..CniEnv::for_pod(
            "DEL",
            &pod.container_id,
            &netns_path(&pod.netns),
            &pod.namespace,
            &pod.name,
        )
        .run_in(&node.netns)
    };
    let out = run_cni(&env, &with_prev_result(&config, &pod.cni_result))?;
    match out.error() {
        None => Ok(()),
        Some(error) => Err(LabError::CniDel {
            pod: pod.pod_ref(),
            error,
            stderr: out.stderr,
        }
        .into()),
    }
}

/// Delete a pod: stop its server, CNI DEL (with prevResult), delete its netns, then remove its
/// Service rules and its Service and Pod manifests, and sync. On a failed DEL the pod stays
/// recorded (and its netns in place) so DEL can be retried; later steps are all attempted and the
/// first failure reported.
fn del_pod_locked(lock: &StateLock, state: &mut LabState, pod: &PodRef) -> Result<()> {
    let index = state
        .pods
        .iter()
        .position(|p| p.namespace == pod.namespace && p.name == pod.name)
        .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
    if let Some(server) = state.pods[index].server.take() {
        server.terminate(Duration::from_secs(1));
        lock.save(state)?;
    }
    cni_del(state, &state.pods[index], Duration::from_secs(60))?;
    delete_netns(&state.pods[index].netns)?;
    let removed = state.pods.remove(index);
    lock.save(state)?;

    let mut errors: Vec<anyhow::Error> = Vec::new();
    if let Some(vip) = removed.cluster_ip {
        let (dnat, hairpin) =
            service::service_rules(vip, removed.ip, &removed.ports, &pod.to_string());
        for node in &state.nodes {
            if let Err(err) =
                service::apply_rules(&node.netns, &service::restore_script('D', &dnat, &hairpin))
            {
                errors.push(err.context(format!(
                    "removing the Service rules of {pod} on {}",
                    node.name
                )));
            }
        }
    }
    let manifests = manifests(state);
    for kind in [Kind::Service, Kind::Pod] {
        if let Err(err) = manifests.remove(&ObjectRef::namespaced(kind, &pod.namespace, &pod.name))
        {
            errors.push(err);
        }
    }
    if let Err(err) = sync_agents(state) {
        errors.push(err);
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(err) => Err(err.context(format!("pod {pod} is deleted, but not cleanly"))),
    }
}

/// What `apply` does with a Pod that is not in the lab yet: add it as the manifest says.
fn pod_spec_from_object(state: &LabState, object: &Object) -> Result<PodSpec> {
    let namespace = object.id.namespace.as_deref().unwrap_or("default");
    let mut spec = PodSpec::new(namespace, &object.id.name);
    spec.labels = object.labels();
    let spec_doc = &object.doc["spec"];
    if let Some(node_name) = spec_doc["nodeName"].as_str() {
        spec.node = state
            .nodes
            .iter()
            .find(|n| n.name == node_name)
            .map(|n| Some(n.index))
            .with_context(|| {
                format!("{}: spec.nodeName {node_name} is not a lab node", object.id)
            })?;
    }
    for container in spec_doc["containers"].as_array().into_iter().flatten() {
        for port in container["ports"].as_array().into_iter().flatten() {
            let number = port["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .with_context(|| {
                    format!("{}: bad containerPort {}", object.id, port["containerPort"])
                })?;
            let proto = match port["protocol"].as_str().unwrap_or("TCP") {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                "SCTP" => Proto::Sctp,
                other => bail!("{}: bad port protocol {other}", object.id),
            };
            spec.serve.push(ServePort::new(proto, number));
        }
    }
    Ok(spec)
}

fn apply_locked(lock: &StateLock, state: &mut LabState, text: &str) -> Result<()> {
    // Everything is checked before anything is written.
    let objects = parse_documents(text)?;
    let mut new_pods: Vec<PodSpec> = Vec::new();
    for object in objects.iter().filter(|o| o.id.kind == Kind::Pod) {
        let pod = PodRef::new(
            object.id.namespace.as_deref().unwrap_or("default"),
            &object.id.name,
        );
        if state.pod(&pod).is_none() {
            new_pods.push(pod_spec_from_object(state, object)?);
        }
    }

    let manifests = manifests(state);
    let mut written: Vec<ObjectRef> = Vec::new();
    // Namespaces first, so the objects in them find them.
    let (namespaces, others): (Vec<&Object>, Vec<&Object>) =
        objects.iter().partition(|o| o.id.kind == Kind::Namespace);
    for object in namespaces {
        let mut object = object.clone();
        let mut labels = object.labels();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), object.id.name.clone());
        object.set_labels(&labels);
        manifests.write(&object)?;
        written.push(object.id);
    }
    for object in others {
        let namespace = object.id.namespace.as_deref().unwrap_or("default");
        let namespace_id = ensure_namespace(&manifests, namespace)?;
        if !written.contains(&namespace_id) {
            written.push(namespace_id);
        }
        match object.id.kind {
            Kind::Pod => {
                let pod = PodRef::new(namespace, &object.id.name);
                // Pods in the lab take the applied labels; the rest of the object is the lab's.
                if let Some(index) = state.pods.iter().position(|p| p.pod_ref() == pod) {
                    state.pods[index].labels = object.labels();
                    lock.save(state)?;
                    manifests.write(&recorded_pod_object(state, &state.pods[index]))?;
                    written.push(object.id.clone());
                }
            }
            _ => {
                manifests.write(object)?;
                written.push(object.id.clone());
            }
        }
    }
    check_sync(state, &written)?;
    for spec in &new_pods {
        add_pod_locked(lock, state, spec)?;
    }
    Ok(())
}

/// Where a probe runs from: netns and source address.
fn resolve_from(state: &LabState, from: &Endpoint) -> Result<(String, Option<Ipv4Addr>)> {
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

fn resolve_to(state: &LabState, to: &Endpoint) -> Result<Ipv4Addr> {
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
fn run_bounded<T: Sync, R: Send>(
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

/// Tear down the lab in `dir`, whatever state it is in: stop pod servers and run DEL for each pod,
/// stop the agents (SIGTERM, then SIGKILL after 5 s), run `weir-agent cleanup` in each node,
/// kill anything still running in a lab netns, delete every netns named `weir-lab-<id>-*`,
/// remove `/sys/fs/bpf/weir-lab-<id>-*`, and remove the lab directory. Idempotent.
///
/// Returns an error only if something is left behind; lesser failures are warnings.
pub fn down(dir: &Path) -> Result<DownReport> {
    let dir = names::normalize_dir(dir);
    let lock = StateLock::acquire(&dir, true)?;
    let (state, warning) = match lock.load() {
        Ok(state) => (state, None),
        Err(err) => (None, Some(format!("ignoring unreadable state: {err:#}"))),
    };
    let mut report = down_locked(&lock, state)?;
    report.warnings.extend(warning);
    Ok(report)
}

fn down_locked(lock: &StateLock, state: Option<LabState>) -> Result<DownReport> {
    let dir = lock.dir().to_path_buf();
    let id = state
        .as_ref()
        .map_or_else(|| names::lab_id(&dir), |s| s.id.clone());
    let prefix = names::lab_prefix(&id);
    let mut report = DownReport::default();
    let mut warn = |msg: String| report.warnings.push(msg);

    if let Some(state) = &state {
        for pod in &state.pods {
            if let Some(server) = &pod.server {
                server.terminate(Duration::from_secs(1));
            }
            if let Err(err) = cni_del(state, pod, Duration::from_secs(15)) {
                warn(format!("{err:#}"));
            }
        }
        if let Some(server) = &state.ext.server {
            server.terminate(Duration::from_secs(1));
        }
        // Stop all agents at once; each gets the full grace period.
        std::thread::scope(|scope| {
            for node in &state.nodes {
                if let Some(agent) = node.agent {
                    scope.spawn(move || agent.terminate(AGENT_STOP_GRACE));
                }
            }
        });
        for node in &state.nodes {
            let config = AgentConfig::for_node(state, node);
            if netns_exists(&node.netns) && paths::bin_path("weir-agent").is_file() {
                if let Err(err) = run_agent_cleanup(&node.netns, &config, Duration::from_secs(30)) {
                    warn(format!("node {}: {err:#}", node.name));
                }
            }
            // Deleting the netns would take them along; removed first so a lab that cannot
            // delete its netns still leaves no Service rules.
            if state.last_service_index > 0 && netns_exists(&node.netns) {
                if let Err(err) = service::remove_chains(&node.netns) {
                    warn(format!(
                        "node {}: removing Service chains: {err:#}",
                        node.name
                    ));
                }
            }
        }
    }

    // Whatever still runs in a lab netns was started by the lab (or by its agents).
    let mut namespaces: Vec<String> = state
        .iter()
        .flat_map(|s| {
            s.pods
                .iter()
                .map(|p| p.netns.clone())
                .chain(s.nodes.iter().map(|n| n.netns.clone()))
                .chain([s.ext.netns.clone()])
        })
        .chain(list_netns(&prefix))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for netns in &namespaces {
        if let Some(inode) = netns_inode(netns) {
            for pid in pids_in_netns(inode) {
                if let Ok(process) = ProcessRef::from_pid(pid) {
                    warn(format!("killing leftover process {pid} in {netns}"));
                    process.terminate(Duration::from_secs(1));
                }
            }
        }
    }
    for netns in &namespaces {
        if netns_exists(netns) {
            match delete_netns(netns) {
                Ok(()) => report.deleted_netns.push(netns.clone()),
                Err(err) => report.warnings.push(format!("{err:#}")),
            }
        }
    }

    for path in bpffs_dirs(&prefix) {
        if let Err(err) = std::fs::remove_dir_all(&path) {
            report
                .warnings
                .push(format!("removing {}: {err}", path.display()));
        }
    }

    // Check before removing the state that nothing is left.
    let mut left = list_netns(&prefix);
    left.extend(bpffs_dirs(&prefix).iter().map(|p| p.display().to_string()));
    if let Some(state) = &state {
        let processes = state
            .pods
            .iter()
            .filter_map(|p| p.server)
            .chain(state.ext.server)
            .chain(state.nodes.iter().filter_map(|n| n.agent));
        left.extend(
            processes
                .filter(ProcessRef::is_alive)
                .map(|p| format!("process {}", p.pid)),
        );
    }
    if !left.is_empty() {
        bail!(
            "could not remove: {} (warnings: {})",
            left.join(", "),
            report.warnings.join("; ")
        );
    }
    remove_lab_dir(&dir, state.as_ref(), &mut report.warnings);
    Ok(report)
}

/// `/sys/fs/bpf/<prefix>*`.
fn bpffs_dirs(prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(names::BPFFS_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Remove what the lab put in its directory, then the directory if that leaves it empty. Only
/// known names are removed, in case `WEIR_LAB_DIR` points somewhere shared.
fn remove_lab_dir(dir: &Path, state: Option<&LabState>, warnings: &mut Vec<String>) {
    let is_node_dir = |name: &str| {
        name.strip_prefix('n')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut known: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            is_node_dir(&name)
                || ["ext", "pods", crate::manifest::MANIFEST_DIR].contains(&name.as_str())
        })
        .map(|e| e.path())
        .collect();
    if let Some(state) = state {
        for node in &state.nodes {
            for path in [&node.cni_conf_dir, &node.state_dir, &node.run_dir] {
                if !path.starts_with(dir) {
                    known.push(path.clone());
                }
            }
        }
    }
    for path in known {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(err) = removed {
            if err.kind() != std::io::ErrorKind::NotFound {
                warnings.push(format!("removing {}: {err}", path.display()));
            }
        }
    }
    for name in [
        crate::state::STATE_FILE,
        &format!("{}.tmp", crate::state::STATE_FILE),
        crate::state::LOCK_FILE,
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if let Err(err) = std::fs::remove_dir(dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warnings.push(format!("leaving {}: {err}", dir.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_everything_after_the_lab_id() {
        let opts = LabOptions {
            nodes: 2,
            ..LabOptions::in_dir("/run/weir-lab")
        };
        let state = plan(Path::new("/run/weir-lab"), &opts);
        let prefix = names::lab_prefix(&state.id);
        assert_eq!(state.id, names::lab_id(Path::new("/run/weir-lab")));
        assert!(state.ext.netns.starts_with(&prefix));
        assert_eq!(state.nodes.len(), 2);
        let n2 = state.node(2).unwrap();
        assert_eq!(n2.netns, format!("{prefix}n2"));
        assert_eq!(n2.ip, Ipv4Addr::new(192, 0, 2, 12));
        assert_eq!(n2.pod_cidr, "10.244.2.0/24");
        assert_eq!(n2.ext_ifname, "n2");
        assert!(n2.bpffs_dir.starts_with(names::BPFFS_ROOT));
        assert!(n2
            .bpffs_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&prefix));
        assert_eq!(n2.cni_conf_dir, PathBuf::from("/run/weir-lab/n2/cni/net.d"));
        assert_eq!(state.phase, Phase::Creating);
    }

    #[test]
    fn matrix_table_marks_pairs() {
        let entry = |from: &str, to: &str, connected| MatrixEntry {
            from: from.to_owned(),
            to: to.to_owned(),
            loopback: from == to,
            connected,
            error: None,
        };
        let mut matrix = Matrix {
            proto: Proto::Tcp,
            port: Some(80),
            via_service: false,
            results: vec![
                entry("default/a", "default/b", true),
                entry("default/b", "default/a", false),
            ],
        };
        assert_eq!(matrix.connected("default/a", "default/b"), Some(true));
        assert_eq!(matrix.connected("default/b", "default/a"), Some(false));
        assert_eq!(matrix.connected("default/a", "default/c"), None);
        let table = matrix.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("tcp/80 from\\to"), "{table}");
        assert!(
            lines[1].starts_with("default/a") && lines[1].contains("ok"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("default/b") && lines[2].contains("--"),
            "{table}"
        );
        // Cells sit under their column headers.
        assert_eq!(lines[0].find("default/b"), lines[1].find("ok"), "{table}");
        assert_eq!(lines[0].find("default/a"), lines[2].find("--"), "{table}");
        // Self cells: `.` unless probed.
        assert!(lines[1].contains(" ."), "{table}");
        matrix.via_service = true;
        matrix.results.push(entry("default/a", "default/a", false));
        let table = matrix.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("tcp/80 via service from\\to"),
            "{table}"
        );
        assert_eq!(lines[0].find("default/a"), lines[1].find("--"), "{table}");
    }

    #[test]
    fn probe_results_serialize_as_documented() {
        let result = ProbeResult {
            from: "default/web".to_owned(),
            to: "ext".to_owned(),
            ip: names::EXT_HOST_IP,
            proto: Proto::Icmp,
            port: None,
            via_service: false,
            connected: true,
            rtt_us: Some(42),
            error: None,
            reply: None,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"from": "default/web", "to": "ext", "ip": "203.0.113.1", "proto": "icmp",
                "port": null, "via_service": false, "connected": true, "rtt_us": 42, "error": null,
                "reply": null})
        );
    }

    #[test]
    fn down_of_a_lab_that_never_was_is_a_no_op() {
        let dir = std::env::temp_dir().join(format!("weir-lab-never-{}", std::process::id()));
        let report = down(&dir).unwrap();
        assert!(report.deleted_netns.is_empty(), "{report:?}");
        assert!(report.warnings.is_empty(), "{report:?}");
        assert!(!dir.exists());
        // And again.
        down(&dir).unwrap();
    }

    #[test]
    fn lab_dir_removal_spares_unknown_files() {
        let dir = std::env::temp_dir().join(format!("weir-lab-rm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("n1/run")).unwrap();
        std::fs::create_dir_all(dir.join("pods")).unwrap();
        std::fs::write(dir.join("state.json"), "{}").unwrap();
        std::fs::write(dir.join("precious"), "keep me").unwrap();
        let mut warnings = Vec::new();
        remove_lab_dir(&dir, None, &mut warnings);
        assert!(dir.join("precious").exists());
        assert!(!dir.join("n1").exists() && !dir.join("pods").exists());
        assert!(!dir.join("state.json").exists());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
