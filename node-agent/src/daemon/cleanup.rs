//! `weir-agent cleanup`: remove everything an agent made on this node, without loading anything.

use std::fs;

use anyhow::Result;
use tracing::warn;
use weir_netlink::Netlink;

use super::{routes::read_neighbours, start::find_uplink};
use crate::{
    config::{Config, HOST_DEV, TUNNEL_DEV},
    kernel::{
        datapath::{attached_interfaces, detach_clsact, Hook},
        iptables,
    },
};

/// Remove everything an agent made on this node: interfaces with attachments, pins (which
/// detaches the programs), `weir0` and its route, leftover pod veths, neighbour entries for other
/// nodes, iptables chains, the conflist and the agent's state.
pub async fn cleanup(config: &Config) -> Result<()> {
    let netlink = Netlink::connect()?;
    delete_attached_links(&netlink, config).await;
    let paths = &config.paths;
    let _ = fs::remove_file(config.conflist_path());
    let neighbours = read_neighbours(&paths.neighbours_file());
    if !neighbours.is_empty() {
        if let Some(uplink) = find_uplink(&netlink, config.uplink.as_deref()).await? {
            for ip in neighbours {
                if let Err(e) = netlink.del_neighbour(ip, uplink.index).await {
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
                if let Err(e) = netlink.del_link(&name).await {
                    warn!(%e, "deleting {name}");
                }
            }
        }
    }
    // Routes to weir0 (this node's pods and every other node's) go with it.
    netlink.del_link(HOST_DEV).await?;
    netlink.del_link(TUNNEL_DEV).await?;
    iptables::remove(Some(config.pod_cidr));
    crate::kernel::host_ports::remove();
    for dir in [&paths.bpffs_dir, &paths.run_dir, &paths.state_dir] {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(%e, dir = %dir.display(), "removing"),
        }
    }
    Ok(())
}

/// Delete every interface a Weir attachment is recorded on (pinned tcx link or clsact filter
/// marker), which takes its programs, qdisc and filters along: interfaces with an attachment but
/// no endpoint record (a crash mid-ADD) are found this way. Best effort; only names Weir gives
/// (`weir…`) are deleted. Other interfaces (the uplink) only lose Weir's clsact filters; their
/// tcx links go with the pins.
async fn delete_attached_links(netlink: &Netlink, config: &Config) {
    let attachments = config.paths.attachments();
    let names = match attached_interfaces(&attachments) {
        Ok(names) => names,
        Err(e) => {
            warn!(%e, "listing attachments");
            return;
        }
    };
    for name in &names {
        if name.starts_with("weir") {
            if let Err(e) = netlink.del_link(name).await {
                warn!(%e, "deleting {name}");
            }
            continue;
        }
        for hook in Hook::ALL {
            if let Err(e) = detach_clsact(&attachments, name, hook) {
                warn!(%e, "detaching from {name}");
            }
        }
    }
}
