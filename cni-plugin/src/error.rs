// SPDX-License-Identifier: Apache-2.0
//! Every way a verb can fail, and how each failure is reported to the runtime.
//!
//! The runtime gets `{"cniVersion", "code", "msg", "details"}` on stdout and a non-zero exit status.
//! `msg` is this error's `Display` (one line, names the object); `details` is the chain of underlying
//! causes (the errno, the path, the agent's words). Codes below 100 are the spec's well-known codes;
//! Weir's own codes are listed in `cni-plugin/README.md` and in [`codes`].

use std::{error::Error as _, io, path::PathBuf};

use serde_json::json;
use weir_agent_api::ClientError;

use weir_netlink::NetlinkError;

use crate::{
    ipam::IpamError,
    version::{CniVersion, UnsupportedVersion},
};

/// The numeric codes this plugin returns.
pub mod codes {
    /// The config's `cniVersion` is not supported, or the verb does not exist in that version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// `CNI_NETNS` does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required `CNI_*` variable is missing or malformed.
    pub const INVALID_ENV: u32 = 4;
    /// Reading stdin or writing plugin state failed.
    pub const IO_FAILURE: u32 = 5;
    /// stdin is not a JSON object.
    pub const DECODE: u32 = 6;
    /// A configuration value is missing or invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// weir-agent is unreachable or not ready: nothing was created, retry later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// Any other failure (netlink, agent rejection, existing attachment, failed CHECK, …).
    pub const INTERNAL: u32 = 100;
    /// The pod CIDR has no free address.
    pub const IP_RANGE_EXHAUSTED: u32 = 110;
    /// A `hostPort` the pod asks for is already another pod's on this node.
    pub const PORT_CONFLICT: u32 = 120;
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(
        "incompatible CNI version {requested:?}: supported are 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
    )]
    IncompatibleVersion { requested: String },

    #[error("{verb} is not defined for cniVersion {version}")]
    VerbNotInVersion {
        verb: &'static str,
        version: CniVersion,
    },

    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },

    #[error("I/O failure: {what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot decode the network configuration from stdin")]
    Decode(#[source] serde_json::Error),

    #[error("invalid network configuration: {field} {reason}")]
    InvalidConfig { field: String, reason: String },

    #[error(transparent)]
    Ipam(#[from] IpamError),

    #[error(transparent)]
    Netlink(#[from] NetlinkError),

    #[error("weir-agent is unavailable, try again later")]
    AgentUnavailable(#[source] ClientError),

    #[error("weir-agent is not ready, try again later: {message}")]
    AgentNotReady { message: String },

    #[error("weir-agent rejected {op}: {message}")]
    AgentRejected { op: &'static str, message: String },

    #[error("weir-agent sent an unexpected answer to {op}: {answer}")]
    AgentProtocol { op: &'static str, answer: String },

    #[error("{reason}")]
    NotAvailable { reason: String },

    #[error("hostPort conflict: {message}")]
    PortConflict { message: String },

    #[error("attachment already exists: host veth {host} for {container_id}/{ifname} is present")]
    AttachmentExists {
        host: String,
        container_id: String,
        ifname: String,
    },

    #[error("interface {ifname} already exists in network namespace {netns}")]
    IfnameTaken { ifname: String, netns: PathBuf },

    #[error("injected failure after {step}")]
    InjectedFailure { step: &'static str },

    #[error("CHECK failed: {}", problems.join("; "))]
    CheckFailed { problems: Vec<String> },

    #[error("{}", join_messages(.0))]
    Multiple(Vec<CniError>),

    #[error("{0}")]
    Internal(String),
}

fn join_messages(errors: &[CniError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<UnsupportedVersion> for CniError {
    fn from(e: UnsupportedVersion) -> Self {
        Self::IncompatibleVersion {
            requested: e.requested,
        }
    }
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        use codes::*;
        match self {
            Self::IncompatibleVersion { .. } | Self::VerbNotInVersion { .. } => {
                INCOMPATIBLE_VERSION
            }
            Self::InvalidEnv { .. } => INVALID_ENV,
            Self::Io { .. } => IO_FAILURE,
            Self::Decode(_) => DECODE,
            Self::InvalidConfig { .. } => INVALID_CONFIG,
            Self::Ipam(e) => match e {
                IpamError::Exhausted { .. } => IP_RANGE_EXHAUSTED,
                IpamError::Io { .. } | IpamError::Lock { .. } => IO_FAILURE,
                IpamError::Corrupt { .. } => INTERNAL,
            },
            Self::Netlink(e) => match e {
                NetlinkError::NetnsNotFound { .. } => UNKNOWN_CONTAINER,
                NetlinkError::NotANetns { .. } | NetlinkError::HostNetns { .. } => INVALID_ENV,
                _ => INTERNAL,
            },
            Self::AgentUnavailable(_) | Self::AgentNotReady { .. } => TRY_AGAIN_LATER,
            Self::NotAvailable { .. } => NOT_AVAILABLE,
            Self::PortConflict { .. } => PORT_CONFLICT,
            Self::AgentRejected { .. }
            | Self::AgentProtocol { .. }
            | Self::AttachmentExists { .. }
            | Self::IfnameTaken { .. }
            | Self::InjectedFailure { .. }
            | Self::CheckFailed { .. }
            | Self::Internal(_) => INTERNAL,
            Self::Multiple(errors) => errors.first().map_or(INTERNAL, Self::code),
        }
    }

    /// The underlying causes, outermost first, joined with ": " (empty when there are none).
    pub fn details(&self) -> String {
        match self {
            Self::Multiple(errors) => errors
                .iter()
                .map(|e| {
                    let details = e.details();
                    if details.is_empty() {
                        e.to_string()
                    } else {
                        format!("{e}: {details}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => {
                let mut causes = Vec::new();
                // `transparent` variants share Display with their inner error, so start below it.
                let mut next = match self {
                    Self::Ipam(e) => e.source(),
                    Self::Netlink(e) => e.source(),
                    _ => self.source(),
                };
                while let Some(cause) = next {
                    causes.push(cause.to_string());
                    next = cause.source();
                }
                causes.join(": ")
            }
        }
    }

    /// The spec's error object, in the caller's version.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        json!({
            "cniVersion": version.as_str(),
            "code": self.code(),
            "msg": self.to_string(),
            "details": self.details(),
        })
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec_and_the_readme() {
        let cases: Vec<(CniError, u32)> = vec![
            (
                CniError::PortConflict {
                    message: "*:8080/tcp -> 80 is pod default/a's".into(),
                },
                120,
            ),
            (
                CniError::IncompatibleVersion {
                    requested: "0.2.0".into(),
                },
                1,
            ),
            (
                CniError::VerbNotInVersion {
                    verb: "CHECK",
                    version: CniVersion::V0_3_1,
                },
                1,
            ),
            (
                CniError::Netlink(NetlinkError::NetnsNotFound {
                    path: "/var/run/netns/x".into(),
                }),
                3,
            ),
            (
                CniError::InvalidEnv {
                    var: "CNI_IFNAME",
                    reason: "missing".into(),
                },
                4,
            ),
            (CniError::io("reading stdin", io::Error::other("boom")), 5),
            (
                CniError::Decode(serde_json::from_str::<serde_json::Value>("{").unwrap_err()),
                6,
            ),
            (
                CniError::InvalidConfig {
                    field: "mtu".into(),
                    reason: "bad".into(),
                },
                7,
            ),
            (
                CniError::AgentNotReady {
                    message: "starting".into(),
                },
                11,
            ),
            (
                CniError::NotAvailable {
                    reason: "down".into(),
                },
                50,
            ),
            (CniError::InjectedFailure { step: "veth" }, 100),
            (
                CniError::Ipam(IpamError::Exhausted {
                    cidr: "10.0.0.0/30".parse().unwrap(),
                }),
                110,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn error_json_has_msg_and_details() {
        let err = CniError::io(
            "writing the DEL spool file /x",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let json = err.to_json(CniVersion::V0_4_0);
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["code"], 5);
        assert_eq!(json["msg"], "I/O failure: writing the DEL spool file /x");
        assert!(json["details"]
            .as_str()
            .unwrap()
            .contains("No space left on device"));
    }

    #[test]
    fn multiple_errors_keep_the_first_code_and_every_message() {
        let err = CniError::Multiple(vec![
            CniError::io("a", io::Error::other("x")),
            CniError::Internal("b".into()),
        ]);
        assert_eq!(err.code(), 5);
        assert_eq!(err.to_string(), "I/O failure: a; b");
        assert_eq!(err.details(), "I/O failure: a: x; b");
    }

    #[test]
    fn injected_failure_message_is_stable() {
        let json = CniError::InjectedFailure { step: "route" }.to_json(CniVersion::V1_1_0);
        assert_eq!(json["msg"], "injected failure after route");
        assert_eq!(json["code"], 100);
    }
}
