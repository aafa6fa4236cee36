// SPDX-License-Identifier: Apache-2.0
//! GC (1.1.0): remove whatever belongs to attachments the runtime no longer knows.
//!
//! The runtime lists the attachments still in use (`cni.dev/valid-attachments`). GC then
//!
//! 1. releases every IPAM reservation not in the list;
//! 2. deletes every host veth that carries a Weir name ([`crate::is_host_veth_name`]) but is not the
//!    veth of a valid attachment;
//! 3. sends the list to weir-agent (`Request::Gc`); an unreachable agent is ignored, since it
//!    collects its own garbage at start-up.
//!
//! It holds the network's lifecycle lock exclusively, so it waits for ADDs in flight instead of
//! tearing down an attachment the runtime could not yet list. Like DEL, it does all it can and then
//! reports every failure.

use std::collections::HashSet;

use weir_agent_api::{AttachmentId, Request, Response};
use weir_netlink::blocking::Runtime;

use crate::{
    agent::{describe, timeouts, Agent},
    config::NetConf,
    error::CniError,
    host_veth_name,
    ipam::Ipam,
    is_host_veth_name,
    skel::GcArgs,
};

pub fn run(conf: &NetConf, args: &GcArgs) -> Result<(), CniError> {
    let valid: HashSet<&AttachmentId> = args.valid.iter().collect();
    let valid_veths: HashSet<String> = args
        .valid
        .iter()
        .map(|a| host_veth_name(&a.container_id, &a.ifname))
        .collect();
    let mut errors = Vec::new();

    let ipam = Ipam::new(&conf.data_dir, &conf.name, conf.pod_cidr, conf.gateway);
    let _lifecycle = ipam.lifecycle_lock(true)?;
    match ipam.retain(|id| valid.contains(id)) {
        Ok(released) => {
            for (id, ip) in released {
                tracing::info!(container_id = id.container_id, ifname = id.ifname, %ip, "released stale address");
            }
        }
        Err(e) => errors.push(e.into()),
    }

    if let Err(e) = delete_stale_veths(&valid_veths, &mut errors) {
        errors.push(e);
    }

    let agent = Agent::new(&conf.agent_socket);
    let request = Request::Gc {
        valid: args.valid.clone(),
    };
    match agent.call(&request, timeouts::GC) {
        Ok(Response::Gc { removed }) => {
            tracing::info!(
                removed = removed.len(),
                "weir-agent collected stale endpoints"
            );
        }
        Ok(Response::Ok) => {}
        Ok(Response::Error { message }) => {
            errors.push(CniError::AgentRejected { op: "GC", message })
        }
        Ok(other) => errors.push(CniError::AgentProtocol {
            op: "GC",
            answer: describe(&other),
        }),
        Err(e) => {
            tracing::info!(error = %e, "weir-agent unreachable; it collects its own garbage at start-up")
        }
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CniError::Multiple(errors)),
    }
}

/// Delete Weir host veths that belong to no valid attachment. Per-link failures go to `errors`;
/// `Err` means the links could not even be listed.
fn delete_stale_veths(
    valid_veths: &HashSet<String>,
    errors: &mut Vec<CniError>,
) -> Result<(), CniError> {
    let rt = Runtime::new()?;
    let host = rt.connect()?;
    for link in host.run(|nl| nl.links())? {
        if !is_host_veth_name(&link.name) || !link.is_veth() || valid_veths.contains(&link.name) {
            continue;
        }
        match host.run(|nl| nl.del_link(&link.name)) {
            Ok(true) => tracing::info!(host = link.name, "deleted stale veth"),
            Ok(false) => {}
            Err(e) => errors.push(e.into()),
        }
    }
    Ok(())
}
