// SPDX-License-Identifier: Apache-2.0
//! The generator: deterministic, valid for the API server, round-trips through YAML, covers
//! every feature, and selectors actually hit; and the shrinker gets to a small world.

use std::{collections::BTreeSet, net::Ipv4Addr};

use weir_netpol_model::{
    eval::{parse_cidr, prefix_mask, selects},
    k8s_openapi::{
        api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort},
        apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
    },
    random_world, shrink, Size, World,
};

fn peers_and_ports(world: &World) -> (Vec<&NetworkPolicyPeer>, Vec<&NetworkPolicyPort>) {
    let mut peers = Vec::new();
    let mut ports = Vec::new();
    for spec in world.policies.iter().filter_map(|p| p.spec.as_ref()) {
        for rule in spec.ingress.iter().flatten() {
            peers.extend(rule.from.iter().flatten());
            ports.extend(rule.ports.iter().flatten());
        }
        for rule in spec.egress.iter().flatten() {
            peers.extend(rule.to.iter().flatten());
            ports.extend(rule.ports.iter().flatten());
        }
    }
    (peers, ports)
}

fn selectors(world: &World) -> Vec<&LabelSelector> {
    let (peers, _) = peers_and_ports(world);
    let mut out: Vec<&LabelSelector> = world
        .policies
        .iter()
        .filter_map(|p| p.spec.as_ref()?.pod_selector.as_ref())
        .collect();
    for peer in peers {
        out.extend(peer.pod_selector.iter());
        out.extend(peer.namespace_selector.iter());
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_world() {
    for seed in 0..50 {
        assert_eq!(
            random_world(seed, &Size::default()),
            random_world(seed, &Size::default())
        );
    }
    assert_ne!(
        random_world(1, &Size::default()),
        random_world(2, &Size::default())
    );
}

#[test]
fn given_ips_keep_everything_but_the_addresses() {
    let ips: Vec<Ipv4Addr> = (0..6).map(|i| Ipv4Addr::new(10, 244, 1, 100 + i)).collect();
    for seed in 0..50 {
        let drawn = random_world(seed, &Size::default());
        let given = random_world(seed, &Size::default().with_pod_ips(ips.clone()));
        assert_eq!(drawn.namespaces, given.namespaces);
        assert_eq!(drawn.pods.len(), given.pods.len());
        for (a, b) in drawn.pods.iter().zip(&given.pods) {
            assert_eq!(
                (&a.namespace, &a.name, &a.labels, &a.ports),
                (&b.namespace, &b.name, &b.labels, &b.ports)
            );
        }
        assert_eq!(
            given.pods.iter().map(|p| p.ip).collect::<Vec<_>>(),
            ips[..given.pods.len()]
        );
        assert_eq!(drawn.policies.len(), given.policies.len());
    }
}

#[test]
fn worlds_round_trip_through_yaml() {
    for seed in 0..200 {
        let world = random_world(seed, &Size::default());
        let yaml = world.to_yaml();
        assert_eq!(
            World::from_yaml(&yaml).expect("parses"),
            world,
            "seed {seed}:\n{yaml}"
        );
    }
}

/// What API validation would check on the fields the generator fills.
#[test]
fn generated_policies_pass_api_validation() {
    for seed in 0..500 {
        let world = random_world(seed, &Size::default());
        let (peers, ports) = peers_and_ports(&world);
        for peer in peers {
            let set = [
                peer.ip_block.is_some(),
                peer.pod_selector.is_some() || peer.namespace_selector.is_some(),
            ];
            assert_eq!(
                set.iter().filter(|s| **s).count(),
                1,
                "seed {seed}: {peer:?}"
            );
            if let Some(block) = &peer.ip_block {
                let (net, len) = parse_cidr(&block.cidr);
                assert_eq!(
                    u32::from(net) & !prefix_mask(len),
                    0,
                    "seed {seed}: {} not canonical",
                    block.cidr
                );
                for except in block.except.iter().flatten() {
                    let (e_net, e_len) = parse_cidr(except);
                    assert!(
                        e_len > len,
                        "seed {seed}: {except} not inside {}",
                        block.cidr
                    );
                    assert_eq!(
                        u32::from(e_net) & prefix_mask(len),
                        u32::from(net),
                        "seed {seed}: {except}"
                    );
                }
            }
        }
        for port in ports {
            if let Some(end) = port.end_port {
                let Some(IntOrString::Int(first)) = port.port else {
                    panic!("seed {seed}: endPort without a numeric port: {port:?}")
                };
                assert!((first..=65535).contains(&end), "seed {seed}: {port:?}");
            }
            if let Some(IntOrString::Int(n)) = port.port {
                assert!((1..=65535).contains(&n), "seed {seed}: {port:?}");
            }
        }
        for selector in selectors(&world) {
            for req in selector.match_expressions.iter().flatten() {
                let n = req.values.as_ref().map_or(0, Vec::len);
                match req.operator.as_str() {
                    "In" | "NotIn" => assert!(n > 0, "seed {seed}: {req:?}"),
                    "Exists" | "DoesNotExist" => assert_eq!(n, 0, "seed {seed}: {req:?}"),
                    other => panic!("seed {seed}: operator {other}"),
                }
            }
        }
    }
}

/// Over 300 seeds every feature shows up, and policies select pods often enough to matter.
#[test]
fn the_generator_covers_every_feature() {
    let mut seen = BTreeSet::new();
    let mut selections = 0;
    let mut pairs = 0;
    for seed in 0..300 {
        let world = random_world(seed, &Size::default());
        for policy in &world.policies {
            let spec = policy.spec.as_ref().expect("spec");
            seen.insert(match &spec.policy_types {
                None => "policyTypes absent",
                Some(t) if t.len() == 2 => "policyTypes both",
                Some(_) => "policyTypes one",
            });
            if spec.pod_selector.is_none() {
                seen.insert("podSelector absent");
            }
            if spec.ingress.as_ref().is_some_and(Vec::is_empty) {
                seen.insert("ingress empty");
            }
            if spec.egress.is_none() {
                seen.insert("egress absent");
            }
            for pod in &world.pods {
                pairs += 1;
                selections += usize::from(selects(policy, pod));
            }
        }
        for selector in selectors(&world) {
            if *selector == LabelSelector::default() {
                seen.insert("empty selector");
            }
            if selector.match_labels.is_some() {
                seen.insert("matchLabels");
            }
            for req in selector.match_expressions.iter().flatten() {
                seen.insert(match req.operator.as_str() {
                    "In" => "In",
                    "NotIn" => "NotIn",
                    "Exists" => "Exists",
                    _ => "DoesNotExist",
                });
                if req.key == "kubernetes.io/metadata.name" {
                    seen.insert("metadata.name");
                }
            }
        }
        let (peers, ports) = peers_and_ports(&world);
        for peer in peers {
            match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
                (Some(b), _, _) if b.except.as_ref().is_some_and(|e| !e.is_empty()) => {
                    seen.insert("ipBlock except")
                }
                (Some(b), _, _) if b.cidr.ends_with("/32") => seen.insert("ipBlock /32"),
                (Some(_), _, _) => seen.insert("ipBlock"),
                (None, Some(_), Some(_)) => seen.insert("ns AND pod"),
                (None, Some(_), None) => seen.insert("ns only"),
                _ => seen.insert("pod only"),
            };
        }
        for port in ports {
            seen.insert(match (&port.port, port.end_port) {
                (None, _) if port.protocol.is_none() => "port {}",
                (None, _) => "protocol only",
                (Some(IntOrString::String(_)), _) => "named port",
                (Some(IntOrString::Int(_)), Some(_)) => "endPort",
                (Some(IntOrString::Int(_)), None) => "numeric port",
            });
            if port.protocol.as_deref() == Some("SCTP") {
                seen.insert("SCTP");
            }
            if port.protocol.as_deref() == Some("UDP") {
                seen.insert("UDP");
            }
        }
    }
    let want = [
        "policyTypes absent",
        "policyTypes both",
        "policyTypes one",
        "podSelector absent",
        "ingress empty",
        "egress absent",
        "empty selector",
        "matchLabels",
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "metadata.name",
        "ipBlock except",
        "ipBlock /32",
        "ipBlock",
        "ns AND pod",
        "ns only",
        "pod only",
        "port {}",
        "protocol only",
        "named port",
        "endPort",
        "numeric port",
        "SCTP",
        "UDP",
    ];
    let missing: Vec<_> = want.iter().filter(|w| !seen.contains(*w)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    let ratio =
        f64::from(u32::try_from(selections).unwrap()) / f64::from(u32::try_from(pairs).unwrap());
    assert!(
        ratio > 0.15,
        "policies select only {ratio:.2} of the pods in reach"
    );
}

#[test]
fn shrinking_keeps_only_what_the_predicate_needs() {
    // "Fails" while some policy selects pod-0 for ingress with an ingress rule.
    let fails = |w: &World| {
        let Some(pod) = w.pods.iter().find(|p| p.name == "pod-0") else {
            return false;
        };
        w.policies.iter().any(|p| {
            selects(p, pod)
                && p.spec
                    .as_ref()
                    .is_some_and(|s| s.ingress.as_ref().is_some_and(|r| !r.is_empty()))
        })
    };
    let world = (0..)
        .map(|seed| random_world(seed, &Size::default()))
        .find(|w| w.policies.len() >= 4 && w.pods.len() >= 5 && fails(w))
        .expect("some seed has a big world that fails");
    let small = shrink(&world, fails);
    assert!(fails(&small));
    assert_eq!(small.policies.len(), 1, "{}", small.to_yaml());
    assert_eq!(small.pods.len(), 1, "{}", small.to_yaml());
    assert!(small.outside.is_empty());
}
