// SPDX-License-Identifier: Apache-2.0
//! Weir's network configuration: the plugin entry of the conflist, validated field by field.
//!
//! The configuration is read field by field from the JSON object instead of through one derived
//! `Deserialize`, so that every rejection names the field and says what was expected (the runtime
//! shows `msg` to the operator), and so that unknown fields added by runtimes (`runtimeConfig`,
//! `args`, `capabilities`, …) are ignored.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_agent_api::{AttachmentId, PortMapping, PortProtocol};

use crate::{error::CniError, version::CniVersion};

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
    /// `runtimeConfig.portMappings`: the pod's hostPorts (IPv4; IPv6 `hostIP`s are skipped).
    pub port_mappings: Vec<PortMapping>,
    /// `runtimeConfig.bandwidth`: the pod's ingress and egress limits, if any.
    pub bandwidth: Option<crate::bandwidth::Bandwidth>,
}

impl NetConf {
    /// Validate a configuration whose `cniVersion` has already been negotiated.
    ///
    /// Errors are [`CniError::InvalidConfig`] (code 7) naming the field.
    pub fn from_json(obj: &Map<String, Value>, cni_version: CniVersion) -> Result<Self, CniError> {
        let name = network_name(obj)?;
        let plugin_type = required_str(obj, "type")?;
        if plugin_type != PLUGIN_TYPE {
            return Err(invalid(
                "type",
                format!("{plugin_type:?} is not {PLUGIN_TYPE:?}"),
            ));
        }
        let pod_cidr = pod_cidr(obj)?;
        let gateway = match optional_str(obj, "gateway")? {
            None => defaults::GATEWAY,
            Some(text) => text
                .parse()
                .map_err(|_| invalid("gateway", format!("{text:?} is not an IPv4 address")))?,
        };
        let mtu = mtu(obj)?;
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
        let runtime_config = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(runtime)) => Some(runtime),
            Some(_) => return Err(invalid("runtimeConfig", "must be an object")),
        };
        let port_mappings = match runtime_config.and_then(|r| r.get("portMappings")) {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_port_mappings(value)?,
        };
        let bandwidth = crate::bandwidth::from_runtime_config(runtime_config)?;
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
            port_mappings,
            bandwidth,
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

fn network_name(obj: &Map<String, Value>) -> Result<&str, CniError> {
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
    Ok(name)
}

/// `podCIDR`, truncated to its network; /30 at most, so it has room for pods.
fn pod_cidr(obj: &Map<String, Value>) -> Result<Ipv4Net, CniError> {
    let text = required_str(obj, "podCIDR")?;
    let parsed: Ipv4Net = text
        .parse()
        .map_err(|_| invalid("podCIDR", format!("{text:?} is not an IPv4 CIDR")))?;
    if parsed.prefix_len() > 30 {
        return Err(invalid(
            "podCIDR",
            format!("{text} leaves no room for pods (the prefix must be /30 or shorter)"),
        ));
    }
    Ok(parsed.trunc())
}

/// `mtu`: absent or null, else an integer in [`MTU_RANGE`].
fn mtu(obj: &Map<String, Value>) -> Result<Option<u32>, CniError> {
    let Some(value) = obj.get("mtu").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(mtu) if MTU_RANGE.contains(&mtu) => Ok(u32::try_from(mtu).ok()),
        _ => Err(invalid(
            "mtu",
            format!(
                "{value} is not an integer between {} and {}",
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ),
        )),
    }
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

/// The `portMappings` capability's field: `[{"hostPort", "containerPort", "protocol", "hostIP"}]`
/// as the CNI conventions write it, keys matched case-insensitively (containerd's go-cni marshals
/// its Go field names, `HostPort`). Ports must be 1–65535, the protocol TCP, UDP or SCTP (any
/// case; TCP when absent or empty), `hostIP` an address or empty. Weir pods are IPv4 only, so a
/// mapping for an IPv6 `hostIP` (a dual-stack runtime sends both) is skipped.
fn parse_port_mappings(value: &Value) -> Result<Vec<PortMapping>, CniError> {
    const FIELD: &str = "runtimeConfig.portMappings";
    const NAMES: [&str; 4] = ["hostPort", "containerPort", "protocol", "hostIP"];
    fn text<'a>(value: Option<&'a Value>, what: &str) -> Result<&'a str, CniError> {
        match value {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(invalid(
                FIELD,
                format!("{what} must be a string, not {other}"),
            )),
        }
    }
    let Value::Array(list) = value else {
        return Err(invalid(
            FIELD,
            format!("expected a list of {{\"hostPort\", \"containerPort\", \"protocol\", \"hostIP\"}}, not {value}"),
        ));
    };
    let mut mappings: Vec<PortMapping> = Vec::with_capacity(list.len());
    for entry in list {
        let Value::Object(obj) = entry else {
            return Err(invalid(
                FIELD,
                format!("an entry is not an object: {entry}"),
            ));
        };
        let mut fields: [Option<&Value>; 4] = [None; 4];
        for (key, value) in obj {
            // Anything else a runtime adds is ignored, as for the configuration's own fields.
            if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(key)) {
                if fields[i].replace(value).is_some() {
                    return Err(invalid(FIELD, format!("{} is given twice", NAMES[i])));
                }
            }
        }
        let [host_port, container_port, protocol, host_ip] = fields;
        let port = |value: Option<&Value>, what: &str| {
            let value = value.ok_or_else(|| invalid(FIELD, format!("{what} is missing")))?;
            value
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(FIELD, format!("{what} {value} is not a port (1-65535)")))
        };
        let protocol = match text(protocol, "protocol")?.to_ascii_lowercase().as_str() {
            "" | "tcp" => PortProtocol::Tcp,
            "udp" => PortProtocol::Udp,
            "sctp" => PortProtocol::Sctp,
            other => {
                return Err(invalid(
                    FIELD,
                    format!("protocol {other:?} is not TCP, UDP or SCTP"),
                ))
            }
        };
        let host_ip = match text(host_ip, "hostIP")? {
            "" | "0.0.0.0" => None,
            text => match text.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => Some(ip),
                Ok(std::net::IpAddr::V6(_)) => continue,
                Err(_) => {
                    return Err(invalid(
                        FIELD,
                        format!("hostIP {text:?} is not an IP address"),
                    ))
                }
            },
        };
        let mapping = PortMapping {
            host_port: port(host_port, "hostPort")?,
            container_port: port(container_port, "containerPort")?,
            protocol,
            host_ip,
        };
        if let Some(taken) = mappings.iter().find(|m| m.conflicts_with(&mapping)) {
            return Err(invalid(
                FIELD,
                format!("{mapping} and {taken} claim the same host port"),
            ));
        }
        mappings.push(mapping);
    }
    Ok(mappings)
}

/// The spec's rule for network names (and container IDs): `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> CniError {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_str(json).unwrap();
        NetConf::from_json(value.as_object().unwrap(), CniVersion::V1_0_0)
    }

    const MINIMAL: &str =
        r#"{"cniVersion":"1.0.0","name":"weir","type":"weir","podCIDR":"10.244.1.0/24"}"#;

    fn with_runtime(runtime: &str) -> Result<NetConf, CniError> {
        conf(&format!(
            r#"{{"cniVersion":"1.0.0","name":"weir","type":"weir","podCIDR":"10.244.1.0/24","runtimeConfig":{runtime}}}"#
        ))
    }

    #[test]
    fn port_mappings_are_read_as_the_kubelet_writes_them() {
        let c = with_runtime(
            r#"{"portMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":""},
                {"hostPort":53,"containerPort":5353,"protocol":"udp","hostIP":"192.0.2.10"},
                {"hostPort":9000,"containerPort":9000,"protocol":"SCTP"},
                {"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":"::"},
                {"hostPort":81,"containerPort":81},
                {"HostPort":82,"ContainerPort":8082,"Protocol":"TCP","HostIP":""}
            ]}"#,
        )
        .unwrap();
        let shown: Vec<String> = c.port_mappings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "*:8080/tcp -> 80",
                "192.0.2.10:53/udp -> 5353",
                "*:9000/sctp -> 9000",
                "*:81/tcp -> 81",
                "*:82/tcp -> 8082",
            ],
            "the IPv6 hostIP is skipped; no protocol is TCP; containerd's Go field names are read"
        );
        assert!(conf(MINIMAL).unwrap().port_mappings.is_empty());
        assert!(with_runtime(r#"{"portMappings":null}"#)
            .unwrap()
            .port_mappings
            .is_empty());
    }

    #[test]
    fn bad_port_mappings_are_code_7_naming_the_field() {
        for (runtime, says) in [
            (
                r#"{"portMappings":[{"hostPort":0,"containerPort":80}]}"#,
                "hostPort 0",
            ),
            (
                r#"{"portMappings":[{"hostPort":80,"containerPort":70000}]}"#,
                "containerPort 70000",
            ),
            (
                r#"{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}"#,
                "\"icmp\"",
            ),
            (
                r#"{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"nope"}]}"#,
                "\"nope\"",
            ),
            (
                r#"{"portMappings":[{"containerPort":80}]}"#,
                "hostPort is missing",
            ),
            (
                r#"{"portMappings":[{"hostPort":80,"HostPort":81,"containerPort":80}]}"#,
                "given twice",
            ),
            (
                r#"{"portMappings":[{"hostPort":"80","containerPort":80}]}"#,
                "hostPort \"80\"",
            ),
            (r#"{"portMappings":{"hostPort":80}}"#, "expected a list"),
            (
                r#"{"portMappings":[{"hostPort":80,"containerPort":80},{"hostPort":80,"containerPort":81,"hostIP":"192.0.2.1"}]}"#,
                "claim the same host port",
            ),
        ] {
            let err = with_runtime(runtime).unwrap_err();
            assert_eq!(err.code(), 7, "{runtime}");
            let msg = err.to_string();
            assert!(
                msg.contains("runtimeConfig.portMappings") && msg.contains(says),
                "{runtime}: {msg}"
            );
        }
        assert_eq!(with_runtime("[]").unwrap_err().code(), 7);
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
}
