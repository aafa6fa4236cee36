//! Kubernetes Events about objects the agent cannot program: rejected pods and policies (whose
//! pods are isolated) and Services whose ClusterIP is outside the service CIDR. Each problem is
//! published once when it appears, not on every sync; one that goes away and comes back is
//! published again.

use std::collections::BTreeSet;

use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tracing::{debug, warn};
use weir_agent_api::Rejected;

use crate::{KubeSource, ObjectKey};

/// The Events API limits a note to 1 kB.
const NOTE_MAX: usize = 1000;

/// One problem about one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notice {
    pub object: ObjectKey,
    pub reason: &'static str,
    pub note: String,
}

/// A problem of the agent's own node (reported on its Node object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProblem {
    pub reason: &'static str,
    pub note: String,
}

/// The problems to report now: `rejected` (from the agent: objects the source could not read and
/// policies the compiler rejected), `misplaced` Services, and problems of node `node`.
/// Rejections that name no Kubernetes object (a manifest file) are left out.
pub fn notices(
    rejected: &[Rejected],
    misplaced: &[(ObjectKey, Vec<std::net::Ipv4Addr>)],
    service_cidr: Option<ipnet::Ipv4Net>,
    node: (&str, &[NodeProblem]),
) -> BTreeSet<Notice> {
    let mut out = BTreeSet::new();
    let (node_name, problems) = node;
    for problem in problems {
        let mut note = problem.note.clone();
        truncate(&mut note);
        out.insert(Notice {
            object: ObjectKey {
                kind: crate::Kind::Node,
                namespace: String::new(),
                name: node_name.to_owned(),
            },
            reason: problem.reason,
            note,
        });
    }
    for r in rejected {
        let Some(object) = ObjectKey::parse(&r.object) else {
            continue;
        };
        let (reason, mut note) = match object.kind {
            crate::Kind::NetworkPolicy => (
                "NetworkPolicyRejected",
                format!(
                    "weir cannot program this object; the pods it selects are isolated: {}",
                    r.reason
                ),
            ),
            // Its status condition says the same; the Event is what `kubectl describe` shows.
            crate::Kind::ClusterNetworkPolicy => (
                "ClusterNetworkPolicyFailedClosed",
                format!(
                    "weir enforces this policy otherwise than written: {}",
                    r.reason
                ),
            ),
            _ => (
                "ObjectRejected",
                format!(
                    "weir cannot program this object; the pods it selects are isolated: {}",
                    r.reason
                ),
            ),
        };
        truncate(&mut note);
        out.insert(Notice {
            object,
            reason,
            note,
        });
    }
    for (object, ips) in misplaced {
        let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let range = service_cidr.map_or_else(|| "the service CIDR".to_owned(), |c| c.to_string());
        let mut note = format!(
            "ClusterIP {} is outside {range} (weir-agent --service-cidr): NetworkPolicy egress to it \
             is judged before DNAT, on the ClusterIP instead of the pod behind it",
            ips.join(", ")
        );
        truncate(&mut note);
        out.insert(Notice {
            object: object.clone(),
            reason: "ClusterIPOutsideServiceCIDR",
            note,
        });
    }
    out
}

fn truncate(note: &mut String) {
    cut(note, NOTE_MAX);
}

/// Cuts `text` to at most `max` bytes, on a character boundary; returns whether it cut.
pub(crate) fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Publishes [`Notice`]s as Events, each once while it lasts.
pub struct Notices {
    recorder: Recorder,
    published: BTreeSet<Notice>,
    service_cidr: Option<ipnet::Ipv4Net>,
    node_name: String,
}

impl Notices {
    pub fn new(client: Client, node_name: &str, service_cidr: Option<ipnet::Ipv4Net>) -> Self {
        let reporter = Reporter {
            controller: "weir-agent".into(),
            instance: Some(node_name.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            published: BTreeSet::new(),
            service_cidr,
            node_name: node_name.to_owned(),
        }
    }

    /// Publishes the problems that are new since the last call. One that fails to publish (the
    /// API is unreachable) is tried again next time.
    pub async fn publish(
        &mut self,
        source: &KubeSource,
        rejected: &[Rejected],
        node_problems: &[NodeProblem],
    ) {
        let current = notices(
            rejected,
            &source.misplaced_services(),
            self.service_cidr,
            (&self.node_name, node_problems),
        );
        let mut published = BTreeSet::new();
        for notice in current {
            if self.published.contains(&notice) {
                published.insert(notice);
                continue;
            }
            warn!(object = %notice.object, reason = notice.reason, note = %notice.note, "reporting");
            let event = Event {
                type_: EventType::Warning,
                reason: notice.reason.to_owned(),
                note: Some(notice.note.clone()),
                action: "Program".to_owned(),
                secondary: None,
            };
            match self
                .recorder
                .publish(&event, &source.reference(&notice.object))
                .await
            {
                Ok(()) => {
                    published.insert(notice);
                }
                Err(e) => {
                    debug!(object = %notice.object, error = %e, "publishing an Event failed; retrying on the next change")
                }
            }
        }
        self.published = published;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_naming_objects_and_misplaced_services_become_notices() {
        let rejected = [
            Rejected {
                object: "NetworkPolicy x/p".into(),
                reason: "port name too long".into(),
            },
            Rejected {
                object: "policy.yaml".into(),
                reason: "not YAML".into(),
            },
            Rejected {
                object: "Pod x/a".into(),
                reason: "x".repeat(2000),
            },
        ];
        let misplaced = [(
            ObjectKey::parse("Service x/s").unwrap(),
            vec![std::net::Ipv4Addr::new(172, 20, 0, 5)],
        )];
        let node = [NodeProblem {
            reason: "HostAddressesLeftOut",
            note: "too many".into(),
        }];
        let notices = notices(
            &rejected,
            &misplaced,
            Some("10.96.0.0/12".parse().unwrap()),
            ("n1", &node),
        );
        let summary: Vec<(String, &str)> = notices
            .iter()
            .map(|n| (n.object.to_string(), n.reason))
            .collect();
        assert_eq!(
            summary,
            [
                ("Pod x/a".to_owned(), "ObjectRejected"),
                ("NetworkPolicy x/p".to_owned(), "NetworkPolicyRejected"),
                ("Service x/s".to_owned(), "ClusterIPOutsideServiceCIDR"),
                ("Node n1".to_owned(), "HostAddressesLeftOut"),
            ]
        );
        assert!(notices.iter().all(|n| n.note.len() <= NOTE_MAX));
        let service = notices
            .iter()
            .find(|n| n.reason == "ClusterIPOutsideServiceCIDR")
            .unwrap();
        assert!(service.note.contains("172.20.0.5") && service.note.contains("10.96.0.0/12"));
    }
}
