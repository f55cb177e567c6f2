//! The blob store conformance suite on redb and SQLite, on real files in a temporary
//! directory (the memory backend runs it in `mesh-blob`, IndexedDB in headless Chromium).

#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use async_trait::async_trait;
use mesh_platform::conformance::StoreFactory;
use mesh_platform::kv::{KvError, Schema, Store};

mod redb {
    use super::*;
    use mesh_store_redb::RedbBackend;

    struct Factory(tempfile::TempDir);

    #[async_trait(?Send)]
    impl StoreFactory for Factory {
        type Store = Store<RedbBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            let path = self.0.path().join(format!("{name}.redb"));
            Store::open(RedbBackend::open(path).await?, schema).await
        }
    }

    mesh_blob::blob_conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        Factory(tempfile::tempdir().unwrap())
    );
}

mod sqlite {
    use super::*;
    use mesh_store_sqlite::SqliteBackend;

    struct Factory(tempfile::TempDir);

    #[async_trait(?Send)]
    impl StoreFactory for Factory {
        type Store = Store<SqliteBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            let path = self.0.path().join(format!("{name}.sqlite"));
            Store::open(SqliteBackend::open(path).await?, schema).await
        }
    }

    mesh_blob::blob_conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        Factory(tempfile::tempdir().unwrap())
    );
}

/// The blob store's default chunk size is the one the redb storage measurements chose.
#[test]
fn default_chunk_size_is_the_measured_one() {
    assert_eq!(
        mesh_blob::store::DEFAULT_CHUNK_SIZE as usize,
        mesh_store_redb::RECOMMENDED_MAX_CHUNK
    );
}
