//! The incremental compiler against a fresh one: after every change of long random sequences
//! (pods, labels, addresses, policies, namespaces, this node's endpoints, policies left out), the
//! kept work must give exactly what compiling from nothing gives.

mod common;

use common::{mutate, random_cluster, random_left_out, random_local};
use rand::{rngs::StdRng, Rng, SeedableRng};
use weir_policy::compile::{compile_excluding, Incremental};

#[test]
fn kept_work_compiles_exactly_like_compiling_from_nothing_after_every_change() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut compared = 0;
    for run in 0..150 {
        let mut cluster = random_cluster(&mut rng);
        let mut incremental = Incremental::default();
        let mut local = random_local(&mut rng, &cluster);
        for step in 0..40 {
            // Usually one change; sometimes several before the next compilation (a burst), and
            // sometimes the node's endpoints change too.
            for _ in 0..if rng.random_bool(0.2) { 5 } else { 1 } {
                mutate(&mut rng, &mut cluster, step * 10 + run);
            }
            if rng.random_bool(0.3) {
                local = random_local(&mut rng, &cluster);
            }
            let left_out = random_left_out(&mut rng, &cluster);
            let kept = incremental.compile(&cluster, &local, &left_out);
            let fresh = compile_excluding(&cluster, &local, &left_out);
            assert_eq!(kept, fresh, "run {run} step {step}: local {local:?}");
            compared += 1;
            // Compiling the same input again changes nothing.
            assert_eq!(incremental.compile(&cluster, &local, &left_out), fresh);
        }
    }
    assert_eq!(compared, 150 * 40);
}
