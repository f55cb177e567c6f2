//! The KvStore conformance suite on IndexedDB, in headless Chromium
//! (`cargo xtask test-wasm`).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use mesh_store_indexeddb::conformance::Factory;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

mesh_platform::kv_conformance_tests!(
    #[wasm_bindgen_test]
    Factory::new("mesh-test")
);
