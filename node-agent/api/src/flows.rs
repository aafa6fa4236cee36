//! Flow records (`weir-agent flows`) and explanations (`weir-agent explain`), as the agent serves
//! them on its socket and the CLI prints them.

use std::{fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

/// One end of a flow: its address and, when it is a pod the agent knows, the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEnd {
    pub ip: Option<Ipv4Addr>,
    /// Empty outside the cluster (or for a pod the agent does not know).
    pub namespace: String,
    pub pod: String,
}

impl fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        match (self.pod.is_empty(), self.ip) {
            (true, _) => f.write_str(&ip),
            (false, Some(_)) => write!(f, "{}/{} ({ip})", self.namespace, self.pod),
            (false, None) => write!(f, "{}/{}", self.namespace, self.pod),
        }
    }
}

/// A policy verdict on a new flow, or a drop, as the datapath reported it and the agent named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// RFC 3339, UTC, with nanoseconds.
    pub time: String,
    pub src: FlowEnd,
    pub dst: FlowEnd,
    /// "TCP", "UDP", "SCTP", "ICMP", or the protocol number.
    pub proto: String,
    pub sport: u16,
    pub dport: u16,
    /// "ingress" (the verdict of `dst`'s ingress policy) or "egress" (`src`'s egress policy).
    pub direction: String,
    /// "allowed" or "denied".
    pub verdict: String,
    /// Why: "allowed_by_policy", "not_isolated", or the datapath's drop reason
    /// ("drop_policy_ingress", "drop_spoofed_ip", ...).
    pub reason: String,
    /// The policies that decided: for an allowed flow those whose rules admit it, for a denied
    /// one those that isolate the pod in that direction ("namespace/name").
    pub policies: Vec<String>,
    /// The rules that admit an allowed flow ("namespace/name ingress[0]").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Where the datapath judged it: "from_pod", "from_host", "from_remote", "after_dnat", "drop".
    pub at: String,
}

/// Which flows a `flows` request wants; every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Either end's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Either end's pod name ("name", or "namespace/name").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Protocol name, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A policy ("namespace/name") among `policies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl FlowFilter {
    pub fn matches(&self, flow: &FlowRecord) -> bool {
        let end_pod = |end: &FlowEnd, pod: &str| match pod.split_once('/') {
            Some((ns, name)) => end.namespace == ns && end.pod == name,
            None => end.pod == pod,
        };
        self.namespace
            .as_ref()
            .is_none_or(|ns| flow.src.namespace == *ns || flow.dst.namespace == *ns)
            && self
                .pod
                .as_ref()
                .is_none_or(|p| end_pod(&flow.src, p) || end_pod(&flow.dst, p))
            && self.verdict.as_ref().is_none_or(|v| flow.verdict == *v)
            && self.direction.as_ref().is_none_or(|d| flow.direction == *d)
            && self
                .proto
                .as_ref()
                .is_none_or(|p| flow.proto.eq_ignore_ascii_case(p))
            && self.port.is_none_or(|p| flow.dport == p)
            && self
                .policy
                .as_ref()
                .is_none_or(|p| flow.policies.iter().any(|q| q == p))
    }
}

impl fmt::Display for FlowRecord {
    /// One line: time, verdict, direction, the flow, and who decided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = self.time.get(11..23).unwrap_or(&self.time);
        let ports = |port: u16| {
            if matches!(self.proto.as_str(), "TCP" | "UDP" | "SCTP") {
                format!(":{port}")
            } else {
                String::new()
            }
        };
        write!(
            f,
            "{time} {:<7} {:<7} {}{} -> {}{} {} {}",
            self.verdict.to_uppercase(),
            self.direction,
            self.src,
            ports(self.sport),
            self.dst,
            ports(self.dport),
            self.proto,
            self.reason,
        )?;
        if !self.rules.is_empty() {
            write!(f, " by {}", self.rules.join(", "))?;
        } else if !self.policies.is_empty() {
            let verb = if self.verdict == "denied" {
                "isolated by"
            } else {
                "by"
            };
            write!(f, " {verb} {}", self.policies.join(", "))?;
        }
        Ok(())
    }
}

/// What `explain` is asked: a flow from `from` to `to` (each a pod "namespace/name" or an IPv4
/// address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainQuery {
    pub from: String,
    pub to: String,
    /// "TCP", "UDP" or "SCTP" (case-insensitive).
    pub proto: String,
    pub port: u16,
}

/// One direction's verdict, as the model decides it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainedDirection {
    /// "egress" (the source's policy) or "ingress" (the destination's).
    pub direction: String,
    /// The pod whose policy this is ("namespace/name").
    pub pod: String,
    /// "allowed" or "denied".
    pub verdict: String,
    /// "not_isolated", "allowed_by_policy", "no_rule_admits", "fail_closed", or, when a
    /// ClusterNetworkPolicy rule decided, "accepted_by_cluster_policy" / "denied_by_cluster_policy".
    pub reason: String,
    /// Policies selecting the pod for this direction.
    pub isolated_by: Vec<String>,
    /// Rules that admit the flow ("namespace/name ingress[0]"), or the ClusterNetworkPolicy rule
    /// that decided it ("Admin name ingress[0] (rule name): Deny").
    pub rules: Vec<String>,
    /// For `fail_closed`: the policies that cannot be enforced (empty: the pod is not known yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken: Vec<String>,
    /// What the datapath's own maps answer for this direction (`None`: not asked, e.g. the pod is
    /// on another node).
    pub datapath_allows: Option<bool>,
}

/// The answer to `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub src: FlowEnd,
    pub dst: FlowEnd,
    pub proto: String,
    pub port: u16,
    /// "allowed" or "denied": both directions must allow.
    pub verdict: String,
    /// The directions this node judges (a pod on another node is judged there).
    pub directions: Vec<ExplainedDirection>,
    /// Whether the datapath's maps give the same verdict as the model for every direction judged.
    pub datapath_agrees: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} -> {} {}/{}: {}",
            self.src,
            self.dst,
            self.proto,
            self.port,
            self.verdict.to_uppercase()
        )?;
        if self.directions.is_empty() {
            writeln!(
                f,
                "  neither end is a pod of this node: nothing here judges it"
            )?;
        }
        for d in &self.directions {
            write!(f, "  {} of {}: {}", d.direction, d.pod, d.verdict)?;
            match d.reason.as_str() {
                "not_isolated" => write!(f, " (no policy selects the pod for {})", d.direction)?,
                "allowed_by_policy" => write!(f, " by {}", d.rules.join(", "))?,
                "accepted_by_cluster_policy" | "denied_by_cluster_policy" => {
                    write!(f, " by the cluster policy rule {}", d.rules.join(", "))?
                }
                "no_rule_admits" => write!(
                    f,
                    " (isolated by {}; no rule of theirs admits {}/{} from this peer)",
                    d.isolated_by.join(", "),
                    self.proto,
                    self.port
                )?,
                _ if d.broken.is_empty() => write!(
                    f,
                    " (fail closed: the pod's labels are not known yet; isolated by {})",
                    d.isolated_by.join(", ")
                )?,
                _ => write!(
                    f,
                    " (fail closed: {} cannot be enforced)",
                    d.broken.join(", ")
                )?,
            }
            match d.datapath_allows {
                Some(a) if a == (d.verdict == "allowed") => writeln!(f, "; the datapath agrees")?,
                Some(_) => writeln!(f, "; THE DATAPATH DISAGREES")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowRecord {
        FlowRecord {
            time: "2026-12-05T07:28:41.740123456Z".to_owned(),
            src: FlowEnd {
                ip: Some(Ipv4Addr::new(10, 244, 1, 1)),
                namespace: "default".to_owned(),
                pod: "web".to_owned(),
            },
            dst: FlowEnd {
                ip: Some(Ipv4Addr::new(10, 244, 1, 3)),
                namespace: "default".to_owned(),
                pod: "db".to_owned(),
            },
            proto: "TCP".to_owned(),
            sport: 45624,
            dport: 3306,
            direction: "ingress".to_owned(),
            verdict: "denied".to_owned(),
            reason: "drop_policy_ingress".to_owned(),
            policies: vec!["default/db-policy".to_owned()],
            rules: Vec::new(),
            at: "from_pod".to_owned(),
        }
    }

    #[test]
    fn every_filter_field_must_match_and_pods_match_either_end() {
        let f = flow();
        assert!(FlowFilter::default().matches(&f));
        let with = |edit: fn(&mut FlowFilter)| {
            let mut filter = FlowFilter::default();
            edit(&mut filter);
            filter.matches(&f)
        };
        assert!(with(|x| x.pod = Some("web".into())));
        assert!(with(|x| x.pod = Some("default/db".into())));
        assert!(!with(|x| x.pod = Some("other/db".into())));
        assert!(with(|x| x.namespace = Some("default".into())));
        assert!(!with(|x| x.namespace = Some("kube-system".into())));
        assert!(with(|x| x.proto = Some("tcp".into())));
        assert!(!with(|x| x.proto = Some("udp".into())));
        assert!(with(|x| x.port = Some(3306)));
        assert!(
            !with(|x| x.port = Some(45624)),
            "the port is the destination's"
        );
        assert!(with(|x| x.policy = Some("default/db-policy".into())));
        assert!(!with(|x| x.policy = Some("default/other".into())));
        assert!(!with(|x| {
            x.verdict = Some("denied".into());
            x.direction = Some("egress".into());
        }));
    }

    #[test]
    fn a_flow_reads_as_one_line_naming_who_decided() {
        assert_eq!(
            flow().to_string(),
            "07:28:41.740 DENIED  ingress default/web (10.244.1.1):45624 -> \
             default/db (10.244.1.3):3306 TCP drop_policy_ingress isolated by default/db-policy"
        );
        let mut allowed = flow();
        allowed.verdict = "allowed".into();
        allowed.reason = "allowed_by_policy".into();
        allowed.rules = vec!["default/db-policy ingress[0]".into()];
        assert!(allowed
            .to_string()
            .ends_with("allowed_by_policy by default/db-policy ingress[0]"));
        let json: serde_json::Value = serde_json::to_value(flow()).unwrap();
        assert_eq!(json["src"]["ip"], "10.244.1.1");
        assert_eq!(json["dst"]["pod"], "db");
        assert!(json.get("rules").is_none(), "empty rules are left out");
    }
}
