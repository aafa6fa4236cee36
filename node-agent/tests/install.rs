//! install/*.yaml against the real thing: every object parses strictly as its Kubernetes type
//! (an unknown field is an error, not silently dropped), the DaemonSets' arguments parse with this
//! binary's CLI once the kubelet has expanded `$(VAR)`s from the ConfigMap, and the DaemonSet gives
//! the agent what it uses (mounts, probes on the health address, RBAC for every watched kind, the
//! capabilities it needs) and no more (no privilege but a bpffs-mounting init container's).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clap::Parser;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, Namespace, SecurityContext, ServiceAccount, VolumeMount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::Deserialize;
use weir_policy::manifest::parse_strict;

use weir_agent::cli::{Cli, Command, SourceKind};

fn install_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../install"))
}

#[derive(Default)]
struct Objects {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
}

/// Every object of a manifest file, each parsed strictly as the type its apiVersion/kind names.
fn load(file: &str) -> Objects {
    let text = std::fs::read_to_string(install_dir().join(file)).unwrap();
    let mut objects = Objects::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let document = i + 1;
        let value = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        if value.is_null() {
            continue;
        }
        let api_version = value["apiVersion"].as_str().unwrap_or("").to_owned();
        let kind = value["kind"].as_str().unwrap_or("").to_owned();
        let what = format!("{file} document {document}: {api_version} {kind}");
        let fail = |e: weir_policy::manifest::ManifestError| -> ! { panic!("{what}: {e}") };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                parse_strict::<Namespace>(document, value).unwrap_or_else(|e| fail(e));
            }
            ("v1", "ServiceAccount") => objects
                .service_accounts
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("v1", "ConfigMap") => objects
                .config_maps
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => objects
                .cluster_roles
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => objects
                .bindings
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("rbac.authorization.k8s.io/v1", "Role") => objects
                .roles
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => objects
                .role_bindings
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            ("apps/v1", "DaemonSet") => objects
                .daemon_sets
                .push(parse_strict(document, value).unwrap_or_else(|e| fail(e))),
            _ => panic!("{what}: a kind this test does not know; add it"),
        }
    }
    objects
}

/// The container's command line as the kubelet runs it: `$(VAR)` replaced by the container's
/// env (values, ConfigMap keys, downward API fields given as `field:<path>`).
fn command_line(container: &Container, config: &BTreeMap<String, String>) -> Vec<String> {
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(key) = &from.config_map_key_ref {
                    assert_eq!(key.name, "weir-config", "{}", var.name);
                    match config.get(&key.key) {
                        Some(v) => v.clone(),
                        None if key.optional == Some(true) => continue,
                        None => panic!("ConfigMap weir-config has no key {}", key.key),
                    }
                } else if let Some(field) = &from.field_ref {
                    format!("field:{}", field.field_path)
                } else {
                    panic!(
                        "env {} comes from something this test does not resolve",
                        var.name
                    )
                }
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    let mut line: Vec<String> = container.command.clone().unwrap_or_default();
    for arg in container.args.iter().flatten() {
        let mut arg = arg.clone();
        for (name, value) in &env {
            arg = arg.replace(&format!("$({name})"), value);
        }
        assert!(!arg.contains("$("), "unresolved reference in {arg:?}");
        line.push(arg);
    }
    line
}

fn parse(line: &[String]) -> Cli {
    // The binary's name, as clap expects it first.
    let argv = std::iter::once("weir-agent".to_owned()).chain(line.iter().skip(1).cloned());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"))
}

fn container<'a>(ds: &'a DaemonSet, name: &str) -> &'a Container {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn containers(ds: &DaemonSet) -> impl Iterator<Item = &Container> {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
}

fn security(container: &Container) -> SecurityContext {
    container.security_context.clone().unwrap_or_default()
}

/// The mount at `path` in the container, and the node path of its hostPath volume.
fn host_mount<'a>(
    ds: &'a DaemonSet,
    container: &'a Container,
    path: &str,
) -> (&'a VolumeMount, &'a str) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .unwrap_or_else(|| panic!("{} mounts nothing at {path}", container.name));
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    let host_path = volume
        .host_path
        .as_ref()
        .unwrap_or_else(|| panic!("volume {} is not a hostPath", volume.name));
    (mount, host_path.path.as_str())
}

/// Where a path inside the container is on the node: through the hostPath volume mounted at the
/// path or at its nearest parent.
fn node_path(ds: &DaemonSet, container: &Container, path: &Path) -> PathBuf {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{} mounts nothing over {}", container.name, path.display()));
    let (_, host_path) = host_mount(ds, container, &mount.mount_path);
    Path::new(host_path).join(path.strip_prefix(&mount.mount_path).unwrap())
}

fn mounts(container: &Container) -> Vec<&str> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect()
}

#[test]
fn the_daemonset_runs_the_agent_on_the_kubernetes_source_with_arguments_it_accepts() {
    let objects = load("weir.yaml");
    let config = objects.config_maps[0].data.clone().unwrap();
    let ds = &objects.daemon_sets[0];
    let agent = container(ds, "weir-agent");
    let line = command_line(agent, &config);
    assert_eq!(line[0], "/usr/local/bin/weir-agent");
    let Command::Run(args) = parse(&line).command else {
        panic!("the agent container does not run `weir-agent run`");
    };
    assert!(args.source == SourceKind::Kubernetes);
    assert!(args.pod_cidr.is_none(), "the pod CIDR comes from the Node");
    assert_eq!(args.node_name.as_deref(), Some("field:spec.nodeName"));
    assert_eq!(
        args.cluster_cidr,
        Some(config["cluster-cidr"].parse().unwrap())
    );
    assert_eq!(args.service_cidr, config["service-cidr"].parse().unwrap());
    // The ConfigMap's empty MTU reaches the agent as `--mtu=` (the kubelet expands $(MTU) to
    // nothing), which means "derive it"; a number is taken as it is.
    assert!(line.iter().any(|a| a.starts_with("--mtu=")), "{line:?}");
    let mtu = &config["mtu"];
    let expected = (!mtu.is_empty()).then(|| mtu.parse::<u32>().unwrap());
    assert_eq!(args.mtu.0, expected, "mtu {mtu:?}");
    let Command::Run(with_mtu) =
        parse(&["weir-agent".into(), "run".into(), "--mtu=1400".into()]).command
    else {
        unreachable!()
    };
    assert_eq!(with_mtu.mtu.0, Some(1400));

    // Probes reach the health endpoints where the agent serves them.
    let liveness = agent
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    let readiness = agent
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    for (probe, path) in [(liveness, "/healthz"), (readiness, "/readyz")] {
        assert_eq!(probe.path.as_deref(), Some(path));
        let address = format!(
            "{}:{}",
            probe.host.as_deref().unwrap_or("?"),
            match &probe.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => p.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p) => p.clone(),
            }
        );
        assert_eq!(
            address.parse::<std::net::SocketAddr>().unwrap(),
            args.metrics_address
        );
    }

    // Mounts: where the agent keeps pins, state and the socket, and writes the conflist.
    let mounted = mounts(agent);
    for path in [
        &args.paths.run_dir,
        &args.paths.state_dir,
        &args.cni_conf_dir,
        args.paths.bpffs_dir.parent().unwrap(),
        args.cni_log_file.parent().unwrap(),
    ] {
        assert!(
            mounted.iter().any(|m| Path::new(m) == path),
            "{} is not mounted: {mounted:?}",
            path.display()
        );
    }
    let install = container(ds, "install-cni");
    assert!(mounts(install).contains(&"/host/opt/cni/bin"));
    assert!(install
        .command
        .iter()
        .flatten()
        .any(|c| c.contains("/host/opt/cni/bin/weir")));

    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "control-plane (and every other) taint is tolerated"
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("weir"));
}

#[test]
fn rbac_lets_the_agent_watch_every_kind_it_uses_and_write_only_events_and_status() {
    let objects = load("weir.yaml");
    let sa = &objects.service_accounts[0];
    let binding = &objects.bindings[0];
    let role = &objects.cluster_roles[0];
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);

    let rules = role.rules.as_ref().unwrap();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for kind in weir_kube::Kind::ALL {
        let (group, resource) = kind.resource();
        for verb in ["list", "watch"] {
            assert!(allows(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
    assert!(
        allows("events.k8s.io", "events", "create") && allows("events.k8s.io", "events", "patch")
    );
    assert!(allows(
        "policy.networking.k8s.io",
        "clusternetworkpolicies/status",
        "patch"
    ));
    // The ClusterNetworkPolicy CRD, watched by name, and no other CRD.
    let crd_rules: Vec<_> = rules
        .iter()
        .filter(|r| {
            r.resources
                .iter()
                .flatten()
                .any(|x| x == "customresourcedefinitions")
        })
        .collect();
    assert_eq!(crd_rules.len(), 1, "{crd_rules:?}");
    assert_eq!(
        crd_rules[0].resource_names.as_deref(),
        Some(&[weir_kube::crd::CLUSTER_NETWORK_POLICY_CRD.to_owned()][..])
    );
    for verb in ["get", "list", "watch"] {
        assert!(allows(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            verb
        ));
    }
    for rule in rules {
        let writes = rule
            .verbs
            .iter()
            .any(|v| !matches!(v.as_str(), "get" | "list" | "watch"));
        let writable = rule
            .resources
            .iter()
            .flatten()
            .all(|r| r == "events" || r == "clusternetworkpolicies/status");
        assert!(!writes || writable, "least privilege: {rule:?}");
        assert!(!rule.verbs.iter().any(|v| v == "*"));
    }

    // The status writer's Lease, in the agent's namespace, and nothing else there.
    let role = &objects.roles[0];
    let binding = &objects.role_bindings[0];
    assert_eq!(role.metadata.namespace, sa.metadata.namespace);
    assert_eq!(binding.metadata.namespace, sa.metadata.namespace);
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    assert_eq!(
        binding.subjects.as_ref().unwrap()[0].name,
        sa.metadata.name.clone().unwrap()
    );
    for rule in role.rules.as_ref().unwrap() {
        assert_eq!(rule.resources.as_deref(), Some(&["leases".to_owned()][..]));
        let named =
            rule.resource_names.as_deref() == Some(&[weir_kube::status::LEASE_NAME.to_owned()][..]);
        // `create` cannot be limited by name (the object does not exist yet).
        assert!(
            named || rule.verbs == ["create"],
            "least privilege: {rule:?}"
        );
    }
}

#[test]
fn the_uninstall_daemonset_runs_cleanup_and_removes_the_cni_binary() {
    let objects = load("uninstall.yaml");
    let ds = &objects.daemon_sets[0];
    let cleanup = container(ds, "cleanup");
    let line = command_line(cleanup, &BTreeMap::new());
    let Command::Cleanup(args) = parse(&line).command else {
        panic!("the cleanup container does not run `weir-agent cleanup`");
    };
    // It cleans the node paths the agent used.
    let installed = load("weir.yaml");
    let installed_ds = &installed.daemon_sets[0];
    let agent_container = container(installed_ds, "weir-agent");
    let agent_line = command_line(
        agent_container,
        &installed.config_maps[0].data.clone().unwrap(),
    );
    let Command::Run(agent) = parse(&agent_line).command else {
        unreachable!()
    };
    for (cleaned, used) in [
        (&args.paths.bpffs_dir, &agent.paths.bpffs_dir),
        (&args.paths.run_dir, &agent.paths.run_dir),
        (&args.paths.state_dir, &agent.paths.state_dir),
        (&args.cni_conf_dir, &agent.cni_conf_dir),
    ] {
        assert_eq!(
            node_path(ds, cleanup, cleaned),
            node_path(installed_ds, agent_container, used)
        );
    }
    // The run and state directories are reached through their parents: a directory that is a
    // mount point in the container could be emptied but not removed.
    for dir in [&args.paths.run_dir, &args.paths.state_dir] {
        assert!(
            !mounts(cleanup).contains(&dir.to_str().unwrap()),
            "{} is mounted itself",
            dir.display()
        );
    }
    // Then the plugin and its log directory.
    let remove = container(ds, "remove-node-files");
    let command: Vec<&str> = remove
        .command
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let log_dir = agent.cni_log_file.parent().unwrap();
    for path in ["/host/opt/cni/bin/weir", "/host/var/log/weir"] {
        assert!(command.contains(&path), "{command:?}");
    }
    assert_eq!(
        node_path(ds, remove, Path::new("/host/var/log/weir")),
        node_path(installed_ds, agent_container, log_dir)
    );
}

#[test]
fn the_kind_cluster_has_no_other_cni_and_the_pod_subnet_weir_expects() {
    let kind: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(install_dir().join("kind.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        kind["networking"]["disableDefaultCNI"],
        serde_yaml::Value::Bool(true)
    );
    let config = load("weir.yaml").config_maps[0].data.clone().unwrap();
    assert_eq!(
        kind["networking"]["podSubnet"].as_str(),
        Some(config["cluster-cidr"].as_str())
    );
    assert_eq!(
        kind["networking"]["serviceSubnet"].as_str(),
        Some(config["service-cidr"].as_str())
    );
}

#[test]
fn a_misspelt_field_in_the_daemonset_is_an_error_not_a_dropped_setting() {
    let text = std::fs::read_to_string(install_dir().join("weir.yaml")).unwrap();
    let misspelt = text.replace("hostNetwork: true", "hostNetwrok: true");
    let doc = serde_yaml::Deserializer::from_str(&misspelt)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .find(|v| v["kind"] == "DaemonSet")
        .unwrap();
    let error = parse_strict::<DaemonSet>(1, doc).unwrap_err();
    assert!(error.to_string().contains("hostNetwrok"), "{error}");
}

/// Capabilities as a set, whichever way the manifest spells them (CAP_ prefix or not).
fn capability_set(names: Option<&Vec<String>>) -> BTreeSet<String> {
    names
        .into_iter()
        .flatten()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect()
}

/// Not privileged, no privilege escalation, uid 0, every capability dropped but `add`.
fn assert_unprivileged_with(container: &Container, add: &[&str]) {
    let security = security(container);
    let name = &container.name;
    assert_ne!(security.privileged, Some(true), "{name} is privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
    let capabilities = security.capabilities.unwrap_or_default();
    assert_eq!(
        capability_set(capabilities.drop.as_ref()),
        BTreeSet::from(["ALL".to_owned()]),
        "{name} drops every capability"
    );
    let expected: BTreeSet<String> = add.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        capability_set(capabilities.add.as_ref()),
        expected,
        "{name}"
    );
}

#[test]
fn only_the_init_container_that_mounts_bpffs_is_privileged() {
    for file in ["weir.yaml", "uninstall.yaml"] {
        let objects = load(file);
        let ds = &objects.daemon_sets[0];
        for container in containers(ds) {
            let privileged = security(container).privileged == Some(true);
            let bidirectional = container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_propagation.as_deref() == Some("Bidirectional"));
            assert_eq!(
                privileged,
                file == "weir.yaml" && container.name == "mount-bpffs",
                "{file}: {} privileged: {privileged}",
                container.name
            );
            // The API server refuses Bidirectional in an unprivileged container.
            assert!(!bidirectional || privileged, "{file}: {}", container.name);
            if !privileged {
                assert_eq!(
                    security(container).allow_privilege_escalation,
                    Some(false),
                    "{file}: {}",
                    container.name
                );
                let drop = security(container).capabilities.and_then(|c| c.drop);
                assert!(
                    capability_set(drop.as_ref()).contains("ALL"),
                    "{file}: {} drops every capability",
                    container.name
                );
            }
        }
    }

    // It mounts bpffs on the node's /sys/fs/bpf unless one is there, and the mount reaches the node.
    let objects = load("weir.yaml");
    let ds = &objects.daemon_sets[0];
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let mount_bpffs = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "mount-bpffs")
        .expect("an init container mount-bpffs");
    let script = mount_bpffs.command.clone().unwrap().join(" ");
    assert!(
        script.contains("mount -t bpf") && script.contains(" /sys/fs/bpf"),
        "{script}"
    );
    let (mount, host_path) = host_mount(ds, mount_bpffs, "/sys/fs/bpf");
    assert_eq!(host_path, "/sys/fs/bpf");
    assert_eq!(mount.mount_propagation.as_deref(), Some("Bidirectional"));
    assert_ne!(mount.read_only, Some(true));
}

#[test]
fn the_agent_is_unprivileged_with_exactly_the_capabilities_it_needs() {
    let objects = load("weir.yaml");
    let ds = &objects.daemon_sets[0];
    let agent = container(ds, "weir-agent");
    // Links, routes, tc and iptables; bpf() itself; the verifier's privileged mode (without it
    // the datapath is rejected). Each was checked by starting the agent without it.
    assert_unprivileged_with(agent, &["NET_ADMIN", "BPF", "PERFMON"]);
    // The node's sysctls and root-owned paths are written as their owner.
    assert_eq!(security(agent).run_as_user, Some(0));
    // The runtime's default AppArmor profile forbids writing under /sys/fs/bpf.
    assert_eq!(
        security(agent).app_armor_profile.map(|p| p.type_),
        Some("Unconfined".to_owned())
    );
    // Every container: the runtime's default seccomp profile (from the pod) and a read-only root.
    // SELinux's spc_t (the node's files are writable from it, not from container_t) only on the
    // containers that write the node's files; AppArmor relaxed only on the agent and cleanup.
    let uninstall_ds = &load("uninstall.yaml").daemon_sets[0];
    for (ds, writers) in [
        (ds, &["install-cni", "weir-agent"][..]),
        (uninstall_ds, &["cleanup", "remove-node-files"][..]),
    ] {
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let pod_security = pod.security_context.clone().unwrap_or_default();
        assert_eq!(
            pod_security.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_owned())
        );
        assert!(
            pod_security.se_linux_options.is_none(),
            "SELinux is per container"
        );
        for container in containers(ds) {
            let name = container.name.as_str();
            let security = security(container);
            assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
            let selinux = security.se_linux_options.and_then(|s| s.type_);
            let privileged = security.privileged == Some(true);
            if writers.contains(&name) {
                assert_eq!(selinux.as_deref(), Some("spc_t"), "{name}");
            } else {
                assert!(selinux.is_none() || privileged, "{name} needs no spc_t");
            }
            let apparmor = security.app_armor_profile.map(|p| p.type_);
            assert_eq!(
                apparmor.is_some(),
                ["weir-agent", "cleanup"].contains(&name),
                "{name}: AppArmor relaxed only where bpffs is written"
            );
        }
    }
    // bpffs comes from mount-bpffs, seen through the node's mount.
    let (bpffs, host_path) = host_mount(ds, agent, "/sys/fs/bpf");
    assert_eq!(host_path, "/sys/fs/bpf");
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));

    let install = container(ds, "install-cni");
    assert_unprivileged_with(install, &[]);

    // Cleanup deletes links and iptables chains and unlinks pins: NET_ADMIN only.
    let uninstall = load("uninstall.yaml");
    let ds = &uninstall.daemon_sets[0];
    let cleanup = container(ds, "cleanup");
    assert_unprivileged_with(cleanup, &["NET_ADMIN"]);
    assert_eq!(security(cleanup).run_as_user, Some(0));
    assert_eq!(
        security(cleanup).app_armor_profile.map(|p| p.type_),
        Some("Unconfined".to_owned())
    );
    assert_eq!(
        host_mount(ds, cleanup, "/sys/fs/bpf")
            .0
            .mount_propagation
            .as_deref(),
        Some("HostToContainer")
    );
    for name in ["remove-node-files", "done"] {
        assert_unprivileged_with(container(ds, name), &[]);
    }
}

#[test]
fn the_agent_writes_sysctls_through_the_nodes_proc_sys_net() {
    let objects = load("weir.yaml");
    let config = objects.config_maps[0].data.clone().unwrap();
    let ds = &objects.daemon_sets[0];
    let agent = container(ds, "weir-agent");
    let Command::Run(args) = parse(&command_line(agent, &config)).command else {
        unreachable!()
    };
    assert_eq!(args.proc_sys_dir, Path::new("/host/proc/sys"));
    let net = args.proc_sys_dir.join("net");
    let (mount, host_path) = host_mount(ds, agent, net.to_str().unwrap());
    assert_eq!(host_path, "/proc/sys/net");
    assert_ne!(mount.read_only, Some(true));
    assert!(args.config("10.244.1.0/24".parse().unwrap()).proc_sys_dir == args.proc_sys_dir);

    // Without the flag, the process's own /proc/sys.
    let Command::Run(default) = parse(&[
        "weir-agent".to_owned(),
        "run".to_owned(),
        "--pod-cidr=10.244.1.0/24".to_owned(),
    ])
    .command
    else {
        unreachable!()
    };
    assert_eq!(default.proc_sys_dir, Path::new("/proc/sys"));
}
