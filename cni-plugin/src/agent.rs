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
