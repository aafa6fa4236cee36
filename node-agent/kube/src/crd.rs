//! Noticing a CustomResourceDefinition installed after the agent started.
//!
//! An optional kind (ClusterNetworkPolicy) whose CRD is absent is re-checked only now and then, as
//! every node asks. Waiting on a watch of the one CRD object instead lets the agents start
//! watching the kind as soon as the API serves it: an admin who installs the CRD and creates a
//! policy a second later gets it enforced then, not up to a re-check interval later.

use std::pin::pin;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    api::{WatchEvent, WatchParams},
    Api, Client,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::ABSENT_CRD_RETRY_MAX;

/// The ClusterNetworkPolicy CRD's name (`<plural>.<group>`), which the agent's ClusterRole names.
pub const CLUSTER_NETWORK_POLICY_CRD: &str = "clusternetworkpolicies.policy.networking.k8s.io";

/// How long one watch of the CRD lasts before the API server ends it (it is opened again).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// The parts of a CustomResourceDefinition that say whether a version is served. Everything
/// else (the schema is most of a CRD's size) is skipped while parsing, not kept. Lists may be
/// null (a CRD just created has `conditions: null`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CrdServing {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<CrdSpec>,
    #[serde(default)]
    pub status: Option<CrdStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CrdSpec {
    #[serde(default)]
    pub versions: Option<Vec<CrdVersion>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CrdVersion {
    pub name: String,
    #[serde(default)]
    pub served: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CrdStatus {
    #[serde(default)]
    pub conditions: Option<Vec<CrdCondition>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CrdCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl kube::Resource for CrdServing {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "CustomResourceDefinition".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "apiextensions.k8s.io".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "customresourcedefinitions".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CrdServing {
    /// Established (the API serves it) with `version` served.
    pub fn serves(&self, version: &str) -> bool {
        let established = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        let versions = self.spec.as_ref().and_then(|s| s.versions.as_deref());
        established
            && versions
                .unwrap_or_default()
                .iter()
                .any(|v| v.name == version && v.served)
    }
}

/// The watch of one CRD by name (`<plural>.<group>`).
pub struct CrdWatch {
    api: Api<CrdServing>,
    name: String,
    version: String,
    /// Whether the CRDs could not be watched last time (logged once).
    unwatchable: bool,
}

impl CrdWatch {
    pub fn new(client: &Client, plural: &str, group: &str, version: &str) -> Self {
        Self {
            api: Api::all(client.clone()),
            name: format!("{plural}.{group}"),
            version: version.to_owned(),
            unwatchable: false,
        }
    }

    /// Returns once the CRD is established and serves the version (or changed in a way this
    /// cannot read: the caller had better look), or when the watch ends (the API server closes
    /// it every few minutes), so that the caller looks at the kind again. If the CRD cannot be
    /// watched (no permission: an install from before this watch), it waits
    /// [`ABSENT_CRD_RETRY_MAX`] instead. Returns whether the CRD was seen (possibly) served.
    pub async fn until_served(&mut self) -> bool {
        // By name: the RBAC rule grants this one CRD only, which needs the field selector.
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECS);
        // "0": start with the object as it is now (an ADDED event if it exists).
        let stream = match self.api.watch(&params, "0").await {
            Ok(stream) => stream,
            Err(e) => {
                self.cannot_watch(&e.to_string()).await;
                return false;
            }
        };
        let mut stream = pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(crd) | WatchEvent::Modified(crd))
                    if crd.serves(&self.version) =>
                {
                    self.unwatchable = false;
                    return true;
                }
                Ok(WatchEvent::Error(status)) => {
                    self.cannot_watch(&status.message).await;
                    return false;
                }
                // A line this could not parse (kube reports it as an empty API error): the CRD
                // changed somehow, so look at the kind.
                Err(e) => {
                    debug!(crd = %self.name, error = %e, "unreadable CRD watch event");
                    return true;
                }
                Ok(_) => {}
            }
        }
        false
    }

    async fn cannot_watch(&mut self, why: &str) {
        if !std::mem::replace(&mut self.unwatchable, true) {
            info!(
                crd = %self.name,
                error = why,
                "cannot watch the CRD (the agent's ClusterRole needs get/list/watch on it): \
                 looking for it every {}s instead",
                ABSENT_CRD_RETRY_MAX.as_secs()
            );
        } else {
            debug!(crd = %self.name, error = why, "cannot watch the CRD");
        }
        tokio::time::sleep(ABSENT_CRD_RETRY_MAX).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd(established: &str, versions: serde_json::Value) -> CrdServing {
        serde_json::from_value(json!({
            "metadata": {"name": "clusternetworkpolicies.policy.networking.k8s.io"},
            "spec": {"group": "policy.networking.k8s.io", "versions": versions,
                     "names": {"plural": "clusternetworkpolicies"}},
            "status": {"conditions": [{"type": "NamesAccepted", "status": "True"},
                                      {"type": "Established", "status": established}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_cluster_network_policy_crd_name_is_its_plural_and_group() {
        use weir_policy::cluster_policy::{GROUP, PLURAL};
        assert_eq!(CLUSTER_NETWORK_POLICY_CRD, format!("{PLURAL}.{GROUP}"));
    }

    #[test]
    fn served_only_when_established_with_the_version_served() {
        let both = json!([{"name": "v1alpha2", "served": true, "schema": {"openAPIV3Schema": {}}},
                          {"name": "v1beta1", "served": true, "storage": true}]);
        assert!(crd("True", both.clone()).serves("v1beta1"));
        assert!(!crd("False", both).serves("v1beta1"));
        let old = json!([{"name": "v1alpha2", "served": true}]);
        assert!(!crd("True", old).serves("v1beta1"));
        let unserved = json!([{"name": "v1beta1", "served": false}]);
        assert!(!crd("True", unserved).serves("v1beta1"));
        let pending: CrdServing =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {}})).unwrap();
        assert!(!pending.serves("v1beta1"));
        // Just created, as the API server sends it: null lists.
        let created: CrdServing = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"versions": [{"name": "v1beta1", "served": true}]},
            "status": {"acceptedNames": {"kind": "", "plural": ""}, "conditions": null,
                       "storedVersions": ["v1beta1"]}}))
        .unwrap();
        assert!(!created.serves("v1beta1"));
    }
}
