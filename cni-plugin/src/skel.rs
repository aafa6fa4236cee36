// SPDX-License-Identifier: Apache-2.0
//! `CNI_*` environment + stdin → a typed [`Command`], with spec version negotiation.
//!
//! Checks run in the order the reference `skel` uses, so the runtime sees the same code for the
//! same mistake: the command and the variables it needs (code 4), then stdin as JSON (code 6), then
//! `cniVersion` (code 1, also when the verb does not exist in that version), then the configuration
//! values (code 7). Errors are reported in the caller's `cniVersion` when it is one this plugin
//! supports, in 1.1.0 otherwise ([`peek`]).
//!
//! | verb    | needs                                               | from version |
//! |---------|-----------------------------------------------------|--------------|
//! | ADD     | `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`        | 0.3.0        |
//! | DEL     | `CNI_CONTAINERID`, `CNI_IFNAME` (`CNI_NETNS` optional) | 0.3.0     |
//! | CHECK   | `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `prevResult` | 0.4.0 |
//! | GC      | `cni.dev/valid-attachments`                         | 1.1.0        |
//! | STATUS  | —                                                   | 1.1.0        |
//! | VERSION | — (stdin is not read)                               | any          |
//!
//! `CNI_ARGS` is optional everywhere; unknown keys in it are ignored whether or not
//! `IgnoreUnknown` is set. `CNI_PATH` is never needed: this plugin executes nothing.

use std::{fmt, path::PathBuf};

use serde_json::{Map, Value};
use weir_agent_api::AttachmentId;

use crate::{
    config::{defaults, is_valid_network_name, NetConf},
    error::CniError,
    result::CniResult,
    version::CniVersion,
};

/// The fault-injection test hook (see the README): ADD fails right after the named step.
pub const FAIL_AFTER_ENV: &str = "WEIR_TEST_FAIL_AFTER";

/// Interface names are limited to IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;

/// What the runtime asked for.
#[derive(Debug)]
pub enum Command {
    Version,
    Run(Box<Invocation>),
}

/// A verb together with its validated configuration.
#[derive(Debug)]
pub struct Invocation {
    pub conf: NetConf,
    pub verb: Verb,
}

#[derive(Debug)]
pub enum Verb {
    Add(AddArgs),
    Del(DelArgs),
    Check(CheckArgs),
    Gc(GcArgs),
    Status,
}

impl Verb {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Add(_) => "ADD",
            Self::Del(_) => "DEL",
            Self::Check(_) => "CHECK",
            Self::Gc(_) => "GC",
            Self::Status => "STATUS",
        }
    }

    /// The attachment this verb is about, if it is about one.
    pub fn attachment(&self) -> Option<&AttachmentId> {
        match self {
            Self::Add(a) => Some(&a.attachment),
            Self::Del(a) => Some(&a.attachment),
            Self::Check(a) => Some(&a.attachment),
            Self::Gc(_) | Self::Status => None,
        }
    }
}

#[derive(Debug)]
pub struct AddArgs {
    pub attachment: AttachmentId,
    pub netns: PathBuf,
    pub args: CniArgs,
    /// Test hook: fail (and roll back) right after this step.
    pub fail_after: Option<Step>,
}

#[derive(Debug)]
pub struct DelArgs {
    pub attachment: AttachmentId,
    /// Absent when the runtime no longer has the namespace (DEL must still succeed).
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

#[derive(Debug)]
pub struct CheckArgs {
    pub attachment: AttachmentId,
    pub netns: PathBuf,
    pub args: CniArgs,
    pub prev_result: CniResult,
}

#[derive(Debug)]
pub struct GcArgs {
    pub valid: Vec<AttachmentId>,
}

/// The ADD steps after which [`FAIL_AFTER_ENV`] can inject a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Ipam,
    Veth,
    Address,
    Route,
    Agent,
}

impl Step {
    pub const ALL: [Self; 5] = [
        Self::Ipam,
        Self::Veth,
        Self::Address,
        Self::Route,
        Self::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipam => "ipam",
            Self::Veth => "veth",
            Self::Address => "address",
            Self::Route => "route",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kubernetes keys of `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_infra_container_id: Option<String>,
}

impl CniArgs {
    /// Parse `K=V;K2=V2`. Empty values count as absent; unknown keys are ignored.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut args = Self::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| CniError::InvalidEnv {
                var: "CNI_ARGS",
                reason: format!("{pair:?} is not KEY=VALUE"),
            })?;
            let value = (!value.is_empty()).then(|| value.to_owned());
            match key {
                "K8S_POD_NAMESPACE" => args.pod_namespace = value,
                "K8S_POD_NAME" => args.pod_name = value,
                "K8S_POD_UID" => args.pod_uid = value,
                "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = value,
                _ => {}
            }
        }
        Ok(args)
    }
}

/// A failure to turn the invocation into a [`Command`], with the version to report it in.
#[derive(Debug)]
pub struct Failure {
    pub version: CniVersion,
    pub error: CniError,
}

/// What can be learnt from stdin before it is validated: enough to report errors and to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek {
    /// The caller's `cniVersion` when supported, else [`CniVersion::LATEST`].
    pub version: CniVersion,
    /// Where to log: the configured `logFile`, the default when stdin is a configuration without
    /// one, and `None` when stdin is not a JSON object at all (nothing to attribute a log to).
    pub log_file: Option<PathBuf>,
    pub log_level: String,
}

/// Best-effort look at stdin; never fails.
pub fn peek(stdin: &[u8]) -> Peek {
    let value: Option<Value> = serde_json::from_slice(stdin).ok().filter(Value::is_object);
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Peek {
        version: field("cniVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(CniVersion::LATEST),
        log_file: value.as_ref().map(|_| {
            field("logFile")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| PathBuf::from(defaults::LOG_FILE))
        }),
        log_level: field("logLevel").unwrap_or_else(|| defaults::LOG_LEVEL.to_owned()),
    }
}

/// Parse one invocation. `env` looks up an environment variable (empty counts as unset).
pub fn parse(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Command, Failure> {
    let version = peek(stdin).version;
    parse_inner(env, stdin).map_err(|error| Failure { version, error })
}

/// Errors are checked in the order the spec's codes suggest: the environment (code 4), then
/// stdin (code 6), then the version (code 1), and finally the configuration (code 7).
fn parse_inner(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Command, CniError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let Some(pending) = Pending::from_env(&var)? else {
        return Ok(Command::Version);
    };
    let args = CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?;
    let obj = config_object(stdin)?;
    let version = negotiate_version(&obj, &pending)?;
    let conf = NetConf::from_json(&obj, version)?;
    let verb = pending.into_verb(args, &conf)?;
    Ok(Command::Run(Box::new(Invocation { conf, verb })))
}

/// A verb whose environment has been read, waiting for its configuration.
enum Pending {
    Add {
        id: AttachmentId,
        netns: PathBuf,
        fail_after: Option<Step>,
    },
    Del {
        id: AttachmentId,
        netns: Option<PathBuf>,
    },
    Check {
        id: AttachmentId,
        netns: PathBuf,
    },
    Gc,
    Status,
}

impl Pending {
    /// `None` for VERSION, which needs nothing more.
    fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, CniError> {
        let command = var("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        let required_netns = || {
            var("CNI_NETNS")
                .map(PathBuf::from)
                .ok_or_else(|| missing("CNI_NETNS"))
        };
        Ok(Some(match command.as_str() {
            "VERSION" => return Ok(None),
            "ADD" => Self::Add {
                id: attachment(var)?,
                netns: required_netns()?,
                fail_after: fail_after(var)?,
            },
            "DEL" => Self::Del {
                id: attachment(var)?,
                netns: var("CNI_NETNS").map(PathBuf::from),
            },
            "CHECK" => Self::Check {
                id: attachment(var)?,
                netns: required_netns()?,
            },
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            other => {
                return Err(CniError::InvalidEnv {
                    var: "CNI_COMMAND",
                    reason: format!(
                    "unknown command {other:?} (expected ADD, DEL, CHECK, GC, STATUS or VERSION)"
                ),
                })
            }
        }))
    }

    /// The verb's name and whether `version` defines it.
    fn in_version(&self, version: CniVersion) -> (&'static str, bool) {
        match self {
            Self::Add { .. } => ("ADD", true),
            Self::Del { .. } => ("DEL", true),
            Self::Check { .. } => ("CHECK", version.supports_check()),
            Self::Gc => ("GC", version.supports_gc_and_status()),
            Self::Status => ("STATUS", version.supports_gc_and_status()),
        }
    }

    fn into_verb(self, args: CniArgs, conf: &NetConf) -> Result<Verb, CniError> {
        Ok(match self {
            Self::Add {
                id,
                netns,
                fail_after,
            } => Verb::Add(AddArgs {
                attachment: id,
                netns,
                args,
                fail_after,
            }),
            Self::Del { id, netns } => Verb::Del(DelArgs {
                attachment: id,
                netns,
                args,
            }),
            Self::Check { id, netns } => {
                let prev = conf
                    .prev_result
                    .as_ref()
                    .ok_or_else(|| CniError::InvalidConfig {
                        field: "prevResult".into(),
                        reason: "is required for CHECK".into(),
                    })?;
                Verb::Check(CheckArgs {
                    attachment: id,
                    netns,
                    args,
                    prev_result: CniResult::from_prev_result(prev)?,
                })
            }
            Self::Gc => Verb::Gc(GcArgs {
                valid: conf
                    .valid_attachments
                    .clone()
                    .ok_or_else(|| CniError::InvalidConfig {
                        field: crate::config::VALID_ATTACHMENTS.into(),
                        reason: "is required for GC".into(),
                    })?,
            }),
            Self::Status => Verb::Status,
        })
    }
}

/// Stdin as a JSON object (code 6 when it is not one).
fn config_object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice(stdin).map_err(CniError::Decode)? {
        Value::Object(obj) => Ok(obj),
        _ => Err(CniError::Decode(serde::de::Error::custom(
            "the network configuration must be a JSON object",
        ))),
    }
}

/// The caller's `cniVersion` (code 1 when unsupported), and the verb must exist in it.
fn negotiate_version(obj: &Map<String, Value>, pending: &Pending) -> Result<CniVersion, CniError> {
    let version: CniVersion = match obj.get("cniVersion") {
        Some(Value::String(v)) => v.parse()?,
        other => {
            return Err(CniError::IncompatibleVersion {
                requested: other.map(Value::to_string).unwrap_or_default(),
            })
        }
    };
    match pending.in_version(version) {
        (_, true) => Ok(version),
        (verb, false) => Err(CniError::VerbNotInVersion { verb, version }),
    }
}

fn missing(var: &'static str) -> CniError {
    CniError::InvalidEnv {
        var,
        reason: "is required but not set".into(),
    }
}

fn attachment(var: &dyn Fn(&str) -> Option<String>) -> Result<AttachmentId, CniError> {
    let container_id = var("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID"))?;
    if !is_valid_network_name(&container_id) {
        return Err(CniError::InvalidEnv {
            var: "CNI_CONTAINERID",
            reason: format!(
                "{container_id:?} must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            ),
        });
    }
    let ifname = var("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME"))?;
    validate_ifname(&ifname).map_err(|reason| CniError::InvalidEnv {
        var: "CNI_IFNAME",
        reason: format!("{ifname:?} {reason}"),
    })?;
    Ok(AttachmentId {
        container_id,
        ifname,
    })
}

/// The spec's (and Linux's) rules for interface names.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.len() > IFNAME_MAX {
        Err("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Err("is not a valid interface name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Err("contains '/', ':' or whitespace")
    } else if name.is_empty() {
        Err("is empty")
    } else {
        Ok(())
    }
}

fn fail_after(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Step>, CniError> {
    let Some(text) = var(FAIL_AFTER_ENV) else {
        return Ok(None);
    };
    Step::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .map(Some)
        .ok_or_else(|| CniError::InvalidEnv {
            var: FAIL_AFTER_ENV,
            reason: format!("{text:?} is not one of ipam, veth, address, route, agent"),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CONF_1_0: &str = include_str!("../tests/fixtures/netconf-1.0.0.json");

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/var/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn conf_with_version(version: &str) -> String {
        CONF_1_0.replace("\"1.0.0\"", &format!("\"{version}\""))
    }

    fn verb(pairs: &[(&str, &str)], stdin: &str) -> Verb {
        match parse(&env(pairs), stdin.as_bytes()) {
            Ok(Command::Run(inv)) => inv.verb,
            other => panic!("expected a verb, got {other:?}"),
        }
    }

    fn fail(pairs: &[(&str, &str)], stdin: &str) -> Failure {
        match parse(&env(pairs), stdin.as_bytes()) {
            Ok(cmd) => panic!("expected a failure, got {cmd:?}"),
            Err(f) => f,
        }
    }

    #[test]
    fn add_is_parsed_with_its_arguments() {
        let Command::Run(inv) = parse(&env(&add_env()), CONF_1_0.as_bytes()).unwrap() else {
            panic!("not a verb")
        };
        assert_eq!(inv.conf.cni_version, CniVersion::V1_0_0);
        let Verb::Add(add) = inv.verb else {
            panic!("not ADD")
        };
        assert_eq!(add.attachment.container_id, "c0ffee");
        assert_eq!(add.attachment.ifname, "eth0");
        assert_eq!(add.netns, PathBuf::from("/var/run/netns/pod"));
        assert_eq!(add.args.pod_namespace.as_deref(), Some("prod"));
        assert_eq!(add.args.pod_name.as_deref(), Some("web-0"));
        assert_eq!(add.args.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(add.fail_after, None);
    }

    #[test]
    fn version_needs_neither_env_nor_stdin() {
        assert!(matches!(
            parse(&env(&[("CNI_COMMAND", "VERSION")]), b""),
            Ok(Command::Version)
        ));
    }

    #[test]
    fn missing_or_bad_env_is_code_4() {
        let conf = CONF_1_0;
        let f = fail(&[], conf);
        assert_eq!(f.error.code(), 4);
        assert_eq!(
            f.version,
            CniVersion::V1_0_0,
            "reported in the caller's version"
        );

        let f = fail(&[("CNI_COMMAND", "FROB")], conf);
        assert_eq!(f.error.code(), 4);

        for drop in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let pairs: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != drop).collect();
            let f = fail(&pairs, conf);
            assert_eq!(f.error.code(), 4, "{drop}");
            assert!(f.error.to_string().contains(drop), "{}", f.error);
        }

        for (var, bad) in [
            ("CNI_IFNAME", "this-is-too-long0"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "a b"),
            ("CNI_IFNAME", ".."),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_ARGS", "K8S_POD_NAME"),
            (FAIL_AFTER_ENV, "nope"),
        ] {
            let mut pairs = add_env();
            pairs.retain(|(k, _)| *k != var);
            pairs.push((var, bad));
            let f = fail(&pairs, conf);
            assert_eq!(f.error.code(), 4, "{var}={bad}: {}", f.error);
        }
    }

    #[test]
    fn env_errors_come_before_stdin_errors() {
        let f = fail(&[("CNI_COMMAND", "ADD")], "not json");
        assert_eq!(f.error.code(), 4);
        assert_eq!(f.version, CniVersion::V1_1_0);
    }

    #[test]
    fn unparsable_stdin_is_code_6() {
        for stdin in ["", "{", "[1,2]", "\"weir\""] {
            let f = fail(&add_env(), stdin);
            assert_eq!(f.error.code(), 6, "{stdin:?}");
        }
    }

    #[test]
    fn unknown_or_missing_version_is_code_1() {
        for conf in [
            conf_with_version("0.2.0"),
            conf_with_version("9.9.9"),
            CONF_1_0.replace("\"cniVersion\": \"1.0.0\",", ""),
        ] {
            let f = fail(&add_env(), &conf);
            assert_eq!(f.error.code(), 1, "{conf}");
            assert_eq!(f.version, CniVersion::V1_1_0);
        }
    }

    #[test]
    fn check_needs_0_4_0_and_gc_status_need_1_1_0() {
        let mut check = add_env();
        check[0] = ("CNI_COMMAND", "CHECK");
        for (pairs, version, ok) in [
            (check.clone(), "0.3.1", false),
            (check.clone(), "0.3.0", false),
            (vec![("CNI_COMMAND", "GC")], "1.0.0", false),
            (vec![("CNI_COMMAND", "STATUS")], "1.0.0", false),
            (vec![("CNI_COMMAND", "STATUS")], "0.4.0", false),
            (vec![("CNI_COMMAND", "STATUS")], "1.1.0", true),
        ] {
            let result = parse(&env(&pairs), conf_with_version(version).as_bytes());
            match (result, ok) {
                (Ok(_), true) => {}
                (Err(f), false) => {
                    assert_eq!(f.error.code(), 1, "{pairs:?} {version}");
                    assert_eq!(
                        f.version.as_str(),
                        version,
                        "reported in the caller's version"
                    );
                }
                (other, _) => panic!("{pairs:?} {version}: {other:?}"),
            }
        }
    }

    #[test]
    fn check_needs_a_prev_result() {
        let mut check = add_env();
        check[0] = ("CNI_COMMAND", "CHECK");
        let f = fail(&check, CONF_1_0);
        assert_eq!(f.error.code(), 7);
        assert!(f.error.to_string().contains("prevResult"), "{}", f.error);
    }

    #[test]
    fn check_reads_prev_result() {
        let mut check = add_env();
        check[0] = ("CNI_COMMAND", "CHECK");
        let conf = include_str!("../tests/fixtures/netconf-check-0.4.0.json");
        let Verb::Check(args) = verb(&check, conf) else {
            panic!("not CHECK")
        };
        assert_eq!(args.prev_result.interfaces.len(), 2);
        assert_eq!(args.prev_result.ips[0].address.to_string(), "10.244.1.5/32");
    }

    #[test]
    fn gc_needs_valid_attachments() {
        let conf = conf_with_version("1.1.0");
        let f = fail(&[("CNI_COMMAND", "GC")], &conf);
        assert_eq!(f.error.code(), 7);

        let conf = include_str!("../tests/fixtures/netconf-gc-1.1.0.json");
        let Verb::Gc(gc) = verb(&[("CNI_COMMAND", "GC")], conf) else {
            panic!("not GC")
        };
        assert_eq!(gc.valid.len(), 2);
        assert_eq!(gc.valid[1].ifname, "net1");
    }

    #[test]
    fn del_does_not_need_a_netns() {
        let pairs: Vec<_> = add_env()
            .into_iter()
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        let Verb::Del(del) = verb(&pairs, CONF_1_0) else {
            panic!("not DEL")
        };
        assert_eq!(del.netns, None);
    }

    #[test]
    fn invalid_config_is_code_7_in_the_callers_version() {
        let conf = conf_with_version("0.3.1").replace("10.244.1.0/24", "10.244.1.0/99");
        let f = fail(&add_env(), &conf);
        assert_eq!(f.error.code(), 7);
        assert_eq!(f.version, CniVersion::V0_3_1);
    }

    #[test]
    fn fail_after_is_read_for_add() {
        let mut pairs = add_env();
        pairs.push((FAIL_AFTER_ENV, "route"));
        let Verb::Add(add) = verb(&pairs, CONF_1_0) else {
            panic!("not ADD")
        };
        assert_eq!(add.fail_after, Some(Step::Route));
    }

    #[test]
    fn cni_args_parsing() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("FOO=BAR;;K8S_POD_NAME=x;K8S_POD_NAMESPACE=").unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("x"));
        assert_eq!(a.pod_namespace, None);
        assert!(CniArgs::parse("A=1;B").is_err());
    }

    #[test]
    fn peek_falls_back_to_defaults() {
        let p = peek(b"garbage");
        assert_eq!(p.version, CniVersion::V1_1_0);
        assert_eq!(p.log_file, None, "garbage is not logged anywhere");
        assert_eq!(
            peek(b"{}").log_file,
            Some(PathBuf::from("/var/log/weir/cni.log"))
        );
        let p = peek(br#"{"cniVersion":"0.4.0","logFile":"/tmp/x.log","logLevel":"debug"}"#);
        assert_eq!(p.version, CniVersion::V0_4_0);
        assert_eq!(p.log_file, Some(PathBuf::from("/tmp/x.log")));
        assert_eq!(p.log_level, "debug");
        assert_eq!(
            peek(br#"{"logFile":"rel.log"}"#).log_file,
            Some(PathBuf::from("/var/log/weir/cni.log"))
        );
    }
}
