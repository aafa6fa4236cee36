// SPDX-License-Identifier: Apache-2.0
//! Network namespaces the bench makes, commands run inside them, and background processes that are
//! stopped when their guard goes away.
//!
//! Everything runs inside a namespace through `ip -n NAME` or `nsenter --net=PATH` (not
//! `ip netns exec`, which remounts `/sys`); nothing here changes the machine's own network
//! namespace. Guards undo in `Drop`, so an error or an interruption part-way leaves nothing
//! behind. A struct holding both processes and namespaces must list the processes first: fields
//! drop in declaration order, and a namespace with a process still inside outlives its name.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// Run a command to completion; its stdout, or an error with its stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run a command to completion with `input` on its stdin; its stdout, or an error with its stderr.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    // Written from a thread: a command that talks before it has read everything must not block us.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("stdin writer panicked"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    written.with_context(|| format!("feeding {command:?}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `nsenter --net=PATH -- PROGRAM`: a command that runs in the namespace at `path`.
pub fn command_in(path: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut net = std::ffi::OsString::from("--net=");
    net.push(path);
    let mut command = Command::new("nsenter");
    command.arg(net).arg("--").arg(program);
    command
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create `name` with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.path(), program)
    }

    /// `sysctl -w KEY=VALUE` for this namespace's own `net.*` settings.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        run(self.command("sysctl").args(["-qw", setting]))?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("weir-bench: warning: {err:#}");
        }
    }
}

/// A background process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Background {
    what: String,
    child: Child,
}

impl Background {
    /// Start `command` and wait until a line of its stdout contains `ready`. Its later output is
    /// read and thrown away, so a chatty process never blocks on a full pipe.
    pub fn start(
        what: &str,
        command: &mut Command,
        ready: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}: {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        // From here on `Drop` stops the process, whatever happens.
        let process = Self {
            what: what.to_owned(),
            child,
        };
        let (tx, rx) = mpsc::channel();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            let mut said = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !said && line.contains(&ready) {
                    said = true;
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(process),
            Err(_) => bail!("{what} did not say it was ready within {timeout:?}"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(err) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!("weir-bench: warning: stopping {}: {err}", self.what);
        }
    }
}
