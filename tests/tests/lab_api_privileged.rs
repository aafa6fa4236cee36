// SPDX-License-Identifier: Apache-2.0
//! The `Lab` API as integration tests use it, with the stand-ins for `weir-agent` and `weir`.
//! One test per binary on purpose: it points `WEIR_BIN_DIR` at the stand-ins for the whole
//! process before any other thread exists.

mod common;

use std::time::Duration;

use weir_tests::{in_netns, Lab, LabOptions, PodSpec, Proto};

use crate::common::{fake_bin_dir, leftovers, root_netns_snapshot};

#[test]
fn labs_run_side_by_side_and_vanish_when_dropped() {
    require_root!();
    let bin_dir = fake_bin_dir("api");
    // Sound: no other thread exists yet in this process.
    std::env::set_var("WEIR_BIN_DIR", &bin_dir);
    let before = root_netns_snapshot();

    let options = |tag: &str| LabOptions {
        ext_pod_routes: true,
        ..LabOptions::isolated(tag)
    };
    let (ids, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = ["api-a", "api-b"]
            .into_iter()
            .map(|tag| {
                scope.spawn(move || {
                    let lab = Lab::up(&options(tag)).unwrap();
                    let web = lab.add_pod("default", "web", &[("role", "web")]).unwrap();
                    let api = lab
                        .add_pod_with(&PodSpec::new("default", "api").label("role", "api-pod"))
                        .unwrap();
                    assert_eq!(lab.pod("default", "web").unwrap(), web);
                    assert_eq!(api.labels["role"], "api-pod");
                    assert!(api.ip.to_string().starts_with("10.244.1."));

                    let timeout = Duration::from_secs(1);
                    let tcp = lab
                        .probe("default/web", "default/api", Proto::Tcp, 80, timeout)
                        .unwrap();
                    assert!(tcp.connected, "{tcp:?}");
                    assert_eq!(tcp.reply.as_deref(), Some("default/api"));
                    let to_ext = lab
                        .probe("default/api", "ext", Proto::Icmp, 0, timeout)
                        .unwrap();
                    assert!(to_ext.connected, "{to_ext:?}");
                    let matrix = lab.matrix(Proto::Udp, 81, timeout).unwrap();
                    assert_eq!(matrix.connected("default/api", "default/web"), Some(true));

                    // Tests can work inside the node netns directly.
                    let routes = in_netns(&lab.node_netns(), || {
                        std::fs::read_to_string("/proc/thread-self/net/route").unwrap()
                    })
                    .unwrap();
                    assert!(routes.contains("eth0"), "{routes}");
                    assert_eq!(lab.plugin_config(1).unwrap()["type"], "weir");

                    lab.del_pod("default", "api").unwrap();
                    assert!(lab.pod("default", "api").is_err());
                    assert_eq!(lab.pods().unwrap().len(), 1);
                    let id = lab.id().to_owned();
                    (id, tcp.connected)
                    // `lab` drops here: down.
                })
            })
            .collect();
        let outs: Vec<(String, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (
            outs.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            outs.iter().map(|(_, ok)| *ok).collect::<Vec<_>>(),
        )
    });
    assert_ne!(ids[0], ids[1]);
    assert!(results.iter().all(|ok| *ok));
    for id in &ids {
        assert_eq!(leftovers(id), Vec::<String>::new());
    }

    // A lab dropped during a panic still goes down.
    let id = std::panic::catch_unwind(|| {
        let lab = Lab::up(&options("api-panic")).unwrap();
        lab.add_pod("default", "web", &[]).unwrap();
        let id = lab.id().to_owned();
        assert!(!leftovers(&id).is_empty());
        std::panic::panic_any(id);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert_eq!(leftovers(&id), Vec::<String>::new());

    assert_eq!(root_netns_snapshot(), before);
    std::fs::remove_dir_all(&bin_dir).unwrap();
}
