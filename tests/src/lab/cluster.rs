// SPDX-License-Identifier: Apache-2.0
//! Bringing a lab up: its plan, namespaces and links, the servers and one agent per node.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    agent::{start_agent, wait_agent_ready, AgentConfig},
    manifest::node_object,
    names::{self},
    netns::{create_netns, in_netns, ip_in, list_netns},
    paths::require_bin,
    probe::Proto,
    process::{spawn_detached, ProcessRef, Spawn},
    services::{self, ServePort},
    state::{ExtState, LabState, NodeState, Phase, StateLock, STATE_VERSION},
};

use super::{
    objects::manifests, teardown::down_locked, LabError, LabOptions, MAX_NODES, MAX_SOCKET_PATH,
};

/// The `weir-lab` binary, which runs the servers (`weir-lab serve`).
pub(super) fn lab_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    if exe.file_name().is_some_and(|n| n == "weir-lab") {
        return Ok(exe);
    }
    require_bin("weir-lab")
}

/// Start `weir-lab serve` in `netns` answering as `name` on `bind`, on `ports`.
pub(super) fn start_server(
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
        service_cidr: services::SERVICE_CIDR.to_owned(),
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

pub(super) fn build(lock: &StateLock, state: &mut LabState, opts: &LabOptions) -> Result<()> {
    ensure_bpffs()?;
    let ext = state.ext.clone();
    build_outside(&ext)?;
    for node in &state.nodes {
        build_node(&ext, node)?;
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
        &services::default_ports(),
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

fn segment(ip: Ipv4Addr) -> String {
    format!("{ip}/{}", names::SEGMENT_PREFIX_LEN)
}

/// "The internet": a bridge joining the nodes' uplinks, and the outside host's address on lo.
fn build_outside(ext: &ExtState) -> Result<()> {
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
    Ok(())
}

/// A node: its netns, its uplink bridged into the outside, a default route, forwarding on, and
/// the directories its agent and plugin use.
fn build_node(ext: &ExtState, node: &NodeState) -> Result<()> {
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
    Ok(())
}
