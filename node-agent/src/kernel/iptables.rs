//! The node's iptables rules: masquerading pod traffic that leaves the cluster, accepting pod
//! traffic in FORWARD (whatever the node's policy), guarding the VXLAN port from pods, and the
//! pinned socket filter that judges Service traffic DNATed to something that is not a pod.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
#[error("iptables: {0}")]
pub struct IptablesError(pub(crate) String);

const MASQ_CHAIN: &str = "WEIR-MASQ";
const FWD_CHAIN: &str = "WEIR-FORWARD";
const INPUT_CHAIN: &str = "WEIR-INPUT";
const NOTRACK_IN_CHAIN: &str = "WEIR-NOTRACK-IN";
const NOTRACK_OUT_CHAIN: &str = "WEIR-NOTRACK-OUT";

/// The iptables rules of this node, in iptables-restore format, for `--noflush` application. Pod
/// traffic leaving the cluster CIDR is masqueraded to the node; the forward chain accepts pod traffic
/// even when the node's FORWARD policy is DROP (as Docker sets it).
pub fn rules(
    pod_cidr: Ipv4Net,
    cluster_cidr: Ipv4Net,
    vxlan: bool,
    egress_after_dnat: &Path,
) -> String {
    // With VXLAN, no pod may reach a node's tunnel port (it could hand the tunnel a packet
    // claiming any identity): the datapath drops pods' packets sent to a node's address, these
    // drop what reaches one through a Service (DNAT) on this node or on its way elsewhere.
    let port = weir_common::config::VXLAN_PORT;
    let (input_tunnel, forward_tunnel) = if vxlan {
        (
            format!("-A {INPUT_CHAIN} -s {cluster_cidr} -p udp --dport {port} -j DROP\n"),
            format!(
                "-A {FWD_CHAIN} -s {cluster_cidr} -p udp --dport {port} -m conntrack --ctstate DNAT -j DROP\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    // The tunnel's own datagrams between nodes need no connection tracking: the datapath
    // tracks the flows inside them, and tracking the outer UDP made a conntrack entry per pod
    // flow on each node (the outer source port follows the inner flow), 8% of VXLAN's
    // connection rate. Pods' traffic is never exempted (it could be DNATed to the port).
    let notrack = if vxlan {
        format!(
            "-A {NOTRACK_IN_CHAIN} ! -s {cluster_cidr} -p udp --dport {port} -m addrtype --dst-type LOCAL -j NOTRACK\n\
             -A {NOTRACK_OUT_CHAIN} -p udp --dport {port} -m addrtype --src-type LOCAL -j NOTRACK\n"
        )
    } else {
        String::new()
    };
    // A pod's Service traffic that the host stack DNATed to something that is not a pod (the node,
    // another node, the outside) never reaches weir0, where Service traffic to pods is judged:
    // the datapath's socket filter judges its egress here (original direction; before SNAT, in
    // POSTROUTING, so the source is still the pod).
    let egress = format!(
        "-s {pod_cidr} ! -d {cluster_cidr} -m conntrack --ctstate DNAT --ctdir ORIGINAL \
         -m bpf --object-pinned {} -j DROP",
        egress_after_dnat.display()
    );
    format!(
        "*nat\n\
         :{MASQ_CHAIN} - [0:0]\n\
         -F {MASQ_CHAIN}\n\
         -A {MASQ_CHAIN} -d {cluster_cidr} -j RETURN\n\
         -A {MASQ_CHAIN} -m addrtype --dst-type LOCAL -j RETURN\n\
         -A {MASQ_CHAIN} -j MASQUERADE --random-fully\n\
         COMMIT\n\
         *filter\n\
         :{FWD_CHAIN} - [0:0]\n\
         :{INPUT_CHAIN} - [0:0]\n\
         -F {FWD_CHAIN}\n\
         -F {INPUT_CHAIN}\n\
         {forward_tunnel}\
         -A {FWD_CHAIN} {egress}\n\
         -A {FWD_CHAIN} -s {pod_cidr} -j ACCEPT\n\
         -A {FWD_CHAIN} -d {pod_cidr} -j ACCEPT\n\
         {input_tunnel}\
         -A {INPUT_CHAIN} {egress}\n\
         COMMIT\n\
         *raw\n\
         :{NOTRACK_IN_CHAIN} - [0:0]\n\
         :{NOTRACK_OUT_CHAIN} - [0:0]\n\
         -F {NOTRACK_IN_CHAIN}\n\
         -F {NOTRACK_OUT_CHAIN}\n\
         {notrack}\
         COMMIT\n"
    )
}

pub(crate) fn iptables(args: &[&str]) -> Result<bool, IptablesError> {
    let status = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| IptablesError(format!("running iptables: {e}")))?;
    Ok(status.success())
}

/// Apply `rules` (iptables-restore format) with `--noflush`: each table's changes in one
/// transaction, the chains they do not name left alone.
pub(crate) fn restore(rules: &str) -> Result<(), IptablesError> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| IptablesError(format!("running iptables-restore: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| IptablesError(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| IptablesError(e.to_string()))?;
    if !out.status.success() {
        return Err(IptablesError(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// Install the chains and the jumps to them. Idempotent.
pub fn install(
    pod_cidr: Ipv4Net,
    cluster_cidr: Ipv4Net,
    vxlan: bool,
    egress_after_dnat: &Path,
) -> Result<(), IptablesError> {
    restore(&rules(pod_cidr, cluster_cidr, vxlan, egress_after_dnat))?;
    let masq_src = pod_cidr.to_string();
    let jumps: [(&str, &str, Vec<&str>); 5] = [
        (
            "nat",
            "POSTROUTING",
            vec!["-s", &masq_src, "-j", MASQ_CHAIN],
        ),
        ("filter", "FORWARD", vec!["-j", FWD_CHAIN]),
        ("filter", "INPUT", vec!["-j", INPUT_CHAIN]),
        ("raw", "PREROUTING", vec!["-j", NOTRACK_IN_CHAIN]),
        ("raw", "OUTPUT", vec!["-j", NOTRACK_OUT_CHAIN]),
    ];
    for (table, chain, rule) in jumps {
        ensure_first(table, chain, &rule)?;
    }
    Ok(())
}

/// Insert `rule` first in `table`/`chain` unless the chain already has it.
pub(crate) fn ensure_first(table: &str, chain: &str, rule: &[&str]) -> Result<(), IptablesError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend(rule);
    if iptables(&check)? {
        return Ok(());
    }
    let mut insert = vec!["-t", table, "-I", chain, "1"];
    insert.extend(rule);
    if !iptables(&insert)? {
        return Err(IptablesError(format!("inserting jump to {table}/{chain}")));
    }
    Ok(())
}

/// Remove the jumps and chains. Best effort and idempotent: missing pieces are fine.
pub fn remove(pod_cidr: Option<Ipv4Net>) {
    let src = pod_cidr.map(|c| c.to_string());
    if let Some(src) = &src {
        while iptables(&[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            src,
            "-j",
            MASQ_CHAIN,
        ])
        .unwrap_or(false)
        {}
    }
    while iptables(&["-t", "filter", "-D", "FORWARD", "-j", FWD_CHAIN]).unwrap_or(false) {}
    while iptables(&["-t", "filter", "-D", "INPUT", "-j", INPUT_CHAIN]).unwrap_or(false) {}
    while iptables(&["-t", "raw", "-D", "PREROUTING", "-j", NOTRACK_IN_CHAIN]).unwrap_or(false) {}
    while iptables(&["-t", "raw", "-D", "OUTPUT", "-j", NOTRACK_OUT_CHAIN]).unwrap_or(false) {}
    for (table, chain) in [
        ("nat", MASQ_CHAIN),
        ("filter", FWD_CHAIN),
        ("filter", INPUT_CHAIN),
        ("raw", NOTRACK_IN_CHAIN),
        ("raw", NOTRACK_OUT_CHAIN),
    ] {
        let _ = iptables(&["-t", table, "-F", chain]);
        let _ = iptables(&["-t", table, "-X", chain]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_masquerade_only_traffic_leaving_the_cluster() {
        let rules = rules(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            false,
            Path::new("/sys/fs/bpf/weir/v4/progs/f"),
        );
        let masq: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A WEIR-MASQ"))
            .collect();
        assert_eq!(
            masq,
            [
                "-A WEIR-MASQ -d 10.244.0.0/16 -j RETURN",
                "-A WEIR-MASQ -m addrtype --dst-type LOCAL -j RETURN",
                "-A WEIR-MASQ -j MASQUERADE --random-fully",
            ]
        );
        assert!(rules.contains("-A WEIR-FORWARD -s 10.244.1.0/24 -j ACCEPT"));
        assert_eq!(rules.matches("COMMIT").count(), 3);
        assert!(
            !rules.contains("NOTRACK\n"),
            "native routing has no tunnel datagrams to exempt"
        );
        assert!(
            !rules.contains("8472"),
            "native routing has no tunnel to guard"
        );
    }

    #[test]
    fn with_vxlan_no_pod_reaches_a_tunnel_port_through_the_host_stack() {
        let rules = rules(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            true,
            Path::new("/sys/fs/bpf/weir/v4/progs/f"),
        );
        let filter: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
        assert!(filter.contains(&"-A WEIR-INPUT -s 10.244.0.0/16 -p udp --dport 8472 -j DROP"));
        // First in WEIR-FORWARD, before the pod CIDR's ACCEPT.
        let forward: Vec<&&str> = filter
            .iter()
            .filter(|l| l.starts_with("-A WEIR-FORWARD"))
            .collect();
        assert_eq!(
            *forward[0],
            "-A WEIR-FORWARD -s 10.244.0.0/16 -p udp --dport 8472 -m conntrack --ctstate DNAT -j DROP"
        );
        // Tunnel datagrams between nodes skip conntrack; a pod's never do.
        assert!(filter.contains(&"-A WEIR-NOTRACK-IN ! -s 10.244.0.0/16 -p udp --dport 8472 -m addrtype --dst-type LOCAL -j NOTRACK"));
        assert!(filter.contains(
            &"-A WEIR-NOTRACK-OUT -p udp --dport 8472 -m addrtype --src-type LOCAL -j NOTRACK"
        ));
    }
}
