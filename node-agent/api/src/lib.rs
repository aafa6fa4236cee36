//! What the agent shares with its clients (the CNI plugin, the lab): the CNI ↔ agent protocol,
//! the names it derives from an attachment, and the cluster's [`Routing`] mode.
//!
//! Layer: the bottom; it imports nothing of Weir's.
//!
//! One request per connection on the agent's root-only unix socket: the client writes one JSON
//! [`Request`] followed by a newline, the agent answers with one JSON [`Response`] and closes. It is
//! blocking and tiny on purpose: the CNI binary is a short-lived process whose ADD latency matters,
//! and a unix-socket round trip with no runtime to start costs tens of microseconds.

use std::{
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

mod flows;

pub use flows::{ExplainQuery, ExplainedDirection, Explanation, FlowEnd, FlowFilter, FlowRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/weir/agent.sock";

/// One attachment of a container to the Weir network, as the CNI spec keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

/// Every host-side veth name starts with this.
pub const HOST_VETH_PREFIX: &str = "weir";
/// How many hex digits of the attachment digest follow the prefix (4 + 11 = 15 = IFNAMSIZ - 1).
const HOST_VETH_HEX: usize = 11;

/// `sha256("<container id>/<ifname>")` in lowercase hex: the attachment's stable digest, used for
/// the host veth name and the DEL spool file name.
pub fn attachment_digest(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host-side veth of an attachment: `"weir"` + the first 11 hex digits of
/// [`attachment_digest`]; always 15 characters, deterministic, so DEL and GC can find it without
/// any state, and the agent can tell that an ADD names the attachment's own veth.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = attachment_digest(container_id, ifname);
    format!("{HOST_VETH_PREFIX}{}", &digest[..HOST_VETH_HEX])
}

/// Does `name` look like a name [`host_veth_name`] produces?
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == HOST_VETH_PREFIX.len() + HOST_VETH_HEX
        && name.starts_with(HOST_VETH_PREFIX)
        && name[HOST_VETH_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Everything the agent needs to program a pod's datapath.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub attachment: AttachmentId,
    /// Path of the pod's network namespace (may be gone later; informational).
    pub netns: String,
    /// Kubernetes namespace and name from CNI_ARGS (K8S_POD_NAMESPACE / K8S_POD_NAME), if given.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub ip: Ipv4Addr,
    /// MAC of the pod-side interface, "aa:bb:cc:dd:ee:ff".
    pub pod_mac: String,
    /// The host-side veth.
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: String,
    /// The pod's `hostPort`s (CNI capability `portMappings`), IPv4 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Does the host-side veth shape the pod's ingress (a `tbf` from the `bandwidth`
    /// capability)? Then every packet for the pod must cross that veth. `None` (a plugin or a
    /// record from before this field) is taken as yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_shaped: Option<bool>,
}

impl Endpoint {
    /// May packets for this pod skip its host-side veth?
    pub fn direct_delivery(&self) -> bool {
        self.ingress_shaped == Some(false)
    }
}

/// A transport protocol a `hostPort` can publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

impl PortProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One `hostPort`: traffic for `host_ip:host_port` (any of the node's addresses when `host_ip`
/// is `None`) goes to the pod's `container_port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: PortProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// Do the two claim the same port of the node (same protocol and port, and the same address
    /// or either on every address)?
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:")?,
            None => f.write_str("*:")?,
        }
        write!(
            f,
            "{}/{} -> {}",
            self.host_port,
            self.protocol.as_str(),
            self.container_port
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent ready to program endpoints?
    Status,
    /// Program this endpoint; answered only once its datapath is in place.
    Add { endpoint: Endpoint },
    /// Remove the endpoint's datapath state. Succeeds when it is already gone.
    Del { attachment: AttachmentId },
    /// Return the registered endpoint for this attachment, if any.
    Get { attachment: AttachmentId },
    /// Remove every endpoint whose attachment is not in `valid`.
    Gc { valid: Vec<AttachmentId> },
    /// Re-read the object source (the manifest directory) now and answer once every change it
    /// holds is programmed into the datapath.
    Sync,
    /// Recent flows matching `filter` (at most `last`), one [`FlowRecord`] JSON line each; with
    /// `follow` the connection stays open and new ones follow as they come.
    Flows {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        last: Option<usize>,
    },
    /// The verdict the model gives a flow, and why, without sending a packet.
    Explain { query: ExplainQuery },
}

/// An object the agent could not use, and why. Pods it selects are isolated (fail closed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// "NetworkPolicy ns/name", or a file name when the file itself did not parse.
    pub object: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Status {
        ready: bool,
        message: String,
    },
    Endpoint {
        endpoint: Option<Endpoint>,
    },
    Gc {
        removed: Vec<AttachmentId>,
    },
    /// Answer to [`Request::Sync`]: the source generation now programmed, and every object currently
    /// rejected.
    Synced {
        generation: u64,
        rejected: Vec<Rejected>,
    },
    Explained {
        explanation: Explanation,
    },
    /// ADD refused: a `hostPort` the endpoint asks for is another pod's.
    PortConflict {
        message: String,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is missing or refused the connection: the agent is not running.
    #[error("weir-agent is not reachable at {path}: {source}")]
    Unreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to weir-agent at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("weir-agent sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("weir-agent closed the connection without answering")]
    NoAnswer,
}

/// Send one request and wait for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    Connection::open(socket)?.call(request, timeout)
}

/// A connection to the agent's socket, opened ahead of its one request. The agent binds its
/// socket only once it is ready, so opening one is already a readiness check.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    path: String,
}

impl Connection {
    pub fn open(socket: &Path) -> Result<Self, ClientError> {
        let path = socket.display().to_string();
        match UnixStream::connect(socket) {
            Ok(stream) => Ok(Self { stream, path }),
            Err(source) => Err(ClientError::Unreachable { path, source }),
        }
    }

    /// Send `request` and wait up to `timeout` for the answer: one JSON line each way.
    pub fn call(self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let stream = &self.stream;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        (&*stream).write_all(&line).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).map_err(io)?;
        if answer.trim().is_empty() {
            return Err(ClientError::NoAnswer);
        }
        Ok(serde_json::from_str(&answer)?)
    }
}

/// Send a [`Request::Flows`] and hand each flow the agent sends to `each` until the agent closes
/// the connection (a dump) or `each` returns `false`. `timeout` bounds each wait for a line:
/// `None` (for `follow`) waits for ever.
pub fn flows(
    socket: &Path,
    request: &Request,
    timeout: Option<Duration>,
    mut each: impl FnMut(FlowRecord) -> bool,
) -> Result<(), ClientError> {
    let connection = Connection::open(socket)?;
    let io = |source| ClientError::Io {
        path: connection.path.clone(),
        source,
    };
    let stream = &connection.stream;
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    (&*stream).write_all(&line).map_err(io)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        // The agent answers a bad request with one `Response` line instead of flows.
        let flow = match serde_json::from_str::<FlowRecord>(&line) {
            Ok(flow) => flow,
            Err(e) => match serde_json::from_str::<Response>(&line) {
                Ok(Response::Error { message }) => {
                    return Err(ClientError::Io {
                        path: connection.path.clone(),
                        source: std::io::Error::other(message),
                    })
                }
                _ => return Err(ClientError::Decode(e)),
            },
        };
        if !each(flow) {
            break;
        }
    }
    Ok(())
}

impl Request {
    /// The CNI verb (or agent call) this request carries, for messages.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Status => "STATUS",
            Request::Add { .. } => "ADD",
            Request::Del { .. } => "DEL",
            Request::Get { .. } => "GET",
            Request::Gc { .. } => "GC",
            Request::Sync => "SYNC",
            Request::Flows { .. } => "FLOWS",
            Request::Explain { .. } => "EXPLAIN",
        }
    }
}

/// Format a MAC address the way `ip link` does.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// How packets reach other nodes' pods; every node of a cluster uses the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Straight to the other node over a network all nodes share at L2 (kind, most labs).
    #[default]
    Native,
    /// Through a flow-based VXLAN device, for underlays that route between nodes.
    Vxlan,
}

impl Routing {
    /// The name `--routing` takes (the agent's and the lab's).
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Native => "native",
            Routing::Vxlan => "vxlan",
        }
    }
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A routing mode name that is neither `native` nor `vxlan`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown routing mode {0:?} (native or vxlan)")]
pub struct UnknownRouting(pub String);

impl std::str::FromStr for Routing {
    type Err = UnknownRouting;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Routing::Native),
            "vxlan" => Ok(Routing::Vxlan),
            other => Err(UnknownRouting(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff];
        assert_eq!(parse_mac(&format_mac(mac)), Some(mac));
        for bad in [
            "",
            "0a:58",
            "0a:58:0a:f4:01:ff:00",
            "zz:58:0a:f4:01:ff",
            "a:58:0a:f4:01:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_are_tagged_json() {
        let req = Request::Del {
            attachment: AttachmentId {
                container_id: "abc".into(),
                ifname: "eth0".into(),
            },
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op":"del","attachment":{"container_id":"abc","ifname":"eth0"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
    }

    #[test]
    fn routing_modes_parse_their_names_only_and_serialize_as_them() {
        assert_eq!("vxlan".parse::<Routing>(), Ok(Routing::Vxlan));
        assert_eq!("native".parse::<Routing>(), Ok(Routing::Native));
        assert!("VXLAN".parse::<Routing>().is_err());
        assert_eq!(serde_json::to_string(&Routing::Vxlan).unwrap(), "\"vxlan\"");
        assert_eq!(Routing::Native.to_string(), "native");
    }
}
