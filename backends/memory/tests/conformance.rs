//! The KvStore conformance suite on the memory backend.

#![cfg(not(target_arch = "wasm32"))]

mesh_platform::kv_conformance_tests!(
    #[tokio::test]
    mesh_store_memory::conformance::Factory::default()
);
