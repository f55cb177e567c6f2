//! Test vectors for the mesh-platform formats (invites in all three encodings, sealed keystore
//! secrets, pin-set documents), generated from fixed inputs and kept equal to the committed
//! `crates/mesh-platform/vectors/platform-v1.json`, which libsodium (PyNaCl) checks in CI.
//! Regenerate after an intentional change with `cargo xtask vectors`.

#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use mesh_crypto::{Identity, Signed, UnixMillis};
use mesh_platform::invite::{BootstrapHint, Invite, InvitePayload};
use mesh_platform::keystore::{KdfParams, open_secret, seal_with};
use mesh_platform::pinning::{PinPolicy, PinSetPayload, sign_pin_set};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/mesh-platform/vectors/platform-v1.json"
);
const T0: UnixMillis = UnixMillis(1_700_000_000_000);

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn generate() -> Value {
    let inviter = Identity::from_seed(&[0x11; 32]);
    let peer = Identity::from_seed(&[0x22; 32]).peer_id();
    let mut invite_vectors = Vec::new();
    for (name, hints, ttl) in [
        (
            "Alice",
            vec![
                BootstrapHint::Signaling("https://meshd.example.org/signal".into()),
                BootstrapHint::Peer(peer),
            ],
            7 * 86_400_000u64,
        ),
        ("", vec![], 60_000),
        (
            "Zoë 🚀",
            vec![BootstrapHint::Signaling(format!(
                "https://{}.example.org/s",
                "x".repeat(200)
            ))],
            86_400_000,
        ),
    ] {
        let payload = InvitePayload {
            display_name: name.into(),
            nonce: [0x5a; 16],
            bootstrap: hints,
        };
        let signed = Signed::sign(&inviter, payload, T0, T0.saturating_add(ttl)).unwrap();
        let invite = Invite::verify(signed.as_bytes(), T0).unwrap();
        invite_vectors.push(json!({
            "inviter_seed": hex(&[0x11; 32]),
            "display_name": name,
            "created_at": T0.0,
            "expires_at": T0.0 + ttl,
            "bytes": hex(invite.as_bytes()),
            "link": invite.to_link(),
            "ndef": hex(&invite.to_ndef()),
        }));
    }
    let mut keystore = Vec::new();
    for (secret, pass) in [
        (vec![0x42u8; 32], "correct horse battery staple"),
        (b"short".to_vec(), ""),
    ] {
        let params = KdfParams::INSECURE_FOR_TESTS;
        let sealed = seal_with(&secret, pass.as_bytes(), params, &[7; 16], &[9; 24]).unwrap();
        assert_eq!(
            open_secret(&sealed, pass.as_bytes()).unwrap().as_slice(),
            secret.as_slice()
        );
        keystore.push(json!({
            "passphrase": pass, "secret": hex(&secret), "opslimit": params.opslimit, "memlimit": params.memlimit,
            "salt": hex(&[7; 16]), "nonce": hex(&[9; 24]), "sealed": hex(&sealed),
        }));
    }
    let signer = Identity::from_seed(&[0x33; 32]);
    let set = PinSetPayload {
        sequence: 7,
        hosts: vec![
            "bootstrap.mesh.example.org".into(),
            "*.signal.example.org".into(),
        ],
        pins: vec![[0xaa; 32], [0xbb; 32]],
    };
    let doc = sign_pin_set(&signer, set, T0, T0.saturating_add(90 * 86_400_000)).unwrap();
    let policy = PinPolicy::new(signer.peer_id());
    assert_eq!(policy.update(&doc, T0), Ok(7));
    json!({
        "version": 1,
        "description": "mesh-platform v1 vectors (invites, keystore, pin sets); see docs/PROTOCOL.md",
        "invites": invite_vectors,
        "keystore": keystore,
        "pin_sets": [{
            "signer_seed": hex(&[0x33; 32]), "sequence": 7,
            "hosts": ["bootstrap.mesh.example.org", "*.signal.example.org"],
            "pins": [hex(&[0xaa; 32]), hex(&[0xbb; 32])],
            "created_at": T0.0, "expires_at": T0.0 + 90 * 86_400_000, "bytes": hex(&doc),
        }],
    })
}

#[test]
fn committed_platform_vectors_are_current() {
    let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("MESH_BLESS_VECTORS").is_some() {
        std::fs::write(PATH, &text).unwrap();
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        committed == text,
        "platform vectors differ from the code; run `cargo xtask vectors`"
    );
}
