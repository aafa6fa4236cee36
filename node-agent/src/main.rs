//! `weir-agent`: run the node agent, clean a node, or read the datapath counters.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Mutex,
};
use tracing::info;
use weir_agent::{
    agent::{self, Agent},
    config::{Config, Paths},
    counters,
    datapath::AttachMode,
    host, server, watch,
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
    /// Run the agent in the foreground (standalone mode: no Kubernetes API).
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
    /// This node's pod CIDR, e.g. 10.244.1.0/24.
    #[arg(long)]
    pod_cidr: Ipv4Net,
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
    /// Pod MTU; defaults to the uplink's, less 50 bytes with VXLAN.
    #[arg(long)]
    mtu: Option<u32>,
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
    /// Log to this file instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// How tc programs are attached: tcx links (Linux 6.6+), clsact filters (any kernel), or
    /// auto: tcx if the first attach shows the kernel has it, clsact otherwise.
    #[arg(long, default_value = "auto")]
    attach_mode: AttachMode,
}

impl RunArgs {
    fn config(&self) -> Config {
        let cluster_cidr = self.cluster_cidr.unwrap_or_else(|| {
            Ipv4Net::new(self.pod_cidr.network(), self.pod_cidr.prefix_len().min(16))
                .map(|n| n.trunc())
                .unwrap_or(self.pod_cidr)
        });
        Config {
            node_name: self.node_name.clone().unwrap_or_else(|| {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "localhost".into())
            }),
            pod_cidr: self.pod_cidr.trunc(),
            cluster_cidr,
            uplink: self.uplink.clone(),
            mtu: self.mtu,
            routing: self.routing,
            cni_conf_dir: self.cni_conf_dir.clone(),
            service_cidr: self.service_cidr.trunc(),
            manifest_dir: self.manifest_dir.clone(),
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
            runtime()?.block_on(run(args.config()))
        }
        Command::Cleanup(args) => {
            init_tracing(&args)?;
            let config = args.config();
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

async fn run(config: Config) -> Result<()> {
    info!(node = %config.node_name, pod_cidr = %config.pod_cidr, cluster_cidr = %config.cluster_cidr, "starting");
    let socket = config.paths.socket();
    let agent = Agent::start(config).await.context("starting weir-agent")?;
    let listener = server::bind(&socket)?;
    agent.write_conflist()?;
    info!(socket = %socket.display(), "ready");
    let agent = Arc::new(Mutex::new(agent));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        () = server::serve(listener, agent.clone()) => {}
        () = watch::manifests(agent.clone()) => {}
        () = watch::host_addresses(agent) => {}
        _ = term.recv() => info!("SIGTERM: stopping; pinned programs keep pods working"),
        _ = int.recv() => info!("SIGINT: stopping; pinned programs keep pods working"),
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
