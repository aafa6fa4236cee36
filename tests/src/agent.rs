// SPDX-License-Identifier: Apache-2.0
//! Running `weir-agent` inside a lab node: its command line, start-up, readiness and cleanup.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use weir_agent_api::{call, Rejected, Request, Response};

use crate::{
    cni::find_conflist,
    netns::{command_in_netns, netns_exists},
    paths::require_bin,
    process::{log_tail, run_with_timeout, spawn_detached, ProcessRef, Spawn},
    state::{LabState, NodeState},
};

/// Everything on the agent's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub pod_cidr: String,
    pub cluster_cidr: String,
    pub node_name: String,
    pub uplink: String,
    pub cni_conf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub log_file: PathBuf,
    /// Where the CNI plugin logs (`--cni-log-file`, written into the conflist by the agent).
    pub cni_log_file: PathBuf,
    /// The lab's Kubernetes objects (`--manifest-dir`), shared by every node.
    pub manifest_dir: PathBuf,
    pub service_cidr: String,
    /// `--routing`: native or vxlan.
    pub routing: String,
    /// Appended to `run`'s flags (e.g. `--attach-mode clsact`); `for_node` takes them from
    /// `WEIR_LAB_AGENT_ARGS` (whitespace-separated).
    pub extra_args: Vec<String>,
}

impl AgentConfig {
    pub fn for_node(lab: &LabState, node: &NodeState) -> Self {
        Self {
            pod_cidr: node.pod_cidr.clone(),
            cluster_cidr: lab.cluster_cidr.clone(),
            node_name: node.name.clone(),
            uplink: node.uplink.clone(),
            cni_conf_dir: node.cni_conf_dir.clone(),
            state_dir: node.state_dir.clone(),
            run_dir: node.run_dir.clone(),
            bpffs_dir: node.bpffs_dir.clone(),
            log_file: node.log_file.clone(),
            cni_log_file: node.cni_log_file.clone(),
            manifest_dir: lab.manifest_dir.clone(),
            service_cidr: lab.service_cidr.clone(),
            routing: lab.routing.as_str().to_owned(),
            extra_args: std::env::var("WEIR_LAB_AGENT_ARGS")
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }

    /// The node's configuration as flags, shared by `run` and `cleanup` (the real agent's cleanup
    /// needs `--pod-cidr` and accepts everything `run` does).
    fn config_flags(&self) -> Vec<OsString> {
        let pairs: [(&str, &Path); 9] = [
            ("--pod-cidr", Path::new(&self.pod_cidr)),
            ("--cni-conf-dir", &self.cni_conf_dir),
            ("--node-name", Path::new(&self.node_name)),
            ("--cluster-cidr", Path::new(&self.cluster_cidr)),
            ("--uplink", Path::new(&self.uplink)),
            ("--state-dir", &self.state_dir),
            ("--run-dir", &self.run_dir),
            ("--bpffs-dir", &self.bpffs_dir),
            // Otherwise the plugin logs to /var/log/weir on the machine itself.
            ("--cni-log-file", &self.cni_log_file),
        ];
        pairs
            .into_iter()
            .flat_map(|(flag, value)| [OsString::from(flag), value.as_os_str().to_owned()])
            .collect()
    }

    /// Arguments of `weir-agent run`. The object source flags are `run`'s only: `cleanup` needs
    /// no objects.
    pub fn run_args(&self) -> Vec<OsString> {
        let mut args = vec![OsString::from("run")];
        args.extend(self.config_flags());
        if !self.manifest_dir.as_os_str().is_empty() {
            args.push("--manifest-dir".into());
            args.push(self.manifest_dir.clone().into());
        }
        args.push("--service-cidr".into());
        args.push(self.service_cidr.clone().into());
        args.push("--routing".into());
        args.push(self.routing.clone().into());
        args.push("--log-file".into());
        args.push(self.log_file.clone().into());
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// Arguments of `weir-agent cleanup` (logging to stderr, which `down` reports on failure).
    pub fn cleanup_args(&self) -> Vec<OsString> {
        let mut args = vec![OsString::from("cleanup")];
        args.extend(self.config_flags());
        args
    }

    /// The agent's API socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("agent.sock")
    }
}

/// Start `weir-agent run` in `netns`, detached, output appended to `stdout_log`.
pub fn start_agent(netns: &str, config: &AgentConfig, stdout_log: &Path) -> Result<ProcessRef> {
    let agent = require_bin("weir-agent")?;
    for dir in [&config.cni_conf_dir, &config.state_dir, &config.run_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut command = Command::new(agent);
    command.args(config.run_args());
    spawn_detached(Spawn {
        command,
        netns: Some(netns),
        log: stdout_log,
        ready_timeout: None,
    })
}

/// Ask the agent whether it is ready: `(ready, message)`.
pub fn agent_status(socket: &Path, timeout: Duration) -> Result<(bool, String)> {
    match call(socket, &Request::Status, timeout)? {
        Response::Status { ready, message } => Ok((ready, message)),
        Response::Error { message } => bail!("agent answered Status with an error: {message}"),
        other => bail!("agent answered Status with {other:?}"),
    }
}

/// Tell the agent to re-read its manifest directory; it answers once everything in it is
/// programmed, with the generation programmed and every object it currently rejects.
pub fn agent_sync(socket: &Path, timeout: Duration) -> Result<(u64, Vec<Rejected>)> {
    match call(socket, &Request::Sync, timeout)? {
        Response::Synced {
            generation,
            rejected,
        } => Ok((generation, rejected)),
        Response::Error { message } => bail!("the agent could not sync: {message}"),
        other => bail!("the agent answered Sync with {other:?}"),
    }
}

/// Wait until the agent has written its conflist and reports ready. Fails early if the agent
/// exits, and with the tail of its logs either way.
pub fn wait_agent_ready(
    process: &ProcessRef,
    config: &AgentConfig,
    stdout_log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if !process.is_alive() {
            last = format!("weir-agent (pid {}) exited", process.pid);
            break;
        }
        if find_conflist(&config.cni_conf_dir).is_none() {
            last = format!("no conflist in {} yet", config.cni_conf_dir.display());
        } else {
            match agent_status(&config.socket(), Duration::from_secs(1)) {
                Ok((true, _)) => return Ok(()),
                Ok((false, message)) => last = format!("agent not ready: {message}"),
                Err(err) => last = format!("{err:#}"),
            }
        }
        if Instant::now() >= deadline {
            last = format!("not ready after {} s: {last}", timeout.as_secs());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "weir-agent for node {} did not become ready: {last}\n--- {} (last 80 lines) ---\n{}\n--- {} (last 80 lines) ---\n{}",
        config.node_name,
        stdout_log.display(),
        log_tail(stdout_log, 80),
        config.log_file.display(),
        log_tail(&config.log_file, 80),
    )
}

/// Run `weir-agent cleanup` inside `netns`. Never runs it anywhere else: if the node netns is
/// gone, the caller removes the agent's files itself.
pub fn run_agent_cleanup(netns: &str, config: &AgentConfig, timeout: Duration) -> Result<()> {
    if !netns_exists(netns) {
        bail!("node netns {netns} is gone; not running weir-agent cleanup");
    }
    let agent = require_bin("weir-agent")?;
    let mut command = Command::new(agent);
    command.args(config.cleanup_args());
    command_in_netns(&mut command, netns)?;
    let out =
        run_with_timeout(&mut command, None, timeout).context("running weir-agent cleanup")?;
    if out.timed_out {
        bail!("weir-agent cleanup timed out after {} s", timeout.as_secs());
    }
    if out.code != 0 {
        bail!(
            "weir-agent cleanup failed (exit {}): {} {}",
            out.code,
            out.stderr.trim(),
            out.stdout.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample_state;

    #[test]
    fn agent_command_lines_match_the_contract() {
        let state = sample_state();
        let config = AgentConfig::for_node(&state, &state.nodes[0]);
        let run: Vec<String> = config
            .run_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            run.join(" "),
            format!(
                "run --pod-cidr 10.244.1.0/24 --cni-conf-dir /run/weir-lab/n1/cni/net.d --node-name n1 \
                 --cluster-cidr 10.244.0.0/16 --uplink eth0 --state-dir /run/weir-lab/n1/state \
                 --run-dir /run/weir-lab/n1/run --bpffs-dir /sys/fs/bpf/weir-lab-{}-n1 \
                 --cni-log-file /run/weir-lab/n1/cni.log --manifest-dir /run/weir-lab/manifests \
                 --service-cidr 10.96.0.0/12 --routing native --log-file /run/weir-lab/n1/agent.log",
                state.id
            )
        );
        let cleanup: Vec<String> = config
            .cleanup_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cleanup[0], "cleanup");
        // The real agent's cleanup needs the pod CIDR; its errors go to stderr, not the log file.
        assert!(cleanup
            .windows(2)
            .any(|w| w[0] == "--pod-cidr" && w[1] == "10.244.1.0/24"));
        assert!(!cleanup.iter().any(|a| a == "--log-file"));
        assert!(!cleanup.iter().any(|a| a == "--manifest-dir"));
        assert!(cleanup
            .windows(2)
            .any(|w| w[0] == "--bpffs-dir"
                && w[1] == format!("/sys/fs/bpf/weir-lab-{}-n1", state.id)));
        assert_eq!(
            config.socket(),
            PathBuf::from("/run/weir-lab/n1/run/agent.sock")
        );
    }
}
