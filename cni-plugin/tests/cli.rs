// SPDX-License-Identifier: Apache-2.0
//! The `weir` binary's contract with the runtime: exit status, stdout JSON, error codes and the
//! version they are reported in. None of these invocations gets as far as netlink (they fail
//! earlier, or never need it), so they run unprivileged in the test's own namespace.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::{json, Value};

mod common;
use tempfile::TempDir;

struct Run {
    status: i32,
    stdout: String,
}

fn weir(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    // VERSION does not read stdin; a closed pipe is fine either way.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait for weir");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
    }
}

fn error(run: &Run) -> Value {
    assert_eq!(run.status, 1, "errors exit 1: {}", run.stdout);
    let v: Value = serde_json::from_str(&run.stdout).expect("an error object on stdout");
    assert!(v["msg"].is_string() && v["details"].is_string(), "{v}");
    v
}

fn conf(dir: &Path, version: &str) -> String {
    json!({
        "cniVersion": version,
        "name": "weir",
        "type": "weir",
        "podCIDR": "10.244.1.0/24",
        "agentSocket": dir.join("no-agent.sock"),
        "dataDir": dir.join("state/ipam"),
        "logFile": dir.join("log/cni.log"),
        "logLevel": "debug",
    })
    .to_string()
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/run/netns/weir-cnitest-none"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

#[test]
fn version_prints_the_supported_versions() {
    let run = weir(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(run.status, 0);
    assert_eq!(
        run.stdout,
        r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}

#[test]
fn environment_decode_version_and_config_errors_have_their_codes() {
    let dir = TempDir::new().unwrap();
    let good = conf(dir.path(), "1.0.0");

    let e = error(&weir(&[], &good));
    assert_eq!(
        (e["code"].clone(), e["cniVersion"].clone()),
        (json!(4), json!("1.0.0"))
    );

    let e = error(&weir(&ADD[..3], &good));
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{e}");

    let e = error(&weir(ADD, "{not json"));
    assert_eq!(
        (e["code"].clone(), e["cniVersion"].clone()),
        (json!(6), json!("1.1.0"))
    );

    let e = error(&weir(ADD, &conf(dir.path(), "0.2.0")));
    assert_eq!(
        (e["code"].clone(), e["cniVersion"].clone()),
        (json!(1), json!("1.1.0"))
    );

    let bad = conf(dir.path(), "0.3.1").replace("10.244.1.0/24", "10.244.1.0/40");
    let e = error(&weir(ADD, &bad));
    assert_eq!(
        (e["code"].clone(), e["cniVersion"].clone()),
        (json!(7), json!("0.3.1"))
    );
    assert!(e["msg"].as_str().unwrap().contains("podCIDR"), "{e}");

    let mut check = ADD.to_vec();
    check[0] = ("CNI_COMMAND", "CHECK");
    let e = error(&weir(&check, &conf(dir.path(), "0.3.1")));
    assert_eq!(e["code"], 1);
    let e = error(&weir(&[("CNI_COMMAND", "GC")], &conf(dir.path(), "1.0.0")));
    assert_eq!(e["code"], 1);
    let e = error(&weir(
        &[("CNI_COMMAND", "STATUS")],
        &conf(dir.path(), "0.4.0"),
    ));
    assert_eq!(
        (e["code"].clone(), e["cniVersion"].clone()),
        (json!(1), json!("0.4.0"))
    );
}

#[test]
fn add_with_an_unreachable_agent_is_try_again_later_and_creates_nothing() {
    let dir = TempDir::new().unwrap();
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let e = error(&weir(ADD, &conf(dir.path(), version)));
        assert_eq!(e["code"], 11, "{version}: {e}");
        assert_eq!(e["cniVersion"], version);
        assert!(
            e["details"].as_str().unwrap().contains("no-agent.sock"),
            "{e}"
        );
    }
    assert!(
        !dir.path().join("state").exists(),
        "no IPAM state was created"
    );
    let log = std::fs::read_to_string(dir.path().join("log/cni.log")).expect("a log file");
    assert!(log.contains("ADD failed"), "{log}");
    assert!(log.contains("c0ffee"), "the log names the container: {log}");
}

#[test]
fn status_without_an_agent_is_code_50() {
    let dir = TempDir::new().unwrap();
    let e = error(&weir(
        &[("CNI_COMMAND", "STATUS")],
        &conf(dir.path(), "1.1.0"),
    ));
    assert_eq!(e["code"], 50);
    assert_eq!(e["cniVersion"], "1.1.0");
}

#[test]
fn an_unwritable_log_file_changes_nothing() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let stdin = conf(dir.path(), "1.1.0").replace(
        &dir.path().join("log/cni.log").display().to_string(),
        &dir.path().join("file/cni.log").display().to_string(),
    );
    let e = error(&weir(&[("CNI_COMMAND", "STATUS")], &stdin));
    assert_eq!(e["code"], 50);
}
