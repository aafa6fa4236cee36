// SPDX-License-Identifier: Apache-2.0
//! The ADD result, kept version-neutral ([`CniResult`]) and rendered per spec version only when it
//! is printed ([`CniResult::to_json`]): 0.3.x and 0.4.0 put a `"version": "4"` in every `ips`
//! entry, 1.0.0 drops it, and 1.1.0 adds `mtu` to interfaces. CHECK reads it back from
//! `prevResult`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    config::{invalid, Dns},
    error::CniError,
    version::CniVersion,
};

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
    use crate::result::tests_support::golden_result;

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
}
