//! The KvStore conformance suite on redb, on real files in a temporary directory.

mesh_platform::kv_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    mesh_store_redb::conformance::Factory::new()
);
