//! The blob store conformance suite on the memory backend (redb and SQLite run it in
//! `mesh-tests`, IndexedDB in headless Chromium).

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use mesh_platform::conformance::StoreFactory;
use mesh_platform::kv::{KvError, Schema, Store};
use mesh_store_memory::{MemoryBackend, SharedMap};

#[derive(Default)]
struct Factory {
    maps: Mutex<HashMap<String, SharedMap>>,
}

#[async_trait(?Send)]
impl StoreFactory for Factory {
    type Store = Store<MemoryBackend>;

    async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
        let map = self
            .maps
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        Store::open(MemoryBackend::with_map(map), schema).await
    }
}

mesh_blob::blob_conformance_tests!(
    #[tokio::test]
    Factory::default()
);
