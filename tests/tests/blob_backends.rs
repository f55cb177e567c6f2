//! The blob store conformance suite on redb and SQLite, on real files in a temporary
//! directory (the memory backend runs it in `mesh-blob`, IndexedDB in headless Chromium).

mod redb {
    mesh_blob::blob_conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        mesh_store_redb::conformance::Factory::new()
    );
}

mod sqlite {
    mesh_blob::blob_conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        mesh_store_sqlite::conformance::Factory::new()
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
