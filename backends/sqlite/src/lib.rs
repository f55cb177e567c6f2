//! [`KvBackend`] over SQLite through [sqlx](https://docs.rs/sqlx): the mobile default.
//!
//! One table `mesh_kv(k BLOB NOT NULL UNIQUE, v BLOB NOT NULL)` holds the flat keyspace; its
//! unique index on `k` orders it (SQLite compares BLOBs with `memcmp`, shorter first on a tie:
//! the order the trait requires). A rowid table rather than `WITHOUT ROWID`, because the latter
//! spills every value over ~1 KB into overflow pages (4.5x file size for 1 KiB values, measured
//! in `docs/STORAGE.md`).
//! The database runs in WAL mode, so readers proceed while a batch commits; each
//! [`KvBackend::apply`] is one transaction. `synchronous = FULL` by default, so an acknowledged
//! batch survives power loss; [`Commit::Fast`] selects `NORMAL` (survives a process crash, may
//! lose the last batches on power loss). Queries are runtime-checked (no database needed at
//! build time). SQLite itself is compiled in (bundled).

#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use mesh_platform::kv::{Direction, KvBackend, KvError, RawOp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// How a commit reaches the disk: `Durable` is `synchronous = FULL` (durable across power
/// loss); `Fast` is `synchronous = NORMAL` (durable across a process crash; the last commits may
/// be lost on power loss).
pub use mesh_platform::kv::Commit;

/// Options for [`SqliteBackend::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Connections in the pool (readers run in parallel; writes are serialised by the store).
    pub max_connections: u32,
    /// Commit durability.
    pub commit: Commit,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_connections: 4,
            commit: Commit::Durable,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// SQLite backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
}

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Backend {
        backend: "sqlite",
        message: e.to_string(),
    }
}

impl SqliteBackend {
    /// Opens (or creates) the database file at `path` with default options.
    ///
    /// # Errors
    /// A backend error if the file cannot be opened or initialised.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the database file at `path`.
    ///
    /// # Errors
    /// A backend error if the file cannot be opened or initialised.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, KvError> {
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(err)?
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.commit {
                Commit::Durable => SqliteSynchronous::Full,
                Commit::Fast => SqliteSynchronous::Normal,
            })
            .busy_timeout(options.busy_timeout)
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(err)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS mesh_kv (k BLOB NOT NULL UNIQUE, v BLOB NOT NULL)")
            .execute(&pool)
            .await
            .map_err(err)?;
        Ok(Self { pool })
    }

    /// The pool, for diagnostics.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The SELECT for a range: operators and order picked from fixed strings (no user text).
fn range_sql(start_exclusive: bool, end_inclusive: bool, direction: Direction) -> &'static str {
    match (start_exclusive, end_inclusive, direction) {
        (false, false, Direction::Forward) => {
            "SELECT k, v FROM mesh_kv WHERE k >= ?1 AND k < ?2 ORDER BY k ASC LIMIT ?3"
        }
        (false, true, Direction::Forward) => {
            "SELECT k, v FROM mesh_kv WHERE k >= ?1 AND k <= ?2 ORDER BY k ASC LIMIT ?3"
        }
        (true, false, Direction::Forward) => {
            "SELECT k, v FROM mesh_kv WHERE k > ?1 AND k < ?2 ORDER BY k ASC LIMIT ?3"
        }
        (true, true, Direction::Forward) => {
            "SELECT k, v FROM mesh_kv WHERE k > ?1 AND k <= ?2 ORDER BY k ASC LIMIT ?3"
        }
        (false, false, Direction::Reverse) => {
            "SELECT k, v FROM mesh_kv WHERE k >= ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3"
        }
        (false, true, Direction::Reverse) => {
            "SELECT k, v FROM mesh_kv WHERE k >= ?1 AND k <= ?2 ORDER BY k DESC LIMIT ?3"
        }
        (true, false, Direction::Reverse) => {
            "SELECT k, v FROM mesh_kv WHERE k > ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3"
        }
        (true, true, Direction::Reverse) => {
            "SELECT k, v FROM mesh_kv WHERE k > ?1 AND k <= ?2 ORDER BY k DESC LIMIT ?3"
        }
    }
}

#[async_trait]
impl KvBackend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let row = sqlx::query("SELECT v FROM mesh_kv WHERE k = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(err))
            .transpose()
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(range_sql(start_exclusive, end_inclusive, direction))
            .bind(start)
            .bind(end)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get::<Vec<u8>, _>(0).map_err(err)?,
                    r.try_get::<Vec<u8>, _>(1).map_err(err)?,
                ))
            })
            .collect()
    }

    async fn value_lens(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<usize>>, KvError> {
        // One read transaction for all keys, so the lengths form one snapshot.
        let mut conn = self.pool.begin().await.map_err(err)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let row = sqlx::query("SELECT length(v) FROM mesh_kv WHERE k = ?1")
                .bind(k.as_slice())
                .fetch_optional(&mut *conn)
                .await
                .map_err(err)?;
            out.push(
                row.map(|r| r.try_get::<i64, _>(0).map_err(err))
                    .transpose()?
                    .map(|n| usize::try_from(n).unwrap_or(0)),
            );
        }
        conn.rollback().await.map_err(err)?;
        Ok(out)
    }

    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError> {
        // Dropping the transaction without commit rolls it back: an error applies nothing.
        let mut tx = self.pool.begin().await.map_err(err)?;
        for op in &ops {
            match op {
                RawOp::Put(k, v) => {
                    sqlx::query("INSERT INTO mesh_kv (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v")
                        .bind(k.as_slice())
                        .bind(v.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                RawOp::Delete(k) => {
                    sqlx::query("DELETE FROM mesh_kv WHERE k = ?1")
                        .bind(k.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                RawOp::DeleteRange(lo, hi) => {
                    sqlx::query("DELETE FROM mesh_kv WHERE k >= ?1 AND k < ?2")
                        .bind(lo.as_slice())
                        .bind(hi.as_slice())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
            }
        }
        tx.commit().await.map_err(err)
    }

    async fn barrier(&self) -> Result<(), KvError> {
        // BEGIN IMMEDIATE takes SQLite's write lock, so it waits (up to the busy timeout) for a
        // commit still in flight on another connection.
        let mut conn = self.pool.acquire().await.map_err(err)?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn close(&self) -> Result<(), KvError> {
        self.pool.close().await;
        Ok(())
    }
}

/// A `StoreFactory` of sqlite stores in a temporary directory (removed with the factory), for
/// the conformance suites (`mesh-platform`'s and the blob store's).
#[cfg(feature = "conformance")]
pub mod conformance {
    use async_trait::async_trait;
    use mesh_platform::conformance::StoreFactory;
    use mesh_platform::kv::{KvError, Schema, Store};

    use super::SqliteBackend;

    /// sqlite files in one temporary directory, by name.
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
        type Store = Store<SqliteBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            let backend =
                SqliteBackend::open(self.dir.path().join(format!("{name}.sqlite"))).await?;
            Store::open(backend, schema).await
        }
    }
}
