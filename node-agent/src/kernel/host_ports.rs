//! The node's `hostPort`s as iptables NAT rules: traffic for one of the node's addresses on a
//! published port is DNATed to its pod by the host stack's conntrack, which also undoes it on the
//! replies. The DNATed packet is then routed to `weir0`, where the datapath judges the pod's
//! ingress on the real client address and the pod's own port, exactly as for Service traffic;
//! the pod's replies go back through the host stack (its flow is marked `CT_F_VIA_HOST`).
//!
//! - `WEIR-HOSTPORTS` (nat, from PREROUTING and OUTPUT for local destinations): one DNAT rule a
//!   mapping. OUTPUT covers the node's own connections; loopback destinations are left alone
//!   (DNAT from 127.0.0.1 to a pod would need `route_localnet`), as the reference portmap does.
//! - `WEIR-HOSTPORTS-MASQ` (nat, POSTROUTING): a pod reaching its own hostPort (hairpin) is
//!   masqueraded, or its reply would never pass the host stack to be un-DNATed.
//!
//! Each change rewrites both chains in one `iptables-restore` transaction, so a restarted agent
//! or a changed mapping never leaves a moment without rules.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use weir_agent_api::{PortMapping, PortProtocol};

use super::iptables::{ensure_first, iptables, restore, IptablesError};

pub const DNAT_CHAIN: &str = "WEIR-HOSTPORTS";
pub const MASQ_CHAIN: &str = "WEIR-HOSTPORTS-MASQ";

/// One published port and the pod it leads to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub mapping: PortMapping,
    pub pod_ip: Ipv4Addr,
    /// `namespace/name` (or the container id), for the rule's comment.
    pub owner: String,
}

/// The nat table's host-port chains, in iptables-restore format, for `--noflush` application.
pub fn rules(ports: &[HostPort]) -> String {
    let mut out = format!(
        "*nat\n:{DNAT_CHAIN} - [0:0]\n:{MASQ_CHAIN} - [0:0]\n-F {DNAT_CHAIN}\n-F {MASQ_CHAIN}\n"
    );
    let mut hairpins: Vec<Ipv4Addr> = Vec::new();
    for port in ports {
        let m = &port.mapping;
        let proto = m.protocol.as_str();
        let dest = m
            .host_ip
            .map(|ip| format!(" -d {ip}/32"))
            .unwrap_or_default();
        // Comments are quoted; an owner is a Kubernetes name or a container id, but keep the
        // quoting safe whatever it is.
        let owner: String = port
            .owner
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .take(200)
            .collect();
        out.push_str(&format!(
            "-A {DNAT_CHAIN}{dest} -p {proto} -m {proto} --dport {} -m comment --comment \"{owner} hostPort\" -j DNAT --to-destination {}:{}\n",
            m.host_port, port.pod_ip, m.container_port
        ));
        if !hairpins.contains(&port.pod_ip) {
            hairpins.push(port.pod_ip);
        }
    }
    for ip in hairpins {
        out.push_str(&format!(
            "-A {MASQ_CHAIN} -s {ip}/32 -d {ip}/32 -m conntrack --ctstate DNAT -j MASQUERADE\n"
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps into the chains: (chain, rule).
fn jumps() -> [(&'static str, Vec<&'static str>); 3] {
    [
        (
            "PREROUTING",
            vec!["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN],
        ),
        (
            "OUTPUT",
            vec![
                "!",
                "-d",
                "127.0.0.0/8",
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                DNAT_CHAIN,
            ],
        ),
        ("POSTROUTING", vec!["-j", MASQ_CHAIN]),
    ]
}

/// Program exactly `ports`: the chains rewritten in one transaction; with `jumps`, the jumps to
/// them inserted too if missing (first, ahead of kube-proxy's: a hostPort is more specific than
/// a NodePort on the same number). Checking the jumps costs three `iptables` runs, so the agent
/// asks for it on its first apply and when repairing, not on every pod's ADD.
pub fn apply(ports: &[HostPort], jumps_too: bool) -> Result<(), IptablesError> {
    restore(&rules(ports)).map_err(|e| IptablesError(format!("host ports: {}", e.0)))?;
    if jumps_too {
        for (chain, rule) in jumps() {
            ensure_first("nat", chain, &rule)?;
        }
    }
    Ok(())
}

/// Are exactly the rules of `ports`, and the jumps to them, in place? For repairing what someone
/// else's `iptables -F` (or a firewall reload) took away.
pub fn in_place(ports: &[HostPort]) -> Result<bool, IptablesError> {
    let want: Vec<String> = rules(ports)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect();
    let mut have = listed(DNAT_CHAIN)?;
    have.extend(listed(MASQ_CHAIN)?);
    if have != want {
        return Ok(false);
    }
    for (chain, rule) in jumps() {
        let mut check = vec!["-t", "nat", "-C", chain];
        check.extend(&rule);
        if !iptables(&check)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rules of a nat chain as `iptables -S` lists them (none if the chain is missing).
fn listed(chain: &str) -> Result<Vec<String>, IptablesError> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "nat", "-S", chain])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| IptablesError(format!("running iptables: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect())
}

/// Remove the jumps and chains. Best effort and idempotent.
pub fn remove() {
    for (chain, rule) in jumps() {
        let mut delete = vec!["-t", "nat", "-D", chain];
        delete.extend(&rule);
        while iptables(&delete).unwrap_or(false) {}
    }
    for chain in [DNAT_CHAIN, MASQ_CHAIN] {
        let _ = iptables(&["-t", "nat", "-F", chain]);
        let _ = iptables(&["-t", "nat", "-X", chain]);
    }
}

/// Forget the kernel's UDP conntrack entries for newly published ports: a client that kept
/// sending to a port before it was (re)published would otherwise stay bound to the old
/// translation (or to none) for as long as it keeps sending, as the reference portmap plugin
/// also prevents. Best effort: without the `conntrack` tool, only a warning.
pub fn forget_udp_flows(ports: &[&PortMapping]) {
    for mapping in ports.iter().filter(|m| m.protocol == PortProtocol::Udp) {
        let port = mapping.host_port.to_string();
        let result = Command::new("conntrack")
            .args(["-D", "-p", "udp", "--orig-port-dst", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = result {
            tracing::warn!(%e, port = mapping.host_port, "conntrack unavailable: stale UDP flows to the port keep their old translation until they idle out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(
        host_port: u16,
        protocol: PortProtocol,
        host_ip: Option<Ipv4Addr>,
        pod: u8,
    ) -> HostPort {
        HostPort {
            mapping: PortMapping {
                host_port,
                container_port: 80,
                protocol,
                host_ip,
            },
            pod_ip: Ipv4Addr::new(10, 244, 1, pod),
            owner: "default/web\" -j ACCEPT".into(),
        }
    }

    #[test]
    fn one_dnat_rule_per_mapping_and_one_hairpin_rule_per_pod() {
        let rules = rules(&[
            port(8080, PortProtocol::Tcp, None, 5),
            port(
                5353,
                PortProtocol::Udp,
                Some(Ipv4Addr::new(192, 0, 2, 10)),
                5,
            ),
            port(9000, PortProtocol::Sctp, None, 6),
        ]);
        let added: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(
            added,
            [
                "-A WEIR-HOSTPORTS -p tcp -m tcp --dport 8080 -m comment --comment \"default/web-jACCEPT hostPort\" -j DNAT --to-destination 10.244.1.5:80",
                "-A WEIR-HOSTPORTS -d 192.0.2.10/32 -p udp -m udp --dport 5353 -m comment --comment \"default/web-jACCEPT hostPort\" -j DNAT --to-destination 10.244.1.5:80",
                "-A WEIR-HOSTPORTS -p sctp -m sctp --dport 9000 -m comment --comment \"default/web-jACCEPT hostPort\" -j DNAT --to-destination 10.244.1.6:80",
                "-A WEIR-HOSTPORTS-MASQ -s 10.244.1.5/32 -d 10.244.1.5/32 -m conntrack --ctstate DNAT -j MASQUERADE",
                "-A WEIR-HOSTPORTS-MASQ -s 10.244.1.6/32 -d 10.244.1.6/32 -m conntrack --ctstate DNAT -j MASQUERADE",
            ]
        );
        assert!(rules.starts_with("*nat\n"));
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn no_ports_still_flushes_both_chains() {
        let rules = rules(&[]);
        assert!(rules.contains("-F WEIR-HOSTPORTS\n"));
        assert!(rules.contains("-F WEIR-HOSTPORTS-MASQ\n"));
        assert!(!rules.contains("-A "));
    }
}
