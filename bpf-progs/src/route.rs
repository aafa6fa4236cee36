//! Forwarding and policy decisions for the five attach points.
//!
//! Where policy is judged, so that it always sees the real peers and ports:
//! - pod → local pod, pod IP to pod IP: at the sender's veth (`from_pod`), egress and ingress both;
//!   the packet is then redirected straight to the receiver's veth.
//! - pod → another node's pod: egress at the sender's veth, which sends it straight to that node
//!   (out of the uplink, or into the VXLAN tunnel); ingress on the receiving node, in `from_host`
//!   (a flow that crossed the node's stack) or `from_other_node` (straight from the uplink or
//!   the tunnel).
//! - pod → Service ClusterIP: not at the sender (the host stack has yet to DNAT it). The flow is
//!   marked deferred and judged after DNAT where it leaves for its backend, in `from_host`: the
//!   sender's egress (and a local backend's ingress) on the backend's real IP and port. A remote
//!   backend's ingress is judged on its own node.
//! - pod → anything else (the node, the outside): egress at `from_pod`.
//! - host stack → local pod (forwarded, DNATed or node-originated): ingress at `from_host`; the
//!   node's own addresses are always allowed (kubelet probes).
//! Replies of a tracked flow pass both ways; a forward packet judged under an older policy epoch is
//! judged again, so a policy change applies to flows that are already open.

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_tunnel_key, BPF_F_DONT_FRAGMENT, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use weir_common::{
    config::{NODE_F_VXLAN, TUNNEL_DEV_MAC, TUNNEL_SRC_MAC, VXLAN_PORT, VXLAN_VNI},
    counters::{DIR_FROM_POD, DIR_TO_POD},
    ct::{CT_F_DEFERRED, CT_F_FROM_NODE, CT_F_VIA_HOST},
    endpoint::ENDPOINT_F_READY,
    CtValue, EndpointInfo, EndpointKey, NodeConfig, Reason, RemoteKey, RemoteNode,
};

use crate::{
    arp,
    counters::count,
    ct::{self, Hit},
    flow::{self, Flow, IPPROTO_UDP},
    maps::{CONFIG, ENDPOINTS, HOST_IPS, REMOTES},
    packet::{self, EthIpv4, ETH_P_ARP, ETH_P_IP},
    policy,
};

const AF_INET: u32 = 2;
/// The outer TTL of tunnelled packets (the kernel's default IP TTL).
const TUNNEL_TTL: u8 = 64;

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
fn endpoint(ip_be: u32) -> Option<EndpointInfo> {
    // SAFETY: copied out at once; the agent replaces whole values, never writes into them in place.
    unsafe { ENDPOINTS.get(&EndpointKey { ip_be }) }.copied()
}

#[inline(always)]
fn config() -> NodeConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// The other node that hosts `ip`, if any.
#[inline(always)]
fn remote_node(ip: [u8; 4]) -> Option<RemoteNode> {
    REMOTES.get(&Key::new(32, RemoteKey { ip })).copied()
}

/// Send a packet to another node: into the VXLAN tunnel to it, or straight out of the uplink to it
/// (native routing, on a shared L2: the kernel resolves the node's MAC). Returns the tc verdict.
#[inline(always)]
fn forward_remote(ctx: &TcContext, cfg: &NodeConfig, remote: &RemoteNode) -> Result<i32, Reason> {
    if cfg.flags & NODE_F_VXLAN != 0 {
        // The far end's stack takes frames to TUNNEL_DEV_MAC as its own (see weir_common::config).
        packet::set_macs(ctx, TUNNEL_DEV_MAC, TUNNEL_SRC_MAC).ok_or(Reason::DropMalformed)?;
        // SAFETY: a plain-data kernel struct for which all zeroes is valid.
        let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
        key.tunnel_id = cfg.vni;
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(remote.node_ip_be);
        key.tunnel_ttl = TUNNEL_TTL;
        // SAFETY: `skb` is the valid context pointer; `key` lives on the stack for the call and
        // `size` is its full size. DF on the outer header: the pod MTU leaves room for VXLAN, so
        // an oversized packet is a misconfiguration to report (ICMP), not to fragment.
        let rc = unsafe {
            bpf_skb_set_tunnel_key(
                ctx.skb.skb,
                &mut key,
                core::mem::size_of::<bpf_tunnel_key>() as u32,
                u64::from(BPF_F_DONT_FRAGMENT),
            )
        };
        if rc != 0 {
            return Err(Reason::DropNoRoute);
        }
        // SAFETY: plain helper call.
        return Ok(unsafe { bpf_redirect(cfg.tunnel_ifindex, 0) } as i32);
    }
    // SAFETY: as above.
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    nh.nh_family = AF_INET;
    nh.__bindgen_anon_1.ipv4_nh = remote.node_ip_be;
    // SAFETY: `nh` lives on the stack for the call and its size is passed with it.
    Ok(unsafe {
        bpf_redirect_neigh(
            cfg.uplink_ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    } as i32)
}

#[inline(always)]
fn is_host_ip(ip_be: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { HOST_IPS.get(&EndpointKey { ip_be }) }.is_some()
}

/// Is `addr` (wire bytes) inside `net_be/len`? A zero length means "no such range".
#[inline(always)]
fn in_prefix(addr: [u8; 4], net_be: u32, len: u32) -> bool {
    if len == 0 || len > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - len);
    u32::from_be_bytes(addr) & mask == u32::from_be(net_be) & mask
}

#[inline(always)]
fn drop_with(ctx: &TcContext, ifindex: u32, direction: u8, reason: Reason) -> i32 {
    count(ctx, ifindex, direction, reason);
    DROP
}

/// Count a policy denial on the endpoint whose policy said no.
#[inline(always)]
fn deny(
    ctx: &TcContext,
    reason: Reason,
    src: Option<&EndpointInfo>,
    dst: Option<&EndpointInfo>,
) -> i32 {
    let (ep, direction) = match reason {
        Reason::DropPolicyIngress => (dst, DIR_TO_POD),
        _ => (src, DIR_FROM_POD),
    };
    // A fail-closed denial names the direction by which endpoint it was counted on.
    let (ep, direction) = match (reason, ep) {
        (Reason::DropPolicyFailClosed, None) => (dst, DIR_TO_POD),
        _ => (ep, direction),
    };
    drop_with(ctx, ep.map_or(0, |e| e.host_ifindex), direction, reason)
}

/// tcx ingress of a host-side veth: everything a pod sends.
#[inline(always)]
pub fn from_pod(ctx: &TcContext) -> i32 {
    let ifindex = packet::ifindex(ctx);
    match packet::ethertype(ctx) {
        Some(ETH_P_IP) => from_pod_ipv4(ctx, ifindex),
        Some(ETH_P_ARP) => arp::answer_gateway(ctx, ifindex),
        Some(_) => drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropUnsupportedL3),
        None => drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed),
    }
}

#[inline(always)]
fn from_pod_ipv4(ctx: &TcContext, ifindex: u32) -> i32 {
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed);
    };

    // Anti-spoofing: the source must be the endpoint that owns this veth, with its own MAC.
    let Some(me) = endpoint(hdr.saddr_be()) else {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedIp);
    };
    if me.host_ifindex != ifindex {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedIp);
    }
    if me.pod_mac != hdr.eth_src {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropSpoofedMac);
    }
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, ifindex, DIR_FROM_POD, reason),
    };
    let cfg = config();
    if is_to_tunnel_port(&flow, &cfg) {
        return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropTunnelFromPod);
    }
    let peer = endpoint(hdr.daddr_be()).filter(|p| p.flags & ENDPOINT_F_READY != 0);
    let now = ct::now();

    if !flow.is_tcp_open() {
        match ct::lookup(&flow.key, now) {
            Hit::Forward(value) => {
                // SAFETY: map value pointer valid for this run; read by value.
                let v: CtValue = unsafe { *value };
                if v.flags & CT_F_DEFERRED != 0 {
                    ct::touch(value, &flow, false, now);
                    count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
                    return PASS;
                }
                if v.epoch == cfg.policy_epoch {
                    ct::touch(value, &flow, false, now);
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg);
                }
                // Opened under an older policy: judged again below.
            }
            Hit::Reply(value) => {
                ct::touch(value, &flow, true, now);
                // SAFETY: as above.
                let via_host = unsafe { (*value).flags } & CT_F_VIA_HOST != 0;
                return deliver(ctx, ifindex, &hdr, peer.as_ref(), via_host, &cfg);
            }
            Hit::Miss => {
                if is_related(&flow, &cfg, now) {
                    return deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg);
                }
            }
        }
    }

    // A new flow (or one to judge again).
    if in_prefix(hdr.daddr, cfg.service_cidr_be, cfg.service_prefix_len) {
        ct::open(&flow.key, CT_F_DEFERRED, cfg.policy_epoch, now);
        count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
        return PASS;
    }
    if let Err(reason) = policy::judge(&flow.key, Some(&me), peer.as_ref()) {
        return deny(ctx, reason, Some(&me), peer.as_ref());
    }
    ct::open(&flow.key, 0, cfg.policy_epoch, now);
    deliver(ctx, ifindex, &hdr, peer.as_ref(), false, &cfg)
}

/// Is this a pod's packet to a node's VXLAN port? A pod that could reach it could hand the
/// tunnel a packet claiming any identity (iptables drops the same through a Service).
#[inline(always)]
fn is_to_tunnel_port(flow: &Flow, cfg: &NodeConfig) -> bool {
    if cfg.flags & NODE_F_VXLAN == 0
        || flow.key.proto != IPPROTO_UDP
        || flow.key.dport != VXLAN_PORT.to_be_bytes()
    {
        return false;
    }
    let daddr_be = u32::from_ne_bytes(flow.key.daddr);
    is_host_ip(daddr_be) || is_node_address(daddr_be)
}

/// Is `ip_be` another node's own address (its /32 entry in `WEIR_REMOTES`, VXLAN routing)?
#[inline(always)]
fn is_node_address(ip_be: u32) -> bool {
    remote_node(ip_be.to_ne_bytes()).is_some_and(|r| r.node_ip_be == ip_be)
}

/// May this decapsulated packet come in? Only from a node the source names (the outer source
/// is that node's address, checked against `WEIR_REMOTES`), with Weir's VNI, and only on behalf
/// of that node itself or of one of its pods: the inner source must be one of the outer node's.
/// Anything else is a forged identity, whoever sent it.
#[inline(always)]
fn tunnel_source_ok(ctx: &TcContext, inner_saddr: [u8; 4]) -> bool {
    // SAFETY: a plain-data kernel struct for which all zeroes is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: `skb` is the valid context pointer; `key` lives on the stack for the call and `size`
    // is its full size.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if rc != 0 || key.tunnel_id != VXLAN_VNI {
        return false;
    }
    // SAFETY: the IPv4 member of the union, which the kernel filled for an IPv4 tunnel (in host
    // order; `to_be` gives the wire order the maps hold).
    let outer_be = unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be();
    if !is_node_address(outer_be) {
        return false;
    }
    remote_node(inner_saddr).is_some_and(|r| r.node_ip_be == outer_be)
}

/// Send an allowed packet on: straight to a local pod's veth, straight to another node for its
/// pods, or to the host stack (the node, the outside, and replies whose flow came through it).
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    ifindex: u32,
    hdr: &EthIpv4,
    peer: Option<&EndpointInfo>,
    via_host: bool,
    cfg: &NodeConfig,
) -> i32 {
    // A router decrements TTL; when it would expire, let the host stack send the ICMP error.
    if via_host || hdr.ttl <= 1 {
        count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
        return PASS;
    }
    if let Some(peer) = peer {
        if decrement_ttl(ctx, hdr).is_some()
            && packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_some()
        {
            count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardLocal);
            count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::Deliver);
            // SAFETY: plain helper call; the target is a veth whose egress delivers to the pod.
            return unsafe { bpf_redirect(peer.host_ifindex, 0) } as i32;
        }
    } else if let Some(remote) = remote_node(hdr.daddr) {
        if decrement_ttl(ctx, hdr).is_none() {
            return drop_with(ctx, ifindex, DIR_FROM_POD, Reason::DropMalformed);
        }
        return match forward_remote(ctx, cfg, &remote) {
            Ok(verdict) => {
                count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardRemote);
                verdict
            }
            Err(reason) => drop_with(ctx, ifindex, DIR_FROM_POD, reason),
        };
    }
    count(ctx, ifindex, DIR_FROM_POD, Reason::ForwardHost);
    PASS
}

/// tcx egress of `weir0`: host-stack traffic routed to a pod CIDR, this node's or another's.
#[inline(always)]
pub fn from_host(ctx: &TcContext) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return DROP;
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return DROP;
    };
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return from_host_to_remote(ctx, &hdr);
    };
    if peer.flags & ENDPOINT_F_READY == 0 {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, reason),
    };
    if let Err(reason) = admit_from_host(&flow, &hdr, &peer) {
        // A local sender (Service traffic) is named so that its egress denial counts on it.
        let src = endpoint(hdr.saddr_be());
        return deny(ctx, reason, src.as_ref(), Some(&peer));
    }
    if packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_none() {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropMalformed);
    }
    count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::FromHost);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(peer.host_ifindex, 0) as i32 }
}

/// Host-stack traffic for another node's pod: node-originated, forwarded, or a local pod's
/// Service traffic DNATed to a remote backend, whose egress is judged here, after DNAT.
#[inline(always)]
fn from_host_to_remote(ctx: &TcContext, hdr: &EthIpv4) -> i32 {
    let Some(remote) = remote_node(hdr.daddr) else {
        return drop_with(ctx, 0, DIR_TO_POD, Reason::DropNoRoute);
    };
    let cfg = config();
    let src = endpoint(hdr.saddr_be());
    let counted_on = src.map_or(0, |s| s.host_ifindex);
    if let Some(src) = &src {
        let flow = match flow::parse(ctx, hdr) {
            Ok(flow) => flow,
            Err(reason) => return drop_with(ctx, counted_on, DIR_FROM_POD, reason),
        };
        if let Err(reason) = admit_egress_via_host(&flow, src, &cfg) {
            return deny(ctx, reason, Some(src), None);
        }
    }
    match forward_remote(ctx, &cfg, &remote) {
        Ok(verdict) => {
            count(ctx, counted_on, DIR_FROM_POD, Reason::ForwardRemote);
            verdict
        }
        Err(reason) => drop_with(ctx, counted_on, DIR_FROM_POD, reason),
    }
}

/// May a local pod's packet, DNATed by the host stack, leave for another node? Its replies are
/// marked to go back through the host stack, which undoes the DNAT.
#[inline(always)]
fn admit_egress_via_host(flow: &Flow, src: &EndpointInfo, cfg: &NodeConfig) -> Result<(), Reason> {
    let now = ct::now();
    if !matches!(known(flow, cfg, now), Known::Unknown) {
        return Ok(());
    }
    policy::judge(&flow.key, Some(src), None)?;
    ct::open(&flow.key, CT_F_VIA_HOST, cfg.policy_epoch, now);
    Ok(())
}

/// What conntrack knows of a packet arriving from the host stack or another node.
enum Known {
    /// Its flow was judged under the current policy (or is the node's own, always allowed), or
    /// it answers a flow that did not cross the host stack.
    Current,
    /// It answers a flow that crossed the host stack (which may have to undo a DNAT).
    ReplyViaHost,
    /// An ICMP error about a tracked flow.
    Related,
    /// A new flow (every TCP SYN is one), or one judged under an older policy: judge it.
    Unknown,
}

/// Is this an ICMP error about a tracked flow, sent as only a party to that flow or a router on
/// its path can send it? As Linux conntrack requires, it goes back to whoever sent the quoted
/// packet; and a pod is never a router on another pod's path, so an error from a pod must come
/// from the quoted packet's destination. Anything else is judged as a packet of its own.
#[inline(always)]
fn is_related(flow: &Flow, cfg: &NodeConfig, now: u64) -> bool {
    if !flow.has_icmp_inner || flow.key.daddr != flow.icmp_inner.saddr {
        return false;
    }
    let from_pod = in_prefix(flow.key.saddr, cfg.cluster_cidr_be, cfg.cluster_prefix_len);
    if from_pod && flow.key.saddr != flow.icmp_inner.daddr {
        return false;
    }
    ct::exists(&flow.icmp_inner, now)
}

/// Look the packet's flow up, refreshing it when found.
#[inline(always)]
fn known(flow: &Flow, cfg: &NodeConfig, now: u64) -> Known {
    let epoch = cfg.policy_epoch;
    if flow.is_tcp_open() {
        return Known::Unknown;
    }
    match ct::lookup(&flow.key, now) {
        Hit::Forward(value) => {
            // SAFETY: map value pointer valid for this run; read by value.
            let v: CtValue = unsafe { *value };
            if v.epoch == epoch || v.flags & CT_F_FROM_NODE != 0 {
                ct::touch(value, flow, false, now);
                return Known::Current;
            }
            Known::Unknown
        }
        Hit::Reply(value) => {
            ct::touch(value, flow, true, now);
            // SAFETY: as above.
            if unsafe { (*value).flags } & CT_F_VIA_HOST != 0 {
                Known::ReplyViaHost
            } else {
                Known::Current
            }
        }
        Hit::Miss if is_related(flow, cfg, now) => Known::Related,
        Hit::Miss => Known::Unknown,
    }
}

/// What other nodes send: tcx ingress of `weir-vxlan` (decapsulated), or of the uplink
/// (`pods_only`: there only another node's pod's packets are taken, everything else the node
/// receives passes untouched). Packets for a local pod are judged by its ingress policy and
/// delivered straight to its veth, skipping the host stack both ways (the pod's replies go
/// straight back from `from_pod`); the rest (the node's own traffic, and replies to flows that
/// crossed the host stack here, which must undo a DNAT) go up the host stack.
#[inline(always)]
pub fn from_other_node(ctx: &TcContext, pods_only: bool) -> i32 {
    if packet::ethertype(ctx) != Some(ETH_P_IP) {
        return if pods_only { PASS } else { DROP };
    }
    let Some(hdr) = packet::load::<EthIpv4>(ctx, 0) else {
        return if pods_only { PASS } else { DROP };
    };
    // Everything out of the tunnel, the node's own traffic included, must come from the node it
    // claims to: checked before anything else.
    if !pods_only && !tunnel_source_ok(ctx, hdr.saddr) {
        let to = endpoint(hdr.daddr_be()).map_or(0, |p| p.host_ifindex);
        return drop_with(ctx, to, DIR_TO_POD, Reason::DropTunnelForged);
    }
    let Some(peer) = endpoint(hdr.daddr_be()) else {
        return PASS;
    };
    if pods_only && remote_node(hdr.saddr).is_none() {
        return PASS;
    }
    if peer.flags & ENDPOINT_F_READY == 0 {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropNoEndpoint);
    }
    let flow = match flow::parse(ctx, &hdr) {
        Ok(flow) => flow,
        Err(reason) => return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, reason),
    };
    let cfg = config();
    let now = ct::now();
    match known(&flow, &cfg, now) {
        Known::Current => {}
        // Up the host stack, which translates them back if their flow was NATed, then hands
        // them to `from_host`.
        Known::ReplyViaHost | Known::Related => {
            count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::ForwardHost);
            return PASS;
        }
        Known::Unknown => {
            if let Err(reason) = policy::judge(&flow.key, None, Some(&peer)) {
                return deny(ctx, reason, None, Some(&peer));
            }
            ct::open(&flow.key, 0, cfg.policy_epoch, now);
        }
    }
    if packet::set_macs(ctx, peer.pod_mac, peer.host_mac).is_none() {
        return drop_with(ctx, peer.host_ifindex, DIR_TO_POD, Reason::DropMalformed);
    }
    count(ctx, peer.host_ifindex, DIR_TO_POD, Reason::FromRemote);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(peer.host_ifindex, 0) as i32 }
}

/// May this packet from the host stack enter `peer`? Opens or refreshes its flow when it may.
#[inline(always)]
fn admit_from_host(flow: &Flow, hdr: &EthIpv4, peer: &EndpointInfo) -> Result<(), Reason> {
    let cfg = config();
    let now = ct::now();
    if !matches!(known(flow, &cfg, now), Known::Unknown) {
        return Ok(());
    }
    if is_host_ip(hdr.saddr_be()) {
        ct::open(
            &flow.key,
            CT_F_VIA_HOST | CT_F_FROM_NODE,
            cfg.policy_epoch,
            now,
        );
        return Ok(());
    }
    // A local pod reaching another through the host stack (a Service DNATed to a local backend):
    // its egress is judged here, on the backend's real address and port.
    let src = endpoint(hdr.saddr_be());
    policy::judge(&flow.key, src.as_ref(), Some(peer))?;
    ct::open(&flow.key, CT_F_VIA_HOST, cfg.policy_epoch, now);
    Ok(())
}

/// Decrement the IPv4 TTL and patch the header checksum incrementally (RFC 1624).
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, hdr: &EthIpv4) -> Option<()> {
    let csum = u16::from_be_bytes(hdr.check);
    // TTL is the high byte of its 16-bit word, so the word drops by 0x0100 and the checksum rises by it.
    let sum = u32::from(csum) + 0x0100;
    let csum = ((sum & 0xffff) + (sum >> 16)) as u16;
    let [hi, lo] = csum.to_be_bytes();
    packet::store(
        ctx,
        packet::OFF_IP_TTL,
        &[hdr.ttl - 1, hdr.protocol, hi, lo],
    )
}
