//! WEIR_FLOW_EVENTS: one record per policy verdict on a new flow and per drop, on a BPF ring
//! buffer the agent drains (`weir-agent flows`); WEIR_VERDICTS: per-endpoint counts of those
//! verdicts, which are never rate limited; WEIR_FLOW_RATE and WEIR_FLOW_LOST: the per-endpoint
//! rate limit on events and the events it (or a full ring) kept out.
//!
//! Packets of established flows produce nothing: only a judgement (a new flow, or one judged again
//! after a policy change) or a drop does.

use crate::CtKey;

/// A flow allowed by policy (every side judged said yes).
pub const VERDICT_ALLOWED: u8 = 0;
/// A flow denied by policy (`reason` says which side and how).
pub const VERDICT_DENIED: u8 = 1;
/// A packet dropped for another reason than policy (spoofing, no route, malformed...).
pub const VERDICT_DROPPED: u8 = 2;

/// Where in the datapath the event was produced.
pub const AT_FROM_POD: u8 = 0;
pub const AT_FROM_HOST: u8 = 1;
pub const AT_FROM_REMOTE: u8 = 2;
pub const AT_AFTER_DNAT: u8 = 3;
/// A drop, wherever it was counted.
pub const AT_DROP: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was judged.
    pub time_ns: u64,
    /// The packet's tuple (source first); all zero for a packet that could not be parsed.
    pub key: CtKey,
    /// The source endpoint's host veth when its egress policy was judged (or the drop counted on
    /// it), else 0.
    pub src_ifindex: u32,
    /// The destination endpoint's host veth when its ingress policy was judged, else 0.
    pub dst_ifindex: u32,
    /// The rule tables judged (`weir_common::policy::TABLE_*` or a table id); 0 when not judged.
    pub src_table: u32,
    pub dst_table: u32,
    /// A `Reason` code: the drop reason, or 0 for an allowed flow.
    pub reason: u16,
    /// `VERDICT_*`.
    pub verdict: u8,
    /// `AT_*`.
    pub at: u8,
    /// For a drop, the frame's Ethernet type (host order), so that what is not IPv4 (and has no
    /// tuple) still says what it was.
    pub ethertype: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 48);

/// The WEIR_FLOW_LOST slots.
pub const LOST_RING_FULL: u32 = 0;
pub const LOST_RATE_LIMITED: u32 = 1;
pub const LOST_SLOTS: u32 = 2;

/// A WEIR_VERDICTS key: new-flow verdicts by endpoint, policy direction and verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerdictKey {
    /// The endpoint's host veth.
    pub ifindex: u32,
    /// `crate::counters::DIR_FROM_POD` (egress policy) or `DIR_TO_POD` (ingress policy).
    pub direction: u8,
    /// `VERDICT_ALLOWED` or `VERDICT_DENIED`.
    pub verdict: u8,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<VerdictKey>() == 8);

/// Each endpoint's event budget: the time its next event is due (GCRA's "theoretical arrival
/// time"), per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRate {
    pub next_ns: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, integers and byte arrays with explicit padding.
unsafe impl aya::Pod for FlowEvent {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for VerdictKey {}
#[cfg(feature = "user")]
// SAFETY: one u64.
unsafe impl aya::Pod for FlowRate {}
