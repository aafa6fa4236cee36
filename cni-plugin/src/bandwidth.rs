// SPDX-License-Identifier: Apache-2.0
//! The `bandwidth` capability: `runtimeConfig.bandwidth` (from the pod annotations
//! `kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth`) shapes the pod with two
//! token bucket filters.
//!
//! - **Ingress** (what the pod receives): a `tbf` root qdisc on the host-side veth. Everything Weir
//!   delivers to a pod is `bpf_redirect`ed to that device's egress, so it passes the qdisc.
//! - **Egress** (what the pod sends): a `tbf` root qdisc on the pod's interface, inside its netns.
//!   A pod with `CAP_NET_ADMIN` could remove it; the reference `bandwidth` plugin shapes egress on
//!   the host side instead (an `ifb` device fed by a mirred redirect), which Weir does not do.
//!
//! The fields are `ingressRate`/`egressRate` in bits/s and `ingressBurst`/`egressBurst` in bits,
//! matched case-insensitively (containerd's go-cni marshals its Go field names, `IngressRate`).
//! A direction with rate 0 (or absent) and burst 0 (or absent) is not limited: runtimes send zeros
//! for the direction no annotation names. The kubelet and the runtimes have no burst annotation
//! and send 2^31−1 (kubelet) or 2^32−1 (containerd) bits, a 256–512 MiB bucket that would make
//! the limit meaningless for seconds; a burst that is absent, 0, or 2^31−1 bits or more gets
//! [`default_burst_bytes`] instead. The queue behind the bucket holds 25 ms at the rate plus the
//! burst, as in the reference plugin. Removing the veth (DEL, or ADD's rollback) removes both
//! qdiscs.

use serde_json::{Map, Value};
use weir_netlink::{blocking::Netlink, Tbf};

use crate::{config::invalid, error::CniError};

const FIELD: &str = "runtimeConfig.bandwidth";
/// A burst of this many bits or more is the runtimes' "none given" (`math.MaxInt32`).
const UNSPECIFIED_BURST_BITS: u64 = i32::MAX as u64;
/// The smallest default bucket: a full GSO packet (64 KiB) must fit, or it would be segmented.
const MIN_DEFAULT_BURST_BYTES: u64 = 64 * 1024;
/// The default bucket holds this much time at the rate.
const DEFAULT_BURST_MS: u64 = 20;
/// The queue behind the bucket holds this much time at the rate (plus the burst).
const LATENCY_MS: u64 = 25;

/// One direction's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Bits per second, at least 8 (the kernel counts whole bytes per second).
    pub rate_bps: u64,
    /// The bucket's size in bytes.
    pub burst_bytes: u64,
}

/// The pod's limits; at least one direction is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// What the pod receives.
    pub ingress: Option<Limit>,
    /// What the pod sends.
    pub egress: Option<Limit>,
}

/// The bucket for `rate_bps` when no burst is given: 20 ms at the rate, at least 64 KiB.
pub fn default_burst_bytes(rate_bps: u64) -> u64 {
    (rate_bps / 8 * DEFAULT_BURST_MS / 1000).max(MIN_DEFAULT_BURST_BYTES)
}

/// `runtimeConfig.bandwidth`, validated; `None` when absent, null, or limiting nothing.
pub fn from_runtime_config(
    runtime: Option<&Map<String, Value>>,
) -> Result<Option<Bandwidth>, CniError> {
    let Some(value) = runtime.and_then(|r| r.get("bandwidth")) else {
        return Ok(None);
    };
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(obj) => obj,
        other => return Err(invalid(FIELD, format!("must be an object, not {other}"))),
    };
    let mut fields: [Option<u64>; 4] = [None; 4];
    const NAMES: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];
    for (key, value) in obj {
        let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(key)) else {
            return Err(invalid(
                FIELD,
                format!(
                    "has an unknown field {key:?} (expected {})",
                    NAMES.join(", ")
                ),
            ));
        };
        if value.is_null() {
            continue;
        }
        let Some(n) = value.as_u64() else {
            return Err(invalid(
                FIELD,
                format!("{} must be a non-negative integer, not {value}", NAMES[i]),
            ));
        };
        if fields[i].replace(n).is_some() {
            return Err(invalid(FIELD, format!("{} is given twice", NAMES[i])));
        }
    }
    let [ingress_rate, ingress_burst, egress_rate, egress_burst] = fields;
    let bandwidth = Bandwidth {
        ingress: limit("ingress", ingress_rate, ingress_burst)?,
        egress: limit("egress", egress_rate, egress_burst)?,
    };
    Ok((bandwidth.ingress.is_some() || bandwidth.egress.is_some()).then_some(bandwidth))
}

fn limit(
    direction: &str,
    rate: Option<u64>,
    burst: Option<u64>,
) -> Result<Option<Limit>, CniError> {
    let rate = rate.unwrap_or(0);
    let burst = burst.filter(|b| *b != 0);
    if rate == 0 {
        return match burst {
            None => Ok(None),
            Some(_) => Err(invalid(
                FIELD,
                format!("{direction}Burst is set but {direction}Rate is not"),
            )),
        };
    }
    if rate < 8 {
        return Err(invalid(
            FIELD,
            format!("{direction}Rate {rate} bit/s is below the smallest rate, 8 bit/s"),
        ));
    }
    let burst_bytes = match burst {
        None => default_burst_bytes(rate),
        Some(bits) if bits >= UNSPECIFIED_BURST_BITS => default_burst_bytes(rate),
        Some(bits) if bits < 8 => {
            return Err(invalid(
                FIELD,
                format!("{direction}Burst {bits} bit is less than a byte"),
            ))
        }
        Some(bits) => bits / 8,
    };
    Ok(Some(Limit {
        rate_bps: rate,
        burst_bytes,
    }))
}

impl Limit {
    /// The token bucket filter for this limit.
    pub fn tbf(&self) -> Tbf {
        let rate = self.rate_bps / 8;
        let latency = u128::from(rate) * u128::from(LATENCY_MS) / 1000;
        Tbf {
            rate,
            burst: saturate(u128::from(self.burst_bytes)),
            limit: saturate(latency + u128::from(self.burst_bytes)),
        }
    }
}

fn saturate(n: u128) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// ADD: shape the attachment once both ends are configured. `host_index` is the host veth, in
/// `host`'s namespace; `pod_index` the pod's interface, in `pod`'s. A failure fails ADD, whose
/// rollback deletes the veth and with it any qdisc made here.
pub fn apply(
    bandwidth: Option<&Bandwidth>,
    host: &Netlink<'_>,
    host_index: u32,
    pod: &Netlink<'_>,
    pod_index: u32,
    mtu: u32,
) -> Result<(), CniError> {
    let Some(bandwidth) = bandwidth else {
        return Ok(());
    };
    for (direction, limit, nl, index) in [
        ("ingress", bandwidth.ingress, host, host_index),
        ("egress", bandwidth.egress, pod, pod_index),
    ] {
        let Some(limit) = limit else { continue };
        if limit.burst_bytes < u64::from(mtu) {
            return Err(invalid(
                FIELD,
                format!(
                    "{direction}Burst of {} bytes is below the MTU ({mtu}): every full-size \
                     packet would be dropped",
                    limit.burst_bytes
                ),
            ));
        }
        let tbf = limit.tbf();
        nl.run(|nl| nl.add_root_tbf(index, &tbf))?;
        tracing::debug!(
            direction,
            rate_bps = limit.rate_bps,
            burst_bytes = limit.burst_bytes,
            "tbf root qdisc added"
        );
    }
    Ok(())
}

/// CHECK: both qdiscs exist with the asked rate, burst and queue. `host_name` and `pod_ifname`
/// were looked up already; a missing device is someone else's problem to report.
pub fn check(
    bandwidth: &Bandwidth,
    host: &Netlink<'_>,
    host_name: &str,
    pod: &Netlink<'_>,
    pod_ifname: &str,
    problems: &mut Vec<String>,
) -> Result<(), CniError> {
    for (direction, limit, nl, name) in [
        ("ingress", bandwidth.ingress, host, host_name),
        ("egress", bandwidth.egress, pod, pod_ifname),
    ] {
        let Some(limit) = limit else { continue };
        let Some(link) = nl.run(|nl| nl.link_by_name(name))? else {
            continue;
        };
        let qdisc = nl.run(|nl| nl.root_qdisc(link.index))?;
        if let Some(problem) = tbf_problem(direction, name, &limit, qdisc.as_ref()) {
            problems.push(problem);
        }
    }
    Ok(())
}

/// What is wrong with `qdisc` as the root qdisc shaping `limit`, if anything. The burst is
/// compared loosely: the kernel reports it as a time at the rate, in 64 ns ticks.
fn tbf_problem(
    direction: &str,
    device: &str,
    limit: &Limit,
    qdisc: Option<&weir_netlink::RootQdisc>,
) -> Option<String> {
    let want = limit.tbf();
    let Some(have) = qdisc.and_then(|q| q.tbf) else {
        let kind = qdisc.map_or("none", |q| q.kind.as_str());
        return Some(format!(
            "{direction} limit: {device} has no tbf root qdisc (root qdisc: {kind})"
        ));
    };
    let tolerance = u64::from(want.burst / 100).max(1024);
    if have.rate != want.rate
        || have.limit != want.limit
        || u64::from(have.burst.abs_diff(want.burst)) > tolerance
    {
        return Some(format!(
            "{direction} limit: {device} shapes to {} bit/s, burst {} B, queue {} B; the \
             configuration asks for {} bit/s, burst {} B, queue {} B",
            have.rate * 8,
            have.burst,
            have.limit,
            want.rate * 8,
            want.burst,
            want.limit
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_netlink::RootQdisc;

    use super::*;

    fn parse(bandwidth: Value) -> Result<Option<Bandwidth>, CniError> {
        let runtime = json!({ "bandwidth": bandwidth });
        from_runtime_config(runtime.as_object())
    }

    fn reason(bandwidth: Value) -> String {
        let err = parse(bandwidth).unwrap_err();
        assert_eq!(err.code(), 7, "{err}");
        err.to_string()
    }

    #[test]
    fn absent_null_and_all_zero_limit_nothing() {
        assert_eq!(from_runtime_config(None).unwrap(), None);
        assert_eq!(from_runtime_config(json!({}).as_object()).unwrap(), None);
        assert_eq!(parse(Value::Null).unwrap(), None);
        assert_eq!(parse(json!({})).unwrap(), None);
        let zeros = json!({"ingressRate": 0, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0});
        assert_eq!(parse(zeros).unwrap(), None);
    }

    #[test]
    fn kubelet_limits_with_the_unspecified_burst_get_the_default_bucket() {
        let b = parse(json!({
            "ingressRate": 10_000_000, "ingressBurst": i32::MAX,
            "egressRate": 1_000_000_000, "egressBurst": 0,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(
            b.ingress,
            Some(Limit {
                rate_bps: 10_000_000,
                burst_bytes: 64 * 1024
            })
        );
        // 1 Gbit/s for 20 ms = 2.5 MB.
        assert_eq!(
            b.egress,
            Some(Limit {
                rate_bps: 1_000_000_000,
                burst_bytes: 2_500_000
            })
        );
    }

    #[test]
    fn containerd_capitalized_fields_and_max_uint32_burst_are_understood() {
        let b = parse(json!({
            "IngressRate": 0, "IngressBurst": 0,
            "EgressRate": 100_000_000, "EgressBurst": u32::MAX,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(b.ingress, None);
        assert_eq!(
            b.egress,
            Some(Limit {
                rate_bps: 100_000_000,
                burst_bytes: 250_000
            })
        );
    }

    #[test]
    fn an_explicit_burst_in_bits_becomes_bytes() {
        let b = parse(json!({"egressRate": 8_000_000, "egressBurst": 800_000}))
            .unwrap()
            .unwrap();
        assert_eq!(
            b.egress,
            Some(Limit {
                rate_bps: 8_000_000,
                burst_bytes: 100_000
            })
        );
        assert_eq!(b.ingress, None);
    }

    #[test]
    fn invalid_values_are_rejected_naming_the_field() {
        for (value, expected) in [
            (json!("10M"), "must be an object"),
            (
                json!({"ingressRate": -1}),
                "ingressRate must be a non-negative integer",
            ),
            (
                json!({"ingressRate": 1.5}),
                "ingressRate must be a non-negative integer",
            ),
            (
                json!({"egressRate": "1000"}),
                "egressRate must be a non-negative integer",
            ),
            (
                json!({"egressBurst": 1000}),
                "egressBurst is set but egressRate is not",
            ),
            (json!({"ingressRate": 7}), "below the smallest rate"),
            (
                json!({"ingressRate": 1000, "ingressBurst": 7}),
                "less than a byte",
            ),
            (
                json!({"ingressRate": 1000, "IngressRate": 1000}),
                "given twice",
            ),
            (
                json!({"ingressrate": 1000, "latency": 5}),
                "unknown field \"latency\"",
            ),
        ] {
            let reason = reason(value.clone());
            assert!(reason.contains(FIELD), "{value}: {reason}");
            assert!(reason.contains(expected), "{value}: {reason}");
        }
    }

    #[test]
    fn the_queue_holds_25_ms_at_the_rate_plus_the_burst() {
        let tbf = Limit {
            rate_bps: 10_000_000,
            burst_bytes: 65_536,
        }
        .tbf();
        assert_eq!(
            tbf,
            Tbf {
                rate: 1_250_000,
                burst: 65_536,
                limit: 31_250 + 65_536
            }
        );
        let huge = Limit {
            rate_bps: u64::MAX,
            burst_bytes: u64::MAX,
        }
        .tbf();
        assert_eq!((huge.burst, huge.limit), (u32::MAX, u32::MAX));
    }

    #[test]
    fn check_reports_a_missing_or_different_qdisc() {
        let limit = Limit {
            rate_bps: 10_000_000,
            burst_bytes: 65_536,
        };
        let qdisc = |tbf: Option<Tbf>, kind: &str| RootQdisc {
            kind: kind.into(),
            tbf,
        };
        let exact = qdisc(Some(limit.tbf()), "tbf");
        assert_eq!(tbf_problem("ingress", "weirX", &limit, Some(&exact)), None);
        let rounded = qdisc(
            Some(Tbf {
                burst: 65_530,
                ..limit.tbf()
            }),
            "tbf",
        );
        assert_eq!(
            tbf_problem("ingress", "weirX", &limit, Some(&rounded)),
            None
        );
        let noqueue = qdisc(None, "noqueue");
        assert_eq!(
            tbf_problem("egress", "eth0", &limit, Some(&noqueue)).unwrap(),
            "egress limit: eth0 has no tbf root qdisc (root qdisc: noqueue)"
        );
        let slower = qdisc(
            Some(Tbf {
                rate: 125_000,
                ..limit.tbf()
            }),
            "tbf",
        );
        let problem = tbf_problem("ingress", "weirX", &limit, Some(&slower)).unwrap();
        assert!(problem.contains("shapes to 1000000 bit/s"), "{problem}");
        assert!(problem.contains("asks for 10000000 bit/s"), "{problem}");
    }
}
