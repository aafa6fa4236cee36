// SPDX-License-Identifier: Apache-2.0
//! Pods: what the lab reports and what to add; adding (manifests, CNI ADD, server, Service),
//! publishing, labelling and deleting them, each undone on failure.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use weir_agent_api::PortMapping;

use crate::{
    cni::{parse_add_result, plugin_config_from_dir, run_cni, with_prev_result, AddResult, CniEnv},
    manifest::{
        namespace_object, pod_object, service_object, Kind, ManifestDir, Object, ObjectRef,
    },
    names::{self, PodRef},
    netns::{delete_netns, netns_exists, netns_path, Netns},
    paths::require_bin,
    probe::Proto,
    services::{self, ServePort},
    state::{LabState, NodeState, PodState, StateLock},
};

use super::{
    cluster::start_server,
    objects::{check_sync, manifests, sync_agents},
    LabError,
};

/// A pod as the lab reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// Node name (`n1`).
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub mac: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Everything the pod serves (`serve-<port>-<proto>` container ports).
    pub ports: Vec<ServePort>,
    /// The pod's Service address.
    pub cluster_ip: Option<Ipv4Addr>,
}

impl PodInfo {
    pub(super) fn new(state: &LabState, pod: &PodState) -> Self {
        Self {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            ip: pod.ip,
            node: state
                .node(pod.node)
                .map_or_else(|| names::node_name(pod.node), |n| n.name.clone()),
            netns: pod.netns.clone(),
            container_id: pod.container_id.clone(),
            mac: pod.mac.clone(),
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
            cluster_ip: pod.cluster_ip,
        }
    }

    pub fn pod_ref(&self) -> PodRef {
        PodRef::new(&self.namespace, &self.name)
    }
}

/// What to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub pod: PodRef,
    pub labels: BTreeMap<String, String>,
    /// 1-based node index; `None`: the lab spreads pods over its nodes, round-robin.
    pub node: Option<u32>,
    /// Served on top of TCP, UDP and SCTP 80 and 81.
    pub serve: Vec<ServePort>,
    /// ADD runs before the agents know the Pod (the API's watch lagging behind the kubelet), and
    /// the Pod stays unknown until [`Lab::publish_pod`].
    pub unpublished: bool,
    /// `hostPort`s, passed to ADD as the kubelet does (`runtimeConfig.portMappings`).
    pub host_ports: Vec<PortMapping>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            pod: PodRef::new(namespace, name),
            labels: BTreeMap::new(),
            node: None,
            serve: Vec::new(),
            unpublished: false,
            host_ports: Vec::new(),
        }
    }

    /// Publish a `hostPort` (see [`services::parse_host_port`] for the text form).
    pub fn host_port(mut self, mapping: PortMapping) -> Self {
        self.host_ports.push(mapping);
        self
    }

    /// Add the pod (CNI ADD) before its Pod object exists; see [`Lab::publish_pod`].
    pub fn unpublished(mut self) -> Self {
        self.unpublished = true;
        self
    }

    /// Also serve `proto`/`port` (a container port named `serve-<port>-<proto>`).
    pub fn serve(mut self, proto: Proto, port: u16) -> Self {
        self.serve.push(ServePort::new(proto, port));
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn on_node(mut self, node: u32) -> Self {
        self.node = Some(node);
        self
    }
}

/// Write the Namespace `name` unless it exists; returns its id.
pub(super) fn ensure_namespace(manifests: &ManifestDir, name: &str) -> Result<ObjectRef> {
    let id = ObjectRef::namespace(name);
    if !manifests.exists(&id) {
        manifests.write(&namespace_object(name, &BTreeMap::new()))?;
    }
    Ok(id)
}

/// The Pod object of a recorded pod, with its status.
pub(super) fn recorded_pod_object(state: &LabState, pod: &PodState) -> Object {
    let node = state
        .node(pod.node)
        .map_or_else(|| names::node_name(pod.node), |n| n.name.clone());
    pod_object(&pod.pod_ref(), &pod.labels, &node, &pod.ports, Some(pod.ip))
}

/// Set pod `index`'s labels: state, Pod manifest, sync.
pub(super) fn set_pod_labels(
    lock: &StateLock,
    state: &mut LabState,
    index: usize,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    state.pods[index].labels = labels;
    lock.save(state)?;
    let object = recorded_pod_object(state, &state.pods[index]);
    manifests(state).write(&object)?;
    check_sync(state, &[object.id])
}

/// Add a pod: Namespace (if missing) and Pod manifests, sync, CNI ADD, server, then the pod's
/// status and Service (manifest and DNAT rules), sync. Undone on failure.
pub(super) fn add_pod_locked(
    lock: &StateLock,
    state: &mut LabState,
    spec: &PodSpec,
) -> Result<PodInfo> {
    let pod = &spec.pod;
    check_new_pod(state, spec)?;
    let node = place_pod(state, spec)?;
    let netns_name = names::pod_netns(&state.id, pod);
    if let Some(other) = state.pods.iter().find(|p| p.netns == netns_name) {
        bail!(
            "pods {pod} and {} hash to the same netns name {netns_name}; pick another name",
            other.pod_ref()
        );
    }
    if netns_exists(&netns_name) {
        bail!("netns {netns_name} already exists (a leftover?); run `weir-lab down`");
    }
    let weir = require_bin("weir")?;
    let mut config = plugin_config_from_dir(&node.cni_conf_dir)?;
    if !spec.host_ports.is_empty() {
        config["runtimeConfig"] =
            serde_json::json!({"portMappings": services::port_mappings_json(&spec.host_ports)});
    }
    let ports = services::all_ports(&spec.serve);

    // The Pod exists (scheduled, no IP yet) before the runtime calls the plugin, as in a cluster.
    let announced = Announced::write(state, spec, &node, &ports)?;
    let netns = Netns::create(&netns_name).map_err(|err| announced.withdraw(state, err))?;
    let container_id = names::random_container_id()?;
    let env = CniEnv {
        plugin: weir,
        ..CniEnv::for_pod(
            "ADD",
            &container_id,
            &netns.path(),
            &pod.namespace,
            &pod.name,
        )
        .run_in(&node.netns)
    };
    let attached = Attached::add(state, &announced, env, config)?;
    let server_log = state
        .dir
        .join("pods")
        .join(format!("{}.log", names::pod_hash(pod)));
    let server = start_server(
        &netns_name,
        &pod.to_string(),
        Ipv4Addr::UNSPECIFIED,
        &server_log,
        &ports,
    )
    .map_err(|err| attached.undo(state, &announced, err))?;
    state.pods.push(PodState {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        node: node.index,
        netns: netns_name,
        container_id,
        ifname: "eth0".to_owned(),
        ip: attached.parsed.ip,
        mac: attached.parsed.mac.clone(),
        labels: spec.labels.clone(),
        ports,
        cluster_ip: None,
        server: Some(server),
        server_log,
        cni_config: attached.config.clone(),
        cni_result: attached.result.clone(),
    });
    if let Err(err) = lock.save(state) {
        server.terminate(Duration::from_secs(1));
        state.pods.pop();
        return Err(attached.undo(state, &announced, err));
    }
    netns.persist();

    // Recorded: from here on a failure deletes the pod the ordinary way.
    if !spec.unpublished {
        if let Err(err) = publish_pod(lock, state, pod) {
            let err = err.context(format!("adding pod {pod}"));
            return Err(match del_pod_locked(lock, state, pod) {
                Ok(()) => err,
                Err(del) => err.context(format!("and deleting the pod again failed: {del:#}")),
            });
        }
    }
    let added = state.pod(pod).context("pod just added")?;
    Ok(PodInfo::new(state, added))
}

/// A valid name and labels, and no pod of that name yet.
fn check_new_pod(state: &LabState, spec: &PodSpec) -> Result<()> {
    let pod = &spec.pod;
    if !names::is_dns_name(&pod.namespace) || !names::is_dns_name(&pod.name) {
        bail!("{pod} is not NAMESPACE/NAME (lowercase letters, digits, '-' and '.')");
    }
    for (key, value) in &spec.labels {
        crate::manifest::check_label(key, value).with_context(|| format!("pod {pod}"))?;
    }
    if state.pod(pod).is_some() {
        return Err(LabError::PodExists(pod.clone()).into());
    }
    Ok(())
}

/// The node the spec asks for, else the next one round robin.
fn place_pod(state: &mut LabState, spec: &PodSpec) -> Result<NodeState> {
    if let Some(index) = spec.node {
        return Ok(state
            .node(index)
            .cloned()
            .ok_or(LabError::NoSuchNode(index))?);
    }
    let count = u32::try_from(state.nodes.len()).unwrap_or(u32::MAX).max(1);
    let node = state
        .nodes
        .get((state.pods_placed % count) as usize)
        .cloned()
        .context("the lab has no nodes")?;
    state.pods_placed = state.pods_placed.wrapping_add(1);
    Ok(node)
}

/// A new pod's Namespace and (unless unpublished) Pod manifests, written and synced before its
/// sandbox exists; withdrawn again when adding the pod fails.
struct Announced<'a> {
    pod: &'a PodRef,
    pod_id: ObjectRef,
    manifests: ManifestDir,
}

impl<'a> Announced<'a> {
    fn write(
        state: &LabState,
        spec: &'a PodSpec,
        node: &NodeState,
        ports: &[ServePort],
    ) -> Result<Self> {
        let manifests = manifests(state);
        let namespace_id = ensure_namespace(&manifests, &spec.pod.namespace)?;
        let pending = pod_object(&spec.pod, &spec.labels, &node.name, ports, None);
        let announced = Self {
            pod: &spec.pod,
            pod_id: pending.id.clone(),
            manifests,
        };
        if !spec.unpublished {
            announced.manifests.write(&pending)?;
        }
        let written: &[_] = if spec.unpublished {
            std::slice::from_ref(&namespace_id)
        } else {
            &[namespace_id.clone(), announced.pod_id.clone()]
        };
        check_sync(state, written).map_err(|err| announced.withdraw(state, err))?;
        Ok(announced)
    }

    /// Remove the Pod manifest again; `err` with what undoing could not do.
    fn withdraw(&self, state: &LabState, err: anyhow::Error) -> anyhow::Error {
        let err = err.context(format!("adding pod {}", self.pod));
        match self
            .manifests
            .remove(&self.pod_id)
            .and_then(|_| sync_agents(state))
        {
            Ok(_) => err,
            Err(undo) => err.context(format!("and removing its Pod manifest failed: {undo:#}")),
        }
    }
}

/// A pod whose sandbox the plugin has wired up: the ADD and its result, for an undoing DEL.
struct Attached {
    env: CniEnv,
    config: Value,
    result: Value,
    parsed: AddResult,
}

impl Attached {
    /// CNI ADD; on failure DEL (as runtimes do) and withdraw the pod's manifests.
    fn add(state: &LabState, announced: &Announced, env: CniEnv, config: Value) -> Result<Self> {
        let out = run_cni(&env, &config).map_err(|err| announced.withdraw(state, err))?;
        if let Some(error) = out.error() {
            // What runtimes do after a failed ADD: DEL, so the plugin releases anything half-made.
            let del = CniEnv {
                command: "DEL".to_owned(),
                ..env.clone()
            };
            let _ = run_cni(&del, &config);
            let _ = announced.manifests.remove(&announced.pod_id);
            let _ = sync_agents(state);
            return Err(LabError::CniAdd {
                pod: announced.pod.clone(),
                error,
                stderr: out.stderr,
            }
            .into());
        }
        let result = out.json.unwrap_or(Value::Null);
        match parse_add_result(&result) {
            Ok(parsed) => Ok(Self {
                env,
                config,
                result,
                parsed,
            }),
            Err(err) => {
                let err = err.context(format!("CNI ADD result for {}: {result}", announced.pod));
                let err = undo_add(&env, &config, &result, err);
                Err(announced.withdraw(state, err))
            }
        }
    }

    /// DEL with the ADD result as prevResult, then withdraw the manifests; `err` with what
    /// undoing could not do.
    fn undo(&self, state: &LabState, announced: &Announced, err: anyhow::Error) -> anyhow::Error {
        let err = undo_add(&self.env, &self.config, &self.result, err);
        announced.withdraw(state, err)
    }
}

/// DEL after an ADD that succeeded, with its result as prevResult; `err` with what it could not do.
fn undo_add(env: &CniEnv, config: &Value, result: &Value, err: anyhow::Error) -> anyhow::Error {
    let del = CniEnv {
        command: "DEL".to_owned(),
        ..env.clone()
    };
    match run_cni(&del, &with_prev_result(config, result)) {
        Ok(out) if out.success() => err,
        Ok(out) => err.context(format!(
            "and the undoing DEL failed: {}",
            out.error().map(|e| e.to_string()).unwrap_or_default()
        )),
        Err(del_err) => err.context(format!("and the undoing DEL failed: {del_err:#}")),
    }
}

/// Give a recorded pod its Service (ClusterIP, DNAT rules, manifest) and its status (IP,
/// Running) in the Pod manifest; sync.
pub(super) fn publish_pod(lock: &StateLock, state: &mut LabState, pod: &PodRef) -> Result<()> {
    let index = state
        .pods
        .iter()
        .position(|p| p.pod_ref() == *pod)
        .context("pod not recorded")?;
    state.last_service_index += 1;
    let vip = services::cluster_ip(state.last_service_index)
        .context("the Service CIDR is used up (this lab has handed out every ClusterIP)")?;
    lock.save(state)?;
    let recorded = state.pods[index].clone();
    // Every node translates the ClusterIP, as kube-proxy does: clients on any node reach it.
    let (dnat, hairpin) =
        services::service_rules(vip, recorded.ip, &recorded.ports, &pod.to_string());
    for (k, node) in state.nodes.iter().enumerate() {
        let installed = services::ensure_chains(&node.netns).and_then(|()| {
            services::apply_rules(&node.netns, &services::restore_script('A', &dnat, &hairpin))
        });
        if let Err(err) = installed {
            for earlier in &state.nodes[..k] {
                let _ = services::apply_rules(
                    &earlier.netns,
                    &services::restore_script('D', &dnat, &hairpin),
                );
            }
            return Err(err.context(format!(
                "installing the Service rules of {pod} on {}",
                node.name
            )));
        }
    }
    // Recorded once the rules are in (iptables-restore commits all or nothing), so DEL
    // removes exactly what is there.
    state.pods[index].cluster_ip = Some(vip);
    lock.save(state)?;

    let manifests = manifests(state);
    let service = service_object(pod, vip, &recorded.ports);
    manifests.write(&service)?;
    let running = recorded_pod_object(state, &state.pods[index]);
    manifests.write(&running)?;
    check_sync(state, &[running.id, service.id])
}

/// `weir` DEL for a recorded pod, with the conflist's current configuration (or the one used at
/// ADD, if the conflist is gone) and the ADD result as `prevResult`.
pub(super) fn cni_del(state: &LabState, pod: &PodState, timeout: Duration) -> Result<()> {
    let node = state.node(pod.node).ok_or(LabError::NoSuchNode(pod.node))?;
    if !netns_exists(&node.netns) {
        bail!(
            "node netns {} is gone; cannot run DEL for {}",
            node.netns,
            pod.pod_ref()
        );
    }
    let config =
        plugin_config_from_dir(&node.cni_conf_dir).unwrap_or_else(|_| pod.cni_config.clone());
    let env = CniEnv {
        plugin: require_bin("weir")?,
        timeout,
        ..CniEnv::for_pod(
            "DEL",
            &pod.container_id,
            &netns_path(&pod.netns),
            &pod.namespace,
            &pod.name,
        )
        .run_in(&node.netns)
    };
    let out = run_cni(&env, &with_prev_result(&config, &pod.cni_result))?;
    match out.error() {
        None => Ok(()),
        Some(error) => Err(LabError::CniDel {
            pod: pod.pod_ref(),
            error,
            stderr: out.stderr,
        }
        .into()),
    }
}

/// Delete a pod: stop its server, CNI DEL (with prevResult), delete its netns, then remove its
/// Service rules and its Service and Pod manifests, and sync. On a failed DEL the pod stays
/// recorded (and its netns in place) so DEL can be retried; later steps are all attempted and the
/// first failure reported.
pub(super) fn del_pod_locked(lock: &StateLock, state: &mut LabState, pod: &PodRef) -> Result<()> {
    let index = state
        .pods
        .iter()
        .position(|p| p.namespace == pod.namespace && p.name == pod.name)
        .ok_or_else(|| LabError::NoSuchPod(pod.clone()))?;
    if let Some(server) = state.pods[index].server.take() {
        server.terminate(Duration::from_secs(1));
        lock.save(state)?;
    }
    cni_del(state, &state.pods[index], Duration::from_secs(60))?;
    delete_netns(&state.pods[index].netns)?;
    let removed = state.pods.remove(index);
    lock.save(state)?;

    let mut errors: Vec<anyhow::Error> = Vec::new();
    if let Some(vip) = removed.cluster_ip {
        let (dnat, hairpin) =
            services::service_rules(vip, removed.ip, &removed.ports, &pod.to_string());
        for node in &state.nodes {
            if let Err(err) =
                services::apply_rules(&node.netns, &services::restore_script('D', &dnat, &hairpin))
            {
                errors.push(err.context(format!(
                    "removing the Service rules of {pod} on {}",
                    node.name
                )));
            }
        }
    }
    let manifests = manifests(state);
    for kind in [Kind::Service, Kind::Pod] {
        if let Err(err) = manifests.remove(&ObjectRef::namespaced(kind, &pod.namespace, &pod.name))
        {
            errors.push(err);
        }
    }
    if let Err(err) = sync_agents(state) {
        errors.push(err);
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(err) => Err(err.context(format!("pod {pod} is deleted, but not cleanly"))),
    }
}
