//! The real datapath: the embedded eBPF object, loaded with its maps pinned under bpffs.

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
        Array, HashMap, Map, MapData, MapError, PerCpuHashMap,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
        Link as _, LinkOrder, ProgramError, SchedClassifier, SocketFilter, TcAttachType,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use tracing::{debug, info};
use weir_common::{
    maps::{
        CONFIG, COUNTERS, CT_ANY, CT_TCP, ENDPOINTS, HOST_IPS, POLICY_PEERS, POLICY_PORTS,
        PROG_EGRESS_AFTER_DNAT, PROG_FROM_HOST, PROG_FROM_POD, PROG_FROM_TUNNEL, PROG_FROM_UPLINK,
        REMOTES,
    },
    CounterKey, CounterValue, CtKey, CtValue, EndpointInfo, EndpointKey, NodeConfig, PeerKey,
    PeerValue, PortKey, PortValue, RemoteKey, RemoteNode,
};

use super::{AttachMode, Attachments, Datapath, DatapathError, Hook, PeerEntry, PortEntry};
use crate::config::ConntrackSizes;

/// The eBPF object built by build.rs from `bpf-progs`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-bpf.o"));

pub struct BpfDatapath {
    ebpf: Ebpf,
    attachments: Attachments,
    /// The mode attachments are made with; `None` until `Auto` has been probed.
    resolved: Option<AttachMode>,
}

fn fs_err(path: &Path) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Fs {
        path: path.display().to_string(),
        source,
    }
}

/// The clsact filter slot of every hook: a fixed priority and handle, so a restarted agent finds
/// and replaces its own filter instead of adding a second one. Priority 1 runs before filters
/// other software adds at the kernel's default priorities.
const FILTER_PRIORITY: u16 = 1;
const FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);

/// The file name of an attachment: `<hook>:<ifname>`, with dots (which bpffs rejects in names)
/// as `%`.
fn attachment_file(ifname: &str, hook: Hook) -> String {
    format!("{}:{}", hook.pin_suffix(), ifname.replace('.', "%"))
}

/// Attachments named by the files of `dir` (missing is empty).
fn list_attachments(dir: &Path) -> Result<Vec<(String, Hook)>, DatapathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fs_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let file = entry.map_err(fs_err(dir))?.file_name();
        let file = file.to_string_lossy();
        let Some((suffix, ifname)) = file.split_once(':') else {
            continue;
        };
        if let Some(hook) = Hook::ALL.into_iter().find(|h| h.pin_suffix() == suffix) {
            out.push((ifname.replace('%', "."), hook));
        }
    }
    Ok(out)
}

/// Every interface that has an attachment of either mode, without loading anything (for
/// `weir-agent cleanup`).
pub fn attached_interfaces(attachments: &Attachments) -> Result<Vec<String>, DatapathError> {
    let mut names: Vec<String> = list_attachments(&attachments.link_pin_dir)?
        .into_iter()
        .chain(list_attachments(&attachments.filter_dir)?)
        .map(|(ifname, _)| ifname)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Remove Weir's clsact filter of `hook` on `ifname` if a marker says there is one (also for
/// `weir-agent cleanup`, which loads nothing).
pub fn detach_clsact(
    attachments: &Attachments,
    ifname: &str,
    hook: Hook,
) -> Result<(), DatapathError> {
    let marker = attachments.filter_dir.join(attachment_file(ifname, hook));
    if !marker.exists() {
        return Ok(());
    }
    let (_, attach_type) = hook_program(hook);
    match SchedClassifierLink::attached(ifname, attach_type, FILTER_PRIORITY, FILTER_HANDLE, None) {
        Ok(link) => match link.detach() {
            Ok(()) => {}
            // Gone already: with the interface, or never made (a crash after the marker).
            Err(e)
                if matches!(
                    os_error(&e),
                    Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
                ) => {}
            Err(e) => {
                return Err(DatapathError::Filter {
                    what: attachment_file(ifname, hook),
                    message: format!("removing: {e}"),
                })
            }
        },
        // No such interface: its filters went with it.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
        Err(e) => {
            return Err(DatapathError::Filter {
                what: attachment_file(ifname, hook),
                message: e.to_string(),
            })
        }
    }
    remove_if_present(&marker)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<bool, DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fs_err(path)(e)),
    }
}

/// The errno behind an aya program error, where there is one.
fn os_error(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::SyscallError(SyscallError { io_error, .. })
        | ProgramError::IOError(io_error)
        | ProgramError::TcError(TcError::IoError(io_error)) => io_error.raw_os_error(),
        ProgramError::TcError(TcError::NetlinkError(e)) | ProgramError::NetlinkError(e) => {
            e.raw_os_error()
        }
        _ => None,
    }
}

/// What a kernel without tcx (before 6.6) answers to a tcx link: an unknown attach type.
/// `ENOTSUPP` (524) is the kernel-internal code some paths leak.
fn is_tcx_unsupported(err: &ProgramError) -> bool {
    matches!(os_error(err), Some(libc::EINVAL | libc::EOPNOTSUPP | 524))
}

/// Where the iptables socket filter is pinned, under the datapath's pin directory.
pub fn egress_after_dnat_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join("progs").join(PROG_EGRESS_AFTER_DNAT)
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
        let mut resized = Vec::new();
        for (name, size) in sizes {
            let pin = pin_dir.join(name);
            let Ok(old) = MapData::from_pin(&pin) else {
                continue;
            };
            let old_size = old.info().map(|i| i.max_entries()).unwrap_or(size);
            if old_size != size {
                info!(map = name, from = old_size, to = size, "resizing a map");
                // The old map lives on in `old` (and in the programs still attached) until what
                // it holds is carried over below; the loader then creates and pins the new size.
                fs::remove_file(&pin).map_err(fs_err(&pin))?;
                resized.push((name, old));
            }
        }
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for (name, size) in sizes {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader.load(BPF_OBJECT)?;
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
        // The socket filter the node's iptables run, pinned afresh: a rule holds the program it
        // was made with, so the agent's iptables rules are rewritten after this.
        let filter: &mut SocketFilter = ebpf
            .program_mut(PROG_EGRESS_AFTER_DNAT)
            .ok_or(DatapathError::Program {
                name: PROG_EGRESS_AFTER_DNAT,
                source: ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: PROG_EGRESS_AFTER_DNAT,
                source,
            })?;
        filter.load().map_err(|source| DatapathError::Program {
            name: PROG_EGRESS_AFTER_DNAT,
            source,
        })?;
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
        })?;
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

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.attachments
            .link_pin_dir
            .join(attachment_file(ifname, hook))
    }

    fn filter_marker(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.attachments
            .filter_dir
            .join(attachment_file(ifname, hook))
    }

    fn attach_tcx(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
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
        // A clsact filter of an earlier agent: tcx runs first, so it has judged nothing since
        // the link went in.
        self.detach_clsact(ifname, hook)
    }

    fn attach_clsact(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let filter_err = |message: String| DatapathError::Filter {
            what: attachment_file(ifname, hook),
            message,
        };
        // The marker first: a crash between the two leaves a marker without a filter, which
        // detach handles, never a filter nobody knows of.
        let marker = self.filter_marker(ifname, hook);
        let existed = marker.exists();
        if !existed {
            fs::write(&marker, b"").map_err(fs_err(&marker))?;
        }
        match tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(filter_err(format!("adding the clsact qdisc: {e}"))),
        }
        let (name, attach_type) = hook_program(hook);
        let prog = program(&mut self.ebpf, name)?;
        let prog_err = |source| DatapathError::Program { name, source };
        // Our filter already there (an earlier agent's): change its program in place, which
        // cls_bpf does atomically. Otherwise create it, exclusively at our slot. The marker says
        // which to try first, so a new interface costs one request per hook.
        let ours = || {
            SchedClassifierLink::attached(ifname, attach_type, FILTER_PRIORITY, FILTER_HANDLE, None)
                .map_err(|e| filter_err(e.to_string()))
        };
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
                classid: None,
            })
        };
        let id = if existed {
            match prog.attach_to_link(ours()?) {
                Err(e) if os_error(&e) == Some(libc::ENOENT) => {
                    prog.attach_with_options(ifname, attach_type, options())
                }
                other => other,
            }
        } else {
            match prog.attach_with_options(ifname, attach_type, options()) {
                Err(e) if os_error(&e) == Some(libc::EEXIST) => prog.attach_to_link(ours()?),
                other => other,
            }
        }
        .map_err(prog_err)?;
        debug!(ifname, ?hook, replaced = existed, "clsact filter in place");
        // The filter must outlive this handle (dropping it would delete the filter): it stays
        // until detach or until the interface goes.
        std::mem::forget(prog.take_link(id).map_err(prog_err)?);
        // A pinned tcx link of an earlier agent: it ran first until now; without it, the filter
        // judges.
        remove_if_present(&self.link_pin(ifname, hook))?;
        Ok(())
    }

    fn detach_clsact(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        detach_clsact(&self.attachments, ifname, hook)
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
        Hook::FromHost => (PROG_FROM_HOST, TcAttachType::Egress),
        Hook::FromTunnel => (PROG_FROM_TUNNEL, TcAttachType::Ingress),
        Hook::FromUplink => (PROG_FROM_UPLINK, TcAttachType::Ingress),
    }
}

impl Datapath for BpfDatapath {
    fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        if self.attachments.mode == AttachMode::Auto && hook == Hook::FromPod {
            return self.attach_clsact(ifname, hook);
        }
        match self.resolved {
            Some(AttachMode::Clsact) => self.attach_clsact(ifname, hook),
            Some(_) => self.attach_tcx(ifname, hook),
            // Auto, first attach: it is the probe.
            None => match self.attach_tcx(ifname, hook) {
                Ok(()) => {
                    info!(mode = %AttachMode::Tcx, "tc attach mode (probed: the kernel has tcx)");
                    self.resolved = Some(AttachMode::Tcx);
                    Ok(())
                }
                Err(DatapathError::Program { source, .. }) if is_tcx_unsupported(&source) => {
                    info!(mode = %AttachMode::Clsact, error = %source, "tc attach mode (probed: no tcx in this kernel)");
                    self.resolved = Some(AttachMode::Clsact);
                    self.attach_clsact(ifname, hook)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        remove_if_present(&self.link_pin(ifname, hook))?;
        self.detach_clsact(ifname, hook)
    }

    fn pinned_links(&self) -> Result<Vec<(String, Hook)>, DatapathError> {
        let mut out = list_attachments(&self.attachments.link_pin_dir)?;
        for found in list_attachments(&self.attachments.filter_dir)? {
            if !out.contains(&found) {
                out.push(found);
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
        let mut out = Vec::new();
        for item in map.iter() {
            let (key, value) = item.map_err(map_err(REMOTES))?;
            let len = key.prefix_len().min(32) as u8;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data().ip), len)
                .expect("prefix length clamped to 32");
            out.push((net, Ipv4Addr::from(u32::from_be(value.node_ip_be))));
        }
        Ok(out)
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
