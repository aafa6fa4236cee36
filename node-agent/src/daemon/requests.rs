//! What the CNI plugin asks of the agent (see `weir-agent-api`), and the DELs it spooled while
//! the agent could not answer.

use std::{fs, net::Ipv4Addr};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};
use weir_agent_api::{AttachmentId, Endpoint, Request, Response};

use super::{host_ports::PortConflict, Agent};
use crate::kernel::{datapath::AttachMode, sysctl::Sysctls};

impl Agent {
    pub async fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => return self.status_response(),
            Request::Add { endpoint } => self.add(endpoint).await.map(|()| Response::Ok),
            Request::Del { attachment } => self
                .endpoints
                .del(&attachment)
                .map_err(Into::into)
                // The IP leaves every peer set and every host-port rule before the plugin frees
                // it for reuse.
                .and_then(|_| self.reprogram(None))
                .and_then(|()| self.sync_host_ports())
                .map(|()| Response::Ok),
            Request::Get { attachment } => Ok(Response::Endpoint {
                endpoint: self.endpoints.get(&attachment).map(|r| r.endpoint.clone()),
            }),
            Request::Gc { valid } => self
                .endpoints
                .gc(&valid)
                .map_err(Into::into)
                .and_then(|removed| self.reprogram(None).map(|()| removed))
                .and_then(|removed| self.sync_host_ports().map(|()| removed))
                .map(|removed| Response::Gc { removed }),
            Request::Sync => self.sync().await.map(|()| Response::Synced {
                generation: self.objects.generation(),
                rejected: self.rejected(),
            }),
            Request::Explain { query } => self
                .explain(&query)
                .map(|explanation| Response::Explained { explanation }),
            // Served by the socket's task from the flow log, never queued here.
            Request::Flows { .. } => Err(anyhow::anyhow!("flows are not a loop request")),
        };
        self.publish();
        result.unwrap_or_else(|e: anyhow::Error| {
            warn!(error = %format!("{e:#}"), "request failed");
            if let Some(conflict) = e.downcast_ref::<PortConflict>() {
                return Response::PortConflict {
                    message: conflict.to_string(),
                };
            }
            Response::Error {
                message: format!("{e:#}"),
            }
        })
    }

    fn status_response(&self) -> Response {
        let node_devices = self
            .endpoints
            .datapath()
            .attach_mode()
            .map_or_else(|| "unresolved".to_owned(), |m| m.to_string());
        let mode = match self.config.paths.attach_mode {
            AttachMode::Auto => format!("clsact on pod veths, {node_devices} on node devices"),
            _ => node_devices,
        };
        Response::Status {
            ready: true,
            message: format!(
                "weir-agent on {} ready with {} endpoints (tc attach: {mode})",
                self.config.node_name,
                self.endpoints.len()
            ),
        }
    }

    async fn add(&mut self, endpoint: Endpoint) -> Result<()> {
        if !self.config.pod_cidr.contains(&endpoint.ip) || endpoint.ip == Ipv4Addr::UNSPECIFIED {
            bail!(
                "IP {} is outside this node's pod CIDR {}",
                endpoint.ip,
                self.config.pod_cidr
            );
        }
        self.check_host_veth(&endpoint).await?;
        self.check_port_conflicts(&endpoint)?;
        Sysctls::new(&self.config.proc_sys_dir).configure_veth(&endpoint.host_ifname)?;
        // The pod's own policy and its place in other pods' peer sets are programmed before the
        // endpoint is published and before ADD returns: there is no first-packet window.
        self.refresh_objects();
        let attachment = endpoint.attachment.clone();
        // Its host ports are published once its policy is in place.
        if let Err(e) = self
            .reprogram(Some(endpoint))
            .and_then(|()| self.sync_host_ports())
        {
            // Whatever the failed ADD left: the endpoint, the policy entries only it used, and
            // its host ports.
            let _ = self.endpoints.del(&attachment);
            let _ = self.reprogram(None);
            let _ = self.sync_host_ports();
            return Err(e);
        }
        Ok(())
    }

    /// The endpoint's host interface is the attachment's own veth, as the plugin names it, with
    /// the index the plugin saw: never the uplink, weir0, or another pod's interface.
    async fn check_host_veth(&self, endpoint: &Endpoint) -> Result<()> {
        let name = &endpoint.host_ifname;
        let attachment = &endpoint.attachment;
        let expected = weir_agent_api::host_veth_name(&attachment.container_id, &attachment.ifname);
        if *name != expected {
            bail!(
                "host interface {name} is not attachment {}/{}'s veth ({expected})",
                attachment.container_id,
                attachment.ifname
            );
        }
        let link = self
            .netlink
            .link_by_name(name)
            .await?
            .with_context(|| format!("host interface {name} does not exist"))?;
        if !link.is_veth() {
            bail!(
                "host interface {name} is a {}, not a veth",
                link.kind.as_deref().unwrap_or("device of no kind")
            );
        }
        if link.index != endpoint.host_ifindex {
            bail!(
                "host interface {name} has index {}, not {}",
                link.index,
                endpoint.host_ifindex
            );
        }
        Ok(())
    }

    /// Apply the DELs the CNI plugin spooled because it could not reach the agent (down, or not
    /// listening yet), then drop the IPs they freed from every peer set. Run at start, again once
    /// the socket is up, and periodically: a DEL spooled in any gap is applied within seconds.
    /// Returns how many were applied.
    pub fn drain_del_queue(&mut self) -> usize {
        let dir = self.config.paths.del_queue_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return 0;
        };
        let mut applied = 0;
        for entry in entries.flatten() {
            // The plugin writes `.<digest>.json.tmp` and renames it to `<digest>.json` when
            // complete: anything else is another process's file in the making, left alone.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let attachment = match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<AttachmentId>(&b)?))
            {
                Ok(attachment) => attachment,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "an unreadable spooled DEL; removing it");
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            if let Err(e) = self.endpoints.del(&attachment) {
                warn!(%e, "spooled DEL failed; keeping it for the next pass");
                continue;
            }
            info!(container = %attachment.container_id, "applied a spooled DEL");
            applied += 1;
            let _ = fs::remove_file(&path);
        }
        if applied > 0 {
            if let Err(e) = self.reprogram(None) {
                warn!(error = %format!("{e:#}"), "programming policy after spooled DELs failed");
            }
            if let Err(e) = self.sync_host_ports() {
                warn!(error = %format!("{e:#}"), "programming host ports after spooled DELs failed");
            }
            self.publish();
        }
        applied
    }
}
