//! Egress policy for a pod's Service traffic whose backend is not a pod: the node itself (a
//! host-network backend here), another node, or something outside the cluster. Such traffic never
//! reaches `weir0`, where Service traffic to pods is judged after DNAT, so the agent's iptables
//! run this program (`-m bpf`, a pinned socket filter) in FORWARD and INPUT on the original
//! direction of pod flows the host stack DNATed to an address outside the cluster CIDR: there the
//! packet has its real destination and still its pod source (masquerading comes later, in
//! POSTROUTING). It answers "match" (1: iptables drops) when the pod's egress policy denies the
//! flow, and counts the drop on the pod.

use aya_ebpf::programs::SkBuffContext;
use weir_common::{
    counters::DIR_FROM_POD, events::AT_AFTER_DNAT, CtKey, EndpointInfo, EndpointKey, Reason,
};

use crate::{
    counters::count_bytes,
    flow::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
    maps::ENDPOINTS,
    policy,
};

const ALLOW: i64 = 0;
const DENY: i64 = 1;

/// iptables hands the program the packet from its IPv4 header on.
#[inline(always)]
pub fn judge(ctx: &SkBuffContext) -> i64 {
    let Ok(ip) = ctx.load::<[u8; 20]>(0) else {
        return ALLOW;
    };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let saddr = [ip[12], ip[13], ip[14], ip[15]];
    // SAFETY: copied out at once; the agent replaces whole values.
    let Some(src) = (unsafe {
        ENDPOINTS.get(&EndpointKey {
            ip_be: u32::from_ne_bytes(saddr),
        })
    })
    .copied() else {
        // Not a pod of this node: nothing of Weir's to judge.
        return ALLOW;
    };
    let mut key = CtKey {
        saddr,
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: [0; 2],
        dport: [0; 2],
        proto: ip[9],
        _pad: [0; 3],
    };
    // Later fragments: the host stack reassembles before NAT, so they do not come here apart.
    if matches!(key.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        let Ok(ports) = ctx.load::<[u8; 4]>(ihl) else {
            return deny(ctx, &src, Reason::DropMalformed);
        };
        key.sport = [ports[0], ports[1]];
        key.dport = [ports[2], ports[3]];
    }
    match policy::judge(&key, Some(&src), None, AT_AFTER_DNAT) {
        Ok(()) => ALLOW,
        Err(reason) => deny(ctx, &src, reason),
    }
}

#[inline(always)]
fn deny(ctx: &SkBuffContext, src: &EndpointInfo, reason: Reason) -> i64 {
    count_bytes(u64::from(ctx.len()), src.host_ifindex, DIR_FROM_POD, reason);
    DENY
}
