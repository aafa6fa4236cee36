// SPDX-License-Identifier: Apache-2.0
//! Churn with kills, on the real kernel with the real plugin and agent: random CNI ADD, DEL and
//! CHECK over 50 pod names, the plugin SIGKILLed at random points of its run, the agent SIGKILLed
//! and restarted every few hundred operations, the runtime's answer to each failure (a failed or
//! killed ADD is followed by DEL, a DEL is retried until it succeeds). Afterwards nothing may be
//! left of any pod that is gone (veth, IP reservation, endpoint map entry, agent record,
//! attachment, peer-set entry) and every pod that is there must be whole and reachable.
//!
//! `WEIR_CHURN_OPS` sets the number of operations (CI runs a few hundred; the full run is
//! `WEIR_CHURN_OPS=10000 cargo test -p weir-tests --test churn_privileged -- --nocapture`), and
//! `WEIR_CHURN_SEED` the random sequence.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use aya::maps::{lpm_trie::LpmTrie, HashMap, Map, MapData};
use serde_json::Value;
use weir_common::{
    maps::{ENDPOINTS, HOST_PORTS, POLICY_PEERS},
    EndpointInfo, EndpointKey, HostPortKey, PeerKey, PeerValue,
};
use weir_tests::{
    cni::{parse_add_result, run_cni, with_prev_result, CniEnv},
    ip_in,
    netns::{netns_path, Netns},
    Lab, LabOptions,
};

const NAMES: usize = 50;
const NAMESPACE: &str = "churn";

/// A small deterministic generator (xorshift64*): the same seed, the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A pod the runtime has (its ADD succeeded and no DEL since).
struct Live {
    netns: Netns,
    result: Value,
    ip: Ipv4Addr,
}

#[derive(Default)]
struct Tally {
    adds: u64,
    dels: u64,
    checks: u64,
    plugin_kills: u64,
    agent_kills: u64,
    failed_adds: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn churn_with_kills_leaves_nothing_behind_and_every_live_pod_whole() {
    require_root!();
    let ops = env_u64("WEIR_CHURN_OPS", 400);
    let mut rng = Rng(env_u64("WEIR_CHURN_SEED", 0x5eed_0fc0_ffee) | 1);
    let lab = Lab::up(&LabOptions::isolated("churn")).expect("lab up");
    let node = lab.node(1).unwrap();

    // Every name is a Pod of the model, and a policy makes each pod's table hold every churn
    // pod's address: a pod that is gone must leave every peer set.
    let mut objects = String::new();
    for i in 0..NAMES {
        objects.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{namespace: {NAMESPACE}, name: p{i}, labels: {{app: churn}}}}\n\
             spec: {{nodeName: {}, containers: [{{name: c, image: i}}]}}\n---\n",
            node.name
        ));
    }
    objects.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: among-themselves, namespace: {NAMESPACE}}}\n\
         spec:\n  podSelector: {{}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: churn}}}}}}]}}]\n"
    ));
    std::fs::write(lab.manifest_dir().unwrap().join("churn.yaml"), objects).unwrap();
    lab.sync().unwrap();

    let base = lab.plugin_config(1).unwrap();
    // Every pod publishes a hostPort of its own, so that its rule and map entry must come and go
    // with it too.
    let config_of = |name: usize| {
        let mut config = base.clone();
        config["runtimeConfig"] = serde_json::json!({"portMappings": [
            {"hostPort": host_port(name), "containerPort": 80, "protocol": "TCP", "hostIP": ""}
        ]});
        config
    };
    let mut agent = lab.state().unwrap().node(1).unwrap().agent.unwrap();
    let restart_every = (ops / 5).clamp(50, 400);
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut tally = Tally::default();
    let prefix = weir_tests::names::lab_prefix(lab.id());
    let env = |command: &str, name: usize, netns: Option<&Netns>| {
        let path = netns.map(|n| netns_path(n.name())).unwrap_or_default();
        let mut env = CniEnv::for_pod(
            command,
            &format!("c{name}"),
            &path,
            NAMESPACE,
            &format!("p{name}"),
        )
        .run_in(&node.netns);
        if netns.is_none() {
            env.netns = None;
        }
        env
    };
    // DEL as a runtime does it: retried until it succeeds (when the agent is away the plugin
    // spools the DEL and succeeds all the same).
    let del_until_done = |name: usize, netns: Option<&Netns>| {
        for attempt in 0.. {
            let out = run_cni(&env("DEL", name, netns), &config_of(name)).unwrap();
            if out.success() {
                return;
            }
            assert!(attempt < 20, "DEL of p{name} keeps failing: {out:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    for op in 0..ops {
        if op > 0 && op % restart_every == 0 {
            agent = common::restart_agent(&lab, 1, agent, true, &[]);
            tally.agent_kills += 1;
        }
        let name = rng.below(NAMES as u64) as usize;
        // One plugin run in five is SIGKILLed somewhere in its first 12 ms (an ADD takes ~5).
        let kill_after = (rng.below(5) == 0).then(|| Duration::from_micros(rng.below(12_000)));
        let run = |mut env: CniEnv, stdin: &Value, tally: &mut Tally| {
            if let Some(after) = kill_after {
                env.timeout = after;
            }
            let out = run_cni(&env, stdin).unwrap();
            tally.plugin_kills += u64::from(out.timed_out);
            out
        };
        let roll = rng.below(10);
        match live.remove(&name) {
            None => {
                tally.adds += 1;
                let netns = Netns::create(format!("{prefix}-ch{name}")).unwrap();
                let out = run(env("ADD", name, Some(&netns)), &config_of(name), &mut tally);
                match out.into_result() {
                    Ok(result) => {
                        let ip = parse_add_result(&result).unwrap().ip;
                        live.insert(name, Live { netns, result, ip });
                    }
                    Err(_) => {
                        tally.failed_adds += 1;
                        del_until_done(name, Some(&netns));
                    }
                }
            }
            Some(pod) if roll < 5 => {
                tally.dels += 1;
                let out = run(
                    env("DEL", name, Some(&pod.netns)),
                    &config_of(name),
                    &mut tally,
                );
                if !out.success() {
                    del_until_done(name, Some(&pod.netns));
                }
            }
            Some(pod) => {
                tally.checks += 1;
                let stdin = with_prev_result(&config_of(name), &pod.result);
                let out = run(env("CHECK", name, Some(&pod.netns)), &stdin, &mut tally);
                // Killed, or the agent is restarting (code 11): no verdict. Otherwise it must pass.
                let unavailable = out.error().is_some_and(|e| e.code == 11);
                assert!(
                    out.timed_out || unavailable || out.success(),
                    "CHECK of live p{name} failed: {out:?}"
                );
                live.insert(name, pod);
            }
        }
    }
    let _ = agent;
    // Whatever was spooled while the agent was away is applied within seconds.
    std::thread::sleep(Duration::from_secs(3));
    lab.sync().unwrap();

    let leaks = leaks(&lab, &live);
    println!(
        "churn: {ops} operations ({} ADD, {} DEL, {} CHECK), {} ADDs failed and were undone, \
         {} plugin runs killed, {} agent kills, {} pods live at the end, leaks found: {}",
        tally.adds,
        tally.dels,
        tally.checks,
        tally.failed_adds,
        tally.plugin_kills,
        tally.agent_kills,
        live.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "leaked: {leaks:#?}");
    for (name, pod) in &live {
        let ping = std::process::Command::new("ip")
            .args(["netns", "exec", &node.netns, "ping", "-c", "1", "-W", "2"])
            .arg(pod.ip.to_string())
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "live p{name} ({}) is unreachable from its node",
            pod.ip
        );
    }
    for pod in std::mem::take(&mut live).into_values() {
        let _ = pod.netns.delete();
    }
}

/// The hostPort churn pod `name` publishes.
fn host_port(name: usize) -> u16 {
    20_000 + name as u16
}

/// Everything of a pod that is gone, and everything missing of a live one: host veths, IP
/// reservations, endpoint map entries, agent records, attachments, peer-set entries, and hostPort
/// rules and map entries.
fn leaks(lab: &Lab, live: &BTreeMap<usize, Live>) -> Vec<String> {
    let node = lab.node(1).unwrap();
    let want_ips: BTreeSet<Ipv4Addr> = live.values().map(|p| p.ip).collect();
    let want_veths: BTreeSet<String> = live
        .keys()
        .map(|name| weir_agent_api::host_veth_name(&format!("c{name}"), "eth0"))
        .collect();
    let mut found = Vec::new();
    let mut compare = |what: &str, have: BTreeSet<String>, want: &BTreeSet<String>| {
        for extra in have.difference(want) {
            found.push(format!("{what}: {extra} is left over"));
        }
        for missing in want.difference(&have) {
            found.push(format!("{what}: {missing} is missing"));
        }
    };
    let as_strings = |ips: &BTreeSet<Ipv4Addr>| ips.iter().map(ToString::to_string).collect();
    let want_ip_strings: BTreeSet<String> = as_strings(&want_ips);

    let links = ip_in(&node.netns, &["-o", "link", "show"]).unwrap();
    let veths = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| weir_agent_api::is_host_veth_name(n))
        .collect();
    compare("host veth", veths, &want_veths);

    let ipam: Value = std::fs::read(node.state_dir.join("ipam/weir/allocations.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let reserved = ipam["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ip"].as_str().map(str::to_owned))
        .collect();
    compare("IP reservation", reserved, &want_ip_strings);

    let pin_dir = node
        .bpffs_dir
        .join(format!("v{}", weir_common::maps::ABI_VERSION));
    let endpoints: HashMap<_, EndpointKey, EndpointInfo> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(pin_dir.join(ENDPOINTS)).unwrap(),
    ))
    .unwrap();
    let in_map = endpoints
        .keys()
        .filter_map(Result::ok)
        .map(|k| Ipv4Addr::from(u32::from_be(k.ip_be)).to_string())
        .collect();
    compare("endpoint map entry", in_map, &want_ip_strings);

    let records = std::fs::read_dir(node.run_dir.join("endpoints"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    compare("agent record", records, &want_veths);

    let paths = weir_agent::config::Paths {
        state_dir: node.state_dir.clone(),
        run_dir: node.run_dir.clone(),
        bpffs_dir: node.bpffs_dir.clone(),
        cni_log_file: node.cni_log_file.clone(),
        attach_mode: weir_agent::kernel::datapath::AttachMode::Auto,
    };
    let attached: BTreeSet<String> =
        weir_agent::kernel::datapath::attached_interfaces(&paths.attachments())
            .unwrap()
            .into_iter()
            .filter(|i| weir_agent_api::is_host_veth_name(i))
            .collect();
    compare("attachment", attached, &want_veths);

    let peers: LpmTrie<_, PeerKey, PeerValue> = LpmTrie::try_from(Map::LpmTrie(
        MapData::from_pin(pin_dir.join(POLICY_PEERS)).unwrap(),
    ))
    .unwrap();
    let peer_ips: BTreeSet<String> = peers
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.prefix_len() == 64)
        .map(|k| Ipv4Addr::from(k.data().ip).to_string())
        .collect();
    compare("peer-set entry", peer_ips, &want_ip_strings);

    let want_rules: BTreeSet<String> = live
        .iter()
        .map(|(name, pod)| format!("{} -> {}:80", host_port(*name), pod.ip))
        .collect();
    let rules = common::output_in(
        &node.netns,
        "iptables",
        &["-t", "nat", "-S", "WEIR-HOSTPORTS"],
    );
    let dnat: BTreeSet<String> = rules
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| {
            let word_after = |flag: &str| {
                l.split_whitespace()
                    .skip_while(|w| *w != flag)
                    .nth(1)
                    .unwrap_or("?")
                    .to_owned()
            };
            format!(
                "{} -> {}",
                word_after("--dport"),
                word_after("--to-destination")
            )
        })
        .collect();
    compare("hostPort rule", dnat, &want_rules);
    let host_ports: HashMap<_, HostPortKey, u32> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(pin_dir.join(HOST_PORTS)).unwrap(),
    ))
    .unwrap();
    let published = host_ports
        .keys()
        .filter_map(Result::ok)
        .map(|k| u16::from_be_bytes(k.port).to_string())
        .collect();
    let want_ports = live.keys().map(|n| host_port(*n).to_string()).collect();
    compare("hostPort map entry", published, &want_ports);
    found
}
