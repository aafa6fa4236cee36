//! NetworkPolicy → per-endpoint rule tables.
//!
//! [`compile`] turns the [`Cluster`] into, for each local endpoint and direction, either "not
//! isolated", "fail closed" or a [`RuleTable`] (the PEERS entries the datapath looks up). Work is
//! shared: each policy is checked once (when the model stores it), each peer selector is evaluated
//! once over the cluster, and endpoints selected by the same policies share one table (`Arc`). Only
//! endpoints of this node get tables.
//!
//! [`Incremental`] keeps that work between compilations and redoes only what a change can affect
//! (see `incremental.rs`); [`compile`] is the same code starting from nothing, and the differential
//! tests hold the two equal after every change. [`Incremental::explain`] says, from the same kept
//! state, which policies and rules make a flow allowed or denied.
//!
//! Semantics (networking.k8s.io/v1): a pod is isolated in a direction iff some policy selecting it
//! has that policy type; what is allowed is then the union over those policies' rules. Named ports
//! resolve against the destination pod: the selected pod itself for ingress, each peer pod for egress
//! (so an egress rule with named ports gives each destination pod its own `/32` entry).

mod explain;
mod incremental;
pub(crate) mod policy;
pub mod ports;
mod table;
pub mod tiers;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    sync::Arc,
};

pub use self::{
    explain::{ClusterRuleRef, DirectionVerdict, RuleRef},
    incremental::Incremental,
    ports::{range_prefixes, PortPrefix, PortSet},
    table::RuleTable,
};
use crate::model::{Cluster, PodKey, PolicyKey};

/// Traffic direction, relative to the local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic to the pod; the peer is the source.
    Ingress,
    /// Traffic from the pod; the peer is the destination.
    Egress,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn index(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// Something wrong in a policy (or elsewhere) that made the compiler deny more than asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub policy: Option<PolicyKey>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(key) => write!(f, "NetworkPolicy {key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What one direction of one endpoint enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionRules {
    /// No policy isolates the pod in this direction: everything is allowed.
    Unisolated,
    /// Isolated, and a policy that applies is invalid: nothing is allowed.
    FailClosed,
    /// Isolated: only what the table allows.
    Rules(Arc<RuleTable>),
}

impl DirectionRules {
    /// Whether a new flow with this peer, IP protocol number and destination port is allowed.
    pub fn allows(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        match self {
            DirectionRules::Unisolated => true,
            DirectionRules::FailClosed => false,
            DirectionRules::Rules(table) => table.allows(peer, proto, port),
        }
    }
}

/// The rules of one local endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRules {
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl EndpointRules {
    pub fn get(&self, direction: Direction) -> &DirectionRules {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The result of [`compile`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Every local endpoint, by address.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointRules>,
    pub problems: Vec<Problem>,
    /// What ClusterNetworkPolicies ask that is enforced otherwise (or not at all).
    pub cluster_problems: Vec<crate::cluster_policy::ClusterProblem>,
    /// Local endpoints whose pod the model does not (yet) have, by address: closed wherever a
    /// policy of the pod's namespace isolates, until the pod appears.
    pub unknown_pods: BTreeMap<Ipv4Addr, PodKey>,
    /// PEERS entries each policy's tables take (a table shared by several policies counts for
    /// each): which policies to leave out first when the maps cannot hold them all.
    pub footprints: BTreeMap<PolicyKey, usize>,
}

impl Compiled {
    /// The datapath's verdict on a new flow `src → dst`: the source's egress rules if it is a local
    /// endpoint, and the destination's ingress rules if it is one.
    pub fn flow_allowed(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
        let egress_ok = self
            .endpoints
            .get(&src)
            .is_none_or(|e| e.egress.allows(dst, proto, port));
        let ingress_ok = self
            .endpoints
            .get(&dst)
            .is_none_or(|e| e.ingress.allows(src, proto, port));
        egress_ok && ingress_ok
    }
}

/// Compiles the rules of this node's endpoints. `local` lists each endpoint's address and, when
/// known, its pod. The local address is authoritative for that pod (it overrides the model's
/// `status.podIP`), and another pod in the model claiming it is treated as stale. An endpoint with
/// no pod key is selected by no policy (not isolated) but its address still falls in ipBlocks. One
/// whose pod is missing from the model (its Pod not seen yet, or rejected by the source) fails
/// closed in every direction a policy of its namespace isolates: its labels, unknown, might be
/// selected by any of them, and guessing "no labels" would open a pod a policy means to isolate.
pub fn compile(cluster: &Cluster, local: &[(Ipv4Addr, Option<PodKey>)]) -> Compiled {
    compile_excluding(cluster, local, &BTreeSet::new())
}

/// [`compile`], with the policies in `left_out` failed closed (the pods they select deny every
/// direction they isolate) and reported: for policies that do not fit in the datapath's maps.
pub fn compile_excluding(
    cluster: &Cluster,
    local: &[(Ipv4Addr, Option<PodKey>)],
    left_out: &BTreeSet<PolicyKey>,
) -> Compiled {
    Incremental::default().compile(cluster, local, left_out)
}
