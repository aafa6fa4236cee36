//! The kernel/user ABI of Weir: every eBPF map's name, size, key and value type.
//!
//! These types are read by the eBPF programs in `bpf-progs` and written by the node agent, so their
//! layout is a contract. Rules: `#[repr(C)]`, explicit padding fields, no `bool`, byte order in the field
//! name where it is network order, and a size assertion per type. Changing a layout means bumping
//! [`maps::ABI_VERSION`], which moves the pins to a new directory instead of failing to reuse old ones.
#![cfg_attr(not(test), no_std)]

pub mod maps;

pub mod config;
pub mod counters;
pub mod ct;
pub mod endpoint;
pub mod events;
pub mod host_port;
pub mod policy;
pub mod remote;

pub use config::NodeConfig;
pub use counters::{CounterKey, CounterValue, Reason};
pub use ct::{CtKey, CtValue, FragKey, FragPorts};
pub use endpoint::{EndpointInfo, EndpointKey};
pub use events::{FlowEvent, FlowRate, VerdictKey};
pub use host_port::HostPortKey;
pub use policy::{PeerKey, PeerValue, PortKey, PortValue};
pub use remote::{RemoteKey, RemoteNode};
