// SPDX-License-Identifier: Apache-2.0
//! Just enough SCTP to tell whether an association *could* be set up: the INIT / INIT-ACK
//! exchange (RFC 9260, formerly RFC 4960, section 5.1), over raw IP sockets.
//!
//! The lab's kernel has no SCTP sockets (`CONFIG_IP_SCTP` is off), but it has SCTP conntrack,
//! NAT and `xt_sctp`, which is all Services and NetworkPolicy need. So the pods' server answers
//! an INIT to a served port with a valid INIT-ACK (and to any other port with an ABORT, as a
//! real stack without a listener does), and the probe sends an INIT and waits for the INIT-ACK.
//! Both use raw sockets of protocol 132; the kernel adds and strips nothing but the IP header.
//!
//! Packets must carry a correct CRC32c: netfilter's SCTP conntrack verifies it and drops the
//! packet otherwise. [`crc32c`] is the RFC 3309 / RFC 9260 appendix A function; it is stored
//! in the header little-endian, as Linux does (`cpu_to_le32`).

use std::{
    io::{self, Read},
    net::Ipv4Addr,
    os::fd::{FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: i32 = 132;
/// Chunk types used here.
pub const CHUNK_INIT: u8 = 1;
pub const CHUNK_INIT_ACK: u8 = 2;
pub const CHUNK_ABORT: u8 = 6;
/// INIT-ACK parameter carrying the State Cookie.
pub const PARAM_STATE_COOKIE: u16 = 7;
/// Length of the common header.
pub const COMMON_HEADER_LEN: usize = 12;

/// The CRC32c (Castagnoli, reflected polynomial 0x82F63B78) table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        // `i < 256`, so this cast is exact.
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32c of `data` (initial value and final XOR 0xFFFFFFFF).
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8)
    })
}

/// Fill in the checksum of an SCTP packet (common header first; the field must be zero or
/// stale, it is zeroed first).
pub fn set_checksum(packet: &mut [u8]) {
    packet[8..12].fill(0);
    let crc = crc32c(packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Does the packet's checksum field match its contents?
pub fn checksum_ok(packet: &[u8]) -> bool {
    if packet.len() < COMMON_HEADER_LEN {
        return false;
    }
    let mut copy = packet.to_vec();
    let stored = [copy[8], copy[9], copy[10], copy[11]];
    set_checksum(&mut copy);
    copy[8..12] == stored
}

/// The fields of an INIT or INIT-ACK chunk that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitFields {
    pub initiate_tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
}

fn common_header(src_port: u16, dst_port: u16, vtag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p
}

fn push_init_chunk(p: &mut Vec<u8>, kind: u8, init: &InitFields, params: &[u8]) {
    let len = u16::try_from(20 + params.len()).unwrap_or(u16::MAX);
    p.extend_from_slice(&[kind, 0]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&init.initiate_tag.to_be_bytes());
    p.extend_from_slice(&init.a_rwnd.to_be_bytes());
    p.extend_from_slice(&init.outbound_streams.to_be_bytes());
    p.extend_from_slice(&init.inbound_streams.to_be_bytes());
    p.extend_from_slice(&init.initial_tsn.to_be_bytes());
    p.extend_from_slice(params);
}

/// An INIT packet (verification tag 0, as RFC 9260 requires), checksummed.
pub fn init_packet(src_port: u16, dst_port: u16, init: &InitFields) -> Vec<u8> {
    let mut p = common_header(src_port, dst_port, 0);
    push_init_chunk(&mut p, CHUNK_INIT, init, &[]);
    set_checksum(&mut p);
    p
}

/// The INIT-ACK answering `init` (received from `peer_port` on our `port`): the verification tag
/// is the INIT's initiate tag; `ours` carries our own tag; a State Cookie parameter holds
/// `cookie` (padded to 4 bytes).
pub fn init_ack_packet(
    port: u16,
    peer_port: u16,
    init: &InitFields,
    ours: &InitFields,
    cookie: &[u8],
) -> Vec<u8> {
    let mut params = Vec::with_capacity(4 + cookie.len() + 3);
    let param_len = u16::try_from(4 + cookie.len()).unwrap_or(u16::MAX);
    params.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
    params.extend_from_slice(&param_len.to_be_bytes());
    params.extend_from_slice(cookie);
    while params.len() % 4 != 0 {
        params.push(0);
    }
    let mut p = common_header(port, peer_port, init.initiate_tag);
    let ours = InitFields {
        // Never promise more outbound streams than the peer accepts inbound.
        outbound_streams: ours.outbound_streams.min(init.inbound_streams),
        ..*ours
    };
    push_init_chunk(&mut p, CHUNK_INIT_ACK, &ours, &params);
    set_checksum(&mut p);
    p
}

/// An ABORT answering an INIT to a port nobody serves (RFC 9260 section 8.4): the verification
/// tag is the INIT's initiate tag, so the T bit is clear.
pub fn abort_packet(port: u16, peer_port: u16, peer_tag: u32) -> Vec<u8> {
    let mut p = common_header(port, peer_port, peer_tag);
    p.extend_from_slice(&[CHUNK_ABORT, 0, 0, 4]);
    set_checksum(&mut p);
    p
}

/// An SCTP packet as received on a raw socket (IPv4 header included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
    pub checksum_ok: bool,
    /// Type of the first chunk.
    pub chunk: u8,
    /// INIT / INIT-ACK fields, when the first chunk is one of those.
    pub init: Option<InitFields>,
    /// The first chunk's parameters (INIT / INIT-ACK) or body.
    pub chunk_body: &'a [u8],
}

/// Parse an IPv4 packet carrying SCTP; `None` for anything else or anything truncated.
pub fn parse(packet: &[u8]) -> Option<Received<'_>> {
    let first = *packet.first()?;
    if first >> 4 != 4 || packet.get(9) != Some(&132) {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let end = total.min(packet.len());
    let sctp = packet.get(ihl..end)?;
    if sctp.len() < COMMON_HEADER_LEN + 4 {
        return None;
    }
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let chunk = sctp[12];
    let chunk_len = usize::from(be16(sctp, 14)).clamp(4, sctp.len() - COMMON_HEADER_LEN);
    let body = &sctp[COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + chunk_len];
    let init =
        (matches!(chunk, CHUNK_INIT | CHUNK_INIT_ACK) && body.len() >= 16).then(|| InitFields {
            initiate_tag: be32(body, 0),
            a_rwnd: be32(body, 4),
            outbound_streams: be16(body, 8),
            inbound_streams: be16(body, 10),
            initial_tsn: be32(body, 12),
        });
    Some(Received {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        src_port: be16(sctp, 0),
        dst_port: be16(sctp, 2),
        vtag: be32(sctp, 4),
        checksum_ok: checksum_ok(sctp),
        chunk,
        init,
        chunk_body: if init.is_some() { &body[16..] } else { body },
    })
}

/// The State Cookie parameter of an INIT-ACK's parameters, if present.
pub fn state_cookie(params: &[u8]) -> Option<&[u8]> {
    let mut rest = params;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == PARAM_STATE_COOKIE {
            return Some(&rest[4..len]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

/// A non-blocking raw IPv4 socket for protocol 132 (SCTP), in the calling thread's netns. It
/// receives every SCTP packet delivered locally, IP header included, and sends SCTP packets
/// behind an IP header the kernel builds. Needs `CAP_NET_RAW`.
pub fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with constant arguments; it allocates nothing of ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            IPPROTO_SCTP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A random non-zero `u32` (tags must not be zero), from the kernel's generator, mixed with a
/// counter so concurrent callers never collide even if `/dev/urandom` is unreadable.
pub fn random_u32() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 4];
    let from_kernel = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    let mut value = u32::from_ne_bytes(bytes);
    if !from_kernel {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Truncation intended: mixing bits.
        value = (crate::names::fnv1a64(&[n.to_ne_bytes(), u64::from(nanos).to_ne_bytes()].concat())
            >> 7) as u32;
    }
    value.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_rfc_3720_and_check_vectors() {
        // RFC 3720 appendix B.4 (the same CRC RFC 9260 uses).
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113f_db5c);
        // The catalogue's check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn checksum_is_stored_little_endian_as_linux_does() {
        // RFC 3720 lists the zero vector's CRC as the byte sequence aa 36 91 8a.
        let mut packet = vec![0u8; 32];
        set_checksum(&mut packet);
        assert_eq!(&packet[8..12], &[0xaa, 0x36, 0x91, 0x8a][..]);
        // Which is the CRC of the packet with a zeroed checksum field, not of the stored one.
        assert!(checksum_ok(&packet));
        packet[20] ^= 1;
        assert!(!checksum_ok(&packet));
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + payload.len()).unwrap();
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 132, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn init_and_init_ack_round_trip() {
        let client = Ipv4Addr::new(10, 244, 1, 2);
        let server = Ipv4Addr::new(10, 244, 1, 3);
        let init = InitFields {
            initiate_tag: 0xdead_beef,
            a_rwnd: 65536,
            outbound_streams: 10,
            inbound_streams: 4,
            initial_tsn: 77,
        };
        let packet = init_packet(40000, 80, &init);
        assert_eq!(packet.len(), 32);
        assert_eq!(&packet[..8], &[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        assert_eq!(&packet[12..16], &[CHUNK_INIT, 0, 0, 20]);
        let wire = ipv4(client, server, &packet);
        let got = parse(&wire).unwrap();
        assert_eq!((got.src, got.dst), (client, server));
        assert_eq!((got.src_port, got.dst_port, got.vtag), (40000, 80, 0));
        assert!(got.checksum_ok);
        assert_eq!(got.chunk, CHUNK_INIT);
        assert_eq!(got.init, Some(init));

        let ours = InitFields {
            initiate_tag: 0x1234_5678,
            a_rwnd: 65536,
            outbound_streams: 10,
            inbound_streams: 10,
            initial_tsn: 1,
        };
        let ack = init_ack_packet(80, 40000, &init, &ours, b"cookie!");
        // Header, INIT-ACK fixed part, cookie parameter (4 + 7, padded to 12).
        assert_eq!(ack.len(), 12 + 20 + 12);
        assert_eq!(ack.len() % 4, 0);
        let wire = ipv4(server, client, &ack);
        let got = parse(&wire).unwrap();
        assert!(got.checksum_ok);
        assert_eq!(got.chunk, CHUNK_INIT_ACK);
        assert_eq!(got.vtag, init.initiate_tag, "the INIT's tag comes back");
        let fields = got.init.unwrap();
        assert_eq!(fields.initiate_tag, ours.initiate_tag);
        assert_eq!(
            fields.outbound_streams, 4,
            "capped at the peer's inbound streams"
        );
        assert_eq!(state_cookie(got.chunk_body), Some(&b"cookie!"[..]));
    }

    #[test]
    fn abort_reflects_the_peer_tag_and_garbage_is_refused() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let abort = abort_packet(81, 40000, 42);
        let wire = ipv4(a, a, &abort);
        let got = parse(&wire).unwrap();
        assert_eq!((got.chunk, got.vtag, got.init), (CHUNK_ABORT, 42, None));
        assert!(got.checksum_ok);
        let mut udp = ipv4(a, a, &abort);
        udp[9] = 17;
        assert_eq!(parse(&udp), None);
        assert_eq!(parse(&ipv4(a, a, &abort[..10])), None, "truncated");
        assert_eq!(parse(&[]), None);
        assert_eq!(state_cookie(&[0, 7, 0, 2]), None, "bad parameter length");
    }

    #[test]
    fn random_tags_are_never_zero_and_vary() {
        let tags: Vec<u32> = (0..16).map(|_| random_u32()).collect();
        assert!(tags.iter().all(|&t| t != 0));
        let mut unique = tags.clone();
        unique.sort_unstable();
        unique.dedup();
        assert!(unique.len() > 12, "{tags:?}");
    }
}
