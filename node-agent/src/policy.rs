//! NetworkPolicy at the edge: objects from the source go through the pure compiler
//! (`weir-policy`), and the resulting plan is written into the datapath's maps.
//!
//! Order of writes, so that no packet is judged by a half-written policy more permissively than
//! by either the old or the new one: new port sets, then new and changed table entries, then the
//! endpoints' table pointers (one atomic map update each), then the entries nothing uses any more.
//! If a write fails (a map is full), every endpoint that should be isolated is pointed at the
//! deny-all table: fail closed, logged, counted.

use std::{net::Ipv4Addr, path::Path, sync::Arc, time::Instant};

use tracing::{debug, error, info, warn};
use weir_agent_api::{Endpoint, Rejected};
use weir_common::{
    policy::{TABLE_ALLOW_ALL, TABLE_FAIL_CLOSED},
    PortKey,
};
use weir_kube::KubeSource;
use weir_policy::{
    compile::{compile_excluding, Compiled, DirectionRules, PortPrefix},
    model::{Cluster, PodKey},
    plan::{self, Plan, Programmer},
};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::{
    datapath::{Datapath, DatapathError, PeerEntry, PortEntry},
    endpoints::{EndpointError, Endpoints, Tables},
    source::ManifestDir,
};

/// Where the objects come from.
enum Source {
    /// None: no pod is isolated, or a model set by [`PolicyEngine::set_cluster`].
    None,
    Manifests(ManifestDir),
    Kubernetes {
        source: KubeSource,
        /// The generation of the snapshot taken last.
        taken: Option<u64>,
    },
}

pub struct PolicyEngine {
    source: Source,
    /// The model when the source is not a manifest directory (which keeps its own).
    cluster: Arc<Cluster>,
    /// Objects such a source could not use.
    source_rejected: Vec<Rejected>,
    /// Policies the compiler could not fully use (their pods are isolated).
    problems: Vec<Rejected>,
    /// Local endpoints whose Pod the model lacks (closed where their namespace isolates).
    unknown_pods: std::collections::BTreeSet<PodKey>,
    programmer: Programmer,
    /// Times programming failed and the node failed closed.
    pub failures: Counter,
    /// The last programming failed: the next sync retries even if the source did not change.
    retry: bool,
    /// When the oldest object change not yet programmed happened (Kubernetes source).
    changed_at: Option<Instant>,
    /// Seconds from an object change in the API to the maps that enforce it (shared with the
    /// telemetry that exposes it).
    pub latency: Histogram,
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

impl PolicyEngine {
    pub fn new(manifest_dir: Option<&Path>) -> std::io::Result<Self> {
        let source = match manifest_dir {
            Some(dir) => Source::Manifests(ManifestDir::new(dir)?),
            None => Source::None,
        };
        Ok(Self::with_source(source))
    }

    /// Objects from the Kubernetes API. The source should have listed every kind
    /// ([`KubeSource::synced`]) before the first program, or pods would be judged by part of
    /// the cluster's policies.
    pub fn kubernetes(source: KubeSource) -> Self {
        Self::with_source(Source::Kubernetes {
            source,
            taken: None,
        })
    }

    /// Count failures and programming latency in `telemetry`'s metrics.
    pub fn reporting_to(mut self, telemetry: &crate::metrics::Telemetry) -> Self {
        self.failures = telemetry.policy_failures.clone();
        self.latency = telemetry.programming_seconds.clone();
        self
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            cluster: Arc::default(),
            source_rejected: Vec::new(),
            problems: Vec::new(),
            unknown_pods: Default::default(),
            programmer: Programmer::new(),
            failures: Counter::default(),
            retry: false,
            changed_at: None,
            latency: crate::metrics::latency_histogram(),
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

    /// Replace the model wholesale: for sources that build a [`Cluster`] themselves (the
    /// Kubernetes API source, tests).
    pub fn set_cluster(&mut self, cluster: Cluster, rejected: Vec<Rejected>) {
        self.cluster = Arc::new(cluster);
        self.source_rejected = rejected;
    }

    /// Re-read the source. Returns whether anything changed.
    pub fn refresh(&mut self) -> bool {
        match &mut self.source {
            Source::None => false,
            Source::Manifests(source) => match source.refresh() {
                Ok(changed) => changed,
                Err(e) => {
                    // Keep enforcing the last good state: an unreadable directory opens nothing.
                    warn!(dir = %source.dir().display(), error = %e, "reading manifests failed; keeping the last state");
                    false
                }
            },
            Source::Kubernetes { source, taken } => {
                if *taken == Some(source.generation()) {
                    return false;
                }
                let snapshot = source.snapshot();
                *taken = Some(snapshot.generation);
                self.cluster = snapshot.cluster;
                self.source_rejected = snapshot.rejected;
                if self.changed_at.is_none() {
                    self.changed_at = snapshot.changed_at;
                }
                true
            }
        }
    }

    pub fn change_fd(&self) -> Option<std::os::fd::OwnedFd> {
        match &self.source {
            Source::Manifests(source) => source.change_fd(),
            _ => None,
        }
    }

    pub fn request_full_scan(&mut self) {
        if let Source::Manifests(source) = &mut self.source {
            source.request_full_scan();
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

    pub fn generation(&self) -> u64 {
        match &self.source {
            Source::None => 0,
            Source::Manifests(source) => source.generation(),
            Source::Kubernetes { taken, .. } => taken.unwrap_or(0),
        }
    }

    pub fn rejected(&self) -> Vec<Rejected> {
        let mut rejected = match &self.source {
            Source::Manifests(source) => source.rejected(),
            _ => self.source_rejected.clone(),
        };
        rejected.extend(self.problems.iter().cloned());
        rejected
    }

    /// The model the source describes (nodes included).
    pub fn cluster(&self) -> &Cluster {
        match &self.source {
            Source::Manifests(source) => source.cluster(),
            _ => &self.cluster,
        }
    }

    /// Compile for this node's endpoints (plus `new`, about to be added) and program the maps.
    /// `new` is added to `endpoints` in the middle, once everything it is judged by exists.
    /// Returns whether any verdict may have changed (the caller then bumps the policy epoch).
    pub fn program<D: Datapath>(
        &mut self,
        endpoints: &mut Endpoints<D>,
        new: Option<Endpoint>,
    ) -> Result<bool, EndpointError> {
        let started = Instant::now();
        let local = local_endpoints(endpoints, new.as_ref());
        let (compiled, plan) = self.plan_within(endpoints.datapath().policy_capacity(), &local);
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
                if let Some(at) = self.changed_at.take() {
                    self.latency.observe(at.elapsed().as_secs_f64());
                }
                Ok(changed)
            }
            Err(e) => {
                self.failures.inc();
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
        capacity: (usize, usize),
        local: &[(Ipv4Addr, Option<PodKey>)],
    ) -> (Compiled, Plan) {
        let mut left_out = std::collections::BTreeSet::new();
        loop {
            let compiled = compile_excluding(self.cluster(), local, &left_out);
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
                _ => return (compiled, plan),
            }
        }
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
            .collect();
        for p in &self.problems {
            warn!(object = %p.object, reason = %p.reason, "policy rejected; the pods it selects are isolated");
        }
        let unknown: std::collections::BTreeSet<PodKey> =
            compiled.unknown_pods.values().cloned().collect();
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
            .set_port(port_entry(*portset, prefix))?;
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
            .unwrap_or(crate::endpoints::TABLES_UNKNOWN);
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
    use crate::datapath::fake::FakeDatapath;

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
        }
    }

    fn cluster(policy_yaml: &str) -> Cluster {
        let mut cluster = Cluster::default();
        for (name, app, last) in [("a", "a", 2), ("b", "b", 3)] {
            cluster.upsert_pod(PodInfo {
                key: PodKey::new("x", name),
                labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
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
        let mut engine = PolicyEngine::new(None).unwrap();
        engine.set_cluster(cluster(B_FROM_A), Vec::new());

        assert!(engine.program(&mut eps, Some(endpoint("b", 3))).unwrap());
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
        engine.program(&mut eps, Some(endpoint("a", 2))).unwrap();
        let a = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 2)];
        assert_eq!((a.ingress_table, a.egress_table), (0, 0));

        // The policy goes: b is open again and nothing is left in the maps.
        engine.set_cluster(cluster(""), Vec::new());
        assert!(engine.program(&mut eps, None).unwrap());
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert_eq!((b.ingress_table, b.egress_table), (0, 0));
        assert!(eps.datapath().peers.is_empty());
        assert!(eps.datapath().ports.is_empty());
        assert!(!engine.program(&mut eps, None).unwrap(), "nothing changed");
    }

    #[test]
    fn a_full_map_isolates_the_pods_the_policy_selects_and_later_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let datapath = FakeDatapath {
            peers_capacity: Some(0),
            ..FakeDatapath::default()
        };
        let mut eps = Endpoints::open(datapath, dir.path()).unwrap();
        let mut engine = PolicyEngine::new(None).unwrap();
        engine.set_cluster(cluster(""), Vec::new());
        engine.program(&mut eps, Some(endpoint("a", 2))).unwrap();
        engine.program(&mut eps, Some(endpoint("b", 3))).unwrap();

        // No room for b-from-a's table: the policy is left out, not written half.
        engine.set_cluster(cluster(B_FROM_A), Vec::new());
        engine.program(&mut eps, None).unwrap();
        assert_eq!(engine.failures.get(), 0, "no write failed");
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert_eq!(b.ingress_table, TABLE_FAIL_CLOSED, "isolated, never opened");
        assert_eq!(b.egress_table, TABLE_ALLOW_ALL, "egress is not selected");
        let a = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 2)];
        assert_eq!((a.ingress_table, a.egress_table), (0, 0));
        assert!(engine
            .rejected()
            .iter()
            .any(|r| r.object == "NetworkPolicy x/b-from-a" && r.reason.contains("do not fit")));

        // Room again: the next pass programs the policy for real.
        eps.datapath_mut().peers_capacity = None;
        engine.program(&mut eps, None).unwrap();
        let b = eps.datapath().endpoints[&Ipv4Addr::new(10, 244, 1, 3)];
        assert!(b.ingress_table != TABLE_FAIL_CLOSED && b.ingress_table != TABLE_DENY_ALL);
        assert!(!eps.datapath().peers.is_empty());
        assert!(engine.rejected().is_empty());
    }

    #[test]
    fn only_the_tenant_whose_policy_does_not_fit_is_isolated() {
        // Tenant x: b admits a (one peer entry). Tenant y: c admits 40 networks (40 entries).
        // Room for 20 entries: y's policy is left out, x's is programmed.
        let mut cluster = cluster(B_FROM_A);
        cluster.upsert_pod(PodInfo {
            key: PodKey::new("y", "c"),
            labels: BTreeMap::from([("app".to_owned(), "c".to_owned())]),
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
        let mut engine = PolicyEngine::new(None).unwrap();
        engine.set_cluster(cluster, Vec::new());
        for (name, last) in [("a", 2), ("b", 3)] {
            engine
                .program(&mut eps, Some(endpoint(name, last)))
                .unwrap();
        }
        let mut c = endpoint("c", 4);
        c.pod_namespace = Some("y".into());
        engine.program(&mut eps, Some(c)).unwrap();

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
        assert_eq!(engine.failures.get(), 0);
        let rejected = engine.rejected();
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
        let mut engine = PolicyEngine::kubernetes(source.clone());
        assert!(engine.refresh());
        engine.program(&mut eps, Some(endpoint("a", 2))).unwrap();
        engine.program(&mut eps, Some(endpoint("b", 3))).unwrap();
        let b_ip = Ipv4Addr::new(10, 244, 1, 3);
        let isolated = |eps: &Endpoints<FakeDatapath>| {
            let b = eps.datapath().endpoints[&b_ip];
            b.ingress_table != TABLE_ALLOW_ALL
                && eps.datapath().peers.keys().any(|p| {
                    p.table == b.ingress_table && p.net == "10.244.1.2/32".parse().unwrap()
                })
        };
        assert!(isolated(&eps), "b admits only a: {:?}", eps.datapath());
        assert!(engine.latency.count() >= 1, "the change was timed");

        // The API goes away: nothing changes, b stays isolated.
        api.set_outage(true);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!engine.refresh());
        assert!(!engine.program(&mut eps, None).unwrap());
        assert!(isolated(&eps));

        // Back, but the policy was deleted meanwhile and the history compacted: only the relist
        // (410 Gone) shows it, and b opens.
        let generation = source.generation();
        api.delete_unseen(api_policy());
        api.compact("NetworkPolicy");
        api.set_outage(false);
        next_generation(&source, generation).await;
        assert!(engine.refresh());
        assert!(engine.program(&mut eps, None).unwrap());
        let b = eps.datapath().endpoints[&b_ip];
        assert_eq!((b.ingress_table, b.egress_table), (0, 0));
        assert!(eps.datapath().peers.is_empty());
        assert_eq!(engine.generation(), source.generation());
    }
}
