// SPDX-License-Identifier: Apache-2.0
//! The README demo: the web → API → DB example of the user's documents, before and after its
//! `db-policy` (examples/db-policy.yaml, exactly as written there).
//!
//! Before any policy every probe connects: pod to pod (TCP 80 and the DB's 3306), pod to its node
//! and to the outside host (ICMP). After `db-policy` only the API pod reaches the DB, and only on
//! TCP 3306; everything else the policy does not select still connects.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use serde::Serialize;

use crate::{
    lab::{down, read_state, up, Lab, LabError, LabOptions, PodSpec, ProbeResult},
    names::PodRef,
    probe::Proto,
};

/// The demo's pods: namespace, name, `role` label.
pub const DEMO_PODS: [(&str, &str, &str); 3] = [
    ("default", "web", "web"),
    ("default", "api", "api-pod"),
    ("default", "db", "db"),
];

/// The policy of the user's documents, verbatim.
pub const DB_POLICY: &str = include_str!("../../examples/db-policy.yaml");

/// The DB's port in the example.
pub const DB_PORT: u16 = 3306;

/// The probes the demo runs: from, to, protocol, port, and whether it must connect once
/// `db-policy` is in place (before it, every probe must).
pub fn demo_probes() -> Vec<(String, String, Proto, u16, bool)> {
    let mut probes: Vec<(String, String, Proto, u16, bool)> = [
        ("default/web", "default/api", 80, true),
        ("default/api", "default/db", DB_PORT, true),
        ("default/web", "default/db", DB_PORT, false),
        ("default/api", "default/db", 80, false),
        ("default/db", "default/web", 80, true),
    ]
    .into_iter()
    .map(|(from, to, port, after)| (from.to_owned(), to.to_owned(), Proto::Tcp, port, after))
    .collect();
    for target in ["node", "ext"] {
        for (ns, name, _) in DEMO_PODS {
            probes.push((
                format!("{ns}/{name}"),
                target.to_owned(),
                Proto::Icmp,
                0,
                true,
            ));
        }
    }
    probes
}

/// One probe of the demo and what it had to show.
#[derive(Clone, Debug, Serialize)]
pub struct DemoRow {
    /// "no policy" or "db-policy".
    pub phase: &'static str,
    pub expected: bool,
    pub result: ProbeResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub rows: Vec<DemoRow>,
    /// The flow events of the denied probes under db-policy, as the agents named them.
    pub denied_flows: Vec<weir_agent_api::FlowRecord>,
    /// `explain` for web → db on the database port, under db-policy.
    pub explain_web_db: Option<weir_agent_api::Explanation>,
    /// Every probe did what it had to.
    pub ok: bool,
}

impl DemoReport {
    /// What follows the table: the denied flows as flow events, and `explain`.
    pub fn epilogue(&self) -> String {
        let mut out = String::new();
        if !self.denied_flows.is_empty() {
            let _ = writeln!(
                out,
                "\nDenied under db-policy, as flow events (weir-lab flows --verdict denied):"
            );
            for flow in &self.denied_flows {
                let _ = writeln!(out, "  {flow}");
            }
        }
        if let Some(explanation) = &self.explain_web_db {
            let _ = writeln!(
                out,
                "\nweir-lab explain default/web default/db --port {DB_PORT}:"
            );
            for line in explanation.to_string().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }

    /// An aligned table: phase, from, to, proto, port, expected, result, rtt.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 8]> = self
            .rows
            .iter()
            .map(|row| {
                let r = &row.result;
                let verdict = if r.connected == row.expected {
                    ""
                } else {
                    "  <-- UNEXPECTED"
                };
                [
                    row.phase.to_owned(),
                    r.from.clone(),
                    r.to.clone(),
                    r.proto.to_string(),
                    r.port.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                    if row.expected { "allowed" } else { "denied" }.to_owned(),
                    if r.connected {
                        format!("connected{verdict}")
                    } else {
                        format!("no connection{verdict}")
                    },
                    r.rtt_us
                        .map_or_else(|| "-".to_owned(), |us| format!("{us}us")),
                ]
            })
            .collect();
        let header = [
            "PHASE", "FROM", "TO", "PROTO", "PORT", "EXPECTED", "RESULT", "RTT",
        ]
        .map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }
}

/// Run the demo: bring the lab up if it is not, add the pods that are missing, probe. Unless
/// `keep`, undo what the demo did afterwards: `down` if it brought the lab up, otherwise delete
/// the pods it added (a lab someone else brought up is left as it was).
pub fn demo(opts: &LabOptions, keep: bool) -> Result<DemoReport> {
    let started = match read_state(&opts.dir) {
        Ok(_) => false,
        Err(err) if matches!(err.downcast_ref(), Some(LabError::NotUp(_))) => {
            up(opts)?;
            true
        }
        Err(err) => return Err(err),
    };
    let mut lab = Lab::open(&opts.dir)?;
    lab.set_down_on_drop(started && !keep);
    let mut added: Vec<PodRef> = Vec::new();
    let result = run(&lab, &mut added);
    if !keep && !started {
        for pod in &added {
            if let Err(err) = lab.del_pod(&pod.namespace, &pod.name) {
                eprintln!("weir-lab demo: deleting {pod}: {err:#}");
            }
        }
    }
    if started && !keep {
        lab.set_down_on_drop(false);
        let report = down(lab.dir())?;
        for warning in report.warnings {
            eprintln!("weir-lab down: {warning}");
        }
    }
    result
}

fn run(lab: &Lab, added: &mut Vec<PodRef>) -> Result<DemoReport> {
    for (ns, name, role) in DEMO_PODS {
        if lab.pod(ns, name).is_err() {
            let mut spec = PodSpec::new(ns, name).label("role", role);
            if name == "db" {
                spec = spec.serve(Proto::Tcp, DB_PORT);
            }
            lab.add_pod_with(&spec)?;
            added.push(PodRef::new(ns, name));
        }
    }
    let mut rows = probe_all(lab, "no policy", |_| true)?;
    lab.apply_yaml(DB_POLICY)?;
    let after = probe_all(lab, "db-policy", |expected_after| expected_after);
    // What the agents say of it; the probes are the demo, so an agent that cannot answer (an
    // older one, or a stand-in) only loses the epilogue.
    let named = after.is_ok().then(|| denied_and_explained(lab));
    // The demo leaves no policy behind, also when probing failed.
    let removed = lab.delete_policy("default", "db-policy");
    rows.extend(after?);
    removed?;
    let (denied_flows, explain_web_db) = match named {
        Some(Ok((flows, explanation))) => (flows, Some(explanation)),
        Some(Err(e)) => {
            eprintln!("weir-lab demo: no flows or explain from the agents: {e:#}");
            (Vec::new(), None)
        }
        None => (Vec::new(), None),
    };
    let ok = rows.iter().all(|r| r.result.connected == r.expected);
    Ok(DemoReport {
        rows,
        ok,
        denied_flows,
        explain_web_db,
    })
}

/// The denied probes as flow events naming db-policy (one line a probe: retries repeat it), and
/// `explain` for web -> db on the database port.
fn denied_and_explained(
    lab: &Lab,
) -> Result<(Vec<weir_agent_api::FlowRecord>, weir_agent_api::Explanation)> {
    let filter = weir_agent_api::FlowFilter {
        verdict: Some("denied".to_owned()),
        policy: Some("default/db-policy".to_owned()),
        ..Default::default()
    };
    let mut denied = lab.flows(&filter, None)?;
    let mut seen = std::collections::BTreeSet::new();
    denied.retain(|f| {
        seen.insert((
            f.src.pod.clone(),
            f.dst.pod.clone(),
            f.proto.clone(),
            f.dport,
        ))
    });
    let explanation = lab.explain("default/web", "default/db", "TCP", DB_PORT)?;
    Ok((denied, explanation))
}

fn probe_all(
    lab: &Lab,
    phase: &'static str,
    expect: impl Fn(bool) -> bool,
) -> Result<Vec<DemoRow>> {
    let timeout = Duration::from_millis(1000);
    demo_probes()
        .into_iter()
        .map(|(from, to, proto, port, after)| {
            Ok(DemoRow {
                phase,
                expected: expect(after),
                result: lab.probe(&from, &to, proto, port, timeout)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_probes_cover_the_readme() {
        let probes = demo_probes();
        assert_eq!(probes.len(), 11);
        let after = |from: &str, to: &str, port: u16| {
            probes
                .iter()
                .find(|p| p.0 == from && p.1 == to && p.3 == port)
                .map(|p| p.4)
        };
        // The user's example: only the API pod reaches the DB, on TCP 3306 alone.
        assert_eq!(after("default/api", "default/db", 3306), Some(true));
        assert_eq!(after("default/web", "default/db", 3306), Some(false));
        assert_eq!(after("default/api", "default/db", 80), Some(false));
        assert!(probes
            .iter()
            .any(|(from, to, proto, _, _)| from == "default/db"
                && to == "ext"
                && *proto == Proto::Icmp));
        assert!(DB_POLICY.contains("role: api-pod") && DB_POLICY.contains("port: 3306"));
    }

    #[test]
    fn demo_table_is_aligned() {
        let result = |from: &str, to: &str, proto, port, connected| ProbeResult {
            from: from.to_owned(),
            to: to.to_owned(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            proto,
            port,
            via_service: false,
            connected,
            rtt_us: connected.then_some(120),
            error: (!connected).then(|| "no answer within 1000 ms".to_owned()),
            reply: None,
        };
        let row = |result, expected| DemoRow {
            phase: "no policy",
            expected,
            result,
        };
        let report = DemoReport {
            rows: vec![
                row(
                    result("default/web", "default/api", Proto::Tcp, Some(80), true),
                    true,
                ),
                row(result("default/web", "ext", Proto::Icmp, None, false), true),
            ],
            ok: false,
            denied_flows: Vec::new(),
            explain_web_db: None,
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("PROTO").unwrap();
        assert_eq!(&lines[1][col..col + 3], "tcp");
        assert_eq!(&lines[2][col..col + 4], "icmp");
        assert!(lines[2].contains("no connection  <-- UNEXPECTED"));
        assert!(lines[1].ends_with("120us"));
    }
}
