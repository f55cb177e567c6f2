//! Minimal, honest timing: warm up, then run batches until a time budget is spent, and report
//! the median batch's time per operation (robust against a noisy neighbour on a 2-core box).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    /// What was measured, e.g. "seal 1 KiB".
    pub(crate) name: String,
    /// Median nanoseconds per operation over the batches.
    pub(crate) ns_per_op: f64,
    /// Operations run in total (after warm-up).
    pub(crate) iterations: u64,
    /// Bytes processed per operation, for throughput (0 if not meaningful).
    pub(crate) bytes_per_op: u64,
}

/// Measures `op` for about `budget`, in 10 batches.
pub(crate) fn measure<T>(
    name: &str,
    bytes_per_op: u64,
    budget: Duration,
    mut op: impl FnMut() -> T,
) -> Measurement {
    // Warm-up and calibration: how many ops fit in a tenth of the budget?
    let start = Instant::now();
    let mut calib = 0u64;
    while start.elapsed() < budget / 20 || calib < 2 {
        black_box(op());
        calib += 1;
    }
    let per_op =
        start.elapsed().as_secs_f64() / f64::from(u32::try_from(calib).unwrap_or(u32::MAX));
    let batch = ((budget.as_secs_f64() / 10.0) / per_op).ceil().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let batch = batch as u64;
    let mut samples = Vec::with_capacity(10);
    for _ in 0..10 {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(op());
        }
        #[allow(clippy::cast_precision_loss)]
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    Measurement {
        name: name.to_string(),
        ns_per_op: samples[samples.len() / 2],
        iterations: batch * 10,
        bytes_per_op,
    }
}

/// The `p` quantile (0..=1, nearest rank) of `sorted` samples, in nanoseconds.
pub(crate) fn percentile(sorted: &[std::time::Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    #[allow(clippy::cast_precision_loss)]
    let ns = sorted[i].as_nanos() as f64;
    ns
}

/// `count` operations of `bytes` each that took `elapsed` in all.
pub(crate) fn throughput_row(
    name: &str,
    count: usize,
    bytes: usize,
    elapsed: std::time::Duration,
) -> Measurement {
    #[allow(clippy::cast_precision_loss)]
    let ns_per_op = elapsed.as_nanos() as f64 / count as f64;
    Measurement {
        name: name.into(),
        ns_per_op,
        iterations: count as u64,
        bytes_per_op: bytes as u64,
    }
}
