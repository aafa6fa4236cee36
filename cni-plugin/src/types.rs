// SPDX-License-Identifier: Apache-2.0
//! The CNI wire types: spec versions, Weir's network configuration and the ADD result.
//!
//! The configuration is read field by field from the JSON object instead of through one derived
//! `Deserialize`, so that every rejection names the field and says what was expected (the runtime
//! shows `msg` to the operator), and so that unknown fields added by runtimes (`runtimeConfig`,
//! `args`, `capabilities`, …) are ignored. The result is kept version-neutral ([`CniResult`]) and
//! rendered per spec version only when it is printed ([`CniResult::to_json`]): 0.3.x and 0.4.0 put a
//! `"version": "4"` in every `ips` entry, 1.0.0 drops it, and 1.1.0 adds `mtu` to interfaces.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_agent_api::AttachmentId;

use crate::error::CniError;

/// A CNI spec version this plugin speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// The newest version: used for VERSION output and for errors when the caller's version is
    /// unknown.
    pub const LATEST: Self = Self::V1_1_0;
    /// Every version this plugin accepts, oldest first.
    pub const SUPPORTED: [Self; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn supports_gc_and_status(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results before 1.0.0 carry `"version"` in each `ips` entry.
    fn legacy_ips(self) -> bool {
        self < Self::V1_0_0
    }

    /// Interfaces carry `mtu` from 1.1.0 on.
    fn interface_mtu(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| CniError::IncompatibleVersion {
                requested: s.to_owned(),
            })
    }
}

/// The `dns` object of the configuration, passed through to the result unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Defaults for the optional configuration fields.
pub mod defaults {
    use std::net::Ipv4Addr;

    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
    pub const AGENT_SOCKET: &str = weir_agent_api::DEFAULT_SOCKET;
    pub const DATA_DIR: &str = "/var/lib/weir/ipam";
    pub const LOG_FILE: &str = "/var/log/weir/cni.log";
    pub const LOG_LEVEL: &str = "info";
    /// Used when `mtu` is absent and the host has no IPv4 default route.
    pub const MTU: u32 = 1500;
}

/// The plugin type this binary answers to.
pub const PLUGIN_TYPE: &str = "weir";

/// Smallest and largest MTU accepted (IPv4 minimum, veth maximum).
const MTU_RANGE: std::ops::RangeInclusive<u64> = 68..=65535;

/// Weir's network configuration (the plugin entry of the conflist), validated.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network name: the IPAM namespace, so it is a safe directory name.
    pub name: String,
    /// The node's pod range; addresses are allocated from it.
    pub pod_cidr: Ipv4Net,
    /// The pods' next hop, answered by the datapath on every host-side veth.
    pub gateway: Ipv4Addr,
    /// `None`: use the MTU of the host interface holding the IPv4 default route.
    pub mtu: Option<u32>,
    pub agent_socket: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    /// One of `error`, `warn`, `info`, `debug`, `trace`, `off`.
    pub log_level: String,
    pub dns: Dns,
    /// The raw `prevResult`, if the runtime sent one (CHECK needs it).
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC); `None` when absent.
    pub valid_attachments: Option<Vec<AttachmentId>>,
}

impl NetConf {
    /// Validate a configuration whose `cniVersion` has already been negotiated.
    ///
    /// Errors are [`CniError::InvalidConfig`] (code 7) naming the field.
    pub fn from_json(obj: &Map<String, Value>, cni_version: CniVersion) -> Result<Self, CniError> {
        let name = required_str(obj, "name")?;
        if !is_valid_network_name(name) {
            return Err(invalid(
                "name",
                format!(
                    "{name:?} is not a valid network name (start with a letter or digit, then letters, \
                     digits, '_', '.', '-')"
                ),
            ));
        }
        let plugin_type = required_str(obj, "type")?;
        if plugin_type != PLUGIN_TYPE {
            return Err(invalid(
                "type",
                format!("{plugin_type:?} is not {PLUGIN_TYPE:?}"),
            ));
        }

        let cidr_text = required_str(obj, "podCIDR")?;
        let parsed: Ipv4Net = cidr_text
            .parse()
            .map_err(|_| invalid("podCIDR", format!("{cidr_text:?} is not an IPv4 CIDR")))?;
        if parsed.prefix_len() > 30 {
            return Err(invalid(
                "podCIDR",
                format!("{cidr_text} leaves no room for pods (the prefix must be /30 or shorter)"),
            ));
        }
        let pod_cidr = parsed.trunc();

        let gateway = match optional_str(obj, "gateway")? {
            None => defaults::GATEWAY,
            Some(text) => text
                .parse()
                .map_err(|_| invalid("gateway", format!("{text:?} is not an IPv4 address")))?,
        };

        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(mtu) if MTU_RANGE.contains(&mtu) => u32::try_from(mtu).ok(),
                _ => {
                    return Err(invalid(
                        "mtu",
                        format!(
                            "{value} is not an integer between {} and {}",
                            MTU_RANGE.start(),
                            MTU_RANGE.end()
                        ),
                    ))
                }
            },
        };

        let agent_socket = absolute_path(obj, "agentSocket", defaults::AGENT_SOCKET)?;
        let data_dir = absolute_path(obj, "dataDir", defaults::DATA_DIR)?;
        if data_dir.parent().is_none() {
            return Err(invalid("dataDir", "must not be the root directory"));
        }
        let log_file = absolute_path(obj, "logFile", defaults::LOG_FILE)?;
        let log_level = optional_str(obj, "logLevel")?
            .unwrap_or(defaults::LOG_LEVEL)
            .to_ascii_lowercase();

        let dns = match obj.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(value @ Value::Object(_)) => {
                Dns::deserialize(value).map_err(|e| invalid("dns", e.to_string()))?
            }
            Some(_) => return Err(invalid("dns", "must be an object")),
        };

        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(_) => return Err(invalid("prevResult", "must be an object")),
        };

        let valid_attachments = match obj.get(VALID_ATTACHMENTS) {
            None | Some(Value::Null) => None,
            Some(value) => Some(parse_valid_attachments(value)?),
        };

        Ok(Self {
            cni_version,
            name: name.to_owned(),
            pod_cidr,
            gateway,
            mtu,
            agent_socket,
            data_dir,
            log_file,
            log_level,
            dns,
            prev_result,
            valid_attachments,
        })
    }

    /// The directory of the DEL spool that weir-agent drains at start-up: `<dataDir>/../del-queue`,
    /// computed lexically.
    pub fn del_queue_dir(&self) -> PathBuf {
        del_queue_dir(&self.data_dir)
    }
}

/// `<data_dir>/../del-queue`, computed lexically (`/var/lib/weir/ipam` → `/var/lib/weir/del-queue`).
pub fn del_queue_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.parent().unwrap_or(data_dir).join("del-queue")
}

/// The GC input field of CNI 1.1.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

fn parse_valid_attachments(value: &Value) -> Result<Vec<AttachmentId>, CniError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let list = Vec::<Wire>::deserialize(value).map_err(|e| {
        invalid(
            VALID_ATTACHMENTS,
            format!("expected a list of {{\"containerID\", \"ifname\"}} objects: {e}"),
        )
    })?;
    Ok(list
        .into_iter()
        .map(|w| AttachmentId {
            container_id: w.container_id,
            ifname: w.ifname,
        })
        .collect())
}

/// The spec's rule for network names (and container IDs): `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn invalid(field: &str, reason: impl Into<String>) -> CniError {
    CniError::InvalidConfig {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, CniError> {
    match optional_str(obj, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(field, "is required")),
    }
}

fn optional_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(field, format!("must be a string, not {other}"))),
    }
}

fn absolute_path(
    obj: &Map<String, Value>,
    field: &str,
    default: &str,
) -> Result<PathBuf, CniError> {
    let path = PathBuf::from(optional_str(obj, field)?.unwrap_or(default));
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(invalid(
            field,
            format!("{} is not an absolute path", path.display()),
        ))
    }
}

/// One interface of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// Only printed for 1.1.0 and later.
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; `None` for host interfaces.
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// A version-neutral CNI result: what ADD prints and what CHECK reads back from `prevResult`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct WireRoute {
    dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResult {
    #[serde(default)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<WireInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    dns: Dns,
}

impl CniResult {
    /// Render the result in the format of `version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        // Serializing plain structs of strings, numbers and addresses cannot fail; an empty object
        // is still the safest possible answer should that ever change.
        serde_json::to_value(self.wire(version)).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// Render the result in the format of `version`, keys in the spec's order.
    pub fn to_json_string(&self, version: CniVersion) -> String {
        serde_json::to_string(&self.wire(version)).unwrap_or_else(|_| "{}".to_owned())
    }

    fn wire(&self, version: CniVersion) -> WireResult {
        WireResult {
            cni_version: version.as_str().to_owned(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| WireInterface {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    mtu: i.mtu.filter(|_| version.interface_mtu()),
                    sandbox: i.sandbox.clone(),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| WireIp {
                    version: version.legacy_ips().then(|| {
                        match ip.address {
                            IpNet::V4(_) => "4",
                            IpNet::V6(_) => "6",
                        }
                        .to_owned()
                    }),
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| WireRoute {
                    dst: r.dst,
                    gw: r.gw,
                })
                .collect(),
            dns: self.dns.clone(),
        }
    }

    /// Read a `prevResult` of any supported version (0.3.0 – 1.1.0); fields this plugin does not
    /// use are ignored.
    pub fn from_prev_result(value: &Value) -> Result<Self, CniError> {
        let wire = WireResult::deserialize(value)
            .map_err(|e| invalid("prevResult", format!("not a CNI result: {e}")))?;
        Ok(Self {
            interfaces: wire
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    mtu: i.mtu,
                    sandbox: i.sandbox.filter(|s| !s.is_empty()),
                })
                .collect(),
            ips: wire
                .ips
                .into_iter()
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
                .collect(),
            routes: wire
                .routes
                .into_iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: r.gw,
                })
                .collect(),
            dns: wire.dns,
        })
    }
}

/// The VERSION answer.
pub fn version_info() -> Value {
    serde_json::json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::SUPPORTED.map(CniVersion::as_str),
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::CniVersion;

    /// The golden ADD result of every version (`tests/fixtures/result-<version>.json`).
    pub(crate) fn golden_result(version: CniVersion) -> &'static str {
        match version {
            CniVersion::V0_3_0 => include_str!("../tests/fixtures/result-0.3.0.json"),
            CniVersion::V0_3_1 => include_str!("../tests/fixtures/result-0.3.1.json"),
            CniVersion::V0_4_0 => include_str!("../tests/fixtures/result-0.4.0.json"),
            CniVersion::V1_0_0 => include_str!("../tests/fixtures/result-1.0.0.json"),
            CniVersion::V1_1_0 => include_str!("../tests/fixtures/result-1.1.0.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests_support::golden_result;

    /// The result every golden file renders.
    fn sample_result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "weir6ad2516ced2".into(),
                    mac: Some("ee:5f:1c:3a:9b:02".into()),
                    mtu: Some(1450),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:f4:01:05".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/cni-5e1f0c2a".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: None,
                search: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            },
        }
    }

    #[test]
    fn results_render_as_the_golden_json_of_each_version() {
        for version in CniVersion::SUPPORTED {
            let golden: Value = serde_json::from_str(golden_result(version)).unwrap();
            let rendered = sample_result().to_json(version);
            assert_eq!(rendered, golden, "{version}");
            let text: Value =
                serde_json::from_str(&sample_result().to_json_string(version)).unwrap();
            assert_eq!(text, golden, "{version} (string form)");
        }
    }

    #[test]
    fn legacy_versions_have_ip_version_and_no_mtu() {
        for version in CniVersion::SUPPORTED {
            let json = sample_result().to_json(version);
            let legacy = version < CniVersion::V1_0_0;
            assert_eq!(json["ips"][0].get("version").is_some(), legacy, "{version}");
            assert_eq!(
                json["interfaces"][1].get("mtu").is_some(),
                version == CniVersion::V1_1_0,
                "{version}"
            );
        }
    }

    #[test]
    fn golden_results_parse_back_as_prev_results() {
        for version in CniVersion::SUPPORTED {
            let golden: Value = serde_json::from_str(golden_result(version)).unwrap();
            let parsed = CniResult::from_prev_result(&golden).unwrap();
            let mut expected = sample_result();
            if version < CniVersion::V1_1_0 {
                for i in &mut expected.interfaces {
                    i.mtu = None;
                }
            }
            assert_eq!(parsed, expected, "{version}");
            // Parse → emit is the identity in the same version.
            assert_eq!(parsed.to_json(version), golden, "{version}");
        }
    }

    #[test]
    fn keys_are_printed_in_spec_order() {
        let text = sample_result().to_json_string(CniVersion::V1_1_0);
        let order: Vec<usize> = ["cniVersion", "interfaces", "ips", "routes", "dns"]
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn empty_dns_is_omitted() {
        let mut result = sample_result();
        result.dns = Dns::default();
        assert!(result.to_json(CniVersion::V1_0_0).get("dns").is_none());
    }

    #[test]
    fn prev_result_must_look_like_a_result() {
        let err = CniResult::from_prev_result(&serde_json::json!({"ips": [{"address": "nope"}]}))
            .unwrap_err();
        assert_eq!(err.code(), 7);
    }

    fn conf(json: &str) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_str(json).unwrap();
        NetConf::from_json(value.as_object().unwrap(), CniVersion::V1_0_0)
    }

    const MINIMAL: &str =
        r#"{"cniVersion":"1.0.0","name":"weir","type":"weir","podCIDR":"10.244.1.0/24"}"#;

    #[test]
    fn versions_parse_and_order() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        let err = "0.2.0".parse::<CniVersion>().unwrap_err();
        assert_eq!(err.code(), 1);
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_gc_and_status());
        assert!(CniVersion::V1_1_0.supports_gc_and_status());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = conf(MINIMAL).unwrap();
        assert_eq!(c.name, "weir");
        assert_eq!(c.pod_cidr, "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(c.gateway, Ipv4Addr::new(169, 254, 1, 1));
        assert_eq!(c.mtu, None);
        assert_eq!(c.agent_socket, PathBuf::from("/run/weir/agent.sock"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/weir/ipam"));
        assert_eq!(c.log_file, PathBuf::from("/var/log/weir/cni.log"));
        assert_eq!(c.log_level, "info");
        assert!(c.dns.is_empty());
        assert_eq!(c.prev_result, None);
        assert_eq!(c.valid_attachments, None);
        assert_eq!(c.del_queue_dir(), PathBuf::from("/var/lib/weir/del-queue"));
    }

    #[test]
    fn full_config_is_read_and_unknown_fields_are_ignored() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"weir","type":"weir","podCIDR":"10.244.1.7/24",
                "gateway":"169.254.9.9","mtu":1450,"agentSocket":"/tmp/a.sock","dataDir":"/tmp/d/ipam",
                "logFile":"/tmp/l/cni.log","logLevel":"DEBUG",
                "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]},
                "runtimeConfig":{"portMappings":[]},"args":{"cni":{}},"capabilities":{"x":true},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.pod_cidr.to_string(),
            "10.244.1.0/24",
            "host bits are dropped"
        );
        assert_eq!(c.gateway, Ipv4Addr::new(169, 254, 9, 9));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(
            c.valid_attachments,
            Some(vec![AttachmentId {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        assert_eq!(c.del_queue_dir(), PathBuf::from("/tmp/d/del-queue"));
    }

    #[test]
    fn invalid_values_are_code_7_and_name_the_field() {
        let cases = [
            (r#"{"type":"weir","podCIDR":"10.0.0.0/24"}"#, "name"),
            (
                r#"{"name":"","type":"weir","podCIDR":"10.0.0.0/24"}"#,
                "name",
            ),
            (
                r#"{"name":"../etc","type":"weir","podCIDR":"10.0.0.0/24"}"#,
                "name",
            ),
            (r#"{"name":"weir","podCIDR":"10.0.0.0/24"}"#, "type"),
            (
                r#"{"name":"weir","type":"bridge","podCIDR":"10.0.0.0/24"}"#,
                "type",
            ),
            (
                r#"{"name":"weir","type":7,"podCIDR":"10.0.0.0/24"}"#,
                "type",
            ),
            (r#"{"name":"weir","type":"weir"}"#, "podCIDR"),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0"}"#,
                "podCIDR",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"fd00::/64"}"#,
                "podCIDR",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/31"}"#,
                "podCIDR",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/33"}"#,
                "podCIDR",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","gateway":"x"}"#,
                "gateway",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","mtu":"1500"}"#,
                "mtu",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","mtu":67}"#,
                "mtu",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","mtu":65536}"#,
                "mtu",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","mtu":-1}"#,
                "mtu",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","mtu":1500.5}"#,
                "mtu",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","dataDir":"rel"}"#,
                "dataDir",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","dataDir":"/"}"#,
                "dataDir",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","agentSocket":5}"#,
                "agentSocket",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","dns":[]}"#,
                "dns",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","prevResult":1}"#,
                "prevResult",
            ),
            (
                r#"{"name":"weir","type":"weir","podCIDR":"10.0.0.0/24","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#,
                VALID_ATTACHMENTS,
            ),
        ];
        for (json, field) in cases {
            let err = conf(json).unwrap_err();
            assert_eq!(err.code(), 7, "{json}: {err}");
            match &err {
                CniError::InvalidConfig { field: f, .. } => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn network_names_follow_the_spec() {
        for ok in ["weir", "a", "k8s-pod-network", "net_1.2"] {
            assert!(is_valid_network_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_valid_network_name(bad), "{bad}");
        }
    }

    #[test]
    fn version_info_lists_everything() {
        assert_eq!(
            version_info().to_string(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
