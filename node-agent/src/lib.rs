//! weir-agent: the per-node agent of Weir.
//!
//! It loads the eBPF datapath (embedded at build time from `bpf-progs`), pins its maps and links
//! under bpffs so pods keep working while it is down, serves the CNI plugin on a unix socket,
//! and programs each pod's endpoint and policy before the plugin's ADD returns.
//!
//! Layers, each importing only those below it:
//!
//! | module        | what it is                                                              |
//! |---------------|-------------------------------------------------------------------------|
//! | [`cli`]       | the command line; arguments become a [`config::Config`]                 |
//! | [`daemon`]    | the agent's state, start-up, CNI requests, and the loop that owns them  |
//! | [`sources`]   | where objects come from (manifests, the Kubernetes API) → one model     |
//! | [`program`]   | what to write into the datapath, planned from the model, and writing it |
//! | [`telemetry`] | metrics and health, from a status the daemon publishes                  |
//! | [`kernel`]    | the eBPF datapath, pins, devices, sysctls, iptables, conntrack sweeping |
//! | [`config`]    | settings and paths (imported by all)                                     |
//!
//! `sources`, `program` and `telemetry` do not import each other. Below the agent are the crates
//! `weir-policy` (the pure compiler), `weir-kube` (the API source), `weir-netlink` (the one netlink
//! vocabulary), `weir-agent-api` (the protocol) and `weir-common` (the datapath's ABI).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod kernel;
pub mod program;
pub mod sources;
pub mod telemetry;
