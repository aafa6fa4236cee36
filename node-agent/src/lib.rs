//! weir-agent: the per-node agent of Weir.
//!
//! It loads the eBPF datapath (embedded at build time from `bpf-progs`), pins its maps and links under
//! bpffs so pods keep working while it is down, serves the CNI plugin on a unix socket, and programs
//! each pod's endpoint before the plugin's ADD returns.

pub mod agent;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod datapath;
pub mod endpoints;
pub mod host;
pub mod kubernetes;
pub mod metrics;
pub mod policy;
pub mod routing;
pub mod server;
pub mod source;
pub mod watch;
