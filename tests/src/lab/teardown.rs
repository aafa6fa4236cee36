// SPDX-License-Identifier: Apache-2.0
//! `down`: tearing a lab down whatever state it is in, and saying what was left behind.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Result};

use crate::{
    agent::{run_agent_cleanup, AgentConfig},
    names::{self},
    netns::{delete_netns, list_netns, netns_exists, netns_inode, pids_in_netns},
    paths::{self},
    process::ProcessRef,
    services::{self},
    state::{LabState, StateLock},
};

use super::{pods::cni_del, DownReport, AGENT_STOP_GRACE};

/// Tear down the lab in `dir`, whatever state it is in: stop pod servers and run DEL for each pod,
/// stop the agents (SIGTERM, then SIGKILL after 5 s), run `weir-agent cleanup` in each node,
/// kill anything still running in a lab netns, delete every netns named `weir-lab-<id>-*`,
/// remove `/sys/fs/bpf/weir-lab-<id>-*`, and remove the lab directory. Idempotent.
///
/// Returns an error only if something is left behind; lesser failures are warnings.
pub fn down(dir: &Path) -> Result<DownReport> {
    let dir = names::normalize_dir(dir);
    let lock = StateLock::acquire(&dir, true)?;
    let (state, warning) = match lock.load() {
        Ok(state) => (state, None),
        Err(err) => (None, Some(format!("ignoring unreadable state: {err:#}"))),
    };
    let mut report = down_locked(&lock, state)?;
    report.warnings.extend(warning);
    Ok(report)
}

pub(super) fn down_locked(lock: &StateLock, state: Option<LabState>) -> Result<DownReport> {
    let dir = lock.dir().to_path_buf();
    let id = state
        .as_ref()
        .map_or_else(|| names::lab_id(&dir), |s| s.id.clone());
    let prefix = names::lab_prefix(&id);
    let mut report = DownReport::default();
    if let Some(state) = &state {
        stop_recorded(state, &mut report.warnings);
    }
    let namespaces = lab_namespaces(state.as_ref(), &prefix);
    kill_leftovers(&namespaces, &mut report.warnings);
    for netns in &namespaces {
        if netns_exists(netns) {
            match delete_netns(netns) {
                Ok(()) => report.deleted_netns.push(netns.clone()),
                Err(err) => report.warnings.push(format!("{err:#}")),
            }
        }
    }
    for path in bpffs_dirs(&prefix) {
        if let Err(err) = std::fs::remove_dir_all(&path) {
            report
                .warnings
                .push(format!("removing {}: {err}", path.display()));
        }
    }

    // Check before removing the state that nothing is left.
    let left = left_behind(state.as_ref(), &prefix);
    if !left.is_empty() {
        bail!(
            "could not remove: {} (warnings: {})",
            left.join(", "),
            report.warnings.join("; ")
        );
    }
    remove_lab_dir(&dir, state.as_ref(), &mut report.warnings);
    Ok(report)
}

/// Stop what the state records, in order: pod servers and DEL for each pod, the outside host's
/// server, every agent at once, then `weir-agent cleanup` and the Service chains in each node.
fn stop_recorded(state: &LabState, warnings: &mut Vec<String>) {
    for pod in &state.pods {
        if let Some(server) = &pod.server {
            server.terminate(Duration::from_secs(1));
        }
        if let Err(err) = cni_del(state, pod, Duration::from_secs(15)) {
            warnings.push(format!("{err:#}"));
        }
    }
    if let Some(server) = &state.ext.server {
        server.terminate(Duration::from_secs(1));
    }
    // Stop all agents at once; each gets the full grace period.
    std::thread::scope(|scope| {
        for node in &state.nodes {
            if let Some(agent) = node.agent {
                scope.spawn(move || agent.terminate(AGENT_STOP_GRACE));
            }
        }
    });
    for node in &state.nodes {
        let config = AgentConfig::for_node(state, node);
        if netns_exists(&node.netns) && paths::bin_path("weir-agent").is_file() {
            if let Err(err) = run_agent_cleanup(&node.netns, &config, Duration::from_secs(30)) {
                warnings.push(format!("node {}: {err:#}", node.name));
            }
        }
        // Deleting the netns would take them along; removed first so a lab that cannot
        // delete its netns still leaves no Service rules.
        if state.last_service_index > 0 && netns_exists(&node.netns) {
            if let Err(err) = services::remove_chains(&node.netns) {
                warnings.push(format!(
                    "node {}: removing Service chains: {err:#}",
                    node.name
                ));
            }
        }
    }
}

/// Every netns the state records or that carries the lab's prefix, sorted, once each.
fn lab_namespaces(state: Option<&LabState>, prefix: &str) -> Vec<String> {
    let mut namespaces: Vec<String> = state
        .iter()
        .flat_map(|s| {
            s.pods
                .iter()
                .map(|p| p.netns.clone())
                .chain(s.nodes.iter().map(|n| n.netns.clone()))
                .chain([s.ext.netns.clone()])
        })
        .chain(list_netns(prefix))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// Whatever still runs in a lab netns was started by the lab (or by its agents).
fn kill_leftovers(namespaces: &[String], warnings: &mut Vec<String>) {
    for netns in namespaces {
        let Some(inode) = netns_inode(netns) else {
            continue;
        };
        for pid in pids_in_netns(inode) {
            if let Ok(process) = ProcessRef::from_pid(pid) {
                warnings.push(format!("killing leftover process {pid} in {netns}"));
                process.terminate(Duration::from_secs(1));
            }
        }
    }
}

/// Namespaces, bpffs directories and recorded processes that are still there.
fn left_behind(state: Option<&LabState>, prefix: &str) -> Vec<String> {
    let mut left = list_netns(prefix);
    left.extend(bpffs_dirs(prefix).iter().map(|p| p.display().to_string()));
    if let Some(state) = state {
        let processes = state
            .pods
            .iter()
            .filter_map(|p| p.server)
            .chain(state.ext.server)
            .chain(state.nodes.iter().filter_map(|n| n.agent));
        left.extend(
            processes
                .filter(ProcessRef::is_alive)
                .map(|p| format!("process {}", p.pid)),
        );
    }
    left
}

/// `/sys/fs/bpf/<prefix>*`.
pub(super) fn bpffs_dirs(prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(names::BPFFS_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Remove what the lab put in its directory, then the directory if that leaves it empty. Only
/// known names are removed, in case `WEIR_LAB_DIR` points somewhere shared.
pub(super) fn remove_lab_dir(dir: &Path, state: Option<&LabState>, warnings: &mut Vec<String>) {
    let is_node_dir = |name: &str| {
        name.strip_prefix('n')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut known: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            is_node_dir(&name)
                || ["ext", "pods", crate::manifest::MANIFEST_DIR].contains(&name.as_str())
        })
        .map(|e| e.path())
        .collect();
    if let Some(state) = state {
        for node in &state.nodes {
            for path in [&node.cni_conf_dir, &node.state_dir, &node.run_dir] {
                if !path.starts_with(dir) {
                    known.push(path.clone());
                }
            }
        }
    }
    for path in known {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(err) = removed {
            if err.kind() != std::io::ErrorKind::NotFound {
                warnings.push(format!("removing {}: {err}", path.display()));
            }
        }
    }
    for name in [
        crate::state::STATE_FILE,
        &format!("{}.tmp", crate::state::STATE_FILE),
        crate::state::LOCK_FILE,
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if let Err(err) = std::fs::remove_dir(dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warnings.push(format!("leaving {}: {err}", dir.display()));
        }
    }
}
