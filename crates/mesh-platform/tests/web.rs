//! The browser runtime seam in headless Chromium (`cargo xtask test-wasm`).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::time::Duration;

use mesh_platform::runtime::{Runtime, WasmRuntime};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn wasm_runtime_sleeps_spawns_and_tells_time() {
    let rt = WasmRuntime::new();
    let t0 = rt.monotonic();
    rt.sleep(Duration::from_millis(30)).await;
    let slept = rt.monotonic().saturating_sub(t0);
    assert!(slept >= Duration::from_millis(25), "slept only {slept:?}");
    assert!(
        rt.unix_time().0 > 1_577_836_800_000,
        "wall clock before 2020"
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.spawn(Box::pin(async move {
        let _ = tx.send(7);
    }));
    assert_eq!(rx.await.ok(), Some(7));
}
