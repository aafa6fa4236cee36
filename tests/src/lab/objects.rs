// SPDX-License-Identifier: Apache-2.0
//! The lab's Kubernetes objects: the manifest directory every agent watches, `apply`, and the
//! `Sync` that returns once every agent has programmed a change (or names what it rejects).

use anyhow::{bail, Context, Result};
use weir_agent_api::Rejected;

use crate::{
    agent::{agent_sync, AgentConfig},
    manifest::{parse_documents, Kind, ManifestDir, Object, ObjectRef, NAMESPACE_NAME_LABEL},
    names::PodRef,
    probe::Proto,
    services::ServePort,
    state::{LabState, StateLock},
};

use super::{
    pods::{add_pod_locked, ensure_namespace, recorded_pod_object},
    LabError, PodSpec, SYNC_TIMEOUT,
};

/// The lab's manifest directory.
pub(super) fn manifests(state: &LabState) -> ManifestDir {
    if state.manifest_dir.as_os_str().is_empty() {
        // A state written before the lab had objects.
        ManifestDir::new(state.dir.join(crate::manifest::MANIFEST_DIR))
    } else {
        ManifestDir::new(&state.manifest_dir)
    }
}

/// Send `Sync` to every node's agent at once; the union of what they reject. Fails if an agent
/// cannot be reached or answers with an error.
pub(super) fn sync_agents(state: &LabState) -> Result<Vec<Rejected>> {
    let answers: Vec<Result<Vec<Rejected>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let config = AgentConfig::for_node(state, node);
                    agent_sync(&config.socket(), SYNC_TIMEOUT)
                        .map(|(_, rejected)| rejected)
                        .with_context(|| format!("syncing the agent of node {}", node.name))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sync thread panicked")))
            })
            .collect()
    });
    let mut all: Vec<Rejected> = Vec::new();
    for answer in answers {
        for rejected in answer? {
            if !all.contains(&rejected) {
                all.push(rejected);
            }
        }
    }
    Ok(all)
}

/// [`LabError::Rejected`] if `rejected` names any of `ids`.
pub(super) fn fail_if_rejected(rejected: &[Rejected], ids: &[ObjectRef]) -> Result<()> {
    let hits: Vec<String> = rejected
        .iter()
        .filter(|r| ids.iter().any(|id| id.is_named_by(&r.object)))
        .map(|r| format!("{}: {}", r.object, r.reason))
        .collect();
    if hits.is_empty() {
        Ok(())
    } else {
        Err(LabError::Rejected(hits).into())
    }
}

/// Sync every agent and fail if one rejects any of `ids`.
pub(super) fn check_sync(state: &LabState, ids: &[ObjectRef]) -> Result<()> {
    fail_if_rejected(&sync_agents(state)?, ids)
}

/// What `apply` does with a Pod that is not in the lab yet: add it as the manifest says.
pub(super) fn pod_spec_from_object(state: &LabState, object: &Object) -> Result<PodSpec> {
    let namespace = object.id.namespace.as_deref().unwrap_or("default");
    let mut spec = PodSpec::new(namespace, &object.id.name);
    spec.labels = object.labels();
    let spec_doc = &object.doc["spec"];
    if let Some(node_name) = spec_doc["nodeName"].as_str() {
        spec.node = state
            .nodes
            .iter()
            .find(|n| n.name == node_name)
            .map(|n| Some(n.index))
            .with_context(|| {
                format!("{}: spec.nodeName {node_name} is not a lab node", object.id)
            })?;
    }
    for container in spec_doc["containers"].as_array().into_iter().flatten() {
        for port in container["ports"].as_array().into_iter().flatten() {
            let number = port["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .with_context(|| {
                    format!("{}: bad containerPort {}", object.id, port["containerPort"])
                })?;
            let proto = match port["protocol"].as_str().unwrap_or("TCP") {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                "SCTP" => Proto::Sctp,
                other => bail!("{}: bad port protocol {other}", object.id),
            };
            spec.serve.push(ServePort::new(proto, number));
        }
    }
    Ok(spec)
}

pub(super) fn apply_locked(lock: &StateLock, state: &mut LabState, text: &str) -> Result<()> {
    // Everything is checked before anything is written.
    let objects = parse_documents(text)?;
    let mut new_pods: Vec<PodSpec> = Vec::new();
    for object in objects.iter().filter(|o| o.id.kind == Kind::Pod) {
        let pod = PodRef::new(
            object.id.namespace.as_deref().unwrap_or("default"),
            &object.id.name,
        );
        if state.pod(&pod).is_none() {
            new_pods.push(pod_spec_from_object(state, object)?);
        }
    }

    let manifests = manifests(state);
    let mut written: Vec<ObjectRef> = Vec::new();
    // Namespaces first, so the objects in them find them.
    let (namespaces, others): (Vec<&Object>, Vec<&Object>) =
        objects.iter().partition(|o| o.id.kind == Kind::Namespace);
    for object in namespaces {
        let mut object = object.clone();
        let mut labels = object.labels();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), object.id.name.clone());
        object.set_labels(&labels);
        manifests.write(&object)?;
        written.push(object.id);
    }
    for object in others {
        let namespace = object.id.namespace.as_deref().unwrap_or("default");
        if object.id.kind.is_namespaced() {
            let namespace_id = ensure_namespace(&manifests, namespace)?;
            if !written.contains(&namespace_id) {
                written.push(namespace_id);
            }
        }
        match object.id.kind {
            Kind::Pod => {
                let pod = PodRef::new(namespace, &object.id.name);
                // Pods in the lab take the applied labels; the rest of the object is the lab's.
                if let Some(index) = state.pods.iter().position(|p| p.pod_ref() == pod) {
                    state.pods[index].labels = object.labels();
                    lock.save(state)?;
                    manifests.write(&recorded_pod_object(state, &state.pods[index]))?;
                    written.push(object.id.clone());
                }
            }
            _ => {
                manifests.write(object)?;
                written.push(object.id.clone());
            }
        }
    }
    check_sync(state, &written)?;
    for spec in &new_pods {
        add_pod_locked(lock, state, spec)?;
    }
    Ok(())
}
