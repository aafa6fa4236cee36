// SPDX-License-Identifier: Apache-2.0
//! `weir`, Weir's CNI plugin (spec 0.3.0 – 1.1.0).
//!
//! The plugin is deliberately thin: it creates a veth pair (the pod end directly inside the pod's
//! network namespace), gives the pod an address from a node-local allocator ([`ipam`]) with a /32
//! and a default route through the link-local gateway, and hands the endpoint to weir-agent, which
//! owns the datapath. DEL undoes all of it and succeeds when there is nothing left; when the agent
//! is down, DELs are spooled for it to replay at start-up.
//!
//! Layout: [`skel`] turns `CNI_*` and stdin into a [`skel::Command`]; one module per verb under
//! [`cmd`]; the kernel is reached through `weir-netlink` (Weir's one netlink vocabulary, shared
//! with the agent) and the agent through [`agent`] over `weir-agent-api`. The wire types, each
//! importing only those before it: [`version`] (spec versions), [`error`] (failures as spec
//! codes), [`config`] (the validated network configuration), [`result`] (per-version results).
//! [`execute`] ties them together and is what the binary runs.

use std::{
    io::{Read, Write},
    panic::{self, AssertUnwindSafe},
    process::ExitCode,
    time::Instant,
};

pub mod agent;
pub mod bandwidth;
pub mod cmd;
pub mod config;
pub mod error;
pub mod ipam;
mod logging;
pub mod result;
pub mod skel;
pub mod version;

#[cfg(test)]
mod test_support;

pub use error::CniError;
use skel::{Command, Invocation, Verb};
use version::CniVersion;

pub use weir_agent_api::{attachment_digest, host_veth_name, is_host_veth_name, HOST_VETH_PREFIX};

/// What the process prints on stdout and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// 0 on success, 1 on any error.
    pub exit_code: u8,
    /// The result, the VERSION answer, the error object, or nothing.
    pub stdout: String,
}

impl Outcome {
    fn success(stdout: String) -> Self {
        Self {
            exit_code: 0,
            stdout,
        }
    }

    fn failure(error: &CniError, version: CniVersion) -> Self {
        Self {
            exit_code: 1,
            stdout: error.to_json(version).to_string(),
        }
    }
}

/// Run one invocation: `env` looks up `CNI_*` variables, `stdin` is the network configuration.
///
/// Logs go to the configured `logFile` (never stdout); nothing is logged if it cannot be opened,
/// for VERSION, or when stdin is not a JSON object.
pub fn execute(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let peek = skel::peek(stdin);
    // VERSION has no configuration, so no log file either.
    let log_file = peek
        .log_file
        .filter(|_| env("CNI_COMMAND").as_deref() != Some("VERSION"));
    let run = || match skel::parse(env, stdin) {
        Ok(Command::Version) => Outcome::success(cmd::version::run()),
        Ok(Command::Run(invocation)) => run_invocation(&invocation),
        Err(failure) => {
            tracing::warn!(
                code = failure.error.code(),
                details = %failure.error.details(),
                "rejected invocation: {}",
                failure.error
            );
            Outcome::failure(&failure.error, failure.version)
        }
    };
    match log_file.and_then(|file| logging::dispatch(&file, &peek.log_level)) {
        Some(dispatch) => tracing::dispatcher::with_default(&dispatch, run),
        None => run(),
    }
}

fn run_invocation(invocation: &Invocation) -> Outcome {
    let conf = &invocation.conf;
    let verb = &invocation.verb;
    let (container_id, ifname) = verb
        .attachment()
        .map_or(("", ""), |a| (a.container_id.as_str(), a.ifname.as_str()));
    let span = tracing::info_span!("cni", verb = verb.name(), container_id, ifname);
    let _entered = span.enter();
    let started = Instant::now();

    let result = match verb {
        Verb::Add(args) => cmd::add::run(conf, args).map(|r| r.to_json_string(conf.cni_version)),
        Verb::Del(args) => cmd::del::run(conf, args).map(|()| String::new()),
        Verb::Check(args) => cmd::check::run(conf, args).map(|()| String::new()),
        Verb::Gc(args) => cmd::gc::run(conf, args).map(|()| String::new()),
        Verb::Status => cmd::status::run(conf).map(|()| String::new()),
    };
    let elapsed_us = started.elapsed().as_micros();
    match result {
        Ok(stdout) => {
            tracing::info!(elapsed_us, "{} succeeded", verb.name());
            Outcome::success(stdout)
        }
        Err(e) => {
            tracing::error!(
                elapsed_us,
                code = e.code(),
                details = %e.details(),
                "{} failed: {e}",
                verb.name()
            );
            Outcome::failure(&e, conf.cni_version)
        }
    }
}

/// The most stdin is read: a configuration with a prevResult and runtimeConfig is a few KiB.
pub const MAX_STDIN: u64 = 1 << 20;

/// Read the network configuration, refusing more than [`MAX_STDIN`] bytes.
pub fn read_config(input: impl Read) -> Result<Vec<u8>, CniError> {
    let mut stdin = Vec::new();
    input
        .take(MAX_STDIN + 1)
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::io("reading the network configuration from stdin", e))?;
    if stdin.len() as u64 > MAX_STDIN {
        return Err(CniError::InvalidConfig {
            field: "stdin".into(),
            reason: format!("the network configuration is larger than {MAX_STDIN} bytes"),
        });
    }
    Ok(stdin)
}

/// The whole process: read the environment and stdin, run, print, exit.
pub fn main_entry() -> ExitCode {
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    // VERSION does not read stdin, so that `CNI_COMMAND=VERSION weir` works from a terminal.
    let read = if env("CNI_COMMAND").as_deref() == Some("VERSION") {
        Ok(Vec::new())
    } else {
        read_config(std::io::stdin().lock())
    };
    let outcome = match read {
        Err(err) => Outcome::failure(&err, CniVersion::LATEST),
        // A panic must still produce a spec error object (the rollback guards run while unwinding).
        Ok(stdin) => panic::catch_unwind(AssertUnwindSafe(|| execute(&env, &stdin)))
            .unwrap_or_else(|_| {
                let err = CniError::Internal("internal error: the plugin panicked".into());
                Outcome::failure(&err, skel::peek(&stdin).version)
            }),
    };
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone; the exit code still tells.
    let _ = out
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| out.flush());
    ExitCode::from(outcome.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_beyond_the_limit_is_an_invalid_configuration() {
        let small = read_config(&b"{}"[..]).unwrap();
        assert_eq!(small, b"{}");
        let big = vec![b' '; MAX_STDIN as usize + 1];
        let err = read_config(&big[..]).unwrap_err();
        assert_eq!(err.code(), crate::error::codes::INVALID_CONFIG);
        assert!(read_config(&big[..MAX_STDIN as usize]).is_ok());
    }

    #[test]
    fn host_veth_names_are_deterministic_and_fit_ifnamsiz() {
        let name = host_veth_name("c0ffee", "eth0");
        assert_eq!(name.len(), 15);
        assert_eq!(name, host_veth_name("c0ffee", "eth0"));
        assert_ne!(name, host_veth_name("c0ffee", "net1"));
        assert!(is_host_veth_name(&name));
        // `printf c0ffee/eth0 | sha256sum`
        assert_eq!(
            attachment_digest("c0ffee", "eth0"),
            "6ad2516ced2a6b1030616013e11d64a0c36012ea6a1ba68f4405d3eb8947f253"
        );
        assert_eq!(name, "weir6ad2516ced2");
        assert!(name.starts_with("weir"));
    }

    #[test]
    fn host_veth_name_pattern() {
        assert!(is_host_veth_name("weir0123456789a"));
        for not_ours in [
            "weir0",
            "weir0123456789A",
            "weir0123456789",
            "weir0123456789ab",
            "eth0123456789ab",
            "weir0123456789g",
        ] {
            assert!(!is_host_veth_name(not_ours), "{not_ours}");
        }
    }

    #[test]
    fn version_outcome() {
        let out = execute(&|k| (k == "CNI_COMMAND").then(|| "VERSION".to_owned()), b"");
        assert_eq!(out.exit_code, 0);
        assert_eq!(
            out.stdout,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
