//! What to write into the datapath, planned from the model, and the writing of it through the
//! [`crate::kernel::datapath::Datapath`] trait (so all of it is tested against the fake):
//!
//! - [`endpoints`]: the registry of this node's pods' attachments (records, map entries, links).
//! - [`policy`]: [`policy::PolicyMaps`], which compiles the model with `weir-policy` and writes
//!   the plan into the policy maps in an order no packet can exploit.
//! - [`remotes`]: the routes to other nodes (pure).
//! - [`host_ips`]: the node's addresses trusted as the node (pure).
//!
//! Layer: imports [`crate::kernel::datapath`] and [`crate::config`] only; the daemon drives it.

pub mod endpoints;
pub mod host_ips;
pub mod policy;
pub mod remotes;
