//! [`KvBackend`] over [redb](https://docs.rs/redb): the native embedded default.
//!
//! One redb table holds the flat keyspace; every [`KvBackend::apply`] is one write transaction,
//! committed with `Durability::Immediate` (on disk when it returns) unless configured otherwise.
//! redb is synchronous, so its calls run on tokio's blocking pool.
//!
//! Storage amplification: redb stores a large value in a leaf of a power-of-two number of 4 KiB
//! pages, so a value just over a power of two takes twice its size (an exactly 64 KiB value takes
//! 128 KiB). Values up to `64 KiB - 128` bytes fit in 64 KiB with their key; see [`RECOMMENDED_MAX_CHUNK`] and
//! `docs/STORAGE.md` for the measurements.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mesh_platform::kv::{Direction, KvBackend, KvError, RawOp, std_bounds};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

/// The one table of the flat keyspace.
const KV: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("mesh_kv");

/// Largest value (including the store's key overhead) that fits a 64 KiB leaf without doubling:
/// the blob store's chunk size should stay at or below this.
pub const RECOMMENDED_MAX_CHUNK: usize = 64 * 1024 - 64 - 64;

/// How a commit reaches the disk: `Durable` fsyncs before `apply` returns; `Fast` makes the
/// batch visible at once and persists it with the next durable commit (the last batches can be
/// lost on a crash).
pub use mesh_platform::kv::Commit;

/// Options for [`RedbBackend::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct RedbOptions {
    /// Page cache size in bytes (default 64 MiB).
    pub cache_bytes: usize,
    /// Commit durability.
    pub commit: Commit,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            commit: Commit::Durable,
        }
    }
}

/// redb backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedbBackend {
    db: Arc<Mutex<Option<Arc<Database>>>>,
    commit: Commit,
    /// When a commit last waited for the disk: fast batches are made durable at least this
    /// often ([`FAST_DURABLE_EVERY`]) while writes go on.
    last_durable: Arc<Mutex<std::time::Instant>>,
}

/// Longest time between durable commits while [`Commit::Fast`] batches are written: what a
/// crash may lose of them while writes go on. After the last write, fast batches are only in
/// this process's memory until the next durable commit, `sync` or `close` (the gossip driver
/// syncs a second after its first write not yet made durable).
pub const FAST_DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Backend {
        backend: "redb",
        message: e.to_string(),
    }
}

/// Creates a new, empty database at `path` so that a crash at any moment leaves either no file
/// or a whole one: the database is made under a sibling name and renamed into place. redb
/// writes its header after creating the file, so a process killed in between would otherwise
/// leave a file that can never be opened ("magic number mismatch").
fn create_atomically(path: &Path) -> Result<(), KvError> {
    let mut name = path
        .file_name()
        .ok_or_else(|| err("database path has no file name"))?
        .to_os_string();
    name.push(".creating");
    let scratch = path.with_file_name(name);
    // Never renamed into place, so never a database anyone wrote to: safe to replace.
    match std::fs::remove_file(&scratch) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let db = Database::create(&scratch).map_err(err)?;
    let tx = db.begin_write().map_err(err)?;
    tx.open_table(KV).map_err(err)?;
    tx.commit().map_err(err)?;
    drop(db);
    std::fs::rename(&scratch, path).map_err(err)?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

impl RedbBackend {
    /// Opens (or creates) the database file at `path` with default options.
    ///
    /// # Errors
    /// A backend error if the file cannot be opened (for example, it is already open).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        Self::open_with(path, RedbOptions::default()).await
    }

    /// Opens (or creates) the database file at `path`.
    ///
    /// # Errors
    /// A backend error if the file cannot be opened (for example, it is already open).
    pub async fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, KvError> {
        let path = path.as_ref().to_path_buf();
        let db = tokio::task::spawn_blocking(move || -> Result<Database, KvError> {
            if !path.exists() {
                create_atomically(&path)?;
            }
            let db = Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(&path)
                .map_err(err)?;
            // Create the table so that read transactions always find it.
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(KV).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(db)
        })
        .await
        .map_err(err)??;
        Ok(Self {
            db: Arc::new(Mutex::new(Some(Arc::new(db)))),
            commit: options.commit,
            last_durable: Arc::new(Mutex::new(std::time::Instant::now())),
        })
    }

    fn db(&self) -> Result<Arc<Database>, KvError> {
        self.db.lock().map_err(err)?.clone().ok_or(KvError::Closed)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }
}

#[async_trait]
impl KvBackend for RedbBackend {
    fn name(&self) -> &'static str {
        "redb"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(KV).map_err(err)?;
            Ok(table
                .get(key.as_slice())
                .map_err(err)?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn range(
        &self,
        start: &[u8],
        start_exclusive: bool,
        end: &[u8],
        end_inclusive: bool,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(KV).map_err(err)?;
            let bounds = std_bounds(&start, start_exclusive, &end, end_inclusive);
            let range = table.range::<&[u8]>(bounds).map_err(err)?;
            let mut out = Vec::new();
            let mut push = |item: Result<
                (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, &[u8]>),
                redb::StorageError,
            >| {
                let (k, v) = item.map_err(err)?;
                out.push((k.value().to_vec(), v.value().to_vec()));
                Ok::<_, KvError>(())
            };
            match direction {
                Direction::Forward => range.take(limit).try_for_each(&mut push)?,
                Direction::Reverse => range.rev().take(limit).try_for_each(&mut push)?,
            }
            Ok(out)
        })
        .await
    }

    async fn value_lens(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<usize>>, KvError> {
        let keys = keys.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(KV).map_err(err)?;
            keys.iter()
                .map(|k| {
                    Ok(table
                        .get(k.as_slice())
                        .map_err(err)?
                        .map(|v| v.value().len()))
                })
                .collect()
        })
        .await
    }

    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError> {
        self.apply_with(ops, Commit::Durable).await
    }

    /// A [`Commit::Fast`] batch (or any batch of a backend opened with [`Commit::Fast`]) is
    /// committed with redb's `Durability::None`: no fsync; it reaches the disk with the next
    /// durable commit, or when the store is closed.
    async fn apply_with(&self, ops: Vec<RawOp>, commit: Commit) -> Result<(), KvError> {
        let commit = if self.commit == Commit::Fast {
            Commit::Fast
        } else if commit == Commit::Fast {
            // Durable now and then, so that fast batches do not pile up undurable.
            let mut last = self.last_durable.lock().map_err(err)?;
            if last.elapsed() >= FAST_DURABLE_EVERY {
                *last = std::time::Instant::now();
                Commit::Durable
            } else {
                Commit::Fast
            }
        } else {
            if let Ok(mut last) = self.last_durable.lock() {
                *last = std::time::Instant::now();
            }
            Commit::Durable
        };
        self.blocking(move |db| {
            let mut tx = db.begin_write().map_err(err)?;
            if commit == Commit::Fast {
                tx.set_durability(Durability::None).map_err(err)?;
            }
            {
                let mut table = tx.open_table(KV).map_err(err)?;
                for op in &ops {
                    match op {
                        RawOp::Put(k, v) => {
                            table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                        }
                        RawOp::Delete(k) => {
                            table.remove(k.as_slice()).map_err(err)?;
                        }
                        RawOp::DeleteRange(lo, hi) => {
                            table
                                .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)
                                .map_err(err)?;
                        }
                    }
                }
            }
            // Dropping an uncommitted transaction aborts it: an error above applies nothing.
            tx.commit().map_err(err)
        })
        .await
    }

    async fn barrier(&self) -> Result<(), KvError> {
        // redb has one writer at a time: beginning (and dropping) a write transaction waits for
        // any commit still running on the blocking pool.
        self.blocking(|db| {
            drop(db.begin_write().map_err(err)?);
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<(), KvError> {
        // Make the last commits durable (fast batches may have been written), then release
        // the file (and its lock) whatever that commit did.
        let Some(db) = self.db.lock().map_err(err)?.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
        .map_err(err)?
    }

    async fn sync(&self) -> Result<(), KvError> {
        // An empty durable commit persists every non-durable one before it.
        if let Ok(mut last) = self.last_durable.lock() {
            *last = std::time::Instant::now();
        }
        self.blocking(|db| {
            let tx = db.begin_write().map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }
}

/// A `StoreFactory` of redb stores in a temporary directory (removed with the factory), for
/// the conformance suites (`mesh-platform`'s and the blob store's).
#[cfg(feature = "conformance")]
pub mod conformance {
    use async_trait::async_trait;
    use mesh_platform::conformance::StoreFactory;
    use mesh_platform::kv::{KvError, Schema, Store};

    use super::RedbBackend;

    /// redb files in one temporary directory, by name.
    #[derive(Debug)]
    pub struct Factory {
        dir: tempfile::TempDir,
    }

    impl Factory {
        /// A factory over a new temporary directory.
        ///
        /// # Panics
        /// If no temporary directory can be made (a test environment problem).
        #[allow(clippy::expect_used)]
        pub fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("a temporary directory"),
            }
        }
    }

    impl Default for Factory {
        fn default() -> Self {
            Self::new()
        }
    }

    #[async_trait(?Send)]
    impl StoreFactory for Factory {
        type Store = Store<RedbBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            let backend = RedbBackend::open(self.dir.path().join(format!("{name}.redb"))).await?;
            Store::open(backend, schema).await
        }
    }
}
