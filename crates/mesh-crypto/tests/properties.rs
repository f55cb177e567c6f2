//! Property and exhaustive tests of envelopes and signed records: round trips, every tamper
//! position, truncation, oversized and arbitrary input, replay ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure
#![cfg(not(target_arch = "wasm32"))]

use mesh_crypto::envelope::{self, ENVELOPE_OVERHEAD, HEADER_LEN, MAX_PLAINTEXT_LEN};
use mesh_crypto::{Error, Identity, Signed, SignedPayload, UnixMillis};
use proptest::prelude::*;

fn alice() -> Identity {
    Identity::from_seed(&[0xa1; 32])
}
fn bob() -> Identity {
    Identity::from_seed(&[0xb0; 32])
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl SignedPayload for Blob {
    const DOMAIN: &'static str = "mesh/test-blob/v1";
    const MAX_LEN: usize = 1024;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.first() == Some(&0xff) {
            return Err(Error::Malformed("test payload may not start with 0xff"));
        }
        Ok(Self(bytes.to_vec()))
    }
}

const T0: UnixMillis = UnixMillis(1_700_000_000_000);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn envelope_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..4096),
                            context in proptest::collection::vec(any::<u8>(), 0..=255)) {
        let sealed = envelope::seal(&alice(), &bob().peer_id(), &context, &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), plaintext.len() + ENVELOPE_OVERHEAD);
        let opened = envelope::open(&bob(), &sealed, &context).unwrap();
        prop_assert_eq!(opened.plaintext, plaintext);
        prop_assert_eq!(opened.sender, alice().peer_id());
    }

    #[test]
    fn random_bit_flips_are_refused(plaintext in proptest::collection::vec(any::<u8>(), 0..512),
                                    pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", &plaintext).unwrap();
        let mut t = sealed.clone();
        let at = pos.index(t.len());
        t[at] ^= 1 << bit;
        prop_assert!(envelope::open(&bob(), &t, b"ctx").is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = envelope::open(&bob(), &bytes, b"ctx");
        let _ = envelope::verify(&bytes, MAX_PLAINTEXT_LEN);
        let _ = Signed::<Blob>::decode(&bytes, T0);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_prefix_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(alice().peer_id().as_bytes());
        bytes.extend_from_slice(bob().peer_id().as_bytes());
        bytes.extend_from_slice(&tail);
        prop_assert!(envelope::open(&bob(), &bytes, b"ctx").is_err());
    }

    #[test]
    fn signed_records_round_trip(payload in proptest::collection::vec(0u8..0xff, 0..1024),
                                 ttl in 1u64..u64::from(u32::MAX)) {
        let rec = Signed::sign(&alice(), Blob(payload.clone()), T0, T0.saturating_add(ttl)).unwrap();
        let back = Signed::<Blob>::decode(rec.as_bytes(), T0).unwrap();
        prop_assert_eq!(&back.payload().0, &payload);
        prop_assert_eq!(back.id(), rec.id());
    }
}

#[test]
fn every_single_byte_tamper_of_an_envelope_is_refused() {
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"attack at dawn").unwrap();
    for pos in 0..sealed.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = sealed.clone();
            t[pos] ^= mask;
            let err = envelope::open(&bob(), &t, b"ctx").expect_err("tampered envelope opened");
            // Each region fails with the check that guards it.
            match pos {
                0 => assert!(matches!(err, Error::UnsupportedVersion { .. })),
                33..=64 => assert!(matches!(err, Error::WrongRecipient)),
                121..=124 => assert!(
                    matches!(
                        err,
                        Error::Truncated { .. }
                            | Error::TrailingBytes { .. }
                            | Error::TooLarge { .. }
                            | Error::Malformed(_)
                    ),
                    "{pos}: {err:?}"
                ),
                _ => assert!(
                    matches!(err, Error::BadSignature | Error::InvalidPublicKey),
                    "{pos}: {err:?}"
                ),
            }
        }
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"hello").unwrap();
    for len in 0..sealed.len() {
        assert!(
            envelope::open(&bob(), &sealed[..len], b"ctx").is_err(),
            "truncated to {len}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        envelope::open(&bob(), &longer, b"ctx"),
        Err(Error::TrailingBytes { trailing: 1 })
    );
}

#[test]
fn resigned_envelope_is_not_attributed_to_the_new_signer() {
    // Mallory takes Alice's envelope, puts her own key in the sender field and signs it. The
    // sender field is authenticated by the AEAD, so Bob refuses it rather than believing Mallory.
    let mallory = Identity::from_seed(&[0x66; 32]);
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"from alice").unwrap();
    let mut forged = sealed[..sealed.len() - 64].to_vec();
    forged[1..33].copy_from_slice(mallory.peer_id().as_bytes());
    let id = mesh_crypto::hash::domain_hash(envelope::ENVELOPE_DOMAIN, &[&forged]);
    forged.extend_from_slice(&mallory.sign_digest(&id).0);
    assert!(
        envelope::verify(&forged, MAX_PLAINTEXT_LEN).is_ok(),
        "signature itself is valid"
    );
    assert_eq!(
        envelope::open(&bob(), &forged, b"ctx"),
        Err(Error::DecryptionFailed)
    );
}

#[test]
fn wrong_key_fails_to_decrypt_even_with_matching_recipient_field() {
    // An envelope sealed to Bob's id but opened by someone claiming Bob's id cannot happen
    // (open checks the recipient first); a wrong context is the remaining way to hold the wrong
    // key, and it fails authentication.
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx-a", b"m").unwrap();
    assert_eq!(
        envelope::open(&bob(), &sealed, b"ctx-b"),
        Err(Error::DecryptionFailed)
    );
    let carol = Identity::from_seed(&[0xc0; 32]);
    assert_eq!(
        envelope::open(&carol, &sealed, b"ctx-a"),
        Err(Error::WrongRecipient)
    );
}

#[test]
fn oversized_plaintext_is_refused_before_allocation() {
    // Declared length of 16 MiB + 1 byte of plaintext, without the bytes: refused by length.
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"").unwrap();
    let mut header = sealed[..HEADER_LEN].to_vec();
    let declared = u32::try_from(MAX_PLAINTEXT_LEN + 16 + 1).unwrap();
    header[121..125].copy_from_slice(&declared.to_le_bytes());
    assert!(matches!(
        envelope::open(&bob(), &header, b"ctx"),
        Err(Error::TooLarge { len, max, .. }) if len == MAX_PLAINTEXT_LEN + 1 && max == MAX_PLAINTEXT_LEN
    ));
    // Exactly at the limit: accepted by the length check (then truncated here).
    let declared = u32::try_from(MAX_PLAINTEXT_LEN + 16).unwrap();
    header[121..125].copy_from_slice(&declared.to_le_bytes());
    assert!(matches!(
        envelope::open(&bob(), &header, b"ctx"),
        Err(Error::Truncated { .. })
    ));
    // A declared length shorter than the tag.
    header[121..125].copy_from_slice(&15u32.to_le_bytes());
    assert!(matches!(
        envelope::open(&bob(), &header, b"ctx"),
        Err(Error::Malformed(_))
    ));
    // Sealing over the limit is refused too.
    let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    assert!(matches!(
        envelope::seal(&alice(), &bob().peer_id(), b"ctx", &big),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn large_envelope_round_trips_at_the_limit() {
    let big = vec![0x5au8; MAX_PLAINTEXT_LEN];
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", &big).unwrap();
    assert_eq!(
        envelope::open(&bob(), &sealed, b"ctx")
            .unwrap()
            .plaintext
            .len(),
        MAX_PLAINTEXT_LEN
    );
}

#[test]
fn replayed_envelope_is_detectable_by_id() {
    let sealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"pay 10").unwrap();
    let first = envelope::open(&bob(), &sealed, b"ctx").unwrap();
    let replay = envelope::open(&bob(), &sealed.clone(), b"ctx").unwrap();
    assert_eq!(first.id, replay.id, "a replay carries the same id");
    let resealed = envelope::seal(&alice(), &bob().peer_id(), b"ctx", b"pay 10").unwrap();
    assert_ne!(
        envelope::open(&bob(), &resealed, b"ctx").unwrap().id,
        first.id
    );
    // A relay sees the same id without opening it.
    assert_eq!(
        envelope::verify(&sealed, MAX_PLAINTEXT_LEN).unwrap().id,
        first.id
    );
}

#[test]
fn every_single_byte_tamper_of_a_signed_record_is_refused() {
    let rec = Signed::sign(
        &alice(),
        Blob(b"record".to_vec()),
        T0,
        T0.saturating_add(60_000),
    )
    .unwrap();
    let bytes = rec.as_bytes();
    for pos in 0..bytes.len() {
        let mut t = bytes.to_vec();
        t[pos] ^= 0x01;
        assert!(
            Signed::<Blob>::decode(&t, T0).is_err(),
            "flip at {pos} accepted"
        );
    }
    for len in 0..bytes.len() {
        assert!(Signed::<Blob>::decode(&bytes[..len], T0).is_err());
    }
}

#[test]
fn signed_payload_decode_errors_surface_after_verification() {
    let rec = Signed::sign(&alice(), Blob(vec![0xff]), T0, UnixMillis::NEVER).unwrap();
    assert_eq!(
        Signed::<Blob>::decode(rec.as_bytes(), T0),
        Err(Error::Malformed("test payload may not start with 0xff"))
    );
}

#[test]
fn signed_payload_length_is_checked_against_the_type_limit() {
    // Hand-build a record whose declared payload length is 1025 (> Blob::MAX_LEN).
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(alice().peer_id().as_bytes());
    bytes.extend_from_slice(&T0.0.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&1025u32.to_le_bytes());
    assert!(matches!(
        Signed::<Blob>::decode(&bytes, T0),
        Err(Error::TooLarge {
            len: 1025,
            max: 1024,
            ..
        })
    ));
}
