//! The agent's settings and every path it owns, in one place.
//!
//! Layer: the bottom of the agent (every layer reads it).

use std::{fmt, net::Ipv4Addr, path::PathBuf, str::FromStr};

use ipnet::Ipv4Net;
use weir_agent_api::Routing;

/// The link-local gateway every pod routes through; answered by eBPF on each host-side veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The device the node routes its pod CIDR to; its tc egress program delivers to the right veth.
pub const HOST_DEV: &str = "weir0";
/// The other end of `weir0`'s veth pair; it carries nothing.
pub const HOST_DEV_PEER: &str = "weir1";
/// The flow-based VXLAN device of VXLAN routing.
pub const TUNNEL_DEV: &str = "weir-vxlan";

/// The network name in the conflist (and the IPAM namespace of the CNI plugin).
pub const NETWORK_NAME: &str = "weir";

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// This node's pod range: the CNI plugin allocates from it.
    pub pod_cidr: Ipv4Net,
    /// All pods of the cluster: traffic to it is never masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// The node's uplink (for the MTU); `None` when the node has no default route.
    pub uplink: Option<String>,
    /// Pod MTU; derived from the uplink (less the VXLAN overhead) when not set.
    pub mtu: Option<u32>,
    /// How other nodes' pods are reached.
    pub routing: Routing,
    pub cni_conf_dir: PathBuf,
    /// The Service ClusterIP range: egress to it is judged after the host stack's DNAT.
    pub service_cidr: Ipv4Net,
    /// Kubernetes manifests (Namespaces, Pods, NetworkPolicies, Services) to enforce, when the
    /// agent runs without an API server.
    pub manifest_dir: Option<PathBuf>,
    /// The sysctl tree the agent writes: `/proc/sys`, or the host's mounted elsewhere when the
    /// agent's own is read-only (an unprivileged container).
    pub proc_sys_dir: PathBuf,
    /// How big the conntrack tables are.
    pub conntrack: ConntrackSizes,
    /// Entries of the policy peer map (rule tables' peers, summed over the node's tables).
    pub policy_peers_max: u32,
    /// At most this many of the node's addresses are trusted as the node (the rest are judged
    /// like any other source, and reported).
    pub max_host_addresses: u32,
    /// Flow events each endpoint may produce per second on each CPU; 0: none.
    pub flow_events_per_sec: u32,
    /// How many recent flows the agent keeps for `weir-agent flows`.
    pub flow_log_size: usize,
    pub paths: Paths,
}

/// Entries of the two conntrack tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackSizes {
    pub tcp: u32,
    pub any: u32,
}

impl ConntrackSizes {
    /// The largest a table may be (about 1 GiB of entries).
    pub const MAX: u32 = 1 << 24;
    /// The smallest a table may be.
    pub const MIN: u32 = 1 << 10;

    /// What Cilium's default dynamic sizing gives a node with `memory` bytes: 0.25% of memory,
    /// shared in proportion to its default table sizes, which comes to 66 280 TCP and 33 140
    /// other entries per GiB, at least 128 Ki and 64 Ki, at most 16 Mi (`bpf-ct-global-tcp-max`
    /// and `bpf-ct-global-any-max`, `bpf-map-dynamic-size-ratio` 0.0025).
    pub fn for_memory(memory: u64) -> Self {
        const GIB: u64 = 1 << 30;
        let per_gib = |entries: u64, min: u32| {
            let n = u128::from(memory) * u128::from(entries) / u128::from(GIB);
            u32::try_from(n).unwrap_or(u32::MAX).clamp(min, Self::MAX)
        };
        Self {
            tcp: per_gib(66_280, weir_common::maps::CT_TCP_MIN),
            any: per_gib(33_140, weir_common::maps::CT_ANY_MIN),
        }
    }
}

/// Where the agent keeps its state. Run-time state lives with the pins (tmpfs and bpffs are both
/// emptied by a reboot, and so must be the endpoint registry that describes them); the IPAM state the
/// CNI plugin keeps lives under `state_dir`, which survives reboots.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Root of the agent's pins on bpffs.
    pub bpffs_dir: PathBuf,
    /// The CNI plugin's log file, written into the conflist.
    pub cni_log_file: PathBuf,
    /// How tc programs are attached; it decides where attachments are recorded.
    pub attach_mode: AttachMode,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("agent.sock")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir.join("agent.lock")
    }
    /// One JSON file per endpoint.
    pub fn endpoints_dir(&self) -> PathBuf {
        self.run_dir.join("endpoints")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
    /// The kernel-managed neighbour entries the agent keeps for other nodes, one address a line.
    pub fn neighbours_file(&self) -> PathBuf {
        self.run_dir.join("neighbours")
    }
    /// DELs the CNI plugin could not deliver while the agent was down.
    pub fn del_queue_dir(&self) -> PathBuf {
        self.state_dir.join("del-queue")
    }
    /// Pins of this ABI version: maps directly in it, links under `links/`.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs_dir
            .join(format!("v{}", weir_common::maps::ABI_VERSION))
    }
    /// Where and how the datapath's attachments are kept: pinned tcx links under
    /// `<pin dir>/links`, markers of clsact filters under `<run dir>/tc-filters` (see
    /// [`Attachments`]).
    pub fn attachments(&self) -> Attachments {
        Attachments {
            mode: self.attach_mode,
            link_pin_dir: self.pin_dir().join("links"),
            filter_dir: self.run_dir.join("tc-filters"),
        }
    }
}

impl Config {
    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join("10-weir.conflist")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_sizes_follow_ciliums_defaults() {
        const GIB: u64 = 1 << 30;
        // Cilium's documented examples: 16 GB → 1 060 485 TCP and 530 242 other entries.
        let sixteen = ConntrackSizes::for_memory(16 * GIB);
        assert!((1_060_000..1_061_000).contains(&sixteen.tcp), "{sixteen:?}");
        assert!((530_000..531_000).contains(&sixteen.any), "{sixteen:?}");
        // Small nodes get the minimums, huge ones the maximum.
        assert_eq!(
            ConntrackSizes::for_memory(GIB / 2),
            ConntrackSizes {
                tcp: 131_072,
                any: 65_536
            }
        );
        assert_eq!(ConntrackSizes::for_memory(1 << 50).tcp, ConntrackSizes::MAX);
    }
}

/// How the tc programs are attached to interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Pod veths get clsact filters; the node's devices (`weir0`, the uplink, the tunnel) get tcx
    /// links when the kernel has them (6.6+, probed by the first attach), clsact otherwise. A pod
    /// veth is Weir's alone, so tcx's ordering among several programs buys nothing there, while
    /// each tcx attach waits for an RCU grace period (about 14 ms): with a filter, CNI ADD takes
    /// a fraction of that. Both survive agent restarts and are replaced in place.
    Auto,
    /// tcx links (`bpf_link`), pinned under `<pin dir>/links` so they outlive the agent.
    Tcx,
    /// Netlink `cls_bpf` filters on a `clsact` qdisc, at a fixed priority and handle per hook.
    /// They are not links and cannot be pinned: they stay while the interface exists, and a
    /// restarted agent replaces its own filter in place. A marker file per attachment under the
    /// run directory records them.
    Clsact,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Clsact => "clsact",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "tcx" => Ok(AttachMode::Tcx),
            "clsact" => Ok(AttachMode::Clsact),
            other => Err(format!(
                "unknown attach mode {other:?} (auto, tcx or clsact)"
            )),
        }
    }
}

/// Where and how the datapath attaches its programs: the requested mode, the directory of tcx
/// link pins (on bpffs) and the directory of clsact filter markers (on the run directory's tmpfs,
/// since bpffs holds no regular files). Both directories are emptied by a reboot, as is what
/// they describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachments {
    pub mode: AttachMode,
    pub link_pin_dir: PathBuf,
    pub filter_dir: PathBuf,
}
