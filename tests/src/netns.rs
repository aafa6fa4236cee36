// SPDX-License-Identifier: Apache-2.0
//! Named network namespaces (`ip netns add`, so they live under `/run/netns/NAME`), and ways to do
//! work inside one without ever touching the caller's own namespace.
//!
//! `setns(CLONE_NEWNET)` switches only the calling *thread*. So:
//! - [`in_netns`] runs a closure on a fresh scoped thread that enters the netns first; sockets made
//!   there stay in that netns for their whole life, wherever they are used afterwards;
//! - [`command_in_netns`] makes a child process enter the netns between fork and exec;
//! - [`ip_in`] runs `ip -n NAME ...`, which does the same inside iproute2.
//!
//! There is deliberately no helper that runs `ip` in the caller's namespace: the lab must never
//! change the machine's own network namespace.

use std::{
    ffi::OsStr,
    fs::File,
    os::{fd::OwnedFd, unix::fs::MetadataExt, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of a named netns.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Does the named netns exist?
pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Open a named netns, for `setns`.
pub fn open_netns(name: &str) -> Result<OwnedFd> {
    let path = netns_path(name);
    let file = File::open(&path).with_context(|| format!("opening netns {}", path.display()))?;
    Ok(file.into())
}

/// The netns inode (what `/proc/PID/ns/net` links to as `net:[INODE]`).
pub fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(netns_path(name)).ok().map(|m| m.ino())
}

/// Names of the netns whose name starts with `prefix`, sorted.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn run_ip(args: &[&OsStr]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !output.status.success() {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        bail!(
            "`ip {}` failed ({}): {}",
            shown.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run `ip -n NETNS ARGS...` and return its stdout.
pub fn ip_in<S: AsRef<OsStr>>(netns: &str, args: &[S]) -> Result<String> {
    if netns.is_empty() {
        bail!("refusing to run ip without a target netns");
    }
    let mut all: Vec<&OsStr> = vec![OsStr::new("-n"), OsStr::new(netns)];
    all.extend(args.iter().map(AsRef::as_ref));
    run_ip(&all)
}

/// Create a named netns with `lo` up.
pub fn create_netns(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        bail!("bad netns name {name:?}");
    }
    run_ip(&[OsStr::new("netns"), OsStr::new("add"), OsStr::new(name)])?;
    if let Err(err) = ip_in(name, &["link", "set", "lo", "up"]) {
        let _ = delete_netns(name);
        return Err(err);
    }
    Ok(())
}

/// Delete a named netns; succeeds when it is already gone. Links inside it go with it (a veth
/// takes its peer along).
pub fn delete_netns(name: &str) -> Result<()> {
    if !netns_exists(name) {
        return Ok(());
    }
    run_ip(&[OsStr::new("netns"), OsStr::new("del"), OsStr::new(name)]).map(drop)
}

/// Run `f` on a thread that has entered netns `name`, and return its result. A panic in `f` is
/// propagated.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let fd = open_netns(name)?;
    thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<T> {
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering netns {name}"))?;
            drop(fd);
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Make `command` run inside netns `name` (the child enters it between fork and exec).
pub fn command_in_netns(command: &mut Command, name: &str) -> Result<()> {
    let fd = open_netns(name)?;
    // SAFETY: runs in the forked child before exec; setns is a single async-signal-safe syscall on
    // an fd opened before the fork, and nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            setns(&fd, CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    Ok(())
}

/// A named netns that is deleted when this value is dropped, unless [`Netns::persist`] is
/// called.
#[derive(Debug)]
pub struct Netns {
    name: String,
    delete_on_drop: bool,
}

impl Netns {
    /// `ip netns add NAME`, then `lo` up.
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        create_netns(&name)?;
        Ok(Self {
            name,
            delete_on_drop: true,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, as given to CNI plugins in `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// Run `f` on a thread inside this netns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(&self.name, f)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        ip_in(&self.name, args)
    }

    /// Keep the netns after this value is dropped; returns its name.
    pub fn persist(mut self) -> String {
        self.delete_on_drop = false;
        std::mem::take(&mut self.name)
    }

    /// Delete now, reporting errors (dropping deletes too, silently).
    pub fn delete(mut self) -> Result<()> {
        self.delete_on_drop = false;
        delete_netns(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.delete_on_drop {
            if let Err(err) = delete_netns(&self.name) {
                eprintln!("weir-lab: deleting netns {}: {err:#}", self.name);
            }
        }
    }
}

/// Pids of the processes whose network namespace has inode `inode`.
pub fn pids_in_netns(inode: u64) -> Vec<i32> {
    let wanted = format!("net:[{inode}]");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
        .collect()
}
