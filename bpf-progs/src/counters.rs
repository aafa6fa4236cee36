//! Per-endpoint packet and byte counters by direction and reason (see `weir_common::Reason`).

use aya_ebpf::programs::TcContext;
use weir_common::{CounterKey, CounterValue, Reason};

use crate::maps::COUNTERS;

#[inline(always)]
pub fn count(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) {
    count_bytes(u64::from(ctx.len()), ifindex, direction, reason);
}

/// [`count`] a packet of `bytes` bytes, wherever it was seen.
#[inline(always)]
pub fn count_bytes(bytes: u64, ifindex: u32, direction: u8, reason: Reason) {
    let key = CounterKey {
        ifindex,
        direction,
        _pad: 0,
        reason: reason as u16,
    };
    match COUNTERS.get_ptr_mut(&key) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU value, valid for the program run.
        Some(value) => unsafe {
            (*value).packets += 1;
            (*value).bytes += bytes;
        },
        None => {
            let _ = COUNTERS.insert(&key, &CounterValue { packets: 1, bytes }, 0);
        }
    }
}
