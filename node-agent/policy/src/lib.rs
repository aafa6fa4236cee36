//! Weir's NetworkPolicy compiler: Kubernetes objects in, the datapath's rule tables out.
//!
//! Pure: no I/O besides parsing strings, no clock, no randomness, so every decision can be unit
//! tested. The pipeline:
//!
//! 1. [`manifest::parse_documents`] (or a Kubernetes watch) gives objects, which fill a
//!    [`model::Cluster`].
//! 2. [`compile::compile`] turns the cluster into a [`compile::RuleTable`] per local endpoint and
//!    direction (or "not isolated", or "fail closed"), in the shape of the `WEIR_POLICY_PEERS` and
//!    `WEIR_POLICY_PORTS` tries (`weir_common::policy`).
//! 3. [`plan::Programmer`] assigns table and port-set ids and turns each new compilation into the
//!    ordered map writes that move the datapath from what is programmed to what is wanted.

pub mod cluster_policy;
pub mod compile;
mod fast_hash;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod selector;
