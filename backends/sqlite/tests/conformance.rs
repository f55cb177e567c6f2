//! The KvStore conformance suite on SQLite, on real files in a temporary directory.

mesh_platform::kv_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    mesh_store_sqlite::conformance::Factory::new()
);
