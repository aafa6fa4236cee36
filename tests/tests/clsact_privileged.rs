// SPDX-License-Identifier: Apache-2.0
//! The agent in clsact mode (`--attach-mode clsact`, what it falls back to on kernels without tcx,
//! before 6.6), forced on this kernel: the lab comes up in the default mode, its agent is killed and
//! restarted in clsact mode (taking over the tcx links without a gap), and then everything the
//! datapath does is checked again with real packets: redirect between pods, the node and the
//! outside, anti-spoofing, a TCP stream across an agent crash, NetworkPolicy, and nothing left
//! behind by DEL and `down`.

mod common;

use std::{process::Command, time::Duration};

use serde_json::Value;
use weir_tests::{process::ProcessRef, Lab, LabOptions, Proto};

const T: Duration = Duration::from_secs(2);

/// Kill (SIGKILL, a crash) or stop `agent` and start it again in clsact mode.
fn restart_in_clsact_mode(lab: &Lab, agent: ProcessRef, kill: bool) -> ProcessRef {
    common::restart_agent(lab, 1, agent, kill, &["--attach-mode", "clsact"])
}

/// `tc filter show dev <dev> <dir>` in the node: the bpf filters, one line each.
fn filters(lab: &Lab, dev: &str, dir: &str) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.node_netns()))
        .args(["tc", "filter", "show", "dev", dev, dir])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" bpf ") && l.contains("handle"))
        .map(str::to_owned)
        .collect()
}

/// The host-side veth of pod `default/<name>` (`weir` + 11 hex, from the pod's CNI result).
fn veth_of(lab: &Lab, name: &str) -> String {
    let node = lab.node(1).unwrap();
    let records = std::fs::read_dir(node.run_dir.join("endpoints")).unwrap();
    for record in records.flatten() {
        let Ok(bytes) = std::fs::read(record.path()) else {
            continue;
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        if v["endpoint"]["pod_name"] == name {
            return v["endpoint"]["host_ifname"].as_str().unwrap().to_owned();
        }
    }
    panic!("no endpoint record for default/{name}");
}

/// Exactly one Weir filter on the veth's ingress, and none on its egress (what a pod receives
/// was redirected to it after policy).
fn assert_one_filter_in(lab: &Lab, veth: &str) {
    let ingress = filters(lab, veth, "ingress");
    let egress = filters(lab, veth, "egress");
    assert!(
        ingress.len() == 1 && ingress[0].contains("tc_from_pod"),
        "{veth} ingress: {ingress:?}"
    );
    assert!(egress.is_empty(), "{veth} egress: {egress:?}");
}

/// Pinned tcx links left (clsact mode makes none, and removes those of the earlier mode).
fn tcx_pins(lab: &Lab) -> Vec<String> {
    let node = lab.node(1).unwrap();
    let mut out = Vec::new();
    for version in std::fs::read_dir(&node.bpffs_dir).unwrap().flatten() {
        if let Ok(links) = std::fs::read_dir(version.path().join("links")) {
            out.extend(
                links
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    out
}

fn pod_netns(lab: &Lab, name: &str) -> String {
    lab.pod("default", name).unwrap().netns
}

fn assert_connected(lab: &Lab, from: &str, to: &str, proto: Proto, port: u16) {
    let r = lab.probe(from, to, proto, port, T).unwrap();
    assert!(r.connected, "{from} → {to} {proto:?}/{port}: {r:?}");
}

#[test]
fn the_datapath_works_with_clsact_filters_across_a_mode_switch_and_a_crash() {
    require_root!();
    // Sound: no other thread exists yet in this process (one test in this binary).
    std::env::set_var("WEIR_LAB_AGENT_ARGS", "--attach-mode tcx");
    let lab = Lab::up(&LabOptions::isolated("clsact")).expect("lab up");
    std::env::remove_var("WEIR_LAB_AGENT_ARGS");
    // A pod attached with tcx links, adopted by the clsact agent.
    lab.add_pod("default", "early", &[]).unwrap();
    let agent = lab.state().unwrap().node(1).unwrap().agent.unwrap();
    let agent = restart_in_clsact_mode(&lab, agent, true);
    assert_eq!(tcx_pins(&lab), Vec::<String>::new(), "tcx links left");
    let weir0 = filters(&lab, "weir0", "egress");
    assert!(
        weir0.len() == 1 && weir0[0].contains("tc_from_host"),
        "{weir0:?}"
    );
    assert_one_filter_in(&lab, &veth_of(&lab, "early"));

    // Pods added in clsact mode reach each other (eBPF redirect), their node and the outside.
    let server = lab
        .add_pod("default", "server", &[("app", "server")])
        .unwrap();
    lab.add_pod("default", "client", &[]).unwrap();
    for name in ["server", "client"] {
        assert_one_filter_in(&lab, &veth_of(&lab, name));
    }
    let redirected = common::packets(&lab, "forward_local");
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 81), (Proto::Icmp, 0)] {
        assert_connected(&lab, "default/client", "default/server", proto, port);
        assert_connected(&lab, "default/server", "default/early", proto, port);
    }
    assert!(
        common::packets(&lab, "forward_local") > redirected,
        "pod → pod went through eBPF redirect"
    );
    assert_connected(&lab, "node", "default/server", Proto::Tcp, 80);
    assert_connected(&lab, "default/client", "node", Proto::Icmp, 0);
    assert_connected(&lab, "default/client", "ext", Proto::Tcp, 80);

    // Spoofed packets are dropped and counted; honest ones delivered.
    let client_ns = pod_netns(&lab, "client");
    let server_ns = pod_netns(&lab, "server");
    let client = lab.pod("default", "client").unwrap();
    common::assert_spoofing_dropped(&lab, &client_ns, client.ip, &server_ns, server.ip);

    // A TCP stream survives an agent crash and restart, byte for byte; the restarted agent
    // replaces its filters in place (still one per direction).
    let stream = common::Stream::start(&client_ns, &server_ns, server.ip, 9000);
    let agent = restart_in_clsact_mode(&lab, agent, true);
    stream.finish();
    for name in ["early", "server", "client"] {
        assert_one_filter_in(&lab, &veth_of(&lab, name));
    }
    assert_eq!(filters(&lab, "weir0", "egress").len(), 1);
    assert_connected(&lab, "default/client", "default/server", Proto::Tcp, 80);

    // NetworkPolicy is enforced when apply returns.
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny-server, namespace: default}\n\
         spec: {podSelector: {matchLabels: {app: server}}, policyTypes: [Ingress]}\n",
    )
    .unwrap();
    let r = lab
        .probe("default/client", "default/server", Proto::Tcp, 80, T)
        .unwrap();
    assert!(!r.connected, "deny-server not enforced: {r:?}");
    assert_connected(&lab, "default/server", "default/client", Proto::Tcp, 80);
    lab.delete_policy("default", "deny-server").unwrap();
    assert_connected(&lab, "default/client", "default/server", Proto::Tcp, 80);

    // DEL leaves no filter and no marker behind.
    let veth = veth_of(&lab, "client");
    lab.del_pod("default", "client").unwrap();
    assert_eq!(filters(&lab, &veth, "ingress"), Vec::<String>::new());
    assert_eq!(filters(&lab, &veth, "egress"), Vec::<String>::new());
    let run_dir = lab.node(1).unwrap().run_dir;
    let markers: Vec<String> = std::fs::read_dir(run_dir.join("tc-filters"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !markers.iter().any(|m| m.ends_with(&veth)),
        "marker of a deleted pod: {markers:?}"
    );

    // `down` (DEL of every pod, then `weir-agent cleanup`) leaves nothing.
    assert!(agent.terminate(Duration::from_secs(5)));
    let report = lab.down().unwrap();
    assert_eq!(report.warnings, Vec::<String>::new());
    assert!(!run_dir.join("tc-filters").exists(), "markers left");
}
