//! The datapath's flow events (`WEIR_FLOW_EVENTS`, a BPF ring buffer) read from its pin, and the
//! counts of events that never made it (`WEIR_FLOW_LOST`) and of verdicts (`WEIR_VERDICTS`).

use std::{borrow::Borrow, path::Path};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::warn;
use weir_common::{
    events::{LOST_RATE_LIMITED, LOST_RING_FULL},
    maps::{FLOW_EVENTS, FLOW_LOST, VERDICTS},
    FlowEvent, VerdictKey,
};

use super::{datapath::DatapathError, pins};

/// At most this many events are handed over at a time (the ring holds the rest): naming a batch
/// must not hold the agent's loop, which also programs policy, for long.
const BATCH: usize = 256;

/// Read the pinned ring buffer forever, handing events to `out` in batches. When `out` is full
/// (the agent is busy), the batch is dropped and counted in `dropped` rather than letting the ring
/// fill (the datapath never waits on the agent either way).
pub async fn follow(
    pin_dir: &Path,
    out: mpsc::Sender<Vec<FlowEvent>>,
    dropped: impl Fn(u64),
) -> Result<(), DatapathError> {
    let map = pins::open(pin_dir, FLOW_EVENTS)?;
    let ring = RingBuf::try_from(map).map_err(|source| DatapathError::Map {
        name: FLOW_EVENTS,
        source,
    })?;
    // SAFETY: the RingBuf owns its map's descriptor, which stays open and the same for as long
    // as the AsyncFd that owns the RingBuf lives.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| DatapathError::Fs {
        path: pin_dir.join(FLOW_EVENTS).display().to_string(),
        source: e.into(),
    })?;
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                warn!(error = %e, "flow event ring");
                return Ok(());
            }
        };
        loop {
            let batch = drain(guard.get_inner_mut());
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            if out.try_send(batch).is_err() {
                dropped(n);
            }
        }
        guard.clear_ready();
    }
}

fn drain<T: Borrow<MapData>>(ring: &mut RingBuf<T>) -> Vec<FlowEvent> {
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let Some(item) = ring.next() else { break };
        if item.len() >= size_of::<FlowEvent>() {
            // SAFETY: the record holds at least a FlowEvent's bytes, written by the datapath as
            // one; FlowEvent is plain data valid for any bytes. Read unaligned: the ring only
            // promises 8-byte alignment, which is FlowEvent's, but say so rather than assume.
            batch.push(unsafe { item.as_ptr().cast::<FlowEvent>().read_unaligned() });
        }
    }
    batch
}

/// Events the datapath could not publish, summed over CPUs: (ring full, rate limited).
pub fn lost(pin_dir: &Path) -> Result<(u64, u64), DatapathError> {
    let map = pins::open(pin_dir, FLOW_LOST)?;
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map {
            name: FLOW_LOST,
            source,
        })?;
    let sum = |slot: u32| -> Result<u64, DatapathError> {
        let values = array.get(&slot, 0).map_err(|source| DatapathError::Map {
            name: FLOW_LOST,
            source,
        })?;
        Ok(values.iter().sum())
    };
    Ok((sum(LOST_RING_FULL)?, sum(LOST_RATE_LIMITED)?))
}

/// Every endpoint's verdict counts, summed over CPUs.
pub fn verdicts(pin_dir: &Path) -> Result<Vec<(VerdictKey, u64)>, DatapathError> {
    let map = pins::open(pin_dir, VERDICTS)?;
    let map: PerCpuHashMap<_, VerdictKey, u64> =
        PerCpuHashMap::try_from(map).map_err(|source| DatapathError::Map {
            name: VERDICTS,
            source,
        })?;
    let mut out = Vec::new();
    for item in map.iter() {
        let (key, values) = item.map_err(|source| DatapathError::Map {
            name: VERDICTS,
            source,
        })?;
        out.push((key, values.iter().sum()));
    }
    Ok(out)
}
