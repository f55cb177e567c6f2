//! The blob store's and transfers' metrics, through the `opentelemetry` API (no SDK here: the
//! application installs one, or the instruments stay no-ops). No attribute carries a peer id
//! or a blob id: every attribute has a small, fixed set of values.
//!
//! | instrument | kind | what |
//! |---|---|---|
//! | `mesh.blob.stored.bytes` | up-down counter | bytes of distinct chunks stored |
//! | `mesh.blob.stored.chunks` | up-down counter | distinct chunks stored |
//! | `mesh.blob.stored.blobs` | up-down counter | blobs stored |
//! | `mesh.blob.puts` | counter | puts ended, by `result` (`stored`, `duplicate`, `too_large`, `quota`, `aborted`, `failed`) |
//! | `mesh.blob.gc.blobs` | counter | blobs removed (expired or deleted) |
//! | `mesh.blob.gc.freed` | counter (bytes) | bytes of chunks freed |
//! | `mesh.blob.gc.pending` | counter | rows of interrupted puts removed |
//! | `mesh.blob.corrupt_chunks` | counter | stored chunks that failed their hash when read |
//! | `mesh.blob.transfer.chunks` | counter | chunks received from peers, by `result` (`ok`, `bad`) |
//! | `mesh.blob.transfer.fetches` | counter | fetches ended, by `result` (`ok`, `failed`) |
//! | `mesh.blob.served` | counter | requests answered, by `result` (`ok`, `not_found`, `busy`, `rate_limited`, `bad`) |

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, UpDownCounter};

use crate::store::{GcReport, Usage};

/// The instruments of one blob store and its transfers (cheap to clone: they are handles).
#[derive(Debug, Clone)]
pub struct BlobMetrics {
    stored_bytes: UpDownCounter<i64>,
    stored_chunks: UpDownCounter<i64>,
    stored_blobs: UpDownCounter<i64>,
    puts: Counter<u64>,
    gc_blobs: Counter<u64>,
    gc_freed: Counter<u64>,
    gc_pending: Counter<u64>,
    corrupt: Counter<u64>,
    transfer_chunks: Counter<u64>,
    fetches: Counter<u64>,
    served: Counter<u64>,
}

fn delta(a: u64, b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX) - i64::try_from(a).unwrap_or(i64::MAX)
}

impl BlobMetrics {
    /// Instruments created on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let m = Self {
            stored_bytes: meter
                .i64_up_down_counter("mesh.blob.stored.bytes")
                .with_unit("By")
                .with_description("Bytes of distinct blob chunks stored")
                .build(),
            stored_chunks: meter
                .i64_up_down_counter("mesh.blob.stored.chunks")
                .with_description("Distinct blob chunks stored")
                .build(),
            stored_blobs: meter
                .i64_up_down_counter("mesh.blob.stored.blobs")
                .with_description("Blobs stored")
                .build(),
            puts: meter
                .u64_counter("mesh.blob.puts")
                .with_description("Blob puts ended, by result")
                .build(),
            gc_blobs: meter
                .u64_counter("mesh.blob.gc.blobs")
                .with_description("Blobs removed (expired or deleted)")
                .build(),
            gc_freed: meter
                .u64_counter("mesh.blob.gc.freed")
                .with_unit("By")
                .with_description("Bytes of blob chunks freed")
                .build(),
            gc_pending: meter
                .u64_counter("mesh.blob.gc.pending")
                .with_description("Rows of interrupted puts removed")
                .build(),
            corrupt: meter
                .u64_counter("mesh.blob.corrupt_chunks")
                .with_description("Stored chunks that failed their hash when read")
                .build(),
            transfer_chunks: meter
                .u64_counter("mesh.blob.transfer.chunks")
                .with_description("Chunks received from peers, by result")
                .build(),
            fetches: meter
                .u64_counter("mesh.blob.transfer.fetches")
                .with_description("Blob fetches ended, by result")
                .build(),
            served: meter
                .u64_counter("mesh.blob.served")
                .with_description("Blob requests answered, by result")
                .build(),
        };
        // The counters exist from the start, at zero: for an alert, absent is not zero.
        m.puts.add(0, &[KeyValue::new("result", "ok")]);
        m.served.add(0, &[KeyValue::new("result", "ok")]);
        m.transfer_chunks.add(0, &[KeyValue::new("result", "ok")]);
        m.transfer_chunks.add(0, &[KeyValue::new("result", "bad")]);
        m.fetches.add(0, &[KeyValue::new("result", "ok")]);
        m.fetches.add(0, &[KeyValue::new("result", "failed")]);
        m.gc_blobs.add(0, &[]);
        m.gc_freed.add(0, &[]);
        m.gc_pending.add(0, &[]);
        m.corrupt.add(0, &[]);
        m
    }

    pub(crate) fn usage_changed(&self, before: &Usage, after: &Usage) {
        self.stored_bytes
            .add(delta(before.stored_bytes, after.stored_bytes), &[]);
        self.stored_chunks
            .add(delta(before.chunks, after.chunks), &[]);
        self.stored_blobs.add(delta(before.blobs, after.blobs), &[]);
    }

    pub(crate) fn put(&self, result: &'static str) {
        self.puts.add(1, &[KeyValue::new("result", result)]);
    }

    pub(crate) fn gc(&self, r: &GcReport) {
        if r.blobs_removed > 0 {
            self.gc_blobs.add(r.blobs_removed, &[]);
        }
        if r.bytes_freed > 0 {
            self.gc_freed.add(r.bytes_freed, &[]);
        }
        if r.pending_removed > 0 {
            self.gc_pending.add(r.pending_removed, &[]);
        }
    }

    pub(crate) fn corrupt_chunk(&self) {
        self.corrupt.add(1, &[]);
    }

    pub(crate) fn transfer_chunk(&self, ok: bool) {
        self.transfer_chunks
            .add(1, &[KeyValue::new("result", if ok { "ok" } else { "bad" })]);
    }

    pub(crate) fn fetch(&self, ok: bool) {
        self.fetches.add(
            1,
            &[KeyValue::new("result", if ok { "ok" } else { "failed" })],
        );
    }

    pub(crate) fn served(&self, result: &'static str) {
        self.served.add(1, &[KeyValue::new("result", result)]);
    }
}
