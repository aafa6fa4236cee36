// SPDX-License-Identifier: Apache-2.0
//! The lab's state file (`<lab dir>/state.json`) and its lock.
//!
//! Every `weir-lab` invocation is a separate process, so the state file is the lab's memory: what
//! netns exist, which processes to stop, which container id and CNI result belong to a pod (DEL
//! needs both). Mutations hold an exclusive `flock` on `<lab dir>/lock` for their whole duration;
//! readers take a shared one. It is written atomically (temp file + rename), and written *before*
//! each resource is created so that `down` can undo a half-finished `up`.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{
    names::PodRef,
    process::ProcessRef,
    services::{self, ServePort},
};

/// Bumped on incompatible changes to [`LabState`].
pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";

/// How pod traffic crosses between nodes: the product's own type (the lab passes it to every
/// agent as `--routing`).
pub use weir_agent_api::Routing;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is running or failed part-way; `down` cleans it up.
    Creating,
    Up,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub id: String,
    pub dir: PathBuf,
    pub phase: Phase,
    pub routing: Routing,
    pub cluster_cidr: String,
    /// Where the lab's Kubernetes objects live; every agent's `--manifest-dir`.
    #[serde(default)]
    pub manifest_dir: PathBuf,
    /// Every agent's `--service-cidr`; pods' ClusterIPs come from it.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    /// Index (in the Service CIDR) of the last ClusterIP handed out. Never reused within a lab, so
    /// a new Service never inherits an old one's conntrack entries.
    #[serde(default)]
    pub last_service_index: u32,
    /// Pods placed so far without a node named: the next goes to the node after the last one.
    #[serde(default)]
    pub pods_placed: u32,
    pub ext: ExtState,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
}

fn default_service_cidr() -> String {
    services::SERVICE_CIDR.to_owned()
}

/// The "internet": a bridge joining every node's uplink, and an outside host on its loopback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtState {
    pub netns: String,
    pub bridge: String,
    /// Ext's address on the bridge; the nodes' default gateway.
    pub gateway_ip: Ipv4Addr,
    /// The outside host (on ext's `lo`).
    pub host_ip: Ipv4Addr,
    /// Server answering on `host_ip`, ports 80 and 81.
    pub server: Option<ProcessRef>,
    pub server_log: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// 1-based.
    pub index: u32,
    /// `n1`; also the agent's `--node-name`.
    pub name: String,
    pub netns: String,
    /// Name of the node's uplink inside its netns (`eth0`).
    pub uplink: String,
    /// Name of the uplink's veth peer inside ext (enslaved to the bridge).
    pub ext_ifname: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    pub bpffs_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The agent's `--log-file`.
    pub log_file: PathBuf,
    /// The CNI plugin's log (`--cni-log-file`).
    pub cni_log_file: PathBuf,
    /// The agent's stdout and stderr.
    pub stdout_log: PathBuf,
    pub agent: Option<ProcessRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    /// Index of the node the pod runs on.
    pub node: u32,
    pub netns: String,
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Every port the pod serves (its container ports and its Service's ports).
    #[serde(default)]
    pub ports: Vec<ServePort>,
    /// The pod's Service address, once its DNAT rules are in place.
    #[serde(default)]
    pub cluster_ip: Option<Ipv4Addr>,
    pub server: Option<ProcessRef>,
    pub server_log: PathBuf,
    /// The plugin configuration ADD was given; DEL falls back to it if the conflist is gone.
    pub cni_config: serde_json::Value,
    /// The CNI ADD result, passed back as `prevResult` on DEL.
    pub cni_result: serde_json::Value,
}

impl PodState {
    pub fn pod_ref(&self) -> PodRef {
        PodRef::new(&self.namespace, &self.name)
    }
}

impl LabState {
    pub fn node(&self, index: u32) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.index == index)
    }

    pub fn pod(&self, pod: &PodRef) -> Option<&PodState> {
        self.pods
            .iter()
            .find(|p| p.namespace == pod.namespace && p.name == pod.name)
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).context("state is not JSON")?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(STATE_VERSION)) {
            bail!("state version {version:?} is not {STATE_VERSION}; run `weir-lab down` with the weir-lab that made it");
        }
        Ok(serde_json::from_value(value)?)
    }
}

/// Shared or exclusive access to a lab directory. The lock is released on drop.
pub struct StateLock {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl StateLock {
    /// Lock `dir` (creating it if needed). `down` removes the lock file while holding it, so after
    /// acquiring we check that the file we locked is still the one at the path, and retry if not.
    pub fn acquire(dir: &Path, exclusive: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let arg = if exclusive {
                FlockArg::LockExclusive
            } else {
                FlockArg::LockShared
            };
            let lock = Flock::lock(file, arg)
                .map_err(|(_, errno)| errno)
                .with_context(|| format!("locking {}", path.display()))?;
            let locked = lock.metadata()?.ino();
            match std::fs::metadata(&path) {
                Ok(current) if current.ino() == locked => {
                    return Ok(Self {
                        dir: dir.to_path_buf(),
                        _lock: lock,
                    });
                }
                // Removed (or replaced) while we waited: start over.
                _ => std::fs::create_dir_all(dir)?,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The state, or `None` when there is no state file.
    pub fn load(&self) -> Result<Option<LabState>> {
        let path = self.state_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => LabState::from_json(&text)
                .with_context(|| format!("reading {}", path.display()))
                .map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write the state atomically.
    pub fn save(&self, state: &LabState) -> Result<()> {
        let path = self.state_path();
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(state.to_json()?.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Remove the state file (the lock file stays until the directory is removed).
    pub fn remove_state(&self) -> Result<()> {
        match std::fs::remove_file(self.state_path()) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::names;

    pub(crate) fn sample_state() -> LabState {
        let id = "0a1b2c".to_owned();
        let dir = PathBuf::from("/run/weir-lab");
        let node_dir = dir.join("n1");
        LabState {
            pods_placed: 0,
            version: STATE_VERSION,
            id: id.clone(),
            dir: dir.clone(),
            phase: Phase::Up,
            routing: Routing::Native,
            cluster_cidr: names::CLUSTER_CIDR.to_owned(),
            manifest_dir: dir.join("manifests"),
            service_cidr: services::SERVICE_CIDR.to_owned(),
            last_service_index: 1,
            ext: ExtState {
                netns: names::ext_netns(&id),
                bridge: "br0".to_owned(),
                gateway_ip: names::EXT_GATEWAY_IP,
                host_ip: names::EXT_HOST_IP,
                server: Some(ProcessRef {
                    pid: 42,
                    start_time: 7,
                }),
                server_log: dir.join("ext/server.log"),
            },
            nodes: vec![NodeState {
                index: 1,
                name: names::node_name(1),
                netns: names::node_netns(&id, 1),
                uplink: "eth0".to_owned(),
                ext_ifname: "n1".to_owned(),
                ip: names::node_ip(1),
                pod_cidr: names::node_pod_cidr(1),
                bpffs_dir: names::node_bpffs_dir(&id, 1),
                cni_conf_dir: node_dir.join("cni/net.d"),
                state_dir: node_dir.join("state"),
                run_dir: node_dir.join("run"),
                log_file: node_dir.join("agent.log"),
                cni_log_file: node_dir.join("cni.log"),
                stdout_log: node_dir.join("agent.out"),
                agent: None,
            }],
            pods: vec![PodState {
                namespace: "default".to_owned(),
                name: "web".to_owned(),
                node: 1,
                netns: names::pod_netns(&id, &PodRef::new("default", "web")),
                container_id: "ab".repeat(32),
                ifname: "eth0".to_owned(),
                ip: Ipv4Addr::new(10, 244, 1, 5),
                mac: Some("0a:58:0a:f4:01:05".to_owned()),
                labels: [("role".to_owned(), "web".to_owned())].into(),
                ports: services::default_ports(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 1)),
                server: None,
                server_log: dir.join("pods/web.log"),
                cni_config: serde_json::json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir"}),
                cni_result: serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.5/32"}]}),
            }],
        }
    }

    #[test]
    fn state_round_trips_through_json() {
        let state = sample_state();
        let text = state.to_json().unwrap();
        assert_eq!(LabState::from_json(&text).unwrap(), state);
        assert!(text.contains(r#""routing": "native""#), "{text}");
        assert!(text.contains(r#""phase": "up""#), "{text}");
    }

    #[test]
    fn state_written_before_services_still_reads() {
        let mut value: serde_json::Value =
            serde_json::from_str(&sample_state().to_json().unwrap()).unwrap();
        for key in ["manifest_dir", "service_cidr", "last_service_index"] {
            value.as_object_mut().unwrap().remove(key);
        }
        for key in ["ports", "cluster_ip"] {
            value["pods"][0].as_object_mut().unwrap().remove(key);
        }
        let state = LabState::from_json(&value.to_string()).unwrap();
        assert_eq!(state.service_cidr, "10.96.0.0/12");
        assert_eq!(state.pods[0].cluster_ip, None);
        assert!(state.pods[0].ports.is_empty());
    }

    #[test]
    fn state_of_another_version_is_refused() {
        let mut value: serde_json::Value =
            serde_json::from_str(&sample_state().to_json().unwrap()).unwrap();
        value["version"] = 99.into();
        let err = LabState::from_json(&value.to_string()).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn lookups_find_nodes_and_pods() {
        let state = sample_state();
        assert_eq!(state.node(1).unwrap().name, "n1");
        assert!(state.node(2).is_none());
        assert_eq!(
            state.pod(&PodRef::new("default", "web")).unwrap().ip,
            Ipv4Addr::new(10, 244, 1, 5)
        );
        assert!(state.pod(&PodRef::new("default", "api")).is_none());
    }

    #[test]
    fn lock_saves_loads_and_survives_dir_removal() {
        let dir = std::env::temp_dir().join(format!("weir-lab-state-{}", std::process::id()));
        {
            let lock = StateLock::acquire(&dir, true).unwrap();
            assert_eq!(lock.load().unwrap(), None);
            lock.save(&sample_state()).unwrap();
            assert_eq!(lock.load().unwrap(), Some(sample_state()));
            // What `down` does: remove everything while holding the lock.
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let lock = StateLock::acquire(&dir, false).unwrap();
        assert_eq!(lock.load().unwrap(), None);
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn routing_parses() {
        assert_eq!("vxlan".parse::<Routing>().unwrap(), Routing::Vxlan);
        assert_eq!("native".parse::<Routing>().unwrap(), Routing::Native);
        assert!("geneve".parse::<Routing>().is_err());
    }
}
