//! [`PolicyMaps`]: the model goes through the pure compiler (`weir-policy`), and the resulting
//! plan is written into the datapath's policy maps.
//!
//! The compiler is incremental (it keeps its work and redoes what a change reaches);
//! [`PolicyMaps::self_check`], run periodically, compiles from nothing and compares: a difference
//! is counted, logged, reported on the Node, and repaired by starting the compiler afresh.
//!
//! Order of writes, so that no packet is judged by a half-written policy more permissively than
//! by either the old or the new one: new port sets, then new and changed table entries, then the
//! endpoints' table pointers (one atomic map update each), then the entries nothing uses any more.
//! If a write fails (a map is full), every endpoint that should be isolated is pointed at the
//! deny-all table: fail closed, logged, counted.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Instant};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tracing::{debug, error, info, warn};
use weir_agent_api::{Endpoint, Rejected};
use weir_common::{
    policy::{TABLE_ALLOW_ALL, TABLE_FAIL_CLOSED},
    PortKey,
};
use weir_policy::{
    compile::{compile_excluding, Compiled, DirectionRules, Incremental, PortPrefix},
    model::{Cluster, PodKey, PolicyKey},
    plan::{self, Plan, Programmer},
};

use super::endpoints::{EndpointError, Endpoints, Tables, TABLES_UNKNOWN};
use crate::kernel::datapath::{Datapath, DatapathError, PeerEntry, PortEntry};

/// What programming policy reports (the daemon hands in the ones `/metrics` exposes).
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    /// Times programming failed and the node failed closed.
    pub failures: Counter,
    /// Seconds from an object change to the maps that enforce it.
    pub latency: Histogram,
    /// Times the incremental compiler disagreed with a compilation from nothing.
    pub self_check_failures: Counter,
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        Self {
            failures: Counter::default(),
            latency: Histogram::new(std::iter::empty()),
            self_check_failures: Counter::default(),
        }
    }
}

/// The node's policy maps and what was last written into them.
pub struct PolicyMaps {
    compiler: Incremental,
    /// The policies the last programming left out (they did not fit the maps).
    left_out: BTreeSet<PolicyKey>,
    /// The last self-check found the incremental compiler wrong (reported on the Node).
    self_check_failed: bool,
    programmer: Programmer,
    /// Policies the compiler could not fully use (their pods are isolated).
    problems: Vec<Rejected>,
    /// Local endpoints whose Pod the model lacks (closed where their namespace isolates).
    unknown_pods: BTreeSet<PodKey>,
    /// The last programming failed: the next sync retries even if the model did not change.
    retry: bool,
    /// When the oldest object change not yet enforced happened (as the source saw it).
    pending_since: Option<Instant>,
    pub metrics: PolicyMetrics,
}

fn port_entry(portset: u32, prefix: &PortPrefix) -> PortEntry {
    PortEntry {
        portset,
        proto: prefix.kernel_proto(),
        port: prefix.port,
        prefix_len: prefix.kernel_prefix_len(),
    }
}

fn table_id(rules: &DirectionRules, programmed: u32) -> u32 {
    match rules {
        DirectionRules::Unisolated => TABLE_ALLOW_ALL,
        _ => programmed,
    }
}

impl Default for PolicyMaps {
    fn default() -> Self {
        Self::new(PolicyMetrics::default())
    }
}

impl PolicyMaps {
    pub fn new(metrics: PolicyMetrics) -> Self {
        Self {
            compiler: Incremental::default(),
            left_out: BTreeSet::new(),
            self_check_failed: false,
            programmer: Programmer::new(),
            problems: Vec::new(),
            unknown_pods: BTreeSet::new(),
            retry: false,
            pending_since: None,
            metrics,
        }
    }

    /// Take over maps an earlier agent filled: the first plan rewrites everything under fresh ids,
    /// then deletes the old entries, so the old tables keep judging until nothing points at them.
    pub fn resume<D: Datapath>(&mut self, datapath: &D) -> Result<(), DatapathError> {
        let peers: Vec<(u32, ipnet::Ipv4Net)> = datapath
            .peers()?
            .into_iter()
            .map(|p| (p.table, p.net))
            .collect();
        let ports: Vec<(u32, PortPrefix)> = datapath
            .ports()?
            .into_iter()
            .filter_map(|p| {
                plan::port_entry(p.prefix_len, &PortKey::new(p.portset, p.proto, p.port))
            })
            .collect();
        if !peers.is_empty() || !ports.is_empty() {
            info!(
                peers = peers.len(),
                ports = ports.len(),
                "adopting policy maps"
            );
        }
        self.programmer = Programmer::resume(peers, ports);
        Ok(())
    }

    /// An object changed at `at` (the oldest change not yet enforced is kept): the next
    /// successful programming observes the time it took.
    pub fn note_change(&mut self, at: Option<Instant>) {
        if self.pending_since.is_none() {
            self.pending_since = at;
        }
    }

    /// Entries the programmer keeps in the peer and port maps.
    pub fn programmed_entries(&self) -> (usize, usize) {
        self.programmer.entry_counts()
    }

    /// The last attempt to program failed and must be retried.
    pub fn needs_retry(&self) -> bool {
        self.retry
    }

    /// The compiler's state after the last programming (for `explain` and naming flows).
    pub fn compiler(&self) -> &Incremental {
        &self.compiler
    }

    /// Policies that could not be programmed whole (the pods they select are isolated).
    pub fn problems(&self) -> &[Rejected] {
        &self.problems
    }

    /// Compile for this node's endpoints (plus `new`, about to be added) and program the maps.
    /// `new` is added to `endpoints` in the middle, once everything it is judged by exists.
    /// Returns whether any verdict may have changed (the caller then bumps the policy epoch).
    pub fn program<D: Datapath>(
        &mut self,
        cluster: &Cluster,
        endpoints: &mut Endpoints<D>,
        new: Option<Endpoint>,
    ) -> Result<bool, EndpointError> {
        let started = Instant::now();
        let local = local_endpoints(endpoints, new.as_ref());
        let capacity = endpoints.datapath().policy_capacity();
        let (compiled, plan) = self.plan_within(cluster, capacity, &local);
        let planned_at = started.elapsed();
        self.note_problems(&compiled);
        let changed = !plan.is_empty();
        let result = apply(endpoints, &plan, &compiled, new);
        debug!(
            plan_us = planned_at.as_micros(),
            apply_us = (started.elapsed() - planned_at).as_micros(),
            writes = plan.portset_upserts.len()
                + plan.peer_upserts.len()
                + plan.endpoint_tables.len()
                + plan.peer_deletes.len()
                + plan.portset_deletes.len(),
            "policy programmed"
        );
        match result {
            Ok(()) => {
                self.programmer
                    .commit(plan.id)
                    .expect("the plan just made is outstanding");
                self.retry = false;
                if let Some(at) = self.pending_since.take() {
                    self.metrics.latency.observe(at.elapsed().as_secs_f64());
                }
                Ok(changed)
            }
            Err(e) => {
                self.metrics.failures.inc();
                self.retry = true;
                error!(error = %e, "programming policy failed; isolating the pods it selects");
                self.programmer
                    .abort(plan.id)
                    .expect("the plan just made is outstanding");
                fail_closed(endpoints, &compiled);
                Err(e)
            }
        }
    }

    /// Compile and plan. When the plan would not fit in the maps (`capacity`: PEERS and PORTS
    /// entries), leave out the policy whose tables take the most entries, and again, until it
    /// fits: the pods those policies select fail closed (reported, as for an invalid policy),
    /// and every other pod keeps its verdicts. One tenant's oversized policy isolates its own
    /// pods, not the node.
    fn plan_within(
        &mut self,
        cluster: &Cluster,
        capacity: (usize, usize),
        local: &[(Ipv4Addr, Option<PodKey>)],
    ) -> (Compiled, Plan) {
        let mut left_out = BTreeSet::new();
        loop {
            let compiled = self.compiler.compile(cluster, local, &left_out);
            let plan = self.programmer.plan(&compiled);
            // While a plan is applied, new entries are written before old ones go.
            let (peers, ports) = self.programmer.entry_counts();
            let fits = peers + plan.peer_upserts.len() <= capacity.0
                && ports + plan.portset_upserts.len() <= capacity.1;
            let biggest = compiled
                .footprints
                .iter()
                .filter(|(key, _)| !left_out.contains(*key))
                .max_by_key(|(_, entries)| **entries);
            match biggest {
                Some((key, entries)) if !fits => {
                    debug!(policy = %key, entries, "the policy maps cannot hold every policy; leaving out the biggest");
                    left_out.insert(key.clone());
                    self.programmer
                        .discard(plan.id)
                        .expect("the plan just made is outstanding");
                }
                // Fits, or nothing left to leave out (then the writes fail and the node fails
                // closed, the last resort).
                _ => {
                    self.left_out = left_out;
                    return (compiled, plan);
                }
            }
        }
    }

    /// Compile from nothing and compare with what the incremental compiler gives for the same
    /// input. On a difference (a bug: it is counted, logged and reported on the Node), start the
    /// compiler afresh and ask for a reprogramming. Returns whether they agreed.
    pub fn self_check<D: Datapath>(&mut self, cluster: &Cluster, endpoints: &Endpoints<D>) -> bool {
        let started = Instant::now();
        let local = local_endpoints(endpoints, None);
        let fresh = compile_excluding(cluster, &local, &self.left_out);
        let kept = self.compiler.compile(cluster, &local, &self.left_out);
        let agree = fresh == kept;
        if agree {
            debug!(
                took_ms = started.elapsed().as_millis(),
                "policy self-check passed"
            );
        } else {
            let differing = fresh
                .endpoints
                .iter()
                .filter(|(ip, rules)| kept.endpoints.get(ip) != Some(rules))
                .count();
            error!(
                differing_endpoints = differing,
                "policy self-check: the incremental compiler disagrees with a compilation from \
                 nothing; recompiling everything"
            );
            self.metrics.self_check_failures.inc();
            self.compiler = Incremental::default();
            self.retry = true;
        }
        self.self_check_failed = !agree;
        agree
    }

    /// Whether the last self-check found a difference.
    pub fn self_check_failed(&self) -> bool {
        self.self_check_failed
    }

    fn note_problems(&mut self, compiled: &Compiled) {
        self.problems = compiled
            .problems
            .iter()
            .map(|p| Rejected {
                object: p.policy.as_ref().map_or_else(
                    || "NetworkPolicy".to_owned(),
                    |k| format!("NetworkPolicy {k}"),
                ),
                reason: p.message.clone(),
            })
            .chain(compiled.cluster_problems.iter().map(|p| Rejected {
                object: format!("ClusterNetworkPolicy {}", p.policy),
                reason: p.message.clone(),
            }))
            .collect();
        for p in &self.problems {
            warn!(object = %p.object, reason = %p.reason, "policy rejected; the pods it selects are isolated");
        }
        let unknown: BTreeSet<PodKey> = compiled.unknown_pods.values().cloned().collect();
        for pod in unknown.difference(&self.unknown_pods) {
            warn!(%pod, "an endpoint's Pod is not known (not seen yet, or rejected): it is closed wherever its namespace's policies isolate until the Pod appears");
        }
        for pod in self.unknown_pods.difference(&unknown) {
            info!(%pod, "the endpoint's Pod is known now: its own policy applies");
        }
        self.unknown_pods = unknown;
    }
}

/// The endpoints on this node and the pods they belong to.
fn local_endpoints<D: Datapath>(
    endpoints: &Endpoints<D>,
    new: Option<&Endpoint>,
) -> Vec<(Ipv4Addr, Option<PodKey>)> {
    let pod_key = |ep: &Endpoint| match (&ep.pod_namespace, &ep.pod_name) {
        (Some(ns), Some(name)) => Some(PodKey::new(ns.clone(), name.clone())),
        _ => None,
    };
    endpoints
        .records()
        .map(|r| &r.endpoint)
        .filter(|ep| new.is_none_or(|n| n.attachment != ep.attachment))
        .chain(new)
        .map(|ep| (ep.ip, pod_key(ep)))
        .collect()
}

fn apply<D: Datapath>(
    endpoints: &mut Endpoints<D>,
    plan: &Plan,
    compiled: &Compiled,
    new: Option<Endpoint>,
) -> Result<(), EndpointError> {
    for (portset, prefix) in &plan.portset_upserts {
        endpoints
            .datapath_mut()
            .set_port(port_entry(*portset, prefix), !prefix.deny)?;
    }
    for (table, net, portset) in &plan.peer_upserts {
        endpoints.datapath_mut().set_peer(
            PeerEntry {
                table: *table,
                net: *net,
            },
            *portset,
        )?;
    }
    let mut new = new;
    for (ip, ingress, egress) in &plan.endpoint_tables {
        let tables: Tables = (*ingress, *egress);
        match new.take_if(|n| n.ip == *ip) {
            Some(endpoint) => endpoints.add(endpoint, tables)?,
            None => endpoints.set_tables(*ip, tables)?,
        }
    }
    if let Some(endpoint) = new {
        // Re-added with nothing changed: it keeps the tables it has.
        let tables = endpoints
            .tables(endpoint.ip)
            .or_else(|| closed_unless_unisolated(compiled, endpoint.ip))
            .unwrap_or(TABLES_UNKNOWN);
        endpoints.add(endpoint, tables)?;
    }
    for (table, net) in &plan.peer_deletes {
        endpoints.datapath_mut().remove_peer(PeerEntry {
            table: *table,
            net: *net,
        })?;
    }
    for (portset, prefix) in &plan.portset_deletes {
        endpoints
            .datapath_mut()
            .remove_port(port_entry(*portset, prefix))?;
    }
    Ok(())
}

/// Tables for an endpoint the plan did not name: open where it is not isolated, fail-closed where
/// it is (its real table id is not known here).
fn closed_unless_unisolated(compiled: &Compiled, ip: Ipv4Addr) -> Option<Tables> {
    let rules = compiled.endpoints.get(&ip)?;
    Some((
        table_id(&rules.ingress, TABLE_FAIL_CLOSED),
        table_id(&rules.egress, TABLE_FAIL_CLOSED),
    ))
}

/// Point every endpoint that should be isolated in a direction at the deny-all table.
fn fail_closed<D: Datapath>(endpoints: &mut Endpoints<D>, compiled: &Compiled) {
    for (ip, rules) in &compiled.endpoints {
        let Some(current) = endpoints.tables(*ip) else {
            continue;
        };
        let tables = (
            if matches!(rules.ingress, DirectionRules::Unisolated) {
                current.0
            } else {
                TABLE_FAIL_CLOSED
            },
            if matches!(rules.egress, DirectionRules::Unisolated) {
                current.1
            } else {
                TABLE_FAIL_CLOSED
            },
        );
        if let Err(e) = endpoints.set_tables(*ip, tables) {
            error!(%ip, error = %e, "could not isolate endpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weir_agent_api::AttachmentId;
    use weir_common::policy::TABLE_DENY_ALL;
    use weir_policy::model::PodInfo;

    use super::*;
    use crate::kernel::datapath::fake::FakeDatapath;

    fn endpoint(name: &str, last: u8) -> Endpoint {
        Endpoint {
            attachment: AttachmentId {
                container_id: name.into(),
                ifname: "eth0".into(),
            },
            netns: String::new(),
            pod_namespace: Some("x".into()),
            pod_name: Some(name.into()),
            ip: Ipv4Addr::new(10, 244, 1, last),
            pod_mac: "0a:58:00:00:00:01".into(),
            host_ifname: format!("weir{name}"),
            host_ifindex: u32::from(last),
            host_mac: "ee:ee:ee:ee:ee:ee".into(),
            port_mappings: Vec::new(),
            ingress_shaped: Some(false),
        }
    }

    fn cluster(policy_yaml: &str) -> Cluster {
        let mut cluster = Cluster::default();
        for (name, app, last) in [("a", "a", 2), ("b", "b", 3)] {
            cluster.upsert_pod(PodInfo {
                key: PodKey::new("x", name),
                labels: BTreeMap::from([("app".to_owned(), app.to_owned())]).into(),
                ip: Some(Ipv4Addr::new(10, 244, 1, last)),
                node: None,
                ports: Vec::new(),
            });
        }
        for object in weir_policy::manifest::parse_documents(policy_yaml).unwrap() {
            cluster.apply(object).unwrap();
        }
        cluster
    }

    const B_FROM_A: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: b-from-a, namespace: x}\n\
        spec:\n  podSelector: {matchLabels: {app: b}}\n  \
        ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]\n";

    #[test]
    fn a_new_endpoint_is_published_with_its_tables_and_joins_peer_sets() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = Endpoints::open(FakeDatapath::default(), dir.path()).unwrap();
        let mut maps = PolicyMaps::default();
        let mut model = cluster(B_FROM_A);

        assert!(maps
            .program(&model, &mut eps, Some(endpoint("b", 3)))
            .unwrap());
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert_eq!(b.egress_table, TABLE_ALLOW_ALL);
        // Isolated for ingress, and a (not yet on the node) is a peer through its manifest IP.
        assert_ne!(b.ingress_table, TABLE_ALLOW_ALL);
        assert!(eps
            .datapath()
            .peers
            .keys()
            .any(|p| p.table == b.ingress_table && p.net == "10.244.1.2/32".parse().unwrap()));

        // a arrives: unisolated both ways; b's table is unchanged (a was already its peer).
        maps.program(&model, &mut eps, Some(endpoint("a", 2)))
            .unwrap();
        let a = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 2)];
        assert_eq!((a.ingress_table, a.egress_table), (0, 0));

        // The policy goes: b is open again and nothing is left in the maps.
        model = cluster("");
        assert!(maps.program(&model, &mut eps, None).unwrap());
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert_eq!((b.ingress_table, b.egress_table), (0, 0));
        assert!(eps.datapath().peers.is_empty());
        assert!(eps.datapath().ports.is_empty());
        assert!(
            !maps.program(&model, &mut eps, None).unwrap(),
            "nothing changed"
        );
    }

    #[test]
    fn the_self_check_agrees_with_the_incremental_compiler_across_changes_and_left_out_policies() {
        let dir = tempfile::tempdir().unwrap();
        // Room for one table entry: b-from-a fits, a second policy's table does not.
        let datapath = FakeDatapath {
            peers_capacity: Some(1),
            ..FakeDatapath::default()
        };
        let mut eps = Endpoints::open(datapath, dir.path()).unwrap();
        let mut maps = PolicyMaps::default();
        let mut model = cluster(B_FROM_A);
        maps.program(&model, &mut eps, Some(endpoint("a", 2)))
            .unwrap();
        maps.program(&model, &mut eps, Some(endpoint("b", 3)))
            .unwrap();
        assert!(maps.self_check(&model, &eps));
        let a_from_b = B_FROM_A
            .replace("b-from-a", "a-from-b")
            .replace("{app: b}}\n", "{app: a}}\n")
            .replace("{app: a}}}]", "{app: b}}}]");
        model = cluster(&format!("{B_FROM_A}---\n{a_from_b}"));
        maps.program(&model, &mut eps, None).unwrap();
        assert!(!maps.problems().is_empty(), "one policy is left out");
        assert!(maps.self_check(&model, &eps));
        assert!(!maps.self_check_failed());
        assert_eq!(maps.metrics.self_check_failures.get(), 0);
    }

    #[test]
    fn a_full_map_isolates_the_pods_the_policy_selects_and_later_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let datapath = FakeDatapath {
            peers_capacity: Some(0),
            ..FakeDatapath::default()
        };
        let mut eps = Endpoints::open(datapath, dir.path()).unwrap();
        let mut maps = PolicyMaps::default();
        let mut model = cluster("");
        maps.program(&model, &mut eps, Some(endpoint("a", 2)))
            .unwrap();
        maps.program(&model, &mut eps, Some(endpoint("b", 3)))
            .unwrap();

        // No room for b-from-a's table: the policy is left out, not written half.
        model = cluster(B_FROM_A);
        maps.program(&model, &mut eps, None).unwrap();
        assert_eq!(maps.metrics.failures.get(), 0, "no write failed");
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert_eq!(b.ingress_table, TABLE_FAIL_CLOSED, "isolated, never opened");
        assert_eq!(b.egress_table, TABLE_ALLOW_ALL, "egress is not selected");
        let a = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 2)];
        assert_eq!((a.ingress_table, a.egress_table), (0, 0));
        assert!(maps
            .problems()
            .iter()
            .any(|r| r.object == "NetworkPolicy x/b-from-a" && r.reason.contains("do not fit")));

        // Room again: the next pass programs the policy for real.
        eps.datapath_mut().peers_capacity = None;
        maps.program(&model, &mut eps, None).unwrap();
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert!(b.ingress_table != TABLE_FAIL_CLOSED && b.ingress_table != TABLE_DENY_ALL);
        assert!(!eps.datapath().peers.is_empty());
        assert!(maps.problems().is_empty());
    }

    #[test]
    fn only_the_tenant_whose_policy_does_not_fit_is_isolated() {
        // Tenant x: b admits a (one peer entry). Tenant y: c admits 40 networks (40 entries).
        // Room for 20 entries: y's policy is left out, x's is programmed.
        let mut cluster = cluster(B_FROM_A);
        cluster.upsert_pod(PodInfo {
            key: PodKey::new("y", "c"),
            labels: BTreeMap::from([("app".to_owned(), "c".to_owned())]).into(),
            ip: Some(Ipv4Addr::new(10, 244, 1, 4)),
            node: None,
            ports: Vec::new(),
        });
        let blocks: String = (0..40)
            .map(|i| format!("{{ipBlock: {{cidr: 198.51.{i}.0/24}}}},"))
            .collect();
        let big = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: big, namespace: y}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: c}}}}\n  ingress: [{{from: [{blocks}]}}]\n"
        );
        for object in weir_policy::manifest::parse_documents(&big).unwrap() {
            cluster.apply(object).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let datapath = FakeDatapath {
            peers_capacity: Some(20),
            ..FakeDatapath::default()
        };
        let mut eps = Endpoints::open(datapath, dir.path()).unwrap();
        let mut maps = PolicyMaps::default();
        let model = cluster;
        for (name, last) in [("a", 2), ("b", 3)] {
            maps.program(&model, &mut eps, Some(endpoint(name, last)))
                .unwrap();
        }
        let mut c = endpoint("c", 4);
        c.pod_namespace = Some("y".into());
        maps.program(&model, &mut eps, Some(c)).unwrap();

        let tables = |last| {
            let e = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, last)];
            (e.ingress_table, e.egress_table)
        };
        assert_eq!(
            tables(4).0,
            TABLE_FAIL_CLOSED,
            "y's pod, selected by the policy left out"
        );
        let b = tables(3).0;
        assert!(
            b != TABLE_FAIL_CLOSED && b != TABLE_ALLOW_ALL,
            "x keeps its real table"
        );
        assert!(eps
            .datapath()
            .peers
            .keys()
            .any(|p| p.table == b && p.net == "10.244.1.2/32".parse().unwrap()));
        assert_eq!(maps.metrics.failures.get(), 0);
        let rejected = maps.problems();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].object, "NetworkPolicy y/big");
    }

    fn api_pod(name: &str, app: &str, ip: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "x", "name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip}})
    }

    fn api_policy() -> serde_json::Value {
        let mut policy: serde_json::Value =
            serde_yaml::from_str(B_FROM_A).expect("B_FROM_A is YAML");
        policy["metadata"]["uid"] = "uid-b-from-a".into();
        policy
    }

    async fn next_generation(source: &weir_kube::KubeSource, after: u64) {
        let mut changes = source.changes();
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while source.generation() == after {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the source saw the change");
    }

    #[tokio::test]
    async fn policy_from_the_api_reaches_the_maps_and_outlives_an_outage_until_a_relist_removes_it()
    {
        let (client, api) = weir_kube::testing::FakeApi::start();
        api.apply(api_pod("a", "a", "10.244.1.2"));
        api.apply(api_pod("b", "b", "10.244.1.3"));
        api.apply(api_policy());
        let source = weir_kube::KubeSource::spawn(client, weir_kube::Options::default());
        tokio::time::timeout(std::time::Duration::from_secs(20), source.synced())
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut eps = Endpoints::open(FakeDatapath::default(), dir.path()).unwrap();
        let mut objects = crate::sources::ObjectSource::kubernetes(source.clone());
        let mut maps = PolicyMaps::default();
        assert!(objects.refresh());
        maps.note_change(objects.take_changed_at());
        maps.program(objects.cluster(), &mut eps, Some(endpoint("a", 2)))
            .unwrap();
        maps.program(objects.cluster(), &mut eps, Some(endpoint("b", 3)))
            .unwrap();
        let b_ip = Ipv4Addr::new(10, 244, 1, 3);
        let isolated = |eps: &Endpoints<FakeDatapath>| {
            let b = eps.datapath().endpoints[&b_ip];
            b.ingress_table != TABLE_ALLOW_ALL
                && eps.datapath().peers.keys().any(|p| {
                    p.table == b.ingress_table && p.net == "10.244.1.2/32".parse().unwrap()
                })
        };
        assert!(isolated(&eps), "b admits only a: {:?}", eps.datapath());
        assert!(maps.metrics.latency.count() >= 1, "the change was timed");

        // The API goes away: nothing changes, b stays isolated.
        api.set_outage(true);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!objects.refresh());
        assert!(!maps.program(objects.cluster(), &mut eps, None).unwrap());
        assert!(isolated(&eps));

        // Back, but the policy was deleted meanwhile and the history compacted: only the relist
        // (410 Gone) shows it, and b opens.
        let generation = source.generation();
        api.delete_unseen(api_policy());
        api.compact("NetworkPolicy");
        api.set_outage(false);
        next_generation(&source, generation).await;
        assert!(objects.refresh());
        assert!(maps.program(objects.cluster(), &mut eps, None).unwrap());
        let b = eps.datapath().endpoints[&b_ip];
        assert_eq!((b.ingress_table, b.egress_table), (0, 0));
        assert!(eps.datapath().peers.is_empty());
        assert_eq!(objects.generation(), source.generation());
    }
}
