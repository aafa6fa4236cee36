//! Which of the node's own addresses the datapath trusts as the node (`WEIR_HOST_IPS`). Pure.

use std::net::Ipv4Addr;

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
}
