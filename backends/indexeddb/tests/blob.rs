//! The blob store conformance suite on IndexedDB, in headless Chromium
//! (`cargo xtask test-wasm`).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use async_trait::async_trait;
use mesh_platform::conformance::StoreFactory;
use mesh_platform::kv::{KvError, Schema, Store};
use mesh_store_indexeddb::IndexedDbBackend;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// Database names are unique per factory, so runs never see each other's data.
struct Factory {
    prefix: String,
}

impl Factory {
    fn new() -> Self {
        Self {
            prefix: format!("mesh-blob-test-{}", js_sys::Math::random().to_bits()),
        }
    }
}

#[async_trait(?Send)]
impl StoreFactory for Factory {
    type Store = Store<IndexedDbBackend>;

    async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
        Store::open(
            IndexedDbBackend::open(&format!("{}-{name}", self.prefix)).await?,
            schema,
        )
        .await
    }
}

mesh_blob::blob_conformance_tests!(
    #[wasm_bindgen_test]
    Factory::new()
);
