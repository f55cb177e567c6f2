//! mesh-crypto in the browser: the same vectors and behaviours, run in headless Chromium by
//! `cargo xtask test-wasm` (wasm-bindgen-test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure
#![cfg(target_arch = "wasm32")]

mod common;

use mesh_crypto::{Error, Identity, Signed, UnixMillis, envelope};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn committed_vectors_hold_in_the_browser() {
    assert!(common::check_all() >= 20);
}

#[wasm_bindgen_test]
fn fresh_identities_from_browser_randomness_round_trip() {
    let alice = Identity::generate();
    let bob = Identity::generate();
    assert_ne!(alice.peer_id(), bob.peer_id());
    let sealed = envelope::seal(&alice, &bob.peer_id(), b"web", b"hello from wasm").unwrap();
    let opened = envelope::open(&bob, &sealed, b"web").unwrap();
    assert_eq!(opened.plaintext, b"hello from wasm");
    assert_eq!(opened.sender, alice.peer_id());
    // Two seals of the same plaintext differ (fresh ephemeral key and nonce from the browser).
    let again = envelope::seal(&alice, &bob.peer_id(), b"web", b"hello from wasm").unwrap();
    assert_ne!(sealed, again);
}

#[wasm_bindgen_test]
fn tampering_and_truncation_are_refused_in_the_browser() {
    let alice = Identity::from_seed(&[5; 32]);
    let bob = Identity::from_seed(&[6; 32]);
    let sealed = envelope::seal(&alice, &bob.peer_id(), b"web", b"x").unwrap();
    for pos in 0..sealed.len() {
        let mut t = sealed.clone();
        t[pos] ^= 0x01;
        assert!(
            envelope::open(&bob, &t, b"web").is_err(),
            "flip at {pos} accepted"
        );
    }
    for len in 0..sealed.len() {
        assert!(envelope::open(&bob, &sealed[..len], b"web").is_err());
    }
    assert_eq!(
        envelope::open(&alice, &sealed, b"web"),
        Err(Error::WrongRecipient)
    );
}

#[wasm_bindgen_test]
fn signed_records_in_the_browser() {
    let author = Identity::generate();
    let t0 = UnixMillis(1_700_000_000_000);
    let rec = Signed::sign(
        &author,
        common::VectorNote(b"web".to_vec()),
        t0,
        t0.saturating_add(10),
    )
    .unwrap();
    assert!(Signed::<common::VectorNote>::decode(rec.as_bytes(), t0).is_ok());
    assert!(matches!(
        Signed::<common::VectorNote>::decode(rec.as_bytes(), t0.saturating_add(10)),
        Err(Error::Expired { .. })
    ));
}
