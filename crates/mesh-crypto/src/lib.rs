//! Identity and confidentiality for mesh.
//!
//! - [`Identity`] / [`PeerId`]: Ed25519 keys, with the X25519 encryption key derived from them
//!   the way libsodium does; fingerprints and [`safety_number`]s for people to compare.
//! - [`envelope`]: a message sealed to one recipient (ephemeral X25519, BLAKE2b key derivation,
//!   XChaCha20-Poly1305) and signed by its sender, verifiable by relays without opening it.
//! - [`Signed`]: any payload with author, validity window and signature, for DHT records,
//!   invites, pin sets and recovery messages.
//! - [`hash`]: BLAKE2b-256, keyed and domain-separated.
//!
//! Everything is built from libsodium's primitives through dryoc's libsodium-compatible
//! `classic` API, byte-for-byte as `docs/PROTOCOL.md` describes, so an independent
//! implementation with any libsodium binding interoperates (CI checks this with PyNaCl).
//!
//! The crate is pure: no I/O, no async, no clock (callers pass the time in). It compiles for
//! `wasm32-unknown-unknown`, where randomness comes from the browser's `crypto.getRandomValues`.
//!
//! ```
//! use mesh_crypto::{Identity, envelope};
//!
//! let alice = Identity::generate();
//! let bob = Identity::generate();
//! let sealed = envelope::seal(&alice, &bob.peer_id(), b"mesh/example", b"hi bob")?;
//! let opened = envelope::open(&bob, &sealed, b"mesh/example")?;
//! assert_eq!(opened.plaintext, b"hi bob");
//! assert_eq!(opened.sender, alice.peer_id());
//! # Ok::<(), mesh_crypto::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod envelope;
mod error;
pub mod hash;
mod identity;
mod signed;
pub mod stream;
mod time;
pub mod wire;

pub use error::Error;
pub use hash::Hash256;
pub use identity::{
    EncryptionKey, Identity, PUBLIC_KEY_LEN, PeerId, SAFETY_NUMBER_ITERATIONS, SEED_LEN,
    SIGNATURE_LEN, SafetyNumber, Signature, safety_number,
};
pub use signed::{
    MAX_CLOCK_SKEW_MS, MAX_SIGNED_PAYLOAD_LEN, SIGNED_HEADER_LEN, SIGNED_VERSION, Signed,
    SignedPayload,
};
pub use time::UnixMillis;

/// Fills `buf` from the operating system's secure random source (the browser's
/// `crypto.getRandomValues` on wasm32), for seeds and nonces outside the constructions above.
pub fn random_fill(buf: &mut [u8]) {
    dryoc::rng::copy_randombytes(buf);
}
