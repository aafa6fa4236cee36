//! The compiler alone at the lab benchmark's scale (`scripts/bench-policy-scale.py`): the same
//! cluster shape, one policy rewritten per change, timing and heap measured in process. Run in
//! release: `cargo test --release -p weir-policy --test scale -- --ignored --nocapture`

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use serde_json::json;
use weir_policy::{
    compile::Incremental,
    model::{Cluster, NamedPort, PodInfo, PodKey, Protocol},
    plan::Programmer,
};

/// Counts live and peak heap bytes.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);

        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 10;
const APPS: usize = 100;
const ROLES: usize = 20;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn policy(i: usize, role: usize) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns{}", i % NAMESPACES), "name": format!("p{i}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app{}", i % APPS)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": format!("r{role}")}}},
                                  {"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 3)}},
                                   "podSelector": {"matchLabels": {"role": format!("r{}", (i + 1) % ROLES)}}}],
                         "ports": [{"protocol": "TCP", "port": 80}, {"port": "http"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.{}.0.0/16", i % 200)]}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 1000, "endPort": 2000}]}],
        }
    }))
    .unwrap()
}

fn pod(k: usize, name: String, ip: Ipv4Addr) -> PodInfo {
    PodInfo {
        key: PodKey::new(format!("ns{}", k % NAMESPACES), name),
        labels: std::sync::Arc::new(
            [
                ("app".to_owned(), format!("app{}", k % APPS)),
                ("role".to_owned(), format!("r{}", k % ROLES)),
            ]
            .into(),
        ),
        ip: Some(ip),
        node: None,
        ports: vec![NamedPort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
        }],
    }
}

fn scale(pods: usize, policies: usize, local: usize, changes: usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut cluster = Cluster::default();
    for n in 0..NAMESPACES {
        cluster.upsert_namespace(
            format!("ns{n}"),
            [("team".to_owned(), format!("t{}", n % 3))].into(),
        );
    }
    for k in 0..pods - local {
        let ip = Ipv4Addr::new(10, 244, (2 + k / 250) as u8, (2 + k % 250) as u8);
        cluster.upsert_pod(pod(k, format!("remote{k}"), ip));
    }
    let mut endpoints = Vec::new();
    for k in 0..local {
        let ip = Ipv4Addr::new(10, 244, 1, (2 + k) as u8);
        let p = pod(k, format!("local{k}"), ip);
        endpoints.push((ip, Some(p.key.clone())));
        cluster.upsert_pod(p);
    }
    let pods_bytes = LIVE.load(Ordering::Relaxed) - before;
    for i in 0..policies {
        cluster.upsert_policy(policy(i, i % ROLES)).unwrap();
    }
    let model = LIVE.load(Ordering::Relaxed) - before;
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut programmer = Programmer::new();
    let mut compiler = Incremental::default();
    let none = Default::default();
    let t0 = Instant::now();
    let compiled = compiler.compile(&cluster, &endpoints, &none);
    let plan = programmer.plan(&compiled);
    programmer.commit(plan.id).unwrap();
    let first = t0.elapsed();
    let mut samples = Vec::new();
    for s in 0..changes {
        let i = (s * 7) % policies;
        cluster
            .upsert_policy(policy(i, (i + s + 3) % ROLES))
            .unwrap();
        let t0 = Instant::now();
        let compiled = compiler.compile(&cluster, &endpoints, &none);
        let plan = programmer.plan(&compiled);
        programmer.commit(plan.id).unwrap();
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let retained = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{pods} pods ({local} local) x {policies} policies: first {:.1} ms, change p50 {:.2} ms p99 {:.2} ms; \
         heap: model {:.1} MiB (pods {:.1}), retained {:.1} MiB, peak {:.1} MiB",
        first.as_secs_f64() * 1e3,
        samples[samples.len() / 2],
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)],
        mib(model),
        mib(pods_bytes),
        mib(retained),
        mib(PEAK.load(Ordering::Relaxed) - before),
    );
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn policy_change_at_scale() {
    if let Ok(n) = std::env::var("WEIR_SCALE_ONLY") {
        let n: usize = n.parse().unwrap();
        scale(n, n, 100, 2000);
        return;
    }
    scale(1000, 1000, 50, 200);
    scale(3000, 3000, 100, 200);
    scale(10000, 10000, 100, 200);
}
