//! The model as the watch streams build it (pure: no I/O, driven by [`watcher::Event`]s).
//!
//! Live events change the model at once. A (re)list — at start-up and after the API server answered
//! 410 Gone — is collected aside from `Init` to `InitDone` and then replaces that kind's objects in
//! one step, so no snapshot ever holds a half-listed kind: a policy missing for a moment would open
//! the pods it isolates. Errors of the stream never reach this module: the model keeps the last
//! known state for as long as the API is unreachable.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Instant,
};

use ipnet::Ipv4Net;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher;
use weir_agent_api::Rejected;
use weir_policy::{
    cluster_policy::{self, ClusterNetworkPolicy},
    model::{Cluster, Labels, NodeInfo, PodInfo, PodKey, Policy, PolicyKey},
};

use crate::trim;

/// The kinds the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    Node,
    ClusterNetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::Service,
        Kind::Node,
        Kind::ClusterNetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::ClusterNetworkPolicy => cluster_policy::KIND,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::ClusterNetworkPolicy => "policy.networking.k8s.io/v1beta1",
            _ => "v1",
        }
    }

    /// The API group and resource name, as RBAC rules and URLs name them.
    pub fn resource(self) -> (&'static str, &'static str) {
        use k8s_openapi::Resource;
        match self {
            Kind::Namespace => (Namespace::GROUP, Namespace::URL_PATH_SEGMENT),
            Kind::Pod => (Pod::GROUP, Pod::URL_PATH_SEGMENT),
            Kind::NetworkPolicy => (NetworkPolicy::GROUP, NetworkPolicy::URL_PATH_SEGMENT),
            Kind::Service => (Service::GROUP, Service::URL_PATH_SEGMENT),
            Kind::Node => (Node::GROUP, Node::URL_PATH_SEGMENT),
            Kind::ClusterNetworkPolicy => (cluster_policy::GROUP, cluster_policy::PLURAL),
        }
    }

    fn from_str(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// An object's identity. `namespace` is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Reads what [`fmt::Display`] writes: `"Pod ns/name"`, `"Node name"` (the `object` of a
    /// [`Rejected`]).
    pub fn parse(text: &str) -> Option<ObjectKey> {
        let (kind, rest) = text.split_once(' ')?;
        let kind = Kind::from_str(kind)?;
        let (namespace, name) = rest.split_once('/').unwrap_or(("", rest));
        Some(ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// A watched object reduced to what the model keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Namespace(Labels),
    Pod(PodInfo),
    /// Checked as it comes off the stream: a relist buffers the compact form, not the spec.
    NetworkPolicy(Box<Policy>),
    /// Checked by the model when applied (its problems are the object's status).
    ClusterNetworkPolicy(Box<ClusterNetworkPolicy>),
    /// A Service's IPv4 ClusterIPs.
    Service(Vec<Ipv4Addr>),
    Node(NodeInfo),
}

/// One object off a watch stream: its key, uid (for Events) and content, or why the model cannot
/// use it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: ObjectKey,
    pub uid: Option<String>,
    pub item: Result<Item, String>,
}

/// A Kubernetes type the source watches.
pub trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    /// Drops every field [`Watched::entry`] does not read (see [`crate::trim`]).
    fn trim(&mut self);
    fn entry(self) -> Entry;
}

fn key_of(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

fn entry_of(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    item: Result<Item, String>,
) -> Entry {
    Entry {
        key: key_of(kind, meta),
        uid: meta.uid.clone(),
        item,
    }
}

impl Watched for Namespace {
    const KIND: Kind = Kind::Namespace;
    fn trim(&mut self) {
        trim::namespace(self);
    }
    fn entry(self) -> Entry {
        let labels = self.metadata.labels.clone().unwrap_or_default();
        entry_of(Self::KIND, &self.metadata, Ok(Item::Namespace(labels)))
    }
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
    fn trim(&mut self) {
        trim::pod(self);
    }
    fn entry(self) -> Entry {
        let item = PodInfo::from_k8s(&self)
            .map(Item::Pod)
            .map_err(|e| e.to_string());
        entry_of(Self::KIND, &self.metadata, item)
    }
}

impl Watched for NetworkPolicy {
    const KIND: Kind = Kind::NetworkPolicy;
    fn trim(&mut self) {
        trim::network_policy(self);
    }
    fn entry(self) -> Entry {
        let item = Policy::from_k8s(&self)
            .map(|policy| Item::NetworkPolicy(Box::new(policy)))
            .map_err(|_| "NetworkPolicy without namespace or name".to_owned());
        entry_of(Self::KIND, &self.metadata, item)
    }
}

impl Watched for Service {
    const KIND: Kind = Kind::Service;
    fn trim(&mut self) {
        trim::service(self);
    }
    fn entry(self) -> Entry {
        let spec = self.spec.as_ref();
        let texts = spec
            .and_then(|s| s.cluster_ips.clone())
            .filter(|ips| !ips.is_empty())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        // "None" (headless) and IPv6 addresses are not ClusterIPs the datapath defers.
        let ips = texts
            .iter()
            .filter_map(|t| match t.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            })
            .collect();
        entry_of(Self::KIND, &self.metadata, Ok(Item::Service(ips)))
    }
}

impl Watched for Node {
    const KIND: Kind = Kind::Node;
    fn trim(&mut self) {
        trim::node(self);
    }
    fn entry(self) -> Entry {
        let item = NodeInfo::from_k8s(&self)
            .map(Item::Node)
            .map_err(|e| e.to_string());
        entry_of(Self::KIND, &self.metadata, item)
    }
}

/// A ClusterNetworkPolicy as the API serves it (the CRD's `v1beta1`), for kube's typed API.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct ClusterNetworkPolicyObject(pub ClusterNetworkPolicy);

impl kube::Resource for ClusterNetworkPolicyObject {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        cluster_policy::KIND.into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        cluster_policy::GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        cluster_policy::VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        cluster_policy::PLURAL.into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.0.metadata
    }
}

impl Watched for ClusterNetworkPolicyObject {
    const KIND: Kind = Kind::ClusterNetworkPolicy;
    fn trim(&mut self) {
        trim::cluster_network_policy(&mut self.0);
    }
    fn entry(self) -> Entry {
        let meta = self.0.metadata.clone();
        let item = Ok(Item::ClusterNetworkPolicy(Box::new(self.0)));
        entry_of(Self::KIND, &meta, item)
    }
}

/// What the agent programs from: the model, the objects it could not use, and when the oldest
/// change not yet handed out happened (for the change → programmed latency).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub cluster: Arc<Cluster>,
    pub generation: u64,
    pub rejected: Vec<Rejected>,
    pub changed_at: Option<Instant>,
}

#[derive(Debug)]
pub struct State {
    /// Shared with the last snapshot handed out; the next change copies it (`Arc::make_mut`), so a
    /// snapshot costs nothing and the agent never sees a change half made.
    cluster: Arc<Cluster>,
    service_cidr: Option<Ipv4Net>,
    /// Every object the model reflects, with its uid.
    objects: BTreeMap<ObjectKey, Option<String>>,
    rejected: BTreeMap<ObjectKey, String>,
    /// Services with a ClusterIP outside the configured service CIDR.
    misplaced_services: BTreeMap<ObjectKey, Vec<Ipv4Addr>>,
    /// Lists in progress, by kind.
    relists: BTreeMap<Kind, Vec<Entry>>,
    synced: BTreeSet<Kind>,
    generation: u64,
    changed_at: Option<Instant>,
}

impl State {
    /// `service_cidr`: Services with a ClusterIP outside it are reported (see
    /// [`State::misplaced_services`]).
    pub fn new(service_cidr: Option<Ipv4Net>) -> Self {
        Self {
            cluster: Arc::default(),
            service_cidr,
            objects: BTreeMap::new(),
            rejected: BTreeMap::new(),
            misplaced_services: BTreeMap::new(),
            relists: BTreeMap::new(),
            synced: BTreeSet::new(),
            generation: 0,
            changed_at: None,
        }
    }

    /// Applies one watch event; returns whether the model changed.
    pub fn handle<K: Watched>(&mut self, event: watcher::Event<K>) -> bool {
        let changed = match event {
            watcher::Event::Apply(object) => self.apply(object.entry()),
            watcher::Event::Delete(object) => self.remove(&object.entry().key),
            watcher::Event::Init => {
                self.relists.insert(K::KIND, Vec::new());
                false
            }
            watcher::Event::InitApply(object) => {
                let entry = object.entry();
                match self.relists.get_mut(&K::KIND) {
                    Some(list) => {
                        list.push(entry);
                        false
                    }
                    None => self.apply(entry),
                }
            }
            watcher::Event::InitDone => self.finish_relist(K::KIND),
        };
        if changed {
            self.generation += 1;
            self.changed_at.get_or_insert_with(Instant::now);
        }
        changed
    }

    /// Replaces every object of `kind` by the list just received.
    fn finish_relist(&mut self, kind: Kind) -> bool {
        self.synced.insert(kind);
        let listed = self.relists.remove(&kind).unwrap_or_default();
        let keep: BTreeSet<&ObjectKey> = listed.iter().map(|e| &e.key).collect();
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| k.kind == kind && !keep.contains(k))
            .cloned()
            .collect();
        let mut changed = false;
        for key in &gone {
            changed |= self.remove(key);
        }
        for entry in listed {
            changed |= self.apply(entry);
        }
        changed
    }

    fn apply(&mut self, entry: Entry) -> bool {
        let Entry { key, uid, item } = entry;
        self.objects.insert(key.clone(), uid);
        let item = match item {
            Ok(item) => item,
            Err(reason) => {
                // An object the model cannot read leaves it, as if deleted: a stale address in a
                // peer set would allow whoever holds it now.
                let changed = self.remove_from_model(&key);
                let newly = self.rejected.insert(key, reason.clone()) != Some(reason);
                return changed || newly;
            }
        };
        let was_rejected = self.rejected.remove(&key).is_some();
        let changed = match item {
            Item::Namespace(labels) => {
                if self.namespace_labels(&key.name) == Some(&labels) {
                    false
                } else {
                    Arc::make_mut(&mut self.cluster).upsert_namespace(key.name.clone(), labels);
                    true
                }
            }
            Item::Pod(pod) => {
                if self.cluster.pod(&pod.key) == Some(&pod) {
                    false
                } else {
                    Arc::make_mut(&mut self.cluster).upsert_pod(pod);
                    true
                }
            }
            Item::NetworkPolicy(policy) => {
                // Checked when it came off the stream: an update that changes nothing the
                // compiler reads (a new resourceVersion, an annotation) is not a change.
                if self.cluster.policy(policy.key()) == Some(&policy) {
                    false
                } else {
                    Arc::make_mut(&mut self.cluster).insert_policy(*policy)
                }
            }
            Item::Service(ips) => {
                let outside: Vec<Ipv4Addr> = ips
                    .into_iter()
                    .filter(|ip| self.service_cidr.is_some_and(|cidr| !cidr.contains(ip)))
                    .collect();
                if outside.is_empty() {
                    self.misplaced_services.remove(&key);
                } else {
                    self.misplaced_services.insert(key.clone(), outside);
                }
                // Services do not change the model.
                false
            }
            Item::ClusterNetworkPolicy(policy) => {
                Arc::make_mut(&mut self.cluster).upsert_cluster_policy(&policy)
            }
            Item::Node(node) => {
                if self.cluster.node(&node.name) == Some(&node) {
                    false
                } else {
                    Arc::make_mut(&mut self.cluster).upsert_node(node);
                    true
                }
            }
        };
        changed || was_rejected
    }

    fn remove(&mut self, key: &ObjectKey) -> bool {
        self.objects.remove(key);
        self.misplaced_services.remove(key);
        let was_rejected = self.rejected.remove(key).is_some();
        self.remove_from_model(key) || was_rejected
    }

    fn remove_from_model(&mut self, key: &ObjectKey) -> bool {
        let present = match key.kind {
            Kind::Namespace => self.namespace_labels(&key.name).is_some(),
            Kind::Pod => self
                .cluster
                .pod(&PodKey::new(key.namespace.clone(), key.name.clone()))
                .is_some(),
            Kind::NetworkPolicy => self
                .cluster
                .policy(&PolicyKey::new(key.namespace.clone(), key.name.clone()))
                .is_some(),
            Kind::Service => false,
            Kind::Node => self.cluster.node(&key.name).is_some(),
            Kind::ClusterNetworkPolicy => true,
        };
        if !present {
            return false;
        }
        let cluster = Arc::make_mut(&mut self.cluster);
        match key.kind {
            Kind::Namespace => cluster.delete_namespace(&key.name),
            Kind::Pod => cluster.delete_pod(&PodKey::new(key.namespace.clone(), key.name.clone())),
            Kind::NetworkPolicy => {
                cluster.delete_policy(&PolicyKey::new(key.namespace.clone(), key.name.clone()))
            }
            Kind::Service => false,
            Kind::Node => cluster.delete_node(&key.name),
            Kind::ClusterNetworkPolicy => cluster.delete_cluster_policy(&key.name),
        }
    }

    /// The labels of a namespace that has a Namespace object.
    fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        self.cluster.namespace_object_labels(name)
    }

    /// Every kind has been listed once: the model is the cluster as it was, not a part of it.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The model as it is now; resets the change time.
    pub fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            cluster: Arc::clone(&self.cluster),
            generation: self.generation,
            rejected: self.rejected(),
            changed_at: self.changed_at.take(),
        }
    }

    pub fn rejected(&self) -> Vec<Rejected> {
        self.rejected
            .iter()
            .map(|(key, reason)| Rejected {
                object: key.to_string(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// Services with a ClusterIP outside the service CIDR: egress to it is judged before DNAT, on
    /// the ClusterIP, not on the pod behind it.
    pub fn misplaced_services(&self) -> Vec<(ObjectKey, Vec<Ipv4Addr>)> {
        self.misplaced_services
            .iter()
            .map(|(k, ips)| (k.clone(), ips.clone()))
            .collect()
    }

    /// The uid of an object the model reflects (or rejected).
    pub fn uid(&self, key: &ObjectKey) -> Option<&str> {
        self.objects.get(key).and_then(|u| u.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use watcher::Event;

    use super::*;

    fn pod(name: &str, app: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": name, "uid": format!("uid-{name}"),
                         "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"podIP": ip}
        }))
        .unwrap()
    }

    fn policy(name: &str, app: &str) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": name},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"]}
        }))
        .unwrap()
    }

    fn policy_names(state: &State) -> Vec<String> {
        state
            .cluster()
            .policies()
            .map(|p| p.key().to_string())
            .collect()
    }

    fn listed<K: Watched>(state: &mut State, objects: Vec<K>) -> bool {
        let mut changed = state.handle(Event::<K>::Init);
        for o in objects {
            changed |= state.handle(Event::InitApply(o));
        }
        changed | state.handle(Event::<K>::InitDone)
    }

    #[test]
    fn live_events_change_the_model_and_the_generation() {
        let mut state = State::new(None);
        assert!(state.handle(Event::Apply(pod("a", "a", "10.244.1.2"))));
        assert_eq!(state.generation(), 1);
        let key = PodKey::new("x", "a");
        assert_eq!(
            state.cluster().pod(&key).unwrap().ip,
            Some(Ipv4Addr::new(10, 244, 1, 2))
        );
        assert!(state.handle(Event::Apply(pod("a", "a", "10.244.1.9"))));
        assert_eq!(
            state.cluster().pod(&key).unwrap().ip,
            Some(Ipv4Addr::new(10, 244, 1, 9))
        );
        assert!(state.handle(Event::Delete(pod("a", "a", "10.244.1.9"))));
        assert!(state.cluster().pod(&key).is_none());
        assert_eq!(state.generation(), 3);
    }

    #[test]
    fn an_update_the_model_does_not_see_is_not_a_change() {
        let mut state = State::new(None);
        state.handle(Event::Apply(pod("a", "a", "10.244.1.2")));
        let mut same = pod("a", "a", "10.244.1.2");
        same.metadata.annotations = Some([("k".to_owned(), "v".to_owned())].into());
        assert!(!state.handle(Event::Apply(same)));
        state.handle(Event::Apply(policy("p", "a")));
        assert!(!state.handle(Event::Apply(policy("p", "a"))));
        assert!(state.handle(Event::Apply(policy("p", "b"))));
        assert_eq!(state.generation(), 3);
    }

    #[test]
    fn a_relist_replaces_a_kind_in_one_step_and_never_drops_policies_midway() {
        let mut state = State::new(None);
        assert!(listed(
            &mut state,
            vec![policy("p1", "a"), policy("p2", "b")]
        ));
        let before = state.snapshot();

        // 410 Gone: the watcher lists again. p2 was deleted and p3 created meanwhile.
        assert!(!state.handle(Event::<NetworkPolicy>::Init));
        assert!(!state.handle(Event::InitApply(policy("p1", "a"))));
        assert!(!state.handle(Event::InitApply(policy("p3", "c"))));
        // Until the list is complete, the model (and any snapshot) still holds every old policy.
        assert_eq!(policy_names(&state), ["x/p1", "x/p2"]);
        assert_eq!(state.generation(), before.generation);
        assert!(state.handle(Event::<NetworkPolicy>::InitDone));
        assert_eq!(policy_names(&state), ["x/p1", "x/p3"]);
        // The snapshot taken before is untouched (copy on write).
        assert_eq!(before.cluster.policies().count(), 2);
        assert!(before.cluster.policy(&PolicyKey::new("x", "p2")).is_some());
    }

    #[test]
    fn a_relist_of_one_kind_leaves_the_others_alone() {
        let mut state = State::new(None);
        listed(&mut state, vec![policy("p1", "a")]);
        listed(&mut state, vec![pod("a", "a", "10.244.1.2")]);
        assert!(listed::<Pod>(&mut state, vec![]));
        assert_eq!(state.cluster().pods().count(), 0);
        assert_eq!(policy_names(&state), ["x/p1"]);
    }

    #[test]
    fn an_identical_relist_is_not_a_change() {
        let mut state = State::new(None);
        listed(&mut state, vec![policy("p1", "a"), policy("p2", "b")]);
        let generation = state.generation();
        assert!(!listed(
            &mut state,
            vec![policy("p2", "b"), policy("p1", "a")]
        ));
        assert_eq!(state.generation(), generation);
    }

    #[test]
    fn synced_only_once_every_kind_was_listed() {
        let mut state = State::new(None);
        listed::<Namespace>(&mut state, vec![]);
        listed::<Pod>(&mut state, vec![]);
        listed::<NetworkPolicy>(&mut state, vec![]);
        listed::<Service>(&mut state, vec![]);
        listed::<ClusterNetworkPolicyObject>(&mut state, vec![]);
        assert!(!state.is_synced());
        // A list that started but did not finish does not count.
        state.handle(Event::<Node>::Init);
        assert!(!state.is_synced());
        state.handle(Event::<Node>::InitDone);
        assert!(state.is_synced());
    }

    #[test]
    fn cluster_policies_come_and_go_with_their_objects() {
        let mut state = State::new(None);
        let object = |tier: &str| {
            ClusterNetworkPolicyObject(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "c", "generation": 2, "annotations": {"a": "b"}},
                    "spec": {"tier": tier, "priority": 5, "subject": {"namespaces": {}}},
                    "status": {"conditions": []}
                }))
                .unwrap(),
            )
        };
        let mut trimmed = object("Admin");
        trimmed.trim();
        assert!(trimmed.0.status.is_none() && trimmed.0.metadata.annotations.is_none());
        assert_eq!(trimmed.0.metadata.generation, Some(2));
        assert!(listed(&mut state, vec![trimmed]));
        assert_eq!(state.cluster().cluster_policies().count(), 1);
        // Unenforceable: it leaves the enforced ones (and is reported by the model).
        assert!(state.handle(Event::Apply(object("Sideways"))));
        assert_eq!(state.cluster().cluster_policies().count(), 0);
        assert_eq!(state.cluster().unenforced_cluster_policies().count(), 1);
        assert!(state.handle(Event::Delete(object("Sideways"))));
        assert_eq!(state.cluster().unenforced_cluster_policies().count(), 0);
    }

    #[test]
    fn an_unreadable_pod_is_rejected_and_leaves_the_model() {
        let mut state = State::new(None);
        state.handle(Event::Apply(pod("a", "a", "10.244.1.2")));
        assert!(state.handle(Event::Apply(pod("a", "a", "10.244.1"))));
        assert!(state.cluster().pod(&PodKey::new("x", "a")).is_none());
        let rejected = state.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].object, "Pod x/a");
        assert!(
            rejected[0].reason.contains("10.244.1"),
            "{}",
            rejected[0].reason
        );
        assert_eq!(
            state.uid(&ObjectKey::parse("Pod x/a").unwrap()),
            Some("uid-a")
        );
        // Fixed: back in the model, no longer rejected.
        assert!(state.handle(Event::Apply(pod("a", "a", "10.244.1.3"))));
        assert!(state.rejected().is_empty());
    }

    #[test]
    fn namespaces_and_nodes_follow_their_objects() {
        let mut state = State::new(None);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "labels": {"team": "a"}}}))
        .unwrap();
        assert!(state.handle(Event::Apply(ns.clone())));
        assert_eq!(state.cluster().namespace_labels("x")["team"], "a");
        assert!(!state.handle(Event::Apply(ns.clone())));
        assert!(state.handle(Event::Delete(ns)));
        assert!(!state.cluster().namespace_labels("x").contains_key("team"));

        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n2"}, "spec": {"podCIDRs": ["10.244.2.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.12"}]}}))
        .unwrap();
        assert!(state.handle(Event::Apply(node)));
        let info = state.cluster().node("n2").unwrap();
        assert_eq!(info.pod_cidrs, vec!["10.244.2.0/24".parse().unwrap()]);
    }

    #[test]
    fn services_outside_the_service_cidr_are_reported_and_change_nothing() {
        let mut state = State::new(Some("10.96.0.0/12".parse().unwrap()));
        let service = |name: &str, ips: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "x", "name": name}, "spec": {"clusterIPs": ips}}))
            .unwrap()
        };
        assert!(!state.handle(Event::Apply(service(
            "in",
            serde_json::json!(["10.96.0.10"])
        ))));
        assert!(!state.handle(Event::Apply(service(
            "headless",
            serde_json::json!(["None"])
        ))));
        assert!(!state.handle(Event::Apply(service(
            "out",
            serde_json::json!(["fd00::1", "172.20.0.5"])
        ))));
        let misplaced = state.misplaced_services();
        assert_eq!(misplaced.len(), 1);
        assert_eq!(misplaced[0].0.to_string(), "Service x/out");
        assert_eq!(misplaced[0].1, vec![Ipv4Addr::new(172, 20, 0, 5)]);
        state.handle(Event::Delete(service("out", serde_json::json!([]))));
        assert!(state.misplaced_services().is_empty());
        assert_eq!(state.generation(), 0);
    }

    #[test]
    fn a_snapshot_hands_out_the_oldest_unseen_change_once() {
        let mut state = State::new(None);
        assert!(state.snapshot().changed_at.is_none());
        state.handle(Event::Apply(pod("a", "a", "10.244.1.2")));
        let first = state.snapshot().changed_at.unwrap();
        state.handle(Event::Apply(pod("b", "b", "10.244.1.3")));
        let second = state.snapshot();
        assert!(second.changed_at.unwrap() >= first);
        assert_eq!(second.generation, 2);
        assert!(state.snapshot().changed_at.is_none());
    }

    #[test]
    fn object_keys_read_back_what_they_write() {
        for text in ["Pod x/a", "NetworkPolicy prod/db-policy", "Node n1"] {
            assert_eq!(ObjectKey::parse(text).unwrap().to_string(), text);
        }
        assert!(ObjectKey::parse("Deployment x/a").is_none());
        assert!(ObjectKey::parse("policy.yaml").is_none());
    }
}
