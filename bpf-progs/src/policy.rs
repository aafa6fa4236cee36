//! NetworkPolicy verdicts from the compiled tries (see `weir_common::policy`).

use aya_ebpf::maps::lpm_trie::Key;
use weir_common::{
    policy::{
        PEER_KEY_BITS, PORTSET_EMPTY, PORT_KEY_BITS, TABLE_ALLOW_ALL, TABLE_DENY_ALL,
        TABLE_FAIL_CLOSED,
    },
    CtKey, EndpointInfo, PeerKey, PortKey, Reason,
};

use crate::maps::{POLICY_PEERS, POLICY_PORTS};

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
    POLICY_PORTS.get(&port_key).is_some()
}

/// Judge a new flow: the sender's egress policy when the sender is a local pod, and the
/// receiver's ingress policy when the receiver is one. `Err` carries the reason to count.
#[inline(always)]
pub fn judge(
    key: &CtKey,
    src: Option<&EndpointInfo>,
    dst: Option<&EndpointInfo>,
) -> Result<(), Reason> {
    if let Some(src) = src {
        if !table_allows(src.egress_table, key.daddr, key.proto, key.dport) {
            return Err(denied(src.egress_table, Reason::DropPolicyEgress));
        }
    }
    if let Some(dst) = dst {
        if !table_allows(dst.ingress_table, key.saddr, key.proto, key.dport) {
            return Err(denied(dst.ingress_table, Reason::DropPolicyIngress));
        }
    }
    Ok(())
}

#[inline(always)]
fn denied(table: u32, reason: Reason) -> Reason {
    if table == TABLE_FAIL_CLOSED {
        Reason::DropPolicyFailClosed
    } else {
        reason
    }
}
