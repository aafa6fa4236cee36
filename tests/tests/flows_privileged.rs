// SPDX-License-Identifier: Apache-2.0
//! Flow events, `explain` and the metrics built on them, on the real kernel: real probes in a lab
//! must show up as flow events naming the policy that denied them or the rule that allowed them;
//! a flood from one pod must not hide another pod's events, and what it costs in lost events is
//! counted; `/metrics` parses as a Prometheus scraper reads it, and no counter goes backwards
//! when an endpoint leaves.

mod common;

use std::{collections::BTreeMap, net::UdpSocket, process::Command, time::Duration};

use serde_json::Value;
use weir_agent_api::{FlowFilter, FlowRecord};
use weir_tests::{
    demo::{DB_POLICY, DB_PORT, DEMO_PODS},
    in_netns, paths, Lab, LabOptions, PodSpec, Proto,
};

const T: Duration = Duration::from_millis(800);

/// The seed's three pods, the db serving its port, and db-policy in force.
fn seed_lab(tag: &str) -> Lab {
    let lab = Lab::up(&LabOptions::isolated(tag)).expect("lab up");
    for (ns, name, role) in DEMO_PODS {
        let mut spec = PodSpec::new(ns, name).label("role", role);
        if name == "db" {
            spec = spec.serve(Proto::Tcp, DB_PORT);
        }
        lab.add_pod_with(&spec).unwrap();
    }
    lab.apply_yaml(DB_POLICY).unwrap();
    lab
}

fn flows_of(lab: &Lab, filter: &FlowFilter) -> Vec<FlowRecord> {
    lab.flows(filter, None).expect("reading flows")
}

/// The flows of one probe `src → dst:port` over TCP.
fn probe_flows<'a>(flows: &'a [FlowRecord], src: &str, dst: &str) -> Vec<&'a FlowRecord> {
    flows
        .iter()
        .filter(|f| f.src.pod == src && f.dst.pod == dst && f.proto == "TCP")
        .collect()
}

#[test]
fn a_denied_probe_names_the_isolating_policy_and_an_allowed_one_the_rule() {
    require_root!();
    let lab = seed_lab("flows-seed");
    let denied = lab
        .probe("default/web", "default/db", Proto::Tcp, DB_PORT, T)
        .unwrap();
    assert!(!denied.connected, "{denied:?}");
    let allowed = lab
        .probe("default/api", "default/db", Proto::Tcp, DB_PORT, T)
        .unwrap();
    assert!(allowed.connected, "{allowed:?}");

    let flows = flows_of(&lab, &FlowFilter::default());
    let listing = || flows.iter().map(|f| format!("  {f}\n")).collect::<String>();

    // web → db:3306: denied by db's ingress, isolated by db-policy, with the datapath's reason.
    let web_db = probe_flows(&flows, "web", "db");
    let denial = web_db
        .iter()
        .find(|f| f.verdict == "denied")
        .unwrap_or_else(|| panic!("no denied web -> db flow in\n{}", listing()));
    assert_eq!(denial.direction, "ingress");
    assert_eq!(denial.reason, "drop_policy_ingress");
    assert_eq!(denial.policies, ["default/db-policy"]);
    assert_eq!(denial.dport, DB_PORT);
    assert_eq!(denial.src.namespace, "default");
    assert_eq!(denial.dst.ip, Some(lab.pod("default", "db").unwrap().ip));
    // web's own egress was judged too (web is not isolated) and allowed.
    assert!(
        web_db.iter().any(|f| f.verdict == "allowed"
            && f.direction == "egress"
            && f.reason == "not_isolated"),
        "{}",
        listing()
    );

    // api → db:3306: allowed by db-policy's first ingress rule.
    let api_db = probe_flows(&flows, "api", "db");
    let admitted = api_db
        .iter()
        .find(|f| f.verdict == "allowed" && f.direction == "ingress")
        .unwrap_or_else(|| panic!("no allowed api -> db ingress flow in\n{}", listing()));
    assert_eq!(admitted.reason, "allowed_by_policy");
    assert_eq!(admitted.policies, ["default/db-policy"]);
    assert_eq!(admitted.rules, ["default/db-policy ingress[0]"]);
    // Established flows cost nothing: one connection, one verdict per side.
    assert_eq!(api_db.len(), 2, "{}", listing());

    // The CLI, as an operator runs it on the node: JSON lines with the documented fields.
    let node = lab.node(1).unwrap();
    let out = Command::new(paths::bin_path("weir-agent"))
        .args(["flows", "--output", "json", "--verdict", "denied", "--pod"])
        .arg("default/db")
        .arg("--run-dir")
        .arg(&node.run_dir)
        .output()
        .expect("running weir-agent flows");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert!(!lines.is_empty(), "{out:?}");
    for line in &lines {
        for field in [
            "time",
            "src",
            "dst",
            "proto",
            "sport",
            "dport",
            "direction",
            "verdict",
            "reason",
            "policies",
        ] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        for end in ["src", "dst"] {
            for field in ["ip", "namespace", "pod"] {
                assert!(line[end].get(field).is_some(), "no {end}.{field} in {line}");
            }
        }
        assert_eq!(line["verdict"], "denied");
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    // explain, without a packet: the same verdicts, and the maps agree.
    let web = lab
        .explain("default/web", "default/db", "TCP", DB_PORT)
        .unwrap();
    assert_eq!(web.verdict, "denied", "{web}");
    assert!(web.datapath_agrees, "{web}");
    let ingress = web
        .directions
        .iter()
        .find(|d| d.direction == "ingress")
        .unwrap();
    assert_eq!(ingress.reason, "no_rule_admits");
    assert_eq!(ingress.isolated_by, ["default/db-policy"]);
    let api = lab
        .explain("default/api", "default/db", "TCP", DB_PORT)
        .unwrap();
    assert_eq!(api.verdict, "allowed", "{api}");
    assert!(api.datapath_agrees, "{api}");
    let ingress = api
        .directions
        .iter()
        .find(|d| d.direction == "ingress")
        .unwrap();
    assert_eq!(ingress.rules, ["default/db-policy ingress[0]"]);
    // Another port of the same pair: db-policy names 3306 only.
    let other = lab.explain("default/api", "default/db", "TCP", 80).unwrap();
    assert_eq!(other.verdict, "denied", "{other}");
    assert!(lab
        .explain("default/nobody", "default/db", "TCP", 80)
        .is_err());
}

#[test]
fn a_flood_from_one_pod_does_not_starve_anothers_events_and_losses_are_counted() {
    require_root!();
    let lab = seed_lab("flows-flood");
    let db = lab.pod("default", "db").unwrap().ip;
    // web opens 20 000 new flows, every one denied by db-policy: far above its event budget.
    let web_ns = lab.pod("default", "web").unwrap().netns;
    in_netns(&web_ns, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for port in 1..=20_000u16 {
            let _ = socket.send_to(b"flood", (db, port));
        }
    })
    .unwrap();
    // Then api, once, to a port db-policy does not open.
    let r = lab
        .probe("default/api", "default/db", Proto::Tcp, 80, T)
        .unwrap();
    assert!(!r.connected, "{r:?}");

    let flows = flows_of(&lab, &FlowFilter::default());
    let from_web = flows.iter().filter(|f| f.src.pod == "web").count();
    assert!(
        from_web < 20_000,
        "every one of web's flows was published: no rate limit ({from_web})"
    );
    assert!(from_web > 0, "none of web's flows was published");
    assert!(
        flows.iter().any(|f| f.src.pod == "api"
            && f.dport == 80
            && f.verdict == "denied"
            && f.policies == ["default/db-policy"]),
        "api's denial is missing after web's flood"
    );
    let metrics = scrape(&lab);
    let lost = sample(
        &metrics,
        "weir_flow_events_lost_total",
        &[("cause", "rate_limited")],
    );
    assert!(lost > 0.0, "no lost events counted for the flood");
    // The verdict counts are never rate limited: all 20 000 denials, and api's, are there.
    let denied = sample(
        &metrics,
        "weir_policy_verdicts_total",
        &[
            ("namespace", "default"),
            ("pod", "db"),
            ("direction", "ingress"),
            ("verdict", "denied"),
        ],
    );
    assert!(denied >= 20_001.0, "{denied} ingress denials counted on db");
}

#[test]
fn metrics_parse_and_no_counter_goes_backwards_when_an_endpoint_leaves() {
    require_root!();
    let lab = seed_lab("flows-metrics");
    lab.add_pod("default", "leaving", &[("role", "web")])
        .unwrap();
    for from in ["default/web", "default/leaving"] {
        for (port, connected) in [(DB_PORT, false), (80, true)] {
            let to = if connected {
                "default/api"
            } else {
                "default/db"
            };
            let r = lab.probe(from, to, Proto::Tcp, port, T).unwrap();
            assert_eq!(r.connected, connected, "{r:?}");
        }
    }
    let before = scrape(&lab);
    assert!(
        sample(
            &before,
            "weir_policy_denied_flows_total",
            &[("policy", "default/db-policy")]
        ) >= 2.0
    );
    lab.del_pod("default", "leaving").unwrap();
    let after = scrape(&lab);

    // OpenMetrics declares a counter family `x` and names its samples `x_total`, which this
    // parser (of the older text format) leaves untyped: those are the counters.
    let counters = |scrape: &prometheus_parse::Scrape| -> BTreeMap<String, f64> {
        scrape
            .samples
            .iter()
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => Some((s, v)),
                prometheus_parse::Value::Untyped(v) if s.metric.ends_with("_total") => Some((s, v)),
                _ => None,
            })
            .map(|(s, v)| (format!("{}{{{}}}", s.metric, s.labels), v))
            .collect()
    };
    let (before, after) = (counters(&before), counters(&after));
    assert!(
        before.keys().any(|k| k.starts_with("weir_drops_total")),
        "{before:?}"
    );
    for (series, value) in &before {
        // A pod's own series leave with it; every other one must still be there, and not lower.
        if series.contains("pod=\"leaving\"") {
            continue;
        }
        let now = after
            .get(series)
            .unwrap_or_else(|| panic!("{series} disappeared when a pod left"));
        assert!(
            now >= value,
            "{series} went from {value} to {now} when a pod left"
        );
    }
}

/// `/metrics` of the lab's node, checked line by line as a Prometheus text scraper reads it
/// (every line a HELP, a TYPE, a sample of a declared family, or the end marker) and parsed.
fn scrape(lab: &Lab) -> prometheus_parse::Scrape {
    use prometheus_parse::LineInfo;
    let node = lab.node(1).unwrap().netns;
    let answer = common::http_get(&node, "127.0.0.1:9962", "/metrics");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut declared = Vec::new();
    for line in body.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            // A histogram's family is declared by its name, and parsed as `<name>_bucket`.
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => declared.push(metric_alias.unwrap_or(metric_name)),
            LineInfo::Sample { metric_name, .. } => assert!(
                declared.iter().any(|d| metric_name.starts_with(d.as_str())),
                "sample of an undeclared family: {line}"
            ),
            LineInfo::Ignored => assert_eq!(line, "# EOF", "not a Prometheus line: {line:?}"),
        }
    }
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("parsing /metrics")
}

/// The value of the sample of `metric` carrying `labels` (among others).
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {metric} sample with {labels:?}"))
}
