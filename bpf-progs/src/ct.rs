//! Connection tracking (WEIR_CT_TCP, WEIR_CT_ANY): find a packet's flow, open one, keep it alive.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::LruHashMap};
use weir_common::{
    ct::{CT_F_CLOSING, CT_F_REPLIED, CT_REFRESH_NS},
    CtKey, CtValue,
};

use crate::{
    flow::{reversed, Flow, IPPROTO_TCP, TCP_FIN, TCP_RST},
    maps::{CT_ANY, CT_TCP},
};

/// The table a flow of this protocol lives in.
#[inline(always)]
fn table(proto: u8) -> &'static LruHashMap<CtKey, CtValue> {
    if proto == IPPROTO_TCP {
        &CT_TCP
    } else {
        &CT_ANY
    }
}

pub enum Hit {
    /// The packet belongs to a flow opened in its own direction.
    Forward(*mut CtValue),
    /// The packet answers a flow opened the other way.
    Reply(*mut CtValue),
    Miss,
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn live(key: &CtKey, now: u64) -> Option<*mut CtValue> {
    let value = table(key.proto).get_ptr_mut(key)?;
    // SAFETY: a pointer to a map value, valid for this program run; read by value.
    let v = unsafe { *value };
    (now.wrapping_sub(v.last_seen_ns) <= v.lifetime_ns(key.proto)).then_some(value)
}

#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Hit {
    if let Some(v) = live(key, now) {
        return Hit::Forward(v);
    }
    match live(&reversed(key), now) {
        Some(v) => Hit::Reply(v),
        None => Hit::Miss,
    }
}

/// Is `key` (in either direction) a live flow? For ICMP errors about it.
#[inline(always)]
pub fn exists(key: &CtKey, now: u64) -> bool {
    !matches!(lookup(key, now), Hit::Miss)
}

#[inline(always)]
pub fn open(key: &CtKey, flags: u32, epoch: u32, now: u64) {
    let value = CtValue {
        last_seen_ns: now,
        epoch,
        flags,
    };
    // A full LRU evicts its oldest entry; an insert can only fail for lack of memory, and then
    // the flow is simply judged again on its next packet.
    let _ = table(key.proto).insert(key, &value, 0);
}

/// Note a packet of a known flow: refresh its age at most once a second and record TCP state.
#[inline(always)]
pub fn touch(value: *mut CtValue, flow: &Flow, reply: bool, now: u64) {
    // SAFETY: a pointer to a map value, valid for this program run.
    let v = unsafe { &mut *value };
    let mut flags = v.flags;
    if reply {
        flags |= CT_F_REPLIED;
    }
    if flow.key.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        flags |= CT_F_CLOSING;
    }
    if flags != v.flags || now.wrapping_sub(v.last_seen_ns) > CT_REFRESH_NS {
        v.flags = flags;
        v.last_seen_ns = now;
    }
}
