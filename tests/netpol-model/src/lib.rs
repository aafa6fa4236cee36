// SPDX-License-Identifier: Apache-2.0
//! `weir-netpol-model`: an independent model of Kubernetes NetworkPolicy (networking.k8s.io/v1)
//! and ClusterNetworkPolicy (policy.networking.k8s.io, network-policy-api v0.3.0) semantics, for
//! differential tests of Weir's policy compiler and its eBPF datapath.
//!
//! The model is written from the Kubernetes API reference and the "Network Policies" concept page,
//! apart from the compiler (it does not depend on, or borrow from, `weir-policy`). It answers one
//! question, one connection at a time, by plain linear scans over the policies:
//! [`allowed`]`(world, from, to, proto, port)`. Its worth is in being obviously right, not fast.
//!
//! - [`world`]: the input ([`World`]: namespaces, pods with labels, IPs and container ports,
//!   outside addresses, and `k8s_openapi` NetworkPolicy objects), printable as YAML.
//! - [`eval`]: the semantics; [`tiers`]: the cluster admin's tiers around them.
//! - [`random`]: seeded random worlds that exercise every field of the API.
//! - [`shrink`]: reduce a world that exposes a disagreement to a minimal one.

pub mod eval;
pub mod random;
pub mod shrink;
pub mod tiers;
pub mod world;

pub use k8s_openapi;
pub use rand;

pub use crate::{
    eval::{allowed, Direction},
    random::{
        interesting_ports, random_relabel, random_world, PodPorts, Size, OUTSIDE_HOST,
        UNUSED_POD_IP,
    },
    shrink::shrink,
    world::{ContainerPort, Endpoint, Namespace, Pod, Proto, World, NAMESPACE_NAME_LABEL},
};
