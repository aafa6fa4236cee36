//! `status.conditions` of ClusterNetworkPolicies: whether Weir enforces each one as written.
//!
//! Every node compiles the same objects the same way, so one writer is enough and many would only
//! race: the agents share a `coordination.k8s.io` Lease, and only its holder writes. The holder
//! renews it every [`RENEW_EVERY`]; another agent takes it over once it has not been renewed for
//! [`LEASE_DURATION`] (the holder's node went away). A new holder writes every condition once, then
//! only what changed.
//!
//! The condition (type `Accepted`): `True`/`Accepted` when the policy is enforced as written;
//! `False`/`RuleFailedClosed` when some rule is enforced the API's fail-closed way instead (the
//! message says which and why); `False`/`Invalid` when the policy cannot be enforced at all.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;
use tracing::{debug, info, warn};
use weir_policy::model::Cluster;

use crate::{ClusterNetworkPolicyObject, KubeSource};

/// The Lease the agents share.
pub const LEASE_NAME: &str = "weir-cluster-policy-status";
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The condition type Weir writes.
pub const CONDITION: &str = "Accepted";
/// Notes are cut to what a condition message comfortably holds.
const MESSAGE_MAX: usize = 4000;

/// The condition a policy should carry: (generation, status, reason, message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The object it is for (a policy recreated under its name needs its status again).
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// What every ClusterNetworkPolicy of the model should say, by name.
pub fn wanted(cluster: &Cluster) -> BTreeMap<String, Wanted> {
    let mut out = BTreeMap::new();
    for policy in cluster.cluster_policies() {
        let problems = policy.problems();
        let wanted = if problems.is_empty() {
            Wanted {
                uid: policy.uid.clone(),
                generation: policy.generation,
                status: "True",
                reason: "Accepted",
                message: "enforced as written by every weir-agent".to_owned(),
            }
        } else {
            let mut message = problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            truncate(&mut message);
            Wanted {
                uid: policy.uid.clone(),
                generation: policy.generation,
                status: "False",
                reason: "RuleFailedClosed",
                message,
            }
        };
        out.insert(policy.name().to_owned(), wanted);
    }
    for problem in cluster.unenforced_cluster_policies() {
        let mut message = problem.message.clone();
        truncate(&mut message);
        out.insert(
            problem.policy.clone(),
            Wanted {
                uid: None,
                generation: None,
                status: "False",
                reason: "Invalid",
                message,
            },
        );
    }
    out
}

fn truncate(message: &mut String) {
    if crate::events::cut(message, MESSAGE_MAX) {
        message.push('…');
    }
}

/// Writes conditions while this agent holds the Lease; runs for ever.
pub async fn run(client: Client, source: KubeSource, namespace: String, identity: String) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let policies: Api<ClusterNetworkPolicyObject> = Api::all(client);
    let mut written: BTreeMap<String, Wanted> = BTreeMap::new();
    let mut holding = false;
    let mut changes = source.changes();
    // The Lease is asked about every RENEW_EVERY, not on every change of the model (pods come
    // and go all the time, on every node).
    let mut last_hold: Option<std::time::Instant> = None;
    loop {
        if last_hold.is_none_or(|t| t.elapsed() >= RENEW_EVERY) {
            last_hold = Some(std::time::Instant::now());
            let now_holding = match hold(&leases, &identity).await {
                Ok(held) => held,
                Err(e) => {
                    debug!(error = %e, "cannot read or renew the status Lease");
                    false
                }
            };
            if now_holding != holding {
                info!(
                    lease = LEASE_NAME,
                    holding = now_holding,
                    "ClusterNetworkPolicy status writer"
                );
                holding = now_holding;
                written.clear();
            }
        }
        if holding && source.is_synced() {
            let wanted = wanted(&source.snapshot().cluster);
            written.retain(|name, _| wanted.contains_key(name));
            for (name, want) in wanted {
                if written.get(&name) == Some(&want) {
                    continue;
                }
                match write(&policies, &name, &want).await {
                    Ok(()) => {
                        written.insert(name, want);
                    }
                    Err(e) => warn!(policy = %name, error = %e, "cannot write the status"),
                }
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
}

async fn write(
    api: &Api<ClusterNetworkPolicyObject>,
    name: &str,
    want: &Wanted,
) -> Result<(), kube::Error> {
    let mut condition = json!({
        "type": CONDITION,
        "status": want.status,
        "reason": want.reason,
        "message": want.message,
        "lastTransitionTime": Time(Timestamp::now()),
    });
    if let Some(generation) = want.generation {
        condition["observedGeneration"] = json!(generation);
    }
    let patch = json!({"status": {"conditions": [condition]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Takes or renews the Lease; returns whether this agent holds it now.
async fn hold(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |transitions: i32| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(0)),
        };
        // Another agent may create it first: then it holds it.
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let mine = current.holder_identity.as_deref() == Some(identity);
    let expired = current.renew_time.as_ref().is_none_or(|renewed| {
        let duration = i64::from(current.lease_duration_seconds.unwrap_or(0));
        now.as_second() - renewed.0.as_second() > duration
    });
    if !mine && !expired {
        return Ok(false);
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let mut next = spec(transitions);
    if mine {
        next.acquire_time = current.acquire_time;
    }
    lease.spec = Some(next);
    // The resourceVersion read above makes this a compare-and-swap: of two agents taking an
    // expired Lease at once, one gets 409 Conflict.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use weir_policy::cluster_policy::ClusterNetworkPolicy;

    use super::*;

    fn object(spec: serde_json::Value) -> ClusterNetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn conditions_say_accepted_failed_closed_or_invalid() {
        let mut cluster = Cluster::default();
        cluster.upsert_cluster_policy(&object(json!({
            "tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]
        })));
        let w = &wanted(&cluster)["p"];
        assert_eq!(
            (w.status, w.reason, w.generation),
            ("True", "Accepted", Some(3))
        );

        cluster.upsert_cluster_policy(&object(json!({
            "tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
            "egress": [{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}]
        })));
        let w = &wanted(&cluster)["p"];
        assert_eq!((w.status, w.reason), ("False", "RuleFailedClosed"));
        assert!(w.message.contains("domainNames"), "{}", w.message);

        cluster.upsert_cluster_policy(&object(json!({
            "tier": "Middle", "priority": 1, "subject": {"namespaces": {}}
        })));
        let w = &wanted(&cluster)["p"];
        assert_eq!((w.status, w.reason), ("False", "Invalid"));
        assert_eq!(cluster.cluster_policies().count(), 0);
    }
}
