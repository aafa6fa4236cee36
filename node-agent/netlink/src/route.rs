//! IPv4 routes of the main table.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType},
    AddressFamily,
};
use rtnetlink::RouteMessageBuilder;

/// An IPv4 route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// The output device (the first next hop's, for multipath routes).
    pub oif: Option<u32>,
    /// `scope link` (a directly connected destination) rather than `scope global`.
    pub link_scope: bool,
}

impl RouteV4 {
    /// `<dst> dev <ifindex> scope link`: a destination reached directly through a device.
    pub fn on_link(dst: Ipv4Net, ifindex: u32) -> Self {
        Self {
            dst,
            gateway: None,
            oif: Some(ifindex),
            link_scope: true,
        }
    }

    pub(crate) fn message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new();
        if self.dst.prefix_len() > 0 {
            builder = builder.destination_prefix(self.dst.addr(), self.dst.prefix_len());
        }
        if let Some(gateway) = self.gateway {
            builder = builder.gateway(gateway);
        }
        if let Some(oif) = self.oif {
            builder = builder.output_interface(oif);
        }
        if self.link_scope {
            builder = builder.scope(RouteScope::Link);
        }
        builder.build()
    }
}

impl std::fmt::Display for RouteV4 {
    /// `10.0.0.0/8 via 169.254.1.1 dev #3 scope link`, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if self.link_scope {
            f.write_str(" scope link")?;
        }
        Ok(())
    }
}

/// The route `msg` describes, if it is an IPv4 unicast route of the main table.
pub(crate) fn route_v4(msg: RouteMessage) -> Option<RouteV4> {
    let header = &msg.header;
    if header.address_family != AddressFamily::Inet || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    oif = oif.or(Some(hop.interface_index));
                    gateway = gateway.or_else(|| {
                        hop.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                            _ => None,
                        })
                    });
                }
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(RouteV4 {
        dst: Ipv4Net::new(dst, header.destination_prefix_length).ok()?,
        gateway,
        oif,
        link_scope: header.scope == RouteScope::Link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_print_as_ip_route_would_name_them() {
        let gw = Ipv4Addr::new(169, 254, 1, 1);
        let default = RouteV4 {
            dst: Ipv4Net::default(),
            gateway: Some(gw),
            oif: Some(7),
            link_scope: false,
        };
        assert_eq!(default.to_string(), "default via 169.254.1.1 dev #7");
        let on_link = RouteV4::on_link(Ipv4Net::from(gw), 7);
        assert_eq!(on_link.to_string(), "169.254.1.1/32 dev #7 scope link");
    }

    #[test]
    fn only_main_table_unicast_ipv4_routes_are_read() {
        let mut msg = RouteV4::on_link("10.244.2.0/24".parse().unwrap(), 4).message();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = RouteType::Unicast;
        assert_eq!(
            route_v4(msg.clone()),
            Some(RouteV4::on_link("10.244.2.0/24".parse().unwrap(), 4))
        );
        let mut local = msg.clone();
        local.header.table = 255;
        assert_eq!(route_v4(local), None);
        let mut broadcast = msg;
        broadcast.header.kind = RouteType::Broadcast;
        assert_eq!(route_v4(broadcast), None);
    }
}
