// SPDX-License-Identifier: Apache-2.0
//! Connectivity probes: TCP connect-and-read, UDP echo, SCTP INIT / INIT-ACK, ICMP echo.
//!
//! A probe runs in whatever netns its thread is in ([`probe_here`]), or enters one first
//! ([`probe_in`]). It answers one question, "did the other end answer?", with enough detail to tell
//! a policy drop (timeout) from a missing listener (refused) or a routing hole (unreachable).
//!
//! UDP, SCTP and ICMP are retransmitted every [`RESEND_INTERVAL`] until the timeout, as ping
//! does, so a single packet lost to neighbour resolution does not fail a test; the round-trip time
//! is that of the request that was answered, timed from just *before* it was sent: on veths the
//! whole exchange may run inside the sending syscall (the peer's stack runs in softirq on the way
//! out), so a timestamp taken after `send` returns can postdate the answer.
//!
//! SCTP is probed over a raw socket (see [`crate::sctp`]): "connected" means the INIT-ACK for
//! our INIT came back with our tag and a valid checksum; an ABORT means nobody serves the port.

use std::{
    fmt,
    io::{self, Read},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    str::FromStr,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{
        bind, connect, getsockopt, recv, sendto, socket, sockopt, AddressFamily, MsgFlags,
        SockFlag, SockProtocol, SockType, SockaddrIn,
    },
};
use serde::{Deserialize, Serialize};

use crate::{names::ParseError, netns::in_netns};

/// How often UDP and ICMP requests are repeated while waiting for an answer.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Proto {
    /// The protocols that have ports.
    pub const WITH_PORTS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// As Kubernetes spells it (`TCP`, `UDP`, `SCTP`; `ICMP` has no Kubernetes name).
    pub fn k8s_name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Icmp => "ICMP",
        }
    }

    pub fn has_ports(self) -> bool {
        self != Self::Icmp
    }
}

impl FromStr for Proto {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            "icmp" => Ok(Self::Icmp),
            _ => Err(ParseError::Proto(s.to_owned())),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
            Self::Icmp => "icmp",
        })
    }
}

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Bind to this source address (e.g. the outside host's), else let routing choose.
    pub source: Option<Ipv4Addr>,
    pub dest: Ipv4Addr,
    pub proto: Proto,
    /// Ignored for ICMP.
    pub port: u16,
    pub timeout: Duration,
}

/// What a probe saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub connected: bool,
    /// TCP: handshake time; UDP/SCTP/ICMP: round trip of the answered request.
    pub rtt: Option<Duration>,
    /// TCP: the line the server wrote; UDP: the echoed payload.
    pub reply: Option<String>,
    pub error: Option<String>,
}

impl ProbeOutcome {
    fn failed(error: impl fmt::Display) -> Self {
        Self {
            error: Some(error.to_string()),
            ..Self::default()
        }
    }

    fn connected(rtt: Duration, reply: Option<String>) -> Self {
        Self {
            connected: true,
            rtt: Some(rtt),
            reply,
            error: None,
        }
    }
}

/// Run a probe in netns `netns`. `Err` means the probe could not be made (no such netns, no
/// socket), not that the other end did not answer.
pub fn probe_in(netns: &str, spec: &ProbeSpec) -> Result<ProbeOutcome> {
    in_netns(netns, || probe_here(spec))?
}

/// Run a probe from the calling thread's netns.
pub fn probe_here(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    match spec.proto {
        Proto::Tcp => probe_tcp(spec),
        Proto::Udp => probe_udp(spec),
        Proto::Sctp => probe_sctp(spec),
        Proto::Icmp => probe_icmp(spec),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Wait until `fd` is ready for `events` or `timeout` passes; false on timeout.
fn wait_fd(fd: &impl AsFd, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = remaining(deadline);
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("no answer within {} ms", timeout.as_millis())
}

fn bind_source(fd: &OwnedFd, source: Option<Ipv4Addr>) -> Result<()> {
    if let Some(src) = source {
        bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))
            .with_context(|| format!("binding to source address {src}"))?;
    }
    Ok(())
}

fn probe_tcp(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("creating a TCP socket")?;
    bind_source(&fd, spec.source)?;
    let dest = SockaddrIn::from(SocketAddrV4::new(spec.dest, spec.port));
    match connect(fd.as_raw_fd(), &dest) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            if !wait_fd(&fd, PollFlags::POLLOUT, remaining(deadline))? {
                return Ok(ProbeOutcome::failed(format!(
                    "handshake: {}",
                    timed_out(spec.timeout)
                )));
            }
            let err = getsockopt(&fd, sockopt::SocketError).context("SO_ERROR")?;
            if err != 0 {
                return Ok(ProbeOutcome::failed(Errno::from_raw(err).desc()));
            }
        }
        Err(err) => return Ok(ProbeOutcome::failed(err.desc())),
    }
    let rtt = start.elapsed();
    let mut stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Ok(ProbeOutcome::failed(format!(
                "handshake completed but {}",
                timed_out(spec.timeout)
            )));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.contains(&b'\n') || reply.len() > 1024 {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) => {
                return Ok(ProbeOutcome::failed(format!(
                    "handshake completed, then: {}",
                    describe(&err)
                )))
            }
        }
    }
    let line = String::from_utf8_lossy(&reply).trim().to_owned();
    if line.is_empty() {
        return Ok(ProbeOutcome::failed(
            "handshake completed but the server closed without a reply",
        ));
    }
    Ok(ProbeOutcome::connected(rtt, Some(line)))
}

/// A value that differs between concurrent probes (ICMP ident, UDP nonce).
fn next_token() -> u16 {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id();
    // Truncation intended: mixing bits into a u16 token.
    let base = (pid.wrapping_mul(0x9e37_79b1) >> 16) as u16;
    base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x2f1))
}

fn probe_udp(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let socket = UdpSocket::bind(SocketAddrV4::new(
        spec.source.unwrap_or(Ipv4Addr::UNSPECIFIED),
        0,
    ))
    .context("creating a UDP socket")?;
    if let Err(err) = socket.connect(SocketAddrV4::new(spec.dest, spec.port)) {
        return Ok(ProbeOutcome::failed(describe(&err)));
    }
    let token = next_token();
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        if remaining(deadline).is_zero() {
            return Ok(ProbeOutcome::failed(timed_out(spec.timeout)));
        }
        let payload = format!("weir-lab probe {token:04x}-{}", sent.len());
        // Timed before the send: the answer may arrive before `send` returns.
        let at = Instant::now();
        if let Err(err) = socket.send(payload.as_bytes()) {
            return Ok(ProbeOutcome::failed(udp_error(&err)));
        }
        sent.push((payload, at));
        let resend_at = (Instant::now() + RESEND_INTERVAL).min(deadline);
        loop {
            let left = remaining(resend_at);
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if let Some((_, at)) = sent.iter().find(|(p, _)| *p == got) {
                        return Ok(ProbeOutcome::connected(at.elapsed(), Some(got)));
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Ok(ProbeOutcome::failed(udp_error(&err))),
            }
        }
    }
}

fn udp_error(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::ConnectionRefused {
        "connection refused (ICMP port unreachable)".to_owned()
    } else {
        describe(err)
    }
}

/// The RFC 1071 internet checksum of `data` (as it goes in the header, i.e. to be written
/// big-endian).
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits above, so this truncates nothing.
    let folded = sum as u16;
    !folded
}

/// ICMP echo request payload.
const ECHO_PAYLOAD: &[u8; 16] = b"weir-lab probe!!";

/// An ICMP echo request (type 8) with its checksum filled in.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(ECHO_PAYLOAD);
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// What an ICMP packet read from a raw socket means for our probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpEvent {
    /// An echo reply to one of our requests.
    EchoReply { seq: u16 },
    /// An ICMP error (unreachable, time exceeded...) about one of our requests.
    Error { from: Ipv4Addr, kind: u8, code: u8 },
}

fn ipv4_header(packet: &[u8]) -> Option<(usize, u8, Ipv4Addr, Ipv4Addr)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((ihl, packet[9], src, dst))
}

/// Interpret a packet (IPv4 header included, as raw sockets deliver it) received while probing
/// `dest` with `ident`. Anything unrelated (other probes, our own requests looping back) is
/// `None`.
pub fn parse_icmp(packet: &[u8], ident: u16, dest: Ipv4Addr) -> Option<IcmpEvent> {
    let (ihl, proto, src, _) = ipv4_header(packet)?;
    if proto != 1 {
        return None;
    }
    let icmp = packet.get(ihl..)?;
    let (&kind, &code) = (icmp.first()?, icmp.get(1)?);
    match kind {
        0 => {
            let id = u16::from_be_bytes([*icmp.get(4)?, *icmp.get(5)?]);
            let seq = u16::from_be_bytes([*icmp.get(6)?, *icmp.get(7)?]);
            (src == dest && id == ident).then_some(IcmpEvent::EchoReply { seq })
        }
        3 | 11 | 12 => {
            // The error quotes our request's IP header and first 8 bytes of ICMP.
            let inner = icmp.get(8..)?;
            let (inner_ihl, inner_proto, _, inner_dst) = ipv4_header(inner)?;
            let inner_icmp = inner.get(inner_ihl..)?;
            let id = u16::from_be_bytes([*inner_icmp.get(4)?, *inner_icmp.get(5)?]);
            (inner_proto == 1 && inner_dst == dest && *inner_icmp.first()? == 8 && id == ident)
                .then_some(IcmpEvent::Error {
                    from: src,
                    kind,
                    code,
                })
        }
        _ => None,
    }
}

/// A readable description of an ICMP error.
pub fn describe_icmp_error(from: Ipv4Addr, kind: u8, code: u8) -> String {
    let what = match (kind, code) {
        (3, 0) => "network unreachable",
        (3, 1) => "host unreachable",
        (3, 2) => "protocol unreachable",
        (3, 3) => "port unreachable",
        (3, 4) => "fragmentation needed",
        (3, 9 | 10 | 13) => "administratively prohibited",
        (3, _) => "destination unreachable",
        (11, _) => "time exceeded",
        _ => "parameter problem",
    };
    format!("ICMP {what} (type {kind} code {code}) from {from}")
}

/// A fresh ephemeral source port for an SCTP probe (nothing else in the netns uses SCTP ports:
/// the kernel has no SCTP stack).
fn sctp_source_port() -> u16 {
    // Modulo keeps it below 28232, so the sum fits; 32768..=60999 as Linux's default range.
    32768 + u16::try_from(crate::sctp::random_u32() % 28232).unwrap_or(0)
}

fn probe_sctp(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    use crate::sctp::{self, InitFields, CHUNK_ABORT, CHUNK_INIT_ACK};

    let start = Instant::now();
    let deadline = start + spec.timeout;
    let fd = sctp::raw_socket().context("creating a raw SCTP socket (needs CAP_NET_RAW)")?;
    bind_source(&fd, spec.source)?;
    let dest = SockaddrIn::from(SocketAddrV4::new(spec.dest, 0));
    let src_port = sctp_source_port();
    let init = InitFields {
        initiate_tag: sctp::random_u32(),
        a_rwnd: 65536,
        outbound_streams: 10,
        inbound_streams: 65535,
        initial_tsn: sctp::random_u32(),
    };
    // Retransmissions repeat the same INIT (same tag), as a real stack does, so conntrack sees one
    // association.
    let packet = sctp::init_packet(src_port, spec.port, &init);
    let mut last_sent;
    let mut bad_checksum = false;
    let mut buf = [0u8; 2048];
    loop {
        if remaining(deadline).is_zero() {
            let why = if bad_checksum {
                format!(
                    "{} (an INIT-ACK with a bad checksum was ignored)",
                    timed_out(spec.timeout)
                )
            } else {
                timed_out(spec.timeout)
            };
            return Ok(ProbeOutcome::failed(why));
        }
        let at = Instant::now();
        if let Err(err) = sendto(fd.as_raw_fd(), &packet, &dest, MsgFlags::empty()) {
            return Ok(ProbeOutcome::failed(err.desc()));
        }
        last_sent = at;
        let resend_at = (Instant::now() + RESEND_INTERVAL).min(deadline);
        while wait_fd(&fd, PollFlags::POLLIN, remaining(resend_at))? {
            let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(err) => return Ok(ProbeOutcome::failed(err.desc())),
            };
            let Some(got) = sctp::parse(&buf[..n]) else {
                continue;
            };
            let ours = got.src == spec.dest
                && got.src_port == spec.port
                && got.dst_port == src_port
                && got.vtag == init.initiate_tag;
            if !ours {
                continue;
            }
            if !got.checksum_ok {
                bad_checksum = true;
                continue;
            }
            match got.chunk {
                // Retransmitted INITs are identical, so the round trip is timed from the latest.
                CHUNK_INIT_ACK => {
                    return Ok(ProbeOutcome::connected(
                        last_sent.elapsed(),
                        Some("INIT-ACK".to_owned()),
                    ));
                }
                CHUNK_ABORT => {
                    return Ok(ProbeOutcome::failed(
                        "connection refused (SCTP ABORT: nobody serves the port)",
                    ))
                }
                _ => {}
            }
        }
    }
}

fn probe_icmp(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Icmp,
    )
    .context("creating a raw ICMP socket (needs CAP_NET_RAW)")?;
    bind_source(&fd, spec.source)?;
    let ident = next_token();
    let dest = SockaddrIn::from(SocketAddrV4::new(spec.dest, 0));
    let mut sent: Vec<Instant> = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        if remaining(deadline).is_zero() {
            return Ok(ProbeOutcome::failed(timed_out(spec.timeout)));
        }
        let seq = u16::try_from(sent.len()).unwrap_or(u16::MAX);
        // Timed before the send: the reply may be queued before `sendto` returns.
        let at = Instant::now();
        if let Err(err) = sendto(
            fd.as_raw_fd(),
            &echo_request(ident, seq),
            &dest,
            MsgFlags::empty(),
        ) {
            return Ok(ProbeOutcome::failed(err.desc()));
        }
        sent.push(at);
        let resend_at = (Instant::now() + RESEND_INTERVAL).min(deadline);
        while wait_fd(&fd, PollFlags::POLLIN, remaining(resend_at))? {
            let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(err) => return Ok(ProbeOutcome::failed(err.desc())),
            };
            match parse_icmp(&buf[..n], ident, spec.dest) {
                Some(IcmpEvent::EchoReply { seq }) => {
                    if let Some(at) = sent.get(usize::from(seq)) {
                        return Ok(ProbeOutcome::connected(at.elapsed(), None));
                    }
                }
                Some(IcmpEvent::Error { from, kind, code }) => {
                    return Ok(ProbeOutcome::failed(describe_icmp_error(from, kind, code)));
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the one's complement sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // Odd length: the last byte is padded with zero.
        assert_eq!(internet_checksum(&[0xab]), !0xab00);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(packet.len(), 24);
        assert_eq!(&packet[..2], &[8, 0]);
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
        // A packet with a correct checksum sums to 0xffff, i.e. checksums to 0.
        assert_eq!(internet_checksum(&packet), 0);
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut header = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        header.extend_from_slice(&src.octets());
        header.extend_from_slice(&dst.octets());
        header.extend_from_slice(payload);
        header
    }

    #[test]
    fn echo_replies_are_matched_by_source_and_ident() {
        let dest = Ipv4Addr::new(10, 244, 1, 5);
        let me = Ipv4Addr::new(10, 244, 1, 6);
        let mut reply = echo_request(0x4242, 3);
        reply[0] = 0;
        let packet = ipv4(dest, me, &reply);
        assert_eq!(
            parse_icmp(&packet, 0x4242, dest),
            Some(IcmpEvent::EchoReply { seq: 3 })
        );
        assert_eq!(parse_icmp(&packet, 0x4243, dest), None, "other ident");
        assert_eq!(parse_icmp(&packet, 0x4242, me), None, "other source");
        // Our own request looping back is not a reply.
        let request = ipv4(me, dest, &echo_request(0x4242, 3));
        assert_eq!(parse_icmp(&request, 0x4242, dest), None);
        assert_eq!(parse_icmp(&packet[..10], 0x4242, dest), None, "truncated");
    }

    #[test]
    fn unreachable_errors_quoting_our_request_are_reported() {
        let dest = Ipv4Addr::new(10, 244, 9, 9);
        let me = Ipv4Addr::new(10, 244, 1, 6);
        let router = Ipv4Addr::new(192, 0, 2, 11);
        let quoted = ipv4(me, dest, &echo_request(7, 0)[..8]);
        let mut error = vec![3, 1, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&quoted);
        let packet = ipv4(router, me, &error);
        assert_eq!(
            parse_icmp(&packet, 7, dest),
            Some(IcmpEvent::Error {
                from: router,
                kind: 3,
                code: 1
            })
        );
        assert_eq!(parse_icmp(&packet, 8, dest), None);
        assert_eq!(
            describe_icmp_error(router, 3, 1),
            "ICMP host unreachable (type 3 code 1) from 192.0.2.11"
        );
    }

    #[test]
    fn protocols_parse_and_print() {
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp] {
            assert_eq!(p.to_string().parse::<Proto>().unwrap(), p);
        }
        assert!("SCTP".parse::<Proto>().is_err());
        assert!("dccp".parse::<Proto>().is_err());
        assert_eq!(Proto::Sctp.k8s_name(), "SCTP");
        assert_eq!(serde_json::to_string(&Proto::Icmp).unwrap(), r#""icmp""#);
    }

    #[test]
    fn loopback_probes_work_in_the_callers_netns() {
        // Loopback only: bind a server on 127.0.0.1, probe it, and probe a closed port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            std::io::Write::write_all(&mut conn, b"hello\n").unwrap();
        });
        let spec = ProbeSpec {
            source: None,
            dest: Ipv4Addr::LOCALHOST,
            proto: Proto::Tcp,
            port,
            timeout: Duration::from_secs(2),
        };
        let outcome = probe_here(&spec).unwrap();
        assert!(outcome.connected, "{outcome:?}");
        assert_eq!(outcome.reply.as_deref(), Some("hello"));
        server.join().unwrap();
        // A closed port is not probed here: parallel tests may grab the freed port at any time.
        // The netns tests cover "refused" where the address space is the test's own.

        let udp = probe_here(&ProbeSpec {
            proto: Proto::Udp,
            timeout: Duration::from_millis(300),
            ..spec
        })
        .unwrap();
        assert!(!udp.connected);
        assert!(udp.error.as_deref().unwrap().contains("refused"), "{udp:?}");
    }
}
