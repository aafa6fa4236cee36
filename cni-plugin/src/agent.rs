// SPDX-License-Identifier: Apache-2.0
//! The plugin's side of the weir-agent protocol ([`weir_agent_api`]): one blocking request per
//! connection, with a deadline per kind of request.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use weir_agent_api::{ClientError, Request, Response};

/// How long each kind of request may take before the agent counts as unavailable.
pub mod timeouts {
    use std::time::Duration;

    /// STATUS, and the readiness probe at the start of ADD.
    pub const STATUS: Duration = Duration::from_secs(2);
    /// ADD is answered once the endpoint's datapath is in place.
    pub const ADD: Duration = Duration::from_secs(30);
    pub const DEL: Duration = Duration::from_secs(10);
    pub const GET: Duration = Duration::from_secs(5);
    pub const GC: Duration = Duration::from_secs(30);
}

/// A client for the agent's unix socket.
#[derive(Clone, Debug)]
pub struct Agent {
    socket: PathBuf,
}

impl Agent {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `request` and wait up to `timeout` for the answer.
    pub fn call(&self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let started = std::time::Instant::now();
        let answer = weir_agent_api::call(&self.socket, request, timeout);
        tracing::debug!(
            op = op_name(request),
            elapsed_us = started.elapsed().as_micros(),
            ok = answer.is_ok(),
            "weir-agent call"
        );
        answer
    }
}

/// A connection opened ahead of its one request. The agent binds its socket only once it is
/// ready, so a connection that succeeds is the readiness check ADD used to make with a separate
/// STATUS round trip; an agent that is not ready after all answers the request itself with a
/// not-ready STATUS.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    socket: PathBuf,
}

impl Agent {
    /// Connect now, to send one request later with [`Connection::call`].
    pub fn connect(&self) -> Result<Connection, ClientError> {
        let stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
                path: self.socket.display().to_string(),
                source,
            })?;
        Ok(Connection {
            stream,
            socket: self.socket.clone(),
        })
    }
}

impl Connection {
    /// Send `request` and wait up to `timeout` for the answer (the wire format of
    /// [`weir_agent_api::call`]: one JSON line each way).
    pub fn call(self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let started = std::time::Instant::now();
        let path = self.socket.display().to_string();
        let io = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        let stream = &self.stream;
        let answer = (|| {
            stream.set_read_timeout(Some(timeout)).map_err(io)?;
            stream.set_write_timeout(Some(timeout)).map_err(io)?;
            let mut line = serde_json::to_vec(request)?;
            line.push(b'\n');
            (&*stream).write_all(&line).map_err(io)?;
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).map_err(io)?;
            if answer.trim().is_empty() {
                return Err(ClientError::NoAnswer);
            }
            Ok(serde_json::from_str(&answer)?)
        })();
        tracing::debug!(
            op = op_name(request),
            elapsed_us = started.elapsed().as_micros(),
            ok = answer.is_ok(),
            "weir-agent call"
        );
        answer
    }
}

/// The name of a request, for messages.
pub fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Status => "STATUS",
        Request::Add { .. } => "ADD",
        Request::Del { .. } => "DEL",
        Request::Get { .. } => "GET",
        Request::Gc { .. } => "GC",
        Request::Sync => "SYNC",
    }
}

/// A short rendering of an unexpected answer, for messages.
pub fn describe(response: &Response) -> String {
    serde_json::to_string(response).unwrap_or_else(|_| format!("{response:?}"))
}
