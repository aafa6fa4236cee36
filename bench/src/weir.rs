// SPDX-License-Identifier: Apache-2.0
//! The Weir scenarios: a real lab (the `weir-lab` CLI: real agent, real CNI plugin, real eBPF) with
//! one client pod, three server pods and a bystander, all on one node.
//!
//! - `server-0`: no policy selects it (weir-0: no rules);
//! - `server-1`: one NetworkPolicy with one rule allowing the client (weir-1: isolated, one rule);
//! - `server-10k`: one NetworkPolicy with 10 000 (`--rules`) rules, the client's last (weir-10k,
//!   see [`crate::rules`]).
//!
//! All three stay up for the whole run so that the scenarios interleave round by round. Before
//! anything is measured, probes show the policies are enforced (the bystander is refused where the
//! client gets through) and the pinned policy maps are counted, so the bench cannot quietly
//! measure a state that does not enforce what it claims.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{lpm_trie::LpmTrie, Map, MapData};
use serde_json::Value;
use weir_common::{
    maps::{ABI_VERSION, POLICY_PEERS, POLICY_PORTS},
    PeerKey, PeerValue, PortKey, PortValue,
};

use crate::{
    measure::{IPERF_PORT, RR_PORT},
    netns::{run, run_with_input, NETNS_DIR},
    report::scenario_name,
    rules::{self, network_policy, PolicySpec},
};

const NAMESPACE: &str = "bench";
const CLIENT: &str = "client";
const BYSTANDER: &str = "other";
/// The port the pods' own servers answer on; probes use it.
const PROBE_PORT: u16 = 80;
/// How long enforcement may take to show after `apply` returned.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(20);

/// `weir-lab --dir DIR ...`; `weir-lab down` on drop, so a lab never outlives the bench.
#[derive(Debug)]
pub struct WeirLab {
    cli: PathBuf,
    dir: PathBuf,
}

impl WeirLab {
    /// `weir-lab up EXTRA...` (`--nodes 2 --routing vxlan`).
    pub fn up_with(cli: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        Self::up_with_agent_args(cli, dir, extra, "")
    }

    /// [`Self::up_with`], the agents run with `agent_args` added. The guard exists before
    /// `up` runs, so a half-built lab is torn down too.
    pub fn up_with_agent_args(
        cli: &Path,
        dir: &Path,
        extra: &[&str],
        agent_args: &str,
    ) -> Result<Self> {
        if !cli.is_file() {
            bail!(
                "{} not found: build the workspace's binaries (cargo build --release --bins)",
                cli.display()
            );
        }
        let lab = Self {
            cli: cli.to_path_buf(),
            dir: dir.to_path_buf(),
        };
        run(lab
            .command()
            .arg("up")
            .args(extra)
            .env("WEIR_LAB_AGENT_ARGS", agent_args))
        .context("weir-lab up")?;
        Ok(lab)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.cli);
        command.arg("--dir").arg(&self.dir);
        command
    }

    /// `weir-lab pod add bench/NAME --node NODE`.
    pub fn add_pod_on(&self, name: &str, node: u32) -> Result<()> {
        let pod = format!("{NAMESPACE}/{name}");
        run(self
            .command()
            .args(["pod", "add", &pod, "--node", &node.to_string()]))
        .with_context(|| format!("adding pod {pod} on node {node}"))?;
        Ok(())
    }

    fn add_pod(&self, name: &str, labels: &str) -> Result<()> {
        let pod = format!("{NAMESPACE}/{name}");
        run(self
            .command()
            .args(["pod", "add", &pod, "--labels", labels]))
        .with_context(|| format!("adding pod {pod}"))?;
        Ok(())
    }

    /// `weir-lab apply -f -`: returns once every agent has programmed it.
    fn apply(&self, doc: &Value) -> Result<()> {
        run_with_input(
            self.command().args(["apply", "-f", "-"]),
            doc.to_string().as_bytes(),
        )?;
        Ok(())
    }

    /// Does a TCP probe from `from` to `to` on [`PROBE_PORT`] connect?
    fn probe(&self, from: &str, to: &str) -> Result<bool> {
        let output = self
            .command()
            .args([
                "probe",
                &format!("{NAMESPACE}/{from}"),
                &format!("{NAMESPACE}/{to}"),
                "--proto",
                "tcp",
                "--port",
                &PROBE_PORT.to_string(),
            ])
            .output()
            .context("running weir-lab probe")?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "weir-lab probe {from} -> {to} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// Probe until the answer is `expected` (policy may land a moment after `apply`).
    fn expect_probe(&self, from: &str, to: &str, expected: bool) -> Result<()> {
        let deadline = Instant::now() + ENFORCE_TIMEOUT;
        while self.probe(from, to)? != expected {
            if Instant::now() > deadline {
                bail!(
                    "{from} -> {to} tcp/{PROBE_PORT}: expected {}, still {} after {ENFORCE_TIMEOUT:?}; \
                     refusing to measure an unenforced policy",
                    if expected { "connected" } else { "refused" },
                    if expected { "refused" } else { "connected" },
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub fn status(&self) -> Result<Value> {
        let out = run(self.command().arg("status"))?;
        serde_json::from_str(&out).context("weir-lab status is not JSON")
    }
}

impl Drop for WeirLab {
    fn drop(&mut self) {
        if let Err(err) = run(self.command().arg("down")) {
            eprintln!("weir-bench: warning: weir-lab down: {err:#}");
        }
    }
}

/// A pod the bench measures from or to.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `/run/netns/NAME`.
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

/// The lab with its pods and policies in place. Dropping it tears the lab down.
#[derive(Debug)]
pub struct WeirSetup {
    pub client: Pod,
    /// `server-0`, `server-1`, `server-10k`, in that order.
    pub servers: [Pod; 3],
    /// `server-tiers`, under ClusterNetworkPolicies and NetworkPolicies at scale (when asked).
    pub tiered: Option<Pod>,
    /// The pods' MTU (the baselines use the same).
    pub mtu: u32,
    /// What was checked, for the report.
    pub checks: Vec<String>,
    /// Held for its `Drop`: the lab goes when this does.
    _lab: WeirLab,
}

/// Server pod name for a policy of `rules` rules: `server-0`, `server-1`, `server-10k`.
fn server_name(rules: u32) -> String {
    scenario_name("server", rules)
}

/// The pod under [`rules::tiered_policies`].
pub const TIERED_SERVER: &str = "server-tiers";

/// Bring the lab up, add the pods, apply the policies and check they are enforced; with `tiers`
/// > 0, also [`TIERED_SERVER`] under `tiers` ClusterNetworkPolicies and as many NetworkPolicies.
pub fn set_up(cli: &Path, dir: &Path, rules: u32, tiers: u32) -> Result<WeirSetup> {
    set_up_with(cli, dir, rules, tiers, "")
}

/// [`set_up`], its agents run with `agent_args` (`--flow-events-per-sec 0`).
pub fn set_up_with(
    cli: &Path,
    dir: &Path,
    rules: u32,
    tiers: u32,
    agent_args: &str,
) -> Result<WeirSetup> {
    let lab = WeirLab::up_with_agent_args(cli, dir, &[], agent_args)?;
    let server_names = [server_name(0), server_name(1), server_name(rules)];
    lab.add_pod(CLIENT, "role=bench-client")?;
    lab.add_pod(BYSTANDER, "role=bystander")?;
    for name in &server_names {
        lab.add_pod(name, &format!("app={name}"))?;
    }
    let client_ports = [PROBE_PORT, IPERF_PORT, RR_PORT];
    for (name, count) in [(&server_names[1], 1), (&server_names[2], rules)] {
        let policy = format!("bench-{name}");
        let started = Instant::now();
        lab.apply(&network_policy(&PolicySpec {
            name: &policy,
            namespace: NAMESPACE,
            server_label: ("app", name),
            client_label: ("role", "bench-client"),
            client_ports: &client_ports,
            rules: count,
        }))
        .with_context(|| format!("applying {policy} ({count} rules)"))?;
        eprintln!(
            "weir-bench: applied {policy} ({count} rules) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let mut checks = Vec::new();
    if tiers > 0 {
        lab.add_pod(TIERED_SERVER, &format!("app={TIERED_SERVER}"))?;
        let started = Instant::now();
        lab.apply(&rules::tiered_policies(
            &PolicySpec {
                name: "bench-tiers",
                namespace: NAMESPACE,
                server_label: ("app", TIERED_SERVER),
                client_label: ("role", "bench-client"),
                client_ports: &client_ports,
                rules: 1,
            },
            ("role", "bystander"),
            tiers,
        ))
        .context("applying the tiered policies")?;
        eprintln!(
            "weir-bench: applied {tiers} ClusterNetworkPolicies and {tiers} NetworkPolicies in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        lab.expect_probe(BYSTANDER, TIERED_SERVER, false)?;
        lab.expect_probe(CLIENT, TIERED_SERVER, true)?;
        checks.push(format!(
            "tiers: {TIERED_SERVER} under {tiers} ClusterNetworkPolicies (Admin and Baseline) and \
             {} NetworkPolicies: {BYSTANDER} refused, {CLIENT} connected",
            tiers + 1
        ));
    }

    // Enforced, and only where it should be.
    lab.expect_probe(BYSTANDER, &server_names[0], true)?;
    for name in &server_names[1..] {
        lab.expect_probe(BYSTANDER, name, false)?;
        lab.expect_probe(CLIENT, name, true)?;
    }
    checks.push(format!(
        "policy enforced: {BYSTANDER} -> {0} refused and {CLIENT} -> {0} connected, same for {1}; \
         {BYSTANDER} -> {2} connected (not isolated)",
        server_names[2], server_names[1], server_names[0]
    ));

    let status = lab.status()?;
    let pod = |name: &str| pod_from_status(&status, name);
    let client = pod(CLIENT)?;
    let servers = [
        pod(&server_names[0])?,
        pod(&server_names[1])?,
        pod(&server_names[2])?,
    ];
    let tiered = if tiers > 0 {
        Some(pod(TIERED_SERVER)?)
    } else {
        None
    };
    let mtu = pod_mtu(&status, CLIENT)?;
    let pin_dir = status["nodes"][0]["bpffs_dir"]
        .as_str()
        .map(|dir| Path::new(dir).join(format!("v{ABI_VERSION}")))
        .context("no nodes[0].bpffs_dir in weir-lab status")?;
    let (peers, ports) = policy_map_sizes(&pin_dir)?;
    if peers < rules as usize {
        bail!("{POLICY_PEERS} holds {peers} entries, fewer than the {rules} rules applied");
    }
    checks.push(format!(
        "policy maps: {POLICY_PEERS} {peers} entries, {POLICY_PORTS} {ports} entries"
    ));
    Ok(WeirSetup {
        client,
        servers,
        tiered,
        mtu,
        checks,
        _lab: lab,
    })
}

fn find_pod<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    status["pods"]
        .as_array()
        .and_then(|pods| {
            pods.iter()
                .find(|p| p["namespace"] == NAMESPACE && p["name"] == name)
        })
        .with_context(|| format!("no pod {NAMESPACE}/{name} in weir-lab status"))
}

pub fn pod_from_status(status: &Value, name: &str) -> Result<Pod> {
    let pod = find_pod(status, name)?;
    let netns = pod["netns"].as_str().context("pod without netns")?;
    let ip = pod["ip"]
        .as_str()
        .context("pod without ip")?
        .parse()
        .context("pod ip")?;
    Ok(Pod {
        netns: Path::new(NETNS_DIR).join(netns),
        ip,
    })
}

pub fn pod_mtu(status: &Value, name: &str) -> Result<u32> {
    let pod = find_pod(status, name)?;
    let netns = pod["netns"].as_str().context("pod without netns")?;
    let ifname = pod["ifname"].as_str().unwrap_or("eth0");
    let out = run(Command::new("ip").args(["-n", netns, "-o", "link", "show", ifname]))?;
    parse_mtu(&out).with_context(|| format!("no mtu in {out:?}"))
}

/// The `mtu N` of an `ip -o link show` line.
fn parse_mtu(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// Entries in the pinned PEERS and PORTS tries.
fn policy_map_sizes(pin_dir: &Path) -> Result<(usize, usize)> {
    fn count<K: aya::Pod, V: aya::Pod>(path: &Path) -> Result<usize> {
        let data =
            MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
        let trie: LpmTrie<_, K, V> = LpmTrie::try_from(Map::LpmTrie(data))?;
        let mut n = 0;
        for key in trie.keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }
    Ok((
        count::<PeerKey, PeerValue>(&pin_dir.join(POLICY_PEERS))?,
        count::<PortKey, PortValue>(&pin_dir.join(POLICY_PORTS))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_is_read_from_ip_link() {
        let line = "2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP";
        assert_eq!(parse_mtu(line), Some(1450));
        assert_eq!(parse_mtu("2: eth0: <UP>"), None);
    }

    #[test]
    fn pods_are_found_in_the_status() {
        let status = serde_json::json!({"pods": [
            {"namespace": "default", "name": "client", "netns": "x", "ip": "10.244.1.9"},
            {"namespace": "bench", "name": "client", "netns": "weir-lab-ab-p-1", "ip": "10.244.1.2"},
        ]});
        let pod = pod_from_status(&status, CLIENT).unwrap();
        assert_eq!(pod.netns, Path::new("/run/netns/weir-lab-ab-p-1"));
        assert_eq!(pod.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert!(pod_from_status(&status, "server-0").is_err());
    }
}
