//! The pods' `hostPort`s: refused at ADD when another pod on the node has the port, and kept
//! programmed (see [`crate::kernel::host_ports`]) as endpoints come and go.

use anyhow::Result;
use tracing::{info, warn};
use weir_agent_api::{Endpoint, PortMapping};
use weir_common::HostPortKey;

use super::Agent;
use crate::kernel::{
    datapath::Datapath,
    host_ports::{self, HostPort},
};
use crate::program::endpoints::EndpointRecord;

/// ADD asked for a host port another pod holds: the plugin reports its own error code for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PortConflict(pub String);

/// Who an endpoint is, for messages and rule comments: its pod, else its container.
fn owner(endpoint: &Endpoint) -> String {
    match (&endpoint.pod_namespace, &endpoint.pod_name) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        _ => format!("container {}", endpoint.attachment.container_id),
    }
}

/// Every published port of `records`, in a stable order.
fn wanted<'a>(records: impl Iterator<Item = &'a EndpointRecord>) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = records
        .flat_map(|record| {
            let endpoint = &record.endpoint;
            endpoint.port_mappings.iter().map(|mapping| HostPort {
                mapping: mapping.clone(),
                pod_ip: endpoint.ip,
                owner: owner(endpoint),
            })
        })
        .collect();
    ports.sort();
    ports
}

/// The datapath's keys for `ports`.
fn keys(ports: &[HostPort]) -> Vec<HostPortKey> {
    ports
        .iter()
        .map(|port| HostPortKey {
            ip_be: port.mapping.host_ip.map_or(0, |ip| u32::from(ip).to_be()),
            port: port.mapping.host_port.to_be_bytes(),
            proto: port.mapping.protocol.number(),
            _pad: 0,
        })
        .collect()
}

impl Agent {
    /// Refuse `endpoint` if one of its host ports is another attachment's (a retried ADD of the
    /// same attachment keeps its own).
    pub(super) fn check_port_conflicts(&self, endpoint: &Endpoint) -> Result<(), PortConflict> {
        for record in self.endpoints.records() {
            if record.endpoint.attachment == endpoint.attachment {
                continue;
            }
            let taken = record.endpoint.port_mappings.iter().find_map(|theirs| {
                endpoint
                    .port_mappings
                    .iter()
                    .find(|ours| ours.conflicts_with(theirs))
                    .map(|ours| (ours, theirs))
            });
            if let Some((ours, theirs)) = taken {
                return Err(PortConflict(format!(
                    "{ours} asked by {} clashes with {theirs} of {} on this node",
                    owner(endpoint),
                    owner(&record.endpoint)
                )));
            }
        }
        Ok(())
    }

    /// Program the host ports of the current endpoints, if they changed since the last time.
    pub(super) fn sync_host_ports(&mut self) -> Result<()> {
        let wanted = wanted(self.endpoints.records());
        if self.host_ports.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let first = self.host_ports.is_none();
        let before = self.host_ports.take().unwrap_or_default();
        // The datapath defers a local pod's flow to a published port to the host stack's DNAT:
        // it may say so only while the DNAT rule exists, so entries leave before the rules and
        // arrive after them.
        let staying: Vec<HostPort> = before
            .iter()
            .filter(|port| wanted.contains(port))
            .cloned()
            .collect();
        let datapath = self.endpoints.datapath_mut();
        datapath.set_host_ports(&keys(&staying))?;
        host_ports::apply(&wanted, first)?;
        self.endpoints
            .datapath_mut()
            .set_host_ports(&keys(&wanted))?;
        let published: Vec<&PortMapping> = wanted
            .iter()
            .filter(|port| !before.contains(port))
            .map(|port| &port.mapping)
            .collect();
        // At start-up every port was published by the agent before (no ADD happens without
        // one): flushing their flows then would only cut live UDP flows short.
        if !first {
            host_ports::forget_udp_flows(&published);
        }
        info!(host_ports = wanted.len(), "host ports programmed");
        self.host_ports = Some(wanted);
        Ok(())
    }

    /// Put the host-port rules back if something else removed or changed them (a firewall
    /// reload, an `iptables -F`): run periodically while any port is published.
    pub(super) fn repair_host_ports(&mut self) -> Result<()> {
        let Some(ports) = self.host_ports.as_ref().filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        if host_ports::in_place(ports)? {
            return Ok(());
        }
        warn!(
            host_ports = ports.len(),
            "the host-port rules were changed behind the agent's back; restoring them"
        );
        host_ports::apply(ports, true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_agent_api::{AttachmentId, PortProtocol};

    fn record(container: &str, ip: [u8; 4], ports: &[u16]) -> EndpointRecord {
        EndpointRecord {
            endpoint: Endpoint {
                attachment: AttachmentId {
                    container_id: container.into(),
                    ifname: "eth0".into(),
                },
                netns: String::new(),
                pod_namespace: Some("default".into()),
                pod_name: Some(container.into()),
                ip: ip.into(),
                pod_mac: String::new(),
                host_ifname: String::new(),
                host_ifindex: 1,
                host_mac: String::new(),
                port_mappings: ports
                    .iter()
                    .map(|&host_port| PortMapping {
                        host_port,
                        container_port: 80,
                        protocol: PortProtocol::Tcp,
                        host_ip: None,
                    })
                    .collect(),
                ingress_shaped: Some(false),
            },
            endpoint_id: 1,
        }
    }

    #[test]
    fn wanted_lists_every_mapping_of_every_endpoint_in_order() {
        let records = [
            record("b", [10, 0, 0, 2], &[9000]),
            record("a", [10, 0, 0, 1], &[8080, 8081]),
            record("c", [10, 0, 0, 3], &[]),
        ];
        let ports = wanted(records.iter());
        let listed: Vec<(u16, [u8; 4], &str)> = ports
            .iter()
            .map(|p| (p.mapping.host_port, p.pod_ip.octets(), p.owner.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                (8080, [10, 0, 0, 1], "default/a"),
                (8081, [10, 0, 0, 1], "default/a"),
                (9000, [10, 0, 0, 2], "default/b"),
            ]
        );
    }
}
