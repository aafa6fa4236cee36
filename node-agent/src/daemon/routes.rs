//! The node in step with the others and with itself: routes and neighbour entries for other
//! nodes, and the node's own addresses in the datapath.

use std::{collections::BTreeSet, fs, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use tracing::{info, warn};
use weir_netlink::{Netlink, RouteV4};

use super::Agent;
use crate::{
    kernel::{
        datapath::{BpfDatapath, Datapath},
        devices,
    },
    program::{endpoints::write_atomic, host_ips::trusted_host_addresses, remotes},
};

impl Agent {
    /// Bring the routes to other nodes in line with the nodes the source knows: `WEIR_REMOTES`
    /// first (pods' traffic), then the kernel's routes to `weir0` (the node's own and Service
    /// traffic), removing what belongs to nodes that left. Cheap when nothing changed.
    pub async fn reconcile_routes(&mut self) -> Result<()> {
        let plan = remotes::plan(
            &self.config.node_name,
            self.config.pod_cidr,
            self.objects.cluster().nodes(),
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
        let weir0 = self.host_dev_index;
        for cidr in &plan.kernel_routes {
            let route = RouteV4::on_link(*cidr, weir0);
            self.netlink.replace_route(&route).await?;
        }
        for cidr in devices::routes_via(&self.netlink, weir0).await? {
            if cidr != self.config.pod_cidr && !plan.kernel_routes.contains(&cidr) {
                self.netlink
                    .del_route(&RouteV4::on_link(cidr, weir0))
                    .await?;
            }
        }
        self.reconcile_neighbours(&plan.node_addresses()).await?;
        info!(
            nodes = plan.kernel_routes.len(),
            entries = entries.len(),
            "routes to other nodes programmed"
        );
        self.remotes = Some(plan);
        Ok(())
    }

    /// Keep every other node's address (`wanted`) resolved on the uplink with kernel-managed
    /// neighbour entries, so that no packet the datapath sends to a node waits in the neighbour
    /// queue. That queue is why: a packet that `bpf_redirect_neigh` parks there while the address
    /// resolves is sent, once it resolves, through the neighbour of the route it came by (weir0's,
    /// a NOARP device), so it leaves with weir0's MAC as its destination and the peer drops it
    /// (the node's first SYN to another node's pod was lost). The entries made are recorded, so
    /// that nodes that left, and `cleanup`, remove exactly those.
    async fn reconcile_neighbours(&mut self, wanted: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let uplink = self.node_config.uplink_ifindex;
        if uplink == 0 {
            return Ok(());
        }
        let file = self.config.paths.neighbours_file();
        let made = read_neighbours(&file);
        for ip in wanted.difference(&made) {
            self.netlink.replace_managed_neighbour(*ip, uplink).await?;
        }
        for ip in made.difference(wanted) {
            self.netlink.del_neighbour(*ip, uplink).await?;
        }
        if made != *wanted {
            let text: String = wanted.iter().map(|ip| format!("{ip}\n")).collect();
            write_atomic(&file, text.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(())
    }

    /// Re-read the node's own addresses (DHCP, a new interface): they are always allowed to reach
    /// local pods, so the set must follow the node.
    pub async fn refresh_host_ips(&mut self) -> Result<()> {
        self.host_addresses = program_host_ips(
            &self.netlink,
            self.endpoints.datapath_mut(),
            self.node_config.uplink_ifindex,
            self.config.max_host_addresses,
        )
        .await?;
        Ok(())
    }
}

/// How many of the node's addresses the datapath trusts as the node, and how many it left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostAddresses {
    pub trusted: usize,
    pub left_out: usize,
}

/// Put the node's addresses that are trusted as the node into the datapath (see
/// [`trusted_host_addresses`]), warning about those left out.
pub(super) async fn program_host_ips(
    netlink: &Netlink,
    datapath: &mut BpfDatapath,
    uplink: u32,
    max: u32,
) -> Result<HostAddresses> {
    let addresses = devices::node_addresses(netlink).await?;
    let (trusted, left_out) = trusted_host_addresses(&addresses, uplink, max);
    datapath.set_host_ips(&trusted)?;
    if left_out > 0 {
        warn!(
            addresses = addresses.len(),
            trusted = trusted.len(),
            "the node has more addresses than --max-host-addresses; the rest are not trusted as the node"
        );
    }
    Ok(HostAddresses {
        trusted: trusted.len(),
        left_out,
    })
}

/// The neighbour entries an agent made for other nodes (empty when it made none).
pub(super) fn read_neighbours(file: &Path) -> BTreeSet<Ipv4Addr> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}
