//! Storage: put / get / range throughput per backend for 1 KiB and 64 KiB values, against raw
//! file I/O of the same bytes in the same run, plus file size after writing (amplification)
//! and redb's amplification for candidate blob chunk sizes.

// Benchmark arithmetic on small, known sizes: casts cannot truncate here. A failed storage
// operation aborts the benchmark (panic) rather than producing a number.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::many_single_char_names,
    clippy::panic
)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use mesh_platform::kv::{Batch, Direction, KeyRange, KvStore, Schema, Store};
use mesh_store_memory::MemoryBackend;
use mesh_store_redb::RedbBackend;
use mesh_store_sqlite::SqliteBackend;
use serde::Serialize;

use crate::timing::Measurement;

const TABLE: &str = "bench";
static SCHEMA: Schema = Schema {
    version: 1,
    tables: &[TABLE],
    migrations: &[],
};
/// Bytes of values per durable batch (and per fsync in the file baseline).
const BATCH_BYTES: usize = 256 * 1024;
/// Random gets per configuration.
const GETS: usize = 2000;

/// File size after writing, per backend and value size.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Amplification {
    pub(crate) what: String,
    pub(crate) logical_bytes: u64,
    pub(crate) file_bytes: u64,
    pub(crate) ratio: f64,
}

/// Everything the suite measured.
pub(crate) struct Report {
    pub(crate) ours: Vec<Measurement>,
    pub(crate) baseline: Vec<Measurement>,
    pub(crate) amplification: Vec<Amplification>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn m(name: String, total_ns: f64, ops: usize, bytes_per_op: usize) -> Measurement {
    #[allow(clippy::cast_precision_loss)]
    Measurement {
        name,
        ns_per_op: total_ns / ops as f64,
        iterations: ops as u64,
        bytes_per_op: bytes_per_op as u64,
    }
}

fn elapsed_ns(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e9
}

pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Writes `total` bytes as values of `value_len`, then reads them back three ways.
async fn run_store(
    label: &str,
    store: &dyn KvStore,
    value_len: usize,
    total: usize,
    out: &mut Vec<Measurement>,
) {
    let n = total / value_len;
    let per_batch = (BATCH_BYTES / value_len).max(1);
    let value = vec![0x5au8; value_len];
    let t = Instant::now();
    let mut i = 0u64;
    let mut batches = 0;
    while (i as usize) < n {
        let mut b = Batch::new();
        for _ in 0..per_batch.min(n - i as usize) {
            b.put(TABLE, i.to_be_bytes(), value.clone());
            i += 1;
        }
        store
            .apply(b)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        batches += 1;
    }
    let size = value_len / 1024;
    out.push(m(
        format!("{label} put {size} KiB (batch {per_batch})"),
        elapsed_ns(t),
        batches,
        per_batch * value_len,
    ));
    let mut rng = Rng(42);
    let t = Instant::now();
    for _ in 0..GETS {
        let k = rng.next() % n as u64;
        let v = store.get(TABLE, &k.to_be_bytes()).await.unwrap_or_default();
        assert_eq!(v.map(|v| v.len()), Some(value_len), "{label}: key {k}");
    }
    out.push(m(
        format!("{label} get {size} KiB (random)"),
        elapsed_ns(t),
        GETS,
        value_len,
    ));
    let t = Instant::now();
    let mut from: Option<Vec<u8>> = None;
    let mut read = 0usize;
    loop {
        let range = from.as_ref().map_or_else(KeyRange::all, |k| KeyRange {
            start: std::ops::Bound::Excluded(k.clone()),
            end: std::ops::Bound::Unbounded,
        });
        let rows = store
            .range(TABLE, range, Direction::Forward, per_batch)
            .await
            .unwrap_or_default();
        if rows.is_empty() {
            break;
        }
        read += rows.len();
        from = rows.last().map(|(k, _)| k.clone());
    }
    assert_eq!(read, n, "{label}: scan");
    out.push(m(
        format!("{label} scan {size} KiB"),
        elapsed_ns(t),
        read,
        value_len,
    ));
}

/// The same bytes through a plain file: write + fsync per batch, random preads, sequential read.
fn run_file(label: &str, dir: &Path, value_len: usize, total: usize, out: &mut Vec<Measurement>) {
    let path = dir.join("raw.bin");
    let n = total / value_len;
    let per_batch = (BATCH_BYTES / value_len).max(1);
    let chunk = vec![0x5au8; per_batch * value_len];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut written = 0;
    let mut batches = 0;
    while written < n {
        let k = per_batch.min(n - written);
        f.write_all(&chunk[..k * value_len])
            .unwrap_or_else(|e| panic!("{e}"));
        f.sync_data().unwrap_or_else(|e| panic!("{e}"));
        written += k;
        batches += 1;
    }
    let size = value_len / 1024;
    out.push(m(
        format!("{label} put {size} KiB (batch {per_batch})"),
        elapsed_ns(t),
        batches,
        per_batch * value_len,
    ));
    let mut rng = Rng(42);
    let mut buf = vec![0u8; value_len];
    let t = Instant::now();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..GETS {
        let k = rng.next() % n as u64;
        f.seek(SeekFrom::Start(k * value_len as u64))
            .unwrap_or_else(|e| panic!("{e}"));
        f.read_exact(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    }
    out.push(m(
        format!("{label} get {size} KiB (random)"),
        elapsed_ns(t),
        GETS,
        value_len,
    ));
    let t = Instant::now();
    let mut all = Vec::with_capacity(total);
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut all))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), n * value_len);
    out.push(m(
        format!("{label} scan {size} KiB"),
        elapsed_ns(t),
        n,
        value_len,
    ));
}

/// Runs the suite writing `total` bytes per configuration.
pub(crate) async fn run(total: usize) -> Report {
    let mut report = Report {
        ours: Vec::new(),
        baseline: Vec::new(),
        amplification: Vec::new(),
    };
    for value_len in [1024usize, 64 * 1024] {
        for backend in ["memory", "redb", "sqlite"] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let store = open_store(backend, dir.path()).await;
            run_store(backend, store.as_ref(), value_len, total, &mut report.ours).await;
            let logical = store
                .stats(TABLE)
                .await
                .map(|s| s.bytes)
                .unwrap_or_default();
            store.close().await.unwrap_or_else(|e| panic!("{e}"));
            drop(store);
            if backend != "memory" {
                let file = dir_bytes(dir.path());
                #[allow(clippy::cast_precision_loss)]
                report.amplification.push(Amplification {
                    what: format!("{backend}, {} KiB values", value_len / 1024),
                    logical_bytes: logical,
                    file_bytes: file,
                    ratio: file as f64 / logical as f64,
                });
            }
            // Each backend row gets the file baseline measured right after it.
            let fdir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            run_file(backend, fdir.path(), value_len, total, &mut report.baseline);
        }
    }
    redb_chunk_sweep(total / 2, &mut report.amplification).await;
    report
}

async fn open_store(backend: &str, dir: &Path) -> Box<dyn KvStore> {
    let result: Result<Box<dyn KvStore>, mesh_platform::kv::KvError> = async {
        Ok(match backend {
            "memory" => {
                Box::new(Store::open(MemoryBackend::new(), &SCHEMA).await?) as Box<dyn KvStore>
            }
            "redb" => {
                Box::new(Store::open(RedbBackend::open(dir.join("db.redb")).await?, &SCHEMA).await?)
            }
            _ => Box::new(
                Store::open(SqliteBackend::open(dir.join("db.sqlite")).await?, &SCHEMA).await?,
            ),
        })
    }
    .await;
    result.unwrap_or_else(|e| panic!("{backend}: {e}"))
}

/// redb file size for candidate blob chunk sizes (32-byte keys, as chunk hashes), `total` bytes each.
async fn redb_chunk_sweep(total: usize, out: &mut Vec<Amplification>) {
    for chunk in [
        4080usize,
        16 * 1024,
        32 * 1024,
        mesh_store_redb::RECOMMENDED_MAX_CHUNK,
        64 * 1024,
        256 * 1024,
    ] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(
            RedbBackend::open(dir.path().join("db.redb"))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            &SCHEMA,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let n = total / chunk;
        let value = vec![1u8; chunk];
        let mut i = 0u64;
        while (i as usize) < n {
            let mut b = Batch::new();
            for _ in 0..(BATCH_BYTES / chunk).max(1).min(n - i as usize) {
                // 32-byte keys, as blob chunk hashes will be.
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&i.to_be_bytes());
                b.put(TABLE, k, value.clone());
                i += 1;
            }
            store.apply(b).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let logical = store
            .stats(TABLE)
            .await
            .map(|s| s.bytes)
            .unwrap_or_default();
        store.close().await.unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let file = dir_bytes(dir.path());
        #[allow(clippy::cast_precision_loss)]
        out.push(Amplification {
            what: format!("redb chunk {chunk} B"),
            logical_bytes: logical,
            file_bytes: file,
            ratio: file as f64 / logical as f64,
        });
    }
}
