// SPDX-License-Identifier: Apache-2.0
//! Node-local IPv4 address management.
//!
//! State lives in one JSON file per network, `<dataDir>/<network>/allocations.json`: the reservations
//! keyed by attachment `(container id, ifname)` — the spec's primary key within a network — and the
//! last address handed out. Every change happens under an exclusive `flock` on
//! `<dataDir>/<network>/lock` (a separate file, because the state file itself is replaced on every
//! write) and is written atomically: temporary file, then `rename`. Readers that only look
//! ([`Ipam::get`], [`Ipam::list`]) need no lock, since a rename is atomic.
//!
//! Durability: nothing is `fsync`ed (a flush would cost a disk round trip per ADD and DEL, more
//! than the rest of ADD on many disks). A process crash loses nothing: the page cache keeps what
//! was written. After a crash of the machine the state may come back as it was some writes ago,
//! or, with delayed allocation, empty behind the new name. Neither can hand one address to two
//! live pods, because no pod survives a machine crash: every pod network namespace and veth is
//! gone, the runtime runs ADD again for each pod and DEL (or GC) for the dead ones, and a stale
//! reservation only keeps an address out of use until then. So a state file that cannot be parsed
//! and was last written before this boot is such a remnant and starts over empty (logged); one
//! written during this boot is an error, since the pods it describes may be alive.
//!
//! Allocation is round-robin: the search starts after the last address handed out and wraps, so an
//! address freed by a DEL is not given to the very next pod (whose peers might still hold stale
//! state about it). The network and broadcast addresses are never handed out, nor is the gateway
//! when it lies inside the range.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use serde::{Deserialize, Serialize};
use weir_agent_api::AttachmentId;

const STATE_FILE: &str = "allocations.json";
const STATE_TMP_FILE: &str = "allocations.json.tmp";
const LOCK_FILE: &str = "lock";
const LIFECYCLE_LOCK_FILE: &str = "lifecycle.lock";
const STATE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("ip range exhausted: no free address left in {cidr}")]
    Exhausted { cidr: Ipv4Net },

    #[error("IPAM: {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("IPAM: locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },

    #[error("IPAM state file {} is corrupt; fix or remove it by hand (pods on this node may hold its addresses)", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The result of [`Ipam::allocate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// `false` when the attachment already held this address (a repeated allocation): a rollback
    /// must then leave it alone.
    pub fresh: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// The range the last writer allocated from (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_allocated: Option<Ipv4Addr>,
    #[serde(default)]
    allocations: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    container_id: String,
    ifname: String,
    ip: Ipv4Addr,
}

#[derive(Default)]
struct State {
    last_allocated: Option<Ipv4Addr>,
    allocations: BTreeMap<AttachmentId, Ipv4Addr>,
}

/// Held shared by every ADD from start to finish and exclusively by GC (see
/// [`Ipam::lifecycle_lock`]); released on drop.
#[derive(Debug)]
pub struct LifecycleLock {
    _lock: Flock<File>,
}

/// A handle on one network's allocator. Cheap to create; every operation opens, locks and closes
/// the files it needs, so handles in different processes (or threads) can be used concurrently.
#[derive(Clone, Debug)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Net,
    gateway: Ipv4Addr,
}

impl Ipam {
    /// `network` must be a safe directory name (see [`crate::config::is_valid_network_name`]).
    pub fn new(data_dir: &Path, network: &str, range: Ipv4Net, gateway: Ipv4Addr) -> Self {
        Self {
            dir: data_dir.join(network),
            range: range.trunc(),
            gateway,
        }
    }

    /// `<dataDir>/<network>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserve an address for `id`, or return the one it already holds.
    pub fn allocate(&self, id: &AttachmentId) -> Result<Allocation, IpamError> {
        self.update(|state| {
            if let Some(ip) = state.allocations.get(id) {
                return Ok((
                    Allocation {
                        ip: *ip,
                        fresh: false,
                    },
                    false,
                ));
            }
            let ip = self
                .next_free(state)
                .ok_or(IpamError::Exhausted { cidr: self.range })?;
            state.allocations.insert(id.clone(), ip);
            state.last_allocated = Some(ip);
            Ok((Allocation { ip, fresh: true }, true))
        })
    }

    /// Drop the reservation of `id`; returns the address it held. Releasing twice is fine.
    pub fn release(&self, id: &AttachmentId) -> Result<Option<Ipv4Addr>, IpamError> {
        self.update(|state| {
            let released = state.allocations.remove(id);
            Ok((released, released.is_some()))
        })
    }

    /// Drop every reservation whose attachment `keep` rejects; returns what was released.
    pub fn retain(
        &self,
        keep: impl Fn(&AttachmentId) -> bool,
    ) -> Result<Vec<(AttachmentId, Ipv4Addr)>, IpamError> {
        self.update(|state| {
            let (kept, released): (BTreeMap<_, _>, BTreeMap<_, _>) =
                std::mem::take(&mut state.allocations)
                    .into_iter()
                    .partition(|(id, _)| keep(id));
            state.allocations = kept;
            let dirty = !released.is_empty();
            Ok((released.into_iter().collect(), dirty))
        })
    }

    /// The address reserved for `id`, if any.
    pub fn get(&self, id: &AttachmentId) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.read()?.allocations.get(id).copied())
    }

    /// Every reservation, ordered by attachment.
    pub fn list(&self) -> Result<Vec<(AttachmentId, Ipv4Addr)>, IpamError> {
        Ok(self.read()?.allocations.into_iter().collect())
    }

    /// Serialise GC against in-flight ADDs: ADD holds this lock shared for its whole run, GC holds
    /// it exclusively, so GC never tears down an attachment whose ADD has not finished yet (and
    /// which the runtime therefore cannot have listed as valid).
    pub fn lifecycle_lock(&self, exclusive: bool) -> Result<LifecycleLock, IpamError> {
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Ok(LifecycleLock {
            _lock: self.lock_file(LIFECYCLE_LOCK_FILE, arg)?,
        })
    }

    /// The first free address after the last one handed out, wrapping around the range.
    fn next_free(&self, state: &State) -> Option<Ipv4Addr> {
        let network = u32::from(self.range.network());
        let broadcast = u32::from(self.range.broadcast());
        // /31 and /32 have no network or broadcast address to skip (RFC 3021).
        let (first, last) = if self.range.prefix_len() >= 31 {
            (network, broadcast)
        } else {
            (network + 1, broadcast - 1)
        };
        let size = u64::from(last - first) + 1;
        let start = match state.last_allocated.map(u32::from) {
            Some(prev) if (first..last).contains(&prev) => prev + 1,
            _ => first,
        };
        let used: HashSet<u32> = state
            .allocations
            .values()
            .map(|ip| u32::from(*ip))
            .collect();
        let gateway = u32::from(self.gateway);
        (0..size)
            .map(|i| {
                let offset = (u64::from(start - first) + i) % size;
                // `offset < size <= 2^32`, and `first + offset <= last`, so this cannot truncate.
                first + offset as u32
            })
            .find(|candidate| *candidate != gateway && !used.contains(candidate))
            .map(Ipv4Addr::from)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Load, change and (if `f` says it changed anything) store the state, under the lock.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, bool), IpamError>,
    ) -> Result<T, IpamError> {
        let _lock = self.lock_file(LOCK_FILE, FlockArg::LockExclusive)?;
        let mut state = self.read()?;
        let (out, dirty) = f(&mut state)?;
        if dirty {
            self.write(&state)?;
        }
        Ok(out)
        // `_lock` drops here: the lock is released only after the rename.
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> Result<Flock<File>, IpamError> {
        // Root's only: which pod holds which address is nobody else's business, and nobody else
        // may take the lock.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)))
            .map_err(|source| IpamError::Io {
                op: "creating",
                path: self.dir.clone(),
                source,
            })?;
        let path = self.dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| IpamError::Io {
                op: "opening",
                path: path.clone(),
                source,
            })?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(lock),
                Err((back, Errno::EINTR)) => file = back,
                Err((_, source)) => return Err(IpamError::Lock { path, source }),
            }
        }
    }

    fn read(&self) -> Result<State, IpamError> {
        let path = self.state_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(IpamError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
        };
        let file: StateFile = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(_) if written_before_boot(&path) => {
                tracing::warn!(path = %path.display(), "IPAM state from before the last boot is unreadable (a machine crash); starting over: no pod of that boot is alive");
                return Ok(State::default());
            }
            Err(source) => return Err(IpamError::Corrupt { path, source }),
        };
        Ok(State {
            last_allocated: file.last_allocated,
            allocations: file
                .allocations
                .into_iter()
                .map(|e| {
                    (
                        AttachmentId {
                            container_id: e.container_id,
                            ifname: e.ifname,
                        },
                        e.ip,
                    )
                })
                .collect(),
        })
    }

    fn write(&self, state: &State) -> Result<(), IpamError> {
        let file = StateFile {
            format: STATE_FORMAT,
            range: Some(self.range),
            last_allocated: state.last_allocated,
            allocations: state
                .allocations
                .iter()
                .map(|(id, ip)| Entry {
                    container_id: id.container_id.clone(),
                    ifname: id.ifname.clone(),
                    ip: *ip,
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| IpamError::Io {
            op: "encoding",
            path: self.state_path(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');

        let tmp = self.dir.join(STATE_TMP_FILE);
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| IpamError::Io { op, path, source }
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        out.write_all(&bytes).map_err(io_err("writing", &tmp))?;
        drop(out);
        let path = self.state_path();
        fs::rename(&tmp, &path).map_err(io_err("replacing", &path))
    }
}

/// Was `path` last modified before the machine booted? `false` when either is unknown, so that an
/// unreadable state is an error unless it is known to be a remnant.
fn written_before_boot(path: &Path) -> bool {
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok();
    let booted = fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    match (modified, booted) {
        (Some(modified), Some(booted)) => {
            modified < std::time::UNIX_EPOCH + std::time::Duration::from_secs(booted)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;
    use crate::test_support::TempDir;

    fn id(container: &str) -> AttachmentId {
        AttachmentId {
            container_id: container.into(),
            ifname: "eth0".into(),
        }
    }

    fn ipam(dir: &TempDir, cidr: &str) -> Ipam {
        Ipam::new(
            dir.path(),
            "weir",
            cidr.parse().unwrap(),
            Ipv4Addr::new(169, 254, 1, 1),
        )
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_state_is_root_only() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.244.1.0/29");
        ipam.allocate(&id("a")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ipam.dir), 0o700);
        assert_eq!(mode(&ipam.state_path()), 0o600);
    }

    #[test]
    fn allocates_in_order_skipping_the_network_address() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.244.1.0/24");
        for (i, expected) in ["10.244.1.1", "10.244.1.2", "10.244.1.3"]
            .iter()
            .enumerate()
        {
            let a = ipam.allocate(&id(&format!("c{i}"))).unwrap();
            assert_eq!(a.ip, ip(expected));
            assert!(a.fresh);
        }
    }

    #[test]
    fn skips_the_gateway_when_it_is_in_the_range() {
        let dir = TempDir::new().unwrap();
        let ipam = Ipam::new(
            dir.path(),
            "weir",
            "10.0.0.0/29".parse().unwrap(),
            ip("10.0.0.2"),
        );
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&id(&format!("c{i}"))).unwrap().ip)
            .collect();
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip)
        );
        assert!(matches!(
            ipam.allocate(&id("full")),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_slash_30_has_two_addresses_then_is_exhausted() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/30");
        assert_eq!(ipam.allocate(&id("a")).unwrap().ip, ip("10.0.0.1"));
        assert_eq!(ipam.allocate(&id("b")).unwrap().ip, ip("10.0.0.2"));
        match ipam.allocate(&id("c")) {
            Err(IpamError::Exhausted { cidr }) => assert_eq!(cidr.to_string(), "10.0.0.0/30"),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        let err = crate::error::CniError::from(ipam.allocate(&id("c")).unwrap_err());
        assert_eq!(err.code(), 110);
        assert_eq!(
            err.to_string(),
            "ip range exhausted: no free address left in 10.0.0.0/30"
        );
    }

    #[test]
    fn a_slash_29_has_six_addresses_and_never_the_broadcast() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.8/29");
        let got: Vec<_> = (0..6)
            .map(|i| ipam.allocate(&id(&format!("c{i}"))).unwrap().ip)
            .collect();
        assert_eq!(got.first(), Some(&ip("10.0.0.9")));
        assert_eq!(got.last(), Some(&ip("10.0.0.14")));
        assert!(!got.contains(&ip("10.0.0.8")) && !got.contains(&ip("10.0.0.15")));
        assert!(matches!(
            ipam.allocate(&id("c6")),
            Err(IpamError::Exhausted { .. })
        ));
        // Freeing one makes room again.
        ipam.release(&id("c3")).unwrap();
        assert_eq!(ipam.allocate(&id("c6")).unwrap().ip, ip("10.0.0.12"));
    }

    #[test]
    fn round_robin_does_not_reuse_a_freed_address_at_once_and_wraps() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/29");
        assert_eq!(ipam.allocate(&id("a")).unwrap().ip, ip("10.0.0.1"));
        assert_eq!(ipam.allocate(&id("b")).unwrap().ip, ip("10.0.0.2"));
        assert_eq!(ipam.release(&id("a")).unwrap(), Some(ip("10.0.0.1")));
        assert_eq!(ipam.allocate(&id("c")).unwrap().ip, ip("10.0.0.3"));
        for name in ["d", "e", "f"] {
            ipam.allocate(&id(name)).unwrap();
        }
        // .1 is the only free address; the search wraps around to it.
        assert_eq!(ipam.allocate(&id("g")).unwrap().ip, ip("10.0.0.1"));
    }

    #[test]
    fn allocation_is_idempotent_per_attachment() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        let first = ipam.allocate(&id("a")).unwrap();
        let again = ipam.allocate(&id("a")).unwrap();
        assert_eq!(first.ip, again.ip);
        assert!(first.fresh && !again.fresh);
        // Same container, other interface: another address.
        let other_if = AttachmentId {
            container_id: "a".into(),
            ifname: "net1".into(),
        };
        assert_ne!(ipam.allocate(&other_if).unwrap().ip, first.ip);
    }

    #[test]
    fn release_is_idempotent_and_get_reflects_it() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        assert_eq!(ipam.release(&id("never")).unwrap(), None);
        let a = ipam.allocate(&id("a")).unwrap().ip;
        assert_eq!(ipam.get(&id("a")).unwrap(), Some(a));
        assert_eq!(ipam.release(&id("a")).unwrap(), Some(a));
        assert_eq!(ipam.release(&id("a")).unwrap(), None);
        assert_eq!(ipam.get(&id("a")).unwrap(), None);
    }

    #[test]
    fn state_persists_across_handles() {
        let dir = TempDir::new().unwrap();
        let a = ipam(&dir, "10.0.0.0/24").allocate(&id("a")).unwrap().ip;
        let b = ipam(&dir, "10.0.0.0/24").allocate(&id("b")).unwrap().ip;
        let reopened = ipam(&dir, "10.0.0.0/24");
        assert_eq!(reopened.list().unwrap(), vec![(id("a"), a), (id("b"), b)]);
        // last_allocated survives too: the next address follows b.
        assert_eq!(reopened.allocate(&id("c")).unwrap().ip, ip("10.0.0.3"));
        let text = fs::read_to_string(dir.path().join("weir").join(STATE_FILE)).unwrap();
        assert!(text.contains("\"last_allocated\": \"10.0.0.3\""), "{text}");
        assert!(!dir.path().join("weir").join(STATE_TMP_FILE).exists());
    }

    #[test]
    fn networks_are_separate() {
        let dir = TempDir::new().unwrap();
        let range: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let gw = ip("169.254.1.1");
        let a = Ipam::new(dir.path(), "one", range, gw);
        let b = Ipam::new(dir.path(), "two", range, gw);
        assert_eq!(
            a.allocate(&id("x")).unwrap().ip,
            b.allocate(&id("x")).unwrap().ip
        );
        assert_eq!(a.list().unwrap().len(), 1);
    }

    #[test]
    fn retain_releases_everything_else() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        for name in ["a", "b", "c"] {
            ipam.allocate(&id(name)).unwrap();
        }
        let released = ipam.retain(|i| i.container_id == "b").unwrap();
        let names: Vec<_> = released
            .iter()
            .map(|(i, _)| i.container_id.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(ipam.list().unwrap().len(), 1);
        assert!(ipam.retain(|_| true).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_reset() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        ipam.allocate(&id("a")).unwrap();
        fs::write(dir.path().join("weir").join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            ipam.allocate(&id("b")),
            Err(IpamError::Corrupt { .. })
        ));
        assert!(matches!(ipam.list(), Err(IpamError::Corrupt { .. })));
    }

    #[test]
    fn an_unreadable_state_from_before_this_boot_starts_over() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        ipam.allocate(&id("a")).unwrap();
        let path = dir.path().join("weir").join(STATE_FILE);
        // What delayed allocation can leave behind a rename when the machine crashes.
        fs::write(&path, b"").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        assert!(ipam.list().unwrap().is_empty());
        assert!(ipam.allocate(&id("b")).is_ok());
        assert_eq!(ipam.list().unwrap().len(), 1);
    }

    #[test]
    fn reading_a_missing_state_creates_nothing() {
        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        assert!(ipam.list().unwrap().is_empty());
        assert_eq!(ipam.get(&id("a")).unwrap(), None);
        assert!(!dir.path().join("weir").exists());
    }

    #[test]
    fn lifecycle_lock_is_shared_for_adds_and_exclusive_for_gc() {
        use std::{sync::mpsc, time::Duration};

        let dir = TempDir::new().unwrap();
        let ipam = ipam(&dir, "10.0.0.0/24");
        let add_a = ipam.lifecycle_lock(false).unwrap();
        let add_b = ipam.lifecycle_lock(false).unwrap();
        let (tx, rx) = mpsc::channel();
        let gc_ipam = ipam.clone();
        let gc = thread::spawn(move || {
            let _gc = gc_ipam.lifecycle_lock(true).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "GC must wait for in-flight ADDs"
        );
        drop((add_a, add_b));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        gc.join().unwrap();
    }

    #[test]
    fn fifty_concurrent_allocations_get_fifty_distinct_addresses() {
        let dir = Arc::new(TempDir::new().unwrap());
        let threads: Vec<_> = (0..50)
            .map(|i| {
                let dir = Arc::clone(&dir);
                thread::spawn(move || {
                    ipam(&dir, "10.1.0.0/24")
                        .allocate(&id(&format!("c{i}")))
                        .unwrap()
                })
            })
            .collect();
        let ips: HashSet<Ipv4Addr> = threads
            .into_iter()
            .map(|t| {
                let a = t.join().unwrap();
                assert!(a.fresh);
                a.ip
            })
            .collect();
        assert_eq!(ips.len(), 50);
        assert_eq!(ipam(&dir, "10.1.0.0/24").list().unwrap().len(), 50);
    }
}
