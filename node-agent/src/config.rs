//! The agent's settings and every path it owns, in one place.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

use crate::{
    datapath::{AttachMode, Attachments},
    routing::Routing,
};

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
    pub paths: Paths,
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
