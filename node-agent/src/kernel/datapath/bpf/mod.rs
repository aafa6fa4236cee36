//! The real datapath: the embedded eBPF object, loaded with its maps pinned under bpffs, and its
//! maps read and written through aya (attachments are in [`attach`]).

mod attach;

use std::{
    collections::BTreeMap,
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, Map, MapData, MapError, PerCpuHashMap, ProgramArray,
    },
    programs::{ProgramError, SocketFilter},
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use tracing::info;
use weir_common::{
    maps::{
        CONFIG, COUNTERS, CT_ANY, CT_TCP, ENDPOINTS, FLOW_RATE, HOST_IPS, HOST_PORTS, MAP_KINDS,
        POLICY_PEERS, POLICY_PORTS, PROG_EGRESS_AFTER_DNAT, PROG_FRAG_NEEDED, PROG_FROM_HOST,
        PROG_FROM_POD, PROG_FROM_TUNNEL, PROG_FROM_UPLINK, REMOTES, TAIL_CALLS, TAIL_FRAG_NEEDED,
        VERDICTS,
    },
    CounterKey, CounterValue, CtKey, CtValue, EndpointInfo, EndpointKey, FlowRate, HostPortKey,
    NodeConfig, PeerKey, PeerValue, PortKey, PortValue, RemoteKey, RemoteNode, VerdictKey,
};

use super::{AttachMode, Attachments, Datapath, DatapathError, Hook, PeerEntry, PortEntry};
use crate::{config::ConntrackSizes, kernel::pins};
use attach::program;
pub use attach::{attached_interfaces, detach_clsact};

/// The eBPF object built by build.rs from `bpf-progs`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-bpf.o"));

pub struct BpfDatapath {
    ebpf: Ebpf,
    attachments: Attachments,
    /// The mode attachments are made with; `None` until `Auto` has been probed.
    resolved: Option<AttachMode>,
}

pub(super) fn fs_err(path: &Path) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Fs {
        path: path.display().to_string(),
        source,
    }
}

/// Where the iptables socket filter is pinned, under the datapath's pin directory.
pub fn egress_after_dnat_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join("progs").join(PROG_EGRESS_AFTER_DNAT)
}

/// Every map of the object is of the kind `weir-common` declares, which is how readers without
/// the object ([`pins`]) open them.
fn check_map_kinds(ebpf: &Ebpf) -> Result<(), DatapathError> {
    for (name, kind) in MAP_KINDS {
        let map = ebpf.map(name).ok_or(missing_map(name))?;
        if !pins::is_kind(map, *kind) {
            return Err(DatapathError::MapKind {
                name,
                declared: *kind,
            });
        }
    }
    Ok(())
}

/// Copy every entry of `old` into `ebpf`'s map `name` (as many as fit).
fn copy_conntrack(
    old: MapData,
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<usize, DatapathError> {
    let old: HashMap<_, CtKey, CtValue> =
        HashMap::try_from(Map::LruHashMap(old)).map_err(map_err(name))?;
    let new = ebpf.map_mut(name).ok_or(missing_map(name))?;
    let mut new: HashMap<_, CtKey, CtValue> = HashMap::try_from(new).map_err(map_err(name))?;
    let mut copied = 0;
    for (key, value) in old.iter().filter_map(Result::ok) {
        if new.insert(key, value, 0).is_ok() {
            copied += 1;
        }
    }
    Ok(copied)
}

impl BpfDatapath {
    /// Load the programs, creating the maps under `pin_dir` or reusing the ones pinned there.
    /// The conntrack tables get `conntrack`'s sizes; a pinned one of another size is replaced by a
    /// new one holding its entries (so open flows keep their verdicts across the resize).
    /// The policy peer map gets `policy_peers` entries; one pinned with another size is replaced
    /// by an empty one, which the agent's first programming fills.
    pub fn load(
        pin_dir: &Path,
        attachments: &Attachments,
        conntrack: ConntrackSizes,
        policy_peers: u32,
    ) -> Result<Self, DatapathError> {
        fs::create_dir_all(pin_dir).map_err(fs_err(pin_dir))?;
        for dir in [&attachments.link_pin_dir, &attachments.filter_dir] {
            fs::create_dir_all(dir).map_err(fs_err(dir))?;
        }
        let sizes = [
            (CT_TCP, conntrack.tcp),
            (CT_ANY, conntrack.any),
            (POLICY_PEERS, policy_peers),
        ];
        let resized = unpin_resized(pin_dir, &sizes)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for (name, size) in sizes {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader.load(BPF_OBJECT)?;
        check_map_kinds(&ebpf)?;
        for (name, old) in resized {
            // Conntrack entries are copied; policy is written afresh by the first programming.
            if name == POLICY_PEERS {
                continue;
            }
            let copied = copy_conntrack(old, &mut ebpf, name)?;
            info!(
                map = name,
                entries = copied,
                "conntrack entries carried over"
            );
        }
        for name in [
            PROG_FROM_POD,
            PROG_FROM_HOST,
            PROG_FROM_TUNNEL,
            PROG_FROM_UPLINK,
        ] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        fill_tail_calls(&mut ebpf)?;
        pin_egress_after_dnat(&mut ebpf, pin_dir)?;
        let resolved = match attachments.mode {
            AttachMode::Auto => None,
            mode => {
                info!(%mode, "tc attach mode");
                Some(mode)
            }
        };
        Ok(Self {
            ebpf,
            attachments: attachments.clone(),
            resolved,
        })
    }

    /// The mode attachments are made with: `tcx` or `clsact`, or `None` while `auto` has not
    /// been probed by a first attach yet.
    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.resolved
    }

    /// Map `name`, as the typed view `T`.
    fn typed<'a, T>(&'a self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a Map, Error = MapError>,
    {
        let map = self.ebpf.map(name).ok_or(missing_map(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    /// Map `name`, as the writable typed view `T`.
    fn typed_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut Map, Error = MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(missing_map(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    fn peers_map(&self) -> Result<LpmTrie<&MapData, PeerKey, PeerValue>, DatapathError> {
        self.typed(POLICY_PEERS)
    }

    fn peers_map_mut(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, PeerKey, PeerValue>, DatapathError> {
        self.typed_mut(POLICY_PEERS)
    }

    fn ports_map(&self) -> Result<LpmTrie<&MapData, PortKey, PortValue>, DatapathError> {
        self.typed(POLICY_PORTS)
    }

    fn ports_map_mut(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, PortKey, PortValue>, DatapathError> {
        self.typed_mut(POLICY_PORTS)
    }

    fn endpoints_map(&self) -> Result<HashMap<&MapData, EndpointKey, EndpointInfo>, DatapathError> {
        self.typed(ENDPOINTS)
    }

    fn endpoints_map_mut(
        &mut self,
    ) -> Result<HashMap<&mut MapData, EndpointKey, EndpointInfo>, DatapathError> {
        self.typed_mut(ENDPOINTS)
    }
}

/// Load the programs `tc_from_pod` tail-calls and put them in its program array (see
/// `weir_common::maps::TAIL_CALLS`).
fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let name = PROG_FRAG_NEEDED;
    let prog = program(ebpf, name)?;
    prog.load()
        .map_err(|source| DatapathError::Program { name, source })?;
    let fd = prog
        .fd()
        .map_err(|source| DatapathError::Program { name, source })?
        .try_clone()
        .map_err(|e| DatapathError::Program {
            name,
            source: ProgramError::IOError(e),
        })?;
    let map = ebpf.map_mut(TAIL_CALLS).ok_or(missing_map(TAIL_CALLS))?;
    let mut tails = ProgramArray::try_from(map).map_err(map_err(TAIL_CALLS))?;
    tails
        .set(TAIL_FRAG_NEEDED, &fd, 0)
        .map_err(map_err(TAIL_CALLS))
}

/// Unpin each map in `sizes` whose pinned copy has another size, so the loader creates it anew;
/// the old maps are returned, still alive, for their entries to be carried over.
fn unpin_resized(
    pin_dir: &Path,
    sizes: &[(&'static str, u32)],
) -> Result<Vec<(&'static str, MapData)>, DatapathError> {
    let mut resized = Vec::new();
    for &(name, size) in sizes {
        let pin = pin_dir.join(name);
        let Ok(old) = MapData::from_pin(&pin) else {
            continue;
        };
        let old_size = old.info().map(|i| i.max_entries()).unwrap_or(size);
        if old_size != size {
            info!(map = name, from = old_size, to = size, "resizing a map");
            // The old map lives on in `old` (and in the programs still attached) until what
            // it holds is carried over; the loader then creates and pins the new size.
            fs::remove_file(&pin).map_err(fs_err(&pin))?;
            resized.push((name, old));
        }
    }
    Ok(resized)
}

/// The socket filter the node's iptables run, pinned afresh: a rule holds the program it was
/// made with, so the agent's iptables rules are rewritten after this.
fn pin_egress_after_dnat(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<(), DatapathError> {
    let name = PROG_EGRESS_AFTER_DNAT;
    let filter: &mut SocketFilter = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })?;
    filter
        .load()
        .map_err(|source| DatapathError::Program { name, source })?;
    let pinned = egress_after_dnat_pin(pin_dir);
    if let Some(dir) = pinned.parent() {
        fs::create_dir_all(dir).map_err(fs_err(dir))?;
    }
    match fs::remove_file(&pinned) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fs_err(&pinned)(e)),
    }
    filter.pin(&pinned).map_err(|e| DatapathError::Link {
        path: pinned.display().to_string(),
        message: e.to_string(),
    })
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

impl Datapath for BpfDatapath {
    fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        self.attach_hook(ifname, hook)
    }

    fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        self.detach_hook(ifname, hook)
    }

    fn pinned_links(&self) -> Result<Vec<(String, Hook)>, DatapathError> {
        self.attachments_made()
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
        let map: PerCpuHashMap<_, CounterKey, CounterValue> =
            PerCpuHashMap::try_from(map).map_err(map_err(COUNTERS))?;
        pins::counters_of(&map)
    }

    fn remove_counters(
        &mut self,
        ifindex: u32,
    ) -> Result<Vec<(CounterKey, CounterValue)>, DatapathError> {
        let removed: Vec<(CounterKey, CounterValue)> = self
            .counters()?
            .into_iter()
            .filter(|(k, _)| k.ifindex == ifindex)
            .collect();
        let mut map: PerCpuHashMap<_, CounterKey, CounterValue> = self.typed_mut(COUNTERS)?;
        for (key, _) in &removed {
            // A concurrent LRU eviction may beat us to it; that is fine.
            let _ = map.remove(key);
        }
        let mut verdicts: PerCpuHashMap<_, VerdictKey, u64> = self.typed_mut(VERDICTS)?;
        let keys: Vec<VerdictKey> = verdicts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for key in keys {
            let _ = verdicts.remove(&key);
        }
        let mut rate: PerCpuHashMap<_, u32, FlowRate> = self.typed_mut(FLOW_RATE)?;
        let _ = rate.remove(&ifindex);
        Ok(removed)
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

    fn table_allows(
        &self,
        table: u32,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Result<bool, DatapathError> {
        use weir_common::policy::{PEER_KEY_BITS, PORTSET_EMPTY, PORT_KEY_BITS};
        // A lookup in an LPM trie from user space matches the longest prefix, as in the kernel.
        let peer_key = Key::new(PEER_KEY_BITS, PeerKey::new(table, peer.octets()));
        let portset = match self.peers_map()?.get(&peer_key, 0) {
            Ok(value) => value.portset,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(source) => return Err(map_err(POLICY_PEERS)(source)),
        };
        if portset == PORTSET_EMPTY {
            return Ok(false);
        }
        let port_key = Key::new(PORT_KEY_BITS, PortKey::new(portset, proto, port));
        match self.ports_map()?.get(&port_key, 0) {
            Ok(value) => Ok(value.allow != 0),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(map_err(POLICY_PORTS)(source)),
        }
    }

    fn set_port(&mut self, entry: PortEntry, allow: bool) -> Result<(), DatapathError> {
        let value = PortValue {
            allow: u32::from(allow),
        };
        self.ports_map_mut()?
            .insert(&port_key(entry), value, 0)
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
        // Stale ones out first: a full map must make room for the new ones.
        for key in stale {
            absent_ok(HOST_IPS, map.remove(&key))?;
        }
        for ip_be in &want {
            map.insert(EndpointKey { ip_be: *ip_be }, 1, 0)
                .map_err(map_err(HOST_IPS))?;
        }
        Ok(())
    }

    fn set_host_ports(&mut self, ports: &[HostPortKey]) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(HOST_PORTS)
            .ok_or(missing_map(HOST_PORTS))?;
        let mut map: HashMap<_, HostPortKey, u32> =
            HashMap::try_from(map).map_err(map_err(HOST_PORTS))?;
        let want: std::collections::BTreeSet<HostPortKey> = ports.iter().copied().collect();
        let stale: Vec<HostPortKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for key in stale {
            absent_ok(HOST_PORTS, map.remove(&key))?;
        }
        for key in &want {
            map.insert(*key, 1, 0).map_err(map_err(HOST_PORTS))?;
        }
        Ok(())
    }

    fn policy_capacity(&self) -> (usize, usize) {
        let size = |name| {
            self.ebpf
                .map(name)
                .and_then(|m| match m {
                    Map::LpmTrie(data) => data.info().ok(),
                    _ => None,
                })
                .map_or(0, |info| info.max_entries() as usize)
        };
        (size(POLICY_PEERS), size(POLICY_PORTS))
    }

    fn set_remotes(&mut self, remotes: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), DatapathError> {
        let want: BTreeMap<Ipv4Net, Ipv4Addr> = remotes.iter().copied().collect();
        let stale: Vec<Ipv4Net> = self
            .remotes()?
            .into_iter()
            .map(|(net, _)| net)
            .filter(|net| !want.contains_key(net))
            .collect();
        let map = self.ebpf.map_mut(REMOTES).ok_or(missing_map(REMOTES))?;
        let mut map: LpmTrie<_, RemoteKey, RemoteNode> =
            LpmTrie::try_from(map).map_err(map_err(REMOTES))?;
        for (net, node) in &want {
            let value = RemoteNode {
                node_ip_be: u32::from(*node).to_be(),
                _reserved: 0,
            };
            map.insert(&remote_key(*net), value, 0)
                .map_err(map_err(REMOTES))?;
        }
        for net in stale {
            absent_ok(REMOTES, map.remove(&remote_key(net)))?;
        }
        Ok(())
    }

    fn remotes(&self) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, DatapathError> {
        let map = self.ebpf.map(REMOTES).ok_or(missing_map(REMOTES))?;
        let map: LpmTrie<_, RemoteKey, RemoteNode> =
            LpmTrie::try_from(map).map_err(map_err(REMOTES))?;
        pins::remotes_of(&map)
    }
}

fn remote_key(net: Ipv4Net) -> Key<RemoteKey> {
    Key::new(
        u32::from(net.prefix_len()),
        RemoteKey {
            ip: net.network().octets(),
        },
    )
}
