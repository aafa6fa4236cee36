// SPDX-License-Identifier: Apache-2.0
//! ADD: connect a pod to the Weir network.
//!
//! The order matters, and everything done is undone in reverse order if a later step fails (or
//! panics), so a failed ADD leaves nothing behind:
//!
//! 1. weir-agent must be reachable — otherwise code 11 before anything is created. The connection
//!    is opened now and carries the ADD of step 6: the agent listens only once it is ready, and
//!    one that is not answers that ADD as not ready (code 11 too), so no separate STATUS round
//!    trip is needed.
//! 2. Open the pod's netns (code 3 if it does not exist).
//! 3. Reserve an address (undo: release it, unless the attachment already held it).
//! 4. Create the veth pair, the pod end directly inside the pod's netns under `CNI_IFNAME`, both
//!    ends with the MTU, the host end up (undo: delete the host end, which takes the pod end and
//!    everything configured on it along).
//! 5. In the pod: `lo` and the interface up, `<ip>/32` on it, `<gateway> dev <if> scope link`, and
//!    `default via <gateway> dev <if>`; then the qdiscs of `runtimeConfig.bandwidth`
//!    ([`crate::bandwidth`]; undone with the veth).
//! 6. Register the endpoint with weir-agent, which answers once its datapath is in place
//!    (undo: tell the agent to forget it, spooling the DEL if it is gone).
//!
//! `WEIR_TEST_FAIL_AFTER=<step>` (a test hook, see the README) fails the ADD right after `ipam`,
//! `veth`, `address`, `route` or `agent`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use weir_agent_api::{format_mac, Endpoint, Request, Response};
use weir_netlink::{
    blocking::{Netlink, Runtime},
    Netns, RouteV4,
};

use super::del;
use crate::{
    agent::{describe, timeouts, Agent, Connection},
    bandwidth,
    config::{defaults, NetConf},
    error::CniError,
    host_veth_name,
    ipam::Ipam,
    result::{CniResult, Interface, IpConfig, Route},
    skel::{AddArgs, Step},
};

pub fn run(conf: &NetConf, args: &AddArgs) -> Result<CniResult, CniError> {
    let id = &args.attachment;
    let fail_after = |step: Step| injected_failure(args, step);

    let agent = Agent::new(&conf.agent_socket);
    let connection = agent.connect().map_err(CniError::AgentUnavailable)?;

    let netns = Netns::open(&args.netns)?;
    let rt = Runtime::new()?;
    let host = rt.connect()?;
    let mtu = pod_mtu(conf, &host)?;
    let ipam = Ipam::new(&conf.data_dir, &conf.name, conf.pod_cidr, conf.gateway);
    let _lifecycle = ipam.lifecycle_lock(false)?;
    let host_name = host_veth_name(&id.container_id, &id.ifname);
    let spool_dir = conf.del_queue_dir();

    // Declared after everything its actions borrow, so it is dropped (and runs) before them.
    let mut undo = Undo::default();

    let allocation = ipam.allocate(id)?;
    let ip = allocation.ip;
    if allocation.fresh {
        undo.push("the IP reservation", || {
            ipam.release(id).map(drop).map_err(Into::into)
        });
    }
    tracing::debug!(%ip, fresh = allocation.fresh, "address reserved");
    fail_after(Step::Ipam)?;

    if let Err(e) = host.run(|nl| nl.create_veth_into_netns(&host_name, &id.ifname, &netns, mtu)) {
        return Err(if e.is_exists() {
            explain_exists(&host, &host_name, args)
        } else {
            e.into()
        });
    }
    undo.push("the veth pair", || {
        host.run(|nl| nl.del_link(&host_name))
            .map(drop)
            .map_err(Into::into)
    });
    let (host_index, host_mac) = host_end(&host, &host_name)?;
    tracing::debug!(host = %host_name, ifindex = host_index, mtu, "veth pair created");
    fail_after(Step::Veth)?;

    let pod = rt.connect_in(&netns)?;
    let (pod_index, pod_mac) = configure_pod(&pod, conf, args, ip, &fail_after)?;
    bandwidth::apply(
        conf.bandwidth.as_ref(),
        &host,
        host_index,
        &pod,
        pod_index,
        mtu,
    )?;

    let endpoint = Endpoint {
        attachment: id.clone(),
        netns: args.netns.display().to_string(),
        pod_namespace: args.args.pod_namespace.clone(),
        pod_name: args.args.pod_name.clone(),
        ip,
        pod_mac: format_mac(pod_mac),
        host_ifname: host_name.clone(),
        host_ifindex: host_index,
        host_mac: format_mac(host_mac),
        port_mappings: conf.port_mappings.clone(),
        ingress_shaped: Some(conf.bandwidth.as_ref().is_some_and(|b| b.ingress.is_some())),
    };
    // Registered before the call: a timed-out ADD may still have been applied by the agent.
    undo.push("the weir-agent endpoint", || {
        del::tell_agent(&agent, &spool_dir, id).map(drop)
    });
    register(connection, endpoint)?;
    tracing::debug!(
        pod_ifindex = pod_index,
        "endpoint registered with weir-agent"
    );
    fail_after(Step::Agent)?;

    undo.commit();
    Ok(add_result(
        conf, args, ip, mtu, &host_name, host_mac, pod_mac,
    ))
}

/// `WEIR_TEST_FAIL_AFTER`: fail right after `step` when the test hook asks for it.
fn injected_failure(args: &AddArgs, step: Step) -> Result<(), CniError> {
    if args.fail_after == Some(step) {
        return Err(CniError::InjectedFailure {
            step: step.as_str(),
        });
    }
    Ok(())
}

/// The configured MTU, else that of the host's default-route interface, else 1500.
fn pod_mtu(conf: &NetConf, host: &Netlink<'_>) -> Result<u32, CniError> {
    Ok(match conf.mtu {
        Some(mtu) => mtu,
        None => host
            .run(|nl| nl.default_route_link())?
            .and_then(|link| link.mtu)
            .unwrap_or(defaults::MTU),
    })
}

/// The host end's index and MAC, read back after its creation.
fn host_end(host: &Netlink<'_>, host_name: &str) -> Result<(u32, [u8; 6]), CniError> {
    let link = host.run(|nl| nl.link_by_name(host_name))?.ok_or_else(|| {
        CniError::Internal(format!("host veth {host_name} vanished after creation"))
    })?;
    let mac = link
        .mac
        .ok_or_else(|| CniError::Internal(format!("host veth {host_name} has no MAC address")))?;
    Ok((link.index, mac))
}

/// What ADD prints: both veth ends, the /32 through the gateway, the default route and DNS.
fn add_result(
    conf: &NetConf,
    args: &AddArgs,
    ip: Ipv4Addr,
    mtu: u32,
    host_name: &str,
    host_mac: [u8; 6],
    pod_mac: [u8; 6],
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: host_name.to_owned(),
                mac: Some(format_mac(host_mac)),
                mtu: Some(mtu),
                sandbox: None,
            },
            Interface {
                name: args.attachment.ifname.clone(),
                mac: Some(format_mac(pod_mac)),
                mtu: Some(mtu),
                sandbox: Some(args.netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::V4(host_prefix(ip)),
            gateway: Some(IpAddr::V4(conf.gateway)),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: IpNet::V4(Ipv4Net::default()),
            gw: Some(IpAddr::V4(conf.gateway)),
        }],
        dns: conf.dns.clone(),
    }
}

/// Step 5, inside the pod: returns the pod interface's index and MAC.
fn configure_pod(
    pod: &Netlink<'_>,
    conf: &NetConf,
    args: &AddArgs,
    ip: Ipv4Addr,
    fail_after: &dyn Fn(Step) -> Result<(), CniError>,
) -> Result<(u32, [u8; 6]), CniError> {
    let ifname = &args.attachment.ifname;
    pod.run(|nl| nl.set_up_by_name("lo"))?;
    let link = pod.run(|nl| nl.link_by_name(ifname))?.ok_or_else(|| {
        CniError::Internal(format!(
            "{ifname} is missing in {} right after its creation",
            args.netns.display()
        ))
    })?;
    let mac = link
        .mac
        .ok_or_else(|| CniError::Internal(format!("{ifname} has no MAC address")))?;
    if !link.up {
        pod.run(|nl| nl.set_up(link.index))?;
    }
    pod.run(|nl| nl.add_addr(link.index, host_prefix(ip)))?;
    fail_after(Step::Address)?;

    for route in pod_routes(conf.gateway, link.index) {
        pod.run(|nl| nl.add_route(&route))?;
    }
    fail_after(Step::Route)?;
    Ok((link.index, mac))
}

/// The routes every pod gets: its gateway on-link, and the default route through it.
pub fn pod_routes(gateway: Ipv4Addr, ifindex: u32) -> [RouteV4; 2] {
    [
        RouteV4 {
            dst: host_prefix(gateway),
            gateway: None,
            oif: Some(ifindex),
            link_scope: true,
        },
        RouteV4 {
            dst: Ipv4Net::default(),
            gateway: Some(gateway),
            oif: Some(ifindex),
            link_scope: false,
        },
    ]
}

fn host_prefix(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(ip)
}

fn register(connection: Connection, endpoint: Endpoint) -> Result<(), CniError> {
    match connection.call(&Request::Add { endpoint }, timeouts::ADD) {
        Ok(Response::Ok) => Ok(()),
        Ok(Response::Status {
            ready: false,
            message,
        }) => Err(CniError::AgentNotReady { message }),
        Ok(Response::PortConflict { message }) => Err(CniError::PortConflict { message }),
        Ok(Response::Error { message }) => Err(CniError::AgentRejected { op: "ADD", message }),
        Ok(other) => Err(CniError::AgentProtocol {
            op: "ADD",
            answer: describe(&other),
        }),
        Err(e) => Err(CniError::AgentUnavailable(e)),
    }
}

/// The kernel said EEXIST: say which end is taken.
fn explain_exists(host: &Netlink<'_>, host_name: &str, args: &AddArgs) -> CniError {
    match host.run(|nl| nl.link_by_name(host_name)) {
        Ok(Some(_)) => CniError::AttachmentExists {
            host: host_name.to_owned(),
            container_id: args.attachment.container_id.clone(),
            ifname: args.attachment.ifname.clone(),
        },
        Ok(None) => CniError::IfnameTaken {
            ifname: args.attachment.ifname.clone(),
            netns: args.netns.clone(),
        },
        Err(e) => e.into(),
    }
}

type UndoAction<'a> = Box<dyn FnOnce() -> Result<(), CniError> + 'a>;

/// Undo actions, run in reverse order when dropped unless [`Undo::commit`]ted — on an early
/// return with `?` and while unwinding from a panic alike.
#[derive(Default)]
struct Undo<'a> {
    actions: Vec<(&'static str, UndoAction<'a>)>,
}

impl<'a> Undo<'a> {
    fn push(&mut self, what: &'static str, action: impl FnOnce() -> Result<(), CniError> + 'a) {
        self.actions.push((what, Box::new(action)));
    }

    fn commit(mut self) {
        self.actions.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, action)) = self.actions.pop() {
            match action() {
                Ok(()) => tracing::info!("rolled back {what}"),
                Err(e) => tracing::warn!(
                    error = %e,
                    details = %e.details(),
                    "could not roll back {what}; the runtime's DEL will retry"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;

    #[test]
    fn undo_runs_in_reverse_unless_committed() {
        let log = Rc::new(RefCell::new(Vec::new()));
        {
            let mut undo = Undo::default();
            for step in ["a", "b", "c"] {
                let log = Rc::clone(&log);
                undo.push(step, move || {
                    log.borrow_mut().push(step);
                    if step == "b" {
                        Err(CniError::Internal("b failed".into()))
                    } else {
                        Ok(())
                    }
                });
            }
        }
        assert_eq!(
            *log.borrow(),
            ["c", "b", "a"],
            "a failing action does not stop the rest"
        );

        log.borrow_mut().clear();
        let mut undo = Undo::default();
        let inner = Rc::clone(&log);
        undo.push("x", move || {
            inner.borrow_mut().push("x");
            Ok(())
        });
        undo.commit();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn pod_routes_are_the_gateway_on_link_then_the_default() {
        let [link, default] = pod_routes(Ipv4Addr::new(169, 254, 1, 1), 7);
        assert_eq!(link.dst.to_string(), "169.254.1.1/32");
        assert!(link.link_scope && link.gateway.is_none() && link.oif == Some(7));
        assert_eq!(default.dst.to_string(), "0.0.0.0/0");
        assert_eq!(default.gateway, Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert!(!default.link_scope);
    }
}
