//! The real datapath: the embedded eBPF object, loaded with its maps pinned under bpffs.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, MapError, PerCpuHashMap,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use tracing::debug;
use weir_common::{
    maps::{
        CONFIG, COUNTERS, ENDPOINTS, HOST_IPS, POLICY_PEERS, POLICY_PORTS, PROG_FROM_HOST,
        PROG_FROM_POD, PROG_TO_POD,
    },
    CounterKey, CounterValue, EndpointInfo, EndpointKey, NodeConfig, PeerKey, PeerValue, PortKey,
    PortValue,
};

use super::{Datapath, DatapathError, Hook, PeerEntry, PortEntry};

/// The eBPF object built by build.rs from `bpf-progs`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-bpf.o"));

pub struct BpfDatapath {
    ebpf: Ebpf,
    link_dir: PathBuf,
}

fn fs_err(path: &Path) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Fs {
        path: path.display().to_string(),
        source,
    }
}

impl BpfDatapath {
    /// Load the programs, creating the maps under `pin_dir` or reusing the ones pinned there.
    pub fn load(pin_dir: &Path, link_dir: &Path) -> Result<Self, DatapathError> {
        fs::create_dir_all(pin_dir).map_err(fs_err(pin_dir))?;
        fs::create_dir_all(link_dir).map_err(fs_err(link_dir))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(BPF_OBJECT)?;
        for name in [PROG_FROM_POD, PROG_TO_POD, PROG_FROM_HOST] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        Ok(Self {
            ebpf,
            link_dir: link_dir.to_owned(),
        })
    }

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        // bpffs rejects dots in names, which interface names may contain.
        self.link_dir.join(format!(
            "{}:{}",
            hook.pin_suffix(),
            ifname.replace('.', "%")
        ))
    }

    fn peers_map(&self) -> Result<LpmTrie<&MapData, PeerKey, PeerValue>, DatapathError> {
        let map = self
            .ebpf
            .map(POLICY_PEERS)
            .ok_or(missing_map(POLICY_PEERS))?;
        LpmTrie::try_from(map).map_err(map_err(POLICY_PEERS))
    }

    fn peers_map_mut(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, PeerKey, PeerValue>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(POLICY_PEERS)
            .ok_or(missing_map(POLICY_PEERS))?;
        LpmTrie::try_from(map).map_err(map_err(POLICY_PEERS))
    }

    fn ports_map(&self) -> Result<LpmTrie<&MapData, PortKey, PortValue>, DatapathError> {
        let map = self
            .ebpf
            .map(POLICY_PORTS)
            .ok_or(missing_map(POLICY_PORTS))?;
        LpmTrie::try_from(map).map_err(map_err(POLICY_PORTS))
    }

    fn ports_map_mut(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, PortKey, PortValue>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(POLICY_PORTS)
            .ok_or(missing_map(POLICY_PORTS))?;
        LpmTrie::try_from(map).map_err(map_err(POLICY_PORTS))
    }

    fn endpoints_map(
        &self,
    ) -> Result<HashMap<&aya::maps::MapData, EndpointKey, EndpointInfo>, DatapathError> {
        let map = self.ebpf.map(ENDPOINTS).ok_or(missing_map(ENDPOINTS))?;
        HashMap::try_from(map).map_err(|source| DatapathError::Map {
            name: ENDPOINTS,
            source,
        })
    }

    fn endpoints_map_mut(
        &mut self,
    ) -> Result<HashMap<&mut aya::maps::MapData, EndpointKey, EndpointInfo>, DatapathError> {
        let map = self.ebpf.map_mut(ENDPOINTS).ok_or(missing_map(ENDPOINTS))?;
        HashMap::try_from(map).map_err(|source| DatapathError::Map {
            name: ENDPOINTS,
            source,
        })
    }
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// Removing what is not there is success: every remove in the agent is idempotent.
fn absent_ok(name: &'static str, result: Result<(), MapError>) -> Result<(), DatapathError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(source) => Err(DatapathError::Map { name, source }),
    }
}

fn peer_key(entry: PeerEntry) -> Key<PeerKey> {
    Key::new(
        32 + u32::from(entry.net.prefix_len()),
        PeerKey::new(entry.table, entry.net.network().octets()),
    )
}

fn port_key(entry: PortEntry) -> Key<PortKey> {
    Key::new(
        entry.prefix_len,
        PortKey::new(entry.portset, entry.proto, entry.port),
    )
}

fn missing_map(name: &'static str) -> DatapathError {
    DatapathError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn hook_program(hook: Hook) -> (&'static str, TcAttachType) {
    match hook {
        Hook::FromPod => (PROG_FROM_POD, TcAttachType::Ingress),
        Hook::ToPod => (PROG_TO_POD, TcAttachType::Egress),
        Hook::FromHost => (PROG_FROM_HOST, TcAttachType::Egress),
    }
}

impl Datapath for BpfDatapath {
    fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifname, hook);
        let link_err = |message: String| DatapathError::Link {
            path: pin.display().to_string(),
            message,
        };
        let (name, attach_type) = hook_program(hook);
        let prog = program(&mut self.ebpf, name)?;
        let prog_err = |source| DatapathError::Program { name, source };
        let existing = if pin.exists() {
            Some(
                PinnedLink::from_pin(&pin)
                    .map_err(|e| link_err(format!("{e}: {:?}", std::error::Error::source(&e))))?,
            )
        } else {
            None
        };
        match existing {
            Some(existing) => {
                // Swap the program behind the pinned link in one syscall (bpf_link_update).
                let link = SchedClassifierLink::try_from(FdLink::from(existing))
                    .map_err(|e| link_err(format!("not a tcx link: {e}")))?;
                let id = prog.attach_to_link(link).map_err(prog_err)?;
                // Dropping our handle closes the fd; the pin keeps the link attached.
                drop(prog.take_link(id).map_err(prog_err)?);
                debug!(ifname, ?hook, "replaced program on pinned link");
            }
            None => {
                let id = prog
                    .attach_with_options(
                        ifname,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(prog_err)?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(prog_err)?
                    .try_into()
                    .map_err(|e| link_err(format!("not an fd link: {e}")))?;
                link.pin(&pin).map_err(|e| link_err(e.to_string()))?;
                debug!(ifname, ?hook, "attached and pinned");
            }
        }
        Ok(())
    }

    fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifname, hook);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fs_err(&pin)(e)),
        }
    }

    fn pinned_links(&self) -> Result<Vec<(String, Hook)>, DatapathError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.link_dir).map_err(fs_err(&self.link_dir))? {
            let entry = entry.map_err(fs_err(&self.link_dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((suffix, ifname)) = file.split_once(':') else {
                continue;
            };
            let ifname = ifname.replace('%', ".");
            let hook = [Hook::FromPod, Hook::ToPod, Hook::FromHost]
                .into_iter()
                .find(|h| h.pin_suffix() == suffix);
            if let Some(hook) = hook {
                out.push((ifname, hook));
            }
        }
        Ok(out)
    }

    fn set_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        let key = EndpointKey {
            ip_be: u32::from(ip).to_be(),
        };
        self.endpoints_map_mut()?
            .insert(key, info, 0)
            .map_err(|source| DatapathError::Map {
                name: ENDPOINTS,
                source,
            })
    }

    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        let key = EndpointKey {
            ip_be: u32::from(ip).to_be(),
        };
        match self.endpoints_map_mut()?.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(source) => Err(DatapathError::Map {
                name: ENDPOINTS,
                source,
            }),
        }
    }

    fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        let map = self.endpoints_map()?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (key, info) = item.map_err(|source| DatapathError::Map {
                name: ENDPOINTS,
                source,
            })?;
            out.push((Ipv4Addr::from(u32::from_be(key.ip_be)), info));
        }
        Ok(out)
    }

    fn set_config(&mut self, config: NodeConfig) -> Result<(), DatapathError> {
        let map = self.ebpf.map_mut(CONFIG).ok_or(missing_map(CONFIG))?;
        let mut array: Array<_, NodeConfig> =
            Array::try_from(map).map_err(|source| DatapathError::Map {
                name: CONFIG,
                source,
            })?;
        array
            .set(0, config, 0)
            .map_err(|source| DatapathError::Map {
                name: CONFIG,
                source,
            })
    }

    fn config(&self) -> Result<NodeConfig, DatapathError> {
        let map = self.ebpf.map(CONFIG).ok_or(missing_map(CONFIG))?;
        let array: Array<_, NodeConfig> = Array::try_from(map).map_err(map_err(CONFIG))?;
        array.get(&0, 0).map_err(map_err(CONFIG))
    }

    fn counters(&self) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
        let map = self.ebpf.map(COUNTERS).ok_or(missing_map(COUNTERS))?;
        let map: PerCpuHashMap<_, CounterKey, CounterValue> = PerCpuHashMap::try_from(map)
            .map_err(|source| DatapathError::Map {
                name: COUNTERS,
                source,
            })?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (key, per_cpu) = item.map_err(|source| DatapathError::Map {
                name: COUNTERS,
                source,
            })?;
            let total = per_cpu
                .iter()
                .fold(CounterValue::default(), |acc, v| CounterValue {
                    packets: acc.packets + v.packets,
                    bytes: acc.bytes + v.bytes,
                });
            out.push((key, total));
        }
        Ok(out)
    }

    fn remove_counters(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let keys: Vec<CounterKey> = self
            .counters()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ifindex == ifindex)
            .collect();
        let map = self.ebpf.map_mut(COUNTERS).ok_or(missing_map(COUNTERS))?;
        let mut map: PerCpuHashMap<_, CounterKey, CounterValue> = PerCpuHashMap::try_from(map)
            .map_err(|source| DatapathError::Map {
                name: COUNTERS,
                source,
            })?;
        for key in keys {
            // A concurrent LRU eviction may beat us to it; that is fine.
            let _ = map.remove(&key);
        }
        Ok(())
    }

    fn set_peer(&mut self, entry: PeerEntry, portset: u32) -> Result<(), DatapathError> {
        self.peers_map_mut()?
            .insert(&peer_key(entry), PeerValue { portset }, 0)
            .map_err(map_err(POLICY_PEERS))
    }

    fn remove_peer(&mut self, entry: PeerEntry) -> Result<(), DatapathError> {
        let result = self.peers_map_mut()?.remove(&peer_key(entry));
        absent_ok(POLICY_PEERS, result)
    }

    fn peers(&self) -> Result<Vec<PeerEntry>, DatapathError> {
        let mut out = Vec::new();
        for key in self.peers_map()?.keys() {
            let key = key.map_err(map_err(POLICY_PEERS))?;
            let data = key.data();
            let len = key.prefix_len().saturating_sub(32).min(32) as u8;
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(data.ip), len)
                .expect("prefix length clamped to 32");
            out.push(PeerEntry {
                table: u32::from_be_bytes(data.table),
                net,
            });
        }
        Ok(out)
    }

    fn set_port(&mut self, entry: PortEntry) -> Result<(), DatapathError> {
        self.ports_map_mut()?
            .insert(&port_key(entry), PortValue { allow: 1 }, 0)
            .map_err(map_err(POLICY_PORTS))
    }

    fn remove_port(&mut self, entry: PortEntry) -> Result<(), DatapathError> {
        let result = self.ports_map_mut()?.remove(&port_key(entry));
        absent_ok(POLICY_PORTS, result)
    }

    fn ports(&self) -> Result<Vec<PortEntry>, DatapathError> {
        let mut out = Vec::new();
        for key in self.ports_map()?.keys() {
            let key = key.map_err(map_err(POLICY_PORTS))?;
            let data = key.data();
            out.push(PortEntry {
                portset: u32::from_be_bytes(data.portset),
                proto: data.proto,
                port: u16::from_be_bytes(data.port),
                prefix_len: key.prefix_len(),
            });
        }
        Ok(out)
    }

    fn set_host_ips(&mut self, ips: &[Ipv4Addr]) -> Result<(), DatapathError> {
        let map = self.ebpf.map_mut(HOST_IPS).ok_or(missing_map(HOST_IPS))?;
        let mut map: HashMap<_, EndpointKey, u32> =
            HashMap::try_from(map).map_err(map_err(HOST_IPS))?;
        let want: std::collections::BTreeSet<u32> =
            ips.iter().map(|ip| u32::from(*ip).to_be()).collect();
        let stale: Vec<EndpointKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(&k.ip_be))
            .collect();
        for ip_be in &want {
            map.insert(EndpointKey { ip_be: *ip_be }, 1, 0)
                .map_err(map_err(HOST_IPS))?;
        }
        for key in stale {
            absent_ok(HOST_IPS, map.remove(&key))?;
        }
        Ok(())
    }
}
