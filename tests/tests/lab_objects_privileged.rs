// SPDX-License-Identifier: Apache-2.0
//! The lab's Kubernetes objects, Services and SCTP, through the `Lab` API, with the stand-ins
//! for `weir-agent` and `weir` (the fake agent answers `Sync`, rejects objects annotated
//! `weir-lab.test/reject`, and enforces nothing). One test per binary on purpose: it points
//! `WEIR_BIN_DIR` at the stand-ins for the whole process before any other thread exists.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;
use weir_tests::{
    in_netns, ip_in,
    lab::{LabError, MatrixOptions, ProbeOptions, ProbeTarget},
    manifest::NAMESPACE_NAME_LABEL,
    services, Lab, LabOptions, PodSpec, Proto,
};

use crate::common::{fake_bin_dir, leftovers, root_netns_snapshot};

const T: Duration = Duration::from_secs(2);

fn read_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

fn labels_of(doc: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(doc["metadata"]["labels"].clone()).unwrap_or_default()
}

fn files(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(lab.manifest_dir().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn nat_rules(lab: &Lab) -> String {
    let netns = lab.node_netns();
    in_netns(&netns, || {
        std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .unwrap()
    })
    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    .unwrap()
}

fn assert_connects(lab: &Lab, from: &str, to: &str, opts: ProbeOptions) {
    let result = lab
        .probe_with(from, &ProbeTarget::Pod(to.to_owned()), &opts)
        .unwrap();
    assert!(result.connected, "{from} -> {to} {opts:?}: {result:?}");
}

#[test]
fn objects_services_and_sctp_work_and_vanish_with_the_lab() {
    require_root!();
    let bin_dir = fake_bin_dir("objects");
    // Sound: no other thread exists yet in this process.
    std::env::set_var("WEIR_BIN_DIR", &bin_dir);
    let before = root_netns_snapshot();
    let lab = Lab::up(&LabOptions::isolated("objects")).unwrap();
    let manifests = lab.manifest_dir().unwrap();
    assert!(manifests.starts_with(lab.dir()));
    let agent_args = std::fs::read_to_string(format!(
        "/proc/{}/cmdline",
        lab.node(1).unwrap().agent.unwrap().pid
    ))
    .unwrap()
    .replace('\0', " ");
    assert!(
        agent_args.contains(&format!("--manifest-dir {}", manifests.display()))
            && agent_args.contains("--service-cidr 10.96.0.0/12"),
        "{agent_args}"
    );

    // Pods: a Namespace (made on demand), a Pod with its status, a Service, DNAT rules.
    let a = lab
        .add_pod_with(&PodSpec::new("x", "a").label("pod", "a"))
        .unwrap();
    let b = lab
        .add_pod_with(
            &PodSpec::new("x", "b")
                .label("pod", "b")
                .serve(Proto::Udp, 53)
                .serve(Proto::Sctp, 3868),
        )
        .unwrap();
    assert_eq!(
        files(&lab),
        [
            "namespace.x.yaml",
            // Written at `up`: every agent learns every node from it.
            "node.n1.yaml",
            "pod.x.a.yaml",
            "pod.x.b.yaml",
            "service.x.a.yaml",
            "service.x.b.yaml"
        ]
    );
    let namespace = read_yaml(&manifests.join("namespace.x.yaml"));
    assert_eq!(labels_of(&namespace)[NAMESPACE_NAME_LABEL], "x");
    let pod = read_yaml(&manifests.join("pod.x.b.yaml"));
    assert_eq!(pod["metadata"]["namespace"], "x");
    assert_eq!(labels_of(&pod)["pod"], "b");
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["status"]["podIP"], b.ip.to_string());
    assert_eq!(pod["status"]["phase"], "Running");
    let names: Vec<&str> = pod["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "serve-80-tcp",
        "serve-80-udp",
        "serve-80-sctp",
        "serve-81-sctp",
        "serve-53-udp",
        "serve-3868-sctp",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let vip_a = lab.service_ip("x", "a").unwrap();
    let vip_b = lab.service_ip("x", "b").unwrap();
    assert!(services::in_service_cidr(vip_a) && vip_a != vip_b);
    assert_eq!(a.cluster_ip, Some(vip_a));
    let svc = read_yaml(&manifests.join("service.x.b.yaml"));
    assert_eq!(svc["spec"]["clusterIP"], vip_b.to_string());
    assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 8);
    let rules = nat_rules(&lab);
    assert!(
        rules.contains("-A PREROUTING -j WEIR-LAB-SERVICES")
            && rules.contains("-A OUTPUT -j WEIR-LAB-SERVICES")
            && rules.contains(&format!(
                "-d {vip_b}/32 -p sctp -m sctp --dport 3868 -m comment --comment \"x/b serve-3868-sctp\" -j DNAT --to-destination {}:3868",
                b.ip
            )),
        "{rules}"
    );

    // Every protocol, straight and through the Service, both ports; the extra ones too.
    for proto in Proto::WITH_PORTS {
        for port in [80, 81] {
            let opts = ProbeOptions::new(proto, port).timeout(T);
            assert_connects(&lab, "x/a", "x/b", opts);
            assert_connects(&lab, "x/b", "x/a", opts.via_service());
        }
    }
    assert_connects(
        &lab,
        "x/a",
        "x/b",
        ProbeOptions::new(Proto::Udp, 53).via_service(),
    );
    assert_connects(
        &lab,
        "x/a",
        "x/b",
        ProbeOptions::new(Proto::Sctp, 3868).via_service(),
    );
    let sctp = lab
        .probe_with(
            "x/a",
            &ProbeTarget::pod("x", "b"),
            &ProbeOptions::new(Proto::Sctp, 80),
        )
        .unwrap();
    assert_eq!(sctp.reply.as_deref(), Some("INIT-ACK"));
    assert!(!sctp.via_service && sctp.ip == b.ip);
    let via = lab
        .probe_with(
            "x/a",
            &ProbeTarget::pod("x", "b"),
            &ProbeOptions::new(Proto::Tcp, 81).via_service(),
        )
        .unwrap();
    assert!(via.via_service && via.ip == vip_b, "{via:?}");
    assert_eq!(via.reply.as_deref(), Some("x/b"), "the Service leads to b");
    // An SCTP port nobody serves is refused with an ABORT; through the Service it is not even
    // translated, so nothing answers.
    let refused = lab
        .probe_with(
            "x/a",
            &ProbeTarget::pod("x", "b"),
            &ProbeOptions::new(Proto::Sctp, 82),
        )
        .unwrap();
    assert!(!refused.connected);
    assert!(
        refused.error.as_deref().unwrap().contains("ABORT"),
        "{refused:?}"
    );
    let silent = lab
        .probe_with(
            "x/a",
            &ProbeTarget::pod("x", "b"),
            &ProbeOptions::new(Proto::Sctp, 82)
                .via_service()
                .timeout(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(!silent.connected, "{silent:?}");
    // A pod reaches itself through its own Service (hairpin), and the node reaches Services.
    assert_connects(
        &lab,
        "x/a",
        "x/a",
        ProbeOptions::new(Proto::Tcp, 80).via_service(),
    );
    assert_connects(
        &lab,
        "x/a",
        "x/a",
        ProbeOptions::new(Proto::Sctp, 81).via_service(),
    );
    assert_connects(
        &lab,
        "node",
        "x/b",
        ProbeOptions::new(Proto::Sctp, 80).via_service(),
    );
    let by_ip = lab
        .probe_with(
            "x/a",
            &ProbeTarget::Ip(vip_b),
            &ProbeOptions::new(Proto::Udp, 81),
        )
        .unwrap();
    assert!(by_ip.connected, "{by_ip:?}");
    assert!(lab
        .probe_with(
            "x/a",
            &ProbeTarget::Ip(b.ip),
            &ProbeOptions::new(Proto::Tcp, 80).via_service()
        )
        .is_err());

    // The matrix: every ordered pair, loopback marked, in parallel.
    let matrix = lab
        .matrix_with(&MatrixOptions::new(Proto::Sctp, 81).via_service())
        .unwrap();
    assert_eq!(matrix.results.len(), 4);
    assert_eq!(matrix.results.iter().filter(|e| e.loopback).count(), 2);
    assert!(matrix.results.iter().all(|e| e.connected), "{matrix:?}");
    assert_eq!(matrix.connected("x/b", "x/a"), Some(true));
    assert!(matrix.table().starts_with("sctp/81 via service"));
    let only = lab
        .matrix_with(&MatrixOptions::new(Proto::Icmp, 0).pods(&["x/a"]))
        .unwrap();
    assert_eq!(only.results.len(), 1);
    assert!(lab
        .matrix_with(&MatrixOptions::new(Proto::Tcp, 80).pods(&["x/nope"]))
        .is_err());

    // Labels: the manifest and the state change; k- removes.
    lab.label_pod("x", "a", &["tier=front", "pod-"]).unwrap();
    let pod = read_yaml(&manifests.join("pod.x.a.yaml"));
    assert_eq!(
        labels_of(&pod),
        BTreeMap::from([("tier".to_owned(), "front".to_owned())])
    );
    assert_eq!(pod["status"]["podIP"], a.ip.to_string(), "status survives");
    assert_eq!(lab.pod("x", "a").unwrap().labels, labels_of(&pod));
    assert!(lab.label_pod("x", "a", &["bad key=1"]).is_err());
    assert!(lab.label_pod("x", "nope", &["k=v"]).is_err());
    lab.label_namespace("x", &["team=blue"]).unwrap();
    let namespace = read_yaml(&manifests.join("namespace.x.yaml"));
    assert_eq!(labels_of(&namespace)["team"], "blue");
    assert_eq!(labels_of(&namespace)[NAMESPACE_NAME_LABEL], "x");
    assert!(lab
        .label_namespace("x", &[&format!("{NAMESPACE_NAME_LABEL}-")])
        .is_err());
    assert!(lab.label_namespace("nope", &["k=v"]).is_err());

    // Apply: policies (their namespace made on demand), labels of existing pods, new pods.
    let before_apply = files(&lab);
    lab.apply_yaml(
        r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {tier: front}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: y}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a, tier: back}}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {pod: c}}
spec:
  containers:
  - name: app
    ports: [{containerPort: 5432}, {containerPort: 53, protocol: UDP}]
",
    )
    .unwrap();
    let policy = read_yaml(&manifests.join("networkpolicy.x.allow-a.yaml"));
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["pod"], "b");
    assert!(manifests.join("networkpolicy.y.deny-all.yaml").is_file());
    let namespace_y = read_yaml(&manifests.join("namespace.y.yaml"));
    assert_eq!(labels_of(&namespace_y)[NAMESPACE_NAME_LABEL], "y");
    assert_eq!(lab.pod("x", "a").unwrap().labels["tier"], "back");
    assert_eq!(
        labels_of(&read_yaml(&manifests.join("pod.x.a.yaml")))["tier"],
        "back"
    );
    let c = lab.pod("y", "c").unwrap();
    assert_eq!(c.labels["pod"], "c");
    assert_connects(
        &lab,
        "x/a",
        "y/c",
        ProbeOptions::new(Proto::Tcp, 5432).via_service(),
    );
    assert_connects(&lab, "x/a", "y/c", ProbeOptions::new(Proto::Udp, 53));
    assert_eq!(
        files(&lab).len(),
        before_apply.len() + 5,
        "{:?}",
        files(&lab)
    );

    // Malformed input fails before anything is written.
    let written = files(&lab);
    for bad in [
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ok, namespace: z}\n---\nkind: NetworkPolicy",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: []}",
        "{not yaml",
    ] {
        let err = lab.apply_yaml(bad).unwrap_err();
        assert!(!format!("{err:#}").is_empty());
        assert_eq!(files(&lab), written, "{bad}: {err:#}");
    }
    assert!(lab.add_pod_with(&PodSpec::new("X", "e")).is_err());
    assert!(lab
        .add_pod_with(&PodSpec::new("x", "e").label("bad key", "v"))
        .is_err());
    assert_eq!(files(&lab), written);
    // An object the agent rejects fails loudly, naming it, and stays for the agent to hold.
    let err = lab
        .apply_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: bad\n  namespace: x\n  \
             annotations: {weir-lab.test/reject: no good}\nspec: {podSelector: {}}\n",
        )
        .unwrap_err();
    match err.downcast_ref::<LabError>() {
        Some(LabError::Rejected(objects)) => {
            assert_eq!(objects, &["NetworkPolicy x/bad: no good".to_owned()]);
        }
        _ => panic!("not a rejection: {err:#}"),
    }
    assert!(manifests.join("networkpolicy.x.bad.yaml").is_file());
    let rejected = lab.sync().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].object, "NetworkPolicy x/bad");
    // A rejection of something else does not fail an unrelated change.
    lab.label_pod("x", "b", &["k=v"]).unwrap();

    // Delete.
    lab.delete_policy("x", "bad").unwrap();
    lab.delete_policy("x", "allow-a").unwrap();
    assert!(!manifests.join("networkpolicy.x.allow-a.yaml").exists());
    let err = lab.delete_policy("x", "allow-a").unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(LabError::NoSuchObject(_))),
        "{err:#}"
    );
    assert!(lab.sync().unwrap().is_empty());

    // Pod del removes its objects and rules; the namespace stays.
    lab.del_pod("x", "b").unwrap();
    assert!(!manifests.join("pod.x.b.yaml").exists());
    assert!(!manifests.join("service.x.b.yaml").exists());
    assert!(manifests.join("namespace.x.yaml").exists());
    let rules = nat_rules(&lab);
    assert!(!rules.contains(&vip_b.to_string()), "{rules}");
    assert!(rules.contains(&vip_a.to_string()), "{rules}");
    // ClusterIPs are not reused.
    let d = lab.add_pod("x", "d", &[]).unwrap();
    assert!(d.cluster_ip != Some(vip_b) && d.cluster_ip != Some(vip_a));
    let routes = ip_in(&lab.node_netns(), &["route"]).unwrap();
    assert!(routes.contains("default"), "{routes}");

    let id = lab.id().to_owned();
    let dir = lab.dir().to_path_buf();
    let node_netns = lab.node_netns();
    let report = lab.down().unwrap();
    assert!(report.warnings.is_empty(), "{report:?}");
    assert!(!manifests.exists() && !dir.exists());
    assert!(!weir_tests::netns::netns_exists(&node_netns));
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert_eq!(root_netns_snapshot(), before);
    std::fs::remove_dir_all(&bin_dir).unwrap();
}
