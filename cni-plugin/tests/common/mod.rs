// SPDX-License-Identifier: Apache-2.0
//! Helpers for the privileged tests: throwaway network namespaces and temp dirs.
//!
//! Nothing here touches the network namespace the tests run in. Every namespace is created with
//! `ip netns add weir-cnitest-…` and deleted on drop (also when the test panics); kernel work runs
//! on a dedicated thread that has entered a "node" namespace ([`in_netns`]).

#![allow(dead_code)] // Each test file uses a different subset.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use weir_netlink::{Netns, NetnsGuard};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}-{}-{tag}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `true` when the privileged tests can run (root and `ip`); says so loudly when they cannot.
pub fn privileged(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && ip) {
        eprintln!("SKIPPED {test}: needs root and iproute2 (root={root}, ip={ip})");
    }
    root && ip
}

/// A named network namespace, deleted on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        let name = format!("weir-cnitest-{}", unique(tag));
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        // `lo` down is the state a runtime hands over; nothing else to do.
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> -j <args>` parsed, `[]` when it prints nothing.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-n", self.name.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().expect("run ip");
        if !out.status.success() {
            return serde_json::Value::Array(Vec::new());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            serde_json::Value::Array(Vec::new())
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {full:?}: {e}: {text}"))
        }
    }

    /// `ip -n <ns> <args>`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// Interface names in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One link as `ip -j link show` prints it, or `None`.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.ip_json(&["link", "show", "dev", name])
            .as_array()
            .and_then(|a| a.first().cloned())
    }

    pub fn delete(&mut self) {
        if !self.name.is_empty() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
            self.name.clear();
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.delete();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `f` on a fresh thread that has entered `ns`; never on the calling thread. Panics propagate.
pub fn in_netns<T: Send>(ns: &TestNetns, f: impl FnOnce() -> T + Send) -> T {
    let path = ns.path();
    thread::scope(|s| {
        s.spawn(move || {
            let netns = Netns::open(&path).expect("open the node netns");
            let _guard = NetnsGuard::enter(&netns).expect("enter the node netns");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The `flags` of an `ip -j link` entry contain `flag`.
pub fn has_flag(link: &serde_json::Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}
