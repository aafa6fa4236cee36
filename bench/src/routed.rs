// SPDX-License-Identifier: Apache-2.0
//! The baseline: a plain routed veth pair without eBPF, in three namespaces of the bench's own.
//!
//! ```text
//!   client netns              router netns (ip_forward=1)              server netns
//!   eth0 10.99.0.2/30 ──veth── c 10.99.0.1/30     s 10.99.0.5/30 ──veth── eth0 10.99.0.6/30
//!   default via .1                                                        default via .5
//! ```
//!
//! The same number of veth hops as Weir's same-node path (pod veth, node, pod veth), with the
//! kernel's forwarding in the middle instead of an eBPF redirect. Optionally the router gets an
//! iptables filter table (see [`crate::rules`]).

use std::{net::Ipv4Addr, process::Command};

use anyhow::Result;

use crate::{
    netns::{run, run_with_input, Netns},
    rules,
};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 6);
const ROUTER_CLIENT_SIDE: &str = "10.99.0.1";
const ROUTER_SERVER_SIDE: &str = "10.99.0.5";

/// Client, router and server namespaces, deleted on drop.
#[derive(Debug)]
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
}

impl Routed {
    /// Build the topology with every veth at `mtu`; namespaces are named `<prefix>c`, `r`, `s`.
    pub fn build(prefix: &str, mtu: u32) -> Result<Self> {
        let routed = Self {
            client: Netns::create(&format!("{prefix}c"))?,
            router: Netns::create(&format!("{prefix}r"))?,
            server: Netns::create(&format!("{prefix}s"))?,
        };
        let mtu = mtu.to_string();
        for (router_if, end, router_ip, end_ip) in [
            ("c", &routed.client, ROUTER_CLIENT_SIDE, CLIENT_IP),
            ("s", &routed.server, ROUTER_SERVER_SIDE, SERVER_IP),
        ] {
            routed.router.ip(&[
                "link",
                "add",
                router_if,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "mtu",
                &mtu,
                "netns",
                end.name(),
            ])?;
            routed
                .router
                .ip(&["addr", "add", &format!("{router_ip}/30"), "dev", router_if])?;
            routed.router.ip(&["link", "set", router_if, "up"])?;
            end.ip(&["addr", "add", &format!("{end_ip}/30"), "dev", "eth0"])?;
            end.ip(&["link", "set", "eth0", "up"])?;
            end.ip(&["route", "add", "default", "via", router_ip])?;
        }
        routed.router.sysctl("net.ipv4.ip_forward=1")?;
        Ok(routed)
    }

    /// Load `rules` filter rules into the router (see [`rules::iptables_ruleset`]) with one
    /// `iptables-restore`, and return how many FORWARD rules `iptables-save` then shows.
    pub fn load_iptables(&self, rules: u32) -> Result<usize> {
        run_with_input(
            &mut self.router.command("iptables-restore"),
            rules::iptables_ruleset(rules).as_bytes(),
        )?;
        let saved = run(self.router.command("iptables-save").args(["-t", "filter"]))?;
        Ok(rules::count_forward_rules(&saved))
    }
}

/// `iptables --version`, to say which backend the iptables scenarios measured.
pub fn iptables_version() -> String {
    run(Command::new("iptables").arg("--version")).map_or_else(
        |_| "iptables: unknown version".to_owned(),
        |v| v.trim().to_owned(),
    )
}
