//! The committed libsodium-compatible test vectors hold for this implementation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure
#![cfg(not(target_arch = "wasm32"))]

mod common;

#[test]
fn committed_vectors_hold() {
    let n = common::check_all();
    assert!(n >= 20, "only {n} vectors checked");
}
