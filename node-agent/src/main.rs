//! `weir-agent`: run the node agent, clean a node, or read the datapath counters.

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Mutex,
};
use tracing::{info, warn};
use weir_agent::{
    agent::{self, Agent},
    config::{Config, ConntrackSizes, Paths},
    counters,
    datapath::AttachMode,
    host,
    kubernetes::Kubernetes,
    metrics,
    policy::PolicyEngine,
    server, watch,
};

#[derive(Parser)]
#[command(
    name = "weir-agent",
    version,
    about = "Weir node agent: eBPF pod networking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (objects from a manifest directory or the Kubernetes API).
    Run(RunArgs),
    /// Remove everything Weir created on this node (pins, devices, iptables, conflist, state).
    Cleanup(RunArgs),
    /// Print the datapath's packet counters as JSON lines.
    Counters {
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Print where the datapath sends other nodes' traffic (prefix → node) as JSON lines.
    Remotes {
        #[command(flatten)]
        paths: PathArgs,
    },
}

#[derive(Args, Clone)]
struct PathArgs {
    /// Survives reboots: the CNI plugin's IPAM state and spooled DELs.
    #[arg(long, default_value = "/var/lib/weir")]
    state_dir: PathBuf,
    /// Run-time state and the CNI socket (agent.sock).
    #[arg(long, default_value = "/run/weir")]
    run_dir: PathBuf,
    /// Where maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/weir")]
    bpffs_dir: PathBuf,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// This node's pod CIDR, e.g. 10.244.1.0/24. Required unless --source kubernetes, which
    /// takes it from the Node's spec.podCIDRs.
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// Where Namespaces, Pods, NetworkPolicies, Services and Nodes come from: `manifests`
    /// (--manifest-dir, or nothing) or `kubernetes` (the API server: the in-cluster service
    /// account, or KUBECONFIG).
    #[arg(long, value_enum, default_value = "manifests")]
    source: SourceKind,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "127.0.0.1:9962")]
    metrics_address: std::net::SocketAddr,
    /// Where the conflist is written once the agent is ready.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The cluster's pod CIDR (all nodes); defaults to the node's pod CIDR widened to /16.
    #[arg(long)]
    cluster_cidr: Option<Ipv4Net>,
    #[arg(long)]
    node_name: Option<String>,
    /// The node's uplink; defaults to the interface of the IPv4 default route.
    #[arg(long)]
    uplink: Option<String>,
    /// Pod MTU; empty or absent: the uplink's, less 50 bytes with VXLAN.
    #[arg(long, default_value = "")]
    mtu: MtuArg,
    /// How pods reach other nodes' pods: native (straight over a shared L2, the default) or
    /// vxlan (a tunnel, for routed underlays). Every node of a cluster must use the same.
    #[arg(long, default_value = "native")]
    routing: weir_agent::routing::Routing,
    /// The Service ClusterIP range (kube-apiserver's --service-cluster-ip-range).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: Ipv4Net,
    /// A directory of Kubernetes manifests (YAML or JSON: Namespace, Pod, NetworkPolicy,
    /// Service) to enforce; watched for changes. Without it no pod is isolated.
    #[arg(long)]
    manifest_dir: Option<PathBuf>,
    #[command(flatten)]
    paths: PathArgs,
    #[arg(long, default_value = "/var/log/weir/cni.log")]
    cni_log_file: PathBuf,
    /// Where the sysctls the agent sets (forwarding, rp_filter) are: /proc/sys, or where the
    /// host's /proc/sys/net is mounted when /proc/sys is read-only (an unprivileged container,
    /// e.g. /host/proc/sys). Net sysctls are the agent's network namespace's either way.
    #[arg(long, default_value = "/proc/sys")]
    proc_sys_dir: PathBuf,
    /// Log to this file instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Entries of the TCP conntrack table; default: what Cilium's defaults give a node of this
    /// memory (66 280 per GiB, at least 131 072).
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(ConntrackSizes::MIN)..=i64::from(ConntrackSizes::MAX)))]
    ct_tcp_max: Option<u32>,
    /// Entries of the conntrack table of every other protocol; default: half the TCP table's
    /// share (33 140 per GiB, at least 65 536).
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(ConntrackSizes::MIN)..=i64::from(ConntrackSizes::MAX)))]
    ct_any_max: Option<u32>,
    /// Entries of the policy peer map (every rule table's peers, summed). When the node's
    /// policies need more, the biggest are left out: the pods they select are isolated, and
    /// reported; every other pod keeps its verdicts.
    #[arg(long, default_value_t = weir_common::maps::POLICY_PEERS_MAX, value_parser = clap::value_parser!(u32).range(1..=i64::from(ConntrackSizes::MAX)))]
    policy_peers_max: u32,
    /// Trust at most this many of the node's own addresses as the node (kubelet probes and the
    /// node's traffic always reach its pods); the rest are judged like any other source, and
    /// reported. At most 65 536.
    #[arg(long, default_value_t = weir_common::maps::HOST_IPS_MAX, value_parser = clap::value_parser!(u32).range(1..=i64::from(weir_common::maps::HOST_IPS_MAX)))]
    max_host_addresses: u32,
    /// How tc programs are attached: tcx links (Linux 6.6+), clsact filters (any kernel), or
    /// auto: clsact filters on pod veths (fast CNI ADD), tcx on the node's devices if the kernel
    /// has it.
    #[arg(long, default_value = "auto")]
    attach_mode: AttachMode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceKind {
    Manifests,
    Kubernetes,
}

impl RunArgs {
    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    /// For cleanup: --pod-cidr, else the one in the conflist the agent wrote.
    fn known_pod_cidr(&self) -> Result<Ipv4Net> {
        if let Some(cidr) = self.pod_cidr {
            return Ok(cidr);
        }
        let path = self.cni_conf_dir.join("10-weir.conflist");
        let conflist: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .with_context(|| format!("no --pod-cidr and no readable {}", path.display()))?;
        conflist["plugins"][0]["podCIDR"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no --pod-cidr and no podCIDR in {}", path.display()))
    }

    fn config(&self, pod_cidr: Ipv4Net) -> Config {
        let cluster_cidr = self.cluster_cidr.unwrap_or_else(|| {
            Ipv4Net::new(pod_cidr.network(), pod_cidr.prefix_len().min(16))
                .map(|n| n.trunc())
                .unwrap_or(pod_cidr)
        });
        Config {
            node_name: self.node_name(),
            pod_cidr: pod_cidr.trunc(),
            cluster_cidr,
            uplink: self.uplink.clone(),
            mtu: self.mtu.0,
            routing: self.routing,
            cni_conf_dir: self.cni_conf_dir.clone(),
            service_cidr: self.service_cidr.trunc(),
            manifest_dir: self.manifest_dir.clone(),
            proc_sys_dir: self.proc_sys_dir.clone(),
            conntrack: {
                let auto = ConntrackSizes::for_memory(total_memory());
                ConntrackSizes {
                    tcp: self.ct_tcp_max.unwrap_or(auto.tcp),
                    any: self.ct_any_max.unwrap_or(auto.any),
                }
            },
            max_host_addresses: self.max_host_addresses,
            policy_peers_max: self.policy_peers_max,
            paths: Paths {
                state_dir: self.paths.state_dir.clone(),
                run_dir: self.paths.run_dir.clone(),
                bpffs_dir: self.paths.bpffs_dir.clone(),
                cni_log_file: self.cni_log_file.clone(),
                attach_mode: self.attach_mode,
            },
        }
    }
}

/// The machine's memory (MemTotal), for sizing; 1 GiB when /proc/meminfo cannot tell.
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(1 << 30)
}

fn init_tracing(args: &RunArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &args.log_file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One thread: the agent's work is a few syscalls per request, and a small footprint matters more.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_tracing(&args)?;
            runtime()?.block_on(run(args))
        }
        Command::Cleanup(args) => {
            init_tracing(&args)?;
            // Cleanup must work again on a node it already cleaned (the uninstall DaemonSet's pod
            // may restart): without a known pod CIDR only the masquerade jump is left to match.
            let pod_cidr = args.known_pod_cidr().unwrap_or_else(|e| {
                warn!("{e:#}; the POSTROUTING jump to the masquerade chain cannot be matched");
                Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, 32).expect("a /32 is valid")
            });
            let config = args.config(pod_cidr);
            runtime()?.block_on(async {
                // Interfaces with an attachment but no endpoint record (a crash mid-ADD): the
                // agent's cleanup knows only recorded ones. Deleting an interface takes its
                // clsact qdisc and filters along.
                host::delete_attached_links(&config.paths.attachments()).await;
                agent::cleanup(&config).await
            })
        }
        Command::Counters { paths } => {
            let paths = Paths {
                state_dir: paths.state_dir,
                run_dir: paths.run_dir,
                bpffs_dir: paths.bpffs_dir,
                cni_log_file: PathBuf::new(),
                attach_mode: AttachMode::Auto,
            };
            let mut rows = counters::read_pinned(&paths.pin_dir())?;
            counters::name_pods(&mut rows, &paths.endpoints_dir());
            for row in rows {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
        Command::Remotes { paths } => {
            let pin_dir = paths
                .bpffs_dir
                .join(format!("v{}", weir_common::maps::ABI_VERSION));
            for row in weir_agent::routing::read_pinned(&pin_dir)? {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let telemetry = Arc::new(metrics::Telemetry::new());
    match tokio::net::TcpListener::bind(args.metrics_address).await {
        Ok(listener) => drop(tokio::spawn(metrics::serve(listener, telemetry.clone()))),
        // Not fatal: networking pods matters more than being observed.
        Err(e) => {
            warn!(address = %args.metrics_address, error = %e, "cannot serve metrics and health")
        }
    }
    let node_name = args.node_name();
    if args.source == SourceKind::Kubernetes && args.manifest_dir.is_some() {
        bail!("--manifest-dir and --source kubernetes exclude each other");
    }
    let kube = match args.source {
        SourceKind::Kubernetes => {
            let kube = Kubernetes::connect(&node_name, args.service_cidr.trunc()).await?;
            // Programming part of the cluster's policies would open pods the rest isolate.
            kube.source.synced().await;
            Some(kube)
        }
        SourceKind::Manifests => None,
    };
    let pod_cidr = match (args.pod_cidr, &kube) {
        (Some(cidr), _) => cidr,
        (None, Some(kube)) => kube.source.node_pod_cidr(&node_name).await,
        (None, None) => bail!("--pod-cidr is required unless --source kubernetes"),
    };
    let config = args.config(pod_cidr);
    info!(node = %config.node_name, pod_cidr = %config.pod_cidr, cluster_cidr = %config.cluster_cidr, "starting");
    let socket = config.paths.socket();
    let policy = match &kube {
        Some(kube) => PolicyEngine::kubernetes(kube.source.clone()),
        None => PolicyEngine::new(config.manifest_dir.as_deref())
            .context("opening the manifest directory")?,
    };
    let pin_dir = config.paths.pin_dir();
    let mut agent = Agent::start(config, policy, telemetry.clone())
        .await
        .context("starting weir-agent")?;
    let listener = server::bind(&socket)?;
    // A DEL spooled between start-up's drain and the bind above.
    agent.drain_del_queue();
    agent.write_conflist()?;
    release_startup_memory();
    info!(socket = %socket.display(), "ready");
    agent.publish();
    telemetry.set_started(pin_dir.clone());
    let agent = Arc::new(Mutex::new(agent));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        () = server::serve(listener, agent.clone(), kube.as_ref().map(|k| k.source.clone())) => {}
        () = watch::manifests(agent.clone()) => {}
        () = watch::kubernetes(agent.clone(), kube) => {}
        () = watch::host_addresses(agent.clone()) => {}
        () = watch::heartbeat(agent.clone()) => {}
        () = watch::del_spool(agent) => {}
        () = watch::conntrack(pin_dir, telemetry) => {}
        _ = term.recv() => info!("SIGTERM: stopping; pinned programs keep pods working"),
        _ = int.recv() => info!("SIGINT: stopping; pinned programs keep pods working"),
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// `--mtu`: a number, or empty for "derive it from the uplink" (what the DaemonSet passes when
/// the ConfigMap's `mtu` is left empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MtuArg(Option<u32>);

impl std::str::FromStr for MtuArg {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            Ok(MtuArg(None))
        } else {
            s.parse().map(|mtu| MtuArg(Some(mtu)))
        }
    }
}

#[cfg(test)]
mod install_tests;

/// Start-up (loading the eBPF object, the first full list, the first compile) peaks well above
/// what the agent needs afterwards; glibc keeps freed heap mapped unless asked to give it back.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers and is
    // safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
