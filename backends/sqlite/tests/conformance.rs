//! The KvStore conformance suite on SQLite, on real files in a temporary directory.

#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use async_trait::async_trait;
use mesh_platform::conformance::StoreFactory;
use mesh_platform::kv::{KvError, Schema, Store};
use mesh_store_sqlite::SqliteBackend;

struct Factory {
    dir: tempfile::TempDir,
}

impl Factory {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

#[async_trait(?Send)]
impl StoreFactory for Factory {
    type Store = Store<SqliteBackend>;

    async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
        let backend = SqliteBackend::open(self.dir.path().join(format!("{name}.sqlite"))).await?;
        Store::open(backend, schema).await
    }
}

mesh_platform::kv_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    Factory::new()
);
