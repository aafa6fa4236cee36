//! The programmer's plans, applied to a fake of the two LPM tries and the endpoint rows, must make
//! the kernel's lookups agree with the compiled rules, after every plan, between any two writes of
//! a plan, and after failures.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use common::{all_local, random_cluster, random_pod, random_policy};
use ipnet::Ipv4Net;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use weir_common::policy::{PORTSET_EMPTY, TABLE_ALLOW_ALL, TABLE_DENY_ALL, TABLE_FAIL_CLOSED};
use weir_policy::{
    compile::{compile, Compiled, Direction, DirectionRules, PortPrefix},
    manifest::parse_documents,
    model::{Cluster, PodKey, PolicyKey, Protocol},
    plan::{peer_entry, peer_key, port_entry, port_key, Plan, PlanError, Programmer},
};

/// The datapath's maps, as plain collections.
#[derive(Debug, Default, Clone, PartialEq)]
struct FakeMaps {
    peers: BTreeMap<(u32, Ipv4Net), u32>,
    ports: BTreeSet<(u32, PortPrefix)>,
    endpoints: BTreeMap<Ipv4Addr, (u32, u32)>,
}

/// One map write of a plan, in application order.
#[derive(Clone, Copy, Debug)]
enum Op {
    PortUpsert(u32, PortPrefix),
    PeerUpsert(u32, Ipv4Net, u32),
    Endpoint(Ipv4Addr, u32, u32),
    PeerDelete(u32, Ipv4Net),
    PortDelete(u32, PortPrefix),
}

fn ops(plan: &Plan) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(
        plan.portset_upserts
            .iter()
            .map(|&(s, p)| Op::PortUpsert(s, p)),
    );
    ops.extend(
        plan.peer_upserts
            .iter()
            .map(|&(t, n, s)| Op::PeerUpsert(t, n, s)),
    );
    ops.extend(
        plan.endpoint_tables
            .iter()
            .map(|&(ip, i, e)| Op::Endpoint(ip, i, e)),
    );
    ops.extend(plan.peer_deletes.iter().map(|&(t, n)| Op::PeerDelete(t, n)));
    ops.extend(
        plan.portset_deletes
            .iter()
            .map(|&(s, p)| Op::PortDelete(s, p)),
    );
    ops
}

impl FakeMaps {
    /// Applies one write; returns false for a delete of a missing key (ENOENT).
    fn apply_op(&mut self, op: Op) -> bool {
        match op {
            Op::PortUpsert(s, p) => {
                self.ports.insert((s, p));
                true
            }
            Op::PeerUpsert(t, n, s) => {
                self.peers.insert((t, n), s);
                true
            }
            Op::Endpoint(ip, i, e) => {
                self.endpoints.insert(ip, (i, e));
                true
            }
            Op::PeerDelete(t, n) => self.peers.remove(&(t, n)).is_some(),
            Op::PortDelete(s, p) => self.ports.remove(&(s, p)),
        }
    }

    /// Applies a whole plan; every delete must hit a key when `strict`.
    fn apply(&mut self, plan: &Plan, strict: bool) {
        for op in ops(plan) {
            let hit = self.apply_op(op);
            assert!(hit || !strict, "delete of a missing key: {op:?}");
        }
    }

    /// The verdict of the eBPF lookups: the endpoint's table, the longest PEERS prefix, then any
    /// PORTS entry, each as an exact-key probe per prefix length like the trie walk.
    fn simulate(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<bool> {
        let (ingress, egress) = *self.endpoints.get(&endpoint)?;
        let table = if direction == Direction::Ingress {
            ingress
        } else {
            egress
        };
        if table == TABLE_ALLOW_ALL {
            return Some(true);
        }
        let portset = (0..=32u8).rev().find_map(|len| {
            let net = Ipv4Net::new(peer, len).unwrap().trunc();
            self.peers.get(&(table, net)).copied()
        });
        let Some(portset) = portset.filter(|&p| p != PORTSET_EMPTY) else {
            return Some(false);
        };
        if self.ports.contains(&(portset, PortPrefix::ANY)) {
            return Some(true);
        }
        let Some(proto) = Protocol::from_number(proto) else {
            return Some(false);
        };
        Some((0..=16u8).any(|len| {
            let mask = if len == 0 { 0 } else { u16::MAX << (16 - len) };
            self.ports.contains(&(
                portset,
                PortPrefix {
                    proto: Some(proto),
                    port: port & mask,
                    len,
                    deny: false,
                },
            ))
        }))
    }
}

const PROBES: [(u8, u16); 7] = [
    (6, 80),
    (6, 8080),
    (6, 85),
    (17, 53),
    (17, 80),
    (132, 7),
    (1, 0),
];
/// Fewer probes between single writes, where the check runs once per write.
const TRANSIENT_PROBES: [(u8, u16); 3] = [(6, 80), (17, 53), (1, 0)];

fn peers_to_probe(compiled: &Compiled) -> Vec<Ipv4Addr> {
    let mut peers: Vec<Ipv4Addr> = (0..16).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    peers.push(Ipv4Addr::new(8, 8, 8, 8));
    peers.extend(compiled.endpoints.keys());
    peers
}

/// The maps decide exactly as the compiled rules for every endpoint, peer and probe.
fn assert_maps_enforce(maps: &FakeMaps, compiled: &Compiled, context: &str) {
    for (ip, rules) in &compiled.endpoints {
        for d in Direction::ALL {
            for peer in peers_to_probe(compiled) {
                for (proto, port) in PROBES {
                    let want = rules.get(d).allows(peer, proto, port);
                    let got = maps.simulate(*ip, d, peer, proto, port);
                    assert_eq!(
                        got,
                        Some(want),
                        "{context}: {ip} {d:?} peer {peer} {proto}/{port}"
                    );
                }
            }
        }
    }
}

/// The programmer believes exactly what the maps hold, and nothing leaks: every table is used by
/// an endpoint row, every port set by a PEERS entry, every PEERS value exists.
fn assert_consistent(maps: &FakeMaps, programmer: &Programmer, compiled: &Compiled, context: &str) {
    let believed_peers: BTreeMap<(u32, Ipv4Net), u32> = programmer
        .peer_entries()
        .map(|(t, n, s)| ((t, n), s))
        .collect();
    assert_eq!(believed_peers, maps.peers, "{context}: PEERS");
    let believed_ports: BTreeSet<(u32, PortPrefix)> = programmer.port_entries().collect();
    assert_eq!(believed_ports, maps.ports, "{context}: PORTS");
    for ip in compiled.endpoints.keys() {
        assert_eq!(
            programmer.endpoint_tables(*ip),
            maps.endpoints.get(ip).copied(),
            "{context}: row {ip}"
        );
    }
    let live_tables: BTreeSet<u32> = compiled
        .endpoints
        .keys()
        .filter_map(|ip| maps.endpoints.get(ip))
        .flat_map(|(i, e)| [*i, *e])
        .collect();
    for (table, _) in maps.peers.keys() {
        assert!(
            live_tables.contains(table),
            "{context}: table {table} leaked"
        );
    }
    let used_sets: BTreeSet<u32> = maps
        .peers
        .values()
        .copied()
        .filter(|&s| s != PORTSET_EMPTY)
        .collect();
    let programmed_sets: BTreeSet<u32> = maps.ports.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        used_sets, programmed_sets,
        "{context}: port sets used vs programmed"
    );
}

/// Applies `plan` op by op; after each op every endpoint present before and after must get either
/// its old or its new verdict.
fn apply_checking_transients(
    maps: &mut FakeMaps,
    plan: &Plan,
    old: &Compiled,
    new: &Compiled,
    strict: bool,
) {
    agent_endpoint_rows(maps, new);
    let peers = peers_to_probe(new);
    for op in ops(plan) {
        let hit = maps.apply_op(op);
        assert!(hit || !strict, "delete of a missing key: {op:?}");
        for (ip, new_rules) in &new.endpoints {
            // An endpoint new in this plan was denied everything before its row was written.
            let old_rules = old.endpoints.get(ip);
            if !maps.endpoints.contains_key(ip) {
                continue;
            }
            for d in Direction::ALL {
                for &peer in &peers {
                    for (proto, port) in TRANSIENT_PROBES {
                        let got = maps.simulate(*ip, d, peer, proto, port).unwrap();
                        let before = old_rules.is_some_and(|r| r.get(d).allows(peer, proto, port));
                        let after = new_rules.get(d).allows(peer, proto, port);
                        assert!(
                            got == before || got == after,
                            "transient after {op:?}: {ip} {d:?} {peer} {proto}/{port}"
                        );
                    }
                }
            }
        }
    }
}

/// What the agent does to endpoint rows outside plans: a pod that left the node loses its row, and
/// a new one is registered with `TABLE_DENY_ALL` until its first plan.
fn agent_endpoint_rows(maps: &mut FakeMaps, compiled: &Compiled) {
    maps.endpoints
        .retain(|ip, _| compiled.endpoints.contains_key(ip));
    for ip in compiled.endpoints.keys() {
        maps.endpoints
            .entry(*ip)
            .or_insert((TABLE_DENY_ALL, TABLE_DENY_ALL));
    }
}

/// One random change to the cluster.
fn mutate(rng: &mut StdRng, cluster: &mut Cluster, step: usize) {
    let pods: Vec<PodKey> = cluster.pods().map(|p| p.key.clone()).collect();
    let policies: Vec<PolicyKey> = cluster.policies().map(|p| p.key().clone()).collect();
    match rng.random_range(0..6) {
        0 => {
            let pod = random_pod(rng, cluster, &format!("new{step}"));
            cluster.upsert_pod(pod);
        }
        1 if !pods.is_empty() => {
            cluster.delete_pod(pods.choose(rng).unwrap());
        }
        2 if !pods.is_empty() => {
            let key = pods.choose(rng).unwrap().clone();
            let mut pod = cluster.pod(&key).unwrap().clone();
            pod.labels = random_pod(rng, cluster, "x").labels;
            cluster.upsert_pod(pod);
        }
        3 | 5 => {
            cluster
                .upsert_policy(random_policy(rng, 100 + step))
                .unwrap();
        }
        _ if !policies.is_empty() => {
            cluster.delete_policy(policies.choose(rng).unwrap());
        }
        _ => {}
    }
}

fn random_local(rng: &mut StdRng, cluster: &Cluster) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    all_local(cluster)
        .into_iter()
        .filter(|_| rng.random_bool(0.75))
        .collect()
}

#[test]
fn programmed_maps_decide_like_the_compiled_rules_across_random_plan_sequences() {
    let mut rng = StdRng::seed_from_u64(99);
    for run in 0..30 {
        let mut cluster = random_cluster(&mut rng);
        let mut programmer = Programmer::new();
        let mut maps = FakeMaps::default();
        let mut previous = Compiled::default();
        for step in 0..20 {
            let compiled = compile(&cluster, &random_local(&mut rng, &cluster));
            let plan = programmer.plan(&compiled);
            if run < 10 {
                apply_checking_transients(&mut maps, &plan, &previous, &compiled, true);
            } else {
                agent_endpoint_rows(&mut maps, &compiled);
                maps.apply(&plan, true);
            }
            programmer.commit(plan.id).unwrap();
            let context = format!("run {run} step {step}");
            assert_maps_enforce(&maps, &compiled, &context);
            assert_consistent(&maps, &programmer, &compiled, &context);
            let again = programmer.plan(&compiled);
            assert!(
                again.is_empty(),
                "{context}: replanning the same rules writes nothing: {again:?}"
            );
            programmer.commit(again.id).unwrap();
            previous = compiled;
            mutate(&mut rng, &mut cluster, step);
        }
    }
}

#[test]
fn a_failed_apply_followed_by_abort_is_repaired_by_the_next_plan() {
    let mut rng = StdRng::seed_from_u64(5);
    for run in 0..60 {
        let mut cluster = random_cluster(&mut rng);
        let mut programmer = Programmer::new();
        let mut maps = FakeMaps::default();
        for step in 0..10 {
            let compiled = compile(&cluster, &random_local(&mut rng, &cluster));
            let plan = programmer.plan(&compiled);
            let all = ops(&plan);
            if rng.random_bool(0.4) && !all.is_empty() {
                // Some writes happen, then one fails.
                agent_endpoint_rows(&mut maps, &compiled);
                let done = rng.random_range(0..all.len());
                for op in &all[..done] {
                    maps.apply_op(*op);
                }
                programmer.abort(plan.id).unwrap();
                mutate(&mut rng, &mut cluster, step);
                continue;
            }
            agent_endpoint_rows(&mut maps, &compiled);
            maps.apply(&plan, false);
            programmer.commit(plan.id).unwrap();
            let context = format!("run {run} step {step}");
            assert_maps_enforce(&maps, &compiled, &context);
            assert_consistent(&maps, &programmer, &compiled, &context);
            mutate(&mut rng, &mut cluster, step);
        }
    }
}

// ---- focused cases ----

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: prod, name: from-clients}
spec:
  podSelector: {matchLabels: {role: server}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 443}, {port: 53, protocol: UDP}]}]
"#;

fn pod(name: &str, role: &str, ip: [u8; 4]) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: prod, name: {name}, labels: {{role: {role}}}}}\n\
         spec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
        Ipv4Addr::from(ip)
    )
}

fn cluster_of(pods: &[String]) -> Cluster {
    common::cluster_from_manifests(&format!("{POLICY}{}", pods.concat()))
}

fn servers() -> Vec<String> {
    (1..=5)
        .map(|i| pod(&format!("s{i}"), "server", [10, 0, 0, i]))
        .collect()
}

fn plan_and_commit(programmer: &mut Programmer, compiled: &Compiled) -> Plan {
    let plan = programmer.plan(compiled);
    programmer.commit(plan.id).unwrap();
    plan
}

#[test]
fn endpoints_with_identical_rules_share_one_table_id() {
    let cluster = cluster_of(&[servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat());
    let compiled = compile(&cluster, &all_local(&cluster));
    let mut programmer = Programmer::new();
    let plan = plan_and_commit(&mut programmer, &compiled);
    let ingress: BTreeSet<u32> = plan
        .endpoint_tables
        .iter()
        .filter(|e| e.0.octets()[2] == 0)
        .map(|e| e.1)
        .collect();
    assert_eq!(ingress.len(), 1, "{plan:?}");
    assert_eq!(programmer.counts(), (1, 1), "one table, one port set");
    assert_eq!(plan.peer_upserts.len(), 1);
    assert_eq!(plan.portset_upserts.len(), 2, "TCP 443 and UDP 53");
}

#[test]
fn a_pod_joining_a_peer_set_costs_one_write_per_table() {
    let mut pods = [servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat();
    let mut programmer = Programmer::new();
    let cluster = cluster_of(&pods);
    let before = programmer.plan(&compile(&cluster, &all_local(&cluster)));
    programmer.commit(before.id).unwrap();
    pods.push(pod("c2", "client", [10, 0, 1, 2]));
    let cluster = cluster_of(&pods);
    let plan = plan_and_commit(&mut programmer, &compile(&cluster, &all_local(&cluster)));
    assert_eq!(plan.peer_upserts.len(), 1, "{plan:?}");
    assert_eq!(
        plan.endpoint_tables,
        vec![(Ipv4Addr::new(10, 0, 1, 2), TABLE_ALLOW_ALL, TABLE_ALLOW_ALL)],
        "only the new endpoint's row"
    );
    assert!(
        plan.portset_upserts.is_empty()
            && plan.peer_deletes.is_empty()
            && plan.portset_deletes.is_empty()
    );
}

#[test]
fn a_table_shared_by_endpoints_that_diverge_is_not_edited_in_place() {
    let mut programmer = Programmer::new();
    let cluster = cluster_of(&[servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat());
    let first = plan_and_commit(&mut programmer, &compile(&cluster, &all_local(&cluster)));
    let old_table = first.endpoint_tables[0].1;
    // s1 gets an extra policy: its content changes, the others' does not.
    let mut extra = cluster.clone();
    let policy = parse_documents(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: prod, name: s1}\n\
         spec: {podSelector: {matchLabels: {role: server}, matchExpressions: [{key: x, operator: DoesNotExist}]}, ingress: [{ports: [{port: 22}]}]}\n",
    )
    .unwrap();
    extra.apply_all(policy).unwrap();
    let mut pod_s1 = extra.pod(&PodKey::new("prod", "s1")).unwrap().clone();
    std::sync::Arc::make_mut(&mut pod_s1.labels).insert("x".into(), "1".into());
    extra.upsert_pod(pod_s1);
    let plan = plan_and_commit(&mut programmer, &compile(&extra, &all_local(&extra)));
    // s2..s5 now match the new policy too (no label x), s1 does not: s1 keeps the old content.
    assert!(
        plan.peer_upserts.iter().all(|(t, _, _)| *t != old_table),
        "old table untouched: {plan:?}"
    );
    assert!(plan.peer_deletes.is_empty(), "s1 still uses the old table");
}

#[test]
fn removing_the_last_endpoint_of_a_table_deletes_its_entries_and_port_sets() {
    let cluster = cluster_of(
        &[
            vec![pod("s1", "server", [10, 0, 0, 1])],
            vec![pod("c1", "client", [10, 0, 1, 1])],
        ]
        .concat(),
    );
    let mut programmer = Programmer::new();
    let mut maps = FakeMaps::default();
    let compiled = compile(&cluster, &all_local(&cluster));
    maps.apply(&plan_and_commit(&mut programmer, &compiled), true);
    let only_client = compile(
        &cluster,
        &[(Ipv4Addr::new(10, 0, 1, 1), Some(PodKey::new("prod", "c1")))],
    );
    let plan = plan_and_commit(&mut programmer, &only_client);
    maps.apply(&plan, true);
    assert!(maps.peers.is_empty() && maps.ports.is_empty(), "{maps:?}");
    assert_eq!(programmer.counts(), (0, 0));
    assert_eq!(plan.peer_deletes.len(), 1);
    assert_eq!(plan.portset_deletes.len(), 2);
}

#[test]
fn unisolated_is_allow_all_fail_closed_is_its_own_id_and_empty_tables_deny_all() {
    let ip = |n| Ipv4Addr::new(10, 0, 0, n);
    let compiled = Compiled {
        endpoints: [
            (
                ip(1),
                (DirectionRules::Unisolated, DirectionRules::FailClosed),
            ),
            (
                ip(2),
                (
                    DirectionRules::Rules(Default::default()),
                    DirectionRules::Unisolated,
                ),
            ),
        ]
        .into_iter()
        .map(|(ip, (ingress, egress))| {
            (ip, weir_policy::compile::EndpointRules { ingress, egress })
        })
        .collect(),
        ..Compiled::default()
    };
    let plan = Programmer::new().plan(&compiled);
    assert_eq!(
        plan.endpoint_tables,
        vec![
            (ip(1), TABLE_ALLOW_ALL, TABLE_FAIL_CLOSED),
            (ip(2), TABLE_DENY_ALL, TABLE_ALLOW_ALL)
        ]
    );
    assert!(plan.peer_upserts.is_empty() && plan.portset_upserts.is_empty());
}

#[test]
fn commit_needs_the_outstanding_plan_and_replanning_aborts_it() {
    let cluster = cluster_of(&[servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat());
    let compiled = compile(&cluster, &all_local(&cluster));
    let mut programmer = Programmer::new();
    let first = programmer.plan(&compiled);
    assert_eq!(
        programmer.commit(first.id + 1),
        Err(PlanError::NotOutstanding {
            given: first.id + 1,
            outstanding: Some(first.id)
        })
    );
    let second = programmer.plan(&compiled);
    assert_eq!(
        programmer.commit(first.id),
        Err(PlanError::NotOutstanding {
            given: first.id,
            outstanding: Some(second.id)
        })
    );
    // The first plan counts as failed: the second rewrites under fresh ids and deletes its keys.
    assert!(!second.peer_deletes.is_empty(), "{second:?}");
    let new_tables: BTreeSet<u32> = second.peer_upserts.iter().map(|e| e.0).collect();
    let old_tables: BTreeSet<u32> = first.peer_upserts.iter().map(|e| e.0).collect();
    assert!(new_tables.is_disjoint(&old_tables));
    programmer.commit(second.id).unwrap();
    assert!(programmer.plan(&compiled).is_empty());
}

#[test]
fn resume_deletes_what_the_maps_held_and_does_not_reuse_those_ids() {
    let cluster = cluster_of(&[servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat());
    let compiled = compile(&cluster, &all_local(&cluster));
    let mut before = Programmer::new();
    let mut maps = FakeMaps::default();
    maps.apply(&plan_and_commit(&mut before, &compiled), true);
    // A new agent finds the pinned maps.
    let mut programmer = Programmer::resume(maps.peers.keys().copied(), maps.ports.iter().copied());
    let plan = plan_and_commit(&mut programmer, &compiled);
    let old_ids: BTreeSet<u32> = maps.peers.keys().map(|k| k.0).collect();
    assert!(plan.peer_upserts.iter().all(|e| !old_ids.contains(&e.0)));
    assert_eq!(
        plan.endpoint_tables.len(),
        compiled.endpoints.len(),
        "every row rewritten"
    );
    maps.apply(&plan, true);
    assert_maps_enforce(&maps, &compiled, "after resume");
    assert_consistent(&maps, &programmer, &compiled, "after resume");
}

#[test]
fn forget_rewrites_everything_into_empty_maps() {
    let cluster = cluster_of(&[servers(), vec![pod("c1", "client", [10, 0, 1, 1])]].concat());
    let compiled = compile(&cluster, &all_local(&cluster));
    let mut programmer = Programmer::new();
    plan_and_commit(&mut programmer, &compiled);
    programmer.forget();
    let mut maps = FakeMaps::default();
    maps.apply(&plan_and_commit(&mut programmer, &compiled), true);
    assert_maps_enforce(&maps, &compiled, "after forget");
}

#[test]
fn trie_keys_round_trip() {
    let net: Ipv4Net = "10.1.2.0/23".parse().unwrap();
    let (len, key) = peer_key(7, net.trunc());
    assert_eq!(len, 32 + 23);
    assert_eq!(key.table, [0, 0, 0, 7]);
    assert_eq!(key.ip, [10, 1, 2, 0]);
    assert_eq!(peer_entry(len, &key), Some((7, net.trunc())));
    for prefix in [
        PortPrefix::ANY,
        PortPrefix::all_ports(Protocol::Udp),
        PortPrefix {
            proto: Some(Protocol::Tcp),
            port: 8080,
            len: 16,
            deny: false,
        },
        PortPrefix {
            proto: Some(Protocol::Sctp),
            port: 9216,
            len: 7,
            deny: false,
        },
    ] {
        let (len, key) = port_key(3, prefix);
        assert_eq!(port_entry(len, &key), Some((3, prefix)), "{prefix:?}");
    }
    let (len, key) = port_key(
        3,
        PortPrefix {
            proto: Some(Protocol::Tcp),
            port: 443,
            len: 16,
            deny: false,
        },
    );
    assert_eq!((len, key.proto, key.port), (56, 6, [1, 187]));
    assert_eq!(port_key(1, PortPrefix::ANY).0, 32);
}
