//! Where the agent's Kubernetes objects come from. Standalone: a directory of manifests, re-read
//! when it changes. (The Kubernetes API source feeds the same [`Cluster`] model.)

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use tracing::{debug, warn};
use weir_agent_api::Rejected;
use weir_policy::{
    manifest::{parse_documents, Object},
    model::Cluster,
};

/// What identifies a file's content without reading it: writers replace files by rename, which
/// changes the inode, and in-place edits change the modification time or size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

struct ParsedFile {
    stamp: Stamp,
    objects: Result<Vec<Object>, String>,
}

pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, ParsedFile>,
    /// Bumped whenever a re-read found a change.
    generation: u64,
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml" | "json"))
}

impl ManifestDir {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            generation: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Re-read what changed since the last call. Returns whether anything did.
    pub fn refresh(&mut self) -> std::io::Result<bool> {
        let mut seen = BTreeMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if !is_manifest(&path) {
                continue;
            }
            // A file may vanish between listing and reading: a writer's rename, a delete.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                ino: meta.ino(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                size: meta.size(),
            };
            seen.insert(path, stamp);
        }
        let mut changed = self.files.len() != seen.len()
            || self.files.keys().zip(seen.keys()).any(|(a, b)| a != b);
        self.files.retain(|path, _| seen.contains_key(path));
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            changed = true;
            let objects = match fs::read_to_string(&path) {
                Ok(text) => parse_documents(&text).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &objects {
                warn!(file = %path.display(), error = %e, "manifest rejected");
            }
            debug!(file = %path.display(), "manifest read");
            self.files.insert(path, ParsedFile { stamp, objects });
        }
        if changed {
            self.generation += 1;
        }
        Ok(changed)
    }

    /// The model the files describe, and what could not be used. Files are applied in name order;
    /// when two define the same object the later one wins.
    pub fn cluster(&self) -> (Cluster, Vec<Rejected>) {
        let mut cluster = Cluster::default();
        let mut rejected = Vec::new();
        for (path, file) in &self.files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match &file.objects {
                Ok(objects) => {
                    for object in objects {
                        let label = describe(object);
                        if let Err(e) = cluster.apply(object.clone()) {
                            rejected.push(Rejected {
                                object: label,
                                reason: format!("{name}: {e}"),
                            });
                        }
                    }
                }
                Err(e) => rejected.push(Rejected {
                    object: name,
                    reason: e.clone(),
                }),
            }
        }
        (cluster, rejected)
    }
}

/// "Kind ns/name" or "Kind name", as the lab and the logs name objects.
fn describe(object: &Object) -> String {
    fn named(
        kind: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> String {
        let name = meta.name.as_deref().unwrap_or("?");
        match &meta.namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }
    match object {
        Object::Namespace(o) => named("Namespace", &o.metadata),
        Object::Pod(o) => named("Pod", &o.metadata),
        Object::NetworkPolicy(o) => named("NetworkPolicy", &o.metadata),
        Object::Service(o) => named("Service", &o.metadata),
        Object::Node(o) => named("Node", &o.metadata),
        Object::Ignored { kind } => kind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_yaml_and_json_files_are_manifests() {
        assert!(is_manifest(Path::new("/d/pod.x.a.yaml")));
        assert!(is_manifest(Path::new("/d/p.yml")));
        assert!(is_manifest(Path::new("/d/p.json")));
        assert!(!is_manifest(Path::new("/d/.pod.x.a.yaml")));
        assert!(!is_manifest(Path::new("/d/pod.yaml.tmp")));
        assert!(!is_manifest(Path::new("/d/README")));
    }

    #[test]
    fn refresh_sees_new_changed_and_removed_files_and_rejects_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = ManifestDir::new(dir.path()).unwrap();
        assert!(!src.refresh().unwrap());
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {a: b}\n";
        fs::write(dir.path().join("ns.yaml"), ns).unwrap();
        assert!(src.refresh().unwrap());
        assert!(!src.refresh().unwrap(), "nothing changed");
        let (cluster, rejected) = src.cluster();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(
            cluster.namespace_labels("x").get("a").map(String::as_str),
            Some("b")
        );

        // Replaced by rename, as the lab and kubectl-style writers do.
        let tmp = dir.path().join(".ns.yaml");
        fs::write(&tmp, ns.replace("a: b", "a: c")).unwrap();
        fs::rename(&tmp, dir.path().join("ns.yaml")).unwrap();
        assert!(src.refresh().unwrap());
        let (cluster, _) = src.cluster();
        assert_eq!(
            cluster.namespace_labels("x").get("a").map(String::as_str),
            Some("c")
        );

        fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        assert!(src.refresh().unwrap());
        let (_, rejected) = src.cluster();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].object, "bad.yaml");

        fs::remove_file(dir.path().join("bad.yaml")).unwrap();
        assert!(src.refresh().unwrap());
        assert!(src.cluster().1.is_empty());
    }
}
