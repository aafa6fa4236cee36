//! The cluster as the agent sees it: namespaces with their labels, pods with their labels, address
//! and named ports, NetworkPolicies (checked once, kept in the compiler's form), and nodes with their address and pod
//! CIDRs (for routing between nodes).
//!
//! The model is filled from the Kubernetes API or from manifests ([`Cluster::apply`]) and read by
//! [`crate::compile::compile`]. It keeps only what policy needs, so that a node agent watching a large
//! cluster stays small.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use ipnet::Ipv4Net;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use thiserror::Error;

use crate::{
    cluster_policy::{ClusterNetworkPolicy, ClusterPolicy, ClusterProblem},
    compile::{
        policy::{parse_policy, ParsedPolicy},
        Problem,
    },
    fast_hash::FastSet,
    manifest::Object,
};

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// The label Kubernetes sets on every namespace, with the namespace's name as value.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The transport protocols a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The IP protocol number, as the datapath sees it in packets.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.number() == number)
    }

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`; case-sensitive like the API server).
    pub fn from_k8s(name: &str) -> Option<Self> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

macro_rules! namespaced_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            pub namespace: String,
            pub name: String,
        }

        impl $name {
            pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
                Self { namespace: namespace.into(), name: name.into() }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.namespace, self.name)
            }
        }
    };
}

namespaced_key!(
    /// A pod's identity: namespace and name.
    PodKey
);
namespaced_key!(
    /// A NetworkPolicy's identity: namespace and name.
    PolicyKey
);

/// A container port that has a name, which NetworkPolicy ports can refer to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What policy needs to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub key: PodKey,
    /// Shared: the [`Cluster`] keeps one copy of each distinct label set (the pods of one
    /// ReplicaSet carry the same labels).
    pub labels: Arc<Labels>,
    /// The pod's IPv4 address; `None` until it has one (and for pods that cannot be a peer, see
    /// [`PodInfo::from_k8s`]). A pod without an address is in no peer set.
    pub ip: Option<Ipv4Addr>,
    pub node: Option<String>,
    pub ports: Vec<NamedPort>,
}

/// A NetworkPolicy as the model keeps it: checked when stored and kept in the compiler's form
/// (a third of the spec's size at scale, and never parsed again), with what checking found.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub(crate) parsed: ParsedPolicy,
    pub(crate) problems: Vec<Problem>,
}

impl Policy {
    /// Checks a NetworkPolicy (namespace and name required). A policy without a spec is the
    /// default spec, which is what the API server would have stored.
    pub fn from_k8s(policy: &NetworkPolicy) -> Result<Policy, ModelError> {
        let (namespace, name) = namespaced("NetworkPolicy", &policy.metadata)?;
        let key = PolicyKey::new(namespace, name);
        let default = Default::default();
        let (parsed, problems) = parse_policy(key, policy.spec.as_ref().unwrap_or(&default));
        Ok(Policy { parsed, problems })
    }

    pub fn key(&self) -> &PolicyKey {
        &self.parsed.key
    }

    /// What is wrong with the policy (the pods it selects deny more than it asks).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// What routing needs to know about a node: where to send its pods' traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The node's IPv4 address on the network nodes share; `None` until it has one.
    pub ip: Option<Ipv4Addr>,
    /// The node's IPv4 pod ranges (`spec.podCIDRs`, or `spec.podCIDR` on older objects).
    pub pod_cidrs: Vec<Ipv4Net>,
    /// Every IPv4 address in `status.addresses` (what a ClusterNetworkPolicy `nodes` peer means).
    pub addresses: Vec<Ipv4Addr>,
    /// The node's labels (for ClusterNetworkPolicy `nodes` peers).
    pub labels: Labels,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("{kind} has no metadata.name")]
    MissingName { kind: &'static str },
    #[error("{kind} {name} has no metadata.namespace")]
    MissingNamespace { kind: &'static str, name: String },
    #[error("pod {pod}: status.podIP {ip:?} is not an IP address")]
    InvalidPodIp { pod: PodKey, ip: String },
    #[error("node {node}: pod CIDR {cidr:?} is not a CIDR")]
    InvalidNodeCidr { node: String, cidr: String },
    #[error("node {node}: address {ip:?} is not an IP address")]
    InvalidNodeIp { node: String, ip: String },
}

impl NodeInfo {
    /// Converts a Kubernetes Node. The address is the first IPv4 `InternalIP` of
    /// `status.addresses`, else the first IPv4 `ExternalIP` (what kubelet reports on clouds
    /// without an internal network). IPv6 pod CIDRs are skipped: Weir's datapath is IPv4.
    pub fn from_k8s(node: &Node) -> Result<NodeInfo, ModelError> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Node" })?;
        let spec = node.spec.as_ref();
        let texts: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
            Some(cidrs) if !cidrs.is_empty() => cidrs.iter().collect(),
            _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        };
        let mut pod_cidrs = Vec::new();
        for text in texts {
            match text.parse::<ipnet::IpNet>() {
                Ok(ipnet::IpNet::V4(net)) => pod_cidrs.push(net.trunc()),
                Ok(ipnet::IpNet::V6(_)) => {}
                Err(_) => {
                    return Err(ModelError::InvalidNodeCidr {
                        node: name,
                        cidr: text.clone(),
                    })
                }
            }
        }
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut ip = None;
        for wanted in ["InternalIP", "ExternalIP"] {
            for address in addresses.iter().filter(|a| a.type_ == wanted) {
                match address.address.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v4)) => {
                        ip = Some(v4);
                        break;
                    }
                    Ok(IpAddr::V6(_)) => {}
                    Err(_) => {
                        return Err(ModelError::InvalidNodeIp {
                            node: name,
                            ip: address.address.clone(),
                        })
                    }
                }
            }
            if ip.is_some() {
                break;
            }
        }
        let mut all: Vec<Ipv4Addr> = addresses
            .iter()
            .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
            .collect();
        all.sort_unstable();
        all.dedup();
        Ok(NodeInfo {
            name,
            ip,
            pod_cidrs,
            addresses: all,
            labels: node.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

impl PodInfo {
    /// Converts a Kubernetes Pod. The address is `status.podIP` if it is IPv4, else the first IPv4
    /// address of `status.podIPs`. Three kinds of pod get no address, so that no peer set holds them:
    /// - `hostNetwork` pods: their address is the node's, and the NetworkPolicy documentation lets a
    ///   plugin that cannot tell their traffic from the node's ignore them when matching selectors;
    /// - pods that have finished (`Succeeded`, `Failed`): their address may already belong to a new pod.
    ///
    /// Named ports come from every container port that has a name; an unknown protocol or a port
    /// number out of range drops that port (so a rule naming it matches nothing, the safe side).
    pub fn from_k8s(pod: &Pod) -> Result<PodInfo, ModelError> {
        let key = namespaced("Pod", &pod.metadata).map(|(ns, name)| PodKey::new(ns, name))?;
        let spec = pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        let ip = if host_network || finished {
            None
        } else {
            pod_ipv4(pod, &key)?
        };
        Ok(PodInfo {
            labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
            ip,
            node: spec.and_then(|s| s.node_name.clone()),
            ports: named_ports(pod),
            key,
        })
    }
}

fn namespaced(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String), ModelError> {
    let name = meta.name.clone().ok_or(ModelError::MissingName { kind })?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| ModelError::MissingNamespace {
            kind,
            name: name.clone(),
        })?;
    Ok((namespace, name))
}

fn pod_ipv4(pod: &Pod, key: &PodKey) -> Result<Option<Ipv4Addr>, ModelError> {
    let Some(status) = &pod.status else {
        return Ok(None);
    };
    let candidates = status
        .pod_ip
        .iter()
        .chain(status.pod_ips.iter().flatten().map(|p| &p.ip));
    for text in candidates {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => return Ok(Some(ip)),
            Ok(IpAddr::V6(_)) => {}
            Err(_) => {
                return Err(ModelError::InvalidPodIp {
                    pod: key.clone(),
                    ip: text.clone(),
                })
            }
        }
    }
    Ok(None)
}

fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    let mut ports: Vec<NamedPort> = containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone()?;
            let protocol = match p.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(text) => Protocol::from_k8s(text)?,
            };
            let port = u16::try_from(p.container_port).ok().filter(|&n| n != 0)?;
            Some(NamedPort {
                name,
                port,
                protocol,
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Everything the compiler reads. Cheap to clone: pods and policies are shared (`Arc`), which
/// also lets [`crate::compile::Incremental`] see what changed by pointer.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Namespaces that have a Namespace object, with that object's labels.
    namespaces: BTreeMap<String, Labels>,
    pods: BTreeMap<PodKey, Arc<PodInfo>>,
    /// How many pods each namespace has (so listing namespaces does not walk the pods).
    pods_per_namespace: BTreeMap<String, usize>,
    /// Every distinct pod label set, shared by the pods carrying it.
    label_sets: FastSet<Arc<Labels>>,
    policies: BTreeMap<PolicyKey, Arc<Policy>>,
    nodes: BTreeMap<String, NodeInfo>,
    /// ClusterNetworkPolicies that are enforced (maybe with problems), by name.
    cluster_policies: BTreeMap<String, Arc<ClusterPolicy>>,
    /// ClusterNetworkPolicies that cannot be enforced at all, by name, with why.
    unenforced_cluster_policies: BTreeMap<String, ClusterProblem>,
}

impl Cluster {
    /// Checks and stores a ClusterNetworkPolicy (see [`ClusterPolicy::from_object`]); returns
    /// whether the model changed.
    pub fn upsert_cluster_policy(&mut self, object: &ClusterNetworkPolicy) -> bool {
        let name = object.metadata.name.clone().unwrap_or_default();
        match ClusterPolicy::from_object(object) {
            Ok(policy) => {
                let removed = self.unenforced_cluster_policies.remove(&name).is_some();
                if self
                    .cluster_policies
                    .get(&name)
                    .is_some_and(|p| **p == policy)
                {
                    return removed;
                }
                self.cluster_policies.insert(name, Arc::new(policy));
                true
            }
            Err(problem) => {
                let removed = self.cluster_policies.remove(&name).is_some();
                let changed = self.unenforced_cluster_policies.get(&name) != Some(&problem);
                self.unenforced_cluster_policies.insert(name, problem);
                removed || changed
            }
        }
    }

    pub fn delete_cluster_policy(&mut self, name: &str) -> bool {
        let a = self.cluster_policies.remove(name).is_some();
        let b = self.unenforced_cluster_policies.remove(name).is_some();
        a || b
    }

    /// The enforced ClusterNetworkPolicies, by name.
    pub fn cluster_policies(&self) -> impl Iterator<Item = &ClusterPolicy> {
        self.cluster_policies.values().map(|p| &**p)
    }

    pub(crate) fn cluster_policy_entries(&self) -> &BTreeMap<String, Arc<ClusterPolicy>> {
        &self.cluster_policies
    }

    /// The ClusterNetworkPolicies that are not enforced at all, with why.
    pub fn unenforced_cluster_policies(&self) -> impl Iterator<Item = &ClusterProblem> {
        self.unenforced_cluster_policies.values()
    }

    pub fn upsert_node(&mut self, node: NodeInfo) {
        self.nodes.insert(node.name.clone(), node);
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    pub fn upsert_namespace(&mut self, name: impl Into<String>, labels: Labels) {
        self.namespaces.insert(name.into(), labels);
    }

    /// The labels of a namespace that has a Namespace object, as stored.
    pub fn namespace_object_labels(&self, name: &str) -> Option<&Labels> {
        self.namespaces.get(name)
    }

    pub fn delete_namespace(&mut self, name: &str) -> bool {
        self.namespaces.remove(name).is_some()
    }

    pub fn upsert_pod(&mut self, mut pod: PodInfo) {
        pod.labels = match self.label_sets.get(&pod.labels) {
            Some(shared) => shared.clone(),
            None => {
                self.label_sets.insert(pod.labels.clone());
                pod.labels
            }
        };
        let key = pod.key.clone();
        if self.pods.insert(key.clone(), Arc::new(pod)).is_none() {
            *self.pods_per_namespace.entry(key.namespace).or_default() += 1;
        }
        self.forget_unused_label_sets();
    }

    pub fn delete_pod(&mut self, key: &PodKey) -> bool {
        let deleted = self.pods.remove(key).is_some();
        if deleted {
            if let Some(count) = self.pods_per_namespace.get_mut(&key.namespace) {
                *count -= 1;
                if *count == 0 {
                    self.pods_per_namespace.remove(&key.namespace);
                }
            }
        }
        self.forget_unused_label_sets();
        deleted
    }

    /// Drops label sets no pod carries any more, once they could be as many as the pods (so the
    /// walk costs O(1) per change, amortized).
    fn forget_unused_label_sets(&mut self) {
        if self.label_sets.len() > 2 * self.pods.len() + 64 {
            self.label_sets
                .retain(|labels| Arc::strong_count(labels) > 1);
        }
    }

    /// Sets a known pod's address; returns whether the pod is known.
    pub fn set_pod_ip(&mut self, key: &PodKey, ip: Option<Ipv4Addr>) -> bool {
        match self.pods.get_mut(key) {
            Some(pod) => {
                if pod.ip != ip {
                    Arc::make_mut(pod).ip = ip;
                }
                true
            }
            None => false,
        }
    }

    /// Checks and stores a NetworkPolicy under its namespace and name (see [`Policy::from_k8s`]).
    pub fn upsert_policy(&mut self, policy: NetworkPolicy) -> Result<(), ModelError> {
        self.insert_policy(Policy::from_k8s(&policy)?);
        Ok(())
    }

    /// Stores a checked policy unless an equal one is stored; returns whether it was stored.
    pub fn insert_policy(&mut self, policy: Policy) -> bool {
        if self.policy(policy.key()) == Some(&policy) {
            return false;
        }
        self.policies.insert(policy.key().clone(), Arc::new(policy));
        true
    }

    pub fn delete_policy(&mut self, key: &PolicyKey) -> bool {
        self.policies.remove(key).is_some()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&PodInfo> {
        self.pods.get(key).map(|p| &**p)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values().map(|p| &**p)
    }

    /// Pods as shared, for the incremental compiler.
    pub(crate) fn pod_entries(&self) -> &BTreeMap<PodKey, Arc<PodInfo>> {
        &self.pods
    }

    pub fn policy(&self, key: &PolicyKey) -> Option<&Policy> {
        self.policies.get(key).map(|p| &**p)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().map(|p| &**p)
    }

    /// Policies as shared, for the incremental compiler.
    pub(crate) fn policy_entries(&self) -> &BTreeMap<PolicyKey, Arc<Policy>> {
        &self.policies
    }

    /// Names of the namespaces that have a Namespace object or a pod.
    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self
            .namespaces
            .keys()
            .map(String::as_str)
            .chain(self.pods_per_namespace.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter()
    }

    /// The labels namespace selectors see. `kubernetes.io/metadata.name` is always the namespace's
    /// name, as the API server enforces; a namespace without a Namespace object has only that label.
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
        labels
    }

    /// Applies one object: Namespaces, Pods, NetworkPolicies and Nodes are stored; other kinds are
    /// ignored.
    pub fn apply(&mut self, object: Object) -> Result<(), ModelError> {
        match object {
            Object::Namespace(ns) => self.apply_namespace(&ns),
            Object::Pod(pod) => {
                self.upsert_pod(PodInfo::from_k8s(&pod)?);
                Ok(())
            }
            Object::NetworkPolicy(policy) => self.upsert_policy(policy),
            Object::ClusterNetworkPolicy(policy) => {
                self.upsert_cluster_policy(&policy);
                Ok(())
            }
            Object::Node(node) => {
                self.upsert_node(NodeInfo::from_k8s(&node)?);
                Ok(())
            }
            Object::Service(_) | Object::Ignored { .. } => Ok(()),
        }
    }

    /// Applies objects in order, stopping at the first error.
    pub fn apply_all(
        &mut self,
        objects: impl IntoIterator<Item = Object>,
    ) -> Result<(), ModelError> {
        objects.into_iter().try_for_each(|o| self.apply(o))
    }

    fn apply_namespace(&mut self, ns: &Namespace) -> Result<(), ModelError> {
        let name = ns
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Namespace" })?;
        self.upsert_namespace(name, ns.metadata.labels.clone().unwrap_or_default());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_json(extra: serde_json::Value) -> Pod {
        let mut base = serde_json::json!({
            "metadata": {"namespace": "prod", "name": "web", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9000}
                ]},
                {"name": "d", "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "SCTP"}]}
            ]},
            "status": {"podIP": "10.244.1.5"}
        });
        merge(&mut base, extra);
        serde_json::from_value(base).expect("valid pod")
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    #[test]
    fn pod_conversion_keeps_labels_node_ip_and_named_ports_of_every_container() {
        let info = PodInfo::from_k8s(&pod_json(serde_json::json!({}))).unwrap();
        assert_eq!(info.key, PodKey::new("prod", "web"));
        assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(info.ip, Some(Ipv4Addr::new(10, 244, 1, 5)));
        assert_eq!(info.node.as_deref(), Some("n1"));
        let names: Vec<_> = info
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            names,
            vec![
                ("dns", 53, Protocol::Udp),
                ("http", 8080, Protocol::Tcp),
                ("metrics", 9090, Protocol::Sctp)
            ]
        );
    }

    #[test]
    fn pod_ip_prefers_ipv4_from_pod_ips_when_pod_ip_is_ipv6() {
        let pod = pod_json(serde_json::json!({"status": {
            "podIP": "fd00::5", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.1.9"}]}}));
        assert_eq!(
            PodInfo::from_k8s(&pod).unwrap().ip,
            Some(Ipv4Addr::new(10, 244, 1, 9))
        );
    }

    #[test]
    fn ipv6_only_pod_has_no_address() {
        let pod = pod_json(serde_json::json!({"status": {"podIP": "fd00::5"}}));
        assert_eq!(PodInfo::from_k8s(&pod).unwrap().ip, None);
    }

    #[test]
    fn host_network_and_finished_pods_are_in_no_peer_set() {
        let host = pod_json(serde_json::json!({"spec": {"hostNetwork": true}}));
        assert_eq!(PodInfo::from_k8s(&host).unwrap().ip, None);
        for phase in ["Succeeded", "Failed"] {
            let done = pod_json(serde_json::json!({"status": {"phase": phase}}));
            assert_eq!(PodInfo::from_k8s(&done).unwrap().ip, None, "{phase}");
        }
        let running = pod_json(serde_json::json!({"status": {"phase": "Running"}}));
        assert!(PodInfo::from_k8s(&running).unwrap().ip.is_some());
    }

    #[test]
    fn malformed_pod_ip_and_missing_namespace_are_errors() {
        let bad = pod_json(serde_json::json!({"status": {"podIP": "10.0.0"}}));
        assert!(matches!(
            PodInfo::from_k8s(&bad),
            Err(ModelError::InvalidPodIp { .. })
        ));
        let mut no_ns = pod_json(serde_json::json!({}));
        no_ns.metadata.namespace = None;
        assert!(matches!(
            PodInfo::from_k8s(&no_ns),
            Err(ModelError::MissingNamespace { .. })
        ));
    }

    #[test]
    fn namespace_without_object_has_only_its_name_label() {
        let cluster = Cluster::default();
        let labels = cluster.namespace_labels("team-a");
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[NAMESPACE_NAME_LABEL], "team-a");
    }

    #[test]
    fn namespace_name_label_is_always_the_name() {
        let mut cluster = Cluster::default();
        let mut labels = Labels::new();
        labels.insert("env".into(), "prod".into());
        labels.insert(NAMESPACE_NAME_LABEL.into(), "spoofed".into());
        cluster.upsert_namespace("prod", labels);
        let seen = cluster.namespace_labels("prod");
        assert_eq!(seen["env"], "prod");
        assert_eq!(seen[NAMESPACE_NAME_LABEL], "prod");
    }

    #[test]
    fn policy_needs_namespace_and_name_and_is_kept_checked() {
        let mut cluster = Cluster::default();
        let mut policy = NetworkPolicy::default();
        policy.metadata.name = Some("p".into());
        assert!(cluster.upsert_policy(policy.clone()).is_err());
        policy.metadata.namespace = Some("prod".into());
        policy.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
        cluster.upsert_policy(policy).unwrap();
        let stored = cluster.policy(&PolicyKey::new("prod", "p")).unwrap();
        assert_eq!(stored.key(), &PolicyKey::new("prod", "p"));
        assert!(stored.problems().is_empty());
        // An equal policy is not stored again.
        let mut again = NetworkPolicy::default();
        again.metadata.namespace = Some("prod".into());
        again.metadata.name = Some("p".into());
        assert!(!cluster.insert_policy(Policy::from_k8s(&again).unwrap()));
    }

    #[test]
    fn set_pod_ip_and_delete_report_whether_the_pod_exists() {
        let mut cluster = Cluster::default();
        let key = PodKey::new("a", "b");
        assert!(!cluster.set_pod_ip(&key, None));
        cluster.upsert_pod(PodInfo {
            key: key.clone(),
            labels: Labels::new().into(),
            ip: None,
            node: None,
            ports: vec![],
        });
        assert!(cluster.set_pod_ip(&key, Some(Ipv4Addr::new(1, 2, 3, 4))));
        assert_eq!(
            cluster.pod(&key).unwrap().ip,
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert!(cluster.delete_pod(&key));
        assert!(!cluster.delete_pod(&key));
    }

    fn node_json(value: serde_json::Value) -> Node {
        serde_json::from_value(value).expect("valid node")
    }

    #[test]
    fn node_conversion_takes_internal_ip_and_ipv4_pod_cidrs() {
        let node = node_json(serde_json::json!({
            "metadata": {"name": "n2"},
            "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["fd00:2::/64", "10.244.2.7/24"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n2"},
                {"type": "ExternalIP", "address": "198.51.100.2"},
                {"type": "InternalIP", "address": "fd00::2"},
                {"type": "InternalIP", "address": "192.0.2.12"}
            ]}
        }));
        let info = NodeInfo::from_k8s(&node).unwrap();
        assert_eq!(info.name, "n2");
        assert_eq!(info.ip, Some(Ipv4Addr::new(192, 0, 2, 12)));
        assert_eq!(info.pod_cidrs, vec!["10.244.2.0/24".parse().unwrap()]);
    }

    #[test]
    fn node_without_pod_cidrs_falls_back_to_pod_cidr_and_external_ip() {
        let node = node_json(serde_json::json!({
            "metadata": {"name": "n3"},
            "spec": {"podCIDR": "10.244.3.0/24"},
            "status": {"addresses": [{"type": "ExternalIP", "address": "198.51.100.3"}]}
        }));
        let info = NodeInfo::from_k8s(&node).unwrap();
        assert_eq!(info.ip, Some(Ipv4Addr::new(198, 51, 100, 3)));
        assert_eq!(info.pod_cidrs, vec!["10.244.3.0/24".parse().unwrap()]);
        let bare = NodeInfo::from_k8s(&node_json(serde_json::json!({"metadata": {"name": "n4"}})))
            .unwrap();
        assert_eq!((bare.ip, bare.pod_cidrs.len()), (None, 0));
    }

    #[test]
    fn malformed_node_cidr_or_address_is_an_error() {
        let bad_cidr = node_json(serde_json::json!({
            "metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.300.0/24"]}}));
        assert!(matches!(
            NodeInfo::from_k8s(&bad_cidr),
            Err(ModelError::InvalidNodeCidr { .. })
        ));
        let bad_ip = node_json(serde_json::json!({"metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2"}]}}));
        assert!(matches!(
            NodeInfo::from_k8s(&bad_ip),
            Err(ModelError::InvalidNodeIp { .. })
        ));
    }

    #[test]
    fn nodes_are_stored_by_name() {
        let mut cluster = Cluster::default();
        let node = |ip| NodeInfo {
            name: "n1".into(),
            ip: Some(ip),
            pod_cidrs: vec![],
            addresses: vec![ip],
            labels: Labels::new(),
        };
        cluster.upsert_node(node(Ipv4Addr::new(192, 0, 2, 11)));
        cluster.upsert_node(node(Ipv4Addr::new(192, 0, 2, 99)));
        assert_eq!(cluster.nodes().count(), 1);
        assert_eq!(
            cluster.node("n1").unwrap().ip,
            Some(Ipv4Addr::new(192, 0, 2, 99))
        );
        assert!(cluster.delete_node("n1"));
        assert!(!cluster.delete_node("n1"));
    }

    #[test]
    fn protocol_numbers_match_iana() {
        assert_eq!(Protocol::Tcp.number(), 6);
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(Protocol::Sctp.number(), 132);
        assert_eq!(Protocol::from_k8s("tcp"), None);
        assert_eq!(PodKey::new("ns", "n").to_string(), "ns/n");
    }
}
