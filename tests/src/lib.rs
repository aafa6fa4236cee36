// SPDX-License-Identifier: Apache-2.0
//! The Weir lab: a Kubernetes-node-shaped set of network namespaces on one machine, the
//! `weir-lab` CLI that drives it, and the helpers Weir's privileged tests are built from.
//!
//! - [`Lab`] / [`LabOptions`]: bring a lab up (ext "internet" netns, node netns running
//!   `weir-agent`), add pods through the real `weir` CNI binary, probe between them, tear down.
//!   `Lab::up` tears the lab down again on drop, so a failing test leaves nothing behind.
//! - [`Netns`], [`in_netns`], [`ip_in`]: named network namespaces and running code inside one
//!   without touching the caller's.
//! - [`run_cni`], [`CniEnv`]: invoke a CNI plugin exactly as a container runtime does.
//! - [`probe_in`], [`Server`]: TCP/UDP/SCTP/ICMP probes and the pods' echo server ([`sctp`]:
//!   INIT / INIT-ACK over raw sockets, since the kernel has no SCTP sockets).
//! - [`manifest`]: the lab's Kubernetes objects, one YAML file each in the directory every agent
//!   watches; [`service`]: each pod's ClusterIP, as kube-proxy's iptables mode implements it.
//!   `Lab::apply_yaml`, `delete_policy`, `label_pod`, `label_namespace` change objects and
//!   return once every agent has programmed the change (`Sync`).
//! - [`bin_path`]: where the Weir binaries are (`WEIR_BIN_DIR` or next to the executable).
//!
//! Everything here needs root and `iproute2`; none of it changes the machine's own network
//! namespace. Parallel labs are kept apart by a lab id derived from the lab directory (see
//! [`names`]).

pub mod agent;
pub mod cni;
pub mod demo;
pub mod lab;
pub mod manifest;
pub mod names;
pub mod netns;
pub mod paths;
pub mod probe;
pub mod process;
pub mod sctp;
pub mod serve;
pub mod services;

pub mod state;

pub use crate::{
    cni::{run_cni, CniEnv, CniError, CniOutput},
    lab::{down, up, DownReport, Lab, LabError, LabOptions, Matrix, PodInfo, PodSpec, ProbeResult},
    names::{Endpoint, PodRef},
    netns::{in_netns, ip_in, Netns},
    paths::{bin_path, require_bin},
    probe::{probe_here, probe_in, ProbeOutcome, ProbeSpec, Proto},
    serve::{ServeConfig, Server},
    state::{LabState, Routing},
};

/// True when running as root; privileged tests skip (loudly) otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
