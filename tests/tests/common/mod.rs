// SPDX-License-Identifier: Apache-2.0
//! Shared by the privileged integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod netpol;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Return early (loudly) from a test that needs root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !weir_tests::is_root() {
            eprintln!("SKIPPED: {} needs root", module_path!());
            return;
        }
    };
}

/// What the machine's own network namespace looks like; must be identical before and after.
pub fn root_netns_snapshot() -> String {
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    format!(
        "{}\n{}\n{}\n{}\nip_forward={forwarding}",
        run(&["-o", "link", "show"]),
        run(&["-o", "addr", "show"]),
        run(&["route", "show", "table", "all"]),
        run(&["rule", "show"]),
    )
}

/// A directory holding `weir-agent` and `weir` (both the fake) and `weir-lab`, for `WEIR_BIN_DIR`.
pub fn fake_bin_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-lab-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = Path::new(env!("CARGO_BIN_EXE_weir-lab-fake"));
    let lab = Path::new(env!("CARGO_BIN_EXE_weir-lab"));
    for (name, target) in [("weir-agent", fake), ("weir", fake), ("weir-lab", lab)] {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    dir
}

/// A GET of `path` from `address` inside `netns`: the whole answer, status line first.
pub fn http_get(netns: &str, address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    weir_tests::in_netns(netns, || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .unwrap()
}

/// Lab namespaces (and bpffs dirs) still there for lab id `id`.
pub fn leftovers(id: &str) -> Vec<String> {
    let prefix = weir_tests::names::lab_prefix(id);
    let mut left = weir_tests::netns::list_netns(&prefix);
    left.extend(
        std::fs::read_dir(weir_tests::names::BPFFS_ROOT)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix)),
    );
    left
}

/// Every datapath counter of node 1, as `weir-agent counters` prints them (one JSON object per
/// row, with the pod named).
pub fn counters(lab: &weir_tests::Lab) -> Vec<serde_json::Value> {
    node_counters(lab, 1)
}

/// Every datapath counter of node `index`.
pub fn node_counters(lab: &weir_tests::Lab, index: u32) -> Vec<serde_json::Value> {
    let node = lab.node(index).unwrap();
    let out = Command::new(weir_tests::bin_path("weir-agent"))
        .arg("counters")
        .arg("--bpffs-dir")
        .arg(&node.bpffs_dir)
        .arg("--run-dir")
        .arg(&node.run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Packets counted under `reason` on node 1, over every endpoint and direction.
pub fn packets(lab: &weir_tests::Lab, reason: &str) -> u64 {
    node_packets(lab, 1, reason)
}

/// Packets counted under `reason` on node `index`, over every endpoint and direction.
pub fn node_packets(lab: &weir_tests::Lab, index: u32, reason: &str) -> u64 {
    node_counters(lab, index)
        .iter()
        .filter(|c| c["reason"] == reason)
        .map(|c| c["packets"].as_u64().unwrap())
        .sum()
}

/// An IPv4 header (checksummed) for `payload_len` bytes of `proto` from `src` to `dst`.
pub fn ipv4_header(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    proto: u8,
    payload_len: usize,
) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let checksum = weir_tests::probe::internet_checksum(&h);
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    h
}

/// A whole IPv4 ICMP error from `src` to `dst`: type `kind`, code `code`, the header's last four
/// bytes `rest` (for "fragmentation needed": two unused, then the MTU), quoting `quoted`.
pub fn icmp_error(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quoted);
    let checksum = weir_tests::probe::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut pkt = ipv4_header(src, dst, libc::IPPROTO_ICMP as u8, icmp.len()).to_vec();
    pkt.extend_from_slice(&icmp);
    pkt
}

/// A whole IPv4 UDP datagram (UDP checksum 0: none, which IPv4 allows).
pub fn ipv4_udp_packet(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut pkt = ipv4_header(src, dst, libc::IPPROTO_UDP as u8, 8 + payload.len()).to_vec();
    pkt.extend_from_slice(&sport.to_be_bytes());
    pkt.extend_from_slice(&dport.to_be_bytes());
    pkt.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    pkt
}

/// One UDP datagram with a forged source, built by hand and sent on a raw socket from inside a pod.
pub fn send_spoofed_udp(netns: &str, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, port: u16) {
    send_raw_ipv4(netns, &ipv4_udp_packet(src, dst, 4444, port, b"spoof"));
}

/// Send a whole IPv4 packet, header included, on a raw socket from inside `netns`.
pub fn send_raw_ipv4(netns: &str, pkt: &[u8]) {
    let sent = RawIpv4::open_in(netns).send(pkt);
    assert_eq!(sent.expect("sendto"), pkt.len());
}

/// A raw IPv4 socket (the header is the caller's) made inside a netns: it sends from there
/// wherever it is used.
pub struct RawIpv4(std::os::fd::OwnedFd);

impl RawIpv4 {
    pub fn open_in(netns: &str) -> Self {
        let fd = weir_tests::in_netns(netns, || {
            // SAFETY: socket(2) takes no pointers.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) }
        })
        .unwrap();
        assert!(
            fd >= 0,
            "raw socket in {netns}: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor socket(2) just returned, owned by nobody else.
        Self(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    /// Send a whole IPv4 packet to the destination address in its header.
    pub fn send(&self, pkt: &[u8]) -> Result<usize, std::io::Error> {
        use std::os::fd::AsRawFd;
        let dst = std::net::Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and address are ours and outlive the call; the fd is open.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }
}

/// From pod `(sender_netns, sender_ip)` to `receiver_ip:9999` in `receiver_netns`: three UDP
/// datagrams with a forged source must be dropped and counted (`drop_spoofed_ip`), and one with
/// the sender's own address must arrive from it.
pub fn assert_spoofing_dropped(
    lab: &weir_tests::Lab,
    sender_netns: &str,
    sender_ip: std::net::Ipv4Addr,
    receiver_netns: &str,
    receiver_ip: std::net::Ipv4Addr,
) {
    let socket = weir_tests::in_netns(receiver_netns, || {
        let s = std::net::UdpSocket::bind((receiver_ip, 9999)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        s
    })
    .unwrap();
    let before = packets(lab, "drop_spoofed_ip");
    for _ in 0..3 {
        send_spoofed_udp(
            sender_netns,
            std::net::Ipv4Addr::new(10, 244, 1, 250),
            receiver_ip,
            9999,
        );
    }
    let mut buf = [0u8; 64];
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "a spoofed datagram was delivered"
    );
    assert!(packets(lab, "drop_spoofed_ip") >= before + 3);
    // The same pod sending as itself is delivered.
    send_spoofed_udp(sender_netns, sender_ip, receiver_ip, 9999);
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("an honest datagram is delivered");
    assert_eq!(&buf[..n], b"spoof");
    assert_eq!(from.ip(), std::net::IpAddr::V4(sender_ip));
}

/// A TCP stream from `client_netns` to `server_ip:port` in `server_netns` that keeps sending
/// until [`Stream::finish`], which says whether every byte sent arrived with no reset: the way the
/// tests check that an agent restart leaves established flows alone.
pub struct Stream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<std::io::Result<u64>>,
    receiver: std::thread::JoinHandle<std::io::Result<u64>>,
}

impl Stream {
    pub fn start(
        client_netns: &str,
        server_netns: &str,
        server_ip: std::net::Ipv4Addr,
        port: u16,
    ) -> Self {
        let server = std::net::SocketAddrV4::new(server_ip, port);
        Self::start_via(client_netns, server, server_netns, server)
    }

    /// A stream whose client connects to `connect_to`, which leads (through a DNAT) to the
    /// server listening on `listen_on` in `server_netns`.
    pub fn start_via(
        client_netns: &str,
        connect_to: std::net::SocketAddrV4,
        server_netns: &str,
        listen_on: std::net::SocketAddrV4,
    ) -> Self {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;

        let listener =
            weir_tests::in_netns(server_netns, || TcpListener::bind(listen_on).unwrap()).unwrap();
        let receiver = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept()?;
            let mut total = 0u64;
            let mut buf = [0u8; 65536];
            loop {
                match conn.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        });
        let stream =
            weir_tests::in_netns(client_netns, || TcpStream::connect(connect_to).unwrap()).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let chunk = [7u8; 16384];
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&chunk)?;
                    sent += chunk.len() as u64;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                stream.shutdown(std::net::Shutdown::Write)?;
                Ok(sent)
            })
        };
        // Let it get going before the caller disturbs anything.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self {
            stop,
            sender,
            receiver,
        }
    }

    /// Stop sending and assert that every byte arrived and neither end saw a reset.
    pub fn finish(self) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self
            .sender
            .join()
            .unwrap()
            .expect("the stream was reset during the restart");
        let got = self
            .receiver
            .join()
            .unwrap()
            .expect("the server saw a reset");
        assert_eq!(sent, got, "bytes sent and received");
    }
}

/// What `program args` prints on stdout when run in network namespace `netns`.
pub fn output_in(netns: &str, program: &str, args: &[&str]) -> String {
    let out = weir_tests::in_netns(netns, || {
        std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap()
    })
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host-side veths the plugin made (`weir` + 11 hex) still in node 1.
pub fn pod_veths(lab: &weir_tests::Lab) -> Vec<String> {
    let links = weir_tests::ip_in(&lab.node_netns(), &["-o", "link", "show"]).unwrap();
    links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| weir_agent_api::is_host_veth_name(n))
        .collect()
}

/// Restart node `index`'s agent as a DaemonSet would, after a crash (`kill`: SIGKILL, no chance
/// to clean anything) or a graceful stop (SIGTERM), with `extra_args` added to its flags. `agent`
/// is the running one (the lab's state records only the first); returns the new one.
pub fn restart_agent(
    lab: &weir_tests::Lab,
    index: u32,
    agent: weir_tests::process::ProcessRef,
    kill: bool,
    extra_args: &[&str],
) -> weir_tests::process::ProcessRef {
    use std::time::Duration;
    let state = lab.state().unwrap();
    let node = state.node(index).unwrap();
    if kill {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        weir_tests::process::wait_until(Duration::from_secs(5), || !agent.is_alive());
    } else {
        assert!(agent.terminate(Duration::from_secs(5)));
    }
    let mut config = weir_tests::agent::AgentConfig::for_node(&state, node);
    config
        .extra_args
        .extend(extra_args.iter().map(|a| (*a).to_owned()));
    let process = weir_tests::agent::start_agent(&node.netns, &config, &node.stdout_log).unwrap();
    weir_tests::agent::wait_agent_ready(
        &process,
        &config,
        &node.stdout_log,
        Duration::from_secs(30),
    )
    .unwrap();
    process
}

/// Whether a probe from pod `from` to pod `to` ("namespace/name") connects within 600 ms: long
/// enough for a reply on this machine, short for the denied probes that must time out.
pub fn reach(
    lab: &weir_tests::Lab,
    from: &str,
    to: &str,
    proto: weir_tests::Proto,
    port: u16,
) -> bool {
    let (ns, name) = to.split_once('/').expect("namespace/name");
    lab.probe_with(
        from,
        &weir_tests::lab::ProbeTarget::pod(ns, name),
        &weir_tests::lab::ProbeOptions::new(proto, port)
            .timeout(std::time::Duration::from_millis(600)),
    )
    .unwrap()
    .connected
}
