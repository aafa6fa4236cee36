// SPDX-License-Identifier: Apache-2.0
//! Every name the lab creates, derived in one place.
//!
//! Several labs may run at once (tests run in parallel, each with its own `WEIR_LAB_DIR`), and all
//! of them share the machine's netns list (`/run/netns`) and bpffs. So every global name carries a
//! short *lab id* derived from the lab directory: `weir-lab-<id>-n1`, `weir-lab-<id>-p-<hash>`,
//! `/sys/fs/bpf/weir-lab-<id>-n1`. `down` finds leftovers of a lab by that prefix even when its
//! state file is gone.
//!
//! The hash is FNV-1a, written out here rather than `std`'s `DefaultHasher`, whose output may
//! change between Rust releases: a lab brought up by one build must be torn down by the next.

use std::{
    collections::BTreeMap,
    fmt,
    io::Read,
    net::Ipv4Addr,
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// Lab directory used when neither `--dir` nor `WEIR_LAB_DIR` says otherwise.
pub const DEFAULT_LAB_DIR: &str = "/run/weir-lab";
/// Environment variable overriding the lab directory.
pub const LAB_DIR_ENV: &str = "WEIR_LAB_DIR";
/// Where bpffs is expected; each node's agent pins under `<BPFFS_ROOT>/weir-lab-<id>-n<k>`.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Prefix of every global name the lab creates.
pub const NAME_PREFIX: &str = "weir-lab-";

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Make `dir` absolute and drop `.`/`..` lexically, without touching the file system (the directory
/// may not exist yet, or may already be gone when `down` runs).
pub fn normalize_dir(dir: &Path) -> PathBuf {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(dir)
    };
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The short id of the lab living in `dir`: 6 hex digits of the hash of its normalized path.
pub fn lab_id(dir: &Path) -> String {
    let path = normalize_dir(dir);
    let hash = fnv1a64(path.as_os_str().as_encoded_bytes());
    format!("{:06x}", hash & 0xff_ffff)
}

/// Prefix shared by every netns and bpffs directory of lab `id`.
pub fn lab_prefix(id: &str) -> String {
    format!("{NAME_PREFIX}{id}-")
}

/// The "internet" netns.
pub fn ext_netns(id: &str) -> String {
    format!("{NAME_PREFIX}{id}-ext")
}

/// Node `k` (1-based) as the lab names it, also its agent's `--node-name`.
pub fn node_name(k: u32) -> String {
    format!("n{k}")
}

/// Node `k`'s netns.
pub fn node_netns(id: &str, k: u32) -> String {
    format!("{NAME_PREFIX}{id}-n{k}")
}

/// Node `k`'s bpffs directory.
pub fn node_bpffs_dir(id: &str, k: u32) -> PathBuf {
    Path::new(BPFFS_ROOT).join(format!("{NAME_PREFIX}{id}-n{k}"))
}

/// 8 hex digits identifying a pod within a lab.
pub fn pod_hash(pod: &PodRef) -> String {
    let hash = fnv1a64(pod.to_string().as_bytes());
    format!("{:08x}", hash & 0xffff_ffff)
}

/// A pod's netns.
pub fn pod_netns(id: &str, pod: &PodRef) -> String {
    format!("{NAME_PREFIX}{id}-p-{}", pod_hash(pod))
}

/// Node `k`'s address on the shared "internet" segment 192.0.2.0/24.
pub fn node_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, node_octet(k))
}

/// Node `k`'s pod CIDR: 10.244.k.0/24.
pub fn node_pod_cidr(k: u32) -> String {
    format!("10.244.{}.0/24", node_octet(k) - 10)
}

fn node_octet(k: u32) -> u8 {
    // `LabOptions` caps the node count far below this; clamp rather than wrap.
    u8::try_from(10 + k.min(200)).unwrap_or(210)
}

/// The cluster CIDR every node's pod CIDR is carved from.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The ext netns' address on the segment the nodes share; the nodes' default gateway.
pub const EXT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The "outside host" on ext's loopback.
pub const EXT_HOST_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Prefix length of the shared segment.
pub const SEGMENT_PREFIX_LEN: u8 = 24;
/// Ports every lab server listens on (TCP and UDP).
pub const SERVER_PORTS: [u16; 2] = [80, 81];

/// A fresh container id: 64 hex digits, like the ones container runtimes generate.
pub fn random_container_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `NAMESPACE/NAME` of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a command-line value was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{0:?} is not NAMESPACE/NAME (lowercase letters, digits, '-' and '.')")]
    PodRef(String),
    #[error("{0:?} is not a label list k=v[,k=v...]")]
    Labels(String),
    #[error("{0:?} is not a port list like 80,81")]
    Ports(String),
    #[error("{0:?} is not a pod (NAMESPACE/NAME), `node`, `nodeK`, `ext` or an IPv4 address")]
    Endpoint(String),
    #[error("{0:?} is not a protocol: use tcp, udp, sctp or icmp")]
    Proto(String),
    #[error("{0:?} is not a served port like tcp:3306 (tcp, udp or sctp; port 1-65535)")]
    Serve(String),
    #[error("{0:?} is not a host port like 8080:80[/udp][@192.0.2.10]")]
    HostPort(String),
}

/// Lowercase letters, digits, '-' and '.', not starting or ending with '-' or '.', at most 253
/// characters: what the lab accepts as a namespace or object name (they become file names).
pub fn is_dns_name(s: &str) -> bool {
    is_dns_label(s)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

impl FromStr for PodRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if is_dns_label(ns) && is_dns_label(name) => Ok(Self::new(ns, name)),
            _ => Err(ParseError::PodRef(s.to_owned())),
        }
    }
}

/// Parse `k=v,k2=v2` (empty string → no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| ParseError::Labels(s.to_owned()))?;
        if k.is_empty() || k.contains(char::is_whitespace) || v.contains(char::is_whitespace) {
            return Err(ParseError::Labels(s.to_owned()));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Parse `80,81` (empty string → no ports).
pub fn parse_ports(s: &str) -> Result<Vec<u16>, ParseError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| ParseError::Ports(s.to_owned()))
        })
        .collect()
}

/// One end of a probe: where it runs from or what it targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Pod(PodRef),
    /// Node `k` (1-based): `node` is node 1, `node2` node 2.
    Node(u32),
    /// The outside host (203.0.113.1 in the ext netns).
    Ext,
    /// A literal address (only as a target).
    Ip(Ipv4Addr),
}

impl FromStr for Endpoint {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "ext" {
            return Ok(Self::Ext);
        }
        if s == "node" {
            return Ok(Self::Node(1));
        }
        if let Some(k) = s.strip_prefix("node") {
            if let Ok(k) = k.parse::<u32>() {
                if k >= 1 {
                    return Ok(Self::Node(k));
                }
            }
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Self::Ip(ip));
        }
        s.parse::<PodRef>()
            .map(Self::Pod)
            .map_err(|_| ParseError::Endpoint(s.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(pod) => pod.fmt(f),
            Self::Node(1) => f.write_str("node"),
            Self::Node(k) => write!(f, "node{k}"),
            Self::Ext => f.write_str("ext"),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn lab_id_is_stable_short_and_path_sensitive() {
        let id = lab_id(Path::new("/run/weir-lab"));
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, lab_id(Path::new("/run/weir-lab")));
        assert_eq!(id, lab_id(Path::new("/run/./x/../weir-lab/")));
        assert_ne!(id, lab_id(Path::new("/run/weir-lab-2")));
    }

    #[test]
    fn normalize_dir_is_lexical_and_absolute() {
        assert_eq!(
            normalize_dir(Path::new("/a/b/../c/.")),
            PathBuf::from("/a/c")
        );
        assert_eq!(normalize_dir(Path::new("/../..")), PathBuf::from("/"));
        assert!(normalize_dir(Path::new("rel")).is_absolute());
    }

    #[test]
    fn names_carry_the_lab_prefix() {
        let id = "abc123";
        let prefix = lab_prefix(id);
        assert_eq!(prefix, "weir-lab-abc123-");
        let pod = PodRef::new("default", "web");
        for name in [ext_netns(id), node_netns(id, 1), pod_netns(id, &pod)] {
            assert!(name.starts_with(&prefix), "{name}");
        }
        assert_eq!(node_netns(id, 2), "weir-lab-abc123-n2");
        assert_eq!(
            node_bpffs_dir(id, 1),
            PathBuf::from("/sys/fs/bpf/weir-lab-abc123-n1")
        );
        assert_eq!(pod_netns(id, &pod).len(), prefix.len() + 2 + 8);
        assert_ne!(
            pod_netns(id, &pod),
            pod_netns(id, &PodRef::new("default", "api"))
        );
    }

    #[test]
    fn node_addressing_follows_the_plan() {
        assert_eq!(node_ip(1), Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(node_ip(3), Ipv4Addr::new(192, 0, 2, 13));
        assert_eq!(node_pod_cidr(1), "10.244.1.0/24");
        assert_eq!(node_pod_cidr(2), "10.244.2.0/24");
    }

    #[test]
    fn container_ids_are_64_hex_and_fresh() {
        let a = random_container_id().unwrap();
        let b = random_container_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn pod_refs_parse_and_reject_garbage() {
        assert_eq!(
            "default/web".parse::<PodRef>().unwrap(),
            PodRef::new("default", "web")
        );
        assert_eq!(
            PodRef::new("kube-system", "a.b").to_string(),
            "kube-system/a.b"
        );
        for bad in [
            "",
            "web",
            "/web",
            "default/",
            "a/b/c",
            "Default/web",
            "a/-b",
            "a b/c",
        ] {
            assert!(bad.parse::<PodRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_ports_parse() {
        let labels = parse_labels("role=web, tier=front").unwrap();
        assert_eq!(labels.get("role").map(String::as_str), Some("web"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert!(parse_labels("").unwrap().is_empty());
        assert_eq!(parse_labels("role=").unwrap()["role"], "");
        assert!(parse_labels("role").is_err());
        assert!(parse_labels("=web").is_err());
        assert_eq!(parse_ports("80,81").unwrap(), vec![80, 81]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        for bad in ["0", "80,x", "65536", "-1"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_parse_and_display() {
        let cases = [
            ("node", Endpoint::Node(1)),
            ("node1", Endpoint::Node(1)),
            ("node2", Endpoint::Node(2)),
            ("ext", Endpoint::Ext),
            ("10.244.1.5", Endpoint::Ip(Ipv4Addr::new(10, 244, 1, 5))),
            ("default/web", Endpoint::Pod(PodRef::new("default", "web"))),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Endpoint>().unwrap(), want, "{text}");
        }
        assert_eq!(Endpoint::Node(1).to_string(), "node");
        assert_eq!(Endpoint::Node(2).to_string(), "node2");
        for bad in ["node0", "nodes", "10.244.1", "web", ""] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
