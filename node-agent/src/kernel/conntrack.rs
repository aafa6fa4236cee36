//! The conntrack sweeper: removes entries whose flow has been silent longer than its lifetime, so
//! that the LRU tables rarely have to evict a live flow to make room (an evicted flow into an
//! isolated pod would be judged again, and an evicted Service flow's replies would skip the host
//! stack that undoes its DNAT). Reads and writes the pinned tables directly, never the agent.

use std::path::Path;

use aya::maps::{HashMap, IterableMap};
use weir_common::{
    maps::{CT_ANY, CT_TCP},
    CtKey, CtValue,
};

use super::{datapath::DatapathError, pins};

/// Whether an entry last seen at `value.last_seen_ns` is dead at `now_ns` (both on the clock of
/// `bpf_ktime_get_ns`, CLOCK_MONOTONIC). The datapath treats such an entry as absent already;
/// removing it only frees the room.
pub fn expired(key: &CtKey, value: &CtValue, now_ns: u64) -> bool {
    now_ns.saturating_sub(value.last_seen_ns) > value.lifetime_ns(key.proto)
}

/// What one sweep found in a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Entries left (live flows).
    pub live: usize,
    pub removed: usize,
    pub capacity: u32,
}

/// The kernel's monotonic clock, as `bpf_ktime_get_ns` reads it.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sweep the table `name` pinned in `pin_dir`.
pub fn sweep_table(
    pin_dir: &Path,
    name: &'static str,
    now_ns: u64,
) -> Result<Swept, DatapathError> {
    let map_err = |source| DatapathError::Map { name, source };
    let mut map: HashMap<_, CtKey, CtValue> =
        HashMap::try_from(pins::open(pin_dir, name)?).map_err(map_err)?;
    let capacity = map.map().info().map(|i| i.max_entries()).unwrap_or(0);
    let mut seen = 0;
    let dead: Vec<CtKey> = map
        .iter()
        .filter_map(Result::ok)
        .inspect(|_| seen += 1)
        .filter(|(key, value)| expired(key, value, now_ns))
        .map(|(key, _)| key)
        .collect();
    let mut removed = 0;
    for key in &dead {
        // Gone already (evicted, or refreshed and removed by nobody): fine either way.
        if map.remove(key).is_ok() {
            removed += 1;
        }
    }
    // One pass only: the datapath adds and evicts meanwhile anyway, so this is an estimate.
    Ok(Swept {
        live: seen - dead.len(),
        removed,
        capacity,
    })
}

/// Sweep both tables pinned in `pin_dir`: `[(name, what was found)]`.
pub fn sweep(pin_dir: &Path) -> Result<Vec<(&'static str, Swept)>, DatapathError> {
    let now = monotonic_ns();
    [CT_TCP, CT_ANY]
        .into_iter()
        .map(|name| Ok((name, sweep_table(pin_dir, name, now)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use weir_common::ct::{CT_F_CLOSING, CT_F_REPLIED};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(proto: u8) -> CtKey {
        CtKey {
            saddr: [10, 0, 0, 1],
            daddr: [10, 0, 0, 2],
            sport: [0, 1],
            dport: [0, 80],
            proto,
            _pad: [0; 3],
        }
    }

    fn seen(at: u64, flags: u32) -> CtValue {
        CtValue {
            last_seen_ns: at,
            epoch: 0,
            flags,
        }
    }

    #[test]
    fn entries_expire_after_their_protocols_lifetime_and_state() {
        let now = 100_000 * S;
        // UDP and the rest: 60 s.
        assert!(!expired(&key(17), &seen(now - 59 * S, 0), now));
        assert!(expired(&key(17), &seen(now - 61 * S, 0), now));
        // TCP opening: 60 s; established: 6 h; closing: 10 s.
        assert!(expired(&key(6), &seen(now - 61 * S, 0), now));
        assert!(!expired(&key(6), &seen(now - 3_600 * S, CT_F_REPLIED), now));
        assert!(expired(&key(6), &seen(now - 21_601 * S, CT_F_REPLIED), now));
        assert!(expired(
            &key(6),
            &seen(now - 11 * S, CT_F_REPLIED | CT_F_CLOSING),
            now
        ));
        // A clock that went "backwards" (an entry stamped after `now` was read) is live.
        assert!(!expired(&key(17), &seen(now + S, 0), now));
    }
}
