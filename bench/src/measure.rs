// SPDX-License-Identifier: Apache-2.0
//! One scenario's measurements: iperf3 for throughput, `weir-bench rr-client` for RR and CRR,
//! each client started in the client's namespace against servers kept running in the server's,
//! and with each, the CPU time the whole machine spent per unit of work (a figure the noise of a
//! shared machine moves less than rates: a slower round also does less work).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    netns::{command_in, run, Background},
    report::Metric,
    rr::{self, Mode, RrResult},
};

pub const IPERF_PORT: u16 = 5201;
pub const RR_PORT: u16 = 7001;
/// Seconds iperf3 runs before it starts counting (slow start, the first ACK clocking).
const IPERF_OMIT_S: u64 = 1;
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One measurement: the metric's value, and the machine's busy CPU time per unit of work (per GB
/// for throughput, per transaction or connection for RR and CRR), in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub cpu_per_unit: f64,
}

/// Every sample of one scenario: throughput, RR, CRR.
pub type Samples = [Vec<Sample>; 3];

/// A client namespace, a server namespace and the server's address, with the servers running.
/// The servers stop when this is dropped.
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    client_netns: PathBuf,
    server_ip: Ipv4Addr,
    _iperf: Background,
    _rr: Background,
}

impl Scenario {
    /// Start iperf3 and the RR server in `server_netns`.
    pub fn start(
        name: String,
        client_netns: &Path,
        server_netns: &Path,
        server_ip: Ipv4Addr,
    ) -> Result<Self> {
        let iperf = Background::start(
            &format!("{name}: iperf3 server"),
            command_in(server_netns, "iperf3").args([
                "--server",
                "--port",
                &IPERF_PORT.to_string(),
                "--forceflush",
            ]),
            "listening",
            SERVER_READY_TIMEOUT,
        )?;
        let rr = Background::start(
            &format!("{name}: rr server"),
            command_in(server_netns, self_exe()?).args([
                "rr-server",
                "--port",
                &RR_PORT.to_string(),
            ]),
            rr::READY_LINE,
            SERVER_READY_TIMEOUT,
        )?;
        Ok(Self {
            name,
            client_netns: client_netns.to_path_buf(),
            server_ip,
            _iperf: iperf,
            _rr: rr,
        })
    }

    /// One sample of `metric` over `seconds`.
    pub fn measure(&self, metric: Metric, seconds: u64) -> Result<Sample> {
        let before = busy_cpu_seconds()?;
        let value = match metric {
            Metric::Throughput => self.throughput(seconds),
            Metric::Rr => self.rr(Mode::Rr, seconds),
            Metric::Crr => self.rr(Mode::Crr, seconds),
        }
        .with_context(|| format!("{}: measuring {metric:?}", self.name))?;
        let busy = busy_cpu_seconds()? - before;
        // iperf3 sends through its omitted first second too, at about the same rate.
        let units = match metric {
            Metric::Throughput => value / 8.0 * (seconds + IPERF_OMIT_S) as f64 / 1e9,
            Metric::Rr | Metric::Crr => value * seconds as f64,
        };
        Ok(Sample {
            value,
            cpu_per_unit: if units > 0.0 { busy / units } else { f64::NAN },
        })
    }

    fn throughput(&self, seconds: u64) -> Result<f64> {
        let out = run(command_in(&self.client_netns, "iperf3").args([
            "--client",
            &self.server_ip.to_string(),
            "--port",
            &IPERF_PORT.to_string(),
            "--time",
            &seconds.to_string(),
            "--omit",
            &IPERF_OMIT_S.to_string(),
            "--connect-timeout",
            "3000",
            "--json",
        ]))?;
        iperf_bits_per_second(&out)
    }

    fn rr(&self, mode: Mode, seconds: u64) -> Result<f64> {
        let mode_arg = match mode {
            Mode::Rr => "rr",
            Mode::Crr => "crr",
        };
        let out = run(command_in(&self.client_netns, self_exe()?).args([
            "rr-client",
            "--addr",
            &format!("{}:{RR_PORT}", self.server_ip),
            "--seconds",
            &seconds.to_string(),
            "--mode",
            mode_arg,
        ]))?;
        let result: RrResult = serde_json::from_str(out.trim())
            .with_context(|| format!("rr-client printed {out:?}"))?;
        // A CRR run where connections fail is not measuring what it claims to.
        if result.errors * 1000 > result.transactions {
            bail!(
                "{} of {} connections failed",
                result.errors,
                result.errors + result.transactions
            );
        }
        Ok(result.per_second)
    }
}

fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("finding weir-bench's own path")
}

/// CPU time the machine has spent busy since boot, all cores: user, nice, system, irq and softirq
/// from `/proc/stat` (idle, iowait and time stolen by the hypervisor left out).
fn busy_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    busy_seconds_of(&stat)
}

fn busy_seconds_of(stat: &str) -> Result<f64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().context("a /proc/stat field"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal ...; USER_HZ is 100 on every Linux ABI.
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    Ok(busy as f64 / 100.0)
}

/// The receiver's bits per second from `iperf3 --json` output.
pub fn iperf_bits_per_second(json: &str) -> Result<f64> {
    let value: Value = serde_json::from_str(json).context("iperf3 did not print JSON")?;
    if let Some(err) = value.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    value["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_cpu_is_user_nice_system_irq_and_softirq() {
        let stat = "cpu  100 20 300 9000 50 6 70 800 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert!((busy_seconds_of(stat).unwrap() - 4.96).abs() < 1e-9);
        assert!(busy_seconds_of("intr 1 2 3").is_err());
    }

    #[test]
    fn iperf_json_gives_the_receivers_rate_or_its_error() {
        let ok = r#"{"start": {}, "end": {"sum_sent": {"bits_per_second": 2e10},
                    "sum_received": {"bits_per_second": 1.9e10}}}"#;
        assert_eq!(iperf_bits_per_second(ok).unwrap(), 1.9e10);
        let err = r#"{"start": {}, "end": {}, "error": "unable to connect to server: Connection refused"}"#;
        let msg = iperf_bits_per_second(err).unwrap_err().to_string();
        assert!(msg.contains("Connection refused"), "{msg}");
        assert!(iperf_bits_per_second("not json").is_err());
    }
}
