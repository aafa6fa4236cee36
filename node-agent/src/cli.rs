//! `weir-agent`'s command line: run the agent, clean a node, or read the datapath's counters and
//! routes. The arguments become a [`Config`]; the daemon takes it from there.
//!
//! Layer: the top; it imports the daemon, and the readers of pinned state.

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use tracing::warn;
use weir_agent_api::Routing;

use crate::{
    config::{Config, ConntrackSizes, Paths},
    daemon,
    kernel::{datapath::AttachMode, pins},
    program::endpoints::pod_names,
    sources::kubernetes::Kubernetes,
    telemetry::{self, counters, Telemetry},
};

#[derive(Parser)]
#[command(
    name = "weir-agent",
    version,
    about = "Weir node agent: eBPF pod networking"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Show recent flows: every new flow's policy verdict and every drop, naming the pods and the
    /// policies and rules that decided (from the running agent).
    Flows(FlowsArgs),
    /// Say what policy decides for a flow, and why, without sending a packet; and whether the
    /// datapath's maps agree.
    Explain(ExplainArgs),
}

#[derive(Args, Clone)]
pub struct FlowsArgs {
    /// Keep printing new flows as they come.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N matching flows (before following).
    #[arg(long)]
    pub last: Option<usize>,
    /// Either end in this namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Either end this pod ("name" or "namespace/name").
    #[arg(long)]
    pub pod: Option<String>,
    /// allowed or denied.
    #[arg(long)]
    pub verdict: Option<String>,
    /// ingress or egress.
    #[arg(long)]
    pub direction: Option<String>,
    /// TCP, UDP, SCTP or ICMP.
    #[arg(long)]
    pub proto: Option<String>,
    /// Destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// A policy ("namespace/name") that decided.
    #[arg(long)]
    pub policy: Option<String>,
    /// text (one line a flow) or json (one object a line).
    #[arg(long, short, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub paths: PathArgs,
}

#[derive(Args, Clone)]
pub struct ExplainArgs {
    /// The source: a pod as namespace/name, or an IPv4 address.
    #[arg(long)]
    pub from: String,
    /// The destination: a pod as namespace/name, or an IPv4 address.
    #[arg(long)]
    pub to: String,
    #[arg(long, default_value = "TCP")]
    pub proto: String,
    #[arg(long)]
    pub port: u16,
    #[arg(long, short, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub paths: PathArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub struct PathArgs {
    /// Survives reboots: the CNI plugin's IPAM state and spooled DELs.
    #[arg(long, default_value = "/var/lib/weir")]
    pub state_dir: PathBuf,
    /// Run-time state and the CNI socket (agent.sock).
    #[arg(long, default_value = "/run/weir")]
    pub run_dir: PathBuf,
    /// Where maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/weir")]
    pub bpffs_dir: PathBuf,
}

impl PathArgs {
    /// The paths of an agent run with these arguments (for commands that read its state).
    pub fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            run_dir: self.run_dir.clone(),
            bpffs_dir: self.bpffs_dir.clone(),
            cni_log_file: PathBuf::new(),
            attach_mode: AttachMode::Auto,
        }
    }
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// This node's pod CIDR, e.g. 10.244.1.0/24. Required unless --source kubernetes, which
    /// takes it from the Node's spec.podCIDRs.
    #[arg(long)]
    pub pod_cidr: Option<Ipv4Net>,
    /// Where Namespaces, Pods, NetworkPolicies, Services and Nodes come from: `manifests`
    /// (--manifest-dir, or nothing) or `kubernetes` (the API server: the in-cluster service
    /// account, or KUBECONFIG).
    #[arg(long, value_enum, default_value = "manifests")]
    pub source: SourceKind,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "127.0.0.1:9962")]
    pub metrics_address: std::net::SocketAddr,
    /// Where the conflist is written once the agent is ready.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The cluster's pod CIDR (all nodes); defaults to the node's pod CIDR widened to /16.
    #[arg(long)]
    pub cluster_cidr: Option<Ipv4Net>,
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's uplink; defaults to the interface of the IPv4 default route.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Pod MTU; empty or absent: the uplink's, less 50 bytes with VXLAN.
    #[arg(long, default_value = "")]
    pub mtu: MtuArg,
    /// How pods reach other nodes' pods: native (straight over a shared L2, the default) or
    /// vxlan (a tunnel, for routed underlays). Every node of a cluster must use the same.
    #[arg(long, default_value = "native")]
    pub routing: Routing,
    /// The Service ClusterIP range (kube-apiserver's --service-cluster-ip-range).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: Ipv4Net,
    /// A directory of Kubernetes manifests (YAML or JSON: Namespace, Pod, NetworkPolicy,
    /// Service) to enforce; watched for changes. Without it no pod is isolated.
    #[arg(long)]
    pub manifest_dir: Option<PathBuf>,
    #[command(flatten)]
    pub paths: PathArgs,
    #[arg(long, default_value = "/var/log/weir/cni.log")]
    pub cni_log_file: PathBuf,
    /// Where the sysctls the agent sets (forwarding, rp_filter) are: /proc/sys, or where the
    /// host's /proc/sys/net is mounted when /proc/sys is read-only (an unprivileged container,
    /// e.g. /host/proc/sys). Net sysctls are the agent's network namespace's either way.
    #[arg(long, default_value = "/proc/sys")]
    pub proc_sys_dir: PathBuf,
    /// Log to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Entries of the TCP conntrack table; default: what Cilium's defaults give a node of this
    /// memory (66 280 per GiB, at least 131 072).
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(ConntrackSizes::MIN)..=i64::from(ConntrackSizes::MAX)))]
    pub ct_tcp_max: Option<u32>,
    /// Entries of the conntrack table of every other protocol; default: half the TCP table's
    /// share (33 140 per GiB, at least 65 536).
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(ConntrackSizes::MIN)..=i64::from(ConntrackSizes::MAX)))]
    pub ct_any_max: Option<u32>,
    /// Entries of the policy peer map (every rule table's peers, summed). When the node's
    /// policies need more, the biggest are left out: the pods they select are isolated, and
    /// reported; every other pod keeps its verdicts.
    #[arg(long, default_value_t = weir_common::maps::POLICY_PEERS_MAX, value_parser = clap::value_parser!(u32).range(1..=i64::from(ConntrackSizes::MAX)))]
    pub policy_peers_max: u32,
    /// Trust at most this many of the node's own addresses as the node (kubelet probes and the
    /// node's traffic always reach its pods); the rest are judged like any other source, and
    /// reported. At most 65 536.
    #[arg(long, default_value_t = weir_common::maps::HOST_IPS_MAX, value_parser = clap::value_parser!(u32).range(1..=i64::from(weir_common::maps::HOST_IPS_MAX)))]
    pub max_host_addresses: u32,
    /// Flow events (every new flow's policy verdict, every drop) each endpoint may produce per
    /// second on each CPU, with a burst of as many; beyond that they are counted as lost
    /// (`weir_flow_events_lost_total`). 0 turns flow events off; verdict counts stay.
    #[arg(long, default_value_t = 200)]
    pub flow_events_per_sec: u32,
    /// How many recent flows the agent keeps in memory for `weir-agent flows` (about 200 bytes
    /// each).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub flow_log_size: u64,
    /// How tc programs are attached: tcx links (Linux 6.6+), clsact filters (any kernel), or
    /// auto: clsact filters on pod veths (fast CNI ADD), tcx on the node's devices if the kernel
    /// has it.
    #[arg(long, default_value = "auto")]
    pub attach_mode: AttachMode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Manifests,
    Kubernetes,
}

impl RunArgs {
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    /// For cleanup: --pod-cidr, else the one in the conflist the agent wrote.
    pub fn known_pod_cidr(&self) -> Result<Ipv4Net> {
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

    pub fn config(&self, pod_cidr: Ipv4Net) -> Config {
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
            flow_events_per_sec: self.flow_events_per_sec,
            flow_log_size: self.flow_log_size as usize,
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

/// Parse the command line and do what it says.
pub fn main() -> Result<()> {
    match Cli::parse().command {
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
                Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).expect("a /32 is valid")
            });
            let config = args.config(pod_cidr);
            runtime()?.block_on(daemon::cleanup(&config))
        }
        Command::Counters { paths } => {
            let paths = paths.paths();
            let mut rows = counters::rows(&paths.pin_dir())?;
            counters::name_pods(&mut rows, &pod_names(&paths.endpoints_dir()));
            for row in rows {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
        Command::Flows(args) => flows(&args),
        Command::Explain(args) => explain(&args),
        Command::Remotes { paths } => {
            for (prefix, node_ip) in pins::read_remotes(&paths.paths().pin_dir())? {
                let row = RemoteRow {
                    prefix: prefix.to_string(),
                    node_ip,
                };
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
    }
}

fn flows(args: &FlowsArgs) -> Result<()> {
    use std::io::Write;
    let request = weir_agent_api::Request::Flows {
        filter: weir_agent_api::FlowFilter {
            namespace: args.namespace.clone(),
            pod: args.pod.clone(),
            verdict: args.verdict.clone(),
            direction: args.direction.clone(),
            proto: args.proto.clone(),
            port: args.port,
            policy: args.policy.clone(),
        },
        follow: args.follow,
        last: args.last,
    };
    let timeout = (!args.follow).then(|| std::time::Duration::from_secs(10));
    let mut stdout = std::io::stdout().lock();
    let mut result = Ok(());
    weir_agent_api::flows(&args.paths.paths().socket(), &request, timeout, |flow| {
        let line = match args.output {
            OutputFormat::Json => serde_json::to_string(&flow).unwrap_or_default(),
            OutputFormat::Text => flow.to_string(),
        };
        // A closed pipe (`| head`) ends the stream quietly.
        result = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        result.is_ok()
    })?;
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn explain(args: &ExplainArgs) -> Result<()> {
    let request = weir_agent_api::Request::Explain {
        query: weir_agent_api::ExplainQuery {
            from: args.from.clone(),
            to: args.to.clone(),
            proto: args.proto.clone(),
            port: args.port,
        },
    };
    let socket = args.paths.paths().socket();
    match weir_agent_api::call(&socket, &request, std::time::Duration::from_secs(10))? {
        weir_agent_api::Response::Explained { explanation } => {
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string(&explanation)?),
                OutputFormat::Text => print!("{explanation}"),
            }
            Ok(())
        }
        weir_agent_api::Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from weir-agent: {other:?}"),
    }
}

/// One `WEIR_REMOTES` entry, as `weir-agent remotes` prints it.
#[derive(serde::Serialize)]
struct RemoteRow {
    /// `10.244.2.0/24`.
    prefix: String,
    node_ip: Ipv4Addr,
}

/// Serve telemetry (alive while the first list of a big cluster runs), connect to the source,
/// learn the pod CIDR, and run the daemon.
async fn run(args: RunArgs) -> Result<()> {
    let telemetry = Arc::new(Telemetry::new());
    match tokio::net::TcpListener::bind(args.metrics_address).await {
        Ok(listener) => drop(tokio::spawn(telemetry::http::serve(
            listener,
            telemetry.clone(),
        ))),
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
    daemon::run(args.config(pod_cidr), kube, telemetry).await
}

/// `--mtu`: a number, or empty for "derive it from the uplink" (what the DaemonSet passes when
/// the ConfigMap's `mtu` is left empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtuArg(pub Option<u32>);

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
