//! A fake Kubernetes API server behind kube's [`Client`], on tower-test's mock service: lists,
//! watches that replay every event after the requested resourceVersion (held open until there is
//! one), compaction (a watch from before it is answered 410 Gone, as etcd compaction does),
//! outages (every request answered 503), the Events API, and a CRD (ClusterNetworkPolicy) that is
//! served only once installed, with its CustomResourceDefinition object (watchable by name).
//!
//! It implements only what the agent's watchers and event recorder use.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use http::{Request, Response, StatusCode};
use kube::{client::Body, Client};
use serde_json::{json, Value};
use tower_test::mock::{self, SendResponse};

type Handle = mock::Handle<Request<Body>, Response<Body>>;

const CLUSTER_POLICIES: &str = "/apis/policy.networking.k8s.io/v1beta1/clusternetworkpolicies";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// The collection path of each watched kind.
const COLLECTIONS: [(&str, &str); 7] = [
    ("Namespace", "/api/v1/namespaces"),
    ("Pod", "/api/v1/pods"),
    (
        "NetworkPolicy",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ),
    ("Service", "/api/v1/services"),
    ("Node", "/api/v1/nodes"),
    ("ClusterNetworkPolicy", CLUSTER_POLICIES),
    ("CustomResourceDefinition", CRDS),
];

fn collection_of(kind: &str) -> &'static str {
    COLLECTIONS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("the fake API does not serve {kind}"))
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    /// (resourceVersion, watch event)
    log: Vec<(u64, Value)>,
    /// Watches from before this resourceVersion are answered 410 Gone.
    compacted: u64,
    held: Vec<(u64, SendResponse<Response<Body>>)>,
}

#[derive(Default)]
struct Server {
    collections: BTreeMap<&'static str, Collection>,
    resource_version: u64,
    outage: bool,
    /// The ClusterNetworkPolicy CRD is installed (its collection is served).
    crd_installed: bool,
    /// CustomResourceDefinitions are answered 403 (a ClusterRole without them).
    crds_forbidden: bool,
    /// "GET /api/v1/pods?limit=500", in order.
    requests: Vec<String>,
    /// Bodies of the Events the client created.
    events: Vec<Value>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    server: Arc<Mutex<Server>>,
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": reason, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .expect("a valid response")
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(body.to_string().into_bytes()))
        .expect("a valid response")
}

fn watch_body(events: &[Value]) -> Response<Body> {
    let mut text = String::new();
    for event in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(text.into_bytes()))
        .expect("a valid response")
}

fn gone() -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}})
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn object_name(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().expect("objects have a name")
    )
}

impl FakeApi {
    /// A client talking to a new fake API server, which runs on the current tokio runtime.
    pub fn start() -> (Client, FakeApi) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi::default();
        tokio::spawn(api.clone().serve(handle));
        (Client::new(service, "default"), api)
    }

    fn server(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn serve(self, mut handle: Handle) {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or("").to_owned();
            let mut server = self.server();
            server
                .requests
                .push(format!("{} {path}?{query}", parts.method));
            if server.outage {
                respond.send_response(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                ));
                continue;
            }
            if path == CRDS && server.crds_forbidden {
                respond.send_response(status(StatusCode::FORBIDDEN, "Forbidden"));
                continue;
            }
            if path.contains("/events") {
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                server.events.push(event.clone());
                respond.send_response(ok(&event));
                continue;
            }
            let Some((_, collection_path)) = COLLECTIONS
                .iter()
                .find(|(_, p)| *p == path && (*p != CLUSTER_POLICIES || server.crd_installed))
            else {
                respond.send_response(status(StatusCode::NOT_FOUND, "NotFound"));
                continue;
            };
            let resource_version = server.resource_version;
            let collection = server.collections.entry(collection_path).or_default();
            if query_value(&query, "watch") == Some("true") {
                let since: u64 = query_value(&query, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if since < collection.compacted {
                    respond.send_response(watch_body(&[gone()]));
                    continue;
                }
                // From "0": the objects as they are now, as ADDED events (as the API server does).
                let events: Vec<Value> = if since == 0 {
                    collection
                        .objects
                        .values()
                        .map(|o| json!({"type": "ADDED", "object": o}))
                        .collect()
                } else {
                    collection
                        .log
                        .iter()
                        .filter(|(rv, _)| *rv > since)
                        .map(|(_, e)| e.clone())
                        .collect()
                };
                if events.is_empty() {
                    collection.held.push((since, respond));
                } else {
                    respond.send_response(watch_body(&events));
                }
            } else {
                let items: Vec<Value> = collection.objects.values().cloned().collect();
                respond.send_response(ok(&json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": resource_version.to_string()},
                    "items": items
                })));
            }
        }
    }

    /// Creates or replaces an object (kind from its `kind`) and tells the watchers.
    pub fn apply(&self, object: Value) {
        self.change(object, false, true);
    }

    /// Deletes an object and tells the watchers.
    pub fn delete(&self, object: Value) {
        self.change(object, true, true);
    }

    /// Changes an object without telling the watchers: an event lost while a watch was down.
    /// Only a relist (after [`FakeApi::compact`]) shows it.
    pub fn apply_unseen(&self, object: Value) {
        self.change(object, false, false);
    }

    pub fn delete_unseen(&self, object: Value) {
        self.change(object, true, false);
    }

    fn change(&self, mut object: Value, delete: bool, log: bool) {
        let kind = object["kind"]
            .as_str()
            .expect("objects have a kind")
            .to_owned();
        let path = collection_of(&kind);
        let mut server = self.server();
        server.resource_version += 1;
        let rv = server.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let collection = server.collections.entry(path).or_default();
        let name = object_name(&object);
        let kind_of_event = if delete {
            collection.objects.remove(&name);
            "DELETED"
        } else if collection.objects.insert(name, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if log {
            let event = json!({"type": kind_of_event, "object": object});
            collection.log.push((rv, event.clone()));
            for (_, respond) in collection.held.drain(..) {
                respond.send_response(watch_body(std::slice::from_ref(&event)));
            }
        }
    }

    /// Forgets the event history of `kind`, as etcd compaction does: every watch of it from an
    /// older resourceVersion, open or new, is answered 410 Gone, and the watcher must list again.
    pub fn compact(&self, kind: &str) {
        let mut server = self.server();
        let rv = server.resource_version;
        let collection = server.collections.entry(collection_of(kind)).or_default();
        collection.compacted = rv + 1;
        collection.log.clear();
        for (_, respond) in collection.held.drain(..) {
            respond.send_response(watch_body(&[gone()]));
        }
    }

    /// While on, every request fails with 503 and open watches are cut.
    pub fn set_outage(&self, outage: bool) {
        let mut server = self.server();
        server.outage = outage;
        if outage {
            for collection in server.collections.values_mut() {
                for (_, respond) in collection.held.drain(..) {
                    respond.send_response(status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                    ));
                }
            }
        }
    }

    /// Installs or removes the ClusterNetworkPolicy CRD (its CustomResourceDefinition object,
    /// established and serving v1beta1, and its collection): while removed, its collection is 404
    /// and open watches of it are answered 404.
    pub fn set_crd_installed(&self, installed: bool) {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "clusternetworkpolicies.policy.networking.k8s.io"},
            "spec": {"group": "policy.networking.k8s.io",
                     "versions": [{"name": "v1alpha2", "served": true}, {"name": "v1beta1", "served": true}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        // As the API server does: created with null lists, the collection served, then
        // Established.
        if installed {
            let mut created = crd.clone();
            created["status"] =
                json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": null});
            self.change(created, false, true);
        }
        self.server().crd_installed = installed;
        self.change(crd, !installed, true);
        let mut server = self.server();
        if !installed {
            if let Some(collection) = server.collections.get_mut(CLUSTER_POLICIES) {
                collection.objects.clear();
                for (_, respond) in collection.held.drain(..) {
                    respond.send_response(status(StatusCode::NOT_FOUND, "NotFound"));
                }
            }
        }
    }

    /// Answers requests for CustomResourceDefinitions 403 Forbidden from now on.
    pub fn forbid_crds(&self) {
        self.server().crds_forbidden = true;
    }

    /// Every request so far: "METHOD path?query".
    pub fn requests(&self) -> Vec<String> {
        self.server().requests.clone()
    }

    /// The Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.server().events.clone()
    }
}
