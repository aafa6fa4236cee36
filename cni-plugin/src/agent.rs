// SPDX-License-Identifier: Apache-2.0
//! The plugin's side of the weir-agent protocol ([`weir_agent_api`]): one blocking request per
//! connection, with a deadline per kind of request.

use std::{
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

/// A client for the agent's unix socket: [`weir_agent_api`]'s connection, with each call traced.
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
        self.connect()?.call(request, timeout)
    }

    /// Connect now, to send one request later with [`Connection::call`]. The agent binds its
    /// socket only once it is ready, so a connection that succeeds is the readiness check ADD
    /// would otherwise make with a separate STATUS round trip; an agent that is not ready after
    /// all answers the request itself with a not-ready STATUS.
    pub fn connect(&self) -> Result<Connection, ClientError> {
        Ok(Connection(weir_agent_api::Connection::open(&self.socket)?))
    }
}

/// A connection opened ahead of its one request.
#[derive(Debug)]
pub struct Connection(weir_agent_api::Connection);

impl Connection {
    /// Send `request` and wait up to `timeout` for the answer.
    pub fn call(self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let started = std::time::Instant::now();
        let answer = self.0.call(request, timeout);
        tracing::debug!(
            op = request.op_name(),
            elapsed_us = started.elapsed().as_micros(),
            ok = answer.is_ok(),
            "weir-agent call"
        );
        answer
    }
}

/// A short rendering of an unexpected answer, for messages.
pub fn describe(response: &Response) -> String {
    serde_json::to_string(response).unwrap_or_else(|_| format!("{response:?}"))
}
