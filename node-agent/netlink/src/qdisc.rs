//! Root qdiscs: a token bucket filter (`tbf`) that shapes what a device sends, as `tc qdisc add dev
//! <if> root handle 1: tbf rate … burst … limit …` does, and the root qdisc read back.
//!
//! netlink-packet-route has no `tbf` types, so its `TCA_OPTIONS` are encoded here as raw NLAs
//! (`struct tc_tbf_qopt` from `<linux/pkt_sched.h>`, native byte order). Like iproute2, the buffer
//! is given both as psched ticks (`TCA_TBF_PARMS.buffer`, converted with `/proc/net/psched`) and
//! in bytes (`TCA_TBF_BURST`, which the kernel prefers since 3.13); rates of 2^32 bytes/s and more
//! go in `TCA_TBF_RATE64`.

use futures::StreamExt;
use netlink_packet_route::{
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};

use crate::{error::request, Netlink, NetlinkError};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `sizeof(struct tc_tbf_qopt)`: rate and peakrate (`struct tc_ratespec`, 12 bytes each), then
/// `limit`, `buffer` and `mtu`.
const TBF_QOPT_LEN: usize = 36;
/// `TC_LINKLAYER_ETHERNET`, what tc sets: the kernel then needs no rate table.
const LINKLAYER_ETHERNET: u8 = 1;
/// The handle tc and the reference bandwidth plugin give the qdisc: `1:`.
const TBF_HANDLE: TcHandle = TcHandle { major: 1, minor: 0 };
/// psched ticks per microsecond of every kernel since 2.6.31 (`PSCHED_SHIFT` 6: a tick is 64 ns);
/// used when `/proc/net/psched` cannot be read.
const DEFAULT_TICKS_PER_USEC: f64 = 1000.0 / 64.0;

/// A token bucket filter's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tbf {
    /// The rate, bytes per second.
    pub rate: u64,
    /// The bucket's size, bytes: how much may leave at once after a quiet period. It must hold
    /// the largest packet (a GSO packet is segmented to fit; anything else larger is dropped).
    pub burst: u32,
    /// The queue, bytes: what waits for tokens beyond that is dropped.
    pub limit: u32,
}

/// A device's root qdisc, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootQdisc {
    /// `noqueue`, `tbf`, `fq_codel`, …
    pub kind: String,
    /// For `tbf`: its parameters (the burst recomputed from the buffer time, so within a few
    /// bytes of what was asked).
    pub tbf: Option<Tbf>,
}

impl Netlink {
    /// `tc qdisc add dev <index> root handle 1: tbf …`: fails with `EEXIST` when the device
    /// already has a root qdisc of its own (the default `noqueue` of a veth does not count).
    pub async fn add_root_tbf(&self, index: u32, tbf: &Tbf) -> Result<(), NetlinkError> {
        let mut msg = TcMessage::with_index(to_i32(index));
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TBF_HANDLE;
        msg.attributes.push(TcAttribute::Kind("tbf".to_owned()));
        let ticks_per_usec = psched_ticks_per_usec();
        msg.attributes.push(TcAttribute::Options(
            tbf_options(tbf, ticks_per_usec)
                .into_iter()
                .map(TcOption::Other)
                .collect(),
        ));
        self.ack(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding a tbf root qdisc to link #{index}: {tbf:?}"),
        )
        .await
    }

    /// `tc qdisc del dev <index> root`; `Ok(false)` when the device had no root qdisc of its own.
    pub async fn del_root_qdisc(&self, index: u32) -> Result<bool, NetlinkError> {
        let mut msg = TcMessage::with_index(to_i32(index));
        msg.header.parent = TcHandle::ROOT;
        let result = self
            .ack(RouteNetlinkMessage::DelQueueDiscipline(msg), 0, || {
                format!("deleting the root qdisc of link #{index}")
            })
            .await;
        match result {
            Ok(()) => Ok(true),
            // Deleting the default qdisc is refused with ENOENT (older kernels: EINVAL).
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The root qdisc of device `index`, if the kernel lists one.
    pub async fn root_qdisc(&self, index: u32) -> Result<Option<RootQdisc>, NetlinkError> {
        let replies = self
            .dump("listing qdiscs", || {
                RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default())
            })
            .await?;
        let ticks_per_usec = psched_ticks_per_usec();
        Ok(replies.into_iter().find_map(|msg| match msg {
            RouteNetlinkMessage::NewQueueDiscipline(tc)
                if tc.header.index == to_i32(index) && tc.header.parent == TcHandle::ROOT =>
            {
                Some(root_qdisc(&tc, ticks_per_usec))
            }
            _ => None,
        }))
    }

    /// Send one request and wait for the kernel's acknowledgement.
    async fn ack(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl Fn() -> String,
    ) -> Result<(), NetlinkError> {
        let mut req = NetlinkMessage::from(message);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut replies = handle.request(req).map_err(request(&op))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                if e.code.is_some() {
                    return Err(NetlinkError::Request {
                        op: op(),
                        source: rtnetlink::Error::NetlinkError(e),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Interface indexes are positive `int`s in the kernel; tc messages carry them signed.
fn to_i32(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

/// The `TCA_OPTIONS` of a tbf qdisc.
fn tbf_options(tbf: &Tbf, ticks_per_usec: f64) -> Vec<DefaultNla> {
    let mut qopt = [0u8; TBF_QOPT_LEN];
    // rate: cell_log, linklayer, overhead, cell_align, mpu, then the rate itself.
    qopt[1] = LINKLAYER_ETHERNET;
    let rate32 = u32::try_from(tbf.rate).unwrap_or(u32::MAX);
    qopt[8..12].copy_from_slice(&rate32.to_ne_bytes());
    // peakrate (12..24) stays zero: no peak rate.
    qopt[24..28].copy_from_slice(&tbf.limit.to_ne_bytes());
    qopt[28..32].copy_from_slice(&buffer_ticks(tbf, ticks_per_usec).to_ne_bytes());
    // mtu (32..36) only matters with a peak rate.
    let mut nlas = vec![
        DefaultNla::new(TCA_TBF_PARMS, qopt.to_vec()),
        DefaultNla::new(TCA_TBF_BURST, tbf.burst.to_ne_bytes().to_vec()),
    ];
    if tbf.rate > u64::from(u32::MAX) {
        nlas.push(DefaultNla::new(
            TCA_TBF_RATE64,
            tbf.rate.to_ne_bytes().to_vec(),
        ));
    }
    nlas
}

/// The time to send `burst` bytes at `rate`, in psched ticks (tc's `tc_calc_xmittime`).
fn buffer_ticks(tbf: &Tbf, ticks_per_usec: f64) -> u32 {
    let usec = f64::from(tbf.burst) * 1e6 / tbf.rate.max(1) as f64;
    let ticks = usec * ticks_per_usec;
    if ticks >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        ticks as u32
    }
}

fn root_qdisc(tc: &TcMessage, ticks_per_usec: f64) -> RootQdisc {
    let kind = tc
        .attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(kind) => Some(kind.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let tbf = (kind == "tbf")
        .then(|| {
            tc.attributes.iter().find_map(|a| match a {
                TcAttribute::Options(options) => parse_tbf(options, ticks_per_usec),
                _ => None,
            })
        })
        .flatten();
    RootQdisc { kind, tbf }
}

/// netlink-packet-route hands the `TCA_OPTIONS` of a kind it does not know over as one raw NLA
/// holding the nested attributes.
fn parse_tbf(options: &[TcOption], ticks_per_usec: f64) -> Option<Tbf> {
    let nested = options.iter().find_map(|o| match o {
        TcOption::Other(nla) => Some(nla_value(nla)),
        _ => None,
    })?;
    let mut parms = None;
    let mut rate64 = None;
    for nla in NlasIterator::new(nested.as_slice()) {
        let nla: NlaBuffer<&[u8]> = nla.ok()?;
        match nla.kind() {
            TCA_TBF_PARMS => parms = Some(nla.value().to_vec()),
            TCA_TBF_RATE64 => {
                rate64 = nla.value().try_into().ok().map(u64::from_ne_bytes);
            }
            _ => {}
        }
    }
    let parms = parms.filter(|p| p.len() >= TBF_QOPT_LEN)?;
    let u32_at = |at: usize| u32::from_ne_bytes(parms[at..at + 4].try_into().unwrap_or_default());
    let rate = rate64.unwrap_or_else(|| u64::from(u32_at(8)));
    let buffer_usec = f64::from(u32_at(28)) / ticks_per_usec;
    let burst = (rate as f64 * buffer_usec / 1e6).round();
    Some(Tbf {
        rate,
        burst: if burst >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            burst as u32
        },
        limit: u32_at(24),
    })
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// psched ticks per microsecond, from `/proc/net/psched` as iproute2's `tc_core_init` reads it.
fn psched_ticks_per_usec() -> f64 {
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|text| parse_psched(&text))
        .unwrap_or(DEFAULT_TICKS_PER_USEC)
}

/// `<t2us> <us2t> <clock_res> <hrtimer res>` in hex: ticks per µs = t2us / us2t × clock_res / 10⁶,
/// where a clock resolution of 10⁹ means t2us is really us2t (iproute2's compatibility hack).
fn parse_psched(text: &str) -> Option<f64> {
    let mut fields = text
        .split_whitespace()
        .map(|f| u32::from_str_radix(f, 16).ok());
    let mut t2us = f64::from(fields.next()??);
    let us2t = f64::from(fields.next()??);
    let clock_res = f64::from(fields.next()??);
    if clock_res == 1e9 {
        t2us = us2t;
    }
    let ticks = t2us / us2t * (clock_res / 1e6);
    (ticks.is_finite() && ticks > 0.0).then_some(ticks)
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::Emitable;

    use super::*;

    #[test]
    fn psched_of_a_modern_kernel_is_64_ns_ticks() {
        let ticks = parse_psched("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert!((ticks - 15.625).abs() < 1e-9, "{ticks}");
        assert_eq!(parse_psched("garbage"), None);
        assert_eq!(parse_psched("000003e8 00000000 000f4240"), None);
    }

    #[test]
    fn tbf_options_round_trip_through_the_kernel_encoding() {
        let tbf = Tbf {
            rate: 1_250_000,
            burst: 65_536,
            limit: 96_786,
        };
        let nlas = tbf_options(&tbf, DEFAULT_TICKS_PER_USEC);
        assert_eq!(nlas.len(), 2, "no RATE64 below 2^32 bytes/s");
        let parms = nla_value(&nlas[0]);
        assert_eq!(parms.len(), TBF_QOPT_LEN);
        assert_eq!(parms[1], LINKLAYER_ETHERNET);
        // 65536 B at 1.25 MB/s = 52428.8 µs = 819200 ticks of 64 ns.
        assert_eq!(
            u32::from_ne_bytes(parms[28..32].try_into().unwrap()),
            819_200
        );
        assert_eq!(nla_value(&nlas[1]), 65_536u32.to_ne_bytes());

        // What the kernel dumps back: PARMS inside TCA_OPTIONS (no BURST).
        let mut nested = vec![0u8; nlas[0].buffer_len()];
        Emitable::emit(&nlas[0], &mut nested);
        let options = [TcOption::Other(DefaultNla::new(2, nested))];
        assert_eq!(parse_tbf(&options, DEFAULT_TICKS_PER_USEC), Some(tbf));
    }

    #[test]
    fn rates_beyond_32_bits_go_in_rate64() {
        let tbf = Tbf {
            rate: 5_000_000_000,
            burst: 100_000_000,
            limit: 225_000_000,
        };
        let nlas = tbf_options(&tbf, DEFAULT_TICKS_PER_USEC);
        assert_eq!(nlas.len(), 3);
        assert_eq!(nlas[2].kind(), TCA_TBF_RATE64);
        let parms = nla_value(&nlas[0]);
        assert_eq!(
            u32::from_ne_bytes(parms[8..12].try_into().unwrap()),
            u32::MAX
        );
        let mut nested = Vec::new();
        for nla in [&nlas[0], &nlas[2]] {
            let mut buf = vec![0u8; nla.buffer_len()];
            Emitable::emit(nla, &mut buf);
            nested.extend(buf);
        }
        let options = [TcOption::Other(DefaultNla::new(2, nested))];
        let back = parse_tbf(&options, DEFAULT_TICKS_PER_USEC).unwrap();
        assert_eq!(back.rate, tbf.rate);
        assert!(back.burst.abs_diff(tbf.burst) < 1000, "{back:?}");
    }
}
