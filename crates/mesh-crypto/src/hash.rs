//! BLAKE2b-256 hashing, plain, keyed and domain-separated.
//!
//! All digests in mesh are BLAKE2b with a 32-byte output (libsodium's `crypto_generichash`), so
//! an independent implementation needs nothing beyond libsodium.

use core::fmt;

use dryoc::classic::crypto_generichash::{
    GenericHashState, crypto_generichash_final, crypto_generichash_init, crypto_generichash_update,
};

/// Length of every digest, in bytes.
pub const HASH_LEN: usize = 32;

/// Longest domain-separation label accepted by [`domain_hash`] (its length travels as one byte).
pub const MAX_DOMAIN_LEN: usize = 255;

/// A 32-byte BLAKE2b digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash256(pub [u8; HASH_LEN]);

impl Hash256 {
    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The digest written as 64 hex digits (either case; surrounding whitespace ignored), or
    /// `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .ok()
            .and_then(|b| <[u8; HASH_LEN]>::try_from(b.as_slice()).ok())
            .map(Self)
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_hex())
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl AsRef<[u8]> for Hash256 {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// BLAKE2b-256 of `data` (libsodium `crypto_generichash(out, 32, data, NULL, 0)`).
pub fn blake2b_256(data: &[u8]) -> Hash256 {
    let mut h = Blake2b256::new();
    h.update(data);
    h.finalize()
}

/// Incremental BLAKE2b-256, for data that arrives in pieces.
#[derive(Clone)]
pub struct Blake2b256 {
    state: GenericHashState,
}

impl Blake2b256 {
    /// An unkeyed hasher.
    #[allow(
        clippy::expect_used,
        clippy::missing_panics_doc,
        clippy::new_without_default
    )]
    pub fn new() -> Self {
        // A 32-byte output without a key is always within libsodium's accepted ranges.
        let state = crypto_generichash_init(None, HASH_LEN).expect("constant, valid parameters");
        Self { state }
    }

    /// A keyed hasher (BLAKE2b as a PRF / MAC) with a 32-byte secret key.
    #[allow(clippy::expect_used, clippy::missing_panics_doc)]
    pub fn new_keyed(key: &[u8; 32]) -> Self {
        let state =
            crypto_generichash_init(Some(key), HASH_LEN).expect("constant, valid parameters");
        Self { state }
    }

    /// Feeds `data` to the hasher.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        crypto_generichash_update(&mut self.state, data);
        self
    }

    /// The digest of everything fed so far.
    #[allow(clippy::expect_used, clippy::missing_panics_doc)]
    pub fn finalize(self) -> Hash256 {
        let mut out = [0u8; HASH_LEN];
        crypto_generichash_final(self.state, &mut out).expect("output length is the constant 32");
        Hash256(out)
    }
}

impl fmt::Debug for Blake2b256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blake2b256 { .. }")
    }
}

/// Keyed BLAKE2b-256 (a PRF / MAC), `key` being the 32-byte secret.
pub fn keyed_blake2b_256(key: &[u8; 32], data: &[u8]) -> Hash256 {
    let mut h = Blake2b256::new_keyed(key);
    h.update(data);
    h.finalize()
}

/// The domain-separated digest every signature in mesh covers:
/// `BLAKE2b-256( u8(len(domain)) || domain || part_0 || part_1 || ... )`.
///
/// Signing this digest instead of raw bytes means one signature can never be replayed as a
/// signature over another kind of object: the domain names the kind.
///
/// # Panics
/// Never for domains this workspace defines; a `domain` longer than [`MAX_DOMAIN_LEN`] is a
/// programming error and is caught by a debug assertion, and truncated in release.
pub fn domain_hash(domain: &str, parts: &[&[u8]]) -> Hash256 {
    debug_assert!(domain.len() <= MAX_DOMAIN_LEN, "domain label too long");
    let label = &domain.as_bytes()[..domain.len().min(MAX_DOMAIN_LEN)];
    let mut h = Blake2b256::new();
    #[allow(clippy::cast_possible_truncation)]
    h.update(&[label.len() as u8]).update(label);
    for part in parts {
        h.update(part);
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_hex_is_refused() {
        let h = blake2b_256(b"x");
        assert_eq!(Hash256::from_hex(&h.to_hex()), Some(h));
        assert_eq!(
            Hash256::from_hex(&format!(" {} ", h.to_hex().to_uppercase())),
            Some(h)
        );
        for bad in ["", "00", &"0".repeat(63), &"0".repeat(66), &"g".repeat(64)] {
            assert_eq!(Hash256::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_input_matches_the_blake2b_256_reference() {
        // BLAKE2b-256("") from the BLAKE2 reference implementation.
        assert_eq!(
            blake2b_256(b"").to_hex(),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Blake2b256::new();
        h.update(b"hello ").update(b"world");
        assert_eq!(h.finalize(), blake2b_256(b"hello world"));
    }

    #[test]
    fn domain_separates() {
        let a = domain_hash("mesh/a", &[b"x"]);
        let b = domain_hash("mesh/b", &[b"x"]);
        assert_ne!(a, b);
        // The length prefix makes the split between label and data unambiguous.
        assert_ne!(domain_hash("ab", &[b"c"]), domain_hash("a", &[b"bc"]));
        assert_eq!(domain_hash("d", &[b"a", b"b"]), domain_hash("d", &[b"ab"]));
    }

    #[test]
    fn keyed_differs_from_plain_and_by_key() {
        assert_ne!(keyed_blake2b_256(&[1; 32], b"m"), blake2b_256(b"m"));
        assert_ne!(
            keyed_blake2b_256(&[1; 32], b"m"),
            keyed_blake2b_256(&[2; 32], b"m")
        );
    }
}
