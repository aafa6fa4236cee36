// SPDX-License-Identifier: Apache-2.0
//! The upstream Kubernetes NetworkPolicy e2e suite as data.
//!
//! Every connectivity `It()` of kubernetes/kubernetes `test/e2e/network/netpol/network_policy.go`
//! is one [`Case`] in [`cases::CASES`]: the policies it creates (as YAML), the label changes and
//! deletions it makes, and, for each protocol and port it probes, the truth table it expects,
//! written out by hand from the case's `Reachability` calls (`NewReachability(.., true)`, then
//! `ExpectPeer` / `ExpectAllIngress` / `ExpectAllEgress` / `Expect`, as `reachability.go` defines
//! them) over the full model of that suite: namespaces `x`, `y`, `z`, pods `a`, `b`, `c` in each,
//! labelled `pod=<name>`. Nothing here evaluates a policy; the tables are the specification.
//!
//! A table reads like upstream's `PrettyPrint`: rows are clients, columns servers, `.` means the
//! connection must succeed, `X` that it must fail, and `-` marks the pod → itself cell, which is
//! never checked (upstream `ignoreLoopback`).
//!
//! Policies that need a pod's IP (the ipBlock cases) use `$IP(ns/pod)` (its address) and
//! `$CIDR4(ns/pod)` (the /4 that contains it, upstream's `makeLargeCIDRForIP`); the runner fills
//! them in from the lab.

pub mod cases;

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

/// The nine pods of the model, in table order.
pub const PODS: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

/// What a case probes with (each pod serves 80 and 81 on all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// One thing a case does, in order.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Create a NetworkPolicy, or replace the one of the same name (upstream `UpdatePolicy`).
    Apply(&'static str),
    /// Delete NetworkPolicy `name` in namespace `ns`.
    DeletePolicy(&'static str, &'static str),
    /// Add or change labels of pod `ns/pod` (`k=v`).
    LabelPod(&'static str, &'static str, &'static [&'static str]),
    /// Add or change labels of namespace `ns` (`k=v`).
    LabelNamespace(&'static str, &'static [&'static str]),
    /// Probe every pair through the server's Service on this protocol and port; the result must
    /// be this table.
    Expect(Protocol, u16, &'static str),
}

/// One upstream `It()`.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Our short name, `<protocol>/<what>`; `WEIR_NETPOL_CASES` matches against it.
    pub name: &'static str,
    /// The upstream `ginkgo.Context` and `It()` title.
    pub upstream: &'static str,
    pub steps: &'static [Step],
}

impl Case {
    /// Labels the case sets on pods, as `(ns, pod, key)`, so they can be put back.
    pub fn pod_labels_touched(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut out = Vec::new();
        for step in self.steps {
            if let Step::LabelPod(ns, pod, labels) = step {
                for label in *labels {
                    out.push((*ns, *pod, label_key(label)));
                }
            }
        }
        out
    }

    /// Labels the case sets on namespaces, as `(ns, key)`.
    pub fn namespace_labels_touched(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for step in self.steps {
            if let Step::LabelNamespace(ns, labels) = step {
                for label in *labels {
                    out.push((*ns, label_key(label)));
                }
            }
        }
        out
    }
}

fn label_key(label: &str) -> &str {
    label.split_once('=').map_or(label, |(k, _)| k)
}

/// A parsed truth table: `cells[from][to]`, `None` on the diagonal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    cells: [[Option<bool>; 9]; 9],
}

impl Expected {
    /// Parse a table written as described in the module docs; strict about shape.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or("empty table")?
            .split_whitespace()
            .collect();
        if header != PODS {
            return Err(format!("header is {header:?}, want {PODS:?}"));
        }
        let mut cells = [[None; 9]; 9];
        let mut rows = 0;
        for (i, line) in lines.enumerate() {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let from = *PODS.get(i).ok_or("more than 9 rows")?;
            if tokens.first() != Some(&from) || tokens.len() != 10 {
                return Err(format!("row {i} should be `{from}` and 9 cells: {line:?}"));
            }
            for (j, cell) in tokens[1..].iter().enumerate() {
                cells[i][j] = match (*cell, i == j) {
                    ("-", true) => None,
                    (".", false) => Some(true),
                    ("X", false) => Some(false),
                    _ => return Err(format!("bad cell {cell:?} at {from} -> {}", PODS[j])),
                };
            }
            rows += 1;
        }
        if rows != 9 {
            return Err(format!("{rows} rows, want 9"));
        }
        Ok(Self { cells })
    }

    /// Must `from` reach `to`? `None` for a pod and itself.
    pub fn get(&self, from: usize, to: usize) -> Option<bool> {
        self.cells[from][to]
    }
}

/// Render a table in the same notation; `cell(from, to)` gives the observed value (`None`:
/// not probed, shown as `?`).
pub fn render(cell: impl Fn(usize, usize) -> Option<bool>) -> String {
    let mut out = format!("      {}\n", PODS.join(" "));
    for (i, from) in PODS.iter().enumerate() {
        out.push_str(from);
        for j in 0..PODS.len() {
            let c = match (i == j, cell(i, j)) {
                (true, _) => '-',
                (false, Some(true)) => '.',
                (false, Some(false)) => 'X',
                (false, None) => '?',
            };
            let _ = write!(out, "   {c}");
        }
        out.push('\n');
    }
    out
}

/// Fill `$IP(ns/pod)` and `$CIDR4(ns/pod)` in `yaml` from `ips`.
pub fn fill_placeholders(yaml: &str, ips: &BTreeMap<String, Ipv4Addr>) -> Result<String, String> {
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let (kind, after) = if let Some(t) = tail.strip_prefix("$IP(") {
            ("ip", t)
        } else if let Some(t) = tail.strip_prefix("$CIDR4(") {
            ("cidr4", t)
        } else {
            return Err(format!("unknown placeholder at {tail:.20?}"));
        };
        let end = after.find(')').ok_or("unterminated placeholder")?;
        let pod = &after[..end];
        let ip = *ips
            .get(pod)
            .ok_or_else(|| format!("no pod {pod} for a placeholder"))?;
        if kind == "ip" {
            let _ = write!(out, "{ip}");
        } else {
            let net = Ipv4Addr::from(u32::from(ip) & 0xf000_0000);
            let _ = write!(out, "{net}/4");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_table_parses_and_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for case in cases::CASES {
            assert!(names.insert(case.name), "duplicate case {}", case.name);
            let mut expects = 0;
            for step in case.steps {
                if let Step::Expect(_, port, table) = step {
                    assert!(matches!(port, 80 | 81), "{}: port {port}", case.name);
                    Expected::parse(table).unwrap_or_else(|e| panic!("{}: {e}", case.name));
                    expects += 1;
                }
            }
            assert!(expects > 0, "{} checks nothing", case.name);
        }
    }

    #[test]
    fn the_suite_has_every_upstream_connectivity_case() {
        let count = |prefix: &str| {
            cases::CASES
                .iter()
                .filter(|c| c.name.starts_with(prefix))
                .count()
        };
        assert_eq!(count("tcp/"), 42);
        assert_eq!(count("udp/"), 3);
        assert_eq!(count("sctp/"), 3);
    }

    #[test]
    fn placeholders_are_filled_from_pod_ips() {
        let ips = BTreeMap::from([("x/b".to_owned(), Ipv4Addr::new(10, 244, 1, 7))]);
        let got = fill_placeholders("cidr: $CIDR4(x/b)\nexcept: [$IP(x/b)/32]", &ips).unwrap();
        assert_eq!(got, "cidr: 0.0.0.0/4\nexcept: [10.244.1.7/32]");
        assert!(fill_placeholders("$IP(q/q)", &ips).is_err());
        let ips = BTreeMap::from([("x/b".to_owned(), Ipv4Addr::new(172, 16, 0, 9))]);
        assert_eq!(
            fill_placeholders("$CIDR4(x/b)", &ips).unwrap(),
            "160.0.0.0/4"
        );
    }

    #[test]
    fn render_uses_the_table_notation() {
        let table = cases::CASES[0]
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Expect(_, _, t) => Some(*t),
                _ => None,
            })
            .unwrap();
        let expected = Expected::parse(table).unwrap();
        let rendered = render(|i, j| expected.get(i, j));
        assert_eq!(Expected::parse(&rendered).unwrap(), expected);
    }

    #[test]
    fn malformed_tables_are_rejected() {
        assert!(Expected::parse("").is_err());
        let good = render(|_, _| Some(true));
        assert!(Expected::parse(&good).is_ok());
        assert!(Expected::parse(&good.replacen('-', ".", 1)).is_err());
        assert!(Expected::parse(&good.replacen(". ", "? ", 1)).is_err());
        let eight_rows: String = good.lines().take(9).collect::<Vec<_>>().join("\n");
        assert!(Expected::parse(&eight_rows).is_err());
    }
}
