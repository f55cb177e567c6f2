//! Identities: Ed25519 signing keys, the X25519 keys derived from them, peer ids, fingerprints
//! and safety numbers.
//!
//! # One key pair, two uses
//!
//! A peer's X25519 encryption key is derived from its Ed25519 key exactly as libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` / `crypto_sign_ed25519_sk_to_curve25519` do. A
//! [`PeerId`] alone is therefore enough to encrypt to a peer: no identity card has to be fetched,
//! cached, or checked for freshness, and any libsodium binding can do the same derivation. Using
//! one key pair for both Ed25519 signatures and X25519 key agreement is the construction libsodium
//! documents; it has been analysed and shown safe for this combination (Thormarker, "On using the
//! same key pair for Ed25519 and an X25519 based KEM", 2021). See `docs/ARCHITECTURE.md`.

use core::fmt::{self, Write as _};
use core::str::FromStr;

use dryoc::classic::crypto_sign::{
    crypto_sign_detached, crypto_sign_seed_keypair, crypto_sign_verify_detached,
};
use dryoc::classic::crypto_sign_ed25519::{
    crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519,
};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::hash::{Blake2b256, Hash256, blake2b_256, domain_hash};

/// Length of a public key (Ed25519 or X25519), in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature, in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an identity's secret seed, in bytes.
pub const SEED_LEN: usize = 32;

/// A peer's identity on the mesh: its Ed25519 public key.
///
/// Constructing one validates the key (canonical encoding, on the curve, prime order), so every
/// `PeerId` can be encrypted to and can verify signatures. Text form: lowercase RFC 4648 base32
/// without padding (52 characters).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; PUBLIC_KEY_LEN]);

impl PeerId {
    /// Validates and wraps an Ed25519 public key.
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for a non-canonical, off-curve or small-order point.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<Self, Error> {
        let mut x = [0u8; PUBLIC_KEY_LEN];
        crypto_sign_ed25519_pk_to_curve25519(&mut x, &bytes)
            .map_err(|_| Error::InvalidPublicKey)?;
        Ok(Self(bytes))
    }

    /// Wraps 32 bytes that someone else claims are a peer's key, without validating them as a
    /// curve point: for routing information relayed by third parties (DHT contacts), where
    /// validation would cost as much as a signature check per contact and prove nothing (any
    /// valid-looking key can be made up for free). Such an id is a name, not a credential:
    /// a link to it is only established if the remote proves the key in the handshake (whose
    /// own parsing validates it, so an invalid id never matches), and
    /// [`PeerId::encryption_key`] of an invalid one is all zeros, which key exchange refuses
    /// loudly. Never verify a signature against one: signed formats carry their author's key
    /// and parse it with [`PeerId::from_bytes`], as everything else should.
    pub const fn from_bytes_unvalidated(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Wraps a key already known to be valid (crate-internal).
    pub(crate) const fn from_bytes_unchecked(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Validates a key given as a slice.
    ///
    /// # Errors
    /// [`Error::Malformed`] if it is not 32 bytes long, else as [`PeerId::from_bytes`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::Malformed("public key must be 32 bytes"))?;
        Self::from_bytes(arr)
    }

    /// The Ed25519 public key.
    pub const fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The X25519 public key that envelopes to this peer are sealed to.
    pub fn encryption_key(&self) -> EncryptionKey {
        let mut x = [0u8; PUBLIC_KEY_LEN];
        // Validated at construction (unless made with `from_bytes_unvalidated`), so the
        // conversion does not fail; an all-zero key would make every later key exchange fail
        // loudly with `WeakKeyExchange`, never silently succeed.
        if crypto_sign_ed25519_pk_to_curve25519(&mut x, &self.0).is_err() {
            x = [0; PUBLIC_KEY_LEN];
        }
        EncryptionKey(x)
    }

    /// The peer's position in the DHT key space: BLAKE2b-256 of the public key.
    pub fn dht_key(&self) -> Hash256 {
        blake2b_256(&self.0)
    }

    /// Verifies `signature` over the domain-separated digest of `message`
    /// (see [`Identity::sign`]).
    ///
    /// # Errors
    /// [`Error::BadSignature`] if it does not verify.
    pub fn verify(&self, domain: &str, message: &[u8], signature: &Signature) -> Result<(), Error> {
        self.verify_digest(&domain_hash(domain, &[message]), signature)
    }

    /// Verifies `signature` over an already computed 32-byte digest.
    ///
    /// # Errors
    /// [`Error::BadSignature`] if it does not verify.
    pub fn verify_digest(&self, digest: &Hash256, signature: &Signature) -> Result<(), Error> {
        crypto_sign_verify_detached(&signature.0, digest.as_bytes(), &self.0)
            .map_err(|_| Error::BadSignature)
    }

    /// A short fingerprint for display, e.g. `k3rm-4dqa-x7pe-2vno`: the first 80 bits of
    /// `BLAKE2b-256("mesh/fingerprint/v1" domain, key)` in base32. Good for recognising a peer in
    /// a list; use [`safety_number`] to authenticate one.
    pub fn fingerprint(&self) -> String {
        let digest = domain_hash("mesh/fingerprint/v1", &[&self.0]);
        let text = data_encoding::BASE32_NOPAD
            .encode(&digest.0[..10])
            .to_ascii_lowercase();
        let groups: Vec<&str> = text
            .as_bytes()
            .chunks(4)
            .filter_map(|c| core::str::from_utf8(c).ok())
            .collect();
        groups.join("-")
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() != 52 {
            return Err(Error::Malformed(
                "peer id text must be 52 base32 characters",
            ));
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::Malformed("peer id text is not base32"))?;
        Self::from_slice(&bytes)
    }
}

/// An X25519 public key derived from a [`PeerId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptionKey({})",
            data_encoding::HEXLOWER.encode(&self.0)
        )
    }
}

/// A detached Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// A peer's secret identity: the Ed25519 key pair and the X25519 secret derived from it.
///
/// Secret material is zeroized on drop and never printed: `Debug` shows the peer id only. The
/// 32-byte seed is the whole secret; [`Identity::seed`] hands it out (zeroizing) for a keystore.
pub struct Identity {
    seed: Zeroizing<[u8; SEED_LEN]>,
    signing_key: Zeroizing<[u8; 64]>,
    x25519_secret: Zeroizing<[u8; 32]>,
    encryption_key: EncryptionKey,
    peer_id: PeerId,
}

impl Identity {
    /// A fresh identity from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        dryoc::rng::copy_randombytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// The identity whose secret seed is `seed` (libsodium `crypto_sign_seed_keypair`).
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let (public, mut secret) = crypto_sign_seed_keypair(seed);
        let mut x25519_secret = Zeroizing::new([0u8; 32]);
        crypto_sign_ed25519_sk_to_curve25519(&mut x25519_secret, &secret);
        let signing_key = Zeroizing::new(secret);
        secret.zeroize();
        let peer_id = PeerId(public);
        Self {
            seed: Zeroizing::new(*seed),
            signing_key,
            x25519_secret,
            encryption_key: peer_id.encryption_key(),
            // A key derived from a seed is always a valid prime-order point.
            peer_id,
        }
    }

    /// The secret seed, for storing in a keystore. Zeroized when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; SEED_LEN]> {
        Zeroizing::new(*self.seed)
    }

    /// This identity's public id.
    pub const fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs the domain-separated digest of `message`:
    /// `Ed25519(BLAKE2b-256(u8(len(domain)) || domain || message))`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        self.sign_digest(&domain_hash(domain, &[message]))
    }

    /// Signs an already computed 32-byte digest. Callers must compute the digest with
    /// [`domain_hash`] so that signatures stay domain separated.
    pub fn sign_digest(&self, digest: &Hash256) -> Signature {
        let mut sig = [0u8; SIGNATURE_LEN];
        // Infallible for fixed-size keys (dryoc keeps the Result for libsodium API parity).
        if crypto_sign_detached(&mut sig, digest.as_bytes(), &self.signing_key).is_err() {
            sig = [0; SIGNATURE_LEN];
        }
        Signature(sig)
    }

    /// This identity's X25519 public key (computed once).
    pub const fn encryption_key(&self) -> &EncryptionKey {
        &self.encryption_key
    }

    /// The X25519 secret scalar (crate-internal: used by envelopes).
    pub(crate) fn x25519_secret(&self) -> &[u8; 32] {
        &self.x25519_secret
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Number of hash iterations per party in a safety number (as Signal's 5200, to make a
/// brute-force search for a key with a colliding number expensive).
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;

/// A 60-digit number two peers compare out of band (read aloud, or by QR) to authenticate each
/// other's keys. Both sides compute the same number.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// The 60 digits without separators.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(core::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// 30 decimal digits that stand for one peer's key.
fn safety_digits(peer: &PeerId) -> String {
    let mut digest = domain_hash("mesh/safety-number/v1", &[peer.as_bytes()]);
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut h = Blake2b256::new();
        h.update(digest.as_bytes()).update(peer.as_bytes());
        digest = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in digest.0[..30].chunks(5) {
        let mut v = 0u64;
        for b in chunk {
            v = (v << 8) | u64::from(*b);
        }
        let _ = write!(out, "{:05}", v % 100_000);
    }
    out
}

/// The safety number of the pair `a`, `b`; the same whichever order they are given in.
pub fn safety_number(a: &PeerId, b: &PeerId) -> SafetyNumber {
    let (da, db) = (safety_digits(a), safety_digits(b));
    let (first, second) = if da <= db { (da, db) } else { (db, da) };
    SafetyNumber(first + &second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_round_trip_and_debug_hides_secrets() {
        let id = Identity::generate();
        let again = Identity::from_seed(&id.seed());
        assert_eq!(id.peer_id(), again.peer_id());
        let dbg = format!("{id:?}");
        assert!(dbg.contains(&id.peer_id().to_string()));
        let seed_hex = data_encoding::HEXLOWER.encode(id.seed().as_ref());
        assert!(!dbg.contains(&seed_hex));
    }

    #[test]
    fn peer_id_text_round_trip_and_rejects_garbage() {
        let id = Identity::from_seed(&[7; 32]).peer_id();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
        assert!("".parse::<PeerId>().is_err());
        assert!(text[..51].parse::<PeerId>().is_err());
        assert!(format!("{}1", &text[..51]).parse::<PeerId>().is_err());
    }

    #[test]
    fn invalid_points_are_refused() {
        // The identity point (small order) and a non-canonical encoding.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            PeerId::from_bytes(identity_point),
            Err(Error::InvalidPublicKey)
        );
        assert_eq!(PeerId::from_bytes([0xff; 32]), Err(Error::InvalidPublicKey));
        assert!(PeerId::from_slice(&[1; 31]).is_err());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let id = Identity::from_seed(&[1; 32]);
        let sig = id.sign("mesh/test/a", b"msg");
        assert_eq!(id.peer_id().verify("mesh/test/a", b"msg", &sig), Ok(()));
        assert_eq!(
            id.peer_id().verify("mesh/test/b", b"msg", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            id.peer_id().verify("mesh/test/a", b"msh", &sig),
            Err(Error::BadSignature)
        );
        let other = Identity::from_seed(&[2; 32]).peer_id();
        assert_eq!(
            other.verify("mesh/test/a", b"msg", &sig),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn safety_number_is_symmetric_and_distinguishes_keys() {
        let a = Identity::from_seed(&[1; 32]).peer_id();
        let b = Identity::from_seed(&[2; 32]).peer_id();
        let c = Identity::from_seed(&[3; 32]).peer_id();
        let ab = safety_number(&a, &b);
        assert_eq!(ab, safety_number(&b, &a));
        assert_ne!(ab, safety_number(&a, &c));
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|d| d.is_ascii_digit()));
        assert_eq!(ab.to_string().len(), 60 + 11);
    }

    #[test]
    fn fingerprint_shape() {
        let fp = Identity::from_seed(&[9; 32]).peer_id().fingerprint();
        assert_eq!(fp.len(), 19);
        assert_eq!(fp.matches('-').count(), 3);
    }
}
