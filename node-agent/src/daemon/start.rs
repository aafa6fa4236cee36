//! Start-up: the node's devices and datapath brought up, and whatever an earlier agent left
//! (endpoints, pinned maps, attachments) adopted, before the first programming.

use std::{
    collections::BTreeSet,
    fs,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::Path,
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};
use weir_agent_api::Routing;
use weir_common::{
    config::{
        NODE_F_CONFIGURED, NODE_F_VXLAN, TUNNEL_DEV_MAC, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
    },
    NodeConfig,
};
use weir_netlink::{Link, Netlink, RouteV4};

use super::{routes::program_host_ips, Agent};
use crate::{
    config::{Config, Paths, GATEWAY, HOST_DEV, HOST_DEV_PEER, TUNNEL_DEV},
    kernel::{
        bpffs,
        datapath::{egress_after_dnat_pin, BpfDatapath, Datapath, Hook},
        devices, iptables,
        sysctl::Sysctls,
    },
    program::{
        endpoints::Endpoints,
        policy::{PolicyMaps, PolicyMetrics},
    },
    sources::ObjectSource,
    telemetry::Telemetry,
};

impl Agent {
    /// Bring the node's datapath up and adopt existing endpoints, then program what `objects`
    /// (the manifest directory or the Kubernetes API) describes. Must run inside a tokio runtime.
    pub async fn start(
        config: Config,
        objects: ObjectSource,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self> {
        let paths = &config.paths;
        let lock = prepare_state(paths)?;
        let netlink = Netlink::connect()?;
        let uplink = find_uplink(&netlink, config.uplink.as_deref()).await?;
        let mtu = pod_mtu(&config, uplink.as_ref());

        let mut datapath = BpfDatapath::load(
            &paths.pin_dir(),
            &paths.attachments(),
            config.conntrack,
            config.policy_peers_max,
        )
        .context("loading the eBPF datapath")?;
        let (host_dev, tunnel) = set_up_devices(&netlink, &config, mtu).await?;
        // Continue from the epoch an earlier agent left, so no flow is wrongly thought current.
        let epoch = datapath.config()?.policy_epoch.wrapping_add(1);
        let node_config = node_config(&config, &host_dev, uplink.as_ref(), tunnel, epoch);
        datapath.set_config(node_config)?;
        let host_addresses = program_host_ips(
            &netlink,
            &mut datapath,
            node_config.uplink_ifindex,
            config.max_host_addresses,
        )
        .await?;
        let node_links = attach_node_programs(&mut datapath, config.routing, uplink.as_ref())?;
        let mut endpoints = adopt_endpoints(&netlink, datapath, paths, &node_links).await?;
        bpffs::remove_old_abi_pins(&paths.bpffs_dir);

        let mut policy = PolicyMaps::new(PolicyMetrics {
            failures: telemetry.policy_failures.clone(),
            latency: telemetry.programming_seconds.clone(),
            self_check_failures: telemetry.policy_self_check_failures.clone(),
        });
        policy.resume(endpoints.datapath())?;
        endpoints.set_retired(telemetry.retired_counters.clone());
        let config_flow_log_size = config.flow_log_size;
        let mut agent = Self {
            config,
            netlink,
            endpoints,
            mtu,
            node_config,
            objects,
            policy,
            host_dev_index: host_dev.index,
            remotes: None,
            host_addresses,
            heap_trimmed: None,
            host_ports: None,
            flow_log: Arc::new(super::flows::FlowLog::new(config_flow_log_size)),
            explained: super::flows::ExplainCache::default(),
            telemetry,
            _lock: lock,
        };
        // Before programming: endpoints whose DEL was spooled are not programmed again.
        agent.drain_del_queue();
        agent.refresh_objects();
        agent.reprogram(None)?;
        info!(rejected = agent.rejected().len(), "policy programmed");
        agent.sync_host_ports()?;
        agent.reconcile_routes().await?;
        Ok(agent)
    }
}

/// The run and state directories (root's only), the node's lock, and bpffs.
fn prepare_state(paths: &Paths) -> Result<fs::File> {
    for dir in [&paths.run_dir, &paths.state_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let lock = lock(&paths.lock_file())?;
    bpffs::ensure(&paths.bpffs_dir)?;
    Ok(lock)
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

/// `--uplink`, or the device of the default route.
pub(super) async fn find_uplink(netlink: &Netlink, name: Option<&str>) -> Result<Option<Link>> {
    Ok(match name {
        Some(name) => Some(
            netlink
                .link_by_name(name)
                .await?
                .with_context(|| format!("uplink {name} does not exist"))?,
        ),
        None => netlink.default_route_link().await?,
    })
}

/// `--mtu`, or the uplink's: full-size pod packets must fit the uplink once encapsulated, so
/// nothing is fragmented.
fn pod_mtu(config: &Config, uplink: Option<&Link>) -> u32 {
    let uplink_mtu = uplink.and_then(|l| l.mtu).unwrap_or(1500);
    let mtu = config.mtu.unwrap_or(match config.routing {
        Routing::Native => uplink_mtu,
        Routing::Vxlan => uplink_mtu.saturating_sub(VXLAN_OVERHEAD),
    });
    info!(uplink = ?uplink.map(|l| &l.name), mtu, routing = %config.routing, "node uplink");
    if config.routing == Routing::Native && uplink.is_none() {
        warn!("no uplink: other nodes' pods are unreachable until the node has a default route or --uplink is given");
    }
    mtu
}

/// `weir0` with the pod CIDR's route, the node's sysctls and iptables rules, and the tunnel
/// device (VXLAN) or its absence (native). Returns `weir0` and the tunnel's index.
async fn set_up_devices(netlink: &Netlink, config: &Config, mtu: u32) -> Result<(Link, u32)> {
    let host_dev = devices::ensure_host_dev(netlink, HOST_DEV, HOST_DEV_PEER, mtu).await?;
    let sysctls = Sysctls::new(&config.proc_sys_dir);
    sysctls.configure_node(HOST_DEV)?;
    netlink
        .replace_route(&RouteV4::on_link(config.pod_cidr, host_dev.index))
        .await?;
    iptables::install(
        config.pod_cidr,
        config.cluster_cidr,
        config.routing == Routing::Vxlan,
        &egress_after_dnat_pin(&config.paths.pin_dir()),
    )?;
    let tunnel = match config.routing {
        Routing::Vxlan => {
            let tunnel =
                devices::ensure_vxlan_dev(netlink, TUNNEL_DEV, VXLAN_PORT, TUNNEL_DEV_MAC, mtu)
                    .await?;
            sysctls.configure_tunnel(TUNNEL_DEV)?;
            tunnel.index
        }
        Routing::Native => {
            // A node switched from VXLAN keeps no tunnel.
            netlink.del_link(TUNNEL_DEV).await?;
            0
        }
    };
    Ok((host_dev, tunnel))
}

/// The datapath's settings for this node.
fn node_config(
    config: &Config,
    host_dev: &Link,
    uplink: Option<&Link>,
    tunnel_ifindex: u32,
    policy_epoch: u32,
) -> NodeConfig {
    let flags = match config.routing {
        Routing::Vxlan => NODE_F_CONFIGURED | NODE_F_VXLAN,
        Routing::Native => NODE_F_CONFIGURED,
    };
    NodeConfig {
        gateway_ip_be: u32::from(GATEWAY).to_be(),
        cluster_cidr_be: u32::from(config.cluster_cidr.network()).to_be(),
        cluster_prefix_len: u32::from(config.cluster_cidr.prefix_len()),
        host_dev_ifindex: host_dev.index,
        flags,
        policy_epoch,
        service_cidr_be: u32::from(config.service_cidr.network()).to_be(),
        service_prefix_len: u32::from(config.service_cidr.prefix_len()),
        uplink_ifindex: uplink.map_or(0, |l| l.index),
        tunnel_ifindex,
        vni: VXLAN_VNI,
        flow_events_per_sec: config.flow_events_per_sec,
    }
}

/// Attach the node's programs: `weir0`'s, and where other nodes' pods' packets arrive (the
/// tunnel, and the uplink, where everything else passes untouched: with native routing the
/// packets themselves, with VXLAN the tunnel datagrams it decapsulates). Returns the node's
/// devices that keep their attachments.
fn attach_node_programs(
    datapath: &mut BpfDatapath,
    routing: Routing,
    uplink: Option<&Link>,
) -> Result<Vec<String>> {
    datapath.attach(HOST_DEV, Hook::FromHost)?;
    let mut node_links = vec![HOST_DEV.to_owned()];
    match (routing, uplink) {
        (Routing::Vxlan, uplink) => {
            datapath.attach(TUNNEL_DEV, Hook::FromTunnel)?;
            node_links.push(TUNNEL_DEV.to_owned());
            if let Some(uplink) = uplink {
                datapath.attach(&uplink.name, Hook::FromUplink)?;
                node_links.push(uplink.name.clone());
            }
        }
        (Routing::Native, Some(uplink)) => {
            datapath.attach(&uplink.name, Hook::FromUplink)?;
            node_links.push(uplink.name.clone());
        }
        (Routing::Native, None) => {}
    }
    Ok(node_links)
}

/// Open the endpoint registry and bring it in line with the node: endpoints whose veth is still
/// there (same index) are adopted, the rest removed with their map entries and attachments.
async fn adopt_endpoints(
    netlink: &Netlink,
    datapath: BpfDatapath,
    paths: &Paths,
    node_links: &[String],
) -> Result<Endpoints<BpfDatapath>> {
    let mut endpoints = Endpoints::open(datapath, &paths.endpoints_dir())?;
    let mut alive = BTreeSet::new();
    for record in endpoints.records() {
        let ep = &record.endpoint;
        if let Some(link) = netlink.link_by_name(&ep.host_ifname).await? {
            if link.index == ep.host_ifindex {
                alive.insert(ep.host_ifname.clone());
            }
        }
    }
    let keep: Vec<&str> = node_links.iter().map(String::as_str).collect();
    let done = endpoints.reconcile(|ep| alive.contains(&ep.host_ifname), &keep)?;
    info!(
        adopted = done.adopted.len(),
        removed = done.removed.len(),
        stale_map_entries = done.stale_map_entries.len(),
        stale_links = done.stale_links.len(),
        "adopted existing endpoints"
    );
    Ok(endpoints)
}
