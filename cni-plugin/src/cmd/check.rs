// SPDX-License-Identifier: Apache-2.0
//! CHECK (0.4.0+): is the attachment still what ADD made it?
//!
//! Compared against `prevResult` (the ADD result the runtime cached): the host veth exists and is
//! up; in the pod, `CNI_IFNAME` exists, is up, has the MAC and the address of `prevResult`, and has
//! the on-link gateway route and the default route; the IPAM reservation exists and holds that
//! address; weir-agent knows the endpoint with that address and publishes the host ports
//! `runtimeConfig.portMappings` asks for (the agent restores their rules itself if they go
//! missing); with `runtimeConfig.bandwidth`, both veth ends have their `tbf` root qdisc with the
//! asked rate. Every problem found is listed in one error (code 100); a missing netns is code 3,
//! and an unreachable agent with nothing else wrong is code 11 (transient, unlike a
//! misconfiguration).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use weir_agent_api::{format_mac, AttachmentId, PortMapping, Request, Response};
use weir_netlink::{
    blocking::{Netlink, Runtime},
    Link, Netns, RouteV4,
};

use crate::{
    agent::{describe, timeouts, Agent},
    bandwidth,
    cmd::add::pod_routes,
    config::NetConf,
    error::CniError,
    host_veth_name,
    ipam::Ipam,
    result::CniResult,
    skel::CheckArgs,
};

/// What `prevResult` says the pod side should look like.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    mac: Option<String>,
    address: Option<Ipv4Net>,
}

fn expected(prev: &CniResult, ifname: &str, problems: &mut Vec<String>) -> Expected {
    let Some(index) = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
    else {
        problems.push(format!(
            "prevResult has no interface {ifname} inside a sandbox"
        ));
        return Expected::default();
    };
    let v4 = |address: &IpNet| match address {
        IpNet::V4(net) => Some(*net),
        IpNet::V6(_) => None,
    };
    let address = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .find_map(|ip| v4(&ip.address))
        // Results without interface indexes: take the only IPv4 address there is.
        .or_else(|| prev.ips.iter().find_map(|ip| v4(&ip.address)));
    if address.is_none() {
        problems.push(format!("prevResult has no IPv4 address for {ifname}"));
    }
    Expected {
        mac: prev.interfaces[index].mac.clone(),
        address,
    }
}

pub fn run(conf: &NetConf, args: &CheckArgs) -> Result<(), CniError> {
    let id = &args.attachment;
    let mut problems = Vec::new();
    let expected = expected(&args.prev_result, &id.ifname, &mut problems);

    let netns = Netns::open(&args.netns)?;
    let rt = Runtime::new()?;
    let host = rt.connect()?;
    let host_name = host_veth_name(&id.container_id, &id.ifname);
    match host.run(|nl| nl.link_by_name(&host_name))? {
        None => problems.push(format!("host veth {host_name} is missing")),
        Some(link) if !link.up => problems.push(format!("host veth {host_name} is down")),
        Some(_) => {}
    }

    let pod = rt.connect_in(&netns)?;
    match pod.run(|nl| nl.link_by_name(&id.ifname))? {
        None => problems.push(format!(
            "interface {} is missing in {}",
            id.ifname,
            netns.path().display()
        )),
        Some(link) => check_pod(&pod, conf, &link, &expected, &mut problems)?,
    }
    if let Some(bandwidth) = &conf.bandwidth {
        bandwidth::check(
            bandwidth,
            &host,
            &host_name,
            &pod,
            &id.ifname,
            &mut problems,
        )?;
    }

    let ipam = Ipam::new(&conf.data_dir, &conf.name, conf.pod_cidr, conf.gateway);
    let expected_ip = expected.address.map(|net| net.addr());
    match (ipam.get(id)?, expected_ip) {
        (None, _) => problems.push(format!(
            "no IPAM reservation for {}/{}",
            id.container_id, id.ifname
        )),
        (Some(reserved), Some(ip)) if reserved != ip => problems.push(format!(
            "IPAM reserves {reserved} for {}/{}, prevResult says {ip}",
            id.container_id, id.ifname
        )),
        _ => {}
    }

    let agent = Agent::new(&conf.agent_socket);
    if let Err(unreachable) =
        check_agent(&agent, id, expected_ip, &conf.port_mappings, &mut problems)
    {
        if problems.is_empty() {
            return Err(unreachable);
        }
        problems.push(unreachable.to_string());
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::CheckFailed { problems })
    }
}

fn check_pod(
    pod: &Netlink<'_>,
    conf: &NetConf,
    link: &Link,
    expected: &Expected,
    problems: &mut Vec<String>,
) -> Result<(), CniError> {
    let ifname = &link.name;
    if !link.up {
        problems.push(format!("interface {ifname} is down"));
    }
    if let Some(want) = &expected.mac {
        let have = link.mac.map(format_mac);
        if have.as_deref().map(str::to_ascii_lowercase) != Some(want.to_ascii_lowercase()) {
            problems.push(format!(
                "interface {ifname} has MAC {}, prevResult says {want}",
                have.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if let Some(want) = expected.address {
        if !pod.run(|nl| nl.addrs(link.index))?.contains(&want) {
            problems.push(format!("address {want} is missing on {ifname}"));
        }
    }
    let routes = pod.run(|nl| nl.routes())?;
    for want in pod_routes(conf.gateway, link.index) {
        if !routes.iter().any(|have| route_matches(have, &want)) {
            problems.push(format!(
                "route {} is missing",
                want.to_string()
                    .replace(&format!("#{}", link.index), ifname)
            ));
        }
    }
    Ok(())
}

/// Same destination, gateway and device; the scope is the kernel's business once it accepted it.
fn route_matches(have: &RouteV4, want: &RouteV4) -> bool {
    have.dst == want.dst && have.gateway == want.gateway && have.oif == want.oif
}

/// Problems go to `problems`; `Err` only when the agent could not be asked.
fn check_agent(
    agent: &Agent,
    id: &AttachmentId,
    expected_ip: Option<Ipv4Addr>,
    expected_ports: &[PortMapping],
    problems: &mut Vec<String>,
) -> Result<(), CniError> {
    let request = Request::Get {
        attachment: id.clone(),
    };
    match agent.call(&request, timeouts::GET) {
        Ok(Response::Endpoint {
            endpoint: Some(endpoint),
        }) => {
            if let Some(ip) = expected_ip.filter(|ip| *ip != endpoint.ip) {
                problems.push(format!(
                    "weir-agent has {} for the endpoint, prevResult says {ip}",
                    IpAddr::V4(endpoint.ip)
                ));
            }
            let sorted = |ports: &[PortMapping]| {
                let mut ports = ports.to_vec();
                ports.sort();
                ports
            };
            if sorted(&endpoint.port_mappings) != sorted(expected_ports) {
                let list = |ports: &[PortMapping]| {
                    let shown: Vec<String> = ports.iter().map(ToString::to_string).collect();
                    format!("[{}]", shown.join(", "))
                };
                problems.push(format!(
                    "weir-agent publishes host ports {} for the endpoint, runtimeConfig asks {}",
                    list(&endpoint.port_mappings),
                    list(expected_ports)
                ));
            }
        }
        Ok(Response::Endpoint { endpoint: None }) => problems.push(format!(
            "weir-agent does not know the endpoint {}/{}",
            id.container_id, id.ifname
        )),
        Ok(Response::Error { message }) => {
            problems.push(format!(
                "weir-agent could not look the endpoint up: {message}"
            ));
        }
        Ok(other) => problems.push(format!(
            "weir-agent sent an unexpected answer to GET: {}",
            describe(&other)
        )),
        Err(e) => return Err(CniError::AgentUnavailable(e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::CniVersion;

    fn prev(json: &str) -> CniResult {
        CniResult::from_prev_result(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn expectations_come_from_the_sandbox_interface() {
        for version in CniVersion::SUPPORTED {
            let golden = crate::result::tests_support::golden_result(version);
            let mut problems = Vec::new();
            let e = expected(&prev(golden), "eth0", &mut problems);
            assert!(problems.is_empty(), "{version}: {problems:?}");
            assert_eq!(e.mac.as_deref(), Some("0a:58:0a:f4:01:05"), "{version}");
            assert_eq!(e.address.unwrap().to_string(), "10.244.1.5/32", "{version}");
        }
    }

    #[test]
    fn a_prev_result_without_our_interface_is_a_problem() {
        let mut problems = Vec::new();
        let e = expected(
            &prev(
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/32"}]}"#,
            ),
            "eth0",
            &mut problems,
        );
        assert_eq!(e, Expected::default());
        assert_eq!(
            problems,
            ["prevResult has no interface eth0 inside a sandbox"]
        );
    }

    #[test]
    fn routes_match_on_destination_gateway_and_device() {
        let [link, default] = pod_routes(Ipv4Addr::new(169, 254, 1, 1), 3);
        let mut kernel_default = default.clone();
        kernel_default.link_scope = false;
        assert!(route_matches(&kernel_default, &default));
        assert!(!route_matches(&link, &default));
        let mut other_dev = default.clone();
        other_dev.oif = Some(4);
        assert!(!route_matches(&other_dev, &default));
    }
}
