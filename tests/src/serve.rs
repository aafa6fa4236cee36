// SPDX-License-Identifier: Apache-2.0
//! The server every lab pod (and the outside host) runs: on each TCP port it accepts, writes one
//! line naming itself and closes; on each UDP port it echoes datagrams back.
//!
//! Sockets are bound by [`ServerSockets::bind`] in the calling thread's netns and keep that netns
//! whatever thread serves them. The CLI runs this in a detached `weir-lab serve` process (so it
//! outlives the CLI); tests can run it in-process with [`Server::start_in`].

use std::{
    io::{self, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::netns::in_netns;

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
}

/// Bound, listening sockets.
pub struct ServerSockets {
    name: String,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
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
        Ok(Self {
            name: config.name.clone(),
            tcp,
            udp,
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
                .collect();
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(false)).collect();
            drop(fds);
            let (tcp_ready, udp_ready) = ready.split_at(self.tcp.len());
            for (listener, _) in self.tcp.iter().zip(tcp_ready).filter(|(_, r)| **r) {
                accept_all(listener, line.as_bytes());
            }
            for (socket, _) in self.udp.iter().zip(udp_ready).filter(|(_, r)| **r) {
                echo_all(socket, &mut buf);
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
