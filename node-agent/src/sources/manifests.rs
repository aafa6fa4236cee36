//! A directory of manifests, re-read when it changes: the standalone source of objects (the lab,
//! the demo). It keeps the same [`Cluster`] model the Kubernetes API source does.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use tracing::{debug, warn};
use weir_agent_api::Rejected;
use weir_policy::{
    manifest::{parse_documents, Object},
    model::{Cluster, PodKey, PolicyKey},
};

/// What identifies a file's content without reading it: writers replace files by rename, which
/// changes the inode, and in-place edits change the modification time or size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

/// An object of the model, by identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ObjectKey {
    Namespace(String),
    Pod(PodKey),
    Policy(PolicyKey),
    ClusterPolicy(String),
    Node(String),
}

/// What a file contributed: the objects it defines (their content lives in the model only) and
/// what of it could not be used.
struct ParsedFile {
    stamp: Stamp,
    keys: Vec<ObjectKey>,
    rejected: Vec<Rejected>,
}

/// The model is kept up to date file by file: a change costs the parse of the files that changed,
/// not a rebuild from every file.
pub struct ManifestDir {
    dir: PathBuf,
    /// Paths are shared with `owners` (a directory may hold tens of thousands of files).
    files: BTreeMap<Arc<Path>, ParsedFile>,
    cluster: Cluster,
    /// Which file an object came from last; when two files define one object the last one read
    /// wins, and removing a file removes only what it still owns.
    owners: HashMap<ObjectKey, Arc<Path>>,
    /// Names the directory's entries that changed since the last re-read; `None` when inotify is
    /// unusable, and then every re-read stats every file.
    inotify: Option<Inotify>,
    /// The next re-read must look at every file (first read, queue overflow, periodic check).
    full_scan: bool,
    /// Bumped whenever a re-read found a change.
    generation: u64,
}

fn watch(dir: &Path) -> nix::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF,
    )?;
    Ok(inotify)
}

fn stamp_of(meta: &fs::Metadata) -> Stamp {
    Stamp {
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        size: meta.size(),
    }
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
        let inotify = watch(dir)
            .inspect_err(|e| warn!(%e, dir = %dir.display(), "inotify unusable; every re-read stats every file"))
            .ok();
        Ok(Self {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            cluster: Cluster::default(),
            owners: HashMap::new(),
            inotify,
            full_scan: true,
            generation: 0,
        })
    }

    /// A descriptor that becomes readable when the directory changes (a duplicate: waiting on it
    /// never consumes the events [`refresh`](Self::refresh) reads).
    pub fn change_fd(&self) -> Option<OwnedFd> {
        self.inotify
            .as_ref()
            .and_then(|i| i.as_fd().try_clone_to_owned().ok())
    }

    /// Make the next re-read look at every file, not only those inotify named.
    pub fn request_full_scan(&mut self) {
        self.full_scan = true;
    }

    /// The file names inotify reported since the last call; `None` when they cannot be trusted to
    /// be complete (no inotify, a queue overflow, the directory itself moved).
    fn changed_names(&mut self) -> Option<BTreeSet<PathBuf>> {
        let inotify = self.inotify.as_ref()?;
        let mut names = BTreeSet::new();
        loop {
            match inotify.read_events() {
                Ok(events) if events.is_empty() => return Some(names),
                Ok(events) => {
                    for event in events {
                        let whole = AddWatchFlags::IN_Q_OVERFLOW
                            | AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_IGNORED;
                        if event.mask.intersects(whole) {
                            return None;
                        }
                        if let Some(name) = event.name {
                            names.insert(self.dir.join(name));
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Some(names),
                Err(_) => return None,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Re-read what changed since the last call. Returns whether anything did.
    ///
    /// With inotify only the files it named are looked at (the kernel queues an event before the
    /// write that caused it returns, so a change made before this call is always seen); otherwise,
    /// and after a queue overflow, every file is.
    pub fn refresh(&mut self) -> std::io::Result<bool> {
        let names = self.changed_names();
        let changed = match names {
            Some(names) if !self.full_scan => self.refresh_files(names),
            _ => {
                self.full_scan = false;
                self.refresh_all()?
            }
        };
        if changed {
            self.generation += 1;
        }
        Ok(changed)
    }

    /// Bring the model in line with each of `paths` as it is now: read when new or changed,
    /// forgotten when gone.
    fn refresh_files(&mut self, paths: BTreeSet<PathBuf>) -> bool {
        let mut changed = false;
        for path in paths {
            if !is_manifest(&path) {
                continue;
            }
            // A file may vanish between being named and being read: a writer's rename, a delete.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    let stamp = stamp_of(&meta);
                    if self
                        .files
                        .get(path.as_path())
                        .is_some_and(|f| f.stamp == stamp)
                    {
                        continue;
                    }
                    self.forget(&path);
                    let path: Arc<Path> = Arc::from(path);
                    let file = self.read(&path, stamp);
                    self.files.insert(path, file);
                    changed = true;
                }
                _ => {
                    if self.files.contains_key(path.as_path()) {
                        self.forget(&path);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Every file in the directory, and every file the model still holds (which may be gone).
    fn refresh_all(&mut self) -> std::io::Result<bool> {
        let mut paths: BTreeSet<PathBuf> = self.files.keys().map(|p| p.to_path_buf()).collect();
        for entry in fs::read_dir(&self.dir)? {
            paths.insert(entry?.path());
        }
        Ok(self.refresh_files(paths))
    }

    /// Take what `path` contributed out of the model.
    fn forget(&mut self, path: &Path) {
        let Some(file) = self.files.remove(path) else {
            return;
        };
        for key in file.keys {
            if self.owners.get(&key).map(|p| &**p) != Some(path) {
                continue;
            }
            self.owners.remove(&key);
            match &key {
                ObjectKey::Namespace(name) => {
                    self.cluster.delete_namespace(name);
                }
                ObjectKey::Pod(pod) => {
                    self.cluster.delete_pod(pod);
                }
                ObjectKey::Policy(policy) => {
                    self.cluster.delete_policy(policy);
                }
                ObjectKey::ClusterPolicy(name) => {
                    self.cluster.delete_cluster_policy(name);
                }
                ObjectKey::Node(name) => {
                    self.cluster.delete_node(name);
                }
            }
        }
    }

    /// Parse `path` and put its objects into the model.
    fn read(&mut self, path: &Arc<Path>, stamp: Stamp) -> ParsedFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut file = ParsedFile {
            stamp,
            keys: Vec::new(),
            rejected: Vec::new(),
        };
        let objects = match fs::read_to_string(path) {
            Ok(text) => parse_documents(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        debug!(file = %path.display(), "manifest read");
        let objects = match objects {
            Ok(objects) => objects,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "manifest rejected");
                file.rejected.push(Rejected {
                    object: name,
                    reason: e,
                });
                return file;
            }
        };
        for object in objects {
            let label = describe(&object);
            let key = object_key(&object);
            match self.cluster.apply(object) {
                Ok(()) => {
                    if let Some(key) = key {
                        self.owners.insert(key.clone(), path.clone());
                        file.keys.push(key);
                    }
                }
                Err(e) => file.rejected.push(Rejected {
                    object: label,
                    reason: format!("{name}: {e}"),
                }),
            }
        }
        // Kept for as long as the file exists: no spare room.
        file.keys.shrink_to_fit();
        file
    }

    /// The model the files describe.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Everything the files hold that could not be used.
    pub fn rejected(&self) -> Vec<Rejected> {
        self.files
            .values()
            .flat_map(|f| f.rejected.iter().cloned())
            .collect()
    }
}

fn object_key(object: &Object) -> Option<ObjectKey> {
    let meta = match object {
        Object::Namespace(o) => &o.metadata,
        Object::Pod(o) => &o.metadata,
        Object::NetworkPolicy(o) => &o.metadata,
        Object::ClusterNetworkPolicy(o) => &o.metadata,
        Object::Node(o) => &o.metadata,
        _ => return None,
    };
    let name = meta.name.clone()?;
    let namespace = || {
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned())
    };
    Some(match object {
        Object::Namespace(_) => ObjectKey::Namespace(name),
        Object::Pod(_) => ObjectKey::Pod(PodKey::new(namespace(), name)),
        Object::Node(_) => ObjectKey::Node(name),
        Object::ClusterNetworkPolicy(_) => ObjectKey::ClusterPolicy(name),
        _ => ObjectKey::Policy(PolicyKey::new(namespace(), name)),
    })
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
        Object::ClusterNetworkPolicy(o) => named("ClusterNetworkPolicy", &o.metadata),
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
        assert!(src.rejected().is_empty(), "{:?}", src.rejected());
        assert_eq!(
            src.cluster()
                .namespace_labels("x")
                .get("a")
                .map(String::as_str),
            Some("b")
        );

        // Replaced by rename, as the lab and kubectl-style writers do.
        let tmp = dir.path().join(".ns.yaml");
        fs::write(&tmp, ns.replace("a: b", "a: c")).unwrap();
        fs::rename(&tmp, dir.path().join("ns.yaml")).unwrap();
        assert!(src.refresh().unwrap());
        assert_eq!(
            src.cluster()
                .namespace_labels("x")
                .get("a")
                .map(String::as_str),
            Some("c")
        );

        fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        assert!(src.refresh().unwrap());
        let rejected = src.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].object, "bad.yaml");

        fs::remove_file(dir.path().join("bad.yaml")).unwrap();
        assert!(src.refresh().unwrap());
        assert!(src.rejected().is_empty());

        // Removing the file removes its objects from the model.
        fs::remove_file(dir.path().join("ns.yaml")).unwrap();
        assert!(src.refresh().unwrap());
        assert_eq!(src.cluster().namespace_names().count(), 0);
    }
}
