//! Giving freed heap back to the system. Reading a large source (tens of thousands of objects)
//! allocates and frees far more than the model keeps; glibc's malloc keeps those freed pages, so
//! the agent's resident memory would stay at its busiest moment's size.

use std::time::{Duration, Instant};

/// At most this often: trimming walks the whole heap.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns free heap pages to the system if the last time was at least [`TRIM_EVERY`] ago (or
/// never); updates `last`.
pub fn release_free_heap(last: &mut Option<Instant>) {
    if last.is_some_and(|at| at.elapsed() < TRIM_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
