// SPDX-License-Identifier: Apache-2.0
//! Samples → medians, ratios against the baselines of the same run, a verdict against the targets,
//! and the table (or JSON) that shows them. Pure: nothing here measures anything.

use std::fmt::Write as _;

use serde::Serialize;

/// What is measured in every scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// iperf3, one TCP stream, bits per second at the receiver.
    Throughput,
    /// One-byte request/response on one connection, per second.
    Rr,
    /// New connection per request, per second.
    Crr,
}

impl Metric {
    pub const ALL: [Self; 3] = [Self::Throughput, Self::Rr, Self::Crr];

    fn label(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Rr => "RR",
            Self::Crr => "CRR",
        }
    }

    pub fn heading(self) -> &'static str {
        match self {
            Self::Throughput => "throughput Gbit/s",
            Self::Rr => "RR trans/s",
            Self::Crr => "CRR conn/s",
        }
    }

    /// `value` in the unit of [`Self::heading`].
    pub fn show(self, value: f64) -> String {
        match self {
            Self::Throughput => format!("{:.2}", value / 1e9),
            Self::Rr | Self::Crr => format!("{value:.0}"),
        }
    }

    /// The unit of [`Self::show_cpu`]: the machine's busy CPU time per unit of work.
    pub fn cpu_heading(self) -> &'static str {
        match self {
            Self::Throughput => "CPU ms/GB",
            Self::Rr => "CPU µs/trans",
            Self::Crr => "CPU µs/conn",
        }
    }

    /// A CPU cost (seconds per unit, as measured) in the unit of [`Self::cpu_heading`].
    pub fn show_cpu(self, seconds: f64) -> String {
        match self {
            Self::Throughput => format!("{:.0}", seconds * 1e3),
            Self::Rr | Self::Crr => format!("{:.1}", seconds * 1e6),
        }
    }
}

/// Median, range and every sample of one metric in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max − min) / median: how much this number moved between rounds.
    pub spread: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        let spread = if median > 0.0 {
            (max - min) / median
        } else {
            0.0
        };
        Some(Self {
            median,
            min,
            max,
            spread,
            samples: samples.to_vec(),
        })
    }
}

/// One scenario's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub throughput_bps: Stats,
    pub rr_per_s: Stats,
    pub crr_per_s: Stats,
    /// The machine's busy CPU seconds per GB, per transaction, per connection.
    pub cpu_per_gb_s: Stats,
    pub cpu_per_rr_s: Stats,
    pub cpu_per_crr_s: Stats,
}

impl ScenarioResult {
    /// Each scenario's statistics from its samples (throughput, RR, CRR; as `measure_all` returns).
    pub fn of_all(
        scenarios: &[&crate::measure::Scenario],
        samples: Vec<crate::measure::Samples>,
    ) -> anyhow::Result<Vec<Self>> {
        use anyhow::Context;
        scenarios
            .iter()
            .zip(samples)
            .map(|(scenario, [throughput, rr, crr])| {
                let stats = |s: &[crate::measure::Sample], cpu: bool| {
                    let values: Vec<f64> = s
                        .iter()
                        .map(|s| if cpu { s.cpu_per_unit } else { s.value })
                        .collect();
                    Stats::of(&values).context("no samples")
                };
                Ok(Self {
                    name: scenario.name.clone(),
                    throughput_bps: stats(&throughput, false)?,
                    rr_per_s: stats(&rr, false)?,
                    crr_per_s: stats(&crr, false)?,
                    cpu_per_gb_s: stats(&throughput, true)?,
                    cpu_per_rr_s: stats(&rr, true)?,
                    cpu_per_crr_s: stats(&crr, true)?,
                })
            })
            .collect()
    }

    pub fn get(&self, metric: Metric) -> &Stats {
        match metric {
            Metric::Throughput => &self.throughput_bps,
            Metric::Rr => &self.rr_per_s,
            Metric::Crr => &self.crr_per_s,
        }
    }

    /// The CPU cost of a unit of `metric`'s work.
    pub fn cpu(&self, metric: Metric) -> &Stats {
        match metric {
            Metric::Throughput => &self.cpu_per_gb_s,
            Metric::Rr => &self.cpu_per_rr_s,
            Metric::Crr => &self.cpu_per_crr_s,
        }
    }
}

/// `numerator / denominator`, per metric: taken round by round (both were measured within the
/// same minute, so slow drift in the machine's load cancels), then the median and range of those.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub numerator: String,
    pub denominator: String,
    pub throughput: Stats,
    pub rr: Stats,
    pub crr: Stats,
    /// The numerator's CPU cost per unit over the denominator's (below 1: cheaper).
    pub cpu_throughput: Stats,
    pub cpu_rr: Stats,
    pub cpu_crr: Stats,
}

impl Ratio {
    pub fn of(numerator: &ScenarioResult, denominator: &ScenarioResult) -> Option<Self> {
        let per_round = |n: &Stats, d: &Stats| {
            let ratios: Vec<f64> = n
                .samples
                .iter()
                .zip(&d.samples)
                .map(|(&n, &d)| ratio(n, d))
                .collect();
            Stats::of(&ratios)
        };
        let rate = |m| per_round(numerator.get(m), denominator.get(m));
        let cpu = |m| per_round(numerator.cpu(m), denominator.cpu(m));
        Some(Self {
            numerator: numerator.name.clone(),
            denominator: denominator.name.clone(),
            throughput: rate(Metric::Throughput)?,
            rr: rate(Metric::Rr)?,
            crr: rate(Metric::Crr)?,
            cpu_throughput: cpu(Metric::Throughput)?,
            cpu_rr: cpu(Metric::Rr)?,
            cpu_crr: cpu(Metric::Crr)?,
        })
    }

    pub fn get(&self, metric: Metric) -> &Stats {
        match metric {
            Metric::Throughput => &self.throughput,
            Metric::Rr => &self.rr,
            Metric::Crr => &self.crr,
        }
    }

    /// The ratio of CPU costs for `metric`'s work.
    pub fn cpu(&self, metric: Metric) -> &Stats {
        match metric {
            Metric::Throughput => &self.cpu_throughput,
            Metric::Rr => &self.cpu_rr,
            Metric::Crr => &self.cpu_crr,
        }
    }
}

/// The CPU-cost part of a report: each scenario's cost per unit, then the ratios of costs.
pub fn cpu_table(scenarios: &[ScenarioResult], ratios: &[Ratio]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nCPU cost: the machine's busy CPU time (all cores, /proc/stat) per unit of work, median [min-max]"
    );
    let _ = write!(out, "{:<28}", "scenario");
    for metric in Metric::ALL {
        let _ = write!(out, "{:>24}", metric.cpu_heading());
    }
    let _ = writeln!(out);
    for s in scenarios {
        let _ = write!(out, "{:<28}", s.name);
        for metric in Metric::ALL {
            let st = s.cpu(metric);
            let cell = format!(
                "{} [{}-{}]",
                metric.show_cpu(st.median),
                metric.show_cpu(st.min),
                metric.show_cpu(st.max)
            );
            let _ = write!(out, "{cell:>24}");
        }
        let _ = writeln!(out);
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "CPU cost ratio, per round (below 1: the first is cheaper)"
        );
        for r in ratios {
            let _ = write!(
                out,
                "{:<28}",
                format!("{} / {}", r.numerator, r.denominator)
            );
            for metric in Metric::ALL {
                let st = r.cpu(metric);
                let cell = format!("{:.3} [{:.3}-{:.3}]", st.median, st.min, st.max);
                let _ = write!(out, "{cell:>24}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// Does a ratio meet its target? `Unclear` when its rounds fall on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Yes,
    No,
    Unclear,
}

impl Call {
    fn of(ratio: &Stats, target: f64) -> Self {
        if ratio.min >= target {
            Self::Yes
        } else if ratio.max < target {
            Self::No
        } else {
            Self::Unclear
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "NO",
            Self::Unclear => "unclear",
        }
    }
}

/// Name of the scenario with `rules` rules for `kind` ("weir", "iptables"): `weir-10k`.
pub fn scenario_name(kind: &str, rules: u32) -> String {
    if rules >= 1000 && rules.is_multiple_of(1000) {
        format!("{kind}-{}k", rules / 1000)
    } else {
        format!("{kind}-{rules}")
    }
}

/// The ratios worth reading, in the order the table shows them; `N` is the big ruleset.
fn ratio_pairs(rules: u32) -> [(String, String); 8] {
    let (weir, iptables) = (
        scenario_name("weir", rules),
        scenario_name("iptables", rules),
    );
    let s = str::to_owned;
    [
        (s("weir-0"), s("veth")),
        (weir.clone(), s("veth")),
        (weir.clone(), s("weir-0")),
        (weir.clone(), s("weir-1")),
        (weir.clone(), format!("{weir}-noevents")),
        (s("weir-tiers"), s("weir-0")),
        (s("iptables-0"), s("veth")),
        (iptables, s("iptables-0")),
    ]
}

/// A policy-cost ratio counts as flat when it is at least this.
pub const FLAT: f64 = 0.98;

/// Where the run happened, for reading its numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub load_before: f64,
    pub load_after: f64,
    pub iptables: String,
    pub mtu: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Metric → is weir-N at least [`FLAT`] of weir-0 (every round, none, or some)?
    pub flat: Vec<(Metric, Call)>,
    /// Metric → is weir-0 at least veth?
    pub at_least_veth: Vec<(Metric, Call)>,
    /// Median of every scenario's round-to-round spread: differences below it are noise.
    pub typical_spread: f64,
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub rounds: u32,
    pub seconds: u64,
    pub rules: u32,
    pub machine: Machine,
    /// What was checked before measuring (rule counts, enforcement).
    pub checks: Vec<String>,
    pub scenarios: Vec<ScenarioResult>,
    pub ratios: Vec<Ratio>,
    pub verdict: Option<Verdict>,
}

impl Report {
    pub fn new(
        rounds: u32,
        seconds: u64,
        rules: u32,
        machine: Machine,
        checks: Vec<String>,
        scenarios: Vec<ScenarioResult>,
    ) -> Self {
        let find = |name: &str| scenarios.iter().find(|s| s.name == name);
        let ratios: Vec<Ratio> = ratio_pairs(rules)
            .into_iter()
            .filter_map(|(num, den)| Ratio::of(find(&num)?, find(&den)?))
            .collect();
        let verdict = verdict(&scenarios, &ratios, &scenario_name("weir", rules));
        Self {
            rounds,
            seconds,
            rules,
            machine,
            checks,
            scenarios,
            ratios,
            verdict,
        }
    }

    fn ratio(&self, num: &str, den: &str) -> Option<&Ratio> {
        self.ratios
            .iter()
            .find(|r| r.numerator == num && r.denominator == den)
    }

    /// The human-readable form.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weir-bench: same-node TCP client -> server, {} rounds x {} s per number, median [min-max]",
            self.rounds, self.seconds
        );
        let _ = writeln!(
            out,
            "machine: {} cores, Linux {}, load {:.2} before / {:.2} after, {}, MTU {}",
            m.cores, m.kernel, m.load_before, m.load_after, m.iptables, m.mtu
        );
        if m.cores <= 4 {
            let _ = writeln!(
                out,
                "         (few cores, shared with whatever else runs: client, server and datapath compete; expect a few % of noise)"
            );
        }
        for check in &self.checks {
            let _ = writeln!(out, "check: {check}");
        }
        let _ = writeln!(out);
        let _ = write!(out, "{:<14}", "scenario");
        for metric in Metric::ALL {
            let _ = write!(out, "{:>28}", metric.heading());
        }
        let _ = writeln!(out);
        for s in &self.scenarios {
            let _ = write!(out, "{:<14}", s.name);
            for metric in Metric::ALL {
                let st = s.get(metric);
                let cell = format!(
                    "{} [{}-{}]",
                    metric.show(st.median),
                    metric.show(st.min),
                    metric.show(st.max)
                );
                let _ = write!(out, "{cell:>28}");
            }
            let _ = writeln!(out);
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out);
            let _ = write!(out, "{:<28}", "ratio, per round");
            for metric in Metric::ALL {
                let _ = write!(out, "{:>28}", metric.label());
            }
            let _ = writeln!(out);
            for r in &self.ratios {
                let _ = write!(
                    out,
                    "{:<28}",
                    format!("{} / {}", r.numerator, r.denominator)
                );
                for metric in Metric::ALL {
                    let st = r.get(metric);
                    let cell = format!("{:.3} [{:.3}-{:.3}]", st.median, st.min, st.max);
                    let _ = write!(out, "{cell:>28}");
                }
                let _ = writeln!(out);
            }
        }
        out.push_str(&cpu_table(&self.scenarios, &self.ratios));
        let _ = writeln!(out);
        match &self.verdict {
            Some(v) => {
                let _ = writeln!(out, "{}", v.line);
            }
            None => {
                let _ = writeln!(out, "verdict: none (the Weir scenarios were not run)");
            }
        }
        if let Some(r) = self.ratio(&scenario_name("iptables", self.rules), "iptables-0") {
            let _ = writeln!(
                out,
                "for scale: iptables with the same number of rules keeps {} of its throughput, {} of its RR, {} of its CRR",
                percent(r.throughput.median),
                percent(r.rr.median),
                percent(r.crr.median)
            );
        }
        out
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::NAN
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn signed_percent(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

fn verdict(scenarios: &[ScenarioResult], ratios: &[Ratio], weir_big: &str) -> Option<Verdict> {
    let find = |num: &str, den: &str| {
        ratios
            .iter()
            .find(|r| r.numerator == num && r.denominator == den)
    };
    let flat_ratio = find(weir_big, "weir-0")?;
    let veth_ratio = find("weir-0", "veth")?;
    let flat: Vec<(Metric, Call)> = Metric::ALL
        .iter()
        .map(|&m| (m, Call::of(flat_ratio.get(m), FLAT)))
        .collect();
    let at_least_veth: Vec<(Metric, Call)> = Metric::ALL
        .iter()
        .map(|&m| (m, Call::of(veth_ratio.get(m), 1.0)))
        .collect();
    let spreads: Vec<f64> = scenarios
        .iter()
        .flat_map(|s| Metric::ALL.map(|m| s.get(m).spread))
        .collect();
    let typical_spread = Stats::of(&spreads).map_or(0.0, |s| s.median);
    let describe = |results: &[(Metric, Call)], r: &Ratio| {
        results
            .iter()
            .map(|&(m, call)| {
                format!(
                    "{} {} ({})",
                    m.label(),
                    call.word(),
                    signed_percent(r.get(m).median)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let noise = if scenarios.iter().all(|s| s.throughput_bps.samples.len() < 2) {
        "(one round: nothing says how much of this is noise; run --rounds 3 or more)".to_owned()
    } else {
        format!(
            "(rounds moved by {:.1}% typically on this machine; differences smaller than that are noise)",
            typical_spread * 100.0
        )
    };
    let line = format!(
        "verdict: {weir_big} within 2% of weir-0: {}.\n         weir-0 at least a routed veth pair: {}.\n         {noise}",
        describe(&flat, flat_ratio),
        describe(&at_least_veth, veth_ratio),
    );
    Some(Verdict {
        flat,
        at_least_veth,
        typical_spread,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, bps: f64, rr: f64, crr: f64) -> ScenarioResult {
        ScenarioResult {
            name: name.to_owned(),
            throughput_bps: Stats::of(&[bps, bps * 1.01, bps * 0.99]).unwrap(),
            rr_per_s: Stats::of(&[rr]).unwrap(),
            crr_per_s: Stats::of(&[crr]).unwrap(),
            // Cost falls as rate rises: a fixed CPU budget over the work done.
            cpu_per_gb_s: Stats::of(&[1e9 / bps, 1e9 / bps, 1e9 / bps]).unwrap(),
            cpu_per_rr_s: Stats::of(&[1.0 / rr]).unwrap(),
            cpu_per_crr_s: Stats::of(&[1.0 / crr]).unwrap(),
        }
    }

    #[test]
    fn scenarios_are_named_by_rule_count() {
        assert_eq!(scenario_name("weir", 10_000), "weir-10k");
        assert_eq!(scenario_name("iptables", 2_500), "iptables-2500");
        assert_eq!(scenario_name("weir", 0), "weir-0");
    }

    #[test]
    fn stats_take_the_median_and_the_spread() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert!((s.spread - 1.0).abs() < 1e-9);
        assert_eq!(
            s.samples,
            vec![3.0, 1.0, 2.0],
            "samples keep their round order"
        );
        assert_eq!(Stats::of(&[1.0, 4.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn ratios_and_verdict_come_from_the_rounds() {
        let mut weir_1 = scenario("weir-1", 12e9, 44_000.0, 11_000.0);
        // Round by round 12 / 12, 12.12 / 11.88, 11.88 / 12.12: its median ratio is 1 but the
        // rounds fall on both sides of 0.98.
        weir_1.throughput_bps = Stats::of(&[12e9, 11.88e9, 12.12e9]).unwrap();
        let report = Report::new(
            3,
            5,
            10_000,
            Machine::default(),
            vec![],
            vec![
                scenario("veth", 10e9, 40_000.0, 10_000.0),
                scenario("iptables-0", 9e9, 38_000.0, 9_000.0),
                scenario("iptables-10k", 1e9, 5_000.0, 1_000.0),
                scenario("weir-0", 12e9, 44_000.0, 11_000.0),
                weir_1,
                scenario("weir-10k", 11.9e9, 44_000.0, 10_000.0),
            ],
        );
        assert_eq!(report.ratios.len(), 6);
        let flat = report.ratio("weir-10k", "weir-0").unwrap();
        assert!((flat.throughput.median - 11.9 / 12.0).abs() < 1e-9);
        assert!((flat.crr.median - 10.0 / 11.0).abs() < 1e-9);
        let v = report.verdict.as_ref().unwrap();
        assert_eq!(
            v.flat,
            vec![
                (Metric::Throughput, Call::Yes),
                (Metric::Rr, Call::Yes),
                (Metric::Crr, Call::No)
            ]
        );
        assert!(v.at_least_veth.iter().all(|&(_, call)| call == Call::Yes));
        let per_round = report.ratio("weir-10k", "weir-1").unwrap();
        assert_eq!(per_round.throughput.samples.len(), 3);
        assert_eq!(Call::of(&per_round.throughput, FLAT), Call::Unclear);
        // weir-10k's connections cost 11/10 of weir-0's CPU each.
        assert!((flat.cpu_crr.median - 1.1).abs() < 1e-9);
        let table = report.table();
        assert!(table.contains("CRR NO (-9.1%)"), "{table}");
        assert!(table.contains("CPU µs/conn"), "{table}");
        let cpu_part = table
            .split("CPU cost ratio")
            .nth(1)
            .expect("a CPU cost ratio table");
        assert!(
            cpu_part
                .lines()
                .any(|l| l.starts_with("weir-10k / weir-0") && l.contains("1.100 [1.100-1.100]")),
            "{table}"
        );
        assert!(table.contains("weir-10k / weir-0"), "{table}");
        assert!(
            table.contains("verdict: weir-10k within 2% of weir-0"),
            "{table}"
        );
        assert!(
            table.contains("iptables with the same number of rules keeps 11.1%"),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenarios"][0]["name"], "veth");
        assert_eq!(json["verdict"]["flat"][2], serde_json::json!(["crr", "no"]));
    }

    #[test]
    fn without_weir_there_is_no_verdict_but_a_table() {
        let report = Report::new(
            1,
            1,
            10,
            Machine::default(),
            vec!["a check".to_owned()],
            vec![
                scenario("veth", 10e9, 40_000.0, 10_000.0),
                scenario("iptables-0", 9e9, 38_000.0, 9_000.0),
            ],
        );
        assert_eq!(report.ratios.len(), 1);
        assert_eq!(report.verdict, None);
        let table = report.table();
        assert!(table.contains("check: a check"), "{table}");
        assert!(table.contains("verdict: none"), "{table}");
    }
}
