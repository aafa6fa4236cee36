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
//!
//! Parts: [`cluster`] (up: plan, namespaces, links, agents), [`pods`] (add, publish, label, del),
//! [`objects`] (manifests, apply, sync), [`probe`] (probes and matrices), [`teardown`] (down).
//! This file holds the [`Lab`] handle that drives them. Below the lab, and imported by it (never
//! the other way): [`crate::state`], [`crate::manifest`], [`crate::services`] (ports served and
//! the ClusterIP DNAT), [`crate::probe`], [`crate::cni`], [`crate::agent`], [`crate::netns`].

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;
use weir_agent_api::Rejected;

use crate::{
    cni::{plugin_config_from_dir, CniEnv, CniError},
    manifest::{change_labels, node_object, Kind, ObjectRef, NAMESPACE_NAME_LABEL},
    names::{self, Endpoint, PodRef},
    paths::{self},
    probe::Proto,
    state::{LabState, NodeState, Phase, Routing, StateLock},
};

mod cluster;
mod flows;
mod objects;
mod pods;
mod probe;
mod teardown;

pub use cluster::{ensure_bpffs, plan, up};
use objects::{apply_locked, check_sync, manifests, sync_agents};
use pods::{add_pod_locked, del_pod_locked, publish_pod, set_pod_labels};
pub use pods::{PodInfo, PodSpec};
pub use probe::{
    matrix, matrix_with, probe_endpoints, probe_via, Matrix, MatrixEntry, MatrixOptions,
    ProbeOptions, ProbeResult, ProbeTarget,
};
pub use teardown::down;

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

    /// Delete a ClusterNetworkPolicy and wait until every agent has programmed that.
    pub fn delete_cluster_policy(&self, name: &str) -> Result<()> {
        let lock = StateLock::acquire(&self.dir, true)?;
        let state = load_up(&lock)?;
        let id = ObjectRef::cluster_policy(name);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Phase;
    use teardown::remove_lab_dir;

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
