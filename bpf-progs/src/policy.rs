//! NetworkPolicy verdicts from the compiled tries (see `weir_common::policy`).

use aya_ebpf::maps::lpm_trie::Key;
use weir_common::{
    counters::{DIR_FROM_POD, DIR_TO_POD},
    events::{VERDICT_ALLOWED, VERDICT_DENIED},
    policy::{
        PEER_KEY_BITS, PORTSET_EMPTY, PORT_KEY_BITS, TABLE_ALLOW_ALL, TABLE_DENY_ALL,
        TABLE_FAIL_CLOSED,
    },
    CtKey, EndpointInfo, PeerKey, PortKey, Reason,
};

use crate::{
    events::{count_verdict, verdict_event},
    maps::{POLICY_PEERS, POLICY_PORTS},
};

/// Does rule table `table` allow traffic with `peer` to destination port `port` over `proto`?
#[inline(always)]
fn table_allows(table: u32, peer: [u8; 4], proto: u8, port: [u8; 2]) -> bool {
    if table == TABLE_ALLOW_ALL {
        return true;
    }
    if table == TABLE_DENY_ALL || table == TABLE_FAIL_CLOSED {
        return false;
    }
    let peer_key = Key::new(
        PEER_KEY_BITS,
        PeerKey {
            table: table.to_be_bytes(),
            ip: peer,
        },
    );
    let Some(value) = POLICY_PEERS.get(&peer_key) else {
        return false;
    };
    let portset = value.portset;
    if portset == PORTSET_EMPTY {
        return false;
    }
    let port_key = Key::new(
        PORT_KEY_BITS,
        PortKey {
            portset: portset.to_be_bytes(),
            proto,
            port,
            _pad: 0,
        },
    );
    POLICY_PORTS.get(&port_key).is_some_and(|v| v.allow != 0)
}

/// Judge a new flow: the sender's egress policy when the sender is a local pod, and the
/// receiver's ingress policy when the receiver is one. Each side's verdict is counted on its
/// endpoint and the whole judgement published as a flow event (`at`: where). `Err` carries the
/// reason to count.
#[inline(always)]
pub fn judge(
    key: &CtKey,
    src: Option<&EndpointInfo>,
    dst: Option<&EndpointInfo>,
    at: u8,
) -> Result<(), Reason> {
    let mut src_side = (0, 0);
    if let Some(src) = src {
        src_side = (src.host_ifindex, src.egress_table);
        let allowed = table_allows(src.egress_table, key.daddr, key.proto, key.dport);
        count_verdict(src.host_ifindex, DIR_FROM_POD, verdict(allowed));
        if !allowed {
            let reason = denied(src.egress_table, Reason::DropPolicyEgress);
            verdict_event(key, src_side, (0, 0), Some(reason), at);
            return Err(reason);
        }
    }
    let mut dst_side = (0, 0);
    if let Some(dst) = dst {
        dst_side = (dst.host_ifindex, dst.ingress_table);
        let allowed = table_allows(dst.ingress_table, key.saddr, key.proto, key.dport);
        count_verdict(dst.host_ifindex, DIR_TO_POD, verdict(allowed));
        if !allowed {
            let reason = denied(dst.ingress_table, Reason::DropPolicyIngress);
            verdict_event(key, src_side, dst_side, Some(reason), at);
            return Err(reason);
        }
    }
    verdict_event(key, src_side, dst_side, None, at);
    Ok(())
}

#[inline(always)]
fn verdict(allowed: bool) -> u8 {
    if allowed {
        VERDICT_ALLOWED
    } else {
        VERDICT_DENIED
    }
}

#[inline(always)]
fn denied(table: u32, reason: Reason) -> Reason {
    if table == TABLE_FAIL_CLOSED {
        Reason::DropPolicyFailClosed
    } else {
        reason
    }
}
