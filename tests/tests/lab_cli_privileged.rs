// SPDX-License-Identifier: Apache-2.0
//! `weir-lab` end to end, with the test-only stand-ins for `weir-agent` and `weir`
//! (`weir-lab-fake`): up, pods, probes, matrix, demo, down, and down from lost state. Needs root;
//! checks that the machine's own network namespace is untouched and nothing is left behind.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use weir_tests::names;

use crate::common::{fake_bin_dir, leftovers, root_netns_snapshot};

struct Cli {
    dir: PathBuf,
    bin_dir: PathBuf,
}

impl Cli {
    fn new(tag: &str) -> Self {
        Self {
            dir: std::env::temp_dir().join(format!("weir-lab-cli-{tag}-{}", std::process::id())),
            bin_dir: fake_bin_dir(tag),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir-lab"))
            .args(args)
            .env("WEIR_LAB_DIR", &self.dir)
            .env("WEIR_BIN_DIR", &self.bin_dir)
            .output()
            .expect("running weir-lab")
    }

    /// Run and expect exit code `code`; returns stdout parsed as JSON (Null if not JSON).
    fn expect(&self, code: i32, args: &[&str]) -> Value {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "weir-lab {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            args.join(" ")
        );
        serde_json::from_str(&stdout).unwrap_or(Value::Null)
    }

    fn id(&self) -> String {
        names::lab_id(&self.dir)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        // Whatever happened, leave nothing behind.
        let _ = self.run(&["down"]);
        let _ = std::fs::remove_dir_all(&self.bin_dir);
    }
}

fn assert_clean(cli: &Cli) {
    assert_eq!(leftovers(&cli.id()), Vec::<String>::new());
    assert!(!cli.dir.exists(), "{} still exists", cli.dir.display());
}

#[test]
fn lab_goes_up_runs_pods_and_probes_and_comes_down_clean() {
    require_root!();
    let before = root_netns_snapshot();
    let cli = Cli::new("e2e");

    let state = cli.expect(0, &["up", "--ext-pod-routes"]);
    assert_eq!(state["phase"], "up");
    assert_eq!(state["nodes"][0]["netns"], names::node_netns(&cli.id(), 1));
    let stderr = String::from_utf8_lossy(&cli.run(&["up"]).stderr).into_owned();
    assert!(stderr.contains("already up"), "{stderr}");

    let web = cli.expect(0, &["pod", "add", "default/web", "--labels", "role=web"]);
    assert_eq!(web["name"], "web");
    assert_eq!(web["namespace"], "default");
    assert_eq!(web["node"], "n1");
    let web_ip = web["ip"].as_str().unwrap().to_owned();
    assert!(web_ip.starts_with("10.244.1."), "{web}");
    assert!(web["netns"]
        .as_str()
        .unwrap()
        .starts_with(&names::lab_prefix(&cli.id())));
    cli.expect(
        0,
        &["pod", "add", "default/api", "--labels", "role=api-pod"],
    );
    cli.expect(0, &["pod", "add", "default/db", "--labels", "role=db"]);
    cli.expect(2, &["pod", "add", "default/web"]);

    // A CNI error is printed as such, and leaves nothing behind.
    let netns_before = weir_tests::netns::list_netns(&names::lab_prefix(&cli.id()));
    let error = cli.expect(2, &["pod", "add", "default/fail-add"]);
    assert_eq!(error["code"], 11, "{error}");
    assert_eq!(
        weir_tests::netns::list_netns(&names::lab_prefix(&cli.id())),
        netns_before
    );

    let out = cli.run(&["ip", "default/web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), web_ip);

    let probe = cli.expect(
        0,
        &["probe", "default/web", "default/api", "--proto", "tcp"],
    );
    assert_eq!(probe["connected"], true);
    assert_eq!(probe["reply"], "default/api");
    assert_eq!(probe["port"], 80);
    assert!(probe["rtt_us"].is_u64());
    let refused = cli.expect(
        1,
        &[
            "probe",
            "default/web",
            "default/api",
            "--proto",
            "tcp",
            "--port",
            "82",
        ],
    );
    assert_eq!(refused["connected"], false);
    assert!(refused["error"].as_str().unwrap().contains("refused"));
    for (from, to, proto, port) in [
        ("default/web", "node", "icmp", "0"),
        ("default/api", "ext", "icmp", "0"),
        ("default/web", "ext", "tcp", "81"),
        ("default/db", "ext", "udp", "80"),
        ("ext", "default/web", "tcp", "80"),
        ("node", "default/db", "udp", "81"),
        ("node", "ext", "icmp", "0"),
        ("default/api", &web_ip, "tcp", "81"),
    ] {
        let result = cli.expect(0, &["probe", from, to, "--proto", proto, "--port", port]);
        assert_eq!(
            result["connected"], true,
            "{from} -> {to} {proto}/{port}: {result}"
        );
    }
    let ext = cli.expect(0, &["probe", "default/web", "ext", "--proto", "tcp"]);
    assert_eq!(ext["reply"], "ext");
    assert_eq!(ext["ip"], "203.0.113.1");
    cli.expect(
        1,
        &[
            "probe",
            "default/web",
            "10.244.1.250",
            "--proto",
            "icmp",
            "--timeout-ms",
            "300",
        ],
    );
    cli.expect(2, &["probe", "default/nope", "node", "--proto", "icmp"]);
    cli.expect(2, &["probe", "10.244.1.2", "node", "--proto", "icmp"]);

    let out = cli.run(&["matrix", "--proto", "tcp", "--port", "80"]);
    assert_eq!(out.status.code(), Some(0));
    let matrix: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = matrix["results"].as_array().unwrap();
    // Every ordered pair, loopback pairs included and marked.
    assert_eq!(results.len(), 9);
    assert_eq!(
        results.iter().filter(|r| r["loopback"] == true).count(),
        3,
        "{matrix}"
    );
    assert!(results.iter().all(|r| r["connected"] == true), "{matrix}");
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(
        table.contains("tcp/80") && table.contains("default/web"),
        "{table}"
    );

    cli.expect(0, &["pod", "del", "default/db"]);
    cli.expect(2, &["pod", "del", "default/db"]);
    cli.expect(2, &["probe", "default/web", "default/db", "--proto", "tcp"]);
    let status = cli.expect(0, &["status"]);
    assert_eq!(status["pods"].as_array().unwrap().len(), 2);

    cli.expect(0, &["down"]);
    assert_clean(&cli);
    cli.expect(0, &["down"]);
    cli.expect(2, &["probe", "default/web", "node", "--proto", "icmp"]);
    assert_eq!(root_netns_snapshot(), before);
}

#[test]
fn demo_runs_and_cleans_up() {
    require_root!();
    let before = root_netns_snapshot();
    // The real agent and plugin (the fake enforces no policy): the README's demo as users run it.
    let cli = Cli::new("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_weir-lab"))
        .arg("demo")
        .env("WEIR_LAB_DIR", &cli.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table (a header and 22 probes), then the agents' account of the two denials.
    let (table, epilogue) = stdout.split_once("\n\n").unwrap_or((&stdout, ""));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 23, "{stdout}");
    let denied_events: Vec<&str> = epilogue
        .lines()
        .filter(|l| l.contains("DENIED") && l.contains("isolated by default/db-policy"))
        .collect();
    assert_eq!(denied_events.len(), 2, "{stdout}");
    assert!(
        epilogue.contains("TCP/3306: DENIED") && epilogue.contains("the datapath agrees"),
        "{stdout}"
    );
    assert!(!epilogue.contains("DISAGREES"), "{stdout}");
    assert!(lines[0].starts_with("PHASE"));
    assert!(lines.iter().all(|l| !l.contains("UNEXPECTED")), "{stdout}");
    // After db-policy exactly two probes are denied, both towards the DB, and nothing else.
    let denied: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("db-policy") && l.contains("no connection"))
        .collect();
    assert_eq!(denied.len(), 2, "{stdout}");
    assert!(denied.iter().all(|l| l.contains("default/db ")), "{stdout}");
    assert_clean(&cli);
    assert_eq!(root_netns_snapshot(), before);
}

#[test]
fn demo_reports_every_probe_that_disagrees_with_the_policy() {
    require_root!();
    // With the stand-ins (no NAT, no policy enforcement) ext cannot answer pods (3 probes per
    // phase) and db-policy's two denials do not happen: 8 disagreements, exit 1, still clean.
    let cli = Cli::new("demofail");
    let out = cli.run(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains("UNEXPECTED")).count(),
        8,
        "{stdout}"
    );
    assert_clean(&cli);
}

#[test]
fn down_cleans_up_even_when_the_state_file_is_lost() {
    require_root!();
    let before = root_netns_snapshot();
    let cli = Cli::new("lost");
    let state = cli.expect(0, &["up"]);
    cli.expect(0, &["pod", "add", "default/web"]);
    let status = cli.expect(0, &["status"]);
    let pids: Vec<i64> = [
        &status["nodes"][0]["agent"]["pid"],
        &status["ext"]["server"]["pid"],
        &status["pods"][0]["server"]["pid"],
    ]
    .iter()
    .map(|p| p.as_i64().unwrap())
    .collect();
    std::fs::remove_file(cli.dir.join("state.json")).unwrap();
    assert!(!leftovers(&cli.id()).is_empty());

    let report = cli.expect(0, &["down"]);
    assert!(
        report["deleted_netns"].as_array().unwrap().len() >= 3,
        "{report}"
    );
    assert_clean(&cli);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} survived down"
        );
    }
    assert!(state["nodes"][0]["bpffs_dir"].is_string());
    assert_eq!(root_netns_snapshot(), before);
}

#[test]
fn objects_services_and_sctp_through_the_cli() {
    require_root!();
    let before = root_netns_snapshot();
    let cli = Cli::new("objects");
    cli.expect(0, &["up"]);
    let a = cli.expect(0, &["pod", "add", "x/a", "--labels", "pod=a"]);
    let b = cli.expect(
        0,
        &[
            "pod",
            "add",
            "x/b",
            "--labels",
            "pod=b",
            "--serve",
            "tcp:3306,sctp:9",
        ],
    );
    assert!(
        a["cluster_ip"].as_str().unwrap().starts_with("10.96."),
        "{a}"
    );
    let ports: Vec<String> = b["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["proto"].as_str().unwrap(), p["port"]))
        .collect();
    for want in ["tcp:80", "udp:81", "sctp:80", "tcp:3306", "sctp:9"] {
        assert!(ports.contains(&want.to_owned()), "{want} not in {ports:?}");
    }
    cli.expect(2, &["pod", "add", "x/c", "--serve", "icmp:1"]);
    let out = cli.run(&["ip", "x/b", "--service"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        b["cluster_ip"].as_str().unwrap()
    );
    let manifests = cli.dir.join("manifests");
    assert!(manifests.join("namespace.x.yaml").is_file());
    assert!(manifests.join("service.x.b.yaml").is_file());

    // Probes: SCTP straight and via the Service, TCP on an extra port via the Service.
    let sctp = cli.expect(
        0,
        &["probe", "x/a", "x/b", "--proto", "sctp", "--port", "9"],
    );
    assert_eq!(sctp["reply"], "INIT-ACK");
    let via = cli.expect(
        0,
        &[
            "probe",
            "x/a",
            "x/b",
            "--proto",
            "sctp",
            "--port",
            "81",
            "--via-service",
        ],
    );
    assert_eq!(via["via_service"], true);
    assert_eq!(via["ip"], b["cluster_ip"]);
    let mysql = cli.expect(
        0,
        &[
            "probe",
            "x/a",
            "x/b",
            "--proto",
            "tcp",
            "--port",
            "3306",
            "--via-service",
        ],
    );
    assert_eq!(mysql["reply"], "x/b");
    let refused = cli.expect(
        1,
        &["probe", "x/a", "x/b", "--proto", "sctp", "--port", "82"],
    );
    assert!(
        refused["error"].as_str().unwrap().contains("ABORT"),
        "{refused}"
    );
    cli.expect(
        2,
        &["probe", "x/a", "ext", "--proto", "tcp", "--via-service"],
    );
    let out = cli.run(&["matrix", "--proto", "udp", "--port", "80", "--via-service"]);
    assert_eq!(out.status.code(), Some(0));
    let matrix: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(matrix["via_service"], true);
    assert_eq!(matrix["results"].as_array().unwrap().len(), 4);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("udp/80 via service"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // apply -f, delete, label: files change; failures are loud.
    let policy = cli.dir.with_extension("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow, namespace: x}\n\
         spec: {podSelector: {matchLabels: {pod: b}}}\n---\n\
         {\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"y\", \"labels\": {\"team\": \"red\"}}}\n",
    )
    .unwrap();
    cli.expect(0, &["apply", "-f", policy.to_str().unwrap()]);
    assert!(manifests.join("networkpolicy.x.allow.yaml").is_file());
    let ns: Value =
        serde_yaml::from_str(&std::fs::read_to_string(manifests.join("namespace.y.yaml")).unwrap())
            .unwrap();
    assert_eq!(ns["metadata"]["labels"]["team"], "red");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "y");

    let expect_loud = |args: &[&str], needle: &str| {
        let out = cli.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    std::fs::write(
        &policy,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    )
    .unwrap();
    expect_loud(&["apply", "-f", policy.to_str().unwrap()], "Secret");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: no\n  namespace: x\n  \
         annotations: {weir-lab.test/reject: not today}\nspec: {podSelector: {}}\n",
    )
    .unwrap();
    expect_loud(
        &["apply", "-f", policy.to_str().unwrap()],
        "NetworkPolicy x/no: not today",
    );
    expect_loud(&["apply", "-f", "/nonexistent.yaml"], "nonexistent");
    cli.expect(0, &["delete", "netpol", "x/no"]);
    cli.expect(0, &["delete", "networkpolicy", "x/allow"]);
    assert!(!manifests.join("networkpolicy.x.allow.yaml").exists());
    expect_loud(
        &["delete", "networkpolicy", "x/allow"],
        "NetworkPolicy x/allow",
    );

    cli.expect(0, &["label", "pod", "x/a", "role=web", "pod-"]);
    let pod: Value =
        serde_yaml::from_str(&std::fs::read_to_string(manifests.join("pod.x.a.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        pod["metadata"]["labels"],
        serde_json::json!({"role": "web"})
    );
    cli.expect(0, &["label", "ns", "x", "team=blue"]);
    let ns: Value =
        serde_yaml::from_str(&std::fs::read_to_string(manifests.join("namespace.x.yaml")).unwrap())
            .unwrap();
    assert_eq!(ns["metadata"]["labels"]["team"], "blue");
    expect_loud(&["label", "ns", "nope", "k=v"], "Namespace nope");
    expect_loud(&["label", "pod", "x/a", "k"], "k=v");
    let status = cli.expect(0, &["status"]);
    assert_eq!(
        status["pods"][0]["labels"],
        serde_json::json!({"role": "web"})
    );

    cli.expect(0, &["pod", "del", "x/b"]);
    assert!(!manifests.join("service.x.b.yaml").exists());
    std::fs::remove_file(&policy).unwrap();
    cli.expect(0, &["down"]);
    assert_clean(&cli);
    assert_eq!(root_netns_snapshot(), before);
}
