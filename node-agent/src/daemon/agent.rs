//! [`Agent`]: the node's state (its endpoints, the model and what was programmed from it) and
//! the passes that bring the datapath in line with the model.

use std::{fs, path::Path, sync::Arc};

use anyhow::Result;
use serde_json::json;
use tracing::info;
use weir_agent_api::Rejected;
use weir_common::{
    maps::{
        ENDPOINTS, ENDPOINTS_MAX, HOST_IPS, HOST_PORTS, HOST_PORTS_MAX, POLICY_PEERS, POLICY_PORTS,
        REMOTES, REMOTES_MAX,
    },
    NodeConfig,
};
use weir_kube::events::NodeProblem;
use weir_netlink::Netlink;

use crate::{
    config::{Config, GATEWAY, NETWORK_NAME},
    kernel::datapath::{BpfDatapath, Datapath},
    program::{
        endpoints::{write_atomic, Endpoints},
        policy::PolicyMaps,
        remotes::RemotePlan,
    },
    sources::ObjectSource,
    telemetry::{Status, Telemetry},
};

pub struct Agent {
    pub(super) config: Config,
    pub(super) netlink: Netlink,
    pub(super) endpoints: Endpoints<BpfDatapath>,
    pub(super) mtu: u32,
    /// What the datapath's config entry holds (the policy epoch moves).
    pub(super) node_config: NodeConfig,
    /// Where the objects come from, and the model last read.
    pub(super) objects: ObjectSource,
    pub(super) policy: PolicyMaps,
    /// `weir0`'s index: the device every pod CIDR is routed to.
    pub(super) host_dev_index: u32,
    /// What was last programmed for the other nodes; `None` until the first reconcile.
    pub(super) remotes: Option<RemotePlan>,
    /// How many of the node's addresses are trusted as the node, and how many are beyond
    /// `--max-host-addresses` (not trusted).
    pub(super) host_addresses: super::routes::HostAddresses,
    /// Where the agent publishes what `/metrics` and `/healthz` report.
    pub(super) telemetry: Arc<Telemetry>,
    /// Recent flows, named (served to `weir-agent flows`).
    pub(super) flow_log: Arc<super::flows::FlowLog>,
    /// How recent flows were named, until the next programming.
    pub(super) explained: super::flows::ExplainCache,
    /// The host ports last programmed; `None` until the first time.
    pub(super) host_ports: Option<Vec<crate::kernel::host_ports::HostPort>>,
    /// When freed heap was last given back to the system.
    pub(super) heap_trimmed: Option<std::time::Instant>,
    /// Held for the agent's lifetime: one agent per node.
    pub(super) _lock: fs::File,
}

impl Agent {
    /// Compile and program policy for the current endpoints (plus `new`, which is added on the
    /// way), then move the epoch so flows opened under the old policy are judged again.
    pub(super) fn reprogram(&mut self, new: Option<weir_agent_api::Endpoint>) -> Result<()> {
        self.explained.clear();
        let result = self
            .policy
            .program(self.objects.cluster(), &mut self.endpoints, new);
        // Also after a failure: the endpoints were just pointed at deny-all.
        if !matches!(result, Ok(false)) {
            self.node_config.policy_epoch = self.node_config.policy_epoch.wrapping_add(1);
            self.endpoints.datapath_mut().set_config(self.node_config)?;
        }
        result.map(|_| ()).map_err(Into::into)
    }

    /// Re-read the object source, handing the time of its oldest change to the policy maps.
    pub(super) fn refresh_objects(&mut self) -> bool {
        let changed = self.objects.refresh();
        self.policy.note_change(self.objects.take_changed_at());
        changed
    }

    /// Re-read the object source and program what changed: policy, then routes to other nodes.
    pub async fn sync(&mut self) -> Result<()> {
        let policy = self.sync_policy();
        let routes = self.reconcile_routes().await;
        super::memory::release_free_heap(&mut self.heap_trimmed);
        self.publish();
        policy.and(routes)
    }

    fn sync_policy(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let changed = self.refresh_objects();
        tracing::debug!(
            changed,
            refresh_us = started.elapsed().as_micros(),
            "source re-read"
        );
        // Nothing new in the source: the maps already hold what it says.
        if !changed && !self.policy.needs_retry() {
            return Ok(());
        }
        self.reprogram(None)
    }

    /// What the agent reports now.
    pub fn status(&self) -> Status {
        let cluster = self.objects.cluster();
        let (peers, ports) = self.policy.programmed_entries();
        let (peers_max, ports_max) = self.endpoints.datapath().policy_capacity();
        Status {
            endpoints: self.endpoints.len(),
            pods: cluster.pods().count(),
            policies: cluster.policies().count(),
            rejected: self.rejected().len(),
            generation: self.objects.generation(),
            maps: vec![
                (ENDPOINTS, self.endpoints.len(), ENDPOINTS_MAX),
                (POLICY_PEERS, peers, peers_max as u32),
                (POLICY_PORTS, ports, ports_max as u32),
                (
                    HOST_IPS,
                    self.host_addresses.trusted,
                    self.config.max_host_addresses,
                ),
                (
                    REMOTES,
                    self.remotes.as_ref().map_or(0, |r| r.entries.len()),
                    REMOTES_MAX,
                ),
                (
                    HOST_PORTS,
                    self.host_ports.as_ref().map_or(0, Vec::len),
                    HOST_PORTS_MAX,
                ),
            ],
        }
    }

    /// Publish the status `/metrics` reports, and renew the heartbeat `/healthz` checks.
    pub fn publish(&self) {
        self.telemetry.publish(&self.status());
    }

    /// Objects the agent cannot program: those the source could not use, and policies that
    /// could not be programmed whole.
    pub fn rejected(&self) -> Vec<Rejected> {
        let mut rejected = self.objects.rejected();
        rejected.extend(self.policy.problems().iter().cloned());
        rejected
    }

    /// Recent flows, for the socket's task.
    pub fn flow_log(&self) -> Arc<super::flows::FlowLog> {
        self.flow_log.clone()
    }

    pub fn endpoints(&self) -> &Endpoints<BpfDatapath> {
        &self.endpoints
    }

    pub fn manifest_dir(&self) -> Option<&Path> {
        self.config.manifest_dir.as_deref()
    }

    /// The object source, for the event loop (which waits on its changes).
    pub(super) fn objects_mut(&mut self) -> &mut ObjectSource {
        &mut self.objects
    }

    /// What is wrong with this node, for Events on its Node object.
    pub fn node_problems(&self) -> Vec<NodeProblem> {
        let mut problems = Vec::new();
        if self.host_addresses.left_out > 0 {
            problems.push(NodeProblem {
                reason: "HostAddressesLeftOut",
                note: format!(
                    "the node has {} more IPv4 addresses than --max-host-addresses={}: traffic \
                     from them to pods is judged by policy like any other source, not allowed as \
                     the node's",
                    self.host_addresses.left_out, self.config.max_host_addresses
                ),
            });
        }
        if self.policy.self_check_failed() {
            problems.push(NodeProblem {
                reason: "PolicySelfCheckFailed",
                note: "the incremental policy compiler disagreed with a compilation from nothing \
                       (a bug in weir-agent, please report it with the agent's log); everything \
                       was recompiled and reprogrammed"
                    .to_owned(),
            });
        }
        problems
    }

    /// Compare the incremental policy compiler with a compilation from nothing (see
    /// [`PolicyMaps::self_check`]); on a difference, reprogram from scratch at once.
    pub fn policy_self_check(&mut self) -> Result<()> {
        if self
            .policy
            .self_check(self.objects.cluster(), &self.endpoints)
        {
            return Ok(());
        }
        self.reprogram(None)
    }

    /// Write the conflist: from now on runtimes may call the plugin.
    pub fn write_conflist(&self) -> Result<()> {
        let paths = &self.config.paths;
        let conflist = json!({
            "cniVersion": "1.0.0",
            "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            "name": NETWORK_NAME,
            "plugins": [{
                "type": "weir",
                "podCIDR": self.config.pod_cidr.to_string(),
                "gateway": GATEWAY.to_string(),
                "mtu": self.mtu,
                "agentSocket": paths.socket(),
                "dataDir": paths.ipam_dir(),
                "logFile": paths.cni_log_file,
                // The kubelet passes hostPorts and the bandwidth annotations only to plugins
                // that declare these.
                "capabilities": {"portMappings": true, "bandwidth": true},
            }],
        });
        fs::create_dir_all(&self.config.cni_conf_dir)?;
        let bytes = serde_json::to_vec_pretty(&conflist)?;
        write_atomic(&self.config.conflist_path(), &bytes)?;
        info!(path = %self.config.conflist_path().display(), "wrote CNI config");
        Ok(())
    }
}
