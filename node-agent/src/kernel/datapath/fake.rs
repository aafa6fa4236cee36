//! An in-memory datapath for tests of the endpoint logic.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use weir_common::{CounterKey, CounterValue, EndpointInfo, NodeConfig};

use super::{Datapath, DatapathError, Hook, PeerEntry, PortEntry};

#[derive(Default, Debug)]
pub struct FakeDatapath {
    pub links: BTreeSet<(String, String)>,
    pub endpoints: BTreeMap<Ipv4Addr, EndpointInfo>,
    pub config: Option<NodeConfig>,
    pub counters: BTreeMap<(u32, u8, u16), CounterValue>,
    pub peers: BTreeMap<PeerEntry, u32>,
    /// PORTS entries with their verdicts.
    pub ports: BTreeMap<PortEntry, bool>,
    pub host_ips: Vec<Ipv4Addr>,
    pub host_ports: Vec<weir_common::HostPortKey>,
    pub remotes: BTreeMap<ipnet::Ipv4Net, Ipv4Addr>,
    /// Makes PEERS writes fail once this many entries exist (a full map).
    pub peers_capacity: Option<usize>,
    /// Makes the next `attach` fail, to test rollback.
    pub fail_next_attach: bool,
}

fn hook_of(suffix: &str) -> Hook {
    Hook::ALL
        .into_iter()
        .find(|h| h.pin_suffix() == suffix)
        .unwrap_or(Hook::FromHost)
}

impl Datapath for FakeDatapath {
    fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        if std::mem::take(&mut self.fail_next_attach) {
            return Err(DatapathError::Link {
                path: ifname.to_owned(),
                message: "injected".into(),
            });
        }
        self.links
            .insert((ifname.to_owned(), hook.pin_suffix().to_owned()));
        Ok(())
    }
    fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        self.links
            .remove(&(ifname.to_owned(), hook.pin_suffix().to_owned()));
        Ok(())
    }
    fn pinned_links(&self) -> Result<Vec<(String, Hook)>, DatapathError> {
        Ok(self
            .links
            .iter()
            .map(|(i, s)| (i.clone(), hook_of(s)))
            .collect())
    }
    fn set_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.endpoints.insert(ip, info);
        Ok(())
    }
    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        self.endpoints.remove(&ip);
        Ok(())
    }
    fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        Ok(self.endpoints.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn set_config(&mut self, config: NodeConfig) -> Result<(), DatapathError> {
        self.config = Some(config);
        Ok(())
    }
    fn config(&self) -> Result<NodeConfig, DatapathError> {
        Ok(self.config.unwrap_or_default())
    }
    fn counters(&self) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
        Ok(self
            .counters
            .iter()
            .map(|(&(ifindex, direction, reason), v)| {
                (
                    CounterKey {
                        ifindex,
                        direction,
                        _pad: 0,
                        reason,
                    },
                    *v,
                )
            })
            .collect())
    }
    fn remove_counters(
        &mut self,
        ifindex: u32,
    ) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
        let removed = self
            .counters()?
            .into_iter()
            .filter(|(k, _)| k.ifindex == ifindex)
            .collect();
        self.counters.retain(|k, _| k.0 != ifindex);
        Ok(removed)
    }
    fn table_allows(
        &self,
        table: u32,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Result<bool, DatapathError> {
        let portset = self
            .peers
            .iter()
            .filter(|(e, _)| e.table == table && e.net.contains(&peer))
            .max_by_key(|(e, _)| e.net.prefix_len())
            .map(|(_, portset)| *portset);
        let Some(portset) = portset.filter(|&p| p != 0) else {
            return Ok(false);
        };
        // The longest matching entry decides, as in the trie.
        let longest = self
            .ports
            .iter()
            .filter(|(e, _)| {
                e.portset == portset
                    && (e.prefix_len <= 32
                        || e.proto == proto
                            && (e.prefix_len <= 40 || {
                                let bits = e.prefix_len - 40;
                                let mask = u16::MAX.checked_shl(16 - bits).unwrap_or(0);
                                e.port & mask == port & mask
                            }))
            })
            .max_by_key(|(e, _)| e.prefix_len);
        Ok(longest.is_some_and(|(_, &allow)| allow))
    }
    fn policy_capacity(&self) -> (usize, usize) {
        (
            self.peers_capacity
                .unwrap_or(weir_common::maps::POLICY_PEERS_MAX as usize),
            weir_common::maps::POLICY_PORTS_MAX as usize,
        )
    }
    fn set_peer(&mut self, entry: PeerEntry, portset: u32) -> Result<(), DatapathError> {
        let full = self
            .peers_capacity
            .is_some_and(|cap| self.peers.len() >= cap && !self.peers.contains_key(&entry));
        if full {
            return Err(DatapathError::Map {
                name: "WEIR_POLICY_PEERS",
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_elem",
                    io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
                }),
            });
        }
        self.peers.insert(entry, portset);
        Ok(())
    }
    fn remove_peer(&mut self, entry: PeerEntry) -> Result<(), DatapathError> {
        self.peers.remove(&entry);
        Ok(())
    }
    fn peers(&self) -> Result<Vec<PeerEntry>, DatapathError> {
        Ok(self.peers.keys().copied().collect())
    }
    fn set_port(&mut self, entry: PortEntry, allow: bool) -> Result<(), DatapathError> {
        self.ports.insert(entry, allow);
        Ok(())
    }
    fn remove_port(&mut self, entry: PortEntry) -> Result<(), DatapathError> {
        self.ports.remove(&entry);
        Ok(())
    }
    fn ports(&self) -> Result<Vec<PortEntry>, DatapathError> {
        Ok(self.ports.keys().copied().collect())
    }
    fn set_host_ips(&mut self, ips: &[Ipv4Addr]) -> Result<(), DatapathError> {
        self.host_ips = ips.to_vec();
        Ok(())
    }
    fn set_host_ports(&mut self, ports: &[weir_common::HostPortKey]) -> Result<(), DatapathError> {
        self.host_ports = ports.to_vec();
        Ok(())
    }

    fn set_remotes(&mut self, remotes: &[(ipnet::Ipv4Net, Ipv4Addr)]) -> Result<(), DatapathError> {
        self.remotes = remotes.iter().copied().collect();
        Ok(())
    }

    fn remotes(&self) -> Result<Vec<(ipnet::Ipv4Net, Ipv4Addr)>, DatapathError> {
        Ok(self.remotes.iter().map(|(k, v)| (*k, *v)).collect())
    }
}
