//! The agent's only way into the kernel's eBPF state, behind a trait so what programs it (the
//! endpoints, policy) can be tested without a kernel (see `fake.rs`).

mod bpf;
pub mod fake;

use std::net::Ipv4Addr;

use weir_common::{CounterKey, CounterValue, EndpointInfo};

pub use crate::config::{AttachMode, Attachments};
pub use bpf::{attached_interfaces, detach_clsact, egress_after_dnat_pin, BpfDatapath};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {name} is not the {declared:?} weir-common declares it to be")]
    MapKind {
        name: &'static str,
        declared: weir_common::maps::MapKind,
    },
    #[error("tc filter {what}: {message}")]
    Filter { what: String, message: String },
    #[error("pinned link {path}: {message}")]
    Link { path: String, message: String },
    #[error("bpffs at {path}: {source}")]
    Fs {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A tc attach point of the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Host-side veth ingress: what the pod sends.
    FromPod,
    /// `weir0` egress: host-stack traffic to pods (local ones, and other nodes').
    FromHost,
    /// `weir-vxlan` ingress: other nodes' traffic out of the tunnel.
    FromTunnel,
    /// The uplink's ingress (native routing): other nodes' pods' traffic, straight to pods.
    FromUplink,
}

impl Hook {
    /// A pod's veth needs one program: everything it receives was redirected to it after policy.
    pub const ALL_ENDPOINT: [Hook; 1] = [Hook::FromPod];

    pub const ALL: [Hook; 4] = [
        Hook::FromPod,
        Hook::FromHost,
        Hook::FromTunnel,
        Hook::FromUplink,
    ];

    /// Names the hook in the link's pin file name: `<suffix>:<ifname>`.
    pub fn pin_suffix(self) -> &'static str {
        match self {
            Hook::FromPod => "from-pod",
            Hook::FromHost => "from-host",
            Hook::FromTunnel => "from-tunnel",
            Hook::FromUplink => "from-uplink",
        }
    }
}

pub trait Datapath: Send {
    /// Attach `hook`'s program to `ifname`: with a pinned tcx link, or with a clsact filter (see
    /// [`AttachMode`]). If an earlier agent attached it already, its program is replaced in place
    /// (bpf_link_update, or a netlink filter change at the same priority and handle), so traffic
    /// never sees a gap. An attachment of the other mode is removed once the new one is in place.
    fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError>;
    /// Remove the attachment of `hook` on `ifname`, whichever mode made it; absent is fine.
    fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError>;
    /// Names of the interfaces that have attachments (pinned links or recorded filters), with
    /// the hook.
    fn pinned_links(&self) -> Result<Vec<(String, Hook)>, DatapathError>;

    fn set_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError>;
    /// Remove an endpoint; absent is fine.
    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError>;
    fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError>;

    fn set_config(&mut self, config: weir_common::NodeConfig) -> Result<(), DatapathError>;
    /// The config entry as it is (all zero when never written).
    fn config(&self) -> Result<weir_common::NodeConfig, DatapathError>;

    /// Counters summed over CPUs.
    fn counters(&self) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError>;
    /// Forget the counters (and verdict counts, and flow event budget) of one host-side
    /// interface, its endpoint being gone; returns the packet counters it had, so that totals
    /// can keep them.
    fn remove_counters(
        &mut self,
        ifindex: u32,
    ) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError>;

    /// PEERS: `(table, peer prefix)` → port set.
    fn set_peer(&mut self, entry: PeerEntry, portset: u32) -> Result<(), DatapathError>;
    /// Remove a PEERS entry; absent is fine.
    fn remove_peer(&mut self, entry: PeerEntry) -> Result<(), DatapathError>;
    fn peers(&self) -> Result<Vec<PeerEntry>, DatapathError>;
    /// PORTS: `(port set, proto, port prefix)` → allow.
    /// Writes a PORTS entry with its verdict (`allow` false: a hole in a shorter allowing entry).
    fn set_port(&mut self, entry: PortEntry, allow: bool) -> Result<(), DatapathError>;
    /// Remove a PORTS entry; absent is fine.
    fn remove_port(&mut self, entry: PortEntry) -> Result<(), DatapathError>;
    fn ports(&self) -> Result<Vec<PortEntry>, DatapathError>;
    /// Whether rule table `table` (a table id, not a `TABLE_*` constant) allows a new flow with
    /// `peer` to `port` over `proto`, looked up as the datapath does (longest prefix first).
    fn table_allows(
        &self,
        table: u32,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Result<bool, DatapathError>;
    /// The verdict the maps give endpoint `endpoint` for a new flow in one direction (`ingress`:
    /// from `peer`; else to it); `None` when there is no such endpoint.
    fn endpoint_allows(
        &self,
        endpoint: Ipv4Addr,
        ingress: bool,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Result<Option<bool>, DatapathError> {
        use weir_common::policy::{TABLE_ALLOW_ALL, TABLE_DENY_ALL, TABLE_FAIL_CLOSED};
        let Some((_, info)) = self
            .endpoints()?
            .into_iter()
            .find(|(ip, _)| *ip == endpoint)
        else {
            return Ok(None);
        };
        let table = if ingress {
            info.ingress_table
        } else {
            info.egress_table
        };
        match table {
            TABLE_ALLOW_ALL => Ok(Some(true)),
            TABLE_DENY_ALL | TABLE_FAIL_CLOSED => Ok(Some(false)),
            table => self.table_allows(table, peer, proto, port).map(Some),
        }
    }

    /// Replace the set of this node's own addresses (always allowed to reach local pods).
    fn set_host_ips(&mut self, ips: &[Ipv4Addr]) -> Result<(), DatapathError>;
    /// Replace the set of the pods' hostPorts (whose flows from local pods are judged after DNAT).
    fn set_host_ports(&mut self, ports: &[weir_common::HostPortKey]) -> Result<(), DatapathError>;
    /// How many entries the PEERS and PORTS maps can hold.
    fn policy_capacity(&self) -> (usize, usize);

    /// Make REMOTES hold exactly `remotes` (prefix → the node it goes to): entries that stay are
    /// rewritten in place, never removed first, so routing to a node never blinks.
    fn set_remotes(&mut self, remotes: &[(ipnet::Ipv4Net, Ipv4Addr)]) -> Result<(), DatapathError>;
    fn remotes(&self) -> Result<Vec<(ipnet::Ipv4Net, Ipv4Addr)>, DatapathError>;
}

/// A PEERS trie key in plain terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerEntry {
    pub table: u32,
    pub net: ipnet::Ipv4Net,
}

/// A PORTS trie key in plain terms: `prefix_len` is 32 (any protocol), 40 (any port) or 40 + bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortEntry {
    pub portset: u32,
    pub proto: u8,
    pub port: u16,
    pub prefix_len: u32,
}
