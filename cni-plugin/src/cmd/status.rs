// SPDX-License-Identifier: Apache-2.0
//! STATUS (1.1.0): can this plugin serve ADD right now? It can when weir-agent says it is ready.

use weir_agent_api::{Request, Response};

use crate::{
    agent::{describe, timeouts, Agent},
    config::NetConf,
    error::CniError,
};

/// `Ok(())` when weir-agent is ready; otherwise code 50 with the reason.
pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let agent = Agent::new(&conf.agent_socket);
    match agent.call(&Request::Status, timeouts::STATUS) {
        Ok(Response::Status { ready: true, .. }) => Ok(()),
        Ok(Response::Status {
            ready: false,
            message,
        }) => Err(CniError::NotAvailable {
            reason: format!("weir-agent is not ready: {message}"),
        }),
        Ok(other) => Err(CniError::NotAvailable {
            reason: format!(
                "weir-agent sent an unexpected answer to STATUS: {}",
                describe(&other)
            ),
        }),
        Err(e) => Err(CniError::NotAvailable {
            reason: e.to_string(),
        }),
    }
}
