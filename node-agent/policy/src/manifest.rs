//! Kubernetes manifests (YAML, multi-document, or JSON) → typed objects.
//!
//! Kinds the compiler knows are parsed strictly as their Kubernetes type: a wrong type and an
//! unknown field (a typo such as `podSelecter`, which a lenient parser would drop, silently widening
//! a policy) are errors naming the document, kind and name. Other kinds are returned as
//! [`Object::Ignored`]. `kind: List` documents are flattened into their items.

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    networking::v1::NetworkPolicy,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::cluster_policy::{self, ClusterNetworkPolicy};

/// One object from a manifest.
#[allow(
    clippy::large_enum_variant,
    reason = "objects are parsed once and moved into the model; boxing would only add indirection"
)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    ClusterNetworkPolicy(ClusterNetworkPolicy),
    Service(Service),
    Node(Node),
    /// A kind (or apiVersion) the compiler does not use.
    Ignored {
        kind: String,
    },
}

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {document}: not valid JSON: {source}")]
    Json {
        document: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {document}: {what}")]
    Shape { document: usize, what: String },
    #[error("document {document}: {kind} {name:?}: {source}")]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {document}: {kind} {name:?}: unknown field {field}")]
    UnknownField {
        document: usize,
        kind: String,
        name: String,
        field: String,
    },
}

/// Parses every object in `text`. Documents are numbered from 1 in errors; empty documents are
/// skipped. Text starting with `{` or `[` is read as a stream of JSON values.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    for (i, value) in documents(text)?.into_iter().enumerate() {
        let document = i + 1;
        push_objects(document, value, &mut objects)?;
    }
    Ok(objects)
}

fn documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut values = Vec::new();
        for (i, value) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let value = value.map_err(|source| ManifestError::Json {
                document: i + 1,
                source,
            })?;
            match value {
                Value::Array(items) => values.extend(items),
                other => values.push(other),
            }
        }
        return Ok(values);
    }
    let mut values = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(doc).map_err(|source| ManifestError::Yaml {
            document: i + 1,
            source,
        })?;
        if yaml.is_null() {
            values.push(Value::Null);
            continue;
        }
        let json = serde_json::to_value(&yaml).map_err(|e| ManifestError::Shape {
            document: i + 1,
            what: format!("cannot be represented as JSON: {e}"),
        })?;
        values.push(json);
    }
    Ok(values)
}

fn push_objects(document: usize, value: Value, out: &mut Vec<Object>) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let shape = |what: &str| ManifestError::Shape {
        document,
        what: what.to_owned(),
    };
    let Value::Object(map) = &value else {
        return Err(shape("not a mapping"));
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no kind"))?
        .to_owned();
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    match (api_version, kind.as_str()) {
        ("v1", "Namespace") => out.push(Object::Namespace(strict(document, &kind, value)?)),
        ("v1", "Pod") => out.push(Object::Pod(strict(document, &kind, value)?)),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            out.push(Object::NetworkPolicy(strict(document, &kind, value)?));
        }
        (version, cluster_policy::KIND)
            if version
                .strip_prefix(cluster_policy::GROUP)
                .and_then(|v| v.strip_prefix('/'))
                .is_some_and(|v| cluster_policy::VERSIONS.contains(&v)) =>
        {
            out.push(Object::ClusterNetworkPolicy(strict(
                document, &kind, value,
            )?));
        }
        ("v1", "Service") => out.push(Object::Service(strict(document, &kind, value)?)),
        ("v1", "Node") => out.push(Object::Node(strict(document, &kind, value)?)),
        (_, "List") => {
            let Some(Value::Array(items)) = map.get("items").cloned() else {
                return Err(shape("List without items"));
            };
            for item in items {
                push_objects(document, item, out)?;
            }
        }
        _ => out.push(Object::Ignored { kind }),
    }
    Ok(())
}

/// Deserializes document `document` as `T` with the same strictness as [`parse_documents`]: for
/// manifests of kinds the compiler does not read (a DaemonSet, RBAC objects).
pub fn parse_strict<T: DeserializeOwned + Serialize>(
    document: usize,
    value: Value,
) -> Result<T, ManifestError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    strict(document, &kind, value)
}

/// Deserializes `value` as `T` and rejects fields `T` does not have: every non-null field of the
/// input must survive a round trip through `T`.
fn strict<T: DeserializeOwned + Serialize>(
    document: usize,
    kind: &str,
    value: Value,
) -> Result<T, ManifestError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|source| ManifestError::Invalid {
            document,
            kind: kind.to_owned(),
            name: name.clone(),
            source,
        })?;
    let round_trip = serde_json::to_value(&typed).map_err(|source| ManifestError::Invalid {
        document,
        kind: kind.to_owned(),
        name: name.clone(),
        source,
    })?;
    if let Some(field) = unknown_field(&value, &round_trip, String::new()) {
        return Err(ManifestError::UnknownField {
            document,
            kind: kind.to_owned(),
            name,
            field,
        });
    }
    Ok(typed)
}

/// The path of the first field present (and not null) in `original` but absent from `parsed`.
fn unknown_field(original: &Value, parsed: &Value, path: String) -> Option<String> {
    match (original, parsed) {
        (Value::Object(o), Value::Object(p)) => o.iter().find_map(|(key, value)| {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match p.get(key) {
                None if !value.is_null() => Some(field),
                None => None,
                Some(inner) => unknown_field(value, inner, field),
            }
        }),
        (Value::Array(o), Value::Array(p)) => o
            .iter()
            .zip(p)
            .enumerate()
            .find_map(|(i, (a, b))| unknown_field(a, b, format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {team: a}
---
# an empty document
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: web, labels: {app: web}}
spec:
  containers:
  - name: c
    image: nginx
    ports: [{name: http, containerPort: 80}]
status: {podIP: 10.244.1.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: prod, name: deny}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, endPort: 90}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
"#;

    #[test]
    fn yaml_documents_parse_into_typed_objects_and_empty_ones_are_skipped() {
        let objects = parse_documents(SEED).unwrap();
        assert_eq!(objects.len(), 4);
        assert!(
            matches!(&objects[0], Object::Namespace(ns) if ns.metadata.name.as_deref() == Some("prod"))
        );
        assert!(matches!(&objects[1], Object::Pod(_)));
        let Object::NetworkPolicy(p) = &objects[2] else {
            panic!("not a policy: {:?}", objects[2]);
        };
        let ports = p.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
            .ports
            .as_ref()
            .unwrap();
        assert_eq!(ports[0].end_port, Some(90));
        assert_eq!(
            objects[3],
            Object::Ignored {
                kind: "Deployment".into()
            }
        );
    }

    #[test]
    fn json_objects_arrays_and_lists_are_accepted() {
        let text = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
            [{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}]
            {"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}]}"#;
        let names: Vec<String> = parse_documents(text)
            .unwrap()
            .into_iter()
            .map(|o| match o {
                Object::Namespace(ns) => ns.metadata.name.unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn unknown_field_in_a_known_kind_is_an_error_naming_document_kind_name_and_field() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
            apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
            spec:\n  podSelecter: {matchLabels: {a: b}}\n";
        let err = parse_documents(text).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, ManifestError::UnknownField { document: 2, .. }),
            "{message}"
        );
        assert!(
            message.contains("NetworkPolicy") && message.contains("\"p\""),
            "{message}"
        );
        assert!(message.contains("spec.podSelecter"), "{message}");
    }

    #[test]
    fn wrong_type_in_a_known_kind_is_an_error() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n\
            spec: {podSelector: {}, ingress: {from: []}}\n";
        let err = parse_documents(text).unwrap_err();
        assert!(
            matches!(err, ManifestError::Invalid { document: 1, ref kind, ref name, .. }
            if kind == "NetworkPolicy" && name == "p"),
            "{err}"
        );
    }

    #[test]
    fn missing_kind_and_bad_yaml_are_errors() {
        assert!(matches!(
            parse_documents("apiVersion: v1\nmetadata: {name: x}\n"),
            Err(ManifestError::Shape { document: 1, .. })
        ));
        assert!(matches!(
            parse_documents("kind: [unclosed\n"),
            Err(ManifestError::Yaml { document: 1, .. })
        ));
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("---\n---\n").unwrap().is_empty());
    }

    #[test]
    fn null_fields_are_not_unknown() {
        let text =
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, creationTimestamp: null}\n";
        assert_eq!(parse_documents(text).unwrap().len(), 1);
    }

    #[test]
    fn known_kind_with_another_api_version_is_ignored() {
        let text = "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\n";
        assert_eq!(
            parse_documents(text).unwrap(),
            vec![Object::Ignored {
                kind: "NetworkPolicy".into()
            }]
        );
    }
}
