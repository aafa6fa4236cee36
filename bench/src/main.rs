// SPDX-License-Identifier: Apache-2.0
//! `weir-bench`: is Weir's per-packet policy cost flat in the number of rules, and is its same-node
//! path at least as fast as a plain routed veth pair? A benchmark, not a test: it prints numbers
//! and ratios against baselines measured in the same run, and exits 0 unless something broke.
//!
//! `weir-bench run` measures, round by round and interleaved, TCP throughput (iperf3), request
//! rate on one connection (RR) and connection rate (CRR) in these scenarios:
//!
//! | scenario       | path                                                                    |
//! |----------------|-------------------------------------------------------------------------|
//! | `veth`         | client ─veth─ router (kernel forwarding, no eBPF, no iptables) ─veth─ server |
//! | `iptables-0`   | the same, the router's FORWARD chain holding just `-j ACCEPT`           |
//! | `iptables-10k` | the same, 9 999 non-matching rules before that ACCEPT                   |
//! | `weir-0`       | two pods of a Weir lab, no policy selecting the server                  |
//! | `weir-1`       | the same, the server isolated by a policy with one rule                 |
//! | `weir-10k`     | the same, the server isolated by a policy with 10 000 rules             |
//! | `weir-tiers`   | with `--tiers N`: the server under N ClusterNetworkPolicies and N + 1 NetworkPolicies |
//!
//! `weir-bench cross-node` measures pod → pod across nodes, native and VXLAN, against node → node
//! over the same segment (see [`crossnode`]).
//!
//! `rr-server` and `rr-client` are the RR/CRR tools it runs inside the namespaces (see [`rr`]).
//! See `bench/README.md` for how to run it and how to read it.

mod crossnode;
mod measure;
mod netns;
mod report;
mod routed;
mod rr;
mod rules;
mod weir;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{
    measure::{Samples, Scenario},
    report::{scenario_name, Machine, Metric, Report, ScenarioResult},
    routed::{Routed, SERVER_IP},
    rr::Mode,
};

#[derive(Debug, Parser)]
#[command(
    name = "weir-bench",
    version,
    about = "Weir's same-node datapath and policy cost, against baselines of the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Set everything up, measure every scenario, print the table (or JSON), tear everything down.
    Run(RunArgs),
    /// Pod → pod across two nodes, native and VXLAN, against node → node on the same segment.
    CrossNode(CrossNodeArgs),
    /// Serve RR/CRR on a TCP port (run inside a namespace).
    RrServer {
        #[arg(long)]
        port: u16,
    },
    /// Run RR or CRR transactions for a while and print the rate as one JSON line.
    RrClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, value_enum)]
        mode: Mode,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Rounds; every number reported is the median over them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Rules in the big rulesets (Weir and iptables alike).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(2..=i64::from(rules::MAX_RULES)))]
    rules: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only the veth and iptables scenarios (no Weir lab).
    #[arg(long)]
    skip_weir: bool,
    /// The weir-lab binary [default: next to weir-bench].
    #[arg(long)]
    weir_lab: Option<PathBuf>,
    /// Directory for the Weir lab [default: /run/weir-bench-<pid>].
    #[arg(long)]
    lab_dir: Option<PathBuf>,
    /// Also measure a server under this many ClusterNetworkPolicies (half Admin, half Baseline)
    /// and as many NetworkPolicies (`weir-tiers`, against `weir-0`); 0: not measured.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(rules::MAX_RULES / 2)))]
    tiers: u32,
    /// Also measure the big ruleset in a second lab whose agents publish no flow events
    /// (`weir-N-noevents`), for the cost of flow events.
    #[arg(long)]
    flow_events_baseline: bool,
}

#[derive(Debug, Args)]
struct CrossNodeArgs {
    /// Rounds; every number reported is the median over them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The weir-lab binary [default: next to weir-bench].
    #[arg(long)]
    weir_lab: Option<PathBuf>,
}

fn cross_node(args: &CrossNodeArgs) -> Result<()> {
    require_tools()?;
    catch_signals()?;
    let cli = weir_lab_cli(args.weir_lab.as_deref())?;
    let prefix = format!("/run/weir-bench-{}", std::process::id());
    let report = crossnode::run(&cli, &prefix, args.rounds, args.seconds, |scenarios| {
        measure_all(scenarios, args.rounds, args.seconds)
    })?;
    print_report(args.json, &report, report.table())
}

/// Print `report` as JSON or as its `table`; the labs go when the caller returns.
fn print_report(json: bool, report: &impl serde::Serialize, table: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{table}");
    }
    eprintln!("weir-bench: tearing down");
    Ok(())
}

/// `--weir-lab`, or the `weir-lab` next to this binary.
fn weir_lab_cli(given: Option<&std::path::Path>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(std::env::current_exe()?.with_file_name("weir-lab")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(&args),
        Cmd::CrossNode(args) => cross_node(&args),
        Cmd::RrServer { port } => rr::serve(port),
        Cmd::RrClient {
            addr,
            seconds,
            mode,
        } => rr::run_client(addr, Duration::from_secs(seconds), mode).and_then(|result| {
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if INTERRUPTED.load(Ordering::SeqCst) => {
            eprintln!("weir-bench: interrupted; everything it made is removed");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("weir-bench: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT, SIGTERM and SIGHUP so that the guards get to clean up: the run stops at its next
/// step (a Ctrl-C also ends the measuring children, which ends the current step at once).
fn catch_signals() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catching {signal}"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn require_tools() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("weir-bench run needs root (it makes network namespaces)");
    }
    for tool in [
        "ip",
        "nsenter",
        "iperf3",
        "iptables-restore",
        "iptables-save",
        "sysctl",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            bail!("{tool} is not installed (scripts/setup.sh installs what the bench needs)");
        }
    }
    Ok(())
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Default MTU of the baselines when there are no Weir pods to copy it from.
const DEFAULT_MTU: u32 = 1500;

fn run(args: &RunArgs) -> Result<()> {
    require_tools()?;
    catch_signals()?;
    let pid = std::process::id();
    let load_before = load_average();
    let mut checks = Vec::new();
    let (weir_n, iptables_n) = (
        scenario_name("weir", args.rules),
        scenario_name("iptables", args.rules),
    );

    // Weir first: the baselines copy its pods' MTU.
    let weir = if args.skip_weir {
        None
    } else {
        let cli = weir_lab_cli(args.weir_lab.as_deref())?;
        let dir = args
            .lab_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/weir-bench-{pid}")));
        eprintln!("weir-bench: bringing up a Weir lab in {}", dir.display());
        let setup = weir::set_up(&cli, &dir, args.rules, args.tiers)?;
        checks.extend(setup.checks.iter().cloned());
        Some(setup)
    };
    let quiet = match (&weir, args.flow_events_baseline) {
        (Some(_), true) => {
            let cli = weir_lab_cli(args.weir_lab.as_deref())?;
            let dir = PathBuf::from(format!("/run/weir-bench-{pid}-noevents"));
            eprintln!(
                "weir-bench: bringing up a Weir lab without flow events in {}",
                dir.display()
            );
            let setup = weir::set_up_with(&cli, &dir, args.rules, 0, "--flow-events-per-sec 0")?;
            checks.extend(setup.checks.iter().map(|c| format!("(no flow events) {c}")));
            Some(setup)
        }
        _ => None,
    };
    check_interrupted()?;
    let mtu = weir.as_ref().map_or(DEFAULT_MTU, |w| w.mtu);

    eprintln!("weir-bench: building the routed veth baselines");
    let prefix = format!("weir-bench-{pid}-");
    let veth = Routed::build(&format!("{prefix}veth-"), mtu)?;
    let ipt0 = Routed::build(&format!("{prefix}ipt0-"), mtu)?;
    let ipt_n = Routed::build(&format!("{prefix}iptn-"), mtu)?;
    for (routed, rules, name) in [(&ipt0, 1, "iptables-0"), (&ipt_n, args.rules, &iptables_n)] {
        let loaded = routed.load_iptables(rules)?;
        if loaded != rules as usize {
            bail!("{name}: FORWARD holds {loaded} rules, not {rules}");
        }
        checks.push(format!(
            "{name}: rules in the router's FORWARD chain: {loaded}"
        ));
    }
    check_interrupted()?;

    let mut scenarios = vec![
        Scenario::start(
            "veth".into(),
            &veth.client.path(),
            &veth.server.path(),
            SERVER_IP,
        )?,
        Scenario::start(
            "iptables-0".into(),
            &ipt0.client.path(),
            &ipt0.server.path(),
            SERVER_IP,
        )?,
        Scenario::start(
            iptables_n.clone(),
            &ipt_n.client.path(),
            &ipt_n.server.path(),
            SERVER_IP,
        )?,
    ];
    if let Some(w) = &weir {
        for (name, server) in ["weir-0".to_owned(), "weir-1".to_owned(), weir_n]
            .into_iter()
            .zip(&w.servers)
        {
            scenarios.push(Scenario::start(
                name,
                &w.client.netns,
                &server.netns,
                server.ip,
            )?);
        }
    }
    if let Some(server) = weir.as_ref().and_then(|w| Some((w, w.tiered.as_ref()?))) {
        let (w, server) = server;
        scenarios.push(Scenario::start(
            "weir-tiers".into(),
            &w.client.netns,
            &server.netns,
            server.ip,
        )?);
    }
    if let Some(q) = &quiet {
        let server = &q.servers[2];
        scenarios.push(Scenario::start(
            format!("{}-noevents", scenario_name("weir", args.rules)),
            &q.client.netns,
            &server.netns,
            server.ip,
        )?);
    }

    let scenario_refs: Vec<&Scenario> = scenarios.iter().collect();
    let samples = measure_all(&scenario_refs, args.rounds, args.seconds)?;
    let results = ScenarioResult::of_all(&scenario_refs, samples)?;
    let machine = Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        load_before,
        load_after: load_average(),
        iptables: routed::iptables_version(),
        mtu,
    };
    let report = Report::new(
        args.rounds,
        args.seconds,
        args.rules,
        machine,
        checks,
        results,
    );
    print_report(args.json, &report, report.table())
}

/// Every metric of every scenario, `rounds` times. Within a round each metric is measured for
/// every scenario in turn, starting one scenario further each round, so slow drift (a build
/// starting, thermal limits) spreads over all scenarios instead of hitting one.
fn measure_all(scenarios: &[&Scenario], rounds: u32, seconds: u64) -> Result<Vec<Samples>> {
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; scenarios.len()];
    let n = scenarios.len();
    for round in 0..rounds as usize {
        for (m, metric) in Metric::ALL.into_iter().enumerate() {
            for k in 0..n {
                check_interrupted()?;
                let i = (k + round) % n;
                let sample = scenarios[i].measure(metric, seconds)?;
                eprintln!(
                    "weir-bench: round {}/{} {:<14} {} {} ({} {})",
                    round + 1,
                    rounds,
                    scenarios[i].name,
                    metric.heading(),
                    metric.show(sample.value),
                    metric.cpu_heading(),
                    metric.show_cpu(sample.cpu_per_unit)
                );
                samples[i][m].push(sample);
            }
        }
    }
    Ok(samples)
}
