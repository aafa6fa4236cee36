// SPDX-License-Identifier: Apache-2.0
//! `weir-lab`: bring up a Weir lab in network namespaces, add pods through the real CNI binary,
//! give them Kubernetes objects (Namespaces, Pods, Services, NetworkPolicies) the agents program,
//! probe between them, tear it all down. A thin layer over the `weir_tests` library.
//!
//! Exit codes: 0 success, 1 a probe (or a demo expectation) did not connect, 2 error (including
//! an object an agent rejected; the message is on stderr).

use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::AtomicBool,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use weir_tests::{
    demo::demo,
    lab::{self, Lab, LabError, LabOptions, MatrixOptions, PodSpec, ProbeOptions},
    names::{parse_labels, parse_ports, Endpoint, PodRef},
    netns::open_netns,
    paths,
    probe::Proto,
    serve::{ServeConfig, ServerSockets},
    services::{parse_serve_list, ServePort},
    state::Routing,
};

#[derive(Debug, Parser)]
#[command(name = "weir-lab", version, about = "A Weir lab in network namespaces")]
struct Cli {
    /// Lab directory (state, logs); its path also names the lab's namespaces.
    #[arg(long, global = true, env = "WEIR_LAB_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the namespaces and start one weir-agent per node; wait until they are ready.
    Up(UpArgs),
    /// Tear everything down (idempotent; works from partial state).
    Down,
    /// Print the lab's state as JSON.
    Status,
    /// Add or delete pods.
    #[command(subcommand)]
    Pod(PodCmd),
    /// Print a pod's IP (or, with --service, its Service's ClusterIP).
    Ip {
        /// NAMESPACE/NAME
        pod: PodRef,
        #[arg(long)]
        service: bool,
    },
    /// Apply Namespaces, Pods and NetworkPolicies (YAML documents or JSON); returns once every
    /// agent has programmed them, fails if one is malformed or rejected.
    Apply {
        /// The manifest file (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Delete a NetworkPolicy (NAMESPACE/NAME) or a ClusterNetworkPolicy (NAME); returns once
    /// every agent has programmed it.
    Delete {
        kind: DeleteKind,
        /// NAMESPACE/NAME, or NAME for a cluster-scoped kind
        object: String,
    },
    /// Change labels of a pod (`label pod NS/NAME k=v k2-`) or a namespace (`label ns NS k=v`).
    Label {
        kind: LabelKind,
        /// NAMESPACE/NAME for a pod, NAMESPACE for a namespace.
        target: String,
        /// `k=v` sets, `k-` removes.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Probe from FROM to TO (pod NS/NAME, `node`, `nodeK`, `ext`; TO may be an IPv4 address).
    Probe {
        from: Endpoint,
        to: Endpoint,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Probe every ordered pair of pods (loopback pairs included, marked), in parallel.
    Matrix {
        #[command(flatten)]
        probe: ProbeArgs,
        /// Only these pods (NS/NAME,...).
        #[arg(long, value_delimiter = ',')]
        pods: Option<Vec<PodRef>>,
    },
    /// Recent flows of every node: each new flow's policy verdict and each drop, naming the pods
    /// and the policies that decided.
    Flows {
        /// Either end in this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// Either end this pod ("name" or "namespace/name").
        #[arg(long)]
        pod: Option<String>,
        /// allowed or denied.
        #[arg(long)]
        verdict: Option<String>,
        /// A policy ("namespace/name") that decided.
        #[arg(long)]
        policy: Option<String>,
        /// Destination port.
        #[arg(long)]
        port: Option<u16>,
        /// At most this many flows a node, the latest.
        #[arg(long)]
        last: Option<usize>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What policy decides for a flow and why (pods as NS/NAME, or addresses), from every
    /// node's model, and whether the datapath's maps agree.
    Explain {
        from: String,
        to: String,
        #[arg(long, default_value = "TCP")]
        proto: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        json: bool,
    },
    /// Run the README demo (brings the lab up if needed; undoes it afterwards unless --keep).
    Demo {
        #[command(flatten)]
        up: UpArgs,
        /// Leave the lab and the demo pods in place.
        #[arg(long)]
        keep: bool,
    },
    /// Serve TCP and UDP inside a netns (what each pod runs).
    #[command(hide = true)]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Number of nodes, each its own netns with its own agent, on one shared segment.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// How pods reach other nodes' pods: native (straight over the segment) or vxlan.
    #[arg(long, default_value = "native")]
    routing: Routing,
    /// Seconds to wait for the agents to be ready.
    #[arg(long, default_value_t = 30)]
    ready_timeout_s: u64,
    /// Give ext routes to the pod CIDRs (pod IPs reachable from outside without NAT).
    #[arg(long)]
    ext_pod_routes: bool,
    /// Leave a failed `up` in place for debugging.
    #[arg(long)]
    keep_on_failure: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeleteKind {
    #[value(alias = "networkpolicies", alias = "netpol")]
    Networkpolicy,
    #[value(alias = "clusternetworkpolicies", alias = "cnp")]
    Clusternetworkpolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LabelKind {
    #[value(alias = "pods", alias = "po")]
    Pod,
    #[value(alias = "namespace", alias = "namespaces")]
    Ns,
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create a pod: Namespace (if missing) and Pod objects, `weir` ADD, a server on TCP, UDP and
    /// SCTP 80 and 81, a Service (ClusterIP) in front of it.
    Add {
        /// NAMESPACE/NAME
        pod: PodRef,
        /// Labels, k=v[,k=v...].
        #[arg(long, default_value = "", value_parser = parse_labels_arg)]
        labels: LabelMap,
        /// Node index (1-based); without it pods spread over the nodes, round-robin.
        #[arg(long)]
        node: Option<u32>,
        /// More ports to serve, proto:port[,...] (tcp, udp, sctp).
        #[arg(long, default_value = "", value_parser = parse_serve_arg)]
        serve: ServeList,
        /// Publish a hostPort, HOSTPORT:CONTAINERPORT[/tcp|udp|sctp][@HOSTIP]; repeatable.
        #[arg(long = "host-port", value_parser = parse_host_port_arg)]
        host_ports: Vec<weir_agent_api::PortMapping>,
    },
    /// Delete a pod: stop its server, `weir` DEL, delete its netns, Service and objects.
    Del {
        /// NAMESPACE/NAME
        pod: PodRef,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServeList(Vec<ServePort>);

fn parse_serve_arg(s: &str) -> Result<ServeList, String> {
    parse_serve_list(s)
        .map(ServeList)
        .map_err(|e| e.to_string())
}

fn parse_host_port_arg(s: &str) -> Result<weir_agent_api::PortMapping, String> {
    weir_tests::services::parse_host_port(s).map_err(|e| e.to_string())
}

type LabelMap = std::collections::BTreeMap<String, String>;

fn parse_labels_arg(s: &str) -> Result<LabelMap, String> {
    parse_labels(s).map_err(|e| e.to_string())
}

fn parse_ports_arg(s: &str) -> Result<Ports, String> {
    parse_ports(s).map(Ports).map_err(|e| e.to_string())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ports(Vec<u16>);

#[derive(Debug, Args)]
struct ProbeArgs {
    /// tcp, udp, sctp or icmp.
    #[arg(long)]
    proto: Proto,
    /// Port (TCP/UDP/SCTP).
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Probe the target pod's Service (ClusterIP) instead of the pod.
    #[arg(long)]
    via_service: bool,
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

impl ProbeArgs {
    fn options(&self) -> ProbeOptions {
        let opts = ProbeOptions::new(self.proto, self.port)
            .timeout(Duration::from_millis(self.timeout_ms));
        if self.via_service {
            opts.via_service()
        } else {
            opts
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Netns to serve in (a name under /run/netns).
    #[arg(long)]
    netns: String,
    /// Written back on each TCP connection.
    #[arg(long, default_value = "weir-lab")]
    name: String,
    #[arg(long, default_value = "0.0.0.0")]
    bind: Ipv4Addr,
    #[arg(long, default_value = "", value_parser = parse_ports_arg)]
    tcp: Ports,
    #[arg(long, default_value = "", value_parser = parse_ports_arg)]
    udp: Ports,
    #[arg(long, default_value = "", value_parser = parse_ports_arg)]
    sctp: Ports,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if let Some(
                LabError::CniAdd { error, stderr, .. } | LabError::CniDel { error, stderr, .. },
            ) = err.downcast_ref::<LabError>()
            {
                // The CNI error itself, as the plugin reported it.
                if let Ok(json) = serde_json::to_string(error) {
                    println!("{json}");
                }
                if !stderr.trim().is_empty() {
                    eprintln!("weir stderr:\n{}", stderr.trim_end());
                }
            }
            eprintln!("weir-lab: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn up_options(dir: PathBuf, args: &UpArgs) -> LabOptions {
    LabOptions {
        dir,
        nodes: args.nodes,
        routing: args.routing,
        ready_timeout: Duration::from_secs(args.ready_timeout_s),
        ext_pod_routes: args.ext_pod_routes,
        keep_on_failure: args.keep_on_failure,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = paths::lab_dir(cli.dir.as_deref());
    match cli.command {
        Cmd::Up(args) => {
            let state = lab::up(&up_options(dir, &args))?;
            print_json(&state)?;
        }
        Cmd::Down => {
            let report = lab::down(&dir)?;
            for warning in &report.warnings {
                eprintln!("weir-lab: warning: {warning}");
            }
            print_json(&report)?;
        }
        Cmd::Status => print_json(&Lab::open(&dir)?.state()?)?,
        Cmd::Pod(PodCmd::Add {
            pod,
            labels,
            node,
            serve,
            host_ports,
        }) => {
            let spec = PodSpec {
                pod,
                labels,
                node,
                serve: serve.0,
                unpublished: false,
                host_ports,
            };
            print_json(&Lab::open(&dir)?.add_pod_with(&spec)?)?;
        }
        Cmd::Pod(PodCmd::Del { pod }) => {
            Lab::open(&dir)?.del_pod(&pod.namespace, &pod.name)?;
        }
        Cmd::Ip { pod, service } => {
            let lab = Lab::open(&dir)?;
            let ip = if service {
                lab.service_ip(&pod.namespace, &pod.name)?
            } else {
                lab.pod(&pod.namespace, &pod.name)?.ip
            };
            println!("{ip}");
        }
        Cmd::Apply { file } => Lab::open(&dir)?
            .apply_yaml(&read_file_or_stdin(&file)?)
            .with_context(|| format!("applying {}", file.display()))?,
        Cmd::Delete {
            kind: DeleteKind::Networkpolicy,
            object,
        } => {
            let object: PodRef = object.parse().context("NAMESPACE/NAME")?;
            Lab::open(&dir)?.delete_policy(&object.namespace, &object.name)?
        }
        Cmd::Delete {
            kind: DeleteKind::Clusternetworkpolicy,
            object,
        } => Lab::open(&dir)?.delete_cluster_policy(&object)?,
        Cmd::Label {
            kind,
            target,
            changes,
        } => label(&Lab::open(&dir)?, kind, &target, &changes)?,
        Cmd::Probe { from, to, probe } => {
            let state = Lab::open(&dir)?.state()?;
            let result = lab::probe_via(&state, &from, &to, &probe.options())?;
            print_json(&result)?;
            if !result.connected {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Matrix { probe, pods } => {
            let matrix = Lab::open(&dir)?.matrix_with(&matrix_options(&probe, pods.as_deref()))?;
            print_json(&matrix)?;
            eprint!("{}", matrix.table());
        }
        Cmd::Flows {
            namespace,
            pod,
            verdict,
            policy,
            port,
            last,
            json,
        } => {
            let filter = weir_agent_api::FlowFilter {
                namespace,
                pod,
                verdict,
                policy,
                port,
                ..Default::default()
            };
            for flow in Lab::open(&dir)?.flows(&filter, last)? {
                if json {
                    println!("{}", serde_json::to_string(&flow)?);
                } else {
                    println!("{flow}");
                }
            }
        }
        Cmd::Explain {
            from,
            to,
            proto,
            port,
            json,
        } => {
            let explanation = Lab::open(&dir)?.explain(&from, &to, &proto, port)?;
            if json {
                print_json(&explanation)?;
            } else {
                print!("{explanation}");
            }
            if !explanation.datapath_agrees {
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Demo { up, keep } => {
            let report = demo(&up_options(dir, &up), keep)?;
            print!("{}", report.table());
            print!("{}", report.epilogue());
            if !report.ok {
                eprintln!("weir-lab: demo: some probes did not do what the policy says");
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Serve(args) => serve(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `-` reads stdin.
fn read_file_or_stdin(file: &Path) -> Result<String> {
    if file.as_os_str() != "-" {
        return std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    Ok(text)
}

fn label(lab: &Lab, kind: LabelKind, target: &str, changes: &[String]) -> Result<()> {
    let changes: Vec<&str> = changes.iter().map(String::as_str).collect();
    match kind {
        LabelKind::Pod => {
            let pod: PodRef = target.parse()?;
            lab.label_pod(&pod.namespace, &pod.name, &changes)
        }
        LabelKind::Ns => {
            if !weir_tests::names::is_dns_name(target) {
                bail!("{target:?} is not a namespace name");
            }
            lab.label_namespace(target, &changes)
        }
    }
}

fn matrix_options(probe: &ProbeArgs, pods: Option<&[PodRef]>) -> MatrixOptions {
    let base = probe.options();
    let opts = MatrixOptions {
        via_service: base.via_service,
        timeout: base.timeout,
        ..MatrixOptions::new(base.proto, base.port)
    };
    match pods {
        Some(pods) => opts.pods(&pods.iter().map(PodRef::to_string).collect::<Vec<_>>()),
        None => opts,
    }
}

/// Enter the netns (this process is single-threaded here, so the whole process moves), bind, say
/// "ready" on stdout, serve until killed.
fn serve(args: &ServeArgs) -> Result<()> {
    let fd = open_netns(&args.netns)?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering netns {}", args.netns))?;
    drop(fd);
    let sockets = ServerSockets::bind(&ServeConfig {
        name: args.name.clone(),
        bind: args.bind,
        tcp_ports: args.tcp.0.clone(),
        udp_ports: args.udp.0.clone(),
        sctp_ports: args.sctp.0.clone(),
    })?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")?;
        stdout.flush()?;
    }
    let never = AtomicBool::new(false);
    sockets.serve(&never)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weir-lab").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_accepts_nodes_and_routing() {
        let cli = parse(&["up", "--nodes", "2", "--routing", "vxlan"]).unwrap();
        let Cmd::Up(args) = cli.command else {
            panic!("not up: {cli:?}")
        };
        assert_eq!((args.nodes, args.routing), (2, Routing::Vxlan));
        assert!(parse(&["up", "--routing", "geneve"]).is_err());
        let Cmd::Up(args) = parse(&["up"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (args.nodes, args.routing, args.ready_timeout_s),
            (1, Routing::Native, 30)
        );
    }

    #[test]
    fn pod_add_parses_labels_and_node() {
        let cli = parse(&[
            "pod",
            "add",
            "default/web",
            "--labels",
            "role=web,tier=front",
            "--node",
            "2",
        ])
        .unwrap();
        let Cmd::Pod(PodCmd::Add {
            pod,
            labels,
            node,
            serve,
            host_ports,
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!(pod, PodRef::new("default", "web"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(node, Some(2));
        assert!(serve.0.is_empty());
        assert!(host_ports.is_empty());
        let cli = parse(&[
            "pod",
            "add",
            "x/a",
            "--host-port",
            "8080:80",
            "--host-port",
            "5353:53/udp@192.0.2.10",
        ])
        .unwrap();
        let Cmd::Pod(PodCmd::Add { host_ports, .. }) = cli.command else {
            panic!("{cli:?}")
        };
        let shown: Vec<String> = host_ports.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["*:8080/tcp -> 80", "192.0.2.10:5353/udp -> 53"]);
        assert!(parse(&["pod", "add", "x/a", "--host-port", "8080"]).is_err());
        assert!(parse(&["pod", "add", "x/a", "--host-port", "0:80"]).is_err());
        assert!(parse(&["pod", "add", "x/a", "--host-port", "80:80/icmp"]).is_err());
        assert!(parse(&["pod", "add", "web"]).is_err());
        assert!(parse(&["pod", "add", "default/web", "--labels", "role"]).is_err());
        let cli = parse(&["pod", "add", "x/a", "--serve", "tcp:3306,udp:53,sctp:9"]).unwrap();
        let Cmd::Pod(PodCmd::Add { serve, .. }) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            serve.0,
            vec![
                ServePort::new(Proto::Tcp, 3306),
                ServePort::new(Proto::Udp, 53),
                ServePort::new(Proto::Sctp, 9)
            ]
        );
        assert!(parse(&["pod", "add", "x/a", "--serve", "icmp:1"]).is_err());
    }

    #[test]
    fn object_commands_parse_as_kubectl_spells_them() {
        let Cmd::Apply { file } = parse(&["apply", "-f", "p.yaml"]).unwrap().command else {
            panic!()
        };
        assert_eq!(file, PathBuf::from("p.yaml"));
        assert!(parse(&["apply"]).is_err(), "-f is required");
        for kind in ["networkpolicy", "networkpolicies", "netpol"] {
            let Cmd::Delete { kind, object } = parse(&["delete", kind, "x/allow"]).unwrap().command
            else {
                panic!()
            };
            assert_eq!(
                (kind, object.as_str()),
                (DeleteKind::Networkpolicy, "x/allow")
            );
        }
        assert!(parse(&["delete", "pod", "x/a"]).is_err());
        let Cmd::Label {
            kind,
            target,
            changes,
        } = parse(&["label", "pod", "x/a", "k=v", "k2-"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!((kind, target.as_str()), (LabelKind::Pod, "x/a"));
        assert_eq!(changes, ["k=v", "k2-"]);
        let Cmd::Label { kind, .. } = parse(&["label", "ns", "x", "k=v"]).unwrap().command else {
            panic!()
        };
        assert_eq!(kind, LabelKind::Ns);
        assert!(
            parse(&["label", "ns", "x"]).is_err(),
            "changes are required"
        );
        let Cmd::Matrix { probe, pods } = parse(&[
            "matrix",
            "--proto",
            "sctp",
            "--port",
            "81",
            "--via-service",
            "--pods",
            "x/a,y/b",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert!(probe.via_service);
        assert_eq!(probe.proto, Proto::Sctp);
        assert_eq!(pods.unwrap().len(), 2);
    }

    #[test]
    fn probe_parses_endpoints_and_defaults() {
        let cli = parse(&["probe", "default/web", "10.244.1.7", "--proto", "udp"]).unwrap();
        let Cmd::Probe { from, to, probe } = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(from, Endpoint::Pod(PodRef::new("default", "web")));
        assert_eq!(to, Endpoint::Ip(Ipv4Addr::new(10, 244, 1, 7)));
        assert_eq!(
            (probe.proto, probe.port, probe.timeout_ms, probe.via_service),
            (Proto::Udp, 80, 1000, false)
        );
        assert!(parse(&[
            "probe",
            "node",
            "ext",
            "--proto",
            "icmp",
            "--port",
            "81",
            "--timeout-ms",
            "50"
        ])
        .is_ok());
        assert!(
            parse(&["probe", "node", "ext"]).is_err(),
            "--proto is required"
        );
        assert!(parse(&["probe", "nowhere", "ext", "--proto", "tcp"]).is_err());
    }

    #[test]
    fn dir_is_global_and_serve_is_hidden_but_parses() {
        let cli = parse(&["--dir", "/tmp/lab", "down"]).unwrap();
        assert_eq!(cli.dir, Some(PathBuf::from("/tmp/lab")));
        let cli = parse(&["matrix", "--proto", "tcp", "--dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.dir, Some(PathBuf::from("/tmp/x")));
        let cli = parse(&["serve", "--netns", "x", "--tcp", "80,81", "--udp", "80"]).unwrap();
        let Cmd::Serve(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.tcp, Ports(vec![80, 81]));
        assert_eq!(args.udp, Ports(vec![80]));
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("serve"), "{help}");
    }
}
