// SPDX-License-Identifier: Apache-2.0
//! Background processes the lab starts (agents, pod servers) and how it stops them.
//!
//! The CLI exits right after `up` or `pod add`, so these processes outlive their parent: they run
//! in their own session (`setsid`), their output goes to a log file in the lab directory, and the
//! state file records them as a [`ProcessRef`]: the pid *and* its start time, so a later `down`
//! never signals an unrelated process that happens to reuse the pid.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    os::{fd::AsFd, unix::process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag},
    },
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

use crate::netns::open_netns;

/// A process identified by pid and start time (clock ticks since boot, field 22 of
/// `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    pub start_time: u64,
}

/// State letter and start time from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&stat)
}

/// Parse the state letter and start time out of a `/proc/PID/stat` line. The command name is in
/// parentheses and may itself contain spaces or parentheses, so fields are counted after the last
/// `)`.
pub fn parse_proc_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `state` is field 3; `starttime` is field 22, i.e. 18 fields further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

impl ProcessRef {
    /// Identify a running process.
    pub fn from_pid(pid: i32) -> io::Result<Self> {
        let (_, start_time) = proc_stat(pid)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no process {pid}")))?;
        Ok(Self { pid, start_time })
    }

    /// Is this very process still running (not gone, not a zombie, pid not reused)?
    pub fn is_alive(&self) -> bool {
        self.reap();
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start_time && state != 'Z')
    }

    /// Collect the exit status if the process is our own child (no-op otherwise), so a lab driven
    /// from a long-lived test process does not pile up zombies.
    fn reap(&self) {
        let _ = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG));
    }

    fn signal(&self, signal: Signal) {
        if self.is_alive() {
            let _ = kill(Pid::from_raw(self.pid), signal);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns once the process is gone (or after a
    /// further second if even SIGKILL did not take, which would be a kernel matter), and reports
    /// whether it is gone.
    pub fn terminate(&self, grace: Duration) -> bool {
        if !self.is_alive() {
            return true;
        }
        self.signal(Signal::SIGTERM);
        if wait_until(grace, || !self.is_alive()) {
            return true;
        }
        self.signal(Signal::SIGKILL);
        wait_until(Duration::from_secs(1), || !self.is_alive())
    }
}

/// Poll `done` every 20 ms until it is true or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How to start a background process.
pub struct Spawn<'a> {
    pub command: Command,
    /// Run it inside this netns (a name under `/run/netns`).
    pub netns: Option<&'a str>,
    /// Append stdout (unless `ready_timeout` is set) and stderr here.
    pub log: &'a Path,
    /// When set, the process must print one line on stdout within this time to say it is ready;
    /// stdout is a pipe that is closed afterwards.
    pub ready_timeout: Option<Duration>,
}

/// Start a detached process: its own session, stdin from /dev/null, output to the log file, and
/// optionally inside a netns.
pub fn spawn_detached(spawn: Spawn<'_>) -> Result<ProcessRef> {
    let Spawn {
        mut command,
        netns,
        log,
        ready_timeout,
    } = spawn;
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    command.stdin(Stdio::null());
    command.stderr(log_file.try_clone()?);
    if ready_timeout.is_some() {
        command.stdout(Stdio::piped());
    } else {
        command.stdout(log_file);
    }
    let netns_fd = netns.map(open_netns).transpose()?;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes two plain syscalls (setns, setsid) on an fd opened before the
    // fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = &netns_fd {
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child exists (at worst as a zombie) until someone reaps it, so this cannot race.
    let process = ProcessRef::from_pid(pid).with_context(|| format!("inspecting {program}"))?;
    if let Some(timeout) = ready_timeout {
        let stdout = child.stdout.take().context("stdout pipe missing")?;
        if let Err(err) = wait_ready_line(stdout, timeout) {
            process.terminate(Duration::from_secs(1));
            let tail = log_tail(log, 20);
            bail!(
                "{program} did not get ready: {err:#}\n--- {} ---\n{tail}",
                log.display()
            );
        }
    }
    Ok(process)
}

fn wait_ready_line(stdout: std::process::ChildStdout, timeout: Duration) -> Result<()> {
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => bail!("no ready line within {} ms", timeout.as_millis()),
        Ok(_) => {}
        Err(Errno::EINTR) => bail!("interrupted"),
        Err(err) => return Err(err).context("poll"),
    }
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("exited before it was ready");
    }
    Ok(())
}

/// What [`run_with_timeout`] saw.
#[derive(Clone, Debug)]
pub struct TimedOutput {
    /// Exit code; -1 when killed by a signal (including on timeout).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Run `command` to completion with piped stdio, feeding it `stdin`, and kill it if it runs
/// longer than `timeout`.
pub fn run_with_timeout(
    command: &mut Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> io::Result<TimedOutput> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = spawn_retrying_busy(command)?;
    let writer = child.stdin.take().zip(stdin).map(|(mut pipe, input)| {
        // The program may exit without reading its input; a broken pipe is not our error.
        thread::spawn(move || drop(pipe.write_all(&input)))
    });
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(TimedOutput {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed,
        timed_out,
    })
}

/// Spawn, retrying briefly on ETXTBSY: a binary that was just written (a rebuilt `weir`, a test's
/// stand-in script) can be held open for writing by another thread's fork for a moment.
fn spawn_retrying_busy(command: &mut Command) -> io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The last `lines` lines of a text file, or a note saying why there are none.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match File::open(path) {
        Ok(file) => {
            let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                "(empty)".to_owned()
            } else {
                all[start..].join("\n")
            }
        }
        Err(err) => format!("({}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing_survives_odd_command_names() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_proc_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_bogus_start_time_is_not() {
        let me = ProcessRef::from_pid(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let reused = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());
    }

    #[test]
    fn detached_process_is_terminated_and_reaped() {
        let dir = std::env::temp_dir().join(format!("weir-lab-proc-{}", std::process::id()));
        let log = dir.join("sleep.log");
        let mut command = Command::new("sleep");
        command.arg("30");
        let process = spawn_detached(Spawn {
            command,
            netns: None,
            log: &log,
            ready_timeout: None,
        })
        .unwrap();
        assert!(process.is_alive());
        assert!(process.terminate(Duration::from_secs(2)));
        assert!(!process.is_alive());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("weir-lab-tail-{}", std::process::id()));
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&path, 2), "3\n4");
        std::fs::remove_file(&path).unwrap();
        assert!(log_tail(&path, 2).starts_with('('));
    }
}
