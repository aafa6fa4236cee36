//! Network devices as Weir needs to know them, and the changes it makes to them.

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

/// A network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The `IFLA_INFO_KIND` (`veth`, `vxlan`, …); `None` for a physical device.
    pub kind: Option<String>,
}

impl Link {
    pub(crate) fn from_message(msg: LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes).ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.into_iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// Changes to make to a device in one request (`ip link set`); what is `None` stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkUpdate {
    pub up: bool,
    pub arp: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
}

impl LinkUpdate {
    /// Bring the device up, changing nothing else.
    pub fn up() -> Self {
        Self {
            up: true,
            ..Self::default()
        }
    }

    pub fn arp(self, arp: bool) -> Self {
        Self {
            arp: Some(arp),
            ..self
        }
    }

    pub fn mtu(self, mtu: u32) -> Self {
        Self {
            mtu: Some(mtu),
            ..self
        }
    }

    pub fn mac(self, mac: [u8; 6]) -> Self {
        Self {
            mac: Some(mac),
            ..self
        }
    }

    pub(crate) fn message(&self, base: LinkMessageBuilder<LinkUnspec>) -> LinkMessage {
        let mut builder = base;
        if self.up {
            builder = builder.up();
        }
        if let Some(arp) = self.arp {
            builder = builder.arp(arp);
        }
        if let Some(mtu) = self.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = self.mac {
            builder = builder.address(mac.to_vec());
        }
        builder.build()
    }

    /// Does `link` already look like this?
    pub fn is_applied_to(&self, link: &Link) -> bool {
        (!self.up || link.up)
            && self.mtu.is_none_or(|m| link.mtu == Some(m))
            && self.mac.is_none_or(|m| link.mac == Some(m))
            && self.arp.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link {
            index: 3,
            name: "weir0".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: Some(1500),
            up: true,
            kind: Some("veth".into()),
        }
    }

    #[test]
    fn an_update_is_applied_only_when_every_field_it_names_matches() {
        assert!(LinkUpdate::up().mtu(1500).is_applied_to(&link()));
        assert!(!LinkUpdate::up().mtu(1450).is_applied_to(&link()));
        assert!(!LinkUpdate::up()
            .mac([2, 0, 0, 0, 0, 2])
            .is_applied_to(&link()));
        // The ARP flag is not part of `Link`: an update naming it is always sent.
        assert!(!LinkUpdate::up().arp(false).is_applied_to(&link()));
        let down = Link {
            up: false,
            ..link()
        };
        assert!(!LinkUpdate::up().is_applied_to(&down));
        assert!(LinkUpdate::default().mtu(1500).is_applied_to(&down));
    }
}
