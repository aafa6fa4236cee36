// SPDX-License-Identifier: Apache-2.0
//! What the model evaluates: namespaces with labels, pods with labels, an IP and container ports,
//! a few addresses outside the cluster, the NetworkPolicy objects exactly as the API server
//! would hold them (`k8s_openapi` types), and ClusterNetworkPolicy objects (JSON).
//!
//! A [`World`] serializes to a small YAML document ([`World::to_yaml`]) and back
//! ([`World::from_yaml`]), so a world that exposes a disagreement can be printed by a failing test
//! and pasted verbatim into a unit test.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

/// The label every namespace carries, set by the API server to the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The protocols a probe can use. Only TCP, UDP and SCTP have ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Proto {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
    #[serde(rename = "ICMP")]
    Icmp,
}

impl Proto {
    /// Every protocol, in a fixed order.
    pub const ALL: [Proto; 4] = [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp];
    /// The protocols a NetworkPolicyPort can name.
    pub const WITH_PORTS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// The spelling NetworkPolicyPort.protocol and ContainerPort.protocol use (`"ICMP"` for ICMP,
    /// which no Kubernetes object can name).
    pub fn k8s_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::Icmp => "ICMP",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
            Proto::Icmp => 1,
        }
    }

    /// True for the protocols that carry ports.
    pub fn has_ports(self) -> bool {
        self != Proto::Icmp
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.k8s_name())
    }
}

/// A namespace and its labels (without [`NAMESPACE_NAME_LABEL`], which [`World::namespace_labels`]
/// always adds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One container port of a pod, as in `pod.spec.containers[].ports[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Proto,
}

/// A pod: where it lives, its labels, its IP and its container ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the model looks at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Addresses that are not pods (the internet, other nodes' unused pod IPs) worth probing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<Ipv4Addr>,
    #[serde(default)]
    pub policies: Vec<NetworkPolicy>,
    /// ClusterNetworkPolicy objects as JSON (read field by field by [`crate::tiers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_policies: Vec<serde_json::Value>,
}

/// One end of a connection: a pod of the world, or an address that is not a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'w> {
    Pod(&'w Pod),
    Outside(Ipv4Addr),
}

impl Endpoint<'_> {
    /// The address packets from or to this endpoint carry.
    pub fn ip(&self) -> Ipv4Addr {
        match self {
            Endpoint::Pod(pod) => pod.ip,
            Endpoint::Outside(ip) => *ip,
        }
    }

    /// The pod, if this endpoint is one.
    pub fn pod(&self) -> Option<&Pod> {
        match self {
            Endpoint::Pod(pod) => Some(pod),
            Endpoint::Outside(_) => None,
        }
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(pod) => write!(f, "{}/{} ({})", pod.namespace, pod.name, pod.ip),
            Endpoint::Outside(ip) => write!(f, "{ip} (outside)"),
        }
    }
}

impl World {
    /// The labels a namespace selector sees for `namespace`: its own labels plus
    /// `kubernetes.io/metadata.name=<namespace>`, which the API server always sets (also for a
    /// namespace the world does not list).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .iter()
            .find(|ns| ns.name == namespace)
            .map(|ns| ns.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
        labels
    }

    /// The pod `namespace/name`, if there is one.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The pod with this IP, if there is one.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// Every endpoint worth probing: each pod, then each outside address.
    pub fn endpoints(&self) -> Vec<Endpoint<'_>> {
        self.pods
            .iter()
            .map(Endpoint::Pod)
            .chain(self.outside.iter().copied().map(Endpoint::Outside))
            .collect()
    }

    /// The world as YAML: namespaces, pods (labels, IP, ports), outside addresses and the
    /// policies as NetworkPolicy manifests. [`World::from_yaml`] reads it back.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a World always serializes")
    }

    /// Reads what [`World::to_yaml`] wrote (or the same shape written by hand).
    pub fn from_yaml(yaml: &str) -> Result<World, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    /// The policies alone (NetworkPolicies, then ClusterNetworkPolicies), as a multi-document
    /// YAML stream ready for `kubectl apply -f -` (or the lab's `apply_yaml`).
    pub fn policies_yaml(&self) -> String {
        self.policies
            .iter()
            .map(|p| serde_yaml::to_string(p).expect("a NetworkPolicy always serializes"))
            .chain(
                self.cluster_policies
                    .iter()
                    .map(|p| serde_yaml::to_string(p).expect("JSON always serializes")),
            )
            .collect::<Vec<_>>()
            .join("---\n")
    }
}
