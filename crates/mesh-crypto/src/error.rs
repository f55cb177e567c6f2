//! The one error type of this crate.

use crate::UnixMillis;

/// Everything that can go wrong when decoding, verifying or opening data.
///
/// Every variant is reachable from untrusted input; none of them is ever a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first byte names a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version byte found in the input.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// The input ended before a field was complete.
    #[error("input truncated: {needed} bytes needed, {remaining} left")]
    Truncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// The input continued after its last field.
    #[error("{trailing} unexpected trailing bytes")]
    TrailingBytes {
        /// Number of bytes after the end of the encoding.
        trailing: usize,
    },
    /// A length is over its limit. Checked before anything is allocated.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A public key is not a canonical, prime-order Ed25519 point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A signature does not verify under the claimed author's key.
    #[error("signature verification failed")]
    BadSignature,
    /// An envelope is addressed to another peer.
    #[error("envelope is addressed to another peer")]
    WrongRecipient,
    /// Authenticated decryption failed: wrong key, wrong context or tampered ciphertext.
    #[error("decryption failed")]
    DecryptionFailed,
    /// A key exchange produced the all-zero shared secret (low-order public key).
    #[error("key exchange with a low-order public key")]
    WeakKeyExchange,
    /// A signed record has expired.
    #[error("record expired at {expires_at} (now {now})")]
    Expired {
        /// When the record expired.
        expires_at: UnixMillis,
        /// The time it was checked at.
        now: UnixMillis,
    },
    /// A signed record claims a creation time too far in the future.
    #[error("record created at {created_at}, beyond the allowed clock skew (now {now})")]
    NotYetValid {
        /// Claimed creation time.
        created_at: UnixMillis,
        /// The time it was checked at.
        now: UnixMillis,
    },
    /// A field holds a value that its format does not allow.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}
