// SPDX-License-Identifier: Apache-2.0
//! `weir-bench cross-node`: pod → pod across two nodes, in native routing and in VXLAN, against
//! node → node over the same underlay, measured in the same run, round by round and interleaved.
//!
//! | scenario           | path                                                                |
//! |--------------------|---------------------------------------------------------------------|
//! | `node-node-native` | node 1 → node 2 of the native lab, over the lab's shared segment     |
//! | `native`           | a pod on node 1 → a pod on node 2 of that lab (eBPF redirect_neigh)  |
//! | `node-node-vxlan`  | node 1 → node 2 of the VXLAN lab, over its own segment               |
//! | `vxlan`            | a pod on node 1 → a pod on node 2 of that lab, through the tunnel    |
//!
//! The two labs are separate (a lab has one routing mode), each with its own baseline, so every
//! ratio divides numbers taken on one segment.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::{
    measure::Scenario,
    netns::NETNS_DIR,
    report::{Metric, Ratio, ScenarioResult, Stats},
    weir::{pod_from_status, pod_mtu, WeirLab},
};

const CLIENT: &str = "client";
const SERVER: &str = "server";

/// One routing mode's lab and its two scenarios.
struct ModeLab {
    scenarios: [Scenario; 2],
    mtu: u32,
    /// Held for its `Drop`: the lab goes when this does.
    _lab: WeirLab,
}

fn node(status: &Value, index: usize) -> Result<(PathBuf, std::net::Ipv4Addr)> {
    let node = &status["nodes"][index];
    let netns = node["netns"].as_str().context("node without netns")?;
    let ip = node["ip"]
        .as_str()
        .context("node without ip")?
        .parse()
        .context("node ip")?;
    Ok((Path::new(NETNS_DIR).join(netns), ip))
}

fn mode_lab(cli: &Path, dir: &Path, routing: &str) -> Result<ModeLab> {
    eprintln!(
        "weir-bench: bringing up a 2-node {routing} lab in {}",
        dir.display()
    );
    let lab = WeirLab::up_with(cli, dir, &["--nodes", "2", "--routing", routing])?;
    lab.add_pod_on(CLIENT, 1)?;
    lab.add_pod_on(SERVER, 2)?;
    let status = lab.status()?;
    let (client, server) = (
        pod_from_status(&status, CLIENT)?,
        pod_from_status(&status, SERVER)?,
    );
    let ((node1, _), (node2, node2_ip)) = (node(&status, 0)?, node(&status, 1)?);
    let mtu = pod_mtu(&status, CLIENT)?;
    let scenarios = [
        Scenario::start(format!("node-node-{routing}"), &node1, &node2, node2_ip)?,
        Scenario::start(routing.to_owned(), &client.netns, &server.netns, server.ip)?,
    ];
    Ok(ModeLab {
        scenarios,
        mtu,
        _lab: lab,
    })
}

#[derive(Debug, Serialize)]
pub struct CrossNodeReport {
    pub rounds: u32,
    pub seconds: u64,
    /// Pod MTU per mode (VXLAN's is 50 bytes less).
    pub mtu_native: u32,
    pub mtu_vxlan: u32,
    pub scenarios: Vec<ScenarioResult>,
    /// `native / node-node-native`, `vxlan / node-node-vxlan`.
    pub ratios: Vec<Ratio>,
}

impl CrossNodeReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "cross-node, {} rounds of {} s (pod MTU: native {}, vxlan {})\n\n",
            self.rounds, self.seconds, self.mtu_native, self.mtu_vxlan
        );
        out.push_str(&format!(
            "{:<18} {:>16} {:>12} {:>12}\n",
            "scenario", "throughput Gb/s", "RR /s", "CRR /s"
        ));
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:<18} {:>16} {:>12} {:>12}\n",
                s.name,
                Metric::Throughput.show(s.throughput_bps.median),
                Metric::Rr.show(s.rr_per_s.median),
                Metric::Crr.show(s.crr_per_s.median),
            ));
        }
        out.push_str("\nratio (median of per-round ratios, [min, max])\n");
        for r in &self.ratios {
            let show = |s: &Stats| format!("{:.2} [{:.2}, {:.2}]", s.median, s.min, s.max);
            out.push_str(&format!(
                "{:<28} throughput {}  RR {}  CRR {}\n",
                format!("{} / {}", r.numerator, r.denominator),
                show(&r.throughput),
                show(&r.rr),
                show(&r.crr)
            ));
        }
        out.push_str(&crate::report::cpu_table(&self.scenarios, &self.ratios));
        out
    }
}

/// Bring both labs up, measure, tear down; `measure` runs every scenario's rounds.
pub fn run(
    cli: &Path,
    dir_prefix: &str,
    rounds: u32,
    seconds: u64,
    measure: impl FnOnce(&[&Scenario]) -> Result<Vec<crate::measure::Samples>>,
) -> Result<CrossNodeReport> {
    let native = mode_lab(cli, Path::new(&format!("{dir_prefix}-native")), "native")?;
    crate::check_interrupted()?;
    let vxlan = mode_lab(cli, Path::new(&format!("{dir_prefix}-vxlan")), "vxlan")?;
    let scenarios: Vec<&Scenario> = native
        .scenarios
        .iter()
        .chain(vxlan.scenarios.iter())
        .collect();
    let samples = measure(&scenarios)?;
    let results = ScenarioResult::of_all(&scenarios, samples)?;
    let ratios = [(1, 0), (3, 2)]
        .into_iter()
        .filter_map(|(n, d)| Ratio::of(&results[n], &results[d]))
        .collect();
    Ok(CrossNodeReport {
        rounds,
        seconds,
        mtu_native: native.mtu,
        mtu_vxlan: vxlan.mtu,
        scenarios: results,
        ratios,
    })
}
