//! libsodium -> mesh-crypto: PyNaCl seals envelopes and signs records per `docs/PROTOCOL.md`
//! (interop/python/meshsodium.py, an implementation written from the document), and this code
//! opens and verifies them. The other direction (libsodium checking our vectors) is the
//! `interop` step of `cargo xtask ci`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::process::Command;

use mesh_crypto::hash::blake2b_256;
use mesh_crypto::{Identity, Signed, UnixMillis, envelope};
use serde_json::Value;

use mesh_tests::VectorNote;

fn unhex(v: &Value) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(v.as_str().unwrap().as_bytes())
        .unwrap()
}

#[test]
#[ignore = "needs Python with PyNaCl (MESH_PYTHON); run by `cargo xtask interop` and `cargo xtask ci`"]
fn envelopes_and_records_made_by_libsodium_open_here() {
    let python = std::env::var("MESH_PYTHON").expect("MESH_PYTHON must name a Python with PyNaCl");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../interop/python/crypto_interop.py"
    );
    let out = Command::new(python)
        .arg(script)
        .arg("produce")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    let seed: [u8; 32] = unhex(&v["recipient_seed"]).try_into().unwrap();
    let me = Identity::from_seed(&seed);
    let sender = unhex(&v["sender_public"]);
    let envelopes = v["envelopes"].as_array().unwrap();
    assert_eq!(envelopes.len(), 5);
    for e in envelopes {
        let opened = envelope::open(&me, &unhex(&e["envelope"]), &unhex(&e["context"])).unwrap();
        assert_eq!(opened.sender.as_bytes().to_vec(), sender);
        assert_eq!(
            opened.plaintext.len() as u64,
            e["plaintext_len"].as_u64().unwrap()
        );
        assert_eq!(
            blake2b_256(&opened.plaintext).to_hex(),
            e["plaintext_blake2b"].as_str().unwrap()
        );
    }
    for bad in v["invalid_envelopes"].as_array().unwrap() {
        let err =
            envelope::open(&me, &unhex(&bad["envelope"]), &unhex(&bad["context"])).unwrap_err();
        let expected = bad["error"].as_str().unwrap();
        assert!(
            format!("{err:?}").starts_with(expected),
            "{err:?} vs {expected}"
        );
    }
    for r in v["signed_records"].as_array().unwrap() {
        let created = UnixMillis(r["created_at"].as_u64().unwrap());
        let rec = Signed::<VectorNote>::decode(&unhex(&r["bytes"]), created).unwrap();
        assert_eq!(rec.author().as_bytes().to_vec(), sender);
        assert_eq!(rec.payload().0, unhex(&r["payload"]));
        assert_eq!(rec.id().to_hex(), r["id"].as_str().unwrap());
        assert_eq!(rec.expires_at().0, r["expires_at"].as_u64().unwrap());
    }
}
