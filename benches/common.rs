//! What the benchmarks share: a fixed visiting order of keys, a read loop
//! over any cache, medians, and the writer of `BENCHMARKS.md` sections.

#![allow(dead_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use crate::report::record;

/// A fixed pseudo-random visiting order of the keys.
pub(crate) fn visiting_order(keys: u32) -> Arc<Vec<u32>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let order = (0..keys as usize)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(keys)) as u32
        })
        .collect();
    Arc::new(order)
}

/// A cache under test, read by id.
pub(crate) trait Reader: Clone + Send + Sync + 'static {
    fn read(&self, id: u32) -> impl Future<Output = u64> + Send;
}

/// Reads per second of `tasks` tasks, each reading `OPS_PER_TASK` keys in
/// the visiting order (each from its own offset).
pub(crate) async fn hits_per_second(
    reader: &impl Reader,
    order: &Arc<Vec<u32>>,
    tasks: usize,
    ops_per_task: usize,
) -> f64 {
    let started = Instant::now();
    let readers: Vec<_> = (0..tasks)
        .map(|task| {
            let reader = reader.clone();
            let order = order.clone();
            tokio::spawn(async move {
                let mut sum = 0u64;
                for i in 0..ops_per_task {
                    let id = order[(i + task * 7919) % order.len()];
                    sum = sum.wrapping_add(reader.read(id).await);
                }
                sum
            })
        })
        .collect();
    for reader in readers {
        black_box(reader.await.expect("the reader finishes"));
    }
    (tasks * ops_per_task) as f64 / started.elapsed().as_secs_f64()
}

/// The runtime every benchmark (and each of its processes) runs on: two
/// worker threads, one per core of the machine the results are from.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
