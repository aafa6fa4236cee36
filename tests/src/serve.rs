// SPDX-License-Identifier: Apache-2.0
//! The server every lab pod (and the outside host) runs: on each TCP port it accepts, writes one
//! line naming itself and closes; on each UDP port it echoes datagrams back; to an SCTP INIT for
//! one of its SCTP ports it answers with an INIT-ACK, and to an INIT for any other port with an
//! ABORT, as an SCTP stack with no listener there would (see [`crate::sctp`]; one raw socket
//! serves every SCTP port).
//!
//! Sockets are bound by [`ServerSockets::bind`] in the calling thread's netns and keep that netns
//! whatever thread serves them. The CLI runs this in a detached `weir-lab serve` process (so it
//! outlives the CLI); tests can run it in-process with [`Server::start_in`].

use std::{
    io::{self, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{bind, recv, sendto, MsgFlags, SockaddrIn},
};

use crate::{netns::in_netns, sctp};

/// What to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// Written back (plus a newline) on every TCP connection: `default/web`, `ext`.
    pub name: String,
    /// Address to bind; 0.0.0.0 for a pod. Binding the exact address matters on a host with
    /// several (ext): UDP answers then leave from the address they were sent to.
    pub bind: Ipv4Addr,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// Answered with INIT-ACK; an INIT to any other port gets an ABORT. Empty: no SCTP at all.
    pub sctp_ports: Vec<u16>,
}

/// Bound, listening sockets.
pub struct ServerSockets {
    name: String,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    sctp: Option<SctpResponder>,
}

/// Answers SCTP INITs on one raw socket.
struct SctpResponder {
    socket: OwnedFd,
    ports: Vec<u16>,
    cookie: Vec<u8>,
}

impl ServerSockets {
    /// Bind every port in the calling thread's netns.
    pub fn bind(config: &ServeConfig) -> Result<Self> {
        let tcp = config
            .tcp_ports
            .iter()
            .map(|&port| {
                let listener = TcpListener::bind(SocketAddrV4::new(config.bind, port))
                    .with_context(|| format!("binding TCP {}:{port}", config.bind))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect::<Result<Vec<_>>>()?;
        let udp = config
            .udp_ports
            .iter()
            .map(|&port| {
                let socket = UdpSocket::bind(SocketAddrV4::new(config.bind, port))
                    .with_context(|| format!("binding UDP {}:{port}", config.bind))?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .collect::<Result<Vec<_>>>()?;
        let sctp = if config.sctp_ports.is_empty() {
            None
        } else {
            let socket = sctp::raw_socket().context("creating a raw SCTP socket")?;
            // Bound to the exact address (if any), answers leave from the address asked.
            if !config.bind.is_unspecified() {
                bind(
                    socket.as_raw_fd(),
                    &SockaddrIn::from(SocketAddrV4::new(config.bind, 0)),
                )
                .with_context(|| format!("binding raw SCTP to {}", config.bind))?;
            }
            Some(SctpResponder {
                socket,
                ports: config.sctp_ports.clone(),
                cookie: format!("weir-lab {}", config.name).into_bytes(),
            })
        };
        Ok(Self {
            name: config.name.clone(),
            tcp,
            udp,
            sctp,
        })
    }

    /// Serve until `stop` is set (checked every 200 ms).
    pub fn serve(&self, stop: &AtomicBool) -> Result<()> {
        let line = format!("{}\n", self.name);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let mut fds: Vec<PollFd<'_>> = self
                .tcp
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .chain(
                    self.udp
                        .iter()
                        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
                )
                .chain(
                    self.sctp
                        .iter()
                        .map(|s| PollFd::new(s.socket.as_fd(), PollFlags::POLLIN)),
                )
                .collect();
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(false)).collect();
            drop(fds);
            let (tcp_ready, rest) = ready.split_at(self.tcp.len());
            let (udp_ready, sctp_ready) = rest.split_at(self.udp.len());
            for (listener, _) in self.tcp.iter().zip(tcp_ready).filter(|(_, r)| **r) {
                accept_all(listener, line.as_bytes());
            }
            for (socket, _) in self.udp.iter().zip(udp_ready).filter(|(_, r)| **r) {
                echo_all(socket, &mut buf);
            }
            for (responder, _) in self.sctp.iter().zip(sctp_ready).filter(|(_, r)| **r) {
                responder.answer_all(&mut buf);
            }
        }
        Ok(())
    }
}

fn accept_all(listener: &TcpListener, line: &[u8]) {
    loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = conn.write_all(line);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) => {
                eprintln!("weir-lab serve: accept: {err}");
                return;
            }
        }
    }
}

fn echo_all(socket: &UdpSocket, buf: &mut [u8]) {
    loop {
        match socket.recv_from(buf) {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            // An ICMP error for an earlier answer surfaces here; it is not ours to handle.
            Err(_) => return,
        }
    }
}

impl SctpResponder {
    /// Answer every INIT queued on the socket. Anything else (INIT-ACKs for probes running in
    /// this same netns, COOKIE-ECHOs, stray chunks) is left alone.
    fn answer_all(&self, buf: &mut [u8]) {
        loop {
            let n = match recv(self.socket.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let Some(got) = sctp::parse(&buf[..n]) else {
                continue;
            };
            let Some(init) = got.init else {
                continue;
            };
            if got.chunk != sctp::CHUNK_INIT || got.vtag != 0 || !got.checksum_ok {
                continue;
            }
            let answer = if self.ports.contains(&got.dst_port) {
                let ours = sctp::InitFields {
                    initiate_tag: sctp::random_u32(),
                    a_rwnd: 65536,
                    outbound_streams: 10,
                    inbound_streams: 10,
                    initial_tsn: sctp::random_u32(),
                };
                sctp::init_ack_packet(got.dst_port, got.src_port, &init, &ours, &self.cookie)
            } else {
                sctp::abort_packet(got.dst_port, got.src_port, init.initiate_tag)
            };
            let to = SockaddrIn::from(SocketAddrV4::new(got.src, 0));
            let _ = sendto(self.socket.as_raw_fd(), &answer, &to, MsgFlags::empty());
        }
    }
}

/// An in-process server on a background thread; stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Server {
    /// Bind in netns `netns` and serve from a background thread.
    pub fn start_in(netns: &str, config: &ServeConfig) -> Result<Self> {
        let sockets = in_netns(netns, || ServerSockets::bind(config))??;
        Ok(Self::start(sockets))
    }

    /// Serve already-bound sockets from a background thread.
    pub fn start(sockets: ServerSockets) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || sockets.serve(&flag));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop serving and report any error the server hit.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
