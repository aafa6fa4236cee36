// SPDX-License-Identifier: Apache-2.0
//! What every lab pod serves, and the Service (ClusterIP) in front of it.
//!
//! Each pod serves TCP, UDP and SCTP on ports 80 and 81 (plus any `--serve proto:port`), with
//! container ports named `serve-<port>-<proto>` so policies can use named ports. Each pod also gets
//! a ClusterIP from 10.96.0.0/12, implemented as kube-proxy's iptables mode does, in the node
//! netns:
//!
//! ```text
//! *nat
//! -A PREROUTING -j WEIR-LAB-SERVICES          (and OUTPUT, for probes from the node itself)
//! -A WEIR-LAB-SERVICES -d VIP/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination PODIP:80
//! -A POSTROUTING -j WEIR-LAB-HAIRPIN
//! -A WEIR-LAB-HAIRPIN -s PODIP/32 -d PODIP/32 -j MASQUERADE   (a pod reaching itself via its VIP)
//! ```
//!
//! The hairpin rule is kube-proxy's `KUBE-MARK-MASQ` for a pod that is its own endpoint: without
//! it the pod would get its own packet back from its own address and drop it as a martian.

use std::{fmt, net::Ipv4Addr, process::Command, str::FromStr, time::Duration};

use weir_agent_api::{PortMapping, PortProtocol};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    names::{ParseError, SERVER_PORTS},
    netns::command_in_netns,
    probe::Proto,
    process::run_with_timeout,
};

/// The Service CIDR the agents are told about (`--service-cidr`), as in a kubeadm cluster.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// First address of [`SERVICE_CIDR`].
const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
/// Addresses in [`SERVICE_CIDR`].
const SERVICE_SIZE: u32 = 1 << 20;
/// nat chain holding the DNAT rules; PREROUTING and OUTPUT jump to it.
pub const SERVICES_CHAIN: &str = "WEIR-LAB-SERVICES";
/// nat chain holding the hairpin masquerade rules; POSTROUTING jumps to it.
pub const HAIRPIN_CHAIN: &str = "WEIR-LAB-HAIRPIN";
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(30);

/// One port a pod serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServePort {
    pub proto: Proto,
    pub port: u16,
}

impl ServePort {
    pub fn new(proto: Proto, port: u16) -> Self {
        Self { proto, port }
    }

    /// The container (and Service) port name: `serve-80-tcp`.
    pub fn name(&self) -> String {
        format!("serve-{}-{}", self.port, self.proto)
    }
}

impl fmt::Display for ServePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto, self.port)
    }
}

impl FromStr for ServePort {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::Serve(s.to_owned());
        let (proto, port) = s.trim().split_once(':').ok_or_else(bad)?;
        let proto: Proto = proto.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if !proto.has_ports() || port == 0 {
            return Err(bad());
        }
        Ok(Self { proto, port })
    }
}

/// Parse `tcp:3306,udp:53` (empty → none).
pub fn parse_serve_list(s: &str) -> Result<Vec<ServePort>, ParseError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// Parse a `hostPort` as `weir-lab pod add --host-port` takes it:
/// `HOSTPORT:CONTAINERPORT[/tcp|udp|sctp][@HOSTIP]`.
pub fn parse_host_port(s: &str) -> Result<PortMapping, ParseError> {
    let bad = || ParseError::HostPort(s.to_owned());
    let (rest, host_ip) = match s.trim().split_once('@') {
        Some((rest, ip)) => (rest, Some(ip.parse::<Ipv4Addr>().map_err(|_| bad())?)),
        None => (s.trim(), None),
    };
    let (ports, protocol) = match rest.split_once('/') {
        Some((ports, proto)) => (
            ports,
            match proto {
                "tcp" => PortProtocol::Tcp,
                "udp" => PortProtocol::Udp,
                "sctp" => PortProtocol::Sctp,
                _ => return Err(bad()),
            },
        ),
        None => (rest, PortProtocol::Tcp),
    };
    let (host, container) = ports.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
    Ok(PortMapping {
        host_port: port(host)?,
        container_port: port(container)?,
        protocol,
        host_ip,
    })
}

/// The `runtimeConfig.portMappings` the kubelet would send for `ports`.
pub fn port_mappings_json(ports: &[PortMapping]) -> serde_json::Value {
    ports
        .iter()
        .map(|m| {
            serde_json::json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
                "hostIP": m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// What every pod serves: TCP, UDP and SCTP on ports 80 and 81.
pub fn default_ports() -> Vec<ServePort> {
    SERVER_PORTS
        .iter()
        .flat_map(|&port| Proto::WITH_PORTS.map(|proto| ServePort::new(proto, port)))
        .collect()
}

/// The default ports plus `extra`, sorted by port then protocol, without duplicates.
pub fn all_ports(extra: &[ServePort]) -> Vec<ServePort> {
    let mut ports = default_ports();
    ports.extend_from_slice(extra);
    ports.sort_by_key(|p| (p.port, p.proto));
    ports.dedup();
    ports
}

/// The `index`th address of the Service CIDR (10.96.0.0 + index), for 1 ≤ index < 2^20 - 1.
pub fn cluster_ip(index: u32) -> Option<Ipv4Addr> {
    (1..SERVICE_SIZE - 1)
        .contains(&index)
        .then(|| Ipv4Addr::from(u32::from(SERVICE_BASE) + index))
}

/// Is `ip` in the Service CIDR?
pub fn in_service_cidr(ip: Ipv4Addr) -> bool {
    u32::from(ip) & !(SERVICE_SIZE - 1) == u32::from(SERVICE_BASE)
}

/// The rule specifications (without `-A CHAIN`) of one pod's Service, in `SERVICES_CHAIN` order,
/// then its hairpin rule for `HAIRPIN_CHAIN`.
pub fn service_rules(
    vip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    ports: &[ServePort],
    comment: &str,
) -> (Vec<String>, String) {
    // Comments are quoted for iptables-restore; keep them to characters that need no escaping.
    let comment: String = comment
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/-._:".contains(*c))
        .collect();
    let dnat = ports
        .iter()
        .map(|p| {
            format!(
                "-d {vip}/32 -p {proto} -m {proto} --dport {port} -m comment --comment \"{comment} {name}\" \
                 -j DNAT --to-destination {pod_ip}:{port}",
                proto = p.proto,
                port = p.port,
                name = p.name(),
            )
        })
        .collect();
    let hairpin = format!(
        "-s {pod_ip}/32 -d {pod_ip}/32 -m comment --comment \"{comment} hairpin\" -j MASQUERADE"
    );
    (dnat, hairpin)
}

/// An `iptables-restore --noflush` script that appends (`'A'`) or deletes (`'D'`) one pod's rules.
pub fn restore_script(op: char, dnat: &[String], hairpin: &str) -> String {
    let mut script = String::from("*nat\n");
    for rule in dnat {
        script.push_str(&format!("-{op} {SERVICES_CHAIN} {rule}\n"));
    }
    script.push_str(&format!("-{op} {HAIRPIN_CHAIN} {hairpin}\n"));
    script.push_str("COMMIT\n");
    script
}

fn run_in(netns: &str, program: &str, args: &[&str], stdin: Option<String>) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    command_in_netns(&mut command, netns)?;
    let out = run_with_timeout(
        &mut command,
        stdin.map(String::into_bytes),
        IPTABLES_TIMEOUT,
    )
    .with_context(|| format!("running {program} (is iptables installed?)"))?;
    if out.timed_out {
        bail!("{program} {} timed out in {netns}", args.join(" "));
    }
    if out.code != 0 {
        bail!(
            "{program} {} failed in {netns} (exit {}): {}",
            args.join(" "),
            out.code,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

fn iptables(netns: &str, args: &[&str]) -> Result<String> {
    run_in(netns, "iptables", &[&["-w"], args].concat(), None)
}

/// Create the lab's nat chains in `netns` and the jumps to them, unless they are there already.
pub fn ensure_chains(netns: &str) -> Result<()> {
    let existing = iptables(netns, &["-t", "nat", "-S"])?;
    for chain in [SERVICES_CHAIN, HAIRPIN_CHAIN] {
        if !existing.lines().any(|l| l == format!("-N {chain}")) {
            iptables(netns, &["-t", "nat", "-N", chain])?;
        }
    }
    for (hook, chain) in [
        ("PREROUTING", SERVICES_CHAIN),
        ("OUTPUT", SERVICES_CHAIN),
        ("POSTROUTING", HAIRPIN_CHAIN),
    ] {
        if !existing
            .lines()
            .any(|l| l == format!("-A {hook} -j {chain}"))
        {
            iptables(netns, &["-t", "nat", "-I", hook, "1", "-j", chain])?;
        }
    }
    Ok(())
}

/// Apply a [`restore_script`] in `netns`.
pub fn apply_rules(netns: &str, script: &str) -> Result<()> {
    run_in(
        netns,
        "iptables-restore",
        &["-w", "--noflush"],
        Some(script.to_owned()),
    )
    .map(drop)
}

/// Remove the lab's chains and the jumps to them from `netns` (best effort: every step is tried;
/// the first failure is reported).
pub fn remove_chains(netns: &str) -> Result<()> {
    let mut first_error = None;
    let mut attempt = |args: &[&str]| {
        if let Err(err) = iptables(netns, args) {
            first_error.get_or_insert(err);
        }
    };
    let existing = iptables(netns, &["-t", "nat", "-S"])?;
    for (hook, chain) in [
        ("PREROUTING", SERVICES_CHAIN),
        ("OUTPUT", SERVICES_CHAIN),
        ("POSTROUTING", HAIRPIN_CHAIN),
    ] {
        let jump = format!("-A {hook} -j {chain}");
        for _ in existing.lines().filter(|l| *l == jump) {
            attempt(&["-t", "nat", "-D", hook, "-j", chain]);
        }
    }
    for chain in [SERVICES_CHAIN, HAIRPIN_CHAIN] {
        if existing.lines().any(|l| l == format!("-N {chain}")) {
            attempt(&["-t", "nat", "-F", chain]);
            attempt(&["-t", "nat", "-X", chain]);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_ports_parse_print_and_name_themselves() {
        let p: ServePort = "tcp:3306".parse().unwrap();
        assert_eq!(p, ServePort::new(Proto::Tcp, 3306));
        assert_eq!(p.to_string(), "tcp:3306");
        assert_eq!(p.name(), "serve-3306-tcp");
        assert_eq!(ServePort::new(Proto::Sctp, 80).name(), "serve-80-sctp");
        for bad in [
            "",
            "tcp",
            "tcp:0",
            "icmp:1",
            "tcp:65536",
            "80:tcp",
            "TCP:80",
        ] {
            assert!(bad.parse::<ServePort>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_serve_list("tcp:3306, udp:53").unwrap(),
            vec![
                ServePort::new(Proto::Tcp, 3306),
                ServePort::new(Proto::Udp, 53)
            ]
        );
        assert!(parse_serve_list("").unwrap().is_empty());
        assert!(parse_serve_list("tcp:1,nope").is_err());
    }

    #[test]
    fn every_pod_serves_three_protocols_on_80_and_81() {
        let names: Vec<String> = default_ports().iter().map(ServePort::name).collect();
        assert_eq!(
            names,
            [
                "serve-80-tcp",
                "serve-80-udp",
                "serve-80-sctp",
                "serve-81-tcp",
                "serve-81-udp",
                "serve-81-sctp"
            ]
        );
        let all = all_ports(&[
            ServePort::new(Proto::Udp, 53),
            ServePort::new(Proto::Tcp, 80),
        ]);
        assert_eq!(all.len(), 7, "{all:?}");
        assert_eq!(all[0], ServePort::new(Proto::Udp, 53));
    }

    #[test]
    fn cluster_ips_come_from_the_service_cidr() {
        assert_eq!(cluster_ip(1), Some(Ipv4Addr::new(10, 96, 0, 1)));
        assert_eq!(cluster_ip(258), Some(Ipv4Addr::new(10, 96, 1, 2)));
        assert_eq!(
            cluster_ip(SERVICE_SIZE - 2),
            Some(Ipv4Addr::new(10, 111, 255, 254))
        );
        assert_eq!(cluster_ip(0), None);
        assert_eq!(cluster_ip(SERVICE_SIZE - 1), None, "broadcast");
        assert!(in_service_cidr(Ipv4Addr::new(10, 100, 3, 4)));
        assert!(!in_service_cidr(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(!in_service_cidr(Ipv4Addr::new(10, 244, 1, 2)));
    }

    #[test]
    fn rules_dnat_each_port_to_the_pod_like_kube_proxy() {
        let vip = Ipv4Addr::new(10, 96, 0, 7);
        let pod = Ipv4Addr::new(10, 244, 1, 3);
        let (dnat, hairpin) = service_rules(
            vip,
            pod,
            &[ServePort::new(Proto::Sctp, 81)],
            "x/a\" -j ACCEPT",
        );
        assert_eq!(
            dnat,
            ["-d 10.96.0.7/32 -p sctp -m sctp --dport 81 -m comment --comment \"x/a-jACCEPT serve-81-sctp\" \
              -j DNAT --to-destination 10.244.1.3:81"]
        );
        assert_eq!(
            hairpin,
            "-s 10.244.1.3/32 -d 10.244.1.3/32 -m comment --comment \"x/a-jACCEPT hairpin\" -j MASQUERADE"
        );
        let script = restore_script('D', &dnat, &hairpin);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert!(lines[1].starts_with("-D WEIR-LAB-SERVICES -d 10.96.0.7/32 "));
        assert!(lines[2].starts_with("-D WEIR-LAB-HAIRPIN -s 10.244.1.3/32 "));
        assert_eq!(lines[3], "COMMIT");
    }
}
