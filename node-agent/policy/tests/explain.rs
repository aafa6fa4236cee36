//! `Incremental::explain` against the compiled tables: over long random sequences of changes, for
//! every local endpoint, direction, peer, protocol and port, the explanation allows exactly what the
//! table allows, in the same kind of verdict; and (on a sample) the rules it lists are exactly the
//! rules that, alone in their policy, allow the flow.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use common::{mutate, random_left_out, random_local, random_world};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use rand::{rngs::StdRng, Rng, SeedableRng};
use weir_policy::{
    compile::{
        compile, Compiled, Direction, DirectionRules, DirectionVerdict, Incremental, RuleRef,
    },
    model::{Cluster, PodKey, PolicyKey},
};

/// Every address the random worlds use (pods at 10.0.0.1-15, endpoints at 10.0.1.x), the edges of
/// their blocks, and addresses outside them.
fn peers() -> Vec<Ipv4Addr> {
    let mut peers: Vec<Ipv4Addr> = (0..=16).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    peers.extend([
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(10, 0, 1, 1),
        Ipv4Addr::new(10, 0, 1, 2),
        Ipv4Addr::new(192, 0, 2, 1),
    ]);
    peers
}

/// Protocols and ports around what random policies and pods name (80, 80-90, http at 80, 85 or
/// 8080, dns at UDP 53, all of SCTP).
const FLOWS: [(u8, u16); 10] = [
    (6, 80),
    (6, 85),
    (6, 90),
    (6, 91),
    (6, 8080),
    (6, 53),
    (17, 53),
    (17, 80),
    (132, 9),
    (1, 0),
];

fn key_of(policy: &NetworkPolicy) -> PolicyKey {
    let meta = &policy.metadata;
    PolicyKey::new(meta.namespace.clone().unwrap(), meta.name.clone().unwrap())
}

/// The policy with only its rule `index` in `direction` (the other direction's rules kept), isolating
/// the same directions.
fn with_one_rule(policy: &NetworkPolicy, direction: Direction, index: usize) -> NetworkPolicy {
    let mut policy = policy.clone();
    let spec = policy.spec.as_mut().unwrap();
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_owned());
        }
        spec.policy_types = Some(types);
    }
    match direction {
        Direction::Ingress => {
            let rule = spec.ingress.as_ref().unwrap()[index].clone();
            spec.ingress = Some(vec![rule]);
        }
        Direction::Egress => {
            let rule = spec.egress.as_ref().unwrap()[index].clone();
            spec.egress = Some(vec![rule]);
        }
    }
    policy
}

fn rule_count(policy: &NetworkPolicy, direction: Direction) -> usize {
    let spec = policy.spec.as_ref().unwrap();
    match direction {
        Direction::Ingress => spec.ingress.as_ref().map_or(0, Vec::len),
        Direction::Egress => spec.egress.as_ref().map_or(0, Vec::len),
    }
}

fn is_sorted_set<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

/// The verdict is the kind of the compiled rules, lists what it says, and allows what they allow.
fn check_shape(
    verdict: &DirectionVerdict,
    rules: &DirectionRules,
    direction: Direction,
    unknown_pod: bool,
    context: &str,
) {
    match (verdict, rules) {
        (DirectionVerdict::Unisolated, DirectionRules::Unisolated) => {}
        (DirectionVerdict::FailClosed { because, .. }, DirectionRules::FailClosed) => {
            assert_eq!(because.is_empty(), unknown_pod, "{context}: {verdict:?}");
            assert!(is_sorted_set(because), "{context}: {verdict:?}");
            assert!(
                because.iter().all(|p| verdict.isolating().contains(p)),
                "{context}: {verdict:?}"
            );
        }
        (DirectionVerdict::Allowed { rules: listed, .. }, DirectionRules::Rules(_)) => {
            assert!(!listed.is_empty(), "{context}: {verdict:?}");
            assert!(is_sorted_set(listed), "{context}: {verdict:?}");
            assert!(
                listed
                    .iter()
                    .all(|r| r.direction == direction && verdict.isolating().contains(&r.policy)),
                "{context}: {verdict:?}"
            );
        }
        (DirectionVerdict::Denied { .. }, DirectionRules::Rules(_)) => {}
        _ => panic!("{context}: {verdict:?} for {rules:?}"),
    }
    if !matches!(verdict, DirectionVerdict::Unisolated) {
        assert!(!verdict.isolating().is_empty(), "{context}: {verdict:?}");
    }
    assert!(is_sorted_set(verdict.isolating()), "{context}: {verdict:?}");
}

/// Each rule of each isolating policy, alone in its policy with the others gone, allows the flow
/// exactly when the verdict lists it: the list is every admitting rule and nothing else, with the
/// index the spec gives it.
fn check_rules_alone(
    cluster: &Cluster,
    specs: &BTreeMap<PolicyKey, NetworkPolicy>,
    local: &[(Ipv4Addr, Option<PodKey>)],
    verdict: &DirectionVerdict,
    (endpoint, direction): (Ipv4Addr, Direction),
    (peer, proto, port): (Ipv4Addr, u8, u16),
    context: &str,
) {
    let listed: &[RuleRef] = match verdict {
        DirectionVerdict::Allowed { rules, .. } => rules,
        DirectionVerdict::Denied { .. } => &[],
        _ => return,
    };
    for policy in verdict.isolating() {
        let spec = &specs[policy];
        for index in 0..rule_count(spec, direction) {
            let mut alone = cluster.clone();
            for other in cluster.policies() {
                alone.delete_policy(other.key());
            }
            alone
                .upsert_policy(with_one_rule(spec, direction, index))
                .unwrap();
            let compiled = compile(&alone, local);
            let rules = compiled.endpoints[&endpoint].get(direction);
            assert!(
                matches!(rules, DirectionRules::Rules(_)),
                "{context}: {policy} alone gives {rules:?}"
            );
            let rule = RuleRef {
                policy: policy.clone(),
                direction,
                index,
            };
            assert_eq!(
                rules.allows(peer, proto, port),
                listed.contains(&rule),
                "{context}: {rule} alone, verdict {verdict:?}"
            );
        }
    }
}

#[test]
fn explanations_allow_exactly_what_the_compiled_tables_allow() {
    let mut rng = StdRng::seed_from_u64(23);
    let peers = peers();
    let mut explained = 0usize;
    let mut kinds = [0usize; 4];
    let mut checked_alone = 0usize;
    for run in 0..60 {
        let (mut cluster, policies) = random_world(&mut rng);
        let mut specs: BTreeMap<PolicyKey, NetworkPolicy> =
            policies.into_iter().map(|p| (key_of(&p), p)).collect();
        let mut incremental = Incremental::default();
        let mut local = random_local(&mut rng, &cluster);
        for step in 0..25 {
            for _ in 0..if rng.random_bool(0.2) { 5 } else { 1 } {
                if let Some(policy) = mutate(&mut rng, &mut cluster, step * 10 + run) {
                    specs.insert(key_of(&policy), policy);
                }
            }
            if rng.random_bool(0.3) {
                local = random_local(&mut rng, &cluster);
            }
            let left_out = random_left_out(&mut rng, &cluster);
            let compiled: Compiled = incremental.compile(&cluster, &local, &left_out);
            let here: BTreeSet<Ipv4Addr> = local.iter().map(|(ip, _)| *ip).collect();
            for peer in &peers {
                if !here.contains(peer) {
                    assert_eq!(
                        incremental.explain(*peer, Direction::Ingress, peers[1], 6, 80),
                        None
                    );
                }
            }
            for (endpoint, rules) in &compiled.endpoints {
                let unknown_pod = compiled.unknown_pods.contains_key(endpoint);
                for direction in Direction::ALL {
                    let rules = rules.get(direction);
                    for &peer in &peers {
                        for (proto, port) in FLOWS {
                            let context = format!(
                                "run {run} step {step}: {endpoint} {direction:?} {peer} \
                                 {proto}/{port}"
                            );
                            let verdict = incremental
                                .explain(*endpoint, direction, peer, proto, port)
                                .expect("a local endpoint");
                            assert_eq!(
                                verdict.allows(),
                                rules.allows(peer, proto, port),
                                "{context}: {verdict:?} for {rules:?}"
                            );
                            check_shape(&verdict, rules, direction, unknown_pod, &context);
                            kinds[match verdict {
                                DirectionVerdict::Unisolated => 0,
                                DirectionVerdict::Allowed { .. } => 1,
                                DirectionVerdict::Denied { .. } => 2,
                                DirectionVerdict::FailClosed { .. } => 3,
                                DirectionVerdict::Cluster { .. } => {
                                    unreachable!("no ClusterNetworkPolicy here")
                                }
                            }] += 1;
                            explained += 1;
                            if left_out.is_empty() && rng.random_bool(0.02) {
                                check_rules_alone(
                                    &cluster,
                                    &specs,
                                    &local,
                                    &verdict,
                                    (*endpoint, direction),
                                    (peer, proto, port),
                                    &context,
                                );
                                checked_alone += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    // Every kind of verdict came up, often.
    assert!(kinds.iter().all(|&n| n > 1000), "{kinds:?}");
    assert!(checked_alone > 1000, "{checked_alone}");
    assert!(explained > 100_000, "{explained}");
}
