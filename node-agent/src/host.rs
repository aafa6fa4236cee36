//! The node's own network plumbing: the `weir0` device and its pod-CIDR routes, the VXLAN device,
//! sysctls, and the masquerade rules. The only module of the agent that speaks rtnetlink or runs
//! iptables.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteScope},
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {0} disappeared while being configured")]
    Missing(String),
    #[error("iptables: {0}")]
    Iptables(String),
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> HostError {
    let context = context.into();
    move |source| HostError::Netlink { context, source }
}

/// A link as the agent needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// The link's kind (`veth`, `vxlan`, ...); `None` for a physical device.
    pub kind: Option<String>,
}

fn to_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.as_slice().try_into().ok(),
            LinkAttribute::Mtu(m) => link.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let netlink_packet_route::link::LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn is_enodev(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

#[derive(Clone)]
pub struct Host {
    handle: Handle,
}

impl Host {
    /// Open a netlink connection in the current network namespace. Needs a tokio runtime.
    pub fn connect() -> Result<Self, HostError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(HostError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, HostError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(to_link)),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, HostError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(to_link)),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(nl(format!("get link #{index}"))(e)),
        }
    }

    /// Create `name` as one end of a veth pair (the other end is `peer`), without ARP since the
    /// datapath writes the MACs itself, both ends up. Idempotent. A veth rather than a dummy device
    /// because it needs no extra kernel driver: every kernel that runs pods has veth.
    pub async fn ensure_host_dev(
        &self,
        name: &str,
        peer: &str,
        mtu: u32,
    ) -> Result<Link, HostError> {
        if self.link_by_name(name).await?.is_none() {
            self.handle
                .link()
                .add(LinkVeth::new(name, peer).mtu(mtu).build())
                .execute()
                .await
                .map_err(nl(format!("create {name}")))?;
        }
        for (dev, arp) in [(peer, true), (name, false)] {
            let link = self
                .link_by_name(dev)
                .await?
                .ok_or_else(|| HostError::Missing(dev.to_owned()))?;
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).arp(arp).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {dev} up")))?;
        }
        self.link_by_name(name)
            .await?
            .ok_or_else(|| HostError::Missing(name.to_owned()))
    }

    /// Set a link's MTU (a no-op when it already has it).
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), HostError> {
        if link.mtu == Some(mtu) {
            return Ok(());
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
            .execute()
            .await
            .map_err(nl(format!("set {} mtu {mtu}", link.name)))
    }

    /// Create the flow-based VXLAN device `name` (`external`: the eBPF programs set each packet's
    /// tunnel key), with the fixed MAC every node's tunnel device has, no learning, and `mtu`, up.
    /// Idempotent: an existing device keeps its index, so attached programs stay.
    pub async fn ensure_vxlan_dev(
        &self,
        name: &str,
        port: u16,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<Link, HostError> {
        if self.link_by_name(name).await?.is_none() {
            self.handle
                .link()
                .add(
                    LinkVxlan::new(name, 0)
                        .collect_metadata(true)
                        .learning(false)
                        .port(port)
                        .mtu(mtu)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("create {name}")))?;
        }
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| HostError::Missing(name.to_owned()))?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .mtu(mtu)
                    .address(mac.to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("set {name} up")))?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| HostError::Missing(name.to_owned()))
    }

    pub async fn delete_link(&self, name: &str) -> Result<(), HostError> {
        if let Some(link) = self.link_by_name(name).await? {
            match self.handle.link().del(link.index).execute().await {
                Ok(()) => {}
                Err(e) if is_enodev(&e) => {}
                Err(e) => return Err(nl(format!("delete {name}"))(e)),
            }
        }
        Ok(())
    }

    /// `ip route replace <cidr> dev <ifindex> scope link`.
    pub async fn replace_route(&self, cidr: Ipv4Net, ifindex: u32) -> Result<(), HostError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .output_interface(ifindex)
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route {cidr}")))
    }

    /// `ip route del <cidr> dev <ifindex>`; a route that is already gone is fine.
    pub async fn delete_route(&self, cidr: Ipv4Net, ifindex: u32) -> Result<(), HostError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .output_interface(ifindex)
            .scope(RouteScope::Link)
            .build();
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(nl(format!("delete route {cidr}"))(e)),
        }
    }

    /// A kernel-managed neighbour entry for `ip` on `ifindex` (`ip neigh replace <ip> dev <if>
    /// managed`): the kernel resolves it now and keeps it resolved, so no packet ever waits in
    /// the neighbour queue for it. That queue is why this exists: a packet that `bpf_redirect_neigh`
    /// parks there while the address resolves is sent, once it resolves, through the neighbour of
    /// the route it came by (weir0's, a NOARP device), so it leaves with weir0's MAC as its
    /// destination and the peer drops it (the node's first SYN to another node's pod was lost).
    pub async fn replace_managed_neighbour(
        &self,
        ip: Ipv4Addr,
        ifindex: u32,
    ) -> Result<(), HostError> {
        use netlink_packet_route::neighbour::{
            NeighbourAttribute, NeighbourExtFlags, NeighbourState,
        };
        let mut request = self
            .handle
            .neighbours()
            .add(ifindex, std::net::IpAddr::V4(ip))
            .state(NeighbourState::None)
            .replace();
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        request
            .execute()
            .await
            .map_err(nl(format!("managed neighbour {ip}")))
    }

    /// `ip neigh del <ip> dev <ifindex>`; an entry that is already gone is fine.
    pub async fn delete_neighbour(&self, ip: Ipv4Addr, ifindex: u32) -> Result<(), HostError> {
        let mut message = netlink_packet_route::neighbour::NeighbourMessage::default();
        message.header.family = netlink_packet_route::AddressFamily::Inet;
        message.header.ifindex = ifindex;
        message.attributes.push(
            netlink_packet_route::neighbour::NeighbourAttribute::Destination(
                netlink_packet_route::neighbour::NeighbourAddress::Inet(ip),
            ),
        );
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m))
                if m.raw_code() == -libc::ENOENT || m.raw_code() == -libc::ENODEV =>
            {
                Ok(())
            }
            Err(e) => Err(nl(format!("delete neighbour {ip}"))(e)),
        }
    }

    /// The IPv4 destinations the main table routes out of `ifindex`.
    pub async fn routes_via(&self, ifindex: u32) -> Result<Vec<Ipv4Net>, HostError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(route) = routes.try_next().await.map_err(nl("dump routes"))? {
            if route.header.table != 254 {
                continue;
            }
            let oif = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif != Some(ifindex) {
                continue;
            }
            let dst = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let len = route.header.destination_prefix_length;
            if let Ok(net) = Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), len) {
                out.push(net);
            }
        }
        Ok(out)
    }

    /// Every IPv4 address configured in this network namespace (loopback included), with the
    /// index of the link that holds it.
    pub async fn ipv4_addresses(&self) -> Result<Vec<(Ipv4Addr, u32)>, HostError> {
        use netlink_packet_route::address::AddressAttribute;
        let mut out: Vec<(Ipv4Addr, u32)> = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("dump addresses"))? {
            for attr in &msg.attributes {
                if let AddressAttribute::Local(std::net::IpAddr::V4(ip))
                | AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr
                {
                    if !out.iter().any(|(known, _)| known == ip) {
                        out.push((*ip, msg.header.index));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The interface that holds the IPv4 default route, if any.
    pub async fn default_route_link(&self) -> Result<Option<Link>, HostError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(filter).execute();
        while let Some(route) = routes.try_next().await.map_err(nl("dump routes"))? {
            if route.header.destination_prefix_length != 0 || route.header.table != 254 {
                continue;
            }
            let is_default = !route
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(ip)) if !ip.is_unspecified()));
            let oif = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if let (true, Some(oif)) = (is_default, oif) {
                return self.link_by_index(oif).await;
            }
        }
        Ok(None)
    }
}

/// Delete every interface a Weir attachment is recorded on (pinned tcx link or clsact filter
/// marker), which takes its programs, qdisc and filters along. Best effort, for
/// `weir-agent cleanup`; only names Weir gives (`weir…`) are deleted. Other interfaces (the
/// uplink) only lose Weir's clsact filters; their tcx links go with the pins.
pub async fn delete_attached_links(attachments: &crate::datapath::Attachments) {
    let names = match crate::datapath::attached_interfaces(attachments) {
        Ok(names) => names,
        Err(e) => {
            warn!(%e, "listing attachments");
            return;
        }
    };
    let host = match Host::connect() {
        Ok(host) => host,
        Err(e) => {
            warn!(%e, "deleting attached interfaces");
            return;
        }
    };
    for name in &names {
        if name.starts_with("weir") {
            if let Err(e) = host.delete_link(name).await {
                warn!(%e, "deleting {name}");
            }
            continue;
        }
        for hook in crate::datapath::Hook::ALL {
            if let Err(e) = crate::datapath::detach_clsact(attachments, name, hook) {
                warn!(%e, "detaching from {name}");
            }
        }
    }
}

/// The sysctl tree the agent writes: `/proc/sys`, or the host's mounted elsewhere when the agent's
/// own is read-only (as a container runtime mounts it in unprivileged containers; see
/// `--proc-sys-dir`). Whichever procfs mount they are reached through, `net/` sysctls are those of
/// the calling process's network namespace: with `hostNetwork`, the node's.
#[derive(Clone, Copy, Debug)]
pub struct Sysctls<'a> {
    root: &'a Path,
}

impl<'a> Sysctls<'a> {
    pub fn new(root: &'a Path) -> Self {
        Self { root }
    }

    /// Write a sysctl, given by its path below the root (`net/ipv4/ip_forward`).
    pub fn write(&self, path: &str, value: &str) -> Result<(), HostError> {
        let full = self.root.join(path);
        std::fs::write(&full, value).map_err(|source| HostError::Sysctl {
            path: full.display().to_string(),
            source,
        })
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Node-wide sysctls the datapath relies on.
    pub fn configure_node(&self, host_dev: &str) -> Result<(), HostError> {
        self.write("net/ipv4/ip_forward", "1")?;
        // Pod packets reach the host stack on their veth, while the route back to them is via
        // weir0: strict reverse-path filtering would drop them. The eBPF programs do the
        // anti-spoofing instead.
        if self.read("net/ipv4/conf/all/rp_filter").as_deref() == Some("1") {
            warn!("net.ipv4.conf.all.rp_filter is strict (1); setting it to loose (2) so pod traffic is not dropped");
            self.write("net/ipv4/conf/all/rp_filter", "2")?;
        }
        self.write(&format!("net/ipv4/conf/{host_dev}/rp_filter"), "0")?;
        Ok(())
    }

    /// Sysctls of the VXLAN device: decapsulated packets come from other nodes' pods, whose route
    /// points at `weir0`, so strict reverse-path filtering would drop them.
    pub fn configure_tunnel(&self, ifname: &str) -> Result<(), HostError> {
        self.write(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
        if let Err(e) = self.write(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1") {
            debug!(%e, "IPv6 sysctl not available");
        }
        Ok(())
    }

    /// Sysctls of one host-side veth.
    pub fn configure_veth(&self, ifname: &str) -> Result<(), HostError> {
        self.write(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
        // IPv4-only datapath: keep the host side from emitting router solicitations into the pod.
        if let Err(e) = self.write(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1") {
            debug!(%e, "IPv6 sysctl not available");
        }
        Ok(())
    }
}

const MASQ_CHAIN: &str = "WEIR-MASQ";
const FWD_CHAIN: &str = "WEIR-FORWARD";
const INPUT_CHAIN: &str = "WEIR-INPUT";

/// The node addresses the datapath trusts as the node, at most `max`: the uplink's first (the
/// kubelet's probes come from them), then the rest in address order. Returns them and how many
/// were left out.
pub fn trusted_host_addresses(
    addresses: &[(Ipv4Addr, u32)],
    uplink: u32,
    max: u32,
) -> (Vec<Ipv4Addr>, usize) {
    let mut ordered: Vec<(bool, Ipv4Addr)> = addresses
        .iter()
        .map(|(ip, link)| (*link != uplink, *ip))
        .collect();
    ordered.sort();
    let kept: Vec<Ipv4Addr> = ordered
        .iter()
        .take(max as usize)
        .map(|(_, ip)| *ip)
        .collect();
    let left_out = ordered.len() - kept.len();
    (kept, left_out)
}

/// The iptables rules of this node, in iptables-restore format, for `--noflush` application. Pod
/// traffic leaving the cluster CIDR is masqueraded to the node; the forward chain accepts pod traffic
/// even when the node's FORWARD policy is DROP (as Docker sets it).
pub fn iptables_rules(
    pod_cidr: Ipv4Net,
    cluster_cidr: Ipv4Net,
    vxlan: bool,
    egress_after_dnat: &Path,
) -> String {
    // With VXLAN, no pod may reach a node's tunnel port (it could hand the tunnel a packet
    // claiming any identity): the datapath drops pods' packets sent to a node's address, these
    // drop what reaches one through a Service (DNAT) on this node or on its way elsewhere.
    let port = weir_common::config::VXLAN_PORT;
    let (input_tunnel, forward_tunnel) = if vxlan {
        (
            format!("-A {INPUT_CHAIN} -s {cluster_cidr} -p udp --dport {port} -j DROP\n"),
            format!(
                "-A {FWD_CHAIN} -s {cluster_cidr} -p udp --dport {port} -m conntrack --ctstate DNAT -j DROP\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    // A pod's Service traffic that the host stack DNATed to something that is not a pod (the node,
    // another node, the outside) never reaches weir0, where Service traffic to pods is judged:
    // the datapath's socket filter judges its egress here (original direction; before SNAT, in
    // POSTROUTING, so the source is still the pod).
    let egress = format!(
        "-s {pod_cidr} ! -d {cluster_cidr} -m conntrack --ctstate DNAT --ctdir ORIGINAL \
         -m bpf --object-pinned {} -j DROP",
        egress_after_dnat.display()
    );
    format!(
        "*nat\n\
         :{MASQ_CHAIN} - [0:0]\n\
         -F {MASQ_CHAIN}\n\
         -A {MASQ_CHAIN} -d {cluster_cidr} -j RETURN\n\
         -A {MASQ_CHAIN} -m addrtype --dst-type LOCAL -j RETURN\n\
         -A {MASQ_CHAIN} -j MASQUERADE --random-fully\n\
         COMMIT\n\
         *filter\n\
         :{FWD_CHAIN} - [0:0]\n\
         :{INPUT_CHAIN} - [0:0]\n\
         -F {FWD_CHAIN}\n\
         -F {INPUT_CHAIN}\n\
         {forward_tunnel}\
         -A {FWD_CHAIN} {egress}\n\
         -A {FWD_CHAIN} -s {pod_cidr} -j ACCEPT\n\
         -A {FWD_CHAIN} -d {pod_cidr} -j ACCEPT\n\
         {input_tunnel}\
         -A {INPUT_CHAIN} {egress}\n\
         COMMIT\n"
    )
}

fn iptables(args: &[&str]) -> Result<bool, HostError> {
    let status = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| HostError::Iptables(format!("running iptables: {e}")))?;
    Ok(status.success())
}

/// Install the chains and the jumps to them. Idempotent.
pub fn install_iptables(
    pod_cidr: Ipv4Net,
    cluster_cidr: Ipv4Net,
    vxlan: bool,
    egress_after_dnat: &Path,
) -> Result<(), HostError> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HostError::Iptables(format!("running iptables-restore: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(iptables_rules(pod_cidr, cluster_cidr, vxlan, egress_after_dnat).as_bytes())
            .map_err(|e| HostError::Iptables(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HostError::Iptables(e.to_string()))?;
    if !out.status.success() {
        return Err(HostError::Iptables(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let masq_src = pod_cidr.to_string();
    let jumps: [(&str, &str, Vec<&str>); 3] = [
        (
            "nat",
            "POSTROUTING",
            vec!["-s", &masq_src, "-j", MASQ_CHAIN],
        ),
        ("filter", "FORWARD", vec!["-j", FWD_CHAIN]),
        ("filter", "INPUT", vec!["-j", INPUT_CHAIN]),
    ];
    for (table, chain, rule) in jumps {
        let mut check = vec!["-t", table, "-C", chain];
        check.extend(&rule);
        if !iptables(&check)? {
            let mut insert = vec!["-t", table, "-I", chain, "1"];
            insert.extend(&rule);
            if !iptables(&insert)? {
                return Err(HostError::Iptables(format!(
                    "inserting jump to {table}/{chain}"
                )));
            }
        }
    }
    Ok(())
}

/// Remove the jumps and chains. Best effort and idempotent: missing pieces are fine.
pub fn remove_iptables(pod_cidr: Option<Ipv4Net>) {
    let src = pod_cidr.map(|c| c.to_string());
    if let Some(src) = &src {
        while iptables(&[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            src,
            "-j",
            MASQ_CHAIN,
        ])
        .unwrap_or(false)
        {}
    }
    while iptables(&["-t", "filter", "-D", "FORWARD", "-j", FWD_CHAIN]).unwrap_or(false) {}
    while iptables(&["-t", "filter", "-D", "INPUT", "-j", INPUT_CHAIN]).unwrap_or(false) {}
    for (table, chain) in [
        ("nat", MASQ_CHAIN),
        ("filter", FWD_CHAIN),
        ("filter", INPUT_CHAIN),
    ] {
        let _ = iptables(&["-t", table, "-F", chain]);
        let _ = iptables(&["-t", table, "-X", chain]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplinks_addresses_are_trusted_first_and_the_rest_up_to_the_limit() {
        let ip = |d: u8| Ipv4Addr::new(10, 96, 0, d);
        let uplink_ip = Ipv4Addr::new(192, 0, 2, 11);
        // kube-ipvs0 (link 5) holds ClusterIPs; the uplink is link 2.
        let mut addresses: Vec<(Ipv4Addr, u32)> = (1..=10).map(|d| (ip(d), 5)).collect();
        addresses.push((uplink_ip, 2));
        addresses.push((Ipv4Addr::LOCALHOST, 1));
        let (kept, left_out) = trusted_host_addresses(&addresses, 2, 4);
        assert_eq!(kept, [uplink_ip, ip(1), ip(2), ip(3)]);
        assert_eq!(left_out, 8);
        let (all, none) = trusted_host_addresses(&addresses, 2, 65_536);
        assert_eq!((all.len(), none), (12, 0));
    }

    #[test]
    fn iptables_rules_masquerade_only_traffic_leaving_the_cluster() {
        let rules = iptables_rules(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            false,
            Path::new("/sys/fs/bpf/weir/v4/progs/f"),
        );
        let masq: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A WEIR-MASQ"))
            .collect();
        assert_eq!(
            masq,
            [
                "-A WEIR-MASQ -d 10.244.0.0/16 -j RETURN",
                "-A WEIR-MASQ -m addrtype --dst-type LOCAL -j RETURN",
                "-A WEIR-MASQ -j MASQUERADE --random-fully",
            ]
        );
        assert!(rules.contains("-A WEIR-FORWARD -s 10.244.1.0/24 -j ACCEPT"));
        assert_eq!(rules.matches("COMMIT").count(), 2);
        assert!(
            !rules.contains("8472"),
            "native routing has no tunnel to guard"
        );
    }

    #[test]
    fn with_vxlan_no_pod_reaches_a_tunnel_port_through_the_host_stack() {
        let rules = iptables_rules(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            true,
            Path::new("/sys/fs/bpf/weir/v4/progs/f"),
        );
        let filter: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
        assert!(filter.contains(&"-A WEIR-INPUT -s 10.244.0.0/16 -p udp --dport 8472 -j DROP"));
        // First in WEIR-FORWARD, before the pod CIDR's ACCEPT.
        let forward: Vec<&&str> = filter
            .iter()
            .filter(|l| l.starts_with("-A WEIR-FORWARD"))
            .collect();
        assert_eq!(
            *forward[0],
            "-A WEIR-FORWARD -s 10.244.0.0/16 -p udp --dport 8472 -m conntrack --ctstate DNAT -j DROP"
        );
    }

    #[test]
    fn sysctls_are_read_and_written_under_the_given_root() {
        let root = tempfile::tempdir().unwrap();
        let dir = |d: &str| std::fs::create_dir_all(root.path().join(d)).unwrap();
        let put = |f: &str, v: &str| std::fs::write(root.path().join(f), v).unwrap();
        let get = |f: &str| std::fs::read_to_string(root.path().join(f)).unwrap();
        for d in [
            "net/ipv4/conf/all",
            "net/ipv4/conf/weir0",
            "net/ipv4/conf/veth1",
        ] {
            dir(d);
        }
        put("net/ipv4/ip_forward", "0\n");
        put("net/ipv4/conf/all/rp_filter", "1\n");
        put("net/ipv4/conf/weir0/rp_filter", "1\n");
        put("net/ipv4/conf/veth1/rp_filter", "1\n");
        let sysctls = Sysctls::new(root.path());

        assert_eq!(
            sysctls.read("net/ipv4/conf/all/rp_filter").as_deref(),
            Some("1")
        );
        assert_eq!(sysctls.read("net/ipv4/no_such_sysctl"), None);
        sysctls.configure_node("weir0").unwrap();
        assert_eq!(get("net/ipv4/ip_forward"), "1");
        assert_eq!(get("net/ipv4/conf/all/rp_filter"), "2");
        assert_eq!(get("net/ipv4/conf/weir0/rp_filter"), "0");
        // No IPv6 tree under this root: the IPv6 sysctl is skipped, the IPv4 one is written.
        sysctls.configure_veth("veth1").unwrap();
        assert_eq!(get("net/ipv4/conf/veth1/rp_filter"), "0");

        // A missing interface is an error that names the path under the root.
        let error = sysctls.configure_veth("gone0").unwrap_err().to_string();
        let expected = root.path().join("net/ipv4/conf/gone0/rp_filter");
        assert!(error.contains(&expected.display().to_string()), "{error}");
    }
}
