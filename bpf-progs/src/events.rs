//! Flow events and verdict counts (see `weir_common::events`): what the agent's `flows`,
//! `explain` and verdict metrics are made of. Only judgements and drops come here, never a packet
//! of an established flow, so the fast path pays nothing.

use aya_ebpf::programs::TcContext;
use weir_common::{
    counters::DIR_TO_POD,
    events::{
        AT_DROP, LOST_RATE_LIMITED, LOST_RING_FULL, VERDICT_ALLOWED, VERDICT_DENIED,
        VERDICT_DROPPED,
    },
    CtKey, FlowEvent, FlowRate, Reason, VerdictKey,
};

use crate::{
    ct,
    flow::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
    maps::{FLOW_EVENTS, FLOW_LOST, FLOW_RATE, VERDICTS},
    node::config,
    packet::{self, EthIpv4, ETH_HLEN, ETH_P_IP},
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// One side's policy verdict on a new flow, counted on its endpoint (never rate limited).
#[inline(always)]
pub fn count_verdict(ifindex: u32, direction: u8, verdict: u8) {
    let key = VerdictKey {
        ifindex,
        direction,
        verdict,
        _pad: 0,
    };
    match VERDICTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU value, valid for the program run.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = VERDICTS.insert(&key, &1, 0);
        }
    }
}

/// Publish an event about endpoint `subject` (0: none) unless it is over its budget or the ring
/// is full (both counted). Written straight into the ring, not built on the stack first: the
/// programs' stack is 512 bytes and they use most of it.
#[inline(always)]
fn publish(subject: u32, fill: impl FnOnce(&mut FlowEvent)) {
    let per_sec = config().flow_events_per_sec;
    if per_sec == 0 {
        return;
    }
    let now = ct::now();
    if !within_budget(subject, u64::from(per_sec), now) {
        lost(LOST_RATE_LIMITED);
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        lost(LOST_RING_FULL);
        return;
    };
    // SAFETY: the reserved record is FlowEvent-sized and 8-byte aligned; every byte is written
    // here (zeroed first) before it is submitted.
    let event = unsafe {
        let ptr = entry.as_mut_ptr();
        core::ptr::write_bytes(ptr, 0, 1);
        &mut *ptr
    };
    event.time_ns = now;
    fill(event);
    entry.submit(0);
}

/// A generic cell rate: each event moves the endpoint's due time one interval on; more than a
/// second's worth ahead of now is over budget (so a burst of `per_sec` passes at once).
#[inline(always)]
fn within_budget(ifindex: u32, per_sec: u64, now: u64) -> bool {
    let interval = NS_PER_SEC / per_sec;
    match FLOW_RATE.get_ptr_mut(&ifindex) {
        Some(rate) => {
            // SAFETY: this CPU's slot of a per-CPU value, valid for the program run.
            let rate = unsafe { &mut *rate };
            let due = if rate.next_ns > now {
                rate.next_ns
            } else {
                now
            };
            if due - now + interval > NS_PER_SEC {
                return false;
            }
            rate.next_ns = due + interval;
            true
        }
        None => {
            let _ = FLOW_RATE.insert(
                &ifindex,
                &FlowRate {
                    next_ns: now + interval,
                },
                0,
            );
            true
        }
    }
}

#[inline(always)]
fn lost(slot: u32) {
    if let Some(n) = FLOW_LOST.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array, valid for the program run.
        unsafe { *n += 1 };
    }
}

/// A flow event for a policy verdict: `src` and `dst` are the (host veth, rule table) of each
/// side judged, zero for a side not judged.
#[inline(always)]
pub fn verdict_event(
    key: &CtKey,
    src: (u32, u32),
    dst: (u32, u32),
    reason: Option<Reason>,
    at: u8,
) {
    let subject = if src.0 != 0 { src.0 } else { dst.0 };
    publish(subject, |e| {
        e.key = *key;
        e.src_ifindex = src.0;
        e.dst_ifindex = dst.0;
        e.src_table = src.1;
        e.dst_table = dst.1;
        e.reason = reason.map_or(0, |r| r as u16);
        e.verdict = if reason.is_some() {
            VERDICT_DENIED
        } else {
            VERDICT_ALLOWED
        };
        e.at = at;
    });
}

/// A flow event for a packet dropped on endpoint `ifindex` (0: none), its tuple read from the
/// packet where it has one.
#[inline(always)]
pub fn drop_event(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) {
    publish(ifindex, |e| {
        let ethertype = packet::ethertype(ctx);
        e.ethertype = ethertype.unwrap_or(0);
        if ethertype == Some(ETH_P_IP) {
            if let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) {
                e.key.saddr = hdr.saddr;
                e.key.daddr = hdr.daddr;
                e.key.proto = hdr.protocol;
                let l4 = ETH_HLEN + usize::from(hdr.ver_ihl & 0x0f) * 4;
                if matches!(hdr.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
                    if let Some(ports) = packet::load::<[u8; 4]>(ctx, l4) {
                        e.key.sport = [ports[0], ports[1]];
                        e.key.dport = [ports[2], ports[3]];
                    }
                }
            }
        }
        if direction == DIR_TO_POD {
            e.dst_ifindex = ifindex;
        } else {
            e.src_ifindex = ifindex;
        }
        e.reason = reason as u16;
        e.verdict = VERDICT_DROPPED;
        e.at = AT_DROP;
    });
}
