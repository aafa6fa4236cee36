//! NetworkPolicy semantics, one test per rule of the API, checked on compiled tables through the
//! same decision the datapath makes (egress of a local source, ingress of a local destination).

use std::{net::Ipv4Addr, sync::Arc};

use weir_policy::{
    compile::{compile, Compiled, DirectionRules},
    manifest::parse_documents,
    model::{Cluster, PodKey},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;

/// Namespaces prod (team=a) and dev (team=b) have objects; "other" has only a pod.
const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: web, labels: {app: web, tier: fe}}
spec:
  containers:
  - {name: c, image: i, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: api, labels: {app: api, tier: be}}
spec:
  containers:
  - {name: c, image: i, ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: db, labels: {app: db}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: client, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: web, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.2.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: other, name: x, labels: {app: x}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.3.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: pending, labels: {app: api}}
spec: {containers: [{name: c, image: i}]}
"#;

const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const API: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const DB: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const DEV_WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const X: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const ALL_PODS: [Ipv4Addr; 6] = [WEB, API, DB, CLIENT, DEV_WEB, X];

fn cluster(policies: &str) -> Cluster {
    let mut cluster = Cluster::default();
    let text = format!("{WORLD}\n---\n{policies}");
    cluster
        .apply_all(parse_documents(&text).expect("valid manifests"))
        .expect("valid objects");
    cluster
}

/// Every pod with an address is local.
fn compile_all(cluster: &Cluster) -> Compiled {
    let local: Vec<(Ipv4Addr, Option<PodKey>)> = cluster
        .pods()
        .filter_map(|p| p.ip.map(|ip| (ip, Some(p.key.clone()))))
        .collect();
    compile(cluster, &local)
}

fn world(policies: &str) -> Compiled {
    compile_all(&cluster(policies))
}

fn policy(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n---\n"
    )
}

fn tcp(c: &Compiled, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> bool {
    c.flow_allowed(src, dst, TCP, port)
}

fn ingress(c: &Compiled, ip: Ipv4Addr) -> &DirectionRules {
    &c.endpoints[&ip].ingress
}

fn egress(c: &Compiled, ip: Ipv4Addr) -> &DirectionRules {
    &c.endpoints[&ip].egress
}

// ---- selection and isolation ----

#[test]
fn pod_selected_by_no_policy_is_not_isolated() {
    let c = world("");
    for ip in ALL_PODS {
        assert_eq!(ingress(&c, ip), &DirectionRules::Unisolated);
        assert_eq!(egress(&c, ip), &DirectionRules::Unisolated);
    }
    assert!(c.problems.is_empty());
}

#[test]
fn empty_pod_selector_selects_every_pod_of_the_policy_namespace_only() {
    let c = world(&policy("deny", "prod", "  podSelector: {}"));
    for ip in [WEB, API, DB] {
        assert!(!tcp(&c, CLIENT, ip, 80), "{ip} should deny ingress");
        assert_eq!(
            egress(&c, ip),
            &DirectionRules::Unisolated,
            "no egress rules: not egress-isolated"
        );
    }
    assert_eq!(ingress(&c, CLIENT), &DirectionRules::Unisolated);
    assert_eq!(
        ingress(&c, DEV_WEB),
        &DirectionRules::Unisolated,
        "same labels, other namespace"
    );
}

#[test]
fn pod_selector_match_labels_and_expressions_pick_the_pods() {
    let spec = r#"  podSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [fe, x]}
    - {key: gone, operator: DoesNotExist}
    - {key: app, operator: Exists}
    - {key: app, operator: NotIn, values: [db]}"#;
    let c = world(&policy("p", "prod", spec));
    assert!(matches!(ingress(&c, WEB), DirectionRules::Rules(_)));
    assert_eq!(ingress(&c, API), &DirectionRules::Unisolated);
    assert_eq!(ingress(&c, DB), &DirectionRules::Unisolated);
}

#[test]
fn invalid_pod_selector_fails_closed_every_pod_of_the_namespace_for_its_policy_types() {
    let bad = "  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [web]}]}";
    let c = world(&policy("bad", "prod", bad));
    for ip in [WEB, API, DB] {
        assert_eq!(ingress(&c, ip), &DirectionRules::FailClosed);
        assert_eq!(
            egress(&c, ip),
            &DirectionRules::Unisolated,
            "default types: Ingress only"
        );
    }
    assert_eq!(ingress(&c, CLIENT), &DirectionRules::Unisolated);
    assert_eq!(c.problems.len(), 1);
    assert!(
        c.problems[0].to_string().contains("prod/bad"),
        "{}",
        c.problems[0]
    );

    let egress_only =
        "  podSelector: {matchExpressions: [{key: app, operator: In}]}\n  policyTypes: [Egress]";
    let c = world(&policy("bad", "prod", egress_only));
    assert_eq!(ingress(&c, WEB), &DirectionRules::Unisolated);
    assert_eq!(egress(&c, WEB), &DirectionRules::FailClosed);
}

#[test]
fn a_local_pod_missing_from_the_model_is_closed_wherever_its_namespace_isolates() {
    // prod isolates app=db for ingress only; a local endpoint claims prod/newcomer, whose Pod the
    // model has not seen: its labels might be app=db, so its ingress is closed, not guessed open.
    let cluster = cluster(&policy(
        "db",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]",
    ));
    let newcomer = Ipv4Addr::new(10, 0, 1, 9);
    let stranger = Ipv4Addr::new(10, 0, 2, 9);
    let c = compile(
        &cluster,
        &[
            (newcomer, Some(PodKey::new("prod", "newcomer"))),
            (stranger, Some(PodKey::new("dev", "stranger"))),
            (API, Some(PodKey::new("prod", "api"))),
        ],
    );
    assert_eq!(ingress(&c, newcomer), &DirectionRules::FailClosed);
    assert_eq!(
        egress(&c, newcomer),
        &DirectionRules::Unisolated,
        "prod isolates no egress"
    );
    assert!(!tcp(&c, API, newcomer, 80), "not even from a pod db admits");
    // dev has no policy: nothing its labels could be makes it isolated.
    assert_eq!(ingress(&c, stranger), &DirectionRules::Unisolated);
    assert_eq!(egress(&c, stranger), &DirectionRules::Unisolated);
    assert_eq!(
        c.unknown_pods.values().cloned().collect::<Vec<_>>(),
        [
            PodKey::new("prod", "newcomer"),
            PodKey::new("dev", "stranger")
        ]
    );
}

#[test]
fn unknown_policy_type_fails_closed_both_directions_of_the_selected_pods() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress, Sideways]",
    ));
    assert_eq!(ingress(&c, WEB), &DirectionRules::FailClosed);
    assert_eq!(egress(&c, WEB), &DirectionRules::FailClosed);
    assert_eq!(ingress(&c, API), &DirectionRules::Unisolated);
    assert!(!c.problems.is_empty());
}

#[test]
fn omitted_policy_types_mean_ingress_plus_egress_only_when_there_are_egress_rules() {
    let c = world(&policy("p", "prod", "  podSelector: {}\n  egress: []"));
    assert!(matches!(ingress(&c, WEB), DirectionRules::Rules(_)));
    assert_eq!(
        egress(&c, WEB),
        &DirectionRules::Unisolated,
        "egress: [] adds no Egress type"
    );

    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 1.1.1.1/32}}]}]",
    ));
    assert!(
        !tcp(&c, WEB, OUTSIDE, 53),
        "egress rules make the policy an Egress one"
    );
    assert!(tcp(&c, WEB, Ipv4Addr::new(1, 1, 1, 1), 53));
    assert!(!tcp(&c, CLIENT, WEB, 80), "and it stays an Ingress one");
}

#[test]
fn egress_policy_type_without_rules_denies_all_egress() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]",
    ));
    assert!(!tcp(&c, WEB, OUTSIDE, 443));
    assert!(!c.flow_allowed(WEB, API, ICMP, 0));
    assert!(tcp(&c, CLIENT, WEB, 80), "ingress untouched");
}

#[test]
fn ingress_policy_type_with_no_ingress_rules_denies_all_ingress() {
    for spec in [
        "  podSelector: {matchLabels: {app: web}}",
        "  podSelector: {matchLabels: {app: web}}\n  ingress: []",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]",
    ] {
        let c = world(&policy("p", "prod", spec));
        for src in [API, CLIENT, OUTSIDE] {
            assert!(!tcp(&c, src, WEB, 8080), "{spec}: {src}");
            assert!(!c.flow_allowed(src, WEB, UDP, 53));
        }
        assert!(tcp(&c, WEB, OUTSIDE, 443), "egress untouched");
    }
}

#[test]
fn ingress_rules_are_ignored_when_policy_types_leave_ingress_out() {
    let spec = "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  ingress: [{}]\n  egress: [{to: [{podSelector: {}}]}]";
    let c = world(&policy("p", "prod", spec));
    assert_eq!(ingress(&c, WEB), &DirectionRules::Unisolated);
    assert!(tcp(&c, WEB, API, 80));
    assert!(!tcp(&c, WEB, OUTSIDE, 80));
}

#[test]
fn allowed_traffic_is_the_union_over_the_policies_selecting_the_pod() {
    let a = policy("a", "prod", "  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 80}]}]");
    let b = policy("b", "prod", "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 443}]}]");
    let c = world(&(a + &b));
    assert!(tcp(&c, API, WEB, 80));
    assert!(!tcp(&c, API, WEB, 443));
    assert!(tcp(&c, DB, WEB, 443));
    assert!(!tcp(&c, DB, WEB, 80));
    assert!(tcp(&c, DB, API, 443), "only b selects api");
    assert!(!tcp(&c, WEB, API, 443));
}

// ---- peers ----

#[test]
fn pod_selector_peer_selects_pods_in_the_policy_namespace_only() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]"));
    assert!(tcp(&c, WEB, DB, 5432));
    assert!(
        !tcp(&c, DEV_WEB, DB, 5432),
        "app=web in dev is not in the policy namespace"
    );
    assert!(!tcp(&c, API, DB, 5432));
}

#[test]
fn namespace_selector_peer_selects_every_pod_in_matching_namespaces() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]"));
    assert!(tcp(&c, CLIENT, DB, 1) && tcp(&c, DEV_WEB, DB, 1));
    assert!(!tcp(&c, WEB, DB, 1), "own namespace does not match team=b");
    assert!(!tcp(&c, X, DB, 1));
}

#[test]
fn pod_and_namespace_selectors_in_one_peer_are_anded() {
    let both = "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: web}}}]}]";
    let c = world(&policy("p", "prod", both));
    assert!(tcp(&c, DEV_WEB, DB, 1));
    assert!(!tcp(&c, CLIENT, DB, 1), "right namespace, wrong labels");
    assert!(!tcp(&c, WEB, DB, 1), "right labels, wrong namespace");

    let either = "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}, {podSelector: {matchLabels: {app: web}}}]}]";
    let c = world(&policy("p", "prod", either));
    assert!(tcp(&c, CLIENT, DB, 1) && tcp(&c, WEB, DB, 1) && tcp(&c, DEV_WEB, DB, 1));
    assert!(!tcp(&c, API, DB, 1));
}

#[test]
fn empty_namespace_selector_selects_pods_of_every_namespace() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    ));
    for src in [WEB, API, CLIENT, DEV_WEB, X] {
        assert!(tcp(&c, src, DB, 1), "{src}");
    }
    assert!(!tcp(&c, OUTSIDE, DB, 1), "pods only, not addresses");
}

#[test]
fn namespace_without_a_namespace_object_matches_on_its_metadata_name_label() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}]}]"));
    assert!(tcp(&c, X, DB, 1));
    assert!(!tcp(&c, CLIENT, DB, 1));
}

#[test]
fn ip_block_matches_pod_addresses_as_well_as_outside_ones() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.2.0/24}}, {ipBlock: {cidr: 8.8.0.0/16}}]}]"));
    assert!(
        tcp(&c, CLIENT, DB, 1) && tcp(&c, DEV_WEB, DB, 1),
        "pods inside the CIDR match"
    );
    assert!(tcp(&c, OUTSIDE, DB, 1));
    assert!(!tcp(&c, WEB, DB, 1));
}

#[test]
fn ip_block_except_denies_the_excepted_addresses() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24, 10.0.1.1/32]}}]}]"));
    assert!(tcp(&c, API, DB, 1) && tcp(&c, X, DB, 1));
    assert!(!tcp(&c, WEB, DB, 1) && !tcp(&c, CLIENT, DB, 1) && !tcp(&c, DEV_WEB, DB, 1));
    assert!(!tcp(&c, OUTSIDE, DB, 1));
}

#[test]
fn everything_except_the_pod_cidr_plus_same_namespace_pods_allows_exactly_those() {
    // kubernetes#96341: outside world allowed, other namespaces' pods denied, own namespace allowed.
    let spec = "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/16]}\n    - podSelector: {}";
    let c = world(&policy("p", "prod", spec));
    assert!(tcp(&c, OUTSIDE, DB, 1));
    assert!(tcp(&c, WEB, DB, 1) && tcp(&c, API, DB, 1));
    assert!(!tcp(&c, CLIENT, DB, 1) && !tcp(&c, X, DB, 1));
    assert!(
        !tcp(&c, Ipv4Addr::new(10, 0, 9, 9), DB, 1),
        "unknown address in the pod CIDR"
    );
}

#[test]
fn rule_without_peers_allows_every_source() {
    for rule in [
        "[{ports: [{port: 80}]}]",
        "[{from: [], ports: [{port: 80}]}]",
    ] {
        let c = world(&policy(
            "p",
            "prod",
            &format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: {rule}"),
        ));
        for src in [WEB, CLIENT, X, OUTSIDE, Ipv4Addr::new(192, 0, 2, 1)] {
            assert!(tcp(&c, src, DB, 80), "{rule}: {src}");
            assert!(!tcp(&c, src, DB, 81));
        }
    }
}

#[test]
fn peer_without_selector_or_ip_block_drops_its_rule_but_the_policy_still_isolates() {
    let spec = "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}, {}]\n  - from: [{podSelector: {matchLabels: {app: api}}}]";
    let c = world(&policy("p", "prod", spec));
    assert!(
        !tcp(&c, WEB, DB, 1),
        "the whole invalid rule contributes nothing"
    );
    assert!(tcp(&c, API, DB, 1), "valid rules still apply");
    assert!(!tcp(&c, CLIENT, DB, 1));
    assert_eq!(c.problems.len(), 1);
    assert!(
        c.problems[0].message.contains("spec.ingress[0].from[1]"),
        "{}",
        c.problems[0]
    );
}

#[test]
fn invalid_peers_are_reported_and_deny() {
    for peer in [
        "{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}",
        "{ipBlock: {cidr: 10.0.0.0/33}}",
        "{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}",
        "{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}",
        "{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}",
        "{namespaceSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}}",
    ] {
        let spec =
            format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{from: [{peer}]}}]");
        let c = world(&policy("p", "prod", &spec));
        for src in [WEB, CLIENT, OUTSIDE, Ipv4Addr::new(10, 1, 0, 1)] {
            assert!(!tcp(&c, src, DB, 1), "{peer}: {src}");
        }
        assert_eq!(c.problems.len(), 1, "{peer}");
    }
}

#[test]
fn ipv6_ip_block_matches_no_ipv4_address_and_is_not_a_problem() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: '::/0', except: ['fd00::/8']}}]}]"));
    assert!(!tcp(&c, OUTSIDE, DB, 1) && !tcp(&c, WEB, DB, 1));
    assert!(c.problems.is_empty());
}

#[test]
fn ip_block_cidr_with_host_bits_is_normalized() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.2.77/24}}]}]"));
    assert!(tcp(&c, CLIENT, DB, 1));
    let DirectionRules::Rules(t) = ingress(&c, DB) else {
        panic!()
    };
    assert_eq!(
        t.entries
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.2.0/24"]
    );
}

// ---- ports ----

#[test]
fn port_protocol_defaults_to_tcp() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 5432}]}]",
    ));
    assert!(c.flow_allowed(WEB, DB, TCP, 5432));
    assert!(!c.flow_allowed(WEB, DB, UDP, 5432));
    assert!(!c.flow_allowed(WEB, DB, SCTP, 5432));
}

#[test]
fn udp_and_sctp_ports_allow_only_their_protocol() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 53, protocol: UDP}, {port: 9, protocol: SCTP}]}]"));
    assert!(c.flow_allowed(WEB, DB, UDP, 53));
    assert!(c.flow_allowed(WEB, DB, SCTP, 9));
    assert!(!c.flow_allowed(WEB, DB, TCP, 53) && !c.flow_allowed(WEB, DB, TCP, 9));
}

#[test]
fn sctp_rule_still_isolates_tcp() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 80, protocol: SCTP}]}]"));
    assert!(c.flow_allowed(WEB, DB, SCTP, 80));
    assert!(!c.flow_allowed(WEB, DB, TCP, 80));
    assert!(!c.flow_allowed(WEB, DB, UDP, 80));
    assert!(!c.flow_allowed(WEB, DB, ICMP, 0));
}

#[test]
fn end_port_range_is_honoured() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 32000, endPort: 32768}]}]"));
    for port in [32000, 32001, 32767, 32768] {
        assert!(tcp(&c, WEB, DB, port), "{port}");
    }
    for port in [31999, 32769, 80] {
        assert!(!tcp(&c, WEB, DB, port), "{port}");
    }
}

#[test]
fn empty_port_entry_allows_every_tcp_port_and_nothing_else() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{}]}]",
    ));
    assert!(tcp(&c, WEB, DB, 1) && tcp(&c, WEB, DB, 65535));
    assert!(!c.flow_allowed(WEB, DB, UDP, 53));
    assert!(!c.flow_allowed(WEB, DB, ICMP, 0));
}

#[test]
fn port_entry_with_protocol_only_allows_every_port_of_that_protocol() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{protocol: UDP}]}]",
    ));
    assert!(c.flow_allowed(WEB, DB, UDP, 1) && c.flow_allowed(WEB, DB, UDP, 65535));
    assert!(!c.flow_allowed(WEB, DB, TCP, 80));
}

#[test]
fn rule_without_ports_allows_every_protocol_including_icmp() {
    for ports in ["", ", ports: []"] {
        let c = world(&policy("p", "prod", &format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]{ports}}}]")));
        assert!(c.flow_allowed(WEB, DB, ICMP, 0), "{ports}");
        assert!(c.flow_allowed(WEB, DB, 47, 0), "GRE: any protocol");
        assert!(c.flow_allowed(WEB, DB, UDP, 9) && c.flow_allowed(WEB, DB, SCTP, 9));
        assert!(!c.flow_allowed(API, DB, ICMP, 0));
    }
}

#[test]
fn invalid_ports_drop_their_rule_and_are_reported() {
    for port in [
        "{port: 90, endPort: 80}",
        "{endPort: 80}",
        "{port: http, endPort: 80}",
        "{port: 0}",
        "{port: 70000}",
        "{port: 80, endPort: 70000}",
        "{port: 80, protocol: tcp}",
        "{port: 80, protocol: ICMP}",
        "{port: '80'}",
        "{port: Http}",
    ] {
        let spec = format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{ports: [{{port: 5432}}, {port}]}}, {{ports: [{{port: 1}}]}}]");
        let c = world(&policy("p", "prod", &spec));
        assert!(!tcp(&c, WEB, DB, 5432), "{port}: the whole rule is dropped");
        assert!(tcp(&c, WEB, DB, 1), "{port}: other rules stay");
        assert_eq!(c.problems.len(), 1, "{port}");
        assert!(
            c.problems[0].message.contains("spec.ingress[0].ports[1]"),
            "{}",
            c.problems[0]
        );
    }
}

#[test]
fn ingress_named_port_resolves_against_the_selected_pod() {
    let c = world(&policy("p", "prod", "  podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}\n  ingress: [{ports: [{port: http}]}]"));
    assert!(tcp(&c, CLIENT, WEB, 8080) && !tcp(&c, CLIENT, WEB, 80));
    assert!(tcp(&c, CLIENT, API, 80) && !tcp(&c, CLIENT, API, 8080));
    assert!(
        !Arc::ptr_eq(table(ingress(&c, WEB)), table(ingress(&c, API))),
        "tables differ by the pod's ports"
    );
}

#[test]
fn named_port_needs_the_protocol_to_match_too() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: api}}\n  ingress: [{ports: [{port: dns}, {port: http, protocol: UDP}]}]"));
    // dns is UDP/53 on api, but the rule asks for TCP dns; http is TCP, the rule asks for UDP.
    assert!(!c.flow_allowed(CLIENT, API, TCP, 53) && !c.flow_allowed(CLIENT, API, UDP, 53));
    assert!(!c.flow_allowed(CLIENT, API, UDP, 80) && !c.flow_allowed(CLIENT, API, TCP, 80));
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: api}}\n  ingress: [{ports: [{port: dns, protocol: UDP}]}]"));
    assert!(c.flow_allowed(CLIENT, API, UDP, 53));
}

#[test]
fn named_port_missing_on_the_destination_matches_nothing() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: http}]}]",
    ));
    for port in [80, 8080, 0, 65535] {
        assert!(!tcp(&c, WEB, DB, port), "{port}");
    }
    assert!(c.problems.is_empty(), "not an error, just no match");
}

#[test]
fn egress_named_port_resolves_against_each_destination_pod() {
    let spec = "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchLabels: {team: a}}}], ports: [{port: http}, {port: 443}]}]";
    let c = world(&policy("p", "dev", spec));
    assert!(tcp(&c, CLIENT, WEB, 8080) && !tcp(&c, CLIENT, WEB, 80));
    assert!(tcp(&c, CLIENT, API, 80) && !tcp(&c, CLIENT, API, 8080));
    assert!(
        !tcp(&c, CLIENT, DB, 80) && !tcp(&c, CLIENT, DB, 8080),
        "db has no http port"
    );
    assert!(
        tcp(&c, CLIENT, DB, 443),
        "numeric ports apply to every destination"
    );
    assert!(!tcp(&c, CLIENT, DEV_WEB, 443), "not in a team=a namespace");
}

#[test]
fn egress_named_port_in_an_ip_block_applies_to_pods_inside_it_and_numeric_ports_to_everyone() {
    let spec = "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.1.2/32]}}], ports: [{port: http}, {port: 53, protocol: UDP}]}]";
    let c = world(&policy("p", "dev", spec));
    assert!(
        tcp(&c, CLIENT, WEB, 8080),
        "pod inside the block: its named port"
    );
    assert!(!tcp(&c, CLIENT, API, 80), "pod excepted from the block");
    assert!(!c.flow_allowed(CLIENT, API, UDP, 53));
    assert!(
        !tcp(&c, CLIENT, OUTSIDE, 8080) && !tcp(&c, CLIENT, OUTSIDE, 80),
        "no pod, no named port"
    );
    assert!(c.flow_allowed(CLIENT, OUTSIDE, UDP, 53));
    assert!(c.flow_allowed(CLIENT, WEB, UDP, 53));
}

#[test]
fn egress_named_port_without_peers_applies_to_every_pod() {
    let spec = "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: http}]}]";
    let c = world(&policy("p", "dev", spec));
    assert!(tcp(&c, CLIENT, WEB, 8080) && tcp(&c, CLIENT, API, 80));
    assert!(!tcp(&c, CLIENT, DB, 80) && !tcp(&c, CLIENT, OUTSIDE, 80));
}

// ---- addresses and endpoints ----

#[test]
fn pods_without_an_address_are_in_no_peer_set() {
    let c = world(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]"));
    let DirectionRules::Rules(t) = ingress(&c, DB) else {
        panic!()
    };
    assert_eq!(
        t.len(),
        1,
        "only api has an address, not prod/pending: {t:?}"
    );
}

#[test]
fn local_endpoint_address_overrides_the_model_and_stale_claims_are_dropped() {
    let cluster = cluster(&policy("p", "prod", "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]}]"));
    let new_web = Ipv4Addr::new(10, 0, 1, 50);
    let local = [
        (DB, Some(PodKey::new("prod", "db"))),
        (new_web, Some(PodKey::new("prod", "web"))),
        // dev/client's address in the model now belongs to a different local pod.
        (CLIENT, Some(PodKey::new("prod", "api"))),
    ];
    let c = compile(&cluster, &local);
    assert!(tcp(&c, new_web, DB, 1));
    assert!(
        !tcp(&c, WEB, DB, 1),
        "the model's old address is not web's any more"
    );
    assert!(!tcp(&c, CLIENT, DB, 1), "stale claim of a local address");
}

#[test]
fn endpoint_without_a_pod_is_not_isolated_but_is_in_ip_blocks() {
    let cluster = cluster(&policy(
        "p",
        "prod",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.9.0/24}}]}]",
    ));
    let stranger = Ipv4Addr::new(10, 0, 9, 9);
    let local = [(stranger, None), (DB, Some(PodKey::new("prod", "db")))];
    let c = compile(&cluster, &local);
    assert_eq!(c.endpoints[&stranger].ingress, DirectionRules::Unisolated);
    assert!(tcp(&c, stranger, DB, 1));
}

#[test]
fn endpoint_whose_pod_is_not_in_the_model_is_closed_not_guessed_to_have_no_labels() {
    // Counting it as a pod without labels would leave its ingress open, yet it may be app=web.
    let cluster = cluster(
        &(policy("all", "prod", "  podSelector: {}\n  policyTypes: [Egress]")
            + &policy("web", "prod", "  podSelector: {matchLabels: {app: web}}")),
    );
    let ghost = Ipv4Addr::new(10, 0, 1, 99);
    let c = compile(&cluster, &[(ghost, Some(PodKey::new("prod", "ghost")))]);
    assert_eq!(c.endpoints[&ghost].egress, DirectionRules::FailClosed);
    assert_eq!(c.endpoints[&ghost].ingress, DirectionRules::FailClosed);
}

#[test]
fn only_local_endpoints_get_rules() {
    let cluster = cluster(&policy("p", "prod", "  podSelector: {}"));
    let c = compile(&cluster, &[(WEB, Some(PodKey::new("prod", "web")))]);
    assert_eq!(c.endpoints.keys().copied().collect::<Vec<_>>(), [WEB]);
}

#[test]
fn endpoints_selected_by_the_same_policies_share_one_table() {
    let c = world(&policy(
        "p",
        "prod",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 443}]}]",
    ));
    let tables: Vec<_> = [WEB, API, DB]
        .iter()
        .map(|ip| table(ingress(&c, *ip)).clone())
        .collect();
    assert!(Arc::ptr_eq(&tables[0], &tables[1]) && Arc::ptr_eq(&tables[1], &tables[2]));
}

fn table(rules: &DirectionRules) -> &Arc<weir_policy::compile::RuleTable> {
    match rules {
        DirectionRules::Rules(t) => t,
        other => panic!("expected a table, got {other:?}"),
    }
}
