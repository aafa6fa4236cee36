//! The kernel edge: everything the agent does to the node's kernel, and nothing else does it.
//!
//! - [`datapath`]: the eBPF object, its maps and attachments, behind the [`datapath::Datapath`]
//!   trait (with an in-memory fake for tests of what sits above).
//! - [`pins`]: the pinned maps opened by the kind `weir-common` declares, for readers that run
//!   without the agent (the CLI, the conntrack sweeper, the metrics collector).
//! - [`devices`]: `weir0`, the VXLAN device, their routes and neighbours (over `weir-netlink`).
//! - [`sysctl`], [`iptables`], [`host_ports`] (hostPort NAT), [`bpffs`], [`conntrack`] (the sweeper).
//!
//! Layer: imports only [`crate::config`] of the agent; `program`, `telemetry` and `daemon` build
//! on it.

pub mod bpffs;
pub mod conntrack;
pub mod datapath;
pub mod devices;
pub mod flow_events;
pub mod host_ports;
pub mod iptables;
pub mod pins;
pub mod sysctl;
