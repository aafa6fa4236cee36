// SPDX-License-Identifier: Apache-2.0
//! The README demo: three pods, a handful of probes that must all connect, a table.
//!
//! With no NetworkPolicy in the lab every probe is expected to connect: pod to pod (TCP 80), pod
//! to its node and pod to the outside host (ICMP; the node serves nothing).

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

/// The probes the demo runs: from, to, protocol, port.
pub fn demo_probes() -> Vec<(String, String, Proto, u16)> {
    let mut probes = vec![
        ("default/web", "default/api"),
        ("default/api", "default/db"),
        ("default/web", "default/db"),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.to_owned(), Proto::Tcp, 80))
    .collect::<Vec<_>>();
    for target in ["node", "ext"] {
        for (ns, name, _) in DEMO_PODS {
            probes.push((format!("{ns}/{name}"), target.to_owned(), Proto::Icmp, 0));
        }
    }
    probes
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub results: Vec<ProbeResult>,
    /// Every probe connected.
    pub ok: bool,
}

impl DemoReport {
    /// An aligned table: from, to, proto, port, result, rtt.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.from.clone(),
                    r.to.clone(),
                    r.proto.to_string(),
                    r.port.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                    if r.connected {
                        "ok".to_owned()
                    } else {
                        format!("FAIL ({})", r.error.as_deref().unwrap_or("?"))
                    },
                    r.rtt_us
                        .map_or_else(|| "-".to_owned(), |us| format!("{us}us")),
                ]
            })
            .collect();
        let header = ["FROM", "TO", "PROTO", "PORT", "RESULT", "RTT"].map(str::to_owned);
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
            lab.add_pod_with(&PodSpec::new(ns, name).label("role", role))?;
            added.push(PodRef::new(ns, name));
        }
    }
    let timeout = Duration::from_millis(1000);
    let results = demo_probes()
        .into_iter()
        .map(|(from, to, proto, port)| lab.probe(&from, &to, proto, port, timeout))
        .collect::<Result<Vec<_>>>()?;
    let ok = results.iter().all(|r| r.connected);
    Ok(DemoReport { results, ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_probes_cover_the_readme() {
        let probes = demo_probes();
        assert_eq!(probes.len(), 9);
        assert_eq!(
            probes[0],
            (
                "default/web".to_owned(),
                "default/api".to_owned(),
                Proto::Tcp,
                80
            )
        );
        assert!(probes
            .iter()
            .any(|(from, to, proto, _)| from == "default/db"
                && to == "ext"
                && *proto == Proto::Icmp));
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
        let report = DemoReport {
            results: vec![
                result("default/web", "default/api", Proto::Tcp, Some(80), true),
                result("default/web", "ext", Proto::Icmp, None, false),
            ],
            ok: false,
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("PROTO").unwrap();
        assert_eq!(&lines[1][col..col + 3], "tcp");
        assert_eq!(&lines[2][col..col + 4], "icmp");
        assert!(lines[2].contains("FAIL (no answer within 1000 ms)"));
        assert!(lines[1].ends_with("120us"));
    }
}
