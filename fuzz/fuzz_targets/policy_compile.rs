//! Kubernetes manifests through the whole pure policy path: strict parsing, the model, the
//! compiler (every pod with an address is local) and the programmer's plan. Malformed or hostile
//! objects are rejected or fail closed; nothing panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_policy::{compile::compile, model::Cluster, plan::Programmer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = weir_policy::manifest::parse_documents(text) else {
        return;
    };
    let mut cluster = Cluster::default();
    for object in objects {
        let _ = cluster.apply(object);
    }
    let local: Vec<_> = cluster
        .pods()
        .filter_map(|p| p.ip.map(|ip| (ip, Some(p.key.clone()))))
        .collect();
    let compiled = compile(&cluster, &local);
    let mut programmer = Programmer::new();
    let plan = programmer.plan(&compiled);
    programmer.commit(plan.id).expect("the plan just made");
});
