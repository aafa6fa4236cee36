// SPDX-License-Identifier: Apache-2.0
//! Weir's netlink vocabulary (`weir-netlink`), driven as the plugin drives it, against a real kernel, inside throwaway namespaces: a "node" namespace
//! whose thread runs the calls, and a "pod" namespace that receives the veth peer. Results are
//! checked with `ip -j`. Skipped (loudly) when not root.

mod common;

use std::{net::Ipv4Addr, path::Path};

use common::{has_flag, in_netns, privileged, TestNetns};
use ipnet::Ipv4Net;
use weir_netlink::{blocking::Runtime, LinkUpdate, NetlinkError, Netns, RouteV4, Tbf};

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

#[test]
fn veth_is_created_with_its_peer_inside_the_pod_netns_and_configured_there() {
    if !privileged("veth_is_created_with_its_peer_inside_the_pod_netns") {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let pod_path = pod.path();

    let (host_index, pod_index) = in_netns(&node, || {
        let pod_ns = Netns::open(&pod_path).unwrap();
        let rt = Runtime::new().unwrap();
        let host = rt.connect().unwrap();
        host.run(|nl| nl.create_veth_into_netns("weirtest0", "eth0", &pod_ns, 1400))
            .unwrap();
        let host_link = host
            .run(|nl| nl.link_by_name("weirtest0"))
            .unwrap()
            .unwrap();
        assert!(host_link.up, "host end is up");
        assert!(host_link.is_veth());
        assert_eq!(host_link.mtu, Some(1400));
        assert!(host_link.mac.is_some());
        assert_eq!(
            host.run(|nl| nl.link_by_name("eth0")).unwrap(),
            None,
            "the peer never shows up on the node"
        );

        let inside = rt.connect_in(&pod_ns).unwrap();
        inside.run(|nl| nl.set_up_by_name("lo")).unwrap();
        let pod_link = inside.run(|nl| nl.link_by_name("eth0")).unwrap().unwrap();
        assert!(!pod_link.up, "pod end is created down");
        inside.run(|nl| nl.set_up(pod_link.index)).unwrap();
        assert_eq!(pod_link.mtu, Some(1400));
        let addr: Ipv4Net = "10.244.1.5/32".parse().unwrap();
        inside.run(|nl| nl.add_addr(pod_link.index, addr)).unwrap();
        let on_link = RouteV4 {
            dst: Ipv4Net::from(GW),
            gateway: None,
            oif: Some(pod_link.index),
            link_scope: true,
        };
        let default = RouteV4 {
            dst: Ipv4Net::default(),
            gateway: Some(GW),
            oif: Some(pod_link.index),
            link_scope: false,
        };
        inside.run(|nl| nl.add_route(&on_link)).unwrap();
        inside.run(|nl| nl.add_route(&default)).unwrap();

        assert_eq!(
            inside.run(|nl| nl.addrs(pod_link.index)).unwrap(),
            vec![addr]
        );
        let routes = inside.run(|nl| nl.routes()).unwrap();
        assert!(routes.contains(&on_link), "{routes:?}");
        assert!(routes.contains(&default), "{routes:?}");
        assert_eq!(
            inside
                .run(|nl| nl.default_route_link())
                .unwrap()
                .and_then(|l| l.mtu),
            Some(1400),
            "the default route's device MTU"
        );
        (host_link.index, pod_link.index)
    });

    // What `ip` sees.
    let host_link = node.link("weirtest0").expect("host veth on the node");
    assert_eq!(host_link["ifindex"], host_index);
    assert_eq!(host_link["mtu"], 1400);
    assert!(has_flag(&host_link, "UP"));
    let eth0 = pod.link("eth0").expect("eth0 in the pod");
    assert_eq!(eth0["ifindex"], pod_index);
    assert_eq!(eth0["mtu"], 1400);
    assert!(has_flag(&eth0, "UP"));
    assert!(has_flag(&pod.link("lo").unwrap(), "UP"));
    assert!(
        !pod.link_names().iter().any(|n| n == "weirtest0"),
        "nothing else moved into the pod"
    );
    let addrs = pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let info = &addrs[0]["addr_info"][0];
    assert_eq!(info["local"], "10.244.1.5");
    assert_eq!(info["prefixlen"], 32);
    let routes = pod.ip_json(&["-4", "route", "show"]);
    let routes = routes.as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "169.254.1.1" && r["scope"] == "link" && r["dev"] == "eth0"),
        "{routes:?}"
    );

    // Deleting the host end takes the pod end along; deleting again is not an error.
    in_netns(&node, || {
        let rt = Runtime::new().unwrap();
        let host = rt.connect().unwrap();
        assert!(host.run(|nl| nl.del_link("weirtest0")).unwrap());
        assert!(!host.run(|nl| nl.del_link("weirtest0")).unwrap());
        assert_eq!(host.run(|nl| nl.link_by_name("weirtest0")).unwrap(), None);
    });
    assert!(node.link("weirtest0").is_none());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn existing_names_are_reported_as_eexist_and_missing_links_as_none() {
    if !privileged("existing_names_are_reported_as_eexist") {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let pod_path = pod.path();
    in_netns(&node, || {
        let pod_ns = Netns::open(&pod_path).unwrap();
        let rt = Runtime::new().unwrap();
        let host = rt.connect().unwrap();
        assert_eq!(host.run(|nl| nl.link_by_name("weirnothere")).unwrap(), None);
        assert_eq!(host.run(|nl| nl.link_by_index(999_999)).unwrap(), None);
        host.run(|nl| nl.create_veth_into_netns("weirtest1", "eth0", &pod_ns, 1500))
            .unwrap();

        // Same host name.
        let err = host
            .run(|nl| nl.create_veth_into_netns("weirtest1", "eth1", &pod_ns, 1500))
            .unwrap_err();
        assert!(err.is_exists(), "{err:?}");
        // Same pod name, other host name.
        let err = host
            .run(|nl| nl.create_veth_into_netns("weirtest2", "eth0", &pod_ns, 1500))
            .unwrap_err();
        assert!(err.is_exists(), "{err:?}");
        assert_eq!(
            host.run(|nl| nl.link_by_name("weirtest2")).unwrap(),
            None,
            "a failed create leaves nothing"
        );
        // An address twice.
        let inside = rt.connect_in(&pod_ns).unwrap();
        let index = inside
            .run(|nl| nl.link_by_name("eth0"))
            .unwrap()
            .unwrap()
            .index;
        let addr: Ipv4Net = "10.0.0.2/32".parse().unwrap();
        inside.run(|nl| nl.add_addr(index, addr)).unwrap();
        assert!(inside
            .run(|nl| nl.add_addr(index, addr))
            .unwrap_err()
            .is_exists());
        let links = host.run(|nl| nl.links()).unwrap();
        assert!(links.iter().any(|l| l.name == "weirtest1" && l.is_veth()));
        assert!(links.iter().any(|l| l.name == "lo" && !l.is_veth()));
    });
}

#[test]
fn default_route_mtu_follows_the_device_of_the_default_route() {
    if !privileged("default_route_mtu_follows_the_device") {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let pod_path = pod.path();
    in_netns(&node, || {
        let pod_ns = Netns::open(&pod_path).unwrap();
        let rt = Runtime::new().unwrap();
        let host = rt.connect().unwrap();
        assert_eq!(
            host.run(|nl| nl.default_route_link())
                .unwrap()
                .and_then(|l| l.mtu),
            None,
            "no default route yet"
        );
        host.run(|nl| nl.create_veth_into_netns("uplink0", "peer0", &pod_ns, 1234))
            .unwrap();
        let index = host
            .run(|nl| nl.link_by_name("uplink0"))
            .unwrap()
            .unwrap()
            .index;
        host.run(|nl| nl.add_addr(index, "192.0.2.1/24".parse().unwrap()))
            .unwrap();
        let default = RouteV4 {
            dst: Ipv4Net::default(),
            gateway: Some(Ipv4Addr::new(192, 0, 2, 254)),
            oif: Some(index),
            link_scope: false,
        };
        host.run(|nl| nl.add_route(&default)).unwrap();
        assert_eq!(
            host.run(|nl| nl.default_route_link())
                .unwrap()
                .and_then(|l| l.mtu),
            Some(1234)
        );
    });
}

#[test]
fn netns_open_rejects_missing_paths_files_and_the_own_namespace() {
    match Netns::open(Path::new("/run/netns/weir-cnitest-does-not-exist")) {
        Err(NetlinkError::NetnsNotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    match Netns::open(Path::new("/proc/self/status")) {
        Err(NetlinkError::NotANetns { .. }) => {}
        other => panic!("{other:?}"),
    }
    let own = Netns::open(Path::new("/proc/thread-self/ns/net"));
    if privileged("netns_open_rejects_the_own_namespace") {
        match own {
            Err(NetlinkError::HostNetns { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn node_devices_routes_and_managed_neighbours_as_the_agent_makes_them() {
    if !privileged("node_devices_routes_and_managed_neighbours") {
        return;
    }
    let node = TestNetns::new("node");
    in_netns(&node, || {
        let rt = Runtime::new().unwrap();
        let host = rt.connect().unwrap();
        // weir0's shape: a veth pair in the node, the host end without ARP, both up.
        host.run(|nl| nl.create_veth("weirt0", "weirt1", 1450))
            .unwrap();
        for (dev, arp) in [("weirt1", true), ("weirt0", false)] {
            let update = LinkUpdate::up().arp(arp);
            host.run(|nl| nl.ensure_link(dev, &update)).unwrap();
        }
        let update = LinkUpdate::up().mtu(1400);
        let weir0 = host.run(|nl| nl.ensure_link("weirt0", &update)).unwrap();
        assert!(weir0.up && weir0.is_veth());
        assert_eq!(weir0.mtu, Some(1400));
        assert!(host
            .run(|nl| nl.create_veth("weirt0", "weirt2", 1450))
            .unwrap_err()
            .is_exists());

        // A flow-based VXLAN device with a fixed MAC.
        let mac = [0x02, 0x77, 0x65, 0x69, 0x72, 0x00];
        host.run(|nl| nl.create_vxlan("weirtvx", 8472, mac, 1400))
            .unwrap();
        let update = LinkUpdate::up().mtu(1400).mac(mac);
        let vxlan = host.run(|nl| nl.ensure_link("weirtvx", &update)).unwrap();
        assert_eq!(vxlan.kind.as_deref(), Some("vxlan"));
        assert_eq!(vxlan.mac, Some(mac));
        assert!(vxlan.up);

        // Routes to weir0: replace is idempotent, delete reports whether there was one.
        let route = RouteV4::on_link("10.244.2.0/24".parse().unwrap(), weir0.index);
        host.run(|nl| nl.replace_route(&route)).unwrap();
        host.run(|nl| nl.replace_route(&route)).unwrap();
        let via: Vec<_> = host
            .run(|nl| nl.routes())
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(weir0.index))
            .collect();
        assert_eq!(via, vec![route.clone()]);
        assert!(host.run(|nl| nl.del_route(&route)).unwrap());
        assert!(!host.run(|nl| nl.del_route(&route)).unwrap());

        // Addresses of every device, loopback's included.
        host.run(|nl| nl.set_up_by_name("lo")).unwrap();
        host.run(|nl| nl.add_addr(weir0.index, "192.0.2.10/24".parse().unwrap()))
            .unwrap();
        let addresses = host.run(|nl| nl.addresses()).unwrap();
        assert!(addresses
            .iter()
            .any(|a| a.index == weir0.index && a.net.to_string() == "192.0.2.10/24"));
        assert!(addresses
            .iter()
            .any(|a| a.net.addr() == Ipv4Addr::LOCALHOST));

        // A managed neighbour entry, then its removal (twice: the second finds nothing).
        let peer = Ipv4Addr::new(192, 0, 2, 11);
        host.run(|nl| nl.replace_managed_neighbour(peer, weir0.index))
            .unwrap();
        assert!(host.run(|nl| nl.del_neighbour(peer, weir0.index)).unwrap());
        assert!(!host.run(|nl| nl.del_neighbour(peer, weir0.index)).unwrap());
    });
    let neighbours = node.ip_json(&["-4", "neigh", "show", "dev", "weirt0"]);
    assert_eq!(neighbours, serde_json::json!([]), "{neighbours}");
}

#[test]
fn a_tbf_root_qdisc_is_added_read_back_and_deleted() {
    if !privileged("a_tbf_root_qdisc_is_added_read_back_and_deleted") {
        return;
    }
    let node = TestNetns::new("node");
    node.ip(&[
        "link",
        "add",
        "weirtest0",
        "type",
        "veth",
        "peer",
        "weirtest1",
    ]);
    in_netns(&node, || {
        let rt = Runtime::new().unwrap();
        let nl = rt.connect().unwrap();
        let index = nl
            .run(|nl| nl.link_by_name("weirtest0"))
            .unwrap()
            .unwrap()
            .index;
        let before = nl.run(|nl| nl.root_qdisc(index)).unwrap();
        assert!(
            before.as_ref().is_none_or(|q| q.tbf.is_none()),
            "{before:?}"
        );

        // 5 GB/s needs TCA_TBF_RATE64; 10 MB of burst is 2 ms at that rate.
        for tbf in [
            Tbf {
                rate: 1_250_000,
                burst: 65_536,
                limit: 96_786,
            },
            Tbf {
                rate: 5_000_000_000,
                burst: 10_000_000,
                limit: 135_000_000,
            },
        ] {
            nl.run(|nl| nl.add_root_tbf(index, &tbf)).unwrap();
            let err = nl.run(|nl| nl.add_root_tbf(index, &tbf)).unwrap_err();
            assert!(err.is_exists(), "a second tbf: {err}");
            let have = nl.run(|nl| nl.root_qdisc(index)).unwrap().unwrap();
            assert_eq!(have.kind, "tbf");
            let back = have.tbf.unwrap();
            assert_eq!((back.rate, back.limit), (tbf.rate, tbf.limit), "{back:?}");
            assert!(
                back.burst.abs_diff(tbf.burst) <= tbf.burst / 100,
                "{back:?}"
            );
            assert!(nl.run(|nl| nl.del_root_qdisc(index)).unwrap());
            let after = nl.run(|nl| nl.root_qdisc(index)).unwrap();
            assert!(after.is_none_or(|q| q.kind != "tbf"));
        }
        assert!(
            !nl.run(|nl| nl.del_root_qdisc(index)).unwrap(),
            "nothing to delete"
        );
    });
}
