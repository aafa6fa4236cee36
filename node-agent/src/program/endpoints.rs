//! The endpoint registry: which pod attachment owns which IP, veth and pinned links, kept on disk so
//! a restarted agent can adopt what the last one programmed.
//!
//! Every operation keeps the registry, the eBPF maps and the pinned links in step: an ADD that fails
//! half-way undoes what it did, a DEL removes all three and succeeds when nothing is left.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weir_agent_api::{parse_mac, AttachmentId, Endpoint};
use weir_common::{
    endpoint::{ENDPOINT_F_DIRECT, ENDPOINT_F_READY},
    policy::TABLE_FAIL_CLOSED,
    CounterKey, CounterValue, EndpointInfo,
};

use crate::kernel::datapath::{Datapath, DatapathError, Hook};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid endpoint: {0}")]
    Invalid(String),
    #[error("IP {ip} already belongs to container {owner}")]
    IpInUse { ip: Ipv4Addr, owner: String },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("endpoint registry {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub endpoint: Endpoint,
    /// Small stable number of the endpoint on this node (counters, later policy).
    pub endpoint_id: u32,
}

/// The rule tables an endpoint's traffic is judged by: (ingress, egress).
pub type Tables = (u32, u32);

/// Until the policy of an endpoint is known it is isolated both ways (fail closed).
pub const TABLES_UNKNOWN: Tables = (TABLE_FAIL_CLOSED, TABLE_FAIL_CLOSED);

impl EndpointRecord {
    fn info(&self, (ingress_table, egress_table): Tables) -> Result<EndpointInfo, EndpointError> {
        let mac =
            |s: &str| parse_mac(s).ok_or_else(|| EndpointError::Invalid(format!("bad MAC {s:?}")));
        Ok(EndpointInfo {
            host_ifindex: self.endpoint.host_ifindex,
            endpoint_id: self.endpoint_id,
            pod_mac: mac(&self.endpoint.pod_mac)?,
            host_mac: mac(&self.endpoint.host_mac)?,
            flags: if self.endpoint.direct_delivery() {
                ENDPOINT_F_READY | ENDPOINT_F_DIRECT
            } else {
                ENDPOINT_F_READY
            },
            ingress_table,
            egress_table,
        })
    }
}

/// What [`Endpoints::reconcile`] did at start-up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: Vec<AttachmentId>,
    pub removed: Vec<AttachmentId>,
    pub stale_map_entries: Vec<Ipv4Addr>,
    pub stale_links: Vec<String>,
}

pub struct Endpoints<D> {
    datapath: D,
    dir: PathBuf,
    records: BTreeMap<AttachmentId, EndpointRecord>,
    /// The rule tables each endpoint's map entry points at now.
    tables: BTreeMap<Ipv4Addr, Tables>,
    /// The packet counters of endpoints removed so far.
    retired: Arc<RetiredCounters>,
}

/// The packet counters of removed endpoints, by (direction, reason), summed: added to the live
/// ones so that totals never go backwards when an endpoint leaves (for this agent's lifetime).
#[derive(Debug, Default)]
pub struct RetiredCounters(Mutex<BTreeMap<(u8, u16), CounterValue>>);

impl RetiredCounters {
    fn retire(&self, counters: &[(CounterKey, CounterValue)]) {
        let mut totals = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value) in counters {
            let total = totals.entry((key.direction, key.reason)).or_default();
            total.packets += value.packets;
            total.bytes += value.bytes;
        }
    }

    /// Every (direction, reason) total, as counter rows on interface 0.
    pub fn rows(&self) -> Vec<(CounterKey, CounterValue)> {
        let totals = self.0.lock().unwrap_or_else(|e| e.into_inner());
        totals
            .iter()
            .map(|(&(direction, reason), &value)| {
                (
                    CounterKey {
                        ifindex: 0,
                        direction,
                        _pad: 0,
                        reason,
                    },
                    value,
                )
            })
            .collect()
    }
}

fn store_err(path: &Path) -> impl FnOnce(io::Error) -> EndpointError + '_ {
    move |source| EndpointError::Store {
        path: path.display().to_string(),
        source,
    }
}

impl<D: Datapath> Endpoints<D> {
    /// Open the registry in `dir`, reading every record an earlier agent left there.
    pub fn open(datapath: D, dir: &Path) -> Result<Self, EndpointError> {
        fs::create_dir_all(dir).map_err(store_err(dir))?;
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(store_err(dir))? {
            let path = entry.map_err(store_err(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<EndpointRecord>(&bytes).ok());
            match parsed {
                Some(record) => {
                    records.insert(record.endpoint.attachment.clone(), record);
                }
                None => {
                    warn!(path = %path.display(), "unreadable endpoint record; removing it");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(Self {
            datapath,
            dir: dir.to_owned(),
            records,
            tables: BTreeMap::new(),
            retired: Arc::default(),
        })
    }

    /// Share the totals of removed endpoints' counters into `retired` (the metrics' view).
    pub fn set_retired(&mut self, retired: Arc<RetiredCounters>) {
        self.retired = retired;
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
    }

    pub fn get(&self, attachment: &AttachmentId) -> Option<&EndpointRecord> {
        self.records.get(attachment)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.records.values()
    }

    fn record_path(&self, endpoint: &Endpoint) -> PathBuf {
        // The host veth name is unique per attachment and safe as a file name.
        self.dir.join(format!("{}.json", endpoint.host_ifname))
    }

    fn free_id(&self) -> u32 {
        let used: BTreeSet<u32> = self.records.values().map(|r| r.endpoint_id).collect();
        (1..).find(|id| !used.contains(id)).unwrap_or(u32::MAX)
    }

    /// The tables an endpoint is judged by now.
    pub fn tables(&self, ip: Ipv4Addr) -> Option<Tables> {
        self.tables.get(&ip).copied()
    }

    /// Point an endpoint's map entry at other rule tables (one atomic map update).
    pub fn set_tables(&mut self, ip: Ipv4Addr, tables: Tables) -> Result<(), EndpointError> {
        if self.tables.get(&ip) == Some(&tables) {
            return Ok(());
        }
        let Some(record) = self.records.values().find(|r| r.endpoint.ip == ip) else {
            return Ok(());
        };
        self.datapath.set_endpoint(ip, record.info(tables)?)?;
        self.tables.insert(ip, tables);
        Ok(())
    }

    /// Program an endpoint: attach its programs, publish it in the endpoint map with its rule
    /// tables, record it. Returns once the datapath is ready for it. Idempotent for the same
    /// attachment.
    pub fn add(&mut self, endpoint: Endpoint, tables: Tables) -> Result<(), EndpointError> {
        if endpoint.host_ifname.is_empty()
            || endpoint.host_ifname.len() > 15
            || endpoint.host_ifname.contains('/')
        {
            return Err(EndpointError::Invalid(format!(
                "bad host interface name {:?}",
                endpoint.host_ifname
            )));
        }
        if let Some(owner) = self
            .records
            .values()
            .find(|r| r.endpoint.ip == endpoint.ip && r.endpoint.attachment != endpoint.attachment)
        {
            return Err(EndpointError::IpInUse {
                ip: endpoint.ip,
                owner: owner.endpoint.attachment.container_id.clone(),
            });
        }
        let endpoint_id = match self.records.get(&endpoint.attachment) {
            Some(old) if old.endpoint == endpoint => {
                let ip = old.endpoint.ip;
                return self.set_tables(ip, tables);
            }
            Some(old) => {
                let id = old.endpoint_id;
                self.del(&endpoint.attachment)?;
                id
            }
            None => self.free_id(),
        };
        let record = EndpointRecord {
            endpoint,
            endpoint_id,
        };
        let info = record.info(tables)?;
        let ep = &record.endpoint;

        let mut attached = Vec::new();
        let result = (|| -> Result<(), EndpointError> {
            for hook in Hook::ALL_ENDPOINT {
                self.datapath.attach(&ep.host_ifname, hook)?;
                attached.push(hook);
            }
            self.datapath.set_endpoint(ep.ip, info)?;
            write_atomic(
                &self.record_path(ep),
                &serde_json::to_vec_pretty(&record).unwrap_or_default(),
            )
        })();
        if let Err(e) = result {
            let _ = self.datapath.remove_endpoint(ep.ip);
            for hook in attached {
                let _ = self.datapath.detach(&ep.host_ifname, hook);
            }
            let _ = fs::remove_file(self.record_path(ep));
            return Err(e);
        }
        info!(container = %ep.attachment.container_id, ip = %ep.ip, veth = %ep.host_ifname, "endpoint programmed");
        self.tables.insert(ep.ip, tables);
        self.records
            .insert(record.endpoint.attachment.clone(), record);
        Ok(())
    }

    /// Remove everything of an endpoint. Returns whether it existed.
    pub fn del(&mut self, attachment: &AttachmentId) -> Result<bool, EndpointError> {
        let Some(record) = self.records.get(attachment).cloned() else {
            return Ok(false);
        };
        let ep = &record.endpoint;
        // The map entry first: from then on nothing is delivered to the IP, even before the
        // veth is gone, so the IP can be handed out again safely.
        self.datapath.remove_endpoint(ep.ip)?;
        for hook in Hook::ALL_ENDPOINT {
            self.datapath.detach(&ep.host_ifname, hook)?;
        }
        let counters = self.datapath.remove_counters(ep.host_ifindex)?;
        self.retired.retire(&counters);
        let path = self.record_path(ep);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(&path)(e)),
        }
        self.records.remove(attachment);
        self.tables.remove(&ep.ip);
        info!(container = %attachment.container_id, ip = %ep.ip, "endpoint removed");
        Ok(true)
    }

    /// Remove every endpoint whose attachment is not in `valid`.
    pub fn gc(&mut self, valid: &[AttachmentId]) -> Result<Vec<AttachmentId>, EndpointError> {
        let valid: BTreeSet<&AttachmentId> = valid.iter().collect();
        let stale: Vec<AttachmentId> = self
            .records
            .keys()
            .filter(|a| !valid.contains(a))
            .cloned()
            .collect();
        for attachment in &stale {
            self.del(attachment)?;
        }
        Ok(stale)
    }

    /// Start-up: adopt every recorded endpoint whose veth still exists (re-attaching the current
    /// programs atomically over the pinned links, so established flows never notice), remove the
    /// ones whose veth is gone, and clear map entries and pins that no record explains.
    pub fn reconcile(
        &mut self,
        veth_alive: impl Fn(&Endpoint) -> bool,
        keep_links: &[&str],
    ) -> Result<Reconciled, EndpointError> {
        let mut done = Reconciled::default();
        // Adopted endpoints keep judging by the tables they point at until the policy is
        // recompiled; one without an entry is isolated until then.
        let in_map: BTreeMap<Ipv4Addr, Tables> = self
            .datapath
            .endpoints()?
            .into_iter()
            .map(|(ip, info)| (ip, (info.ingress_table, info.egress_table)))
            .collect();
        let all: Vec<EndpointRecord> = self.records.values().cloned().collect();
        for record in all {
            let ep = &record.endpoint;
            if veth_alive(ep) {
                for hook in Hook::ALL_ENDPOINT {
                    self.datapath.attach(&ep.host_ifname, hook)?;
                }
                let tables = in_map.get(&ep.ip).copied().unwrap_or(TABLES_UNKNOWN);
                self.datapath.set_endpoint(ep.ip, record.info(tables)?)?;
                self.tables.insert(ep.ip, tables);
                done.adopted.push(ep.attachment.clone());
            } else {
                self.del(&ep.attachment)?;
                done.removed.push(ep.attachment.clone());
            }
        }
        let known_ips: BTreeSet<Ipv4Addr> = self.records.values().map(|r| r.endpoint.ip).collect();
        for (ip, _) in self.datapath.endpoints()? {
            if !known_ips.contains(&ip) {
                self.datapath.remove_endpoint(ip)?;
                done.stale_map_entries.push(ip);
            }
        }
        let known_ifs: BTreeSet<&str> = self
            .records
            .values()
            .map(|r| r.endpoint.host_ifname.as_str())
            .chain(keep_links.iter().copied())
            .collect();
        for (ifname, hook) in self.datapath.pinned_links()? {
            if !known_ifs.contains(ifname.as_str()) {
                self.datapath.detach(&ifname, hook)?;
                done.stale_links
                    .push(format!("{}:{ifname}", hook.pin_suffix()));
            }
        }
        Ok(done)
    }
}

/// Write a file so that readers see either the old or the new content, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EndpointError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(store_err(&tmp))?;
    fs::rename(&tmp, path).map_err(store_err(path))
}

/// The pod (`namespace/name`) behind each host-side interface index, from the endpoint records
/// in `endpoints_dir`, read without the agent (for `weir-agent counters`).
pub fn pod_names(endpoints_dir: &Path) -> BTreeMap<u32, String> {
    let Ok(entries) = fs::read_dir(endpoints_dir) else {
        return BTreeMap::new();
    };
    let mut pods = BTreeMap::new();
    for entry in entries.flatten() {
        let record = fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).ok());
        if let Some(record) = record {
            let ep = record.endpoint;
            if let (Some(ns), Some(name)) = (ep.pod_namespace, ep.pod_name) {
                pods.insert(ep.host_ifindex, format!("{ns}/{name}"));
            }
        }
    }
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::datapath::fake::FakeDatapath;

    fn endpoint(container: &str, ip: [u8; 4], veth: &str) -> Endpoint {
        Endpoint {
            attachment: AttachmentId {
                container_id: container.into(),
                ifname: "eth0".into(),
            },
            netns: format!("/run/netns/{container}"),
            pod_namespace: Some("default".into()),
            pod_name: Some(container.into()),
            ip: Ipv4Addr::from(ip),
            pod_mac: "0a:58:00:00:00:01".into(),
            host_ifname: veth.into(),
            host_ifindex: 7,
            host_mac: "ee:ee:ee:ee:ee:ee".into(),
            port_mappings: Vec::new(),
            ingress_shaped: Some(false),
        }
    }

    fn open(dir: &Path) -> Endpoints<FakeDatapath> {
        Endpoints::open(FakeDatapath::default(), dir).unwrap()
    }

    #[test]
    fn add_programs_links_map_and_record_and_del_removes_all_three() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        let ep = endpoint("a", [10, 244, 1, 2], "weir0123456789a");
        eps.add(ep.clone(), (0, 0)).unwrap();
        // One program per veth: its ingress (what the pod sends).
        assert_eq!(eps.datapath().links.len(), 1);
        let info = eps.datapath().endpoints[&ep.ip];
        assert_eq!(info.pod_mac, [0x0a, 0x58, 0, 0, 0, 1]);
        assert_eq!(info.flags & ENDPOINT_F_READY, ENDPOINT_F_READY);
        assert!(dir.path().join("weir0123456789a.json").exists());

        assert!(eps.del(&ep.attachment).unwrap());
        assert!(eps.datapath().links.is_empty());
        assert!(eps.datapath().endpoints.is_empty());
        assert!(!dir.path().join("weir0123456789a.json").exists());
        assert!(!eps.del(&ep.attachment).unwrap(), "second DEL is a no-op");
    }

    /// Only a pod known to be unshaped gets packets past its host veth: a shaped one, and one
    /// whose plugin or record does not say, keep every packet crossing the veth's qdisc.
    #[test]
    fn direct_delivery_only_for_pods_known_to_be_unshaped() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        for (last, shaped, direct) in [
            (2, Some(false), true),
            (3, Some(true), false),
            (4, None, false),
        ] {
            let ep = Endpoint {
                ingress_shaped: shaped,
                ..endpoint(
                    &format!("c{last}"),
                    [10, 244, 1, last],
                    &format!("weir012345678{last}"),
                )
            };
            eps.add(ep.clone(), (0, 0)).unwrap();
            let flags = eps.datapath().endpoints[&ep.ip].flags;
            assert_eq!(
                flags & ENDPOINT_F_DIRECT != 0,
                direct,
                "ingress_shaped {shaped:?}"
            );
            assert_ne!(flags & ENDPOINT_F_READY, 0);
        }
    }

    #[test]
    fn failed_attach_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        eps.datapath_mut().fail_next_attach = true;
        assert!(eps
            .add(endpoint("a", [10, 244, 1, 2], "weir0123456789a"), (0, 0))
            .is_err());
        assert!(eps.is_empty());
        assert!(eps.datapath().links.is_empty());
        assert!(eps.datapath().endpoints.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_ip_cannot_belong_to_two_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        eps.add(endpoint("a", [10, 244, 1, 2], "weir0123456789a"), (0, 0))
            .unwrap();
        let err = eps
            .add(endpoint("b", [10, 244, 1, 2], "weir0123456789b"), (0, 0))
            .unwrap_err();
        assert!(matches!(err, EndpointError::IpInUse { .. }), "{err}");
        assert_eq!(eps.len(), 1);
    }

    #[test]
    fn bad_macs_are_rejected_before_anything_is_programmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        let mut ep = endpoint("a", [10, 244, 1, 2], "weir0123456789a");
        ep.pod_mac = "nope".into();
        assert!(matches!(
            eps.add(ep, (0, 0)).unwrap_err(),
            EndpointError::Invalid(_)
        ));
        assert!(eps.datapath().links.is_empty());
    }

    #[test]
    fn registry_survives_reopen_and_reconcile_adopts_live_and_drops_dead() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        eps.add(endpoint("live", [10, 244, 1, 2], "weirlive0000000"), (0, 0))
            .unwrap();
        eps.add(endpoint("dead", [10, 244, 1, 3], "weirdead0000000"), (0, 0))
            .unwrap();
        // A restarted agent sees the old pins and map entries (here: carried over in the fake),
        // plus junk nobody recorded.
        let mut datapath = std::mem::take(eps.datapath_mut());
        datapath.endpoints.insert(
            Ipv4Addr::new(10, 244, 1, 99),
            datapath.endpoints[&Ipv4Addr::new(10, 244, 1, 2)],
        );
        datapath
            .links
            .insert(("weirjunk0000000".into(), "from-pod".into()));
        datapath.links.insert(("weir0".into(), "from-host".into()));
        drop(eps);

        let mut eps = Endpoints::open(datapath, dir.path()).unwrap();
        assert_eq!(eps.len(), 2);
        let done = eps
            .reconcile(|ep| ep.host_ifname == "weirlive0000000", &["weir0"])
            .unwrap();
        assert_eq!(done.adopted.len(), 1);
        assert_eq!(done.removed[0].container_id, "dead");
        assert_eq!(done.stale_map_entries, [Ipv4Addr::new(10, 244, 1, 99)]);
        assert_eq!(done.stale_links, ["from-pod:weirjunk0000000"]);
        let ips: Vec<_> = eps.datapath().endpoints.keys().copied().collect();
        assert_eq!(ips, [Ipv4Addr::new(10, 244, 1, 2)]);
        assert!(eps
            .datapath()
            .links
            .contains(&("weir0".into(), "from-host".into())));
        assert_eq!(eps.datapath().links.len(), 2);
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        let keep = endpoint("keep", [10, 244, 1, 2], "weirkeep0000000");
        eps.add(keep.clone(), (0, 0)).unwrap();
        eps.add(endpoint("drop", [10, 244, 1, 3], "weirdrop0000000"), (0, 0))
            .unwrap();
        let removed = eps.gc(std::slice::from_ref(&keep.attachment)).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].container_id, "drop");
        assert!(eps.get(&keep.attachment).is_some());
    }

    #[test]
    fn endpoint_ids_are_reused_lowest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut eps = open(dir.path());
        eps.add(endpoint("a", [10, 244, 1, 2], "weira0000000000"), (0, 0))
            .unwrap();
        let b = endpoint("b", [10, 244, 1, 3], "weirb0000000000");
        eps.add(b.clone(), (0, 0)).unwrap();
        eps.add(endpoint("c", [10, 244, 1, 4], "weirc0000000000"), (0, 0))
            .unwrap();
        eps.del(&b.attachment).unwrap();
        eps.add(endpoint("d", [10, 244, 1, 5], "weird0000000000"), (0, 0))
            .unwrap();
        let ids: Vec<u32> = eps.records().map(|r| r.endpoint_id).collect();
        assert_eq!(
            ids.iter().copied().collect::<BTreeSet<_>>(),
            [1, 2, 3].into()
        );
    }
}
