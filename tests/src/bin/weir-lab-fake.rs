// SPDX-License-Identifier: Apache-2.0
//! Stand-ins for `weir-agent` and `weir`, so the lab's own machinery (up, pod add/del, probes,
//! matrix, demo, down) can be tested end to end without the real ones. Test-only.
//!
//! Symlink this binary as `weir-agent` and `weir` into a directory and point `WEIR_BIN_DIR` at it
//! (next to a `weir-lab` link); it acts according to the name it was invoked under:
//! - `weir-agent run ...`: writes a conflist like the real agent's, answers `Status` as ready on
//!   `<run-dir>/agent.sock`, makes `<bpffs-dir>/fake`; `weir-agent cleanup ...` undoes that.
//!   `Sync` reads `--manifest-dir` and answers `Synced`, rejecting files that do not parse as
//!   YAML and objects annotated `weir-lab.test/reject: <reason>`. It enforces nothing.
//! - `weir`: a ptp-style CNI plugin over `ip`: a veth per pod, an address from `podCIDR`, a /32
//!   route to it on the node, a default route via the link-local gateway (proxy ARP answers it).
//!   `K8S_POD_NAME=fail-add` makes ADD fail with code 11.
//!
//! It refuses to do anything outside a `weir-lab-*` network namespace.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::Ipv4Addr,
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use serde::Deserialize;
use serde_json::{json, Value};
use weir_agent_api::{Rejected, Request, Response};

/// Objects annotated with this are rejected by the fake agent, with the value as the reason.
const REJECT_ANNOTATION: &str = "weir-lab.test/reject";

const GATEWAY: &str = "169.254.1.1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = Path::new(&args[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if in_initial_netns() {
        eprintln!("weir-lab-fake: refusing to run outside a weir-lab-* network namespace");
        return ExitCode::from(3);
    }
    match invoked_as.as_str() {
        "weir-agent" => agent(&args[1..]),
        "weir" => cni(),
        other => {
            eprintln!("weir-lab-fake: invoke me as weir-agent or weir, not {other}");
            ExitCode::from(2)
        }
    }
}

/// True unless this process runs in one of the lab's named namespaces (`/run/netns/weir-lab-*`).
/// A positive check: pid 1's netns is not always readable, even by root.
fn in_initial_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()) else {
        return true;
    };
    let in_lab_netns = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("weir-lab-"))
        .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == own));
    !in_lab_netns
}

fn flag(args: &[String], name: &str) -> Option<PathBuf> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| PathBuf::from(&w[1]))
}

fn agent(args: &[String]) -> ExitCode {
    let need = |name: &str| flag(args, name).unwrap_or_else(|| panic!("missing {name}"));
    let conf_dir = need("--cni-conf-dir");
    let run_dir = need("--run-dir");
    let bpffs_dir = need("--bpffs-dir");
    let state_dir = need("--state-dir");
    let socket = run_dir.join("agent.sock");
    let conflist = conf_dir.join("10-weir.conflist");
    match args.first().map(String::as_str) {
        Some("cleanup") => {
            let _ = std::fs::remove_file(&conflist);
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_dir_all(&bpffs_dir);
            ExitCode::SUCCESS
        }
        Some("run") => {
            let log = need("--log-file");
            let pod_cidr = need("--pod-cidr");
            for dir in [&conf_dir, &run_dir, &state_dir, &bpffs_dir] {
                std::fs::create_dir_all(dir).expect("creating a directory");
            }
            // A stand-in for pinned maps, so `down` has something to remove.
            let _ = std::fs::create_dir(bpffs_dir.join("fake"));
            let _ = std::fs::remove_file(&socket);
            let listener = UnixListener::bind(&socket).expect("binding the agent socket");
            let list = json!({
                "cniVersion": "1.0.0",
                "name": "weir",
                "plugins": [{
                    "type": "weir",
                    "podCIDR": pod_cidr,
                    "gateway": GATEWAY,
                    "agentSocket": socket,
                    "dataDir": state_dir.join("ipam"),
                }],
            });
            let tmp = conf_dir.join(".10-weir.conflist.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&list).expect("json"))
                .expect("writing the conflist");
            std::fs::rename(&tmp, &conflist).expect("renaming the conflist");
            let _ = std::fs::write(&log, "fake weir-agent ready\n");
            let manifest_dir = flag(args, "--manifest-dir");
            let mut generation = 0;
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Status) => Response::Status {
                        ready: true,
                        message: "fake agent".to_owned(),
                    },
                    Ok(Request::Sync) => {
                        generation += 1;
                        Response::Synced {
                            generation,
                            rejected: manifest_dir.as_deref().map(rejected).unwrap_or_default(),
                        }
                    }
                    Ok(_) => Response::Ok,
                    Err(err) => Response::Error {
                        message: err.to_string(),
                    },
                };
                let mut out = serde_json::to_vec(&response).expect("json");
                out.push(b'\n');
                let _ = (&conn).write_all(&out);
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: weir-agent run|cleanup ...");
            ExitCode::from(2)
        }
    }
}

/// What the fake agent rejects in the manifest directory.
fn rejected(dir: &Path) -> Vec<Rejected> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object = match Value::deserialize(document) {
                Ok(object) => object,
                Err(err) => {
                    out.push(Rejected {
                        object: name.clone(),
                        reason: err.to_string(),
                    });
                    break;
                }
            };
            let Some(reason) = object["metadata"]["annotations"][REJECT_ANNOTATION].as_str() else {
                continue;
            };
            let kind = object["kind"].as_str().unwrap_or("?");
            let object_name = object["metadata"]["name"].as_str().unwrap_or("?");
            let object = match object["metadata"]["namespace"].as_str() {
                Some(ns) if kind != "Namespace" => format!("{kind} {ns}/{object_name}"),
                _ => format!("{kind} {object_name}"),
            };
            out.push(Rejected {
                object,
                reason: reason.to_owned(),
            });
        }
    }
    out
}

fn cni_error(code: u32, msg: &str) -> ExitCode {
    println!(
        "{}",
        json!({"cniVersion": "1.0.0", "code": code, "msg": msg})
    );
    ExitCode::from(1)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cni() -> ExitCode {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let command = env("CNI_COMMAND");
    if command == "VERSION" {
        println!(
            "{}",
            json!({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]})
        );
        return ExitCode::SUCCESS;
    }
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let Ok(config) = serde_json::from_str::<Value>(&input) else {
        return cni_error(6, "bad network configuration JSON");
    };
    let container_id = env("CNI_CONTAINERID");
    let host_if = format!("wl{}", &container_id.get(..8).unwrap_or("00000000"));
    let data_dir = PathBuf::from(config["dataDir"].as_str().unwrap_or("/nonexistent"));
    let record = data_dir.join(&container_id);
    match command.as_str() {
        "ADD" => {
            if env("CNI_ARGS").contains("K8S_POD_NAME=fail-add;") {
                return cni_error(11, "fake failure requested by the pod name");
            }
            match add(&config, &env("CNI_NETNS"), &host_if, &data_dir, &record) {
                Ok(result) => {
                    println!("{result}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    let _ = ip(&["link", "del", &host_if]);
                    let _ = std::fs::remove_file(&record);
                    cni_error(999, &msg)
                }
            }
        }
        "DEL" => {
            let _ = ip(&["link", "del", &host_if]);
            let _ = std::fs::remove_file(&record);
            ExitCode::SUCCESS
        }
        "CHECK" | "STATUS" | "GC" => ExitCode::SUCCESS,
        other => cni_error(4, &format!("unknown CNI_COMMAND {other:?}")),
    }
}

fn add(
    config: &Value,
    netns_path: &str,
    host_if: &str,
    data_dir: &Path,
    record: &Path,
) -> Result<Value, String> {
    let cidr = config["podCIDR"].as_str().ok_or("no podCIDR")?;
    let base: Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or("bad podCIDR")?;
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    let taken: Vec<String> = std::fs::read_dir(data_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    let [a, b, c, _] = base.octets();
    let pod_ip = (2..=254)
        .map(|d| Ipv4Addr::new(a, b, c, d))
        .find(|ip| !taken.contains(&ip.to_string()))
        .ok_or("pod CIDR exhausted")?;
    std::fs::write(record, pod_ip.to_string()).map_err(|e| e.to_string())?;
    let netns = Path::new(netns_path)
        .file_name()
        .ok_or("bad CNI_NETNS")?
        .to_string_lossy()
        .into_owned();
    let addr = format!("{pod_ip}/32");
    ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])?;
    ip(&["link", "set", host_if, "up"])?;
    // Answer the pod's ARP for the gateway, at once (proxy ARP replies are delayed up to 0.8 s by
    // default).
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"), "1"),
        (
            format!("/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay"),
            "0",
        ),
    ] {
        std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))?;
    }
    ip(&["route", "add", &addr, "dev", host_if])?;
    ip(&["-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
    ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n", &netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link",
    ])?;
    ip(&[
        "-n", &netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0",
    ])?;
    // No MACs: /sys/class/net shows the namespace sysfs was mounted in, not ours.
    Ok(json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": host_if},
            {"name": "eth0", "sandbox": netns_path},
        ],
        "ips": [{"address": addr, "gateway": GATEWAY, "interface": 1}],
    }))
}
