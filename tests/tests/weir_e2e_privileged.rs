// SPDX-License-Identifier: Apache-2.0
//! End to end on the real kernel with the real `weir` plugin and `weir-agent`: pods are network
//! namespaces made by invoking the plugin exactly as a runtime does, and every check sends real
//! packets. Each test has a lab of its own, torn down on drop, also when the test fails.

mod common;

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use weir_tests::{
    cni::{run_cni, with_prev_result, CniEnv},
    ip_in, Lab, LabOptions, Netns, Proto,
};

const T: Duration = Duration::from_secs(2);

fn lab(tag: &str) -> Lab {
    Lab::up(&LabOptions::isolated(tag)).expect("lab up")
}

/// IPs reserved in the plugin's IPAM state (`allocations[].ip` of its state file).
fn reserved_ips(lab: &Lab) -> Vec<String> {
    let node = lab.node(1).unwrap();
    let file = node.state_dir.join("ipam/weir/allocations.json");
    let Ok(bytes) = std::fs::read(&file) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["ip"].as_str().unwrap().to_owned())
        .collect()
}

/// Endpoints programmed in the agent: pinned links of pods, and the agent's records.
fn endpoint_pins(lab: &Lab) -> Vec<String> {
    let node = lab.node(1).unwrap();
    // Pins live under v<ABI version>; there must be exactly one such directory.
    let versions: Vec<_> = std::fs::read_dir(&node.bpffs_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('v'))
        .map(|e| e.path())
        .collect();
    assert_eq!(versions.len(), 1, "pin directories: {versions:?}");
    std::fs::read_dir(versions[0].join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // The node's own attachments (weir0, the uplink or the tunnel) stay with the agent.
                .filter(|n| n.starts_with("from-pod:"))
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespace of pod `default/<name>`.
fn pod_netns(lab: &Lab, name: &str) -> String {
    let state = lab.state().unwrap();
    let pod = state
        .pods
        .iter()
        .find(|p| p.namespace == "default" && p.name == name);
    pod.unwrap_or_else(|| panic!("no pod default/{name}"))
        .netns
        .clone()
}

fn assert_clean(lab: &Lab) {
    assert_eq!(
        common::pod_veths(lab),
        Vec::<String>::new(),
        "host veths left"
    );
    assert_eq!(reserved_ips(lab), Vec::<String>::new(), "IPs left reserved");
    assert_eq!(
        endpoint_pins(lab),
        Vec::<String>::new(),
        "pinned links left"
    );
}

#[test]
fn pods_reach_each_other_their_node_and_the_outside() {
    require_root!();
    let lab = lab("e2e-conn");
    lab.add_pod("default", "web", &[]).unwrap();
    lab.add_pod("default", "api", &[]).unwrap();
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 81), (Proto::Icmp, 0)] {
        for (from, to) in [
            ("default/web", "default/api"),
            ("default/api", "default/web"),
        ] {
            let r = lab.probe(from, to, proto, port, T).unwrap();
            assert!(r.connected, "{r:?}");
        }
    }
    // Node → pod (kubelet probes) and pod → node.
    let r = lab.probe("node", "default/web", Proto::Tcp, 80, T).unwrap();
    assert!(r.connected, "{r:?}");
    let r = lab.probe("default/web", "node", Proto::Icmp, 0, T).unwrap();
    assert!(r.connected, "{r:?}");
    // The outside host has no route to pods: this works only through masquerade.
    let r = lab.probe("default/api", "ext", Proto::Tcp, 80, T).unwrap();
    assert!(r.connected, "{r:?}");
    assert!(
        common::packets(&lab, "forward_local") > 0,
        "pod → pod went through eBPF redirect"
    );
    lab.del_pod("default", "web").unwrap();
    lab.del_pod("default", "api").unwrap();
    assert_clean(&lab);
}

#[test]
fn fifty_concurrent_adds_get_distinct_ips_and_dels_leave_nothing() {
    require_root!();
    let lab = lab("e2e-fifty");
    let pods: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || lab.add_pod("load", &format!("p{i}"), &[]).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "duplicate IPs handed out");
    assert_eq!(common::pod_veths(&lab).len(), 50);
    let r = lab.probe("load/p0", "load/p49", Proto::Tcp, 80, T).unwrap();
    assert!(r.connected, "{r:?}");
    std::thread::scope(|s| {
        for i in 0..50 {
            let lab = &lab;
            s.spawn(move || lab.del_pod("load", &format!("p{i}")).unwrap());
        }
    });
    assert_clean(&lab);
}

/// ADD straight through the plugin for a netns of the test's own.
fn add_env(lab: &Lab, netns: &Netns, cid: &str) -> CniEnv {
    CniEnv::for_pod(
        "ADD",
        cid,
        &weir_tests::netns::netns_path(netns.name()),
        "t",
        cid,
    )
    .run_in(&lab.node_netns())
}

#[test]
fn a_failure_after_each_add_step_leaves_nothing_behind() {
    require_root!();
    let lab = lab("e2e-fail");
    let config = lab.plugin_config(1).unwrap();
    for step in ["ipam", "veth", "address", "route", "agent"] {
        let netns = Netns::create(format!(
            "{}-f-{step}",
            weir_tests::names::lab_prefix(lab.id())
        ))
        .unwrap();
        let mut env = add_env(&lab, &netns, &format!("fail{step}"));
        env.extra_env
            .insert("WEIR_TEST_FAIL_AFTER".into(), step.into());
        let out = run_cni(&env, &config).unwrap();
        let err = out
            .error()
            .unwrap_or_else(|| panic!("ADD with failure after {step} succeeded"));
        assert_eq!(err.code, 100, "{err:?}");
        assert_clean(&lab);
        let pod_links = ip_in(netns.name(), &["-o", "link", "show"]).unwrap();
        assert!(
            !pod_links.contains("eth0"),
            "pod interface left after {step}: {pod_links}"
        );
    }
}

#[test]
fn del_is_idempotent_and_succeeds_without_netns_or_prev_result() {
    require_root!();
    let lab = lab("e2e-del");
    let config = lab.plugin_config(1).unwrap();
    let netns = Netns::create(format!("{}-del", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    let add = run_cni(&add_env(&lab, &netns, "delme"), &config).unwrap();
    let result = add.into_result().unwrap();
    assert_eq!(common::pod_veths(&lab).len(), 1);
    drop(netns); // the runtime lost the netns (reboot, crash)

    let mut del =
        CniEnv::for_pod("DEL", "delme", Path::new(""), "t", "delme").run_in(&lab.node_netns());
    del.netns = None;
    for config in [with_prev_result(&config, &result), config.clone()] {
        let out = run_cni(&del, &config).unwrap();
        assert!(out.success(), "{out:?}");
        assert_clean(&lab);
    }
}

/// A DEL the plugin had to spool because the agent was not listening (its restart's gap, between
/// start-up's drain and the socket's bind) is applied within seconds by the running agent, so the
/// endpoint does not outlive the pod; a half-written spool file of another process is left alone.
#[test]
fn a_del_spooled_while_the_agent_is_not_listening_is_applied_by_the_running_agent() {
    require_root!();
    let lab = lab("e2e-spool");
    let node = lab.node(1).unwrap();
    let config = lab.plugin_config(1).unwrap();
    let netns = Netns::create(format!("{}-sp", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    assert!(run_cni(&add_env(&lab, &netns, "spooled"), &config)
        .unwrap()
        .success());
    // The agent's record of the endpoint (one file each, beside its map entry).
    let records = || {
        std::fs::read_dir(node.run_dir.join("endpoints"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(records(), 1);

    let spool = node.state_dir.join("del-queue");
    std::fs::create_dir_all(&spool).unwrap();
    let in_the_making = spool.join(".0123abcd.json.tmp");
    std::fs::write(&in_the_making, br#"{"container_id":"sp"#).unwrap();

    // The agent is up but not listening: its socket is away.
    let socket = node.run_dir.join("agent.sock");
    let hidden = node.run_dir.join("agent.sock.away");
    std::fs::rename(&socket, &hidden).unwrap();
    let mut del =
        CniEnv::for_pod("DEL", "spooled", Path::new(""), "t", "spooled").run_in(&lab.node_netns());
    del.netns = None;
    let out = run_cni(&del, &config).unwrap();
    std::fs::rename(&hidden, &socket).unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(common::pod_veths(&lab), Vec::<String>::new());
    assert_eq!(records(), 1, "the agent did not hear of the DEL");

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while records() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spooled DEL was not applied by the running agent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(&lab);
    assert!(
        in_the_making.exists(),
        "another process's half-written spool file was removed"
    );
    let spooled: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(spooled, [".0123abcd.json.tmp"]);
}

#[test]
fn exhausted_range_is_a_clear_error_that_changes_nothing() {
    require_root!();
    let lab = lab("e2e-full");
    let mut config = lab.plugin_config(1).unwrap();
    // A /30 inside the node's range: two usable addresses.
    config["name"] = json!("weir-small");
    config["podCIDR"] = json!("10.244.1.0/30");
    let mut netnses = Vec::new();
    for i in 0..3 {
        let netns =
            Netns::create(format!("{}-x{i}", weir_tests::names::lab_prefix(lab.id()))).unwrap();
        let out = run_cni(&add_env(&lab, &netns, &format!("full{i}")), &config).unwrap();
        if i < 2 {
            assert!(out.success(), "{out:?}");
        } else {
            let err = out.error().expect("third ADD in a /30 must fail");
            assert_eq!(err.code, 110, "{err:?}");
            assert!(err.msg.contains("exhausted"), "{err:?}");
            assert_eq!(
                common::pod_veths(&lab).len(),
                2,
                "the failed ADD left a veth"
            );
        }
        netnses.push(netns);
    }
    for i in 0..2 {
        let mut del = CniEnv::for_pod("DEL", &format!("full{i}"), Path::new(""), "t", "x")
            .run_in(&lab.node_netns());
        del.netns = None;
        assert!(run_cni(&del, &config).unwrap().success());
    }
    assert_eq!(common::pod_veths(&lab), Vec::<String>::new());
}

#[test]
fn add_is_try_again_later_and_status_is_50_while_the_agent_is_down() {
    require_root!();
    let lab = lab("e2e-down");
    let config = lab.plugin_config(1).unwrap();
    let mut status_conf = config.clone();
    status_conf["cniVersion"] = json!("1.1.0");
    let status = CniEnv::new("STATUS").run_in(&lab.node_netns());
    assert!(run_cni(&status, &status_conf).unwrap().success());

    let agent = lab.node(1).unwrap().agent.unwrap();
    assert!(agent.terminate(Duration::from_secs(5)));
    let out = run_cni(&status, &status_conf).unwrap();
    assert_eq!(out.error().map(|e| e.code), Some(50), "{out:?}");
    let netns = Netns::create(format!("{}-dn", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    let out = run_cni(&add_env(&lab, &netns, "down1"), &config).unwrap();
    assert_eq!(out.error().map(|e| e.code), Some(11), "{out:?}");
    assert_eq!(common::pod_veths(&lab), Vec::<String>::new());
    assert_eq!(reserved_ips(&lab), Vec::<String>::new());
}

#[test]
fn agent_restart_keeps_an_established_tcp_stream_and_pods_working() {
    require_root!();
    let lab = lab("e2e-restart");
    let server = lab.add_pod("default", "server", &[]).unwrap();
    let client = lab.add_pod("default", "client", &[]).unwrap();
    let server_ns = pod_netns(&lab, "server");
    let client_ns = pod_netns(&lab, "client");

    let stream = common::Stream::start(&client_ns, &server_ns, server.ip, 9000);
    let agent = lab.node(1).unwrap().agent.unwrap();
    let agent = common::restart_agent(&lab, 1, agent, true, &[]); // a crash
    common::restart_agent(&lab, 1, agent, false, &[]); // and a graceful restart
    let started = Instant::now();
    stream.finish();
    assert!(started.elapsed() < Duration::from_secs(60));
    // The adopted endpoints still work, and new pods can be added.
    let r = lab
        .probe("default/client", "default/server", Proto::Tcp, 80, T)
        .unwrap();
    assert!(r.connected, "{r:?}");
    lab.add_pod("default", "after", &[]).unwrap();
    let r = lab
        .probe("default/after", "default/client", Proto::Udp, 81, T)
        .unwrap();
    assert!(r.connected, "{r:?}");
    let _ = client;
}

#[test]
fn spoofed_packets_are_dropped_and_counted() {
    require_root!();
    let lab = lab("e2e-spoof");
    lab.add_pod("default", "mallory", &[]).unwrap();
    let victim = lab.add_pod("default", "victim", &[]).unwrap();
    let mallory_ns = pod_netns(&lab, "mallory");
    let victim_ns = pod_netns(&lab, "victim");
    let mallory = lab.pod("default", "mallory").unwrap();
    common::assert_spoofing_dropped(&lab, &mallory_ns, mallory.ip, &victim_ns, victim.ip);

    // The agent's metrics show the same drops (read from the pinned map), and its probes answer.
    let node = lab.node(1).unwrap().netns;
    let metrics = common::http_get(&node, "127.0.0.1:9962", "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let drops: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("weir_drops_total{")
                && l.contains("reason=\"drop_spoofed_ip\"")
                && l.contains("direction=\"from_pod\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drop_spoofed_ip sample in\n{metrics}"));
    assert!(drops >= 3, "{drops} spoofed packets counted in /metrics");
    assert!(metrics.contains("weir_endpoints 2\n"), "{metrics}");
    // Every map an operator may need to alert on reports its fill: the node's trusted addresses
    // (at least the node's own), the other nodes (none in a one-node lab) and their capacities.
    let sample = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} sample in\n{metrics}"))
    };
    assert!(sample("weir_map_entries{map=\"WEIR_HOST_IPS\"}") >= 1);
    assert_eq!(sample("weir_map_capacity{map=\"WEIR_HOST_IPS\"}"), 65_536);
    assert_eq!(sample("weir_map_entries{map=\"WEIR_REMOTES\"}"), 0);
    assert_eq!(sample("weir_map_capacity{map=\"WEIR_REMOTES\"}"), 16_384);
    for path in ["/healthz", "/readyz"] {
        let answer = common::http_get(&node, "127.0.0.1:9962", path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
}

#[test]
fn check_and_gc_work_against_the_real_agent_for_every_version_that_has_them() {
    require_root!();
    let lab = lab("e2e-checkgc");
    let base = lab.plugin_config(1).unwrap();
    let prefix = weir_tests::names::lab_prefix(lab.id());
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let mut config = base.clone();
        config["cniVersion"] = json!(version);
        let tag = version.replace('.', "");
        let netns = Netns::create(format!("{prefix}-c{tag}")).unwrap();
        let cid = format!("check{tag}");
        let result = run_cni(&add_env(&lab, &netns, &cid), &config)
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(result["cniVersion"], version);
        let mut check = add_env(&lab, &netns, &cid);
        check.command = "CHECK".into();
        let out = run_cni(&check, &with_prev_result(&config, &result)).unwrap();
        if version.starts_with("0.3") {
            assert_eq!(
                out.error().map(|e| e.code),
                Some(1),
                "CHECK does not exist before 0.4.0"
            );
        } else {
            assert!(out.success(), "CHECK {version}: {out:?}");
            // Break the datapath behind the plugin's back: CHECK must say what is missing.
            ip_in(netns.name(), &["link", "set", "eth0", "down"]).unwrap();
            let out = run_cni(&check, &with_prev_result(&config, &result)).unwrap();
            assert!(
                out.error().is_some(),
                "CHECK {version} passed with the pod interface down"
            );
        }
        if version == "1.1.0" {
            // GC with no valid attachments removes everything of this network on the node.
            let mut gc_conf = config.clone();
            gc_conf["cni.dev/valid-attachments"] = json!([]);
            let gc = CniEnv::new("GC").run_in(&lab.node_netns());
            let out = run_cni(&gc, &gc_conf).unwrap();
            assert!(out.success(), "GC: {out:?}");
            assert_clean(&lab);
        }
    }
}

/// Everything a plugin run could leave on a node: its links, routes, IPAM state and pins.
fn node_snapshot(lab: &Lab) -> String {
    let ns = lab.node_netns();
    format!(
        "{}\n{}\n{:?}\n{:?}",
        ip_in(&ns, &["-o", "link", "show"]).unwrap(),
        ip_in(&ns, &["route", "show", "table", "all"]).unwrap(),
        reserved_ips(lab),
        endpoint_pins(lab),
    )
}

#[test]
fn malformed_input_gets_its_error_code_and_changes_nothing_on_the_node() {
    require_root!();
    let lab = lab("e2e-corpus");
    let good = lab.plugin_config(1).unwrap();
    let netns = Netns::create(format!("{}-m", weir_tests::names::lab_prefix(lab.id()))).unwrap();
    let before = node_snapshot(&lab);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let add = add_env(&lab, &netns, "corpus");
    let mut no_cid = add.clone();
    no_cid.container_id = None;
    let mut no_ifname = add.clone();
    no_ifname.ifname = None;
    let mut missing_netns = add.clone();
    missing_netns.netns = Some("/run/netns/weir-lab-does-not-exist".into());
    let mut bad_command = add.clone();
    bad_command.command = "FROB".into();
    let cases: Vec<(&str, CniEnv, Value, u32)> = vec![
        ("stdin not JSON", add.clone(), json!("not an object"), 6),
        (
            "unknown cniVersion",
            add.clone(),
            with(&|c| c["cniVersion"] = json!("9.9.9")),
            1,
        ),
        (
            "podCIDR garbage",
            add.clone(),
            with(&|c| c["podCIDR"] = json!("10.244.1.0/99")),
            7,
        ),
        (
            "podCIDR missing",
            add.clone(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("podCIDR");
            }),
            7,
        ),
        (
            "mtu too small",
            add.clone(),
            with(&|c| c["mtu"] = json!(10)),
            7,
        ),
        (
            "name missing",
            add.clone(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            7,
        ),
        ("CNI_CONTAINERID missing", no_cid, good.clone(), 4),
        ("CNI_IFNAME missing", no_ifname, good.clone(), 4),
        ("unknown CNI_COMMAND", bad_command, good.clone(), 4),
        ("netns does not exist", missing_netns, good.clone(), 3),
    ];
    for (what, env, stdin, code) in cases {
        let out = run_cni(&env, &stdin).unwrap();
        let err = out
            .error()
            .unwrap_or_else(|| panic!("{what}: accepted: {out:?}"));
        assert_eq!(err.code, code, "{what}: {err:?}");
        assert_eq!(node_snapshot(&lab), before, "{what} changed the node");
    }
}
