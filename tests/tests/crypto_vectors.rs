//! Generates the mesh-crypto test vectors from fixed seeds and checks that the committed file
//! (`crates/mesh-crypto/vectors/crypto-v1.json`) is exactly what this code produces, so the
//! vectors that PyNaCl checks in CI never drift from the implementation.
//!
//! After an intentional format change: `MESH_BLESS_VECTORS=1 cargo test -p mesh-tests --test
//! crypto_vectors` rewrites the file (then bump the format version and say so in PROTOCOL.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use mesh_crypto::envelope::{self, seal_deterministic};
use mesh_crypto::hash::{blake2b_256, domain_hash};
use mesh_crypto::{Identity, Signed, SignedPayload, UnixMillis, safety_number};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/mesh-crypto/vectors/crypto-v1.json"
);

use mesh_tests::VectorNote;

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn seeds() -> Vec<[u8; 32]> {
    let mut counting = [0u8; 32];
    for (i, b) in counting.iter_mut().enumerate() {
        *b = u8::try_from(i).unwrap();
    }
    vec![
        counting,
        [0x42; 32],
        blake2b_256(b"mesh vector identity 3").0,
    ]
}

fn generate() -> Value {
    let seeds = seeds();
    let ids: Vec<Identity> = seeds.iter().map(Identity::from_seed).collect();
    let identities: Vec<Value> = seeds
        .iter()
        .zip(&ids)
        .map(|(seed, id)| {
            let p = id.peer_id();
            json!({
                "seed": hex(seed),
                "ed25519_public": hex(p.as_bytes()),
                "x25519_public": hex(&p.encryption_key().0),
                "peer_id": p.to_string(),
                "dht_key": p.dht_key().to_hex(),
                "fingerprint": p.fingerprint(),
            })
        })
        .collect();
    let hash_inputs: [&[u8]; 3] = [b"", b"abc", &[0xffu8; 200]];
    let hashes: Vec<Value> = hash_inputs
        .iter()
        .map(|i| json!({"input": hex(i), "blake2b_256": blake2b_256(i).to_hex()}))
        .collect();
    let domain_cases: [(&str, &[u8]); 3] = [
        ("mesh/envelope/v1", b""),
        ("mesh/dht-record/v1", b"record"),
        ("a", b"bc"),
    ];
    let domain_hashes: Vec<Value> = domain_cases
        .iter()
        .map(|(d, m)| json!({"domain": d, "message": hex(m), "digest": domain_hash(d, &[m]).to_hex()}))
        .collect();
    let sig_cases: [(usize, &str, &[u8]); 3] = [
        (0, "mesh/test/v1", b""),
        (1, "mesh/test/v1", b"hello"),
        (2, "mesh/other/v1", b"hello"),
    ];
    let signatures: Vec<Value> = sig_cases
        .iter()
        .map(|(i, d, m)| {
            json!({"signer": i, "domain": d, "message": hex(m), "signature": hex(&ids[*i].sign(d, m).0)})
        })
        .collect();
    let safety_numbers: Vec<Value> = [(0usize, 1usize), (1, 2), (0, 2)]
        .iter()
        .map(|(a, b)| {
            json!({"a": a, "b": b, "digits": safety_number(&ids[*a].peer_id(), &ids[*b].peer_id()).digits()})
        })
        .collect();

    json!({
        "version": 1,
        "description": "mesh-crypto v1 test vectors; see docs/PROTOCOL.md. Identities are referred to by index.",
        "identities": identities,
        "hashes": hashes,
        "domain_hashes": domain_hashes,
        "signatures": signatures,
        "safety_numbers": safety_numbers,
        "envelopes": envelopes(&ids),
        "signed_records": signed_records(&ids),
        "invalid_envelopes": invalid_envelopes(&ids),
    })
}

fn envelopes(ids: &[Identity]) -> Vec<Value> {
    let env_cases: [(usize, usize, &[u8], Vec<u8>); 4] = [
        (0, 1, b"mesh/message", b"hello bob".to_vec()),
        (1, 0, b"mesh/message", Vec::new()),
        (2, 1, b"", (0..=255u8).collect()),
        (0, 2, b"mesh/recovery-share", vec![0x5a; 3000]),
    ];
    let mut envelopes = Vec::new();
    for (n, (s, r, ctx, pt)) in env_cases.iter().enumerate() {
        let eph = domain_hash("mesh/vector/ephemeral", &[&[u8::try_from(n).unwrap()]]).0;
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(
            &domain_hash("mesh/vector/nonce", &[&[u8::try_from(n).unwrap()]]).0[..24],
        );
        let env = seal_deterministic(&ids[*s], &ids[*r].peer_id(), ctx, pt, &eph, &nonce).unwrap();
        let id = envelope::open(&ids[*r], &env, ctx).unwrap().id;
        envelopes.push(json!({
            "sender": s, "recipient": r, "context": hex(ctx), "plaintext": hex(pt),
            "ephemeral_secret": hex(&eph), "nonce": hex(&nonce), "id": id.to_hex(), "envelope": hex(&env),
        }));
    }
    envelopes
}

fn signed_records(ids: &[Identity]) -> Vec<Value> {
    let t0 = 1_700_000_000_000u64;
    [(0usize, b"dht record".to_vec(), u64::MAX), (2, Vec::new(), t0 + 86_400_000)]
        .into_iter()
        .map(|(a, payload, expires)| {
            let rec = Signed::sign(&ids[a], VectorNote(payload.clone()), UnixMillis(t0), UnixMillis(expires)).unwrap();
            json!({
                "author": a, "domain": VectorNote::DOMAIN, "payload": hex(&payload),
                "created_at": t0, "expires_at": expires, "id": rec.id().to_hex(), "bytes": hex(rec.as_bytes()),
            })
        })
        .collect()
}

/// Invalid envelopes, each with the error the format requires.
fn invalid_envelopes(ids: &[Identity]) -> Vec<Value> {
    let base_eph = [7u8; 32];
    let base = seal_deterministic(
        &ids[0],
        &ids[1].peer_id(),
        b"mesh/message",
        b"tamper me",
        &base_eph,
        &[9; 24],
    )
    .unwrap();
    let mut invalid = Vec::new();
    let mut add = |description: &str, recipient: usize, ctx: &[u8], env: Vec<u8>, error: &str| {
        invalid.push(json!({"description": description, "recipient": recipient, "context": hex(ctx), "envelope": hex(&env), "error": error}));
    };
    let mut t = base.clone();
    t[0] = 2;
    add(
        "unknown version byte",
        1,
        b"mesh/message",
        t,
        "UnsupportedVersion",
    );
    add(
        "addressed to another peer",
        2,
        b"mesh/message",
        base.clone(),
        "WrongRecipient",
    );
    let mut t = base.clone();
    t[envelope::HEADER_LEN + 3] ^= 1;
    add(
        "ciphertext byte flipped",
        1,
        b"mesh/message",
        t,
        "BadSignature",
    );
    let mut t = base.clone();
    let last = t.len() - 1;
    t[last] ^= 0x40;
    add(
        "signature byte flipped",
        1,
        b"mesh/message",
        t,
        "BadSignature",
    );
    add(
        "wrong context",
        1,
        b"mesh/other",
        base.clone(),
        "DecryptionFailed",
    );
    add(
        "truncated by one byte",
        1,
        b"mesh/message",
        base[..base.len() - 1].to_vec(),
        "Truncated",
    );
    let mut t = base.clone();
    t.push(0);
    add("one trailing byte", 1, b"mesh/message", t, "TrailingBytes");
    // Re-signed by another key with its own id in the sender field: signature valid, AEAD fails.
    let mut t = base[..base.len() - 64].to_vec();
    t[1..33].copy_from_slice(ids[2].peer_id().as_bytes());
    let digest = domain_hash(envelope::ENVELOPE_DOMAIN, &[&t]);
    t.extend_from_slice(&ids[2].sign_digest(&digest).0);
    add(
        "re-signed by another sender",
        1,
        b"mesh/message",
        t,
        "DecryptionFailed",
    );

    invalid
}

#[test]
fn committed_vectors_are_current() {
    let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("MESH_BLESS_VECTORS").is_some() {
        std::fs::write(PATH, &text).unwrap();
    }
    let committed = std::fs::read_to_string(PATH).expect("vectors file");
    assert!(
        committed == text,
        "vectors differ from the code; see the module docs to regenerate"
    );
}
