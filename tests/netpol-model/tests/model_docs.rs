// SPDX-License-Identifier: Apache-2.0
//! The model against hand-written cases taken from the Kubernetes "Network Policies" concept page
//! and the networking.k8s.io/v1 API reference, plus the pitfalls other CNIs shipped (SCTP rules
//! must isolate TCP, `ports: [{}]` is TCP only, named ports resolve on the destination pod).
//! Worlds are written as YAML, the shape a failing differential test prints.

use std::net::Ipv4Addr;

use weir_netpol_model::{allowed, Endpoint, Proto, World};

/// Two namespaces, four pods:
/// - `prod/db` (role=db, container ports redis 6379/TCP, http 8080/TCP, dns 53/UDP) 10.244.1.2
/// - `prod/frontend` (role=frontend) 10.244.1.3
/// - `prod/other` (no labels) 10.244.1.4
/// - `dev/frontend` (role=frontend; namespace dev has project=myproject) 10.244.1.5
const BASE: &str = r#"
namespaces:
- name: prod
  labels: {purpose: production}
- name: dev
  labels: {project: myproject}
pods:
- namespace: prod
  name: db
  ip: 10.244.1.2
  labels: {role: db}
  ports:
  - {name: redis, port: 6379, protocol: TCP}
  - {name: http, port: 8080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
- namespace: prod
  name: frontend
  ip: 10.244.1.3
  labels: {role: frontend}
  ports:
  - {name: http, port: 80, protocol: TCP}
- namespace: prod
  name: other
  ip: 10.244.1.4
- namespace: dev
  name: frontend
  ip: 10.244.1.5
  labels: {role: frontend}
outside: [172.17.0.5, 172.17.1.5, 10.0.0.7, 203.0.113.1]
"#;

fn world(policies: &str) -> World {
    let mut world = World::from_yaml(BASE).expect("base world parses");
    let extra =
        World::from_yaml(policies).unwrap_or_else(|e| panic!("policies parse: {e}\n{policies}"));
    world.policies = extra.policies;
    world
}

fn ep<'w>(world: &'w World, name: &str) -> Endpoint<'w> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Endpoint::Outside(ip);
    }
    let (ns, pod) = name.split_once('/').expect("ns/name or an IP");
    Endpoint::Pod(
        world
            .pod(ns, pod)
            .unwrap_or_else(|| panic!("no pod {name}")),
    )
}

fn check(world: &World, from: &str, to: &str, proto: Proto, port: u16) -> bool {
    allowed(world, ep(world, from), ep(world, to), proto, port)
}

#[track_caller]
fn assert_allowed(world: &World, from: &str, to: &str, proto: Proto, port: u16) {
    assert!(
        check(world, from, to, proto, port),
        "{from} → {to} {proto}/{port} should be allowed"
    );
}

#[track_caller]
fn assert_denied(world: &World, from: &str, to: &str, proto: Proto, port: u16) {
    assert!(
        !check(world, from, to, proto, port),
        "{from} → {to} {proto}/{port} should be denied"
    );
}

#[test]
fn without_policies_everything_is_allowed() {
    let w = world("policies: []");
    for from in ["prod/db", "prod/frontend", "dev/frontend", "203.0.113.1"] {
        for to in ["prod/db", "prod/other", "10.0.0.7"] {
            for proto in Proto::ALL {
                assert_allowed(&w, from, to, proto, 80);
            }
        }
    }
}

/// The concept page's `test-network-policy`, with the selected pods in `prod`.
#[test]
fn concept_page_example_policy() {
    let w = world(
        r#"
policies:
- metadata: {name: test-network-policy, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    policyTypes: [Ingress, Egress]
    ingress:
    - from:
      - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
      - namespaceSelector: {matchLabels: {project: myproject}}
      - podSelector: {matchLabels: {role: frontend}}
      ports:
      - {protocol: TCP, port: 6379}
    egress:
    - to:
      - ipBlock: {cidr: 10.0.0.0/24}
      ports:
      - {protocol: TCP, port: 5978}
"#,
    );
    // Ingress to db on 6379 from the three peers.
    assert_allowed(&w, "172.17.0.5", "prod/db", Proto::Tcp, 6379);
    assert_allowed(&w, "dev/frontend", "prod/db", Proto::Tcp, 6379); // namespace project=myproject
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379); // same-namespace role=frontend
                                                                      // …and from nothing else, on nothing else.
    assert_denied(&w, "172.17.1.5", "prod/db", Proto::Tcp, 6379); // except
    assert_denied(&w, "prod/other", "prod/db", Proto::Tcp, 6379);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 6380);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Udp, 6379);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Icmp, 0);
    // Egress from db: only 10.0.0.0/24 on 5978.
    assert_allowed(&w, "prod/db", "10.0.0.7", Proto::Tcp, 5978);
    assert_denied(&w, "prod/db", "10.0.0.7", Proto::Tcp, 80);
    assert_denied(&w, "prod/db", "prod/frontend", Proto::Tcp, 80);
    // Pods the policy does not select are untouched, in both directions.
    assert_allowed(&w, "prod/other", "prod/frontend", Proto::Tcp, 80);
    assert_allowed(&w, "prod/frontend", "203.0.113.1", Proto::Udp, 53);
}

#[test]
fn default_deny_ingress_isolates_every_pod_of_the_namespace_for_ingress_only() {
    let w = world(
        r#"
policies:
- metadata: {name: default-deny-ingress, namespace: prod}
  spec:
    podSelector: {}
    policyTypes: [Ingress]
"#,
    );
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    assert_denied(&w, "dev/frontend", "prod/other", Proto::Icmp, 0);
    assert_denied(&w, "203.0.113.1", "prod/other", Proto::Udp, 53);
    // Egress stays open, and other namespaces are untouched.
    assert_allowed(&w, "prod/db", "dev/frontend", Proto::Tcp, 80);
    assert_allowed(&w, "prod/db", "203.0.113.1", Proto::Tcp, 443);
}

#[test]
fn allow_all_ingress_rule_allows_everything_including_icmp() {
    let w = world(
        r#"
policies:
- metadata: {name: deny, namespace: prod}
  spec:
    podSelector: {}
    policyTypes: [Ingress]
- metadata: {name: allow-all-ingress, namespace: prod}
  spec:
    podSelector: {}
    ingress:
    - {}
"#,
    );
    for proto in Proto::ALL {
        assert_allowed(&w, "dev/frontend", "prod/db", proto, 1234);
        assert_allowed(&w, "203.0.113.1", "prod/db", proto, 1);
    }
}

#[test]
fn default_deny_egress_and_allow_all_egress() {
    let deny = world(
        r#"
policies:
- metadata: {name: default-deny-egress, namespace: prod}
  spec:
    podSelector: {}
    policyTypes: [Egress]
"#,
    );
    assert_denied(&deny, "prod/db", "dev/frontend", Proto::Tcp, 80);
    assert_denied(&deny, "prod/db", "203.0.113.1", Proto::Icmp, 0);
    assert_allowed(&deny, "dev/frontend", "prod/db", Proto::Tcp, 80); // ingress not isolated
    let allow = world(
        r#"
policies:
- metadata: {name: default-deny-egress, namespace: prod}
  spec:
    podSelector: {}
    policyTypes: [Egress]
- metadata: {name: allow-all-egress, namespace: prod}
  spec:
    podSelector: {}
    egress:
    - {}
    policyTypes: [Egress]
"#,
    );
    assert_allowed(&allow, "prod/db", "203.0.113.1", Proto::Icmp, 0);
    assert_allowed(&allow, "prod/db", "dev/frontend", Proto::Sctp, 9);
}

#[test]
fn default_policy_types_are_ingress_plus_egress_only_when_egress_rules_exist() {
    // No policyTypes, egress rules: isolated both ways, and no ingress rule means deny ingress.
    let w = world(
        r#"
policies:
- metadata: {name: egress-only-rules, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
"#,
    );
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    assert_allowed(&w, "prod/db", "10.0.0.7", Proto::Tcp, 80);
    assert_denied(&w, "prod/db", "203.0.113.1", Proto::Tcp, 80);
    // No policyTypes and `egress: []`: only ingress is isolated.
    let w = world(
        r#"
policies:
- metadata: {name: empty-egress, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    egress: []
"#,
    );
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    assert_allowed(&w, "prod/db", "203.0.113.1", Proto::Tcp, 80);
}

#[test]
fn rules_of_a_type_the_policy_does_not_list_are_ignored() {
    let w = world(
        r#"
policies:
- metadata: {name: egress-type-with-ingress-rules, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    policyTypes: [Egress]
    ingress:
    - from: [{podSelector: {matchLabels: {role: frontend}}}]
"#,
    );
    // Ingress is not isolated by this policy: everyone gets in.
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 6379);
    // Egress is isolated with no egress rule: nothing gets out.
    assert_denied(&w, "prod/db", "prod/frontend", Proto::Tcp, 80);
}

/// "Behavior of to and from selectors": one element with both selectors is an AND, two elements
/// are an OR.
#[test]
fn namespace_and_pod_selector_in_one_peer_is_and_in_two_peers_is_or() {
    let and = world(
        r#"
policies:
- metadata: {name: and, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from:
      - namespaceSelector: {matchLabels: {project: myproject}}
        podSelector: {matchLabels: {role: frontend}}
"#,
    );
    assert_allowed(&and, "dev/frontend", "prod/db", Proto::Tcp, 6379);
    assert_denied(&and, "prod/frontend", "prod/db", Proto::Tcp, 6379); // right pod, wrong namespace
    let or = world(
        r#"
policies:
- metadata: {name: or, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from:
      - namespaceSelector: {matchLabels: {project: myproject}}
      - podSelector: {matchLabels: {role: frontend}}
"#,
    );
    assert_allowed(&or, "dev/frontend", "prod/db", Proto::Tcp, 6379);
    assert_allowed(&or, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    assert_denied(&or, "prod/other", "prod/db", Proto::Tcp, 6379);
}

#[test]
fn pod_selector_alone_only_selects_the_policy_namespace() {
    let w = world(
        r#"
policies:
- metadata: {name: same-ns, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from: [{podSelector: {}}]
"#,
    );
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 1);
    assert_denied(&w, "dev/frontend", "prod/db", Proto::Tcp, 1);
    // Selectors never match an address that is not a pod.
    assert_denied(&w, "203.0.113.1", "prod/db", Proto::Tcp, 1);
}

#[test]
fn namespace_selector_sees_the_metadata_name_label() {
    let w = world(
        r#"
policies:
- metadata: {name: by-name, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}]
"#,
    );
    assert_allowed(&w, "dev/frontend", "prod/db", Proto::Tcp, 1);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 1);
}

#[test]
fn match_expressions_operators() {
    let w = world(
        r#"
policies:
- metadata: {name: exprs, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from:
      - podSelector:
          matchExpressions:
          - {key: role, operator: NotIn, values: [db, backend]}
      ports: [{port: 1}]
    - from:
      - podSelector:
          matchExpressions:
          - {key: role, operator: DoesNotExist}
      ports: [{port: 2}]
    - from:
      - podSelector:
          matchExpressions:
          - {key: role, operator: Exists}
          - {key: role, operator: In, values: [frontend, x]}
      ports: [{port: 3}]
"#,
    );
    // NotIn matches a pod without the key, and one whose value is not listed.
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 1);
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Tcp, 1);
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 2);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 2);
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Tcp, 3);
    assert_denied(&w, "prod/other", "prod/db", Proto::Tcp, 3);
}

#[test]
fn end_port_is_an_inclusive_range() {
    let w = world(
        r#"
policies:
- metadata: {name: multi-port-egress, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    policyTypes: [Egress]
    egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
      ports: [{protocol: TCP, port: 32000, endPort: 32768}]
"#,
    );
    assert_denied(&w, "prod/db", "10.0.0.7", Proto::Tcp, 31999);
    assert_allowed(&w, "prod/db", "10.0.0.7", Proto::Tcp, 32000);
    assert_allowed(&w, "prod/db", "10.0.0.7", Proto::Tcp, 32768);
    assert_denied(&w, "prod/db", "10.0.0.7", Proto::Tcp, 32769);
    assert_denied(&w, "prod/db", "10.0.0.7", Proto::Udp, 32000);
}

#[test]
fn named_ports_resolve_on_the_destination_pod_by_name_and_protocol() {
    let w = world(
        r#"
policies:
- metadata: {name: named-in, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - ports: [{port: http}, {port: dns, protocol: UDP}, {port: redis, protocol: UDP}, {port: nope}]
- metadata: {name: named-out, namespace: dev}
  spec:
    podSelector: {}
    policyTypes: [Egress]
    egress:
    - ports: [{port: http}]
"#,
    );
    // Ingress to db: `http` is 8080 on db (80 on prod/frontend does not matter).
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Tcp, 8080);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 80);
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Udp, 53);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 53); // dns is UDP
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Udp, 6379); // redis is TCP, not UDP
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    // Egress from dev: `http` means 8080 towards db and 80 towards prod/frontend…
    assert_allowed(&w, "dev/frontend", "prod/db", Proto::Tcp, 8080);
    assert_denied(&w, "dev/frontend", "prod/db", Proto::Tcp, 80);
    assert_allowed(&w, "dev/frontend", "prod/frontend", Proto::Tcp, 80);
    // …nothing towards a pod without it, or towards an address that is not a pod.
    assert_denied(&w, "dev/frontend", "prod/other", Proto::Tcp, 80);
    assert_denied(&w, "dev/frontend", "203.0.113.1", Proto::Tcp, 80);
}

#[test]
fn ports_decide_protocols_icmp_needs_a_rule_without_ports() {
    let w = world(
        r#"
policies:
- metadata: {name: sctp-only, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - ports: [{protocol: SCTP, port: 80}]
- metadata: {name: tcp-any-port, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: frontend}}
    ingress:
    - ports: [{}]
- metadata: {name: udp-any-port, namespace: prod}
  spec:
    podSelector: {}
    policyTypes: [Egress]
    egress:
    - ports: [{protocol: UDP}]
"#,
    );
    // An SCTP rule isolates the pod for TCP and UDP.
    assert_allowed(&w, "dev/frontend", "prod/db", Proto::Sctp, 80);
    assert_denied(&w, "dev/frontend", "prod/db", Proto::Tcp, 80);
    assert_denied(&w, "dev/frontend", "prod/db", Proto::Icmp, 0);
    // `ports: [{}]` is every TCP port, nothing else.
    assert_allowed(&w, "dev/frontend", "prod/frontend", Proto::Tcp, 65535);
    assert_denied(&w, "dev/frontend", "prod/frontend", Proto::Udp, 53);
    assert_denied(&w, "dev/frontend", "prod/frontend", Proto::Icmp, 0);
    // `{protocol: UDP}` is every UDP port.
    assert_allowed(&w, "prod/other", "203.0.113.1", Proto::Udp, 1);
    assert_denied(&w, "prod/other", "203.0.113.1", Proto::Tcp, 1);
    assert_denied(&w, "prod/other", "203.0.113.1", Proto::Icmp, 0);
}

#[test]
fn both_ends_must_allow() {
    let w = world(
        r#"
policies:
- metadata: {name: db-in, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from: [{podSelector: {matchLabels: {role: frontend}}}]
- metadata: {name: frontend-out, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: frontend}}
    policyTypes: [Egress]
    egress:
    - ports: [{port: 6379}]
"#,
    );
    assert_allowed(&w, "prod/frontend", "prod/db", Proto::Tcp, 6379);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 8080); // egress says no
    assert_denied(&w, "prod/other", "prod/db", Proto::Tcp, 6379); // ingress says no
}

#[test]
fn ip_blocks_match_pod_ips_and_except_carves_them_out() {
    let w = world(
        r#"
policies:
- metadata: {name: cidr, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress:
    - from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]
    - from: [{ipBlock: {cidr: 10.244.1.4/32}}]
"#,
    );
    assert_allowed(&w, "203.0.113.1", "prod/db", Proto::Tcp, 1);
    assert_denied(&w, "prod/frontend", "prod/db", Proto::Tcp, 1);
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 1); // 10.244.1.4/32
}

#[test]
fn policies_are_additive() {
    let w = world(
        r#"
policies:
- metadata: {name: a, namespace: prod}
  spec:
    podSelector: {matchLabels: {role: db}}
    ingress: [{ports: [{port: 1}]}]
- metadata: {name: b, namespace: prod}
  spec:
    podSelector: {}
    ingress: [{ports: [{port: 2}]}]
"#,
    );
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 1);
    assert_allowed(&w, "prod/other", "prod/db", Proto::Tcp, 2);
    assert_denied(&w, "prod/other", "prod/db", Proto::Tcp, 3);
    assert_denied(&w, "prod/db", "prod/other", Proto::Tcp, 1);
}
