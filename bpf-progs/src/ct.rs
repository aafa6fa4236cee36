//! Connection tracking (WEIR_CT_TCP, WEIR_CT_ANY): find a packet's flow, open one, keep it alive.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::LruHashMap};
use weir_common::{
    ct::{CT_F_CLOSING, CT_F_FROM_NODE, CT_F_REPLIED, CT_F_VIA_HOST, CT_REFRESH_NS},
    CtKey, CtValue, NodeConfig,
};

use crate::{
    flow::{reversed, Flow, IPPROTO_TCP, TCP_FIN, TCP_RST},
    maps::{CT_ANY, CT_TCP},
    node::in_prefix,
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

/// What conntrack knows of a packet arriving from the host stack or another node.
pub enum Known {
    /// Its flow was judged under the current policy (or is the node's own, always allowed), or
    /// it answers a flow that did not cross the host stack.
    Current,
    /// It answers a flow that crossed the host stack (which may have to undo a DNAT).
    ReplyViaHost,
    /// An ICMP error about a tracked flow.
    Related,
    /// A new flow (every TCP SYN is one), or one judged under an older policy: judge it.
    Unknown,
}

/// Is this an ICMP error about a tracked flow, sent as only a party to that flow or a router on
/// its path can send it? As Linux conntrack requires, it goes back to whoever sent the quoted
/// packet; and a pod is never a router on another pod's path, so an error from a pod must come
/// from the quoted packet's destination. Anything else is judged as a packet of its own.
#[inline(always)]
pub fn is_related(flow: &Flow, cfg: &NodeConfig, now: u64) -> bool {
    if !flow.has_icmp_inner || flow.key.daddr != flow.icmp_inner.saddr {
        return false;
    }
    let from_pod = in_prefix(flow.key.saddr, cfg.cluster_cidr_be, cfg.cluster_prefix_len);
    if from_pod && flow.key.saddr != flow.icmp_inner.daddr {
        return false;
    }
    exists(&flow.icmp_inner, now)
}

/// Look the packet's flow up, refreshing it when found.
#[inline(always)]
pub fn known(flow: &Flow, cfg: &NodeConfig, now: u64) -> Known {
    let epoch = cfg.policy_epoch;
    if flow.is_tcp_open() {
        return Known::Unknown;
    }
    match lookup(&flow.key, now) {
        Hit::Forward(value) => {
            // SAFETY: map value pointer valid for this run; read by value.
            let v: CtValue = unsafe { *value };
            if v.epoch == epoch || v.flags & CT_F_FROM_NODE != 0 {
                touch(value, flow, false, now);
                return Known::Current;
            }
            Known::Unknown
        }
        Hit::Reply(value) => {
            touch(value, flow, true, now);
            // SAFETY: as above.
            if unsafe { (*value).flags } & CT_F_VIA_HOST != 0 {
                Known::ReplyViaHost
            } else {
                Known::Current
            }
        }
        Hit::Miss if is_related(flow, cfg, now) => Known::Related,
        Hit::Miss => Known::Unknown,
    }
}
