//! Blob store: streaming put and get throughput per backend against raw file write + read of
//! the same bytes in the same run (write in 1 MiB pieces with an fsync each, as the store
//! commits about 1 MiB per durable batch; sequential read), file size after writing, and the
//! peak resident memory of the process while putting and getting one big blob.

// Benchmark arithmetic on known sizes; a failed operation aborts the benchmark (panic)
// rather than producing a number.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::panic
)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mesh_blob::BlobId;
use mesh_blob::store::{BlobConfig, BlobStore, PutOptions, TABLES};
use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_store_memory::MemoryBackend;
use mesh_store_redb::{RedbBackend, RedbOptions};
use mesh_store_sqlite::SqliteBackend;
use serde::Serialize;

use crate::storage::{Amplification, dir_bytes};
use crate::timing::Measurement;

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};
/// Bytes handed to the writer at a time, and per fsync in the file baseline.
const PIECE: usize = 1 << 20;
/// redb's page cache in this suite: small, so the memory figure shows the store's own needs.
const REDB_CACHE: usize = 16 << 20;

/// Peak resident memory while putting or getting one blob.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryPeak {
    pub(crate) what: String,
    pub(crate) blob_bytes: u64,
    /// Resident set before the operation.
    pub(crate) rss_before: u64,
    /// Highest resident set during it (`VmHWM` after resetting it).
    pub(crate) rss_peak: u64,
}

/// Everything the suite measured.
pub(crate) struct Report {
    pub(crate) ours: Vec<Measurement>,
    pub(crate) baseline: Vec<Measurement>,
    pub(crate) amplification: Vec<Amplification>,
    pub(crate) memory: Vec<MemoryPeak>,
}

/// 1 MiB of pseudo-random bytes; each piece of a stream is this buffer with the piece number
/// stamped every 4 KiB, so that no two chunks of a blob are alike (no dedup flatters us).
fn base_piece() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..PIECE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[2]
        })
        .collect()
}

fn stamp(piece: &mut [u8], n: u64) {
    for (i, block) in piece.chunks_mut(4096).enumerate() {
        block[..8].copy_from_slice(&(n * 256 + i as u64).to_le_bytes());
    }
}

fn m(name: String, ns: f64, bytes: u64) -> Measurement {
    Measurement {
        name,
        ns_per_op: ns,
        iterations: 1,
        bytes_per_op: bytes,
    }
}

/// Resets the process's peak resident set (Linux: `clear_refs` 5); false if unsupported.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn config(max: u64) -> BlobConfig {
    BlobConfig {
        max_blob_size: max,
        owner_quota: u64::MAX,
        total_quota: u64::MAX,
        ..BlobConfig::default()
    }
}

async fn open(kind: &str, dir: &Path) -> Arc<dyn KvStore> {
    match kind {
        "redb" => {
            let b = RedbBackend::open_with(
                dir.join("blobs.redb"),
                RedbOptions {
                    cache_bytes: REDB_CACHE,
                    ..RedbOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            Arc::new(
                Store::open(b, &SCHEMA)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        }
        "sqlite" => {
            let b = SqliteBackend::open(dir.join("blobs.sqlite"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            Arc::new(
                Store::open(b, &SCHEMA)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        }
        _ => Arc::new(
            Store::open(MemoryBackend::new(), &SCHEMA)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        ),
    }
}

/// Streams `total` bytes into the store; returns the id and the nanoseconds taken.
async fn put(store: &BlobStore, total: usize, base: &[u8]) -> (BlobId, f64) {
    let mut piece = base.to_vec();
    let t = Instant::now();
    let mut w = store
        .writer(
            PeerId::from_bytes_unvalidated([1; 32]),
            PutOptions::default(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut n = 0u64;
    let mut left = total;
    while left > 0 {
        let k = left.min(PIECE);
        stamp(&mut piece, n);
        w.write(&piece[..k]).await.unwrap_or_else(|e| panic!("{e}"));
        left -= k;
        n += 1;
    }
    let stored = w
        .finish(UnixMillis(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (stored.id, t.elapsed().as_secs_f64() * 1e9)
}

/// Streams the blob back; returns the nanoseconds taken.
async fn get(store: &BlobStore, id: &BlobId, total: usize) -> f64 {
    let t = Instant::now();
    let mut r = store.reader(id).await.unwrap_or_else(|e| panic!("{e}"));
    let mut read = 0;
    while let Some(p) = r.next_piece().await.unwrap_or_else(|e| panic!("{e}")) {
        read += p.len();
    }
    assert_eq!(read, total, "read back");
    t.elapsed().as_secs_f64() * 1e9
}

/// The same bytes through a plain file: 1 MiB writes with an fsync each, then a sequential
/// read in 64 KiB reads.
fn file(dir: &Path, total: usize, base: &[u8]) -> (f64, f64) {
    let path = dir.join("raw.bin");
    let mut piece = base.to_vec();
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let (mut n, mut left) = (0u64, total);
    while left > 0 {
        let k = left.min(PIECE);
        stamp(&mut piece, n);
        f.write_all(&piece[..k]).unwrap_or_else(|e| panic!("{e}"));
        f.sync_data().unwrap_or_else(|e| panic!("{e}"));
        left -= k;
        n += 1;
    }
    let put = t.elapsed().as_secs_f64() * 1e9;
    drop(f);
    let t = Instant::now();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    loop {
        let k = f.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        if k == 0 {
            break;
        }
        read += k;
    }
    assert_eq!(read, total);
    let get = t.elapsed().as_secs_f64() * 1e9;
    let _ = std::fs::remove_file(&path);
    (put, get)
}

/// Runs [`peak`] in a child process (`mesh-bench blob-peak KIND OP BYTES`) and reads its
/// answer.
fn peak_in_child(kind: &str, op: &str, bytes: usize) -> Result<(u64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["blob-peak", kind, op, &bytes.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (out.status.success(), it.next(), it.next()) {
        (true, Some(Ok(before)), Some(Ok(peak))) => Ok((before, peak)),
        _ => Err(format!(
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// In a fresh process: puts a blob of `bytes` into a `kind` store (and, for `op` = "get",
/// reads it back), and returns the resident set before the measured operation and its peak
/// during it, in bytes.
///
/// # Errors
/// When the peak cannot be reset (`/proc/self/clear_refs`).
pub(crate) async fn peak(kind: &str, op: &str, bytes: usize) -> Result<(u64, u64), String> {
    let base = base_piece();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kv = open(kind, dir.path()).await;
    let store = BlobStore::open(kv, config(bytes as u64))
        .await
        .map_err(|e| e.to_string())?;
    if op == "get" {
        let (id, _) = put(&store, bytes, &base).await;
        if !reset_peak() {
            return Err("/proc/self/clear_refs is not writable".into());
        }
        let before = status_kib("VmRSS:") * 1024;
        get(&store, &id, bytes).await;
        return Ok((before, status_kib("VmHWM:") * 1024));
    }
    if !reset_peak() {
        return Err("/proc/self/clear_refs is not writable".into());
    }
    let before = status_kib("VmRSS:") * 1024;
    put(&store, bytes, &base).await;
    Ok((before, status_kib("VmHWM:") * 1024))
}

/// Runs the suite: `total` bytes per backend for throughput, and one blob of `big` bytes on
/// redb and SQLite for peak memory.
pub(crate) async fn run(total: usize, big: usize) -> Report {
    let base = base_piece();
    let mut report = Report {
        ours: Vec::new(),
        baseline: Vec::new(),
        amplification: Vec::new(),
        memory: Vec::new(),
    };
    // Each peak in a process of its own: memory freed by one run is not always given back to
    // the system, and would hide the next run's peak.
    let big_mib = big >> 20;
    for kind in ["redb", "sqlite"] {
        for op in ["put", "get"] {
            match peak_in_child(kind, op, big) {
                Ok((before, peak)) => report.memory.push(MemoryPeak {
                    what: format!("{kind} {op} {big_mib} MiB blob"),
                    blob_bytes: big as u64,
                    rss_before: before,
                    rss_peak: peak,
                }),
                Err(e) => eprintln!("peak memory of {kind} {op} not measured: {e}"),
            }
        }
    }
    let mib = total >> 20;
    for kind in ["redb", "sqlite", "memory"] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kv = open(kind, dir.path()).await;
        let store = BlobStore::open(kv, config(total as u64))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (id, put_ns) = put(&store, total, &base).await;
        let get_ns = get(&store, &id, total).await;
        report.ours.push(m(
            format!("{kind} put {mib} MiB blob"),
            put_ns,
            total as u64,
        ));
        report.ours.push(m(
            format!("{kind} get {mib} MiB blob"),
            get_ns,
            total as u64,
        ));
        if kind != "memory" {
            let bytes = dir_bytes(dir.path());
            report.amplification.push(Amplification {
                what: format!("{kind}, one {mib} MiB blob"),
                logical_bytes: total as u64,
                file_bytes: bytes,
                ratio: bytes as f64 / total as f64,
            });
        }
        // The baseline in the same directory, right after.
        let (fput, fget) = file(dir.path(), total, &base);
        report
            .baseline
            .push(m(format!("{kind} put {mib} MiB blob"), fput, total as u64));
        report
            .baseline
            .push(m(format!("{kind} get {mib} MiB blob"), fget, total as u64));
    }
    report
}
