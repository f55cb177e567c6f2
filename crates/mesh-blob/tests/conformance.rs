//! The blob store conformance suite on the memory backend (redb and SQLite run it in
//! `mesh-tests`, IndexedDB in headless Chromium).

#![cfg(not(target_arch = "wasm32"))]

mesh_blob::blob_conformance_tests!(
    #[tokio::test]
    mesh_store_memory::conformance::Factory::default()
);
