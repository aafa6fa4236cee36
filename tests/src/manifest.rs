// SPDX-License-Identifier: Apache-2.0
//! The lab's Kubernetes objects: one directory of manifests per lab (`<lab dir>/manifests`) that
//! every node's agent watches (`weir-agent run --manifest-dir`), standing in for an API server.
//!
//! Each object is its own YAML file named from kind, namespace and name
//! (`namespace.x.yaml`, `pod.x.a.yaml`, `networkpolicy.x.allow-a.yaml`, `service.x.a.yaml`),
//! written atomically (a dot-file, which the agent ignores, then a rename). This module parses and
//! checks what `weir-lab apply -f` is given, builds the objects the lab itself owns (the
//! Namespaces it creates, each pod's Pod and Service), and edits labels; [`crate::lab`] decides
//! when to write and tells the agents to sync.
//!
//! Checks are what an API server would refuse before storing anything: a document that is not an
//! object, no `apiVersion`/`kind`/`metadata.name`, a kind the lab does not take (only Namespace,
//! Pod, NetworkPolicy and ClusterNetworkPolicy), fields of the wrong type (the typed `k8s-openapi` structs must
//! deserialize), bad names and bad labels. What an object *means* is the agent's to judge.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    names::{is_dns_name, PodRef},
    services::ServePort,
};

/// Name of the manifest directory inside the lab directory.
pub const MANIFEST_DIR: &str = "manifests";
/// The label Kubernetes puts on every namespace (and keeps there).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The kinds the lab writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    NetworkPolicy,
    Pod,
    Service,
    Node,
    ClusterNetworkPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::Node => "Node",
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    /// The apiVersions the lab takes for the kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Self::NetworkPolicy => &["networking.k8s.io/v1"],
            Self::ClusterNetworkPolicy => &[
                "policy.networking.k8s.io/v1beta1",
                "policy.networking.k8s.io/v1alpha2",
            ],
            Self::Namespace | Self::Pod | Self::Service | Self::Node => &["v1"],
        }
    }

    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Self::Namespace | Self::Node | Self::ClusterNetworkPolicy
        )
    }

    /// Kinds `apply` accepts (Services are the lab's own).
    pub fn applicable(kind: &str) -> Option<Self> {
        match kind {
            "Namespace" => Some(Self::Namespace),
            "NetworkPolicy" => Some(Self::NetworkPolicy),
            "Pod" => Some(Self::Pod),
            "ClusterNetworkPolicy" => Some(Self::ClusterNetworkPolicy),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object: kind, namespace (`None` for a Namespace), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn namespace(name: &str) -> Self {
        Self {
            kind: Kind::Namespace,
            namespace: None,
            name: name.to_owned(),
        }
    }

    pub fn node(name: &str) -> Self {
        Self {
            kind: Kind::Node,
            namespace: None,
            name: name.to_owned(),
        }
    }

    pub fn cluster_policy(name: &str) -> Self {
        Self {
            kind: Kind::ClusterNetworkPolicy,
            namespace: None,
            name: name.to_owned(),
        }
    }

    pub fn namespaced(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// `pod.x.a.yaml`, `namespace.x.yaml`.
    pub fn file_name(&self) -> String {
        let kind = self.kind.as_str().to_ascii_lowercase();
        match &self.namespace {
            Some(ns) => format!("{kind}.{ns}.{}.yaml", self.name),
            None => format!("{kind}.{}.yaml", self.name),
        }
    }

    /// Does an agent's `Rejected::object` (`"NetworkPolicy x/name"`, `"Namespace x"`, or a file
    /// name) mean this object?
    pub fn is_named_by(&self, rejected: &str) -> bool {
        rejected == self.to_string() || rejected == self.file_name()
    }
}

/// `NetworkPolicy x/name`, `Namespace x`: how the agents name objects they reject.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object: which it is, and the whole document.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub id: ObjectRef,
    pub doc: Value,
}

impl Object {
    /// Check one document as `apply` would and default its namespace to `default`.
    pub fn from_document(mut doc: Value) -> Result<Self> {
        let Some(map) = doc.as_object() else {
            bail!("not an object: {}", short(&doc));
        };
        let field = |name: &str| match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(other) => bail!("{name} must be a non-empty string, not {}", short(other)),
            None => bail!("no {name}"),
        };
        let api_version = field("apiVersion")?;
        let kind_name = field("kind")?;
        let Some(kind) = Kind::applicable(&kind_name) else {
            bail!(
                "kind {kind_name} is not one the lab applies (Namespace, Pod, NetworkPolicy, \
                 ClusterNetworkPolicy)"
            );
        };
        if !kind.api_versions().contains(&api_version.as_str()) {
            bail!(
                "{kind} has apiVersion {}, not {api_version}",
                kind.api_versions().join(" or ")
            );
        }
        let metadata = map
            .get("metadata")
            .and_then(Value::as_object)
            .context("no metadata")?;
        let name = match metadata.get("name") {
            Some(Value::String(s)) if is_dns_name(s) => s.clone(),
            Some(Value::String(s)) => bail!("{kind} name {s:?} is not a valid name"),
            _ => bail!("{kind} has no metadata.name"),
        };
        let id = if kind.is_namespaced() {
            let namespace = match metadata.get("namespace") {
                None | Some(Value::Null) => "default".to_owned(),
                Some(Value::String(s)) if is_dns_name(s) => s.clone(),
                Some(other) => bail!("{kind} {name}: bad metadata.namespace {}", short(other)),
            };
            ObjectRef::namespaced(kind, &namespace, &name)
        } else {
            ObjectRef {
                kind,
                namespace: None,
                name,
            }
        };
        if let Some(ns) = &id.namespace {
            doc["metadata"]["namespace"] = Value::String(ns.clone());
        } else if let Some(meta) = doc["metadata"].as_object_mut() {
            // A namespace has none; an API server ignores it.
            meta.remove("namespace");
        }
        let typed = match kind {
            Kind::Namespace => k8s_openapi::api::core::v1::Namespace::deserialize(&doc).map(drop),
            Kind::Pod => k8s_openapi::api::core::v1::Pod::deserialize(&doc).map(drop),
            Kind::NetworkPolicy => {
                k8s_openapi::api::networking::v1::NetworkPolicy::deserialize(&doc).map(drop)
            }
            Kind::Service => k8s_openapi::api::core::v1::Service::deserialize(&doc).map(drop),
            Kind::Node => k8s_openapi::api::core::v1::Node::deserialize(&doc).map(drop),
            Kind::ClusterNetworkPolicy => {
                weir_policy::cluster_policy::ClusterNetworkPolicy::deserialize(&doc).map(drop)
            }
        };
        typed.with_context(|| format!("{id} does not match the {kind} schema"))?;
        if kind == Kind::ClusterNetworkPolicy {
            // Strictly, as the agent reads it: an unknown field (a typo) is an error here.
            let text = serde_json::to_string(&doc)?;
            weir_policy::manifest::parse_documents(&text)
                .with_context(|| format!("{id} does not match the {kind} schema"))?;
        }
        let object = Self { id, doc };
        for (key, value) in object.labels() {
            check_label(&key, &value).with_context(|| format!("{}", object.id))?;
        }
        if let Some(labels) = object.doc["metadata"].get("labels") {
            if !labels.is_null() && !labels.is_object() {
                bail!("{}: metadata.labels must be a map", object.id);
            }
        }
        Ok(object)
    }

    /// `metadata.labels` (non-string values are left out; [`Object::from_document`] refuses them).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.doc["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replace `metadata.labels`.
    pub fn set_labels(&mut self, labels: &BTreeMap<String, String>) {
        let map: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.doc["metadata"]["labels"] = Value::Object(map);
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml::to_string(&self.doc).with_context(|| format!("serializing {}", self.id))
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// Parse what `apply -f` was given: YAML documents separated by `---` (JSON is YAML too), each
/// an object or a `kind: List` of them. Empty documents are skipped. Any bad document fails the
/// whole input, naming the document.
pub fn parse_documents(text: &str) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = index + 1;
        let value = Value::deserialize(document)
            .with_context(|| format!("document {n} is not valid YAML or JSON"))?;
        if value.is_null() {
            continue;
        }
        let items = if value.get("kind").and_then(Value::as_str) == Some("List") {
            match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => bail!("document {n}: a List needs items"),
            }
        } else {
            vec![value]
        };
        for item in items {
            objects.push(Object::from_document(item).with_context(|| format!("document {n}"))?);
        }
    }
    if objects.is_empty() {
        bail!("no objects in the input");
    }
    Ok(objects)
}

/// Check a label key and value as Kubernetes does: an optional DNS-subdomain prefix and `/`, a
/// name of at most 63 alphanumerics, `-`, `_`, `.` (alphanumeric at both ends); the value the same
/// or empty.
pub fn check_label(key: &str, value: &str) -> Result<()> {
    fn is_name(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_name(prefix) {
                bail!("label key {key:?}: bad prefix");
            }
            name
        }
        None => key,
    };
    if !is_name(name) {
        bail!("label key {key:?} is not valid");
    }
    if !value.is_empty() && !is_name(value) {
        bail!("label value {value:?} (of {key}) is not valid");
    }
    Ok(())
}

/// One `weir-lab label` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

impl LabelChange {
    /// `k=v` sets, `k-` removes.
    pub fn parse(change: &str) -> Result<Self> {
        if let Some((key, value)) = change.split_once('=') {
            check_label(key, value)?;
            Ok(Self::Set(key.to_owned(), value.to_owned()))
        } else if let Some(key) = change.strip_suffix('-') {
            check_label(key, "")?;
            Ok(Self::Remove(key.to_owned()))
        } else {
            bail!("{change:?} is neither k=v nor k-");
        }
    }
}

/// Apply `changes` (`k=v`, `k-`) to `labels`, all or nothing.
pub fn change_labels(labels: &mut BTreeMap<String, String>, changes: &[&str]) -> Result<()> {
    if changes.is_empty() {
        bail!("no label changes given (k=v to set, k- to remove)");
    }
    let parsed = changes
        .iter()
        .map(|c| LabelChange::parse(c))
        .collect::<Result<Vec<_>>>()?;
    for change in parsed {
        match change {
            LabelChange::Set(k, v) => {
                labels.insert(k, v);
            }
            LabelChange::Remove(k) => {
                labels.remove(&k);
            }
        }
    }
    Ok(())
}

/// A Namespace, with the `kubernetes.io/metadata.name` label Kubernetes always sets.
pub fn namespace_object(name: &str, labels: &BTreeMap<String, String>) -> Object {
    let mut object = Object {
        id: ObjectRef::namespace(name),
        doc: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    };
    let mut labels = labels.clone();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    object.set_labels(&labels);
    object
}

/// A lab pod's Pod: one container `serve` with a named port per served port, scheduled on
/// `node_name`; with `status` (pod IP) once the CNI ADD has given it an address.
pub fn pod_object(
    pod: &PodRef,
    labels: &BTreeMap<String, String>,
    node_name: &str,
    ports: &[ServePort],
    pod_ip: Option<Ipv4Addr>,
) -> Object {
    let container_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": p.name(), "containerPort": p.port, "protocol": p.proto.k8s_name()}))
        .collect();
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": pod.namespace, "name": pod.name},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "serve", "image": "weir-lab/serve", "ports": container_ports}],
        },
    });
    if let Some(ip) = pod_ip {
        doc["status"] = json!({
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
        });
    }
    let mut object = Object {
        id: ObjectRef::namespaced(Kind::Pod, &pod.namespace, &pod.name),
        doc,
    };
    object.set_labels(labels);
    object
}

/// A lab node's Node: its address on the shared segment and its pod CIDR, as kubelet and the
/// node IPAM controller would have filled them in.
pub fn node_object(name: &str, ip: Ipv4Addr, pod_cidr: &str) -> Object {
    Object {
        id: ObjectRef::node(name),
        doc: json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
            ]},
        }),
    }
}

/// The Service in front of a lab pod: its ClusterIP with every served port.
pub fn service_object(pod: &PodRef, cluster_ip: Ipv4Addr, ports: &[ServePort]) -> Object {
    let service_ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({"name": p.name(), "port": p.port, "targetPort": p.port, "protocol": p.proto.k8s_name()})
        })
        .collect();
    Object {
        id: ObjectRef::namespaced(Kind::Service, &pod.namespace, &pod.name),
        doc: json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"namespace": pod.namespace, "name": pod.name},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_ip.to_string(),
                "clusterIPs": [cluster_ip.to_string()],
                "ports": service_ports,
            },
        }),
    }
}

/// The manifest directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestDir {
    path: PathBuf,
}

impl ManifestDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, id: &ObjectRef) -> PathBuf {
        self.path.join(id.file_name())
    }

    pub fn exists(&self, id: &ObjectRef) -> bool {
        self.file(id).is_file()
    }

    /// Write `object` atomically: `.<file>.tmp`, fsync, rename.
    pub fn write(&self, object: &Object) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        let name = object.id.file_name();
        let tmp = self.path.join(format!(".{name}.tmp"));
        let path = self.path.join(&name);
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(object.to_yaml().map_err(std::io::Error::other)?.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("writing {}", path.display()))
    }

    /// Read an object back; `None` if it has no file.
    pub fn read(&self, id: &ObjectRef) -> Result<Option<Object>> {
        let path = self.file(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let doc: Value =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(Object {
            id: id.clone(),
            doc,
        }))
    }

    /// Remove an object's file; returns whether it was there.
    pub fn remove(&self, id: &ObjectRef) -> Result<bool> {
        let path = self.file(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// File names of every object (dot-files excluded), sorted.
    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Proto;

    const POLICY: &str = r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - port: serve-80-tcp
";

    #[test]
    fn documents_parse_default_their_namespace_and_name_their_files() {
        let text = format!(
            "---\n{POLICY}\n---\n# nothing\n---\n{}\n",
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"pod": "a"}}}"#
        );
        let objects = parse_documents(&text).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].id.to_string(), "NetworkPolicy x/allow-a");
        assert_eq!(objects[0].id.file_name(), "networkpolicy.x.allow-a.yaml");
        assert_eq!(objects[1].id.to_string(), "Pod default/a");
        assert_eq!(objects[1].doc["metadata"]["namespace"], "default");
        assert_eq!(objects[1].labels()["pod"], "a");
        let ns =
            parse_documents("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, namespace: z}")
                .unwrap();
        assert_eq!(ns[0].id.file_name(), "namespace.y.yaml");
        assert!(ns[0].doc["metadata"].get("namespace").is_none());
        assert!(ObjectRef::namespace("y").is_named_by("Namespace y"));
        assert!(objects[0].id.is_named_by("networkpolicy.x.allow-a.yaml"));
        assert!(!objects[0].id.is_named_by("NetworkPolicy x/allow"));
    }

    #[test]
    fn lists_are_flattened() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}]}"#;
        let names: Vec<String> = parse_documents(text)
            .unwrap()
            .iter()
            .map(|o| o.id.to_string())
            .collect();
        assert_eq!(names, ["Namespace a", "Namespace b"]);
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases = [
            ("", "no objects"),
            ("just a string", "not an object"),
            ("kind: Pod\nmetadata: {name: a}", "no apiVersion"),
            ("apiVersion: v1\nmetadata: {name: a}", "no kind"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {}", "no metadata.name"),
            ("apiVersion: v1\nkind: Pod", "no metadata"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}", "not one the lab applies"),
            ("apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: a}", "apiVersion"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: ../etc}", "not a valid name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: A}", "namespace"),
            (
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: 5}",
                "schema",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {'bad key': x}}",
                "label key",
            ),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: [x]}", "schema"),
            ("a: [b\n", "not valid YAML"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_documents(text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // One bad document fails the lot, and names it.
        let err = format!(
            "{:#}",
            parse_documents(&format!("{POLICY}\n---\nkind: Pod\n")).unwrap_err()
        );
        assert!(err.contains("document 2"), "{err}");
    }

    #[test]
    fn labels_change_all_or_nothing() {
        let mut labels: BTreeMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        change_labels(&mut labels, &["b=2", "a-", "example.com/c=x_y.z"]).unwrap();
        assert_eq!(
            labels,
            [
                ("b".to_owned(), "2".to_owned()),
                ("example.com/c".to_owned(), "x_y.z".to_owned())
            ]
            .into()
        );
        let before = labels.clone();
        for bad in [
            &["c=3", "nope"][..],
            &["=v"],
            &["k=-v"],
            &["Bad Key=1"],
            &[],
        ] {
            assert!(change_labels(&mut labels, bad).is_err(), "{bad:?}");
        }
        assert_eq!(labels, before);
        change_labels(&mut labels, &["missing-"]).unwrap();
        assert_eq!(labels, before);
        assert!(check_label(&"k".repeat(64), "").is_err());
        assert!(check_label("k", &"v".repeat(63)).is_ok());
    }

    #[test]
    fn lab_objects_look_like_kubernetes_ones() {
        let ns = namespace_object("x", &BTreeMap::new());
        assert_eq!(ns.labels()[NAMESPACE_NAME_LABEL], "x");
        let pod = PodRef::new("x", "a");
        let ports = [
            ServePort::new(Proto::Tcp, 80),
            ServePort::new(Proto::Sctp, 81),
        ];
        let labels = [("pod".to_owned(), "a".to_owned())].into();
        let object = pod_object(&pod, &labels, "n1", &ports, None);
        assert!(object.doc.get("status").is_none());
        let running = pod_object(
            &pod,
            &labels,
            "n1",
            &ports,
            Some(Ipv4Addr::new(10, 244, 1, 2)),
        );
        assert_eq!(running.doc["status"]["podIP"], "10.244.1.2");
        assert_eq!(running.doc["status"]["phase"], "Running");
        assert_eq!(running.doc["spec"]["nodeName"], "n1");
        let port = &running.doc["spec"]["containers"][0]["ports"][1];
        assert_eq!(port["name"], "serve-81-sctp");
        assert_eq!(port["protocol"], "SCTP");
        assert_eq!(port["containerPort"], 81);
        let service = service_object(&pod, Ipv4Addr::new(10, 96, 0, 3), &ports);
        assert_eq!(service.id.file_name(), "service.x.a.yaml");
        assert_eq!(service.doc["spec"]["clusterIP"], "10.96.0.3");
        assert_eq!(service.doc["spec"]["ports"][0]["targetPort"], 80);
        // Every one of them passes the checks `apply` makes.
        for object in [ns, running] {
            let again = Object::from_document(object.doc.clone()).unwrap();
            assert_eq!(again, object);
        }
        assert!(k8s_openapi::api::core::v1::Service::deserialize(&service.doc).is_ok());
    }

    #[test]
    fn the_directory_writes_atomically_reads_back_and_removes() {
        let dir = std::env::temp_dir().join(format!("weir-lab-manifests-{}", std::process::id()));
        let manifests = ManifestDir::new(&dir);
        let object = parse_documents(POLICY).unwrap().remove(0);
        manifests.write(&object).unwrap();
        assert_eq!(manifests.list(), ["networkpolicy.x.allow-a.yaml"]);
        assert!(manifests.exists(&object.id));
        assert_eq!(manifests.read(&object.id).unwrap(), Some(object.clone()));
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        assert_eq!(manifests.list().len(), 1);
        assert!(manifests.remove(&object.id).unwrap());
        assert!(!manifests.remove(&object.id).unwrap());
        assert_eq!(manifests.read(&object.id).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
