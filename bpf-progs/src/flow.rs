//! The 5-tuple of a packet, as connection tracking and policy see it.

use aya_ebpf::programs::TcContext;
use weir_common::{CtKey, FragKey, FragPorts, Reason};

use crate::{
    maps::FRAGS,
    packet::{EthIpv4, ETH_HLEN},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_REDIRECT: u8 = 5;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;

/// Is an ICMP message of this type an error (which no ICMP error may answer: RFC 1122 3.2.2)?
#[inline(always)]
pub fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROB
    )
}

pub struct Flow {
    /// This packet's tuple (source first).
    pub key: CtKey,
    /// TCP flags, 0 for other protocols.
    pub tcp_flags: u8,
    /// For an ICMP error (`has_icmp_inner`): the tuple of the packet it is about (quoted in its
    /// payload). A plain zeroed key rather than an `Option`: LLVM may copy an `Option`'s unset
    /// payload as undefined registers, which the verifier rejects.
    pub icmp_inner: CtKey,
    pub has_icmp_inner: bool,
}

const ZERO_KEY: CtKey = CtKey {
    saddr: [0; 4],
    daddr: [0; 4],
    sport: [0; 2],
    dport: [0; 2],
    proto: 0,
    _pad: [0; 3],
};

impl Flow {
    /// A TCP SYN without ACK opens a new connection even if an old entry has the same tuple.
    #[inline(always)]
    pub fn is_tcp_open(&self) -> bool {
        self.key.proto == IPPROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

#[inline(always)]
pub fn reversed(key: &CtKey) -> CtKey {
    CtKey {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// IPv4 "more fragments" flag and fragment offset, in `frag_off`.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// Parse the L4 header after `hdr`, or say why the packet cannot be judged: truncated
/// (`DropMalformed`), or a later fragment of a datagram whose first fragment was not seen here
/// (`DropFragment`: its ports, and so its verdict, are unknown).
///
/// A fragmented datagram is judged by its first fragment, which carries the ports; they are kept
/// in `WEIR_FRAGS` under the datagram's (source, destination, id, protocol), and its later
/// fragments take them from there, so that each fragment gets the verdict of the whole datagram.
#[inline(always)]
pub fn parse(ctx: &TcContext, hdr: &EthIpv4) -> Result<Flow, Reason> {
    parse_l4(ctx, hdr)
        .ok_or(Reason::DropMalformed)?
        .ok_or(Reason::DropFragment)
}

/// `None`: truncated; `Some(None)`: a later fragment with no known first.
#[inline(always)]
fn parse_l4(ctx: &TcContext, hdr: &EthIpv4) -> Option<Option<Flow>> {
    let ihl = usize::from(hdr.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let l4 = ETH_HLEN + ihl;
    let mut flow = Flow {
        key: CtKey {
            saddr: hdr.saddr,
            daddr: hdr.daddr,
            sport: [0; 2],
            dport: [0; 2],
            proto: hdr.protocol,
            _pad: [0; 3],
        },
        tcp_flags: 0,
        icmp_inner: ZERO_KEY,
        has_icmp_inner: false,
    };
    let frag_off = u16::from_be_bytes(hdr.frag_off);
    let fragment = FragKey {
        saddr: hdr.saddr,
        daddr: hdr.daddr,
        id: hdr.id,
        proto: hdr.protocol,
        _pad: 0,
    };
    // A later fragment carries no L4 header: it takes its first fragment's ports.
    if frag_off & IP_OFFSET != 0 {
        // SAFETY: copied out at once.
        let Some(ports) = (unsafe { FRAGS.get(&fragment) }).copied() else {
            return Some(None);
        };
        flow.key.sport = ports.sport;
        flow.key.dport = ports.dport;
        return Some(Some(flow));
    }
    match hdr.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let ports = ctx.load::<[u8; 4]>(l4).ok()?;
            flow.key.sport = [ports[0], ports[1]];
            flow.key.dport = [ports[2], ports[3]];
            if hdr.protocol == IPPROTO_TCP {
                flow.tcp_flags = ctx.load::<u8>(l4 + 13).ok()?;
            }
            if frag_off & IP_MF != 0 {
                let ports = FragPorts {
                    sport: flow.key.sport,
                    dport: flow.key.dport,
                };
                // A full LRU evicts the oldest datagram's entry; its later fragments are dropped.
                let _ = FRAGS.insert(&fragment, &ports, 0);
            }
        }
        IPPROTO_ICMP => {
            let icmp = ctx.load::<[u8; 8]>(l4).ok()?;
            match icmp[0] {
                // The identifier plays the port: the request keys it as source, the reply as
                // destination, so the reply's reversed tuple is the request's.
                ICMP_ECHO => flow.key.sport = [icmp[4], icmp[5]],
                ICMP_ECHO_REPLY => flow.key.dport = [icmp[4], icmp[5]],
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB => {
                    if let Some(inner) = parse_quoted(ctx, l4 + 8) {
                        flow.icmp_inner = inner;
                        flow.has_icmp_inner = true;
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    Some(Some(flow))
}

/// The IPv4 header and first 8 bytes an ICMP error quotes.
#[inline(always)]
fn parse_quoted(ctx: &TcContext, off: usize) -> Option<CtKey> {
    let ip = ctx.load::<[u8; 20]>(off).ok()?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let mut key = CtKey {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: [0; 2],
        dport: [0; 2],
        proto: ip[9],
        _pad: [0; 3],
    };
    let l4 = ctx.load::<[u8; 8]>(off + ihl).ok()?;
    match key.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            key.sport = [l4[0], l4[1]];
            key.dport = [l4[2], l4[3]];
        }
        IPPROTO_ICMP if l4[0] == ICMP_ECHO => key.sport = [l4[4], l4[5]],
        _ => {}
    }
    Some(key)
}
