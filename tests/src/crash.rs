//! The store and batch layout of the crash-consistency test: a writer process applies numbered
//! batches and acknowledges each one on stdout; after a SIGKILL the checker reopens the store
//! and verifies that every acknowledged batch is there in full and no batch is there in part.

use mesh_platform::kv::{Batch, Direction, KeyRange, KvError, KvStore, Schema, Store};
use mesh_store_redb::RedbBackend;
use mesh_store_sqlite::SqliteBackend;

/// The one table the test writes.
pub const TABLE: &str = "batches";
/// Schema of the crash-test store.
pub static SCHEMA: Schema = Schema {
    version: 1,
    tables: &[TABLE],
    migrations: &[],
};
/// Entries per batch.
pub const KEYS_PER_BATCH: u32 = 8;
/// Bytes per value (so a batch spans several pages).
pub const VALUE_LEN: usize = 4096;

/// Opens the store for `backend` ("sqlite" or "redb") at `path`.
///
/// # Errors
/// Whatever opening the backend or the store returns.
pub async fn open(backend: &str, path: &std::path::Path) -> Result<Box<dyn KvStore>, KvError> {
    Ok(match backend {
        "sqlite" => Box::new(Store::open(SqliteBackend::open(path).await?, &SCHEMA).await?),
        "redb" => Box::new(Store::open(RedbBackend::open(path).await?, &SCHEMA).await?),
        other => {
            return Err(KvError::Backend {
                backend: "test",
                message: format!("unknown backend {other}"),
            });
        }
    })
}

fn value(batch: u64, j: u32) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    v[..8].copy_from_slice(&batch.to_be_bytes());
    v[8..12].copy_from_slice(&j.to_be_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(12) {
        *b = u8::try_from(i % 251)
            .unwrap_or(0)
            .wrapping_add(batch.to_le_bytes()[0]);
    }
    v
}

/// Batch number `n`: `KEYS_PER_BATCH` entries keyed `n (u64 BE) || j (u32 BE)`.
pub fn batch(n: u64) -> Batch {
    let mut b = Batch::new();
    for j in 0..KEYS_PER_BATCH {
        let mut k = n.to_be_bytes().to_vec();
        k.extend_from_slice(&j.to_be_bytes());
        b.put(TABLE, k, value(n, j));
    }
    b
}

/// Reads the whole store and returns the batch numbers present, checking that each is complete
/// and uncorrupted.
///
/// # Errors
/// A description of the first partial or corrupt batch, or a store error.
pub async fn complete_batches(store: &dyn KvStore) -> Result<Vec<u64>, String> {
    let mut found: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    let mut from: Option<Vec<u8>> = None;
    loop {
        let range = match &from {
            Some(k) => KeyRange {
                start: std::ops::Bound::Excluded(k.clone()),
                end: std::ops::Bound::Unbounded,
            },
            None => KeyRange::all(),
        };
        let rows = store
            .range(TABLE, range, Direction::Forward, 512)
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            break;
        }
        for (k, v) in &rows {
            if k.len() != 12 {
                return Err(format!("bad key length {}", k.len()));
            }
            let n = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            let j = u32::from_be_bytes(k[8..].try_into().unwrap_or_default());
            if *v != value(n, j) {
                return Err(format!("batch {n} entry {j} has a corrupt value"));
            }
            *found.entry(n).or_default() += 1;
        }
        from = rows.last().map(|(k, _)| k.clone());
    }
    for (n, count) in &found {
        if *count != KEYS_PER_BATCH {
            return Err(format!(
                "batch {n} is partial: {count} of {KEYS_PER_BATCH} entries"
            ));
        }
    }
    Ok(found.into_keys().collect())
}
