//! `Signed<T>`: a value with its author, validity window and signature.
//!
//! DHT records, invites, pin sets, gossip messages and recovery messages are all `Signed<T>`
//! with their own payload type. Layout in `docs/PROTOCOL.md`, "Signed record v1":
//!
//! ```text
//! version u8 = 1 | author [32] | created_at u64 LE | expires_at u64 LE |
//! payload_len u32 LE | payload [payload_len] | signature [64]
//! ```
//!
//! The signature covers `id = BLAKE2b-256(u8(len(T::DOMAIN)) || T::DOMAIN || everything before
//! the signature)`. The domain names the payload type, so a signed DHT record can never be
//! passed off as an invite. The id is stable from hop to hop and serves as a dedup key.
//!
//! A `Signed<T>` value can only be made by signing ([`Signed::sign`]) or by a full check of
//! received bytes ([`Signed::decode`]): holding one means its signature verified.

use crate::hash::{Hash256, domain_hash};
use crate::identity::{Identity, PeerId, SIGNATURE_LEN, Signature};
use crate::wire::Reader;
use crate::{Error, UnixMillis};

/// Format version written by this build, and the only one it reads.
pub const SIGNED_VERSION: u8 = 1;
/// Bytes before the payload: version, author, created_at, expires_at, payload length.
pub const SIGNED_HEADER_LEN: usize = 1 + 32 + 8 + 8 + 4;
/// Hard cap on any signed payload, whatever `T::MAX_LEN` says: 16 MiB.
pub const MAX_SIGNED_PAYLOAD_LEN: usize = 16 * 1024 * 1024;
/// How far in the future a `created_at` may lie before the record is refused: 5 minutes of
/// clock skew between honest peers.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A type that can be signed: its canonical encoding and the domain that names it.
pub trait SignedPayload: Sized {
    /// Domain-separation label, e.g. `"mesh/dht-record/v1"`. Unique per payload type.
    const DOMAIN: &'static str;
    /// Longest encoding accepted, checked before decoding or verifying (capped at
    /// [`MAX_SIGNED_PAYLOAD_LEN`]).
    const MAX_LEN: usize;

    /// Appends the canonical encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes a payload. Called only after the signature verified.
    ///
    /// # Errors
    /// Any [`Error`] describing why the bytes are not a valid payload.
    fn decode(bytes: &[u8]) -> Result<Self, Error>;
}

/// A verified, signed value. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    author: PeerId,
    created_at: UnixMillis,
    expires_at: UnixMillis,
    payload: T,
    id: Hash256,
    bytes: Vec<u8>,
}

fn max_len<T: SignedPayload>() -> usize {
    T::MAX_LEN.min(MAX_SIGNED_PAYLOAD_LEN)
}

impl<T: SignedPayload> Signed<T> {
    /// Signs `payload` as `author`, valid from `created_at` until `expires_at`
    /// ([`UnixMillis::NEVER`] for no expiry).
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the payload encodes to more than `T::MAX_LEN` bytes;
    /// [`Error::Malformed`] if `expires_at` is not after `created_at`.
    pub fn sign(
        author: &Identity,
        payload: T,
        created_at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Self, Error> {
        if expires_at <= created_at {
            return Err(Error::Malformed("expires_at must be after created_at"));
        }
        let mut bytes = Vec::with_capacity(SIGNED_HEADER_LEN + 64 + SIGNATURE_LEN);
        bytes.push(SIGNED_VERSION);
        bytes.extend_from_slice(author.peer_id().as_bytes());
        bytes.extend_from_slice(&created_at.0.to_le_bytes());
        bytes.extend_from_slice(&expires_at.0.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        payload.encode(&mut bytes);
        let len = bytes.len() - SIGNED_HEADER_LEN;
        let max = max_len::<T>();
        if len > max {
            return Err(Error::TooLarge {
                what: "signed payload",
                len,
                max,
            });
        }
        // len <= 16 MiB.
        #[allow(clippy::cast_possible_truncation)]
        bytes[SIGNED_HEADER_LEN - 4..SIGNED_HEADER_LEN]
            .copy_from_slice(&(len as u32).to_le_bytes());
        let id = domain_hash(T::DOMAIN, &[&bytes]);
        bytes.extend_from_slice(&author.sign_digest(&id).0);
        Ok(Self {
            author: author.peer_id(),
            created_at,
            expires_at,
            payload,
            id,
            bytes,
        })
    }

    /// Decodes and fully verifies received bytes at time `now`.
    ///
    /// Cheap checks run first (version, lengths, validity window), the signature next, and the
    /// payload is decoded last, so garbage costs the receiver as little as possible.
    ///
    /// # Errors
    /// Layout errors, [`Error::Expired`], [`Error::NotYetValid`] (more than
    /// [`MAX_CLOCK_SKEW_MS`] ahead of `now`), [`Error::InvalidPublicKey`],
    /// [`Error::BadSignature`], or whatever `T::decode` returns.
    pub fn decode(bytes: &[u8], now: UnixMillis) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != SIGNED_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: SIGNED_VERSION,
            });
        }
        let author = r.array::<32>()?;
        let created_at = UnixMillis(r.u64_le()?);
        let expires_at = UnixMillis(r.u64_le()?);
        let payload = r.len_prefixed("signed payload", max_len::<T>())?;
        let signed_len = r.position();
        let signature = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        if expires_at <= created_at {
            return Err(Error::Malformed("expires_at must be after created_at"));
        }
        if now >= expires_at {
            return Err(Error::Expired { expires_at, now });
        }
        if created_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(Error::NotYetValid { created_at, now });
        }
        let author = PeerId::from_bytes(author)?;
        let id = domain_hash(T::DOMAIN, &[&bytes[..signed_len]]);
        author.verify_digest(&id, &Signature(signature))?;
        let payload = T::decode(payload)?;
        Ok(Self {
            author,
            created_at,
            expires_at,
            payload,
            id,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        now >= self.expires_at
    }
}

impl<T> Signed<T> {
    /// The author, whose signature verified.
    pub const fn author(&self) -> &PeerId {
        &self.author
    }
    /// The verified payload.
    pub const fn payload(&self) -> &T {
        &self.payload
    }
    /// Claimed creation time (checked against clock skew on decode).
    pub const fn created_at(&self) -> UnixMillis {
        self.created_at
    }
    /// Expiry time.
    pub const fn expires_at(&self) -> UnixMillis {
        self.expires_at
    }
    /// The signed digest: a stable id for dedup.
    pub const fn id(&self) -> &Hash256 {
        &self.id
    }
    /// The exact bytes, to store or forward unchanged.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Consumes the record, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Note(Vec<u8>);

    impl SignedPayload for Note {
        const DOMAIN: &'static str = "mesh/test-note/v1";
        const MAX_LEN: usize = 100;
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
        }
        fn decode(bytes: &[u8]) -> Result<Self, Error> {
            Ok(Self(bytes.to_vec()))
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct OtherNote(Vec<u8>);

    impl SignedPayload for OtherNote {
        const DOMAIN: &'static str = "mesh/test-other/v1";
        const MAX_LEN: usize = 100;
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
        }
        fn decode(bytes: &[u8]) -> Result<Self, Error> {
            Ok(Self(bytes.to_vec()))
        }
    }

    const T0: UnixMillis = UnixMillis(1_000_000);

    #[test]
    fn round_trip_and_validity_window() {
        let id = Identity::from_seed(&[3; 32]);
        let rec = Signed::sign(&id, Note(b"hi".to_vec()), T0, T0.saturating_add(1000)).unwrap();
        let back = Signed::<Note>::decode(rec.as_bytes(), T0).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.author(), &id.peer_id());
        // Valid until one millisecond before expiry.
        assert!(Signed::<Note>::decode(rec.as_bytes(), T0.saturating_add(999)).is_ok());
        assert!(matches!(
            Signed::<Note>::decode(rec.as_bytes(), T0.saturating_add(1000)),
            Err(Error::Expired { .. })
        ));
        // Clock skew: exactly at the limit is fine, one past it is not.
        let early = UnixMillis(T0.0 - MAX_CLOCK_SKEW_MS);
        assert!(Signed::<Note>::decode(rec.as_bytes(), early).is_ok());
        assert!(matches!(
            Signed::<Note>::decode(rec.as_bytes(), UnixMillis(early.0 - 1)),
            Err(Error::NotYetValid { .. })
        ));
    }

    #[test]
    fn payload_limit_at_the_boundary() {
        let id = Identity::from_seed(&[3; 32]);
        let ok = Signed::sign(&id, Note(vec![0; 100]), T0, UnixMillis::NEVER).unwrap();
        assert!(Signed::<Note>::decode(ok.as_bytes(), T0).is_ok());
        assert!(matches!(
            Signed::sign(&id, Note(vec![0; 101]), T0, UnixMillis::NEVER),
            Err(Error::TooLarge {
                len: 101,
                max: 100,
                ..
            })
        ));
    }

    #[test]
    fn domain_separation_between_payload_types() {
        let id = Identity::from_seed(&[3; 32]);
        let rec = Signed::sign(&id, Note(b"x".to_vec()), T0, UnixMillis::NEVER).unwrap();
        assert_eq!(
            Signed::<OtherNote>::decode(rec.as_bytes(), T0),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn bad_window_is_refused_on_both_sides() {
        let id = Identity::from_seed(&[3; 32]);
        assert!(Signed::sign(&id, Note(vec![]), T0, T0).is_err());
    }
}
