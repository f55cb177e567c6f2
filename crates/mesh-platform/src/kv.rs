//! Storage: the [`KvStore`] trait every domain crate persists through, and [`Store`], the one
//! implementation of it that all backends share.
//!
//! A backend ([`KvBackend`]) is only a flat, ordered byte keyspace with get, range scan and an
//! atomic batch. Everything else is done once, here, for every backend alike:
//!
//! - named tables declared up front in a [`Schema`] (a table is a key prefix
//!   `u8(len(name)) || name`, so keys stay ordered within a table and tables never overlap);
//! - size accounting per table (entries and bytes), updated in the same atomic batch as the data;
//! - the schema version, recorded in the store, and ordered [`Migration`]s run on open; a store
//!   written by a newer schema is refused with [`KvError::SchemaTooNew`];
//! - limits on key and value sizes, checked before anything reaches the backend.
//!
//! The layout on disk and the migration strategy are described in `docs/STORAGE.md`.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{MaybeSend, MaybeSync};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value accepted: 16 MiB. The blob store keeps chunks far below this.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;
/// Longest table name, in bytes.
pub const MAX_TABLE_NAME_LEN: usize = 64;
/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 100_000;
/// Rows a migration's rewrite reads per range call.
const MIGRATION_PAGE: usize = 1024;

/// Reserved table holding the schema version.
const META_TABLE: &str = "__meta";
/// Reserved table holding per-table statistics.
const STATS_TABLE: &str = "__stats";
const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// Errors from a store or its backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The table is not declared in the store's schema.
    #[error("unknown table {0:?} (not declared in the schema)")]
    UnknownTable(String),
    /// A key is longer than [`MAX_KEY_LEN`].
    #[error("key of {len} bytes, over the limit of {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is larger than [`MAX_VALUE_LEN`].
    #[error("value of {len} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch has more than [`MAX_BATCH_OPS`] operations.
    #[error("batch of {len} operations, over the limit of {max}")]
    BatchTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store was written by a newer schema than this build knows: refused rather than
    /// misread.
    #[error(
        "store has schema version {found}, this build supports up to {supported}; upgrade the software"
    )]
    SchemaTooNew {
        /// Version recorded in the store.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// The schema definition itself is inconsistent (a programming error in the caller).
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// Stored metadata could not be decoded.
    #[error("corrupt store metadata: {0}")]
    Corrupt(String),
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
    /// The backend failed (I/O, database error, browser error).
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Its error, as text.
        message: String,
    },
}

/// Direction of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// A range of keys within one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key of the table.
    pub const fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let end = successor(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        Self {
            start: Bound::Included(prefix.to_vec()),
            end,
        }
    }

    /// `start <= key < end`.
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        Self {
            start: Bound::Included(start.to_vec()),
            end: Bound::Excluded(end.to_vec()),
        }
    }

    /// Keys at or after `start`.
    pub fn from(start: &[u8]) -> Self {
        Self {
            start: Bound::Included(start.to_vec()),
            end: Bound::Unbounded,
        }
    }
}

/// The smallest byte string greater than every string with prefix `p`, if there is one.
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// One operation of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Insert or overwrite.
    Put {
        /// Table.
        table: &'static str,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete (a missing key is not an error).
    Delete {
        /// Table.
        table: &'static str,
        /// Key.
        key: Vec<u8>,
    },
}

/// Puts and deletes applied all together or not at all. Later operations on the same key win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
    commit: Commit,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(
        &mut self,
        table: &'static str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(BatchOp::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: &'static str, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            table,
            key: key.into(),
        });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// How this batch is committed: [`Commit::Fast`] lets a backend skip waiting for the disk
    /// (redb commits it without fsync; the next durable commit, or closing the store, makes
    /// it durable). A fast batch is still atomic, and what the store reads is always a whole
    /// batch; only the last fast batches may be lost on a crash. For data a peer can supply
    /// again, such as a gossip cache. Backends without the distinction commit durably.
    pub fn set_commit(&mut self, commit: Commit) -> &mut Self {
        self.commit = commit;
        self
    }

    /// See [`Batch::set_commit`].
    pub fn commit(&self) -> Commit {
        self.commit
    }
}

/// Size of a table: what quotas are computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Number of entries.
    pub entries: u64,
    /// Sum of key and value lengths, in bytes (logical size, not file size).
    pub bytes: u64,
}

/// A migration's rewrite: `(key, value)` to the new entry, or `None` to delete it.
pub type RewriteFn = fn(&[u8], &[u8]) -> Option<(Vec<u8>, Vec<u8>)>;

/// A step of a [`Migration`].
#[derive(Debug, Clone, Copy)]
pub enum MigrationStep {
    /// Deletes a table's entries.
    DropTable(&'static str),
    /// Moves every entry of `from` into `to` (overwriting equal keys).
    RenameTable {
        /// Source table.
        from: &'static str,
        /// Destination table.
        to: &'static str,
    },
    /// Rewrites every entry of a table: `f(key, value)` returns the new entry, or `None` to
    /// delete it. The new key may differ (re-keying an index).
    Rewrite {
        /// Table to rewrite.
        table: &'static str,
        /// The rewrite function.
        f: RewriteFn,
    },
}

/// The changes that take a store from `to_version - 1` to `to_version`. Applied in one atomic
/// batch together with the new version number: a crash leaves the store at the old version or
/// the new one, never between.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version the store is at after this migration.
    pub to_version: u32,
    /// What it does, for logs.
    pub description: &'static str,
    /// Its steps, in order.
    pub steps: &'static [MigrationStep],
}

/// The tables a store has and the version of their layout.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Current version (at least 1). A store at an older version is migrated on open.
    pub version: u32,
    /// Tables that exist at this version. Tables not listed are refused.
    pub tables: &'static [&'static str],
    /// Migrations to every version from 2 up to `version`, in order.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// Checks the schema's own consistency.
    ///
    /// # Errors
    /// [`KvError::InvalidSchema`] describing the first problem found.
    pub fn validate(&self) -> Result<(), KvError> {
        if self.version == 0 {
            return Err(KvError::InvalidSchema("version must be at least 1".into()));
        }
        for t in self.tables {
            validate_table_name(t)?;
        }
        let mut expected = 2;
        for m in self.migrations {
            for step in m.steps {
                match step {
                    MigrationStep::DropTable(t) | MigrationStep::Rewrite { table: t, .. } => {
                        validate_table_name(t)?;
                    }
                    MigrationStep::RenameTable { from, to } => {
                        validate_table_name(from)?;
                        validate_table_name(to)?;
                    }
                }
            }
            if m.to_version != expected {
                return Err(KvError::InvalidSchema(format!(
                    "migrations must go to versions 2, 3, ... in order; found {} where {expected} was expected",
                    m.to_version
                )));
            }
            expected += 1;
        }
        if expected - 1 != self.version {
            return Err(KvError::InvalidSchema(format!(
                "schema version {} needs migrations up to it; they end at {}",
                self.version,
                expected - 1
            )));
        }
        Ok(())
    }
}

fn validate_table_name(t: &str) -> Result<(), KvError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TABLE_NAME_LEN
        && !t.starts_with("__")
        && t.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'/'
        });
    if ok {
        Ok(())
    } else {
        Err(KvError::InvalidSchema(format!(
            "table name {t:?} must be 1-{MAX_TABLE_NAME_LEN} bytes of [a-z0-9_/-] and not start with __"
        )))
    }
}

// ------------------------------------------------------------------------------------------
// The trait domain crates use.

/// Ordered key-value storage with named tables. See the module docs.
///
/// Object safe: domain crates may hold an `Arc<dyn KvStore>`.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait KvStore: MaybeSend + MaybeSync {
    /// The value under `key`, if any.
    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// Up to `limit` entries of `range`, in key order or reverse key order, read from one
    /// consistent snapshot.
    async fn range(
        &self,
        table: &str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError>;

    /// Applies every operation of `batch`, or none of them. Durable when it returns.
    async fn apply(&self, batch: Batch) -> Result<(), KvError>;

    /// Entries and bytes of a table.
    async fn stats(&self, table: &str) -> Result<TableStats, KvError>;

    /// The schema version the store is at.
    fn schema_version(&self) -> u32;

    /// Flushes anything pending and closes the store; later calls fail with
    /// [`KvError::Closed`].
    async fn close(&self) -> Result<(), KvError>;

    /// Makes every batch applied so far durable, [`Commit::Fast`] ones included. Default:
    /// nothing to do (every batch was durable).
    async fn sync(&self) -> Result<(), KvError> {
        Ok(())
    }

    /// Puts one entry.
    async fn put(&self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let mut b = Batch::new();
        b.put(table, key, value);
        self.apply(b).await
    }

    /// Deletes one entry.
    async fn delete(&self, table: &'static str, key: &[u8]) -> Result<(), KvError> {
        let mut b = Batch::new();
        b.delete(table, key);
        self.apply(b).await
    }
}

/// The keys a sans-IO core changed since a driver last persisted them. Off until
/// [`ChangeSet::enable`] (a simulated core has nothing to persist); while on, it holds each
/// changed key once, however often it changed.
#[derive(Debug, Clone)]
pub struct ChangeSet<K: Ord>(Option<std::collections::BTreeSet<K>>);

impl<K: Ord> Default for ChangeSet<K> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: Ord> ChangeSet<K> {
    /// Starts recording.
    pub fn enable(&mut self) {
        self.0.get_or_insert_with(std::collections::BTreeSet::new);
    }

    /// Records that `key` changed (nothing while off).
    pub fn mark(&mut self, key: K) {
        if let Some(set) = self.0.as_mut() {
            set.insert(key);
        }
    }

    /// The keys changed since the last call, in key order (empty while off).
    pub fn take(&mut self) -> Vec<K> {
        self.0
            .as_mut()
            .map(|set| std::mem::take(set).into_iter().collect())
            .unwrap_or_default()
    }
}

/// Every entry of `table`, read a page of `page` entries at a time (each page from its own
/// snapshot), in key order. For loading a table that fits in memory at start-up.
///
/// # Errors
/// The store's [`KvError`].
pub async fn read_table(
    store: &dyn KvStore,
    table: &str,
    page: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
    let page = page.max(1);
    let mut all = Vec::new();
    let mut range = KeyRange::all();
    loop {
        let rows = store
            .range(table, range.clone(), Direction::Forward, page)
            .await?;
        let full = rows.len() == page;
        if let Some((last, _)) = rows.last() {
            range.start = Bound::Excluded(last.clone());
        }
        all.extend(rows);
        if !full {
            return Ok(all);
        }
    }
}

// ------------------------------------------------------------------------------------------
// What a backend implements.

/// An operation on the backend's flat keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOp {
    /// Insert or overwrite.
    Put(Vec<u8>, Vec<u8>),
    /// Delete one key.
    Delete(Vec<u8>),
    /// Delete every key in `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// A flat, ordered byte keyspace (keys compare as unsigned bytes, shorter prefix first).
/// Implemented once per storage technology; [`Store`] builds tables, accounting and schema on it.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait KvBackend: MaybeSend + MaybeSync + 'static {
    /// Name for errors and logs, e.g. `"redb"`.
    fn name(&self) -> &'static str;

    /// The value under `key`.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// Up to `limit` entries with `start <= key < end` (`start` exclusive if `start_exclusive`,
    /// `end` inclusive if `end_inclusive`), from one consistent snapshot.
    async fn range(
        &self,
        start: &[u8],
        start_exclusive: bool,
        end: &[u8],
        end_inclusive: bool,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError>;

    /// Applies all operations atomically and durably, in order.
    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError>;

    /// [`KvBackend::apply`], committed as `commit` says (see [`Batch::set_commit`]). The
    /// default commits durably whatever `commit` is.
    async fn apply_with(&self, ops: Vec<RawOp>, commit: Commit) -> Result<(), KvError> {
        let _ = commit;
        self.apply(ops).await
    }

    /// Lengths of the values under `keys` (`None`: absent), for size accounting before a
    /// write. The default calls [`KvBackend::get`] per key; backends override it to read all
    /// keys in one transaction.
    async fn value_lens(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<usize>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?.map(|v| v.len()));
        }
        Ok(out)
    }

    /// Waits until every write started before this call has finished (committed or rolled
    /// back), including one whose `apply` future was dropped mid-commit. `Store` calls it
    /// before trusting the store again after such a cancellation. Default: nothing to wait for
    /// (an `apply` that completes within one poll).
    async fn barrier(&self) -> Result<(), KvError> {
        Ok(())
    }

    /// Releases the backend's resources. Default: nothing to do.
    async fn close(&self) -> Result<(), KvError> {
        Ok(())
    }

    /// Makes every batch applied so far durable (see [`Batch::set_commit`]). Default:
    /// nothing to do.
    async fn sync(&self) -> Result<(), KvError> {
        Ok(())
    }
}

/// How a backend's commit reaches the disk (each backend documents what it means exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commit {
    /// On disk when `apply` returns (the default): an acknowledged batch survives a crash or
    /// power loss.
    #[default]
    Durable,
    /// Faster; the last batches may be lost on power loss (or, for some backends, a crash).
    Fast,
}

/// Whether the backend range `start ..= end` (with the given exclusivity) selects no key at all.
/// Backends whose range APIs reject such bounds (`BTreeMap`, IndexedDB) check this first.
pub fn selects_nothing(
    start: &[u8],
    start_exclusive: bool,
    end: &[u8],
    end_inclusive: bool,
) -> bool {
    start > end || (start == end && (start_exclusive || !end_inclusive))
}

/// The backend range as standard bounds.
pub fn std_bounds<'a>(
    start: &'a [u8],
    start_exclusive: bool,
    end: &'a [u8],
    end_inclusive: bool,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let lo = if start_exclusive {
        Bound::Excluded(start)
    } else {
        Bound::Included(start)
    };
    let hi = if end_inclusive {
        Bound::Included(end)
    } else {
        Bound::Excluded(end)
    };
    (lo, hi)
}

/// `u8(len(table)) || table`: the prefix of every key of `table` in the backend.
fn table_prefix(table: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(table.len() + 1);
    // Table names are at most 64 bytes (validated).
    #[allow(clippy::cast_possible_truncation)]
    p.push(table.len() as u8);
    p.extend_from_slice(table.as_bytes());
    p
}

fn raw_key(table: &str, key: &[u8]) -> Vec<u8> {
    let mut k = table_prefix(table);
    k.extend_from_slice(key);
    k
}

/// Backend bounds for `range` within `table`: `(start, start_exclusive, end, end_inclusive)`.
fn raw_bounds(table: &str, range: &KeyRange) -> (Vec<u8>, bool, Vec<u8>, bool) {
    let prefix = table_prefix(table);
    let (start, start_exclusive) = match &range.start {
        Bound::Included(k) => (raw_key(table, k), false),
        Bound::Excluded(k) => (raw_key(table, k), true),
        Bound::Unbounded => (prefix.clone(), false),
    };
    // The prefix ends in an ASCII byte, so it always has a successor.
    let table_end = successor(&prefix).unwrap_or_default();
    let (end, end_inclusive) = match &range.end {
        Bound::Included(k) => (raw_key(table, k), true),
        Bound::Excluded(k) => (raw_key(table, k), false),
        Bound::Unbounded => (table_end, false),
    };
    (start, start_exclusive, end, end_inclusive)
}

fn encode_stats(s: TableStats) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&s.entries.to_le_bytes());
    v.extend_from_slice(&s.bytes.to_le_bytes());
    v
}

fn decode_stats(v: &[u8]) -> Result<TableStats, KvError> {
    let mut r = mesh_crypto::wire::Reader::new(v);
    let parsed = (|| {
        let s = TableStats {
            entries: r.u64_le()?,
            bytes: r.u64_le()?,
        };
        r.finish()?;
        Ok::<_, mesh_crypto::Error>(s)
    })();
    parsed.map_err(|e| KvError::Corrupt(format!("table statistics: {e}")))
}

/// Entry size for accounting.
fn entry_bytes(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64
}

// ------------------------------------------------------------------------------------------
// The store.

/// A [`KvStore`] over any [`KvBackend`]. Writes are serialised (one batch at a time, as in
/// every embedded database), reads run concurrently with them.
pub struct Store<B: KvBackend> {
    backend: Arc<B>,
    schema: &'static Schema,
    version: u32,
    /// Write lock; also guards the in-memory copy of the statistics.
    writer: tokio::sync::Mutex<WriterState>,
    closed: std::sync::atomic::AtomicBool,
}

/// The statistics as last committed, and whether a write may have committed without them
/// being updated here (its future was dropped, or the backend reported an error after which
/// the commit's fate is unknown). A dirty copy is reloaded from the store before it is used.
#[derive(Default)]
struct WriterState {
    stats: HashMap<&'static str, TableStats>,
    dirty: bool,
}

impl<B: KvBackend> std::fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.name())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<B: KvBackend> Store<B> {
    /// Opens a store on `backend`: records the schema version in a new store, migrates an
    /// older one, refuses a newer one.
    ///
    /// # Errors
    /// [`KvError::InvalidSchema`], [`KvError::SchemaTooNew`], [`KvError::Corrupt`], or a
    /// backend error.
    pub async fn open(backend: B, schema: &'static Schema) -> Result<Self, KvError> {
        schema.validate()?;
        let backend = Arc::new(backend);
        let stored = match backend
            .get(&raw_key(META_TABLE, SCHEMA_VERSION_KEY))
            .await?
        {
            None => None,
            Some(v) => Some(u32::from_le_bytes(v.as_slice().try_into().map_err(
                |_| KvError::Corrupt("schema version is not 4 bytes".into()),
            )?)),
        };
        let mut store = Self {
            backend,
            schema,
            version: stored.unwrap_or(schema.version),
            writer: tokio::sync::Mutex::new(WriterState::default()),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        match stored {
            None => {
                let ops = vec![RawOp::Put(
                    raw_key(META_TABLE, SCHEMA_VERSION_KEY),
                    schema.version.to_le_bytes().to_vec(),
                )];
                store.backend.apply(ops).await?;
                tracing::debug!(
                    backend = store.backend.name(),
                    version = schema.version,
                    "new store"
                );
            }
            Some(found) if found > schema.version => {
                return Err(KvError::SchemaTooNew {
                    found,
                    supported: schema.version,
                });
            }
            Some(found) => {
                for m in schema.migrations.iter().filter(|m| m.to_version > found) {
                    store.migrate(m).await?;
                }
            }
        }
        store.writer.get_mut().stats = store.load_stats().await?;
        Ok(store)
    }

    /// Reads every declared table's statistics from the store.
    async fn load_stats(&self) -> Result<HashMap<&'static str, TableStats>, KvError> {
        let mut stats = HashMap::new();
        for t in self.schema.tables {
            let s = match self
                .backend
                .get(&raw_key(STATS_TABLE, t.as_bytes()))
                .await?
            {
                Some(v) => decode_stats(&v)?,
                None => TableStats::default(),
            };
            stats.insert(*t, s);
        }
        Ok(stats)
    }

    /// The committed statistics, reloaded first if an earlier write left them uncertain.
    async fn fresh_stats<'a>(
        &self,
        state: &'a mut WriterState,
    ) -> Result<&'a mut HashMap<&'static str, TableStats>, KvError> {
        if state.dirty {
            // A cancelled or failed write may still be committing: wait for it, then reread.
            self.backend.barrier().await?;
            state.stats = self.load_stats().await?;
            state.dirty = false;
        }
        Ok(&mut state.stats)
    }

    /// The backend, e.g. to read its file size.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn check_open(&self) -> Result<(), KvError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(KvError::Closed)
        } else {
            Ok(())
        }
    }

    fn declared(&self, table: &str) -> Result<&'static str, KvError> {
        self.schema
            .tables
            .iter()
            .find(|t| **t == table)
            .copied()
            .ok_or_else(|| KvError::UnknownTable(table.to_string()))
    }

    /// Runs one migration in one atomic batch with its version bump.
    async fn migrate(&mut self, m: &Migration) -> Result<(), KvError> {
        tracing::info!(
            backend = self.backend.name(),
            to = m.to_version,
            what = m.description,
            "migrating store"
        );
        // Overlay of this migration's writes: key -> Some(value) or None (deleted).
        let mut overlay: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            std::collections::BTreeMap::new();
        let mut touched: Vec<&'static str> = Vec::new();
        for step in m.steps {
            match *step {
                MigrationStep::DropTable(t) => {
                    for (k, _) in self.scan_all(t, &overlay).await? {
                        overlay.insert(k, None);
                    }
                    touched.push(t);
                }
                MigrationStep::RenameTable { from, to } => {
                    for (k, v) in self.scan_all(from, &overlay).await? {
                        let user_key = k[from.len() + 1..].to_vec();
                        overlay.insert(k, None);
                        overlay.insert(raw_key(to, &user_key), Some(v));
                    }
                    touched.extend([from, to]);
                }
                MigrationStep::Rewrite { table, f } => {
                    // Two passes: compute every new entry from the old table, then replace the
                    // table, so a new key equal to a not-yet-rewritten old key loses nothing.
                    let old = self.scan_all(table, &overlay).await?;
                    let mut new_entries = std::collections::BTreeMap::new();
                    for (k, v) in &old {
                        if let Some((nk, nv)) = f(&k[table.len() + 1..], v) {
                            check_sizes(&nk, &nv)?;
                            if new_entries.insert(raw_key(table, &nk), nv).is_some() {
                                return Err(KvError::InvalidSchema(format!(
                                    "migration to version {}: rewrite of {table} maps two entries to one key",
                                    m.to_version
                                )));
                            }
                        }
                    }
                    for (k, _) in old {
                        overlay.insert(k, None);
                    }
                    for (k, v) in new_entries {
                        overlay.insert(k, Some(v));
                    }
                    touched.push(table);
                }
            }
        }
        let mut ops: Vec<RawOp> = overlay
            .iter()
            .map(|(k, v)| match v {
                Some(v) => RawOp::Put(k.clone(), v.clone()),
                None => RawOp::Delete(k.clone()),
            })
            .collect();
        // Recompute the statistics of every touched table from the result.
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            let mut s = TableStats::default();
            for (k, v) in self.scan_all(t, &overlay).await? {
                s.entries += 1;
                s.bytes += entry_bytes(k.len() - t.len() - 1, v.len());
            }
            ops.push(RawOp::Put(
                raw_key(STATS_TABLE, t.as_bytes()),
                encode_stats(s),
            ));
        }
        ops.push(RawOp::Put(
            raw_key(META_TABLE, SCHEMA_VERSION_KEY),
            m.to_version.to_le_bytes().to_vec(),
        ));
        self.backend.apply(ops).await?;
        self.version = m.to_version;
        Ok(())
    }

    /// Every entry of `table` (raw keys) as the backend holds it with `overlay` applied.
    async fn scan_all(
        &self,
        table: &str,
        overlay: &std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        let (start, _, end, _) = raw_bounds(table, &KeyRange::all());
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            std::collections::BTreeMap::new();
        let mut from = start.clone();
        let mut exclusive = false;
        loop {
            let page = self
                .backend
                .range(
                    &from,
                    exclusive,
                    &end,
                    false,
                    Direction::Forward,
                    MIGRATION_PAGE,
                )
                .await?;
            let done = page.len() < MIGRATION_PAGE;
            if let Some((last, _)) = page.last() {
                from.clone_from(last);
                exclusive = true;
            }
            merged.extend(page);
            if done {
                break;
            }
        }
        for (k, v) in overlay.range(start..end) {
            match v {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
}

fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), KvError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// A shared store is a store: one opened store can serve a node (`Arc<dyn KvStore>`) and a
/// [`crate::keystore::PassphraseStorage`] at once. Every call goes to the shared store
/// (`close` through one handle closes it for all).
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<S: KvStore + ?Sized> KvStore for std::sync::Arc<S> {
    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(table, key).await
    }

    async fn range(
        &self,
        table: &str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        (**self).range(table, range, direction, limit).await
    }

    async fn apply(&self, batch: Batch) -> Result<(), KvError> {
        (**self).apply(batch).await
    }

    async fn stats(&self, table: &str) -> Result<TableStats, KvError> {
        (**self).stats(table).await
    }

    fn schema_version(&self) -> u32 {
        (**self).schema_version()
    }

    async fn close(&self) -> Result<(), KvError> {
        (**self).close().await
    }

    async fn sync(&self) -> Result<(), KvError> {
        (**self).sync().await
    }

    async fn put(&self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        (**self).put(table, key, value).await
    }

    async fn delete(&self, table: &'static str, key: &[u8]) -> Result<(), KvError> {
        (**self).delete(table, key).await
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<B: KvBackend> KvStore for Store<B> {
    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.check_open()?;
        let table = self.declared(table)?;
        if key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        self.backend.get(&raw_key(table, key)).await
    }

    async fn range(
        &self,
        table: &str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.check_open()?;
        let table = self.declared(table)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (start, start_exclusive, end, end_inclusive) = raw_bounds(table, &range);
        if selects_nothing(&start, start_exclusive, &end, end_inclusive) {
            return Ok(Vec::new());
        }
        let strip = table.len() + 1;
        let mut rows = self
            .backend
            .range(
                &start,
                start_exclusive,
                &end,
                end_inclusive,
                direction,
                limit,
            )
            .await?;
        for (k, _) in &mut rows {
            k.drain(..strip);
        }
        Ok(rows)
    }

    async fn apply(&self, batch: Batch) -> Result<(), KvError> {
        self.check_open()?;
        let commit = batch.commit();
        if batch.len() > MAX_BATCH_OPS {
            return Err(KvError::BatchTooLarge {
                len: batch.len(),
                max: MAX_BATCH_OPS,
            });
        }
        // Validate everything before touching the backend: a bad op fails the whole batch.
        for op in batch.ops() {
            match op {
                BatchOp::Put { table, key, value } => {
                    self.declared(table)?;
                    check_sizes(key, value)?;
                }
                BatchOp::Delete { table, key } => {
                    self.declared(table)?;
                    check_sizes(key, &[])?;
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut state = self.writer.lock().await;
        // close() may have run while this batch waited for the lock.
        self.check_open()?;
        let mut new_stats = self.fresh_stats(&mut state).await?.clone();
        let ops_in: Vec<(&'static str, Vec<u8>, Vec<u8>, Option<Vec<u8>>)> = batch
            .ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { table, key, value } => {
                    (table, raw_key(table, &key), key, Some(value))
                }
                BatchOp::Delete { table, key } => (table, raw_key(table, &key), key, None),
            })
            .collect();
        // Sizes of the touched keys before the batch (one backend read for all of them), then
        // as the batch goes, to account overwrites and deletes exactly.
        let mut distinct: Vec<Vec<u8>> = ops_in.iter().map(|(_, raw, _, _)| raw.clone()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let lens = self.backend.value_lens(&distinct).await?;
        let mut current: HashMap<Vec<u8>, Option<usize>> = distinct.into_iter().zip(lens).collect();
        let mut ops = Vec::with_capacity(ops_in.len() + 4);
        let mut touched: Vec<&'static str> = Vec::new();
        for (table, raw, key, value) in ops_in {
            let before = current.get(&raw).copied().flatten();
            let s = new_stats.entry(table).or_default();
            if let Some(old) = before {
                s.entries = s.entries.checked_sub(1).ok_or_else(|| {
                    KvError::Corrupt(format!("entry count of {table} below zero"))
                })?;
                s.bytes = s
                    .bytes
                    .checked_sub(entry_bytes(key.len(), old))
                    .ok_or_else(|| KvError::Corrupt(format!("byte count of {table} below zero")))?;
            }
            let after = value.as_ref().map(Vec::len);
            if let Some(new) = after {
                s.entries += 1;
                s.bytes += entry_bytes(key.len(), new);
            }
            current.insert(raw.clone(), after);
            ops.push(match value {
                Some(v) => RawOp::Put(raw, v),
                None => RawOp::Delete(raw),
            });
            if !touched.contains(&table) {
                touched.push(table);
            }
        }
        for t in touched {
            let s = new_stats.get(t).copied().unwrap_or_default();
            ops.push(RawOp::Put(
                raw_key(STATS_TABLE, t.as_bytes()),
                encode_stats(s),
            ));
        }
        // If this future is dropped or the backend fails mid-commit, the batch may or may not
        // be on disk: mark the copy dirty until the outcome is known.
        state.dirty = true;
        self.backend.apply_with(ops, commit).await?;
        state.stats = new_stats;
        state.dirty = false;
        Ok(())
    }

    async fn stats(&self, table: &str) -> Result<TableStats, KvError> {
        self.check_open()?;
        let table = self.declared(table)?;
        let mut state = self.writer.lock().await;
        Ok(self
            .fresh_stats(&mut state)
            .await?
            .get(table)
            .copied()
            .unwrap_or_default())
    }

    fn schema_version(&self) -> u32 {
        self.version
    }

    async fn close(&self) -> Result<(), KvError> {
        // Wait for a batch in flight, then refuse new work.
        let _guard = self.writer.lock().await;
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        self.backend.close().await
    }

    async fn sync(&self) -> Result<(), KvError> {
        self.check_open()?;
        let _guard = self.writer.lock().await;
        self.backend.sync().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_and_prefix_ranges() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
        assert_eq!(KeyRange::prefix(&[0xff]).end, Bound::Unbounded);
    }

    #[test]
    fn table_prefixes_never_overlap() {
        // "a" || "b..." must not fall inside table "ab": the length byte separates them.
        let (s, _, e, _) = raw_bounds("ab", &KeyRange::all());
        let k = raw_key("a", b"b-key");
        assert!(!(k >= s && k < e));
    }

    #[test]
    fn schema_validation() {
        const M2: Migration = Migration {
            to_version: 2,
            description: "",
            steps: &[],
        };
        const M3: Migration = Migration {
            to_version: 3,
            description: "",
            steps: &[],
        };
        const BAD_STEP: Migration = Migration {
            to_version: 2,
            description: "",
            steps: &[MigrationStep::DropTable("__stats")],
        };
        let ok = Schema {
            version: 3,
            tables: &["a", "b/c"],
            migrations: &[M2, M3],
        };
        assert!(ok.validate().is_ok());
        let gap = Schema {
            version: 3,
            tables: &["a"],
            migrations: &[M3],
        };
        assert!(gap.validate().is_err());
        // Version 1 with a migration would migrate stores past the schema and brick them.
        let ahead = Schema {
            version: 1,
            tables: &["a"],
            migrations: &[M2],
        };
        assert!(ahead.validate().is_err());
        assert!(
            Schema {
                version: 2,
                tables: &["a"],
                migrations: &[BAD_STEP]
            }
            .validate()
            .is_err()
        );
        let short = Schema {
            version: 3,
            tables: &["a"],
            migrations: &[M2],
        };
        assert!(short.validate().is_err());
        for bad in ["", "__meta", "Upper", "with space", &"x".repeat(65)] {
            let tables: &'static [&'static str] = Box::leak(
                vec![Box::leak(bad.to_string().into_boxed_str()) as &str].into_boxed_slice(),
            );
            assert!(
                Schema {
                    version: 1,
                    tables,
                    migrations: &[]
                }
                .validate()
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Schema {
                version: 0,
                tables: &[],
                migrations: &[]
            }
            .validate()
            .is_err()
        );
    }
}
