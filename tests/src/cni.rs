// SPDX-License-Identifier: Apache-2.0
//! Invoking the `weir` CNI binary exactly as a container runtime (libcni) does: `CNI_*`
//! environment variables, the plugin's network configuration on stdin, the result or error JSON
//! on stdout, and the runtime's own netns (here: a lab node's) as the process's netns.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{netns::command_in_netns, paths::bin_path, process::run_with_timeout};

/// File name the agent writes in its `--cni-conf-dir`.
pub const CONFLIST_NAME: &str = "10-weir.conflist";

/// Everything a runtime passes to a CNI plugin besides stdin.
#[derive(Clone, Debug)]
pub struct CniEnv {
    /// `ADD`, `DEL`, `CHECK`, `VERSION`, `STATUS` or `GC`.
    pub command: String,
    pub container_id: Option<String>,
    /// `CNI_NETNS`: the pod's netns path (`/run/netns/NAME`).
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// The plugin binary; `CNI_PATH` is its directory.
    pub plugin: PathBuf,
    /// Run the plugin inside this netns (the runtime's, i.e. the node's). `None`: the caller's.
    pub run_in: Option<String>,
    /// Kill the plugin if it has not finished by then.
    pub timeout: Duration,
    /// Extra environment variables, after the `CNI_*` ones.
    pub extra_env: BTreeMap<String, String>,
}

impl CniEnv {
    /// `command` for the `weir` binary found by [`bin_path`], with no container, netns or args.
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            container_id: None,
            netns: None,
            ifname: None,
            args: None,
            plugin: bin_path("weir"),
            run_in: None,
            timeout: Duration::from_secs(60),
            extra_env: BTreeMap::new(),
        }
    }

    /// ADD/DEL/CHECK for a Kubernetes pod: container id, netns, `eth0`, and the `K8S_POD_*` args.
    pub fn for_pod(
        command: &str,
        container_id: &str,
        netns: &Path,
        pod_namespace: &str,
        pod_name: &str,
    ) -> Self {
        Self {
            container_id: Some(container_id.to_owned()),
            netns: Some(netns.to_path_buf()),
            ifname: Some("eth0".to_owned()),
            args: Some(k8s_args(pod_namespace, pod_name, container_id)),
            ..Self::new(command)
        }
    }

    pub fn run_in(mut self, netns: &str) -> Self {
        self.run_in = Some(netns.to_owned());
        self
    }

    /// The `CNI_*` variables, in the order a runtime sets them.
    pub fn vars(&self) -> Vec<(String, String)> {
        let cni_path = self
            .plugin
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let mut vars = vec![("CNI_COMMAND".to_owned(), self.command.clone())];
        let optional = [
            ("CNI_CONTAINERID", self.container_id.clone()),
            (
                "CNI_NETNS",
                self.netns.as_ref().map(|p| p.display().to_string()),
            ),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", self.args.clone()),
        ];
        vars.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?))),
        );
        vars.push(("CNI_PATH".to_owned(), cni_path));
        vars.extend(self.extra_env.clone());
        vars
    }
}

/// `CNI_ARGS` as kubelet's CRI runtimes pass them.
pub fn k8s_args(pod_namespace: &str, pod_name: &str, infra_container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod_name};\
         K8S_POD_INFRA_CONTAINER_ID={infra_container_id}"
    )
}

/// What a plugin invocation produced.
#[derive(Clone, Debug)]
pub struct CniOutput {
    /// Exit code (-1 when killed by a signal, e.g. on timeout).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as JSON, if it is JSON.
    pub json: Option<Value>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// A CNI error result: `{"code": N, "msg": "...", "details": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl CniOutput {
    pub fn success(&self) -> bool {
        self.code == 0 && !self.timed_out
    }

    /// The error JSON, or a synthesized one when the plugin failed without printing it.
    pub fn error(&self) -> Option<CniError> {
        if self.success() {
            return None;
        }
        let parsed = self
            .json
            .as_ref()
            .and_then(|json| serde_json::from_value::<CniError>(json.clone()).ok());
        Some(parsed.unwrap_or_else(|| CniError {
            code: 999,
            msg: if self.timed_out {
                format!("plugin timed out after {} ms", self.elapsed.as_millis())
            } else {
                format!("plugin exited with {} and no error JSON", self.code)
            },
            details: Some(format!(
                "stdout: {:?}; stderr: {:?}",
                self.stdout.trim(),
                self.stderr.trim()
            )),
        }))
    }

    /// The result JSON of a successful invocation, or the CNI error.
    pub fn into_result(self) -> Result<Value, CniError> {
        match self.error() {
            Some(err) => Err(err),
            None => Ok(self.json.unwrap_or(Value::Null)),
        }
    }
}

/// Run a CNI plugin with `env`, writing `stdin` (the network configuration) to it.
pub fn run_cni(env: &CniEnv, stdin: &Value) -> Result<CniOutput> {
    if !env.plugin.exists() {
        bail!(
            "CNI plugin {} not found (build it, or set WEIR_BIN_DIR)",
            env.plugin.display()
        );
    }
    let mut command = Command::new(&env.plugin);
    // libcni passes the runtime's environment through, with its own CNI_* values.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            command.env_remove(key);
        }
    }
    command.envs(env.vars());
    if let Some(netns) = &env.run_in {
        command_in_netns(&mut command, netns)?;
    }
    let input = serde_json::to_vec(stdin)?;
    let out = run_with_timeout(&mut command, Some(input), env.timeout)
        .with_context(|| format!("running {}", env.plugin.display()))?;
    let json = serde_json::from_str(out.stdout.trim()).ok();
    Ok(CniOutput {
        code: out.code,
        stdout: out.stdout,
        stderr: out.stderr,
        json,
        elapsed: out.elapsed,
        timed_out: out.timed_out,
    })
}

/// Find the conflist the agent wrote in `conf_dir`: `10-weir.conflist`, else the first
/// `*.conflist` in name order (as libcni picks).
pub fn find_conflist(conf_dir: &Path) -> Option<PathBuf> {
    let preferred = conf_dir.join(CONFLIST_NAME);
    if preferred.is_file() {
        return Some(preferred);
    }
    let mut lists: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    lists.sort();
    lists.into_iter().next()
}

/// The configuration libcni gives the first plugin of a conflist: the plugin entry with the
/// list's `cniVersion` and `name` injected.
pub fn plugin_config(conflist: &Value) -> Result<Value> {
    let plugin = conflist
        .get("plugins")
        .and_then(Value::as_array)
        .and_then(|plugins| plugins.first())
        .context("conflist has no plugins")?;
    let mut config = plugin
        .as_object()
        .context("conflist plugin entry is not an object")?
        .clone();
    for key in ["cniVersion", "name"] {
        let value = conflist
            .get(key)
            .with_context(|| format!("conflist has no {key:?}"))?;
        config.insert(key.to_owned(), value.clone());
    }
    Ok(Value::Object(config))
}

/// Read `conf_dir`'s conflist and derive the plugin configuration from it.
pub fn plugin_config_from_dir(conf_dir: &Path) -> Result<Value> {
    let path = find_conflist(conf_dir)
        .with_context(|| format!("no conflist in {}", conf_dir.display()))?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let conflist: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    plugin_config(&conflist).with_context(|| format!("in {}", path.display()))
}

/// `config` with `prevResult` set, as for DEL and CHECK.
pub fn with_prev_result(config: &Value, prev_result: &Value) -> Value {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        map.insert("prevResult".to_owned(), prev_result.clone());
    }
    config
}

/// The parts of an ADD result the lab uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddResult {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// MAC of the interface `ips[0]` points at (the pod side), if reported.
    pub mac: Option<String>,
}

/// Pick `ips[0].address` (and its interface's MAC) out of a CNI result.
pub fn parse_add_result(result: &Value) -> Result<AddResult> {
    let first = result
        .get("ips")
        .and_then(Value::as_array)
        .and_then(|ips| ips.first())
        .context("CNI result has no ips")?;
    let address = first
        .get("address")
        .and_then(Value::as_str)
        .context("CNI result ips[0] has no address")?;
    let (ip, prefix) = address
        .split_once('/')
        .with_context(|| format!("ips[0].address {address:?} is not CIDR"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("ips[0].address {address:?} is not IPv4"))?;
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|&p| p <= 32)
        .with_context(|| format!("ips[0].address {address:?} has a bad prefix"))?;
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let mac = first
        .get("interface")
        .and_then(Value::as_u64)
        .and_then(|i| interfaces?.get(usize::try_from(i).ok()?))
        .or_else(|| {
            // No index: take the interface that lives in a sandbox.
            interfaces?
                .iter()
                .find(|i| i.get("sandbox").is_some_and(|s| !s.is_null()))
        })
        .and_then(|i| i.get("mac"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(AddResult {
        ip,
        prefix_len,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plugin_config_merges_list_name_and_version() {
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "weir",
            "plugins": [{"type": "weir", "agentSocket": "/run/weir/agent.sock"}, {"type": "other"}]
        });
        assert_eq!(
            plugin_config(&conflist).unwrap(),
            json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir", "agentSocket": "/run/weir/agent.sock"})
        );
        assert!(plugin_config(&json!({"cniVersion": "1.0.0", "name": "x"})).is_err());
        assert!(plugin_config(&json!({"name": "x", "plugins": [{"type": "weir"}]})).is_err());
    }

    #[test]
    fn prev_result_is_added_for_del() {
        let config = json!({"type": "weir"});
        let prev = json!({"ips": []});
        assert_eq!(
            with_prev_result(&config, &prev),
            json!({"type": "weir", "prevResult": {"ips": []}})
        );
    }

    #[test]
    fn add_result_yields_ip_and_pod_mac() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "weir1234", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.244.1.5/32", "interface": 1}]
        });
        let parsed = parse_add_result(&result).unwrap();
        assert_eq!(parsed.ip, Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(parsed.prefix_len, 32);
        assert_eq!(parsed.mac.as_deref(), Some("0a:58:0a:f4:01:05"));

        let mut no_index = result.clone();
        no_index["ips"][0]
            .as_object_mut()
            .unwrap()
            .remove("interface");
        assert_eq!(
            parse_add_result(&no_index).unwrap().mac.as_deref(),
            Some("0a:58:0a:f4:01:05")
        );
        for bad in [
            json!({}),
            json!({"ips": []}),
            json!({"ips": [{"address": "10.244.1.5"}]}),
            json!({"ips": [{"address": "fd00::1/128"}]}),
        ] {
            assert!(parse_add_result(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_vars_follow_the_runtime_convention() {
        let env = CniEnv {
            plugin: PathBuf::from("/opt/cni/bin/weir"),
            ..CniEnv::for_pod("ADD", "c0ffee", Path::new("/run/netns/p"), "default", "web")
        };
        let vars: BTreeMap<_, _> = env.vars().into_iter().collect();
        assert_eq!(vars["CNI_COMMAND"], "ADD");
        assert_eq!(vars["CNI_CONTAINERID"], "c0ffee");
        assert_eq!(vars["CNI_NETNS"], "/run/netns/p");
        assert_eq!(vars["CNI_IFNAME"], "eth0");
        assert_eq!(vars["CNI_PATH"], "/opt/cni/bin");
        assert_eq!(
            vars["CNI_ARGS"],
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee"
        );
        let version = CniEnv::new("VERSION").vars();
        assert!(version.iter().all(|(k, _)| k != "CNI_NETNS"));
    }

    #[test]
    fn error_output_is_parsed_or_synthesized() {
        let mut out = CniOutput {
            code: 1,
            stdout: r#"{"cniVersion":"1.0.0","code":11,"msg":"try again later"}"#.to_owned(),
            stderr: String::new(),
            json: None,
            elapsed: Duration::ZERO,
            timed_out: false,
        };
        out.json = serde_json::from_str(&out.stdout).ok();
        let err = out.error().unwrap();
        assert_eq!((err.code, err.msg.as_str()), (11, "try again later"));
        assert_eq!(err.to_string(), "CNI error 11: try again later");
        out.json = None;
        assert_eq!(out.error().unwrap().code, 999);
        out.code = 0;
        out.json = Some(json!({"ips": []}));
        assert!(out.success());
        assert_eq!(out.into_result().unwrap(), json!({"ips": []}));
    }

    #[test]
    fn run_cni_passes_env_and_stdin_and_captures_output() {
        // A stand-in plugin: echo the command and stdin back as JSON.
        let dir = std::env::temp_dir().join(format!("weir-lab-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("fake-plugin");
        std::fs::write(
            &plugin,
            "#!/bin/sh\nin=$(cat)\nprintf '{\"cmd\":\"%s\",\"path\":\"%s\",\"in\":%s}' \"$CNI_COMMAND\" \"$CNI_PATH\" \"$in\"\n\
             [ \"$CNI_COMMAND\" = DEL ] && exit 3\nexit 0\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x"])
            .arg(&plugin)
            .status()
            .unwrap();
        let env = CniEnv {
            plugin: plugin.clone(),
            ..CniEnv::new("ADD")
        };
        let out = run_cni(&env, &json!({"type": "weir"})).unwrap();
        assert!(out.success(), "{out:?}");
        let json = out.json.unwrap();
        assert_eq!(json["cmd"], "ADD");
        assert_eq!(json["path"], dir.display().to_string());
        assert_eq!(json["in"], json!({"type": "weir"}));

        let del = CniEnv {
            command: "DEL".to_owned(),
            ..env
        };
        let out = run_cni(&del, &json!({})).unwrap();
        assert_eq!(out.code, 3);
        assert!(out.error().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
