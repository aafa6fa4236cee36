//! Start-up, adoption of what an earlier agent left, and the handlers behind the CNI socket.

use std::{
    fs,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::Path,
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tracing::{info, warn};
use weir_agent_api::{AttachmentId, Endpoint, Request, Response};
use weir_common::{
    config::{
        NODE_F_CONFIGURED, NODE_F_VXLAN, TUNNEL_DEV_MAC, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
    },
    NodeConfig,
};

use crate::{
    config::{Config, GATEWAY, HOST_DEV, HOST_DEV_PEER, NETWORK_NAME, TUNNEL_DEV},
    datapath::{AttachMode, BpfDatapath, Datapath, Hook},
    endpoints::{write_atomic, Endpoints},
    host::{self, Host},
    policy::PolicyEngine,
    routing::{self, RemotePlan, Routing},
};

/// The kernel's magic number for bpffs (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub struct Agent {
    config: Config,
    host: Host,
    endpoints: Endpoints<BpfDatapath>,
    mtu: u32,
    /// What the datapath's config entry holds (the policy epoch moves).
    node_config: NodeConfig,
    policy: PolicyEngine,
    /// `weir0`'s index: the device every pod CIDR is routed to.
    host_dev_index: u32,
    /// What was last programmed for the other nodes; `None` until the first reconcile.
    remotes: Option<RemotePlan>,
    /// How many of the node's addresses are beyond `--max-host-addresses` (not trusted as the node).
    host_addresses_left_out: usize,
    /// Where the agent publishes what `/metrics` and `/healthz` report.
    telemetry: std::sync::Arc<crate::metrics::Telemetry>,
    /// Held for the agent's lifetime: one agent per node.
    _lock: fs::File,
}

/// Where bpffs is conventionally mounted; the agent mounts it there when nothing is (as Cilium does),
/// because pins on any other filesystem are impossible and pins are what make restarts safe.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(dir: &Path) -> Result<bool> {
    let stat =
        nix::sys::statfs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
    Ok(stat.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

fn ensure_bpffs(dir: &Path) -> Result<()> {
    let mount_point = Path::new(BPFFS_MOUNT);
    if dir.starts_with(mount_point) && mount_point.is_dir() && !is_bpffs(mount_point)? {
        nix::mount::mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .with_context(|| format!("mounting bpffs at {BPFFS_MOUNT}"))?;
        info!("mounted bpffs at {BPFFS_MOUNT}");
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(dir)? {
        bail!(
            "{} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) so pinned maps \
             and programs survive agent restarts",
            dir.display()
        );
    }
    Ok(())
}

/// Pins of an older map layout (`v<N>` below the current ABI version) belong to programs this agent
/// has just replaced on every interface; removing them detaches the old programs and frees their maps.
fn remove_old_abi_pins(bpffs_dir: &Path) {
    let Ok(entries) = fs::read_dir(bpffs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = name
            .strip_prefix('v')
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|v| v < weir_common::maps::ABI_VERSION);
        if old {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    info!(dir = %entry.path().display(), "removed pins of an older datapath ABI")
                }
                Err(e) => warn!(%e, dir = %entry.path().display(), "removing old pins"),
            }
        }
    }
}

fn lock(path: &Path) -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!("another weir-agent holds {}", path.display());
    }
    Ok(file)
}

impl Agent {
    /// Bring the node's datapath up and adopt existing endpoints, with objects from `policy`'s
    /// source (the manifest directory or the Kubernetes API). Must run inside a tokio runtime.
    pub async fn start(
        config: Config,
        policy: PolicyEngine,
        telemetry: std::sync::Arc<crate::metrics::Telemetry>,
    ) -> Result<Self> {
        let mut policy = policy.reporting_to(&telemetry);
        let paths = &config.paths;
        for dir in [&paths.run_dir, &paths.state_dir] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for dir in [&paths.run_dir, &paths.state_dir] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let lock = lock(&paths.lock_file())?;
        ensure_bpffs(&paths.bpffs_dir)?;

        let host = Host::connect()?;
        let uplink = match &config.uplink {
            Some(name) => Some(
                host.link_by_name(name)
                    .await?
                    .with_context(|| format!("uplink {name} does not exist"))?,
            ),
            None => host.default_route_link().await?,
        };
        let uplink_mtu = uplink.as_ref().and_then(|l| l.mtu).unwrap_or(1500);
        // Full-size pod packets must fit the uplink once encapsulated, so nothing is fragmented.
        let mtu = config.mtu.unwrap_or(match config.routing {
            Routing::Native => uplink_mtu,
            Routing::Vxlan => uplink_mtu.saturating_sub(VXLAN_OVERHEAD),
        });
        info!(uplink = ?uplink.as_ref().map(|l| &l.name), mtu, routing = %config.routing, "node uplink");
        if config.routing == Routing::Native && uplink.is_none() {
            warn!("no uplink: other nodes' pods are unreachable until the node has a default route or --uplink is given");
        }

        let mut datapath = BpfDatapath::load(
            &paths.pin_dir(),
            &paths.attachments(),
            config.conntrack,
            config.policy_peers_max,
        )
        .context("loading the eBPF datapath")?;
        let host_dev = host.ensure_host_dev(HOST_DEV, HOST_DEV_PEER, mtu).await?;
        host.set_mtu(&host_dev, mtu).await?;
        host::Sysctls::new(&config.proc_sys_dir).configure_node(HOST_DEV)?;
        host.replace_route(config.pod_cidr, host_dev.index).await?;
        host::install_iptables(
            config.pod_cidr,
            config.cluster_cidr,
            config.routing == Routing::Vxlan,
            &crate::datapath::egress_after_dnat_pin(&paths.pin_dir()),
        )?;
        let (flags, tunnel_ifindex) = match config.routing {
            Routing::Vxlan => {
                let tunnel = host
                    .ensure_vxlan_dev(TUNNEL_DEV, VXLAN_PORT, TUNNEL_DEV_MAC, mtu)
                    .await?;
                host::Sysctls::new(&config.proc_sys_dir).configure_tunnel(TUNNEL_DEV)?;
                (NODE_F_CONFIGURED | NODE_F_VXLAN, tunnel.index)
            }
            Routing::Native => {
                // A node switched from VXLAN keeps no tunnel.
                host.delete_link(TUNNEL_DEV).await?;
                (NODE_F_CONFIGURED, 0)
            }
        };
        let node_config = NodeConfig {
            gateway_ip_be: u32::from(GATEWAY).to_be(),
            cluster_cidr_be: u32::from(config.cluster_cidr.network()).to_be(),
            cluster_prefix_len: u32::from(config.cluster_cidr.prefix_len()),
            host_dev_ifindex: host_dev.index,
            flags,
            // Continue from the epoch an earlier agent left, so no flow is wrongly thought current.
            policy_epoch: datapath.config()?.policy_epoch.wrapping_add(1),
            service_cidr_be: u32::from(config.service_cidr.network()).to_be(),
            service_prefix_len: u32::from(config.service_cidr.prefix_len()),
            uplink_ifindex: uplink.as_ref().map_or(0, |l| l.index),
            tunnel_ifindex,
            vni: VXLAN_VNI,
            _pad: 0,
        };
        datapath.set_config(node_config)?;
        let host_addresses_left_out = program_host_ips(
            &host,
            &mut datapath,
            node_config.uplink_ifindex,
            config.max_host_addresses,
        )
        .await?;
        datapath.attach(HOST_DEV, Hook::FromHost)?;
        // Other nodes' pods' packets go straight to pods: from the tunnel, or (native) from the
        // uplink, where everything else passes untouched.
        let mut keep_links = vec![HOST_DEV];
        match (config.routing, &uplink) {
            (Routing::Vxlan, _) => {
                datapath.attach(TUNNEL_DEV, Hook::FromTunnel)?;
                keep_links.push(TUNNEL_DEV);
            }
            (Routing::Native, Some(uplink)) => {
                datapath.attach(&uplink.name, Hook::FromUplink)?;
                keep_links.push(&uplink.name);
            }
            (Routing::Native, None) => {}
        }

        let mut endpoints = Endpoints::open(datapath, &paths.endpoints_dir())?;
        let mut alive = std::collections::BTreeSet::new();
        for record in endpoints.records() {
            let ep = &record.endpoint;
            if let Some(link) = host.link_by_name(&ep.host_ifname).await? {
                if link.index == ep.host_ifindex {
                    alive.insert(ep.host_ifname.clone());
                }
            }
        }
        let done = endpoints.reconcile(|ep| alive.contains(&ep.host_ifname), &keep_links)?;
        info!(
            adopted = done.adopted.len(),
            removed = done.removed.len(),
            stale_map_entries = done.stale_map_entries.len(),
            stale_links = done.stale_links.len(),
            "adopted existing endpoints"
        );

        remove_old_abi_pins(&paths.bpffs_dir);

        policy.resume(endpoints.datapath())?;

        let mut agent = Self {
            config,
            host,
            endpoints,
            mtu,
            node_config,
            policy,
            host_dev_index: host_dev.index,
            remotes: None,
            host_addresses_left_out,
            telemetry,
            _lock: lock,
        };
        // Before programming: endpoints whose DEL was spooled are not programmed again.
        agent.drain_del_queue();
        agent.policy.refresh();
        agent.reprogram(None)?;
        info!(
            rejected = agent.policy.rejected().len(),
            "policy programmed"
        );
        agent.reconcile_routes().await?;
        Ok(agent)
    }

    /// Bring the routes to other nodes in line with the nodes the source knows: `WEIR_REMOTES`
    /// first (pods' traffic), then the kernel's routes to `weir0` (the node's own and Service
    /// traffic), removing what belongs to nodes that left. Cheap when nothing changed.
    pub async fn reconcile_routes(&mut self) -> Result<()> {
        let plan = routing::plan(
            &self.config.node_name,
            self.config.pod_cidr,
            self.policy.cluster().nodes(),
            self.config.routing,
        );
        if self.remotes.as_ref() == Some(&plan) {
            return Ok(());
        }
        for reason in &plan.skipped {
            warn!("routing between nodes: {reason}");
        }
        let entries: Vec<_> = plan.entries.iter().map(|(k, v)| (*k, *v)).collect();
        self.endpoints.datapath_mut().set_remotes(&entries)?;
        for cidr in &plan.kernel_routes {
            self.host.replace_route(*cidr, self.host_dev_index).await?;
        }
        for cidr in self.host.routes_via(self.host_dev_index).await? {
            if cidr != self.config.pod_cidr && !plan.kernel_routes.contains(&cidr) {
                self.host.delete_route(cidr, self.host_dev_index).await?;
            }
        }
        self.reconcile_neighbours(&plan).await?;
        info!(
            nodes = plan.kernel_routes.len(),
            entries = entries.len(),
            "routes to other nodes programmed"
        );
        self.remotes = Some(plan);
        Ok(())
    }

    /// Keep every other node's address resolved on the uplink (kernel-managed neighbour entries),
    /// so that no packet the datapath sends to a node waits in the neighbour queue (see
    /// [`Host::replace_managed_neighbour`] for what goes wrong there). The entries made are
    /// recorded, so that nodes that left, and `cleanup`, remove exactly those.
    async fn reconcile_neighbours(&mut self, plan: &RemotePlan) -> Result<()> {
        let uplink = self.node_config.uplink_ifindex;
        if uplink == 0 {
            return Ok(());
        }
        let file = self.config.paths.neighbours_file();
        let made = read_neighbours(&file);
        let wanted = plan.node_addresses();
        for ip in wanted.difference(&made) {
            self.host.replace_managed_neighbour(*ip, uplink).await?;
        }
        for ip in made.difference(&wanted) {
            self.host.delete_neighbour(*ip, uplink).await?;
        }
        if made != wanted {
            let text: String = wanted.iter().map(|ip| format!("{ip}\n")).collect();
            write_atomic(&file, text.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(())
    }

    /// Compile and program policy for the current endpoints (plus `new`, which is added on the
    /// way), then move the epoch so flows opened under the old policy are judged again.
    fn reprogram(&mut self, new: Option<Endpoint>) -> Result<()> {
        let result = self.policy.program(&mut self.endpoints, new);
        // Also after a failure: the endpoints were just pointed at deny-all.
        if !matches!(result, Ok(false)) {
            self.node_config.policy_epoch = self.node_config.policy_epoch.wrapping_add(1);
            self.endpoints.datapath_mut().set_config(self.node_config)?;
        }
        result.map(|_| ()).map_err(Into::into)
    }

    /// Publish what `/metrics` reports (the endpoints never take the agent's lock), and renew the
    /// heartbeat `/healthz` checks.
    pub fn publish(&self) {
        let telemetry = &self.telemetry;
        use weir_common::maps::{ENDPOINTS, ENDPOINTS_MAX, POLICY_PEERS, POLICY_PORTS};
        let cluster = self.policy.cluster();
        telemetry.endpoints.set(self.endpoints.len() as i64);
        telemetry.pods.set(cluster.pods().count() as i64);
        telemetry.policies.set(cluster.policies().count() as i64);
        telemetry.rejected.set(self.policy.rejected().len() as i64);
        telemetry.generation.set(self.policy.generation() as i64);
        let (peers, ports) = self.policy.programmed_entries();
        let (peers_max, ports_max) = self.endpoints.datapath().policy_capacity();
        telemetry.set_map_fill(ENDPOINTS, self.endpoints.len(), ENDPOINTS_MAX);
        telemetry.set_map_fill(POLICY_PEERS, peers, peers_max as u32);
        telemetry.set_map_fill(POLICY_PORTS, ports, ports_max as u32);
        telemetry.beat();
    }

    pub fn policy(&self) -> &PolicyEngine {
        &self.policy
    }

    pub fn endpoints(&self) -> &Endpoints<BpfDatapath> {
        &self.endpoints
    }

    pub fn manifest_dir(&self) -> Option<&Path> {
        self.config.manifest_dir.as_deref()
    }

    /// Re-read the node's own addresses (DHCP, a new interface): they are always allowed to reach
    /// local pods, so the set must follow the node.
    pub async fn refresh_host_ips(&mut self) -> Result<()> {
        self.host_addresses_left_out = program_host_ips(
            &self.host,
            self.endpoints.datapath_mut(),
            self.node_config.uplink_ifindex,
            self.config.max_host_addresses,
        )
        .await?;
        Ok(())
    }

    /// What is wrong with this node, for Events on its Node object.
    pub fn node_problems(&self) -> Vec<weir_kube::events::NodeProblem> {
        let mut problems = Vec::new();
        if self.host_addresses_left_out > 0 {
            problems.push(weir_kube::events::NodeProblem {
                reason: "HostAddressesLeftOut",
                note: format!(
                    "the node has {} more IPv4 addresses than --max-host-addresses={}: traffic \
                     from them to pods is judged by policy like any other source, not allowed as \
                     the node's",
                    self.host_addresses_left_out, self.config.max_host_addresses
                ),
            });
        }
        problems
    }

    /// Readable when the manifest directory changed (see [`crate::source::ManifestDir`]).
    pub fn manifest_change_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.policy.change_fd()
    }

    pub fn request_full_scan(&mut self) {
        self.policy.request_full_scan();
    }

    /// Re-read the object source and program what changed: policy, then routes to other nodes.
    pub async fn sync(&mut self) -> Result<()> {
        let policy = self.sync_policy();
        let routes = self.reconcile_routes().await;
        self.publish();
        policy.and(routes)
    }

    fn sync_policy(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let changed = self.policy.refresh();
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

    /// Apply the DELs the CNI plugin spooled because it could not reach the agent (down, or not
    /// listening yet), then drop the IPs they freed from every peer set. Run at start, again once
    /// the socket is up, and periodically: a DEL spooled in any gap is applied within seconds.
    /// Returns how many were applied.
    pub fn drain_del_queue(&mut self) -> usize {
        let dir = self.config.paths.del_queue_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return 0;
        };
        let mut applied = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            // The plugin writes `.<digest>.json.tmp` and renames it to `<digest>.json` when
            // complete: anything else is another process's file in the making, left alone.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let attachment = match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<AttachmentId>(&b)?))
            {
                Ok(attachment) => attachment,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "an unreadable spooled DEL; removing it");
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            match self.endpoints.del(&attachment) {
                Ok(_) => {
                    info!(container = %attachment.container_id, "applied a spooled DEL");
                    applied += 1;
                }
                Err(e) => {
                    warn!(%e, "spooled DEL failed; keeping it for the next pass");
                    continue;
                }
            }
            let _ = fs::remove_file(&path);
        }
        if applied > 0 {
            if let Err(e) = self.reprogram(None) {
                warn!(error = %format!("{e:#}"), "programming policy after spooled DELs failed");
            }
            self.publish();
        }
        applied
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
            }],
        });
        fs::create_dir_all(&self.config.cni_conf_dir)?;
        let bytes = serde_json::to_vec_pretty(&conflist)?;
        write_atomic(&self.config.conflist_path(), &bytes)?;
        info!(path = %self.config.conflist_path().display(), "wrote CNI config");
        Ok(())
    }

    pub async fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => {
                let node_devices = self
                    .endpoints
                    .datapath()
                    .attach_mode()
                    .map_or_else(|| "unresolved".to_owned(), |m| m.to_string());
                let mode = match self.config.paths.attach_mode {
                    AttachMode::Auto => {
                        format!("clsact on pod veths, {node_devices} on node devices")
                    }
                    _ => node_devices,
                };
                return Response::Status {
                    ready: true,
                    message: format!(
                        "weir-agent on {} ready with {} endpoints (tc attach: {mode})",
                        self.config.node_name,
                        self.endpoints.len()
                    ),
                };
            }
            Request::Add { endpoint } => self.add(endpoint).await.map(|()| Response::Ok),
            Request::Del { attachment } => self
                .endpoints
                .del(&attachment)
                .map_err(Into::into)
                // The IP leaves every peer set before the plugin frees it for reuse.
                .and_then(|_| self.reprogram(None))
                .map(|()| Response::Ok),
            Request::Get { attachment } => Ok(Response::Endpoint {
                endpoint: self.endpoints.get(&attachment).map(|r| r.endpoint.clone()),
            }),
            Request::Gc { valid } => self
                .endpoints
                .gc(&valid)
                .map_err(Into::into)
                .and_then(|removed| self.reprogram(None).map(|()| removed))
                .map(|removed| Response::Gc { removed }),
            Request::Sync => self.sync().await.map(|()| Response::Synced {
                generation: self.policy.generation(),
                rejected: self.policy.rejected(),
            }),
        };
        self.publish();
        result.unwrap_or_else(|e: anyhow::Error| {
            warn!(error = %format!("{e:#}"), "request failed");
            Response::Error {
                message: format!("{e:#}"),
            }
        })
    }

    async fn add(&mut self, endpoint: Endpoint) -> Result<()> {
        if !self.config.pod_cidr.contains(&endpoint.ip) || endpoint.ip == Ipv4Addr::UNSPECIFIED {
            bail!(
                "IP {} is outside this node's pod CIDR {}",
                endpoint.ip,
                self.config.pod_cidr
            );
        }
        // Only the attachment's own veth, as the plugin names it: never the uplink, weir0, or
        // another pod's interface.
        let expected = weir_agent_api::host_veth_name(
            &endpoint.attachment.container_id,
            &endpoint.attachment.ifname,
        );
        if endpoint.host_ifname != expected {
            bail!(
                "host interface {} is not attachment {}/{}'s veth ({expected})",
                endpoint.host_ifname,
                endpoint.attachment.container_id,
                endpoint.attachment.ifname
            );
        }
        let link = self
            .host
            .link_by_name(&endpoint.host_ifname)
            .await?
            .with_context(|| format!("host interface {} does not exist", endpoint.host_ifname))?;
        if link.kind.as_deref() != Some("veth") {
            bail!(
                "host interface {} is a {}, not a veth",
                endpoint.host_ifname,
                link.kind.as_deref().unwrap_or("device of no kind")
            );
        }
        if link.index != endpoint.host_ifindex {
            bail!(
                "host interface {} has index {}, not {}",
                endpoint.host_ifname,
                link.index,
                endpoint.host_ifindex
            );
        }
        host::Sysctls::new(&self.config.proc_sys_dir).configure_veth(&endpoint.host_ifname)?;
        // The pod's own policy and its place in other pods' peer sets are programmed before the
        // endpoint is published and before ADD returns: there is no first-packet window.
        self.policy.refresh();
        let attachment = endpoint.attachment.clone();
        if let Err(e) = self.reprogram(Some(endpoint)) {
            // Whatever the failed ADD left: the endpoint, and the policy entries only it used.
            let _ = self.endpoints.del(&attachment);
            let _ = self.reprogram(None);
            return Err(e);
        }
        Ok(())
    }
}

/// Put the node's addresses that are trusted as the node into the datapath (see
/// [`host::trusted_host_addresses`]); returns how many were left out, warning about them.
async fn program_host_ips(
    host: &Host,
    datapath: &mut BpfDatapath,
    uplink: u32,
    max: u32,
) -> Result<usize> {
    let addresses = host.ipv4_addresses().await?;
    let (trusted, left_out) = host::trusted_host_addresses(&addresses, uplink, max);
    datapath.set_host_ips(&trusted)?;
    if left_out > 0 {
        warn!(
            addresses = addresses.len(),
            trusted = trusted.len(),
            "the node has more addresses than --max-host-addresses; the rest are not trusted as the node"
        );
    }
    Ok(left_out)
}

/// The neighbour entries an agent made for other nodes (empty when it made none).
fn read_neighbours(file: &Path) -> std::collections::BTreeSet<Ipv4Addr> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Remove everything an agent made on this node: pins (which detaches the programs), `weir0` and
/// its route, leftover pod veths, neighbour entries for other nodes, iptables chains, the
/// conflist and the agent's state.
pub async fn cleanup(config: &Config) -> Result<()> {
    let paths = &config.paths;
    let _ = fs::remove_file(config.conflist_path());
    let host = Host::connect()?;
    let neighbours = read_neighbours(&paths.neighbours_file());
    if !neighbours.is_empty() {
        let uplink = match &config.uplink {
            Some(name) => host.link_by_name(name).await?,
            None => host.default_route_link().await?,
        };
        if let Some(uplink) = uplink {
            for ip in neighbours {
                if let Err(e) = host.delete_neighbour(ip, uplink.index).await {
                    warn!(%e, "deleting the neighbour entry for {ip}");
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(paths.endpoints_dir()) {
        for entry in entries.flatten() {
            let name = entry
                .path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            if let Some(name) = name {
                if let Err(e) = host.delete_link(&name).await {
                    warn!(%e, "deleting {name}");
                }
            }
        }
    }
    // Routes to weir0 (this node's pods and every other node's) go with it.
    host.delete_link(HOST_DEV).await?;
    host.delete_link(TUNNEL_DEV).await?;
    host::remove_iptables(Some(config.pod_cidr));
    for dir in [&paths.bpffs_dir, &paths.run_dir, &paths.state_dir] {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(%e, dir = %dir.display(), "removing"),
        }
    }
    Ok(())
}
