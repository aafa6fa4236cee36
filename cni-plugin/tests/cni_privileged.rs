// SPDX-License-Identifier: Apache-2.0
//! The verbs against a real kernel and a fake weir-agent.
//!
//! Each test builds a lab: a throwaway "node" namespace whose dedicated thread runs the verb (it
//! plays the host), throwaway "pod" namespaces, a temp dir for IPAM state, the DEL spool and the
//! log, and a fake agent on a unix socket in that dir. The real agent is not involved. Skipped
//! (loudly) when not root.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::{has_flag, in_netns, privileged, TestNetns};
use serde_json::json;
use tempfile::TempDir;
use weir_agent_api::{AttachmentId, Endpoint, Request, Response};
use weir_cni::{
    cmd,
    config::NetConf,
    host_veth_name,
    ipam::Ipam,
    is_host_veth_name,
    result::CniResult,
    skel::{AddArgs, CheckArgs, CniArgs, DelArgs, GcArgs, Step},
    version::CniVersion,
    CniError,
};

#[derive(Default)]
struct AgentState {
    not_ready: Option<String>,
    reject_add: Option<String>,
    endpoints: BTreeMap<AttachmentId, Endpoint>,
    ops: Vec<&'static str>,
    gc_valid: Option<Vec<AttachmentId>>,
}

/// Answers the weir-agent protocol from memory.
struct FakeAgent {
    path: PathBuf,
    state: Arc<Mutex<AgentState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    fn start(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the fake agent");
        let state = Arc::new(Mutex::new(AgentState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(&stream, &state);
                    }
                }
            })
        };
        Self {
            path: path.to_path_buf(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

fn serve(stream: &UnixStream, state: &Mutex<AgentState>) {
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() || line.trim().is_empty() {
        return;
    }
    let request: Request = serde_json::from_str(&line).expect("a valid request");
    let mut s = state.lock().unwrap();
    let response = match request {
        Request::Status => {
            s.ops.push("status");
            Response::Status {
                ready: s.not_ready.is_none(),
                message: s.not_ready.clone().unwrap_or_else(|| "ready".into()),
            }
        }
        Request::Add { endpoint } => {
            s.ops.push("add");
            match (s.not_ready.clone(), s.reject_add.clone()) {
                // An agent that listens before it is ready answers ADD itself.
                (Some(message), _) => Response::Status {
                    ready: false,
                    message,
                },
                (None, Some(message)) => Response::Error { message },
                (None, None) => {
                    s.endpoints.insert(endpoint.attachment.clone(), endpoint);
                    Response::Ok
                }
            }
        }
        Request::Flows { .. } | Request::Explain { .. } => Response::Error {
            message: "the fake agent has no flows".to_owned(),
        },
        Request::Sync => {
            s.ops.push("sync");
            Response::Synced {
                generation: 0,
                rejected: Vec::new(),
            }
        }
        Request::Del { attachment } => {
            s.ops.push("del");
            s.endpoints.remove(&attachment);
            Response::Ok
        }
        Request::Get { attachment } => {
            s.ops.push("get");
            Response::Endpoint {
                endpoint: s.endpoints.get(&attachment).cloned(),
            }
        }
        Request::Gc { valid } => {
            s.ops.push("gc");
            let removed: Vec<_> = s
                .endpoints
                .keys()
                .filter(|k| !valid.contains(k))
                .cloned()
                .collect();
            for k in &removed {
                s.endpoints.remove(k);
            }
            s.gc_valid = Some(valid);
            Response::Gc { removed }
        }
    };
    drop(s);
    let mut out = serde_json::to_vec(&response).unwrap();
    out.push(b'\n');
    let _ = (&*stream).write_all(&out);
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wake up accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Fields drop in order: the agent first, while its socket file (in `dir`) still exists.
struct Lab {
    agent: Option<FakeAgent>,
    node: TestNetns,
    dir: TempDir,
}

impl Lab {
    fn new() -> Self {
        let node = TestNetns::new("node");
        let dir = TempDir::new().unwrap();
        let agent = Some(FakeAgent::start(&dir.path().join("agent.sock")));
        Self { agent, node, dir }
    }

    fn agent(&self) -> &FakeAgent {
        self.agent.as_ref().expect("agent running")
    }

    fn conf(&self, version: CniVersion) -> NetConf {
        let raw = json!({
            "cniVersion": version.as_str(),
            "name": "weir",
            "type": "weir",
            "podCIDR": "10.244.1.0/24",
            "mtu": 1450,
            "agentSocket": self.dir.path().join("agent.sock"),
            "dataDir": self.dir.path().join("state/ipam"),
            "logFile": self.dir.path().join("cni.log"),
            "dns": {"nameservers": ["10.96.0.10"]},
        });
        NetConf::from_json(raw.as_object().unwrap(), version).unwrap()
    }

    fn ipam(&self) -> Ipam {
        let conf = self.conf(CniVersion::LATEST);
        Ipam::new(&conf.data_dir, &conf.name, conf.pod_cidr, conf.gateway)
    }

    fn add(&self, conf: &NetConf, args: &AddArgs) -> Result<CniResult, CniError> {
        in_netns(&self.node, || cmd::add::run(conf, args))
    }

    fn del(&self, conf: &NetConf, args: &DelArgs) -> Result<(), CniError> {
        in_netns(&self.node, || cmd::del::run(conf, args))
    }

    fn check(&self, conf: &NetConf, args: &CheckArgs) -> Result<(), CniError> {
        in_netns(&self.node, || cmd::check::run(conf, args))
    }

    fn gc(&self, conf: &NetConf, valid: Vec<AttachmentId>) -> Result<(), CniError> {
        in_netns(&self.node, || cmd::gc::run(conf, &GcArgs { valid }))
    }

    fn host_veths(&self) -> Vec<String> {
        self.node
            .link_names()
            .into_iter()
            .filter(|n| is_host_veth_name(n))
            .collect()
    }

    /// Nothing of any attachment is left: no veth, no pod interface, no reservation, no endpoint.
    fn assert_clean(&self, pods: &[&TestNetns]) {
        assert_eq!(self.host_veths(), Vec::<String>::new(), "host veths left");
        for pod in pods {
            let links = pod.link_names();
            assert!(
                !links.iter().any(|l| l == "eth0"),
                "eth0 left in {}: {links:?}",
                pod.name
            );
        }
        assert_eq!(self.ipam().list().unwrap(), vec![], "reservations left");
        if let Some(agent) = &self.agent {
            assert!(agent.with(|s| s.endpoints.is_empty()), "endpoints left");
        }
    }
}

fn id(container: &str) -> AttachmentId {
    AttachmentId {
        container_id: container.into(),
        ifname: "eth0".into(),
    }
}

fn add_args(container: &str, pod: &TestNetns) -> AddArgs {
    AddArgs {
        attachment: id(container),
        netns: pod.path(),
        args: CniArgs {
            pod_namespace: Some("prod".into()),
            pod_name: Some(format!("pod-{container}")),
            ..CniArgs::default()
        },
        fail_after: None,
    }
}

fn del_args(container: &str, netns: Option<&TestNetns>) -> DelArgs {
    DelArgs {
        attachment: id(container),
        netns: netns.map(TestNetns::path),
        args: CniArgs::default(),
    }
}

fn check_args(container: &str, pod: &TestNetns, prev: CniResult) -> CheckArgs {
    CheckArgs {
        attachment: id(container),
        netns: pod.path(),
        args: CniArgs::default(),
        prev_result: prev,
    }
}

#[test]
fn add_check_del_in_every_version_leaves_nothing_behind() {
    if !privileged("add_check_del_in_every_version") {
        return;
    }
    let lab = Lab::new();
    for version in CniVersion::SUPPORTED {
        let conf = lab.conf(version);
        let pod = TestNetns::new("pod");
        let container = format!("c{}", version.as_str().replace('.', ""));
        let result = lab.add(&conf, &add_args(&container, &pod)).unwrap();

        // The result, in the caller's version.
        let json = result.to_json(version);
        let host_name = host_veth_name(&container, "eth0");
        assert_eq!(json["cniVersion"], version.as_str());
        assert_eq!(json["interfaces"][0]["name"], host_name.as_str());
        assert_eq!(json["interfaces"][1]["name"], "eth0");
        assert_eq!(
            json["interfaces"][1]["sandbox"],
            pod.path().to_str().unwrap()
        );
        let address = json["ips"][0]["address"].as_str().unwrap().to_owned();
        assert!(
            address.starts_with("10.244.1.") && address.ends_with("/32"),
            "{address}"
        );
        assert_eq!(json["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(json["ips"][0]["interface"], 1);
        assert_eq!(
            json["ips"][0].get("version").is_some(),
            version < CniVersion::V1_0_0
        );
        assert_eq!(
            json["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
        );
        assert_eq!(json["dns"]["nameservers"], json!(["10.96.0.10"]));

        // The kernel agrees.
        let host_link = lab.node.link(&host_name).expect("host veth");
        assert!(has_flag(&host_link, "UP"));
        assert_eq!(host_link["mtu"], 1450);
        assert_eq!(host_link["address"], json["interfaces"][0]["mac"]);
        let eth0 = pod.link("eth0").expect("pod interface");
        assert!(has_flag(&eth0, "UP"));
        assert_eq!(eth0["mtu"], 1450);
        assert_eq!(eth0["address"], json["interfaces"][1]["mac"]);
        assert!(has_flag(&pod.link("lo").unwrap(), "UP"));

        // The agent got the endpoint.
        let endpoint = lab
            .agent()
            .with(|s| s.endpoints.get(&id(&container)).cloned())
            .expect("endpoint registered");
        assert_eq!(format!("{}/32", endpoint.ip), address);
        assert_eq!(endpoint.host_ifname, host_name);
        assert_eq!(
            Some(&json!(endpoint.host_ifindex)),
            Some(&host_link["ifindex"])
        );
        assert_eq!(json!(endpoint.host_mac), host_link["address"]);
        assert_eq!(json!(endpoint.pod_mac), eth0["address"]);
        assert_eq!(endpoint.pod_namespace.as_deref(), Some("prod"));
        assert_eq!(endpoint.pod_name, Some(format!("pod-{container}")));
        assert_eq!(endpoint.netns, pod.path().display().to_string());

        // CHECK against the result as the runtime would cache it.
        if version.supports_check() {
            let prev = CniResult::from_prev_result(&json).unwrap();
            lab.check(&conf, &check_args(&container, &pod, prev))
                .unwrap();
        }

        lab.del(&conf, &del_args(&container, Some(&pod))).unwrap();
        lab.assert_clean(&[&pod]);
        // A second DEL, and one without a netns, are fine too.
        lab.del(&conf, &del_args(&container, Some(&pod))).unwrap();
        lab.del(&conf, &del_args(&container, None)).unwrap();
    }
}

#[test]
fn a_failure_after_any_step_rolls_everything_back() {
    if !privileged("a_failure_after_any_step_rolls_everything_back") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_1_0);
    for step in Step::ALL {
        let pod = TestNetns::new("pod");
        let mut args = add_args("rollback", &pod);
        args.fail_after = Some(step);
        let err = lab.add(&conf, &args).unwrap_err();
        assert_eq!(err.code(), 100, "{step}");
        assert_eq!(err.to_string(), format!("injected failure after {step}"));
        lab.assert_clean(&[&pod]);
    }
    // The address is free again: the next ADD gets an address and succeeds.
    let pod = TestNetns::new("pod");
    lab.add(&conf, &add_args("after", &pod)).unwrap();
    lab.del(&conf, &del_args("after", Some(&pod))).unwrap();
}

#[test]
fn add_without_a_ready_agent_is_try_again_later_and_creates_nothing() {
    if !privileged("add_without_a_ready_agent") {
        return;
    }
    let mut lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let pod = TestNetns::new("pod");

    lab.agent().with(|s| s.not_ready = Some("syncing".into()));
    let err = lab.add(&conf, &add_args("c1", &pod)).unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    assert!(err.to_string().contains("syncing"), "{err}");
    // The not-ready answer comes to the ADD itself (no STATUS round trip first): everything
    // made on the way is rolled back.
    lab.assert_clean(&[&pod]);
    let _ = std::fs::remove_dir_all(lab.dir.path().join("state"));

    lab.agent = None; // stop it: the socket is gone
    let err = lab.add(&conf, &add_args("c1", &pod)).unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    lab.assert_clean(&[&pod]);
    assert!(
        !lab.dir.path().join("state").exists(),
        "not even the IPAM directory is created"
    );
}

#[test]
fn add_into_a_missing_netns_is_code_3() {
    if !privileged("add_into_a_missing_netns_is_code_3") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let mut pod = TestNetns::new("pod");
    let args = add_args("c1", &pod);
    pod.delete();
    let err = lab.add(&conf, &args).unwrap_err();
    assert_eq!(err.code(), 3, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    lab.assert_clean(&[]);
}

#[test]
fn an_agent_rejecting_the_endpoint_rolls_back() {
    if !privileged("an_agent_rejecting_the_endpoint_rolls_back") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let pod = TestNetns::new("pod");
    lab.agent()
        .with(|s| s.reject_add = Some("no room in the map".into()));
    let err = lab.add(&conf, &add_args("c1", &pod)).unwrap_err();
    assert_eq!(err.code(), 100);
    assert!(err.to_string().contains("no room in the map"), "{err}");
    lab.assert_clean(&[&pod]);
    assert_eq!(
        lab.agent().with(|s| s.ops.clone()),
        ["add", "del"],
        "the rollback told the agent too"
    );
}

#[test]
fn a_second_add_for_the_same_attachment_fails_and_keeps_the_first() {
    if !privileged("a_second_add_for_the_same_attachment") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let pod = TestNetns::new("pod");
    let first = lab.add(&conf, &add_args("c1", &pod)).unwrap();
    let err = lab.add(&conf, &add_args("c1", &pod)).unwrap_err();
    assert_eq!(err.code(), 100);
    assert!(
        err.to_string().starts_with("attachment already exists"),
        "{err}"
    );
    // The first attachment is untouched.
    let prev = CniResult::from_prev_result(&first.to_json(CniVersion::V1_0_0)).unwrap();
    lab.check(&conf, &check_args("c1", &pod, prev)).unwrap();
    assert_eq!(lab.ipam().list().unwrap().len(), 1);

    // Another attachment whose interface name is taken in the pod.
    let err = lab.add(&conf, &add_args("c2", &pod)).unwrap_err();
    assert!(matches!(err, CniError::IfnameTaken { .. }), "{err:?}");
    assert_eq!(
        lab.ipam().list().unwrap().len(),
        1,
        "c2's address was given back"
    );

    lab.del(&conf, &del_args("c1", Some(&pod))).unwrap();
    lab.assert_clean(&[&pod]);
}

#[test]
fn check_names_exactly_what_is_missing() {
    if !privileged("check_names_exactly_what_is_missing") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_1_0);
    let pod = TestNetns::new("pod");
    let result = lab.add(&conf, &add_args("c1", &pod)).unwrap();
    let prev = || CniResult::from_prev_result(&result.to_json(CniVersion::V1_1_0)).unwrap();
    lab.check(&conf, &check_args("c1", &pod, prev())).unwrap();

    let host_name = host_veth_name("c1", "eth0");
    lab.node.ip(&["link", "set", "dev", &host_name, "down"]);
    pod.ip(&["route", "del", "default"]);
    lab.agent().with(|s| s.endpoints.clear());
    let err = lab
        .check(&conf, &check_args("c1", &pod, prev()))
        .unwrap_err();
    assert_eq!(err.code(), 100);
    let CniError::CheckFailed { problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        problems,
        &[
            format!("host veth {host_name} is down"),
            "route default via 169.254.1.1 dev eth0 is missing".to_owned(),
            "weir-agent does not know the endpoint c1/eth0".to_owned(),
        ]
    );

    // A MAC that differs from prevResult.
    let mut wrong = prev();
    wrong.interfaces[1].mac = Some("02:00:00:00:00:01".into());
    let err = lab
        .check(&conf, &check_args("c1", &pod, wrong))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("prevResult says 02:00:00:00:00:01"),
        "{err}"
    );

    lab.del(&conf, &del_args("c1", Some(&pod))).unwrap();
    let err = lab
        .check(&conf, &check_args("c1", &pod, prev()))
        .unwrap_err();
    let text = err.to_string();
    for missing in [
        "host veth",
        "interface eth0 is missing",
        "no IPAM reservation for c1/eth0",
    ] {
        assert!(text.contains(missing), "{missing}: {text}");
    }
}

#[test]
fn del_succeeds_after_the_netns_is_gone() {
    if !privileged("del_succeeds_after_the_netns_is_gone") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let mut pod = TestNetns::new("pod");
    lab.add(&conf, &add_args("c1", &pod)).unwrap();
    let netns_path = pod.path();
    pod.delete();
    let args = DelArgs {
        attachment: id("c1"),
        netns: Some(netns_path),
        args: CniArgs::default(),
    };
    lab.del(&conf, &args).unwrap();
    // The kernel tears a namespace down asynchronously; the veth pair goes with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.host_veths().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    lab.assert_clean(&[]);
    lab.del(&conf, &args).unwrap();
}

#[test]
fn del_spools_for_an_unreachable_agent_and_still_cleans_up() {
    if !privileged("del_spools_for_an_unreachable_agent") {
        return;
    }
    let mut lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let pod = TestNetns::new("pod");
    lab.add(&conf, &add_args("c1", &pod)).unwrap();
    lab.agent = None;
    lab.del(&conf, &del_args("c1", Some(&pod))).unwrap();
    lab.assert_clean(&[&pod]);
    let spool = lab.dir.path().join("state/del-queue").join(format!(
        "{}.json",
        weir_cni::attachment_digest("c1", "eth0")
    ));
    let spooled: AttachmentId = serde_json::from_slice(&std::fs::read(&spool).unwrap()).unwrap();
    assert_eq!(spooled, id("c1"));
}

#[test]
fn gc_removes_what_the_runtime_no_longer_lists() {
    if !privileged("gc_removes_what_the_runtime_no_longer_lists") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_1_0);
    let (pod_a, pod_b) = (TestNetns::new("pod"), TestNetns::new("pod"));
    let a = lab.add(&conf, &add_args("a", &pod_a)).unwrap();
    lab.add(&conf, &add_args("b", &pod_b)).unwrap();
    // A device with a Weir-like name that is not a veth is not ours: it stays.
    lab.node
        .ip(&["link", "add", "weirfeedfacecaf", "type", "bridge"]);

    lab.gc(&conf, vec![id("a")]).unwrap();
    let mut veths = lab.host_veths();
    veths.sort();
    let mut expected = vec![host_veth_name("a", "eth0"), "weirfeedfacecaf".to_owned()];
    expected.sort();
    assert_eq!(veths, expected);
    assert!(pod_b.link("eth0").is_none());
    let reservations: Vec<_> = lab
        .ipam()
        .list()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(reservations, [id("a")]);
    assert_eq!(
        lab.agent().with(|s| s.gc_valid.clone()),
        Some(vec![id("a")])
    );
    let prev = CniResult::from_prev_result(&a.to_json(CniVersion::V1_1_0)).unwrap();
    lab.check(&conf, &check_args("a", &pod_a, prev)).unwrap();

    // Nothing valid: everything of ours goes.
    lab.gc(&conf, vec![]).unwrap();
    assert_eq!(lab.host_veths(), ["weirfeedfacecaf"]);
    assert!(lab.ipam().list().unwrap().is_empty());
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    if !privileged("concurrent_adds_get_distinct_addresses") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf(CniVersion::V1_0_0);
    let pods: Vec<TestNetns> = (0..8).map(|_| TestNetns::new("pod")).collect();
    let addresses: HashSet<Ipv4Addr> = thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (lab, conf) = (&lab, &conf);
                s.spawn(move || lab.add(conf, &add_args(&format!("c{i}"), pod)).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join().unwrap().ips[0].address {
                ipnet::IpNet::V4(net) => net.addr(),
                ipnet::IpNet::V6(net) => panic!("{net}"),
            })
            .collect()
    });
    assert_eq!(addresses.len(), 8);
    for (i, pod) in pods.iter().enumerate() {
        lab.del(&conf, &del_args(&format!("c{i}"), Some(pod)))
            .unwrap();
    }
    lab.assert_clean(&pods.iter().collect::<Vec<_>>());
}

/// The binary end to end (with the fake agent), run inside the node namespace by `ip netns exec`.
fn weir_in(lab: &Lab, env: &[(&str, &str)], stdin: &str) -> (i32, serde_json::Value) {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.node.name, env!("CARGO_BIN_EXE_weir")])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn weir");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn the_binary_adds_checks_and_deletes_and_honours_the_fault_hook() {
    if !privileged("the_binary_adds_checks_and_deletes") {
        return;
    }
    let lab = Lab::new();
    let pod = TestNetns::new("pod");
    let netns = pod.path().display().to_string();
    let mut stdin = json!({
        "cniVersion": "1.1.0",
        "name": "weir",
        "type": "weir",
        "podCIDR": "10.244.1.0/24",
        "agentSocket": lab.dir.path().join("agent.sock"),
        "dataDir": lab.dir.path().join("state/ipam"),
        "logFile": lab.dir.path().join("log/cni.log"),
    });
    let env = |command: &'static str, container: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    };

    // The fault hook: fails with code 100 and leaves nothing.
    let mut failing = env("ADD", "c1");
    failing.push(("WEIR_TEST_FAIL_AFTER", "route"));
    let (status, err) = weir_in(&lab, &failing, &stdin.to_string());
    assert_eq!(status, 1);
    assert_eq!(err["code"], 100);
    assert_eq!(err["msg"], "injected failure after route");
    lab.assert_clean(&[&pod]);

    let (status, result) = weir_in(&lab, &env("ADD", "c1"), &stdin.to_string());
    assert_eq!(status, 0, "{result}");
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][1]["sandbox"], netns.as_str());
    assert!(
        result["interfaces"][1]["mtu"].is_u64(),
        "1.1.0 reports the MTU: {result}"
    );
    assert_eq!(
        lab.agent()
            .with(|s| s.endpoints[&id("c1")].pod_name.clone()),
        Some("web-0".to_owned())
    );

    stdin["prevResult"] = result;
    let (status, out) = weir_in(&lab, &env("CHECK", "c1"), &stdin.to_string());
    assert_eq!((status, out), (0, serde_json::Value::Null));
    let (status, out) = weir_in(&lab, &env("STATUS", "c1"), &stdin.to_string());
    assert_eq!((status, out), (0, serde_json::Value::Null));
    let (status, out) = weir_in(&lab, &env("DEL", "c1"), &stdin.to_string());
    assert_eq!((status, out), (0, serde_json::Value::Null));
    lab.assert_clean(&[&pod]);

    let log = std::fs::read_to_string(lab.dir.path().join("log/cni.log")).unwrap();
    for line in [
        "ADD failed",
        "rolled back the veth pair",
        "ADD succeeded",
        "DEL succeeded",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
}
