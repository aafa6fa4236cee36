//! The lab's view of `weir-agent flows` and `explain`: every node's agent asked, the answers
//! merged (each node judges the directions of its own pods).

use std::time::Duration;

use anyhow::{bail, Result};
use weir_agent_api::{ExplainQuery, Explanation, FlowFilter, FlowRecord, Request, Response};

use super::Lab;
use crate::agent::AgentConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

impl Lab {
    /// Recent flows of every node matching `filter` (at most `last` a node), by time.
    pub fn flows(&self, filter: &FlowFilter, last: Option<usize>) -> Result<Vec<FlowRecord>> {
        let state = self.state()?;
        let request = Request::Flows {
            filter: filter.clone(),
            follow: false,
            last,
        };
        let mut out = Vec::new();
        for node in &state.nodes {
            let socket = AgentConfig::for_node(&state, node).socket();
            weir_agent_api::flows(&socket, &request, Some(TIMEOUT), |flow| {
                out.push(flow);
                true
            })?;
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(out)
    }

    /// What the agents' models say of a flow from `from` to `to` (pods as namespace/name, or
    /// addresses): the directions each node judges, merged.
    pub fn explain(&self, from: &str, to: &str, proto: &str, port: u16) -> Result<Explanation> {
        let state = self.state()?;
        let request = Request::Explain {
            query: ExplainQuery {
                from: from.to_owned(),
                to: to.to_owned(),
                proto: proto.to_owned(),
                port,
            },
        };
        let mut merged: Option<Explanation> = None;
        for node in &state.nodes {
            let socket = AgentConfig::for_node(&state, node).socket();
            let explanation = match weir_agent_api::call(&socket, &request, TIMEOUT)? {
                Response::Explained { explanation } => explanation,
                Response::Error { message } => bail!("explain on {}: {message}", node.name),
                other => bail!("explain on {}: unexpected answer {other:?}", node.name),
            };
            merged = Some(match merged {
                None => explanation,
                Some(mut m) => {
                    m.directions.extend(explanation.directions);
                    m.datapath_agrees &= explanation.datapath_agrees;
                    m
                }
            });
        }
        let mut merged = merged.ok_or_else(|| anyhow::anyhow!("the lab has no node"))?;
        merged
            .directions
            .sort_by(|a, b| a.direction.cmp(&b.direction));
        merged.verdict = if merged.directions.iter().all(|d| d.verdict == "allowed") {
            "allowed"
        } else {
            "denied"
        }
        .to_owned();
        Ok(merged)
    }
}
