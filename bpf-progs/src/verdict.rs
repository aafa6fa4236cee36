//! The tc verdicts, and dropping with a counted reason.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use weir_common::{
    counters::{DIR_FROM_POD, DIR_TO_POD},
    EndpointInfo, Reason,
};

use crate::{counters::count, events::drop_event};

pub const PASS: i32 = TC_ACT_OK as i32;
pub const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub fn drop_with(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) -> i32 {
    count(ctx, ifindex, direction, reason);
    drop_event(ctx, ifindex, direction, reason);
    DROP
}

/// Count a policy denial on the endpoint whose policy said no.
#[inline(always)]
pub fn deny(
    ctx: &TcContext,
    reason: Reason,
    src: Option<&EndpointInfo>,
    dst: Option<&EndpointInfo>,
) -> i32 {
    let (ep, direction) = match reason {
        Reason::DropPolicyIngress => (dst, DIR_TO_POD),
        _ => (src, DIR_FROM_POD),
    };
    // A fail-closed denial names the direction by which endpoint it was counted on.
    let (ep, direction) = match (reason, ep) {
        (Reason::DropPolicyFailClosed, None) => (dst, DIR_TO_POD),
        _ => (ep, direction),
    };
    // Not `drop_with`: `policy::judge` has published this verdict's event already.
    count(ctx, ep.map_or(0, |e| e.host_ifindex), direction, reason);
    DROP
}
