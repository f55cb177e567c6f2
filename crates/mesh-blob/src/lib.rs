//! Chunked, content-addressed, expiring blobs for mesh, over any `KvStore`, and their transfer
//! between peers.
//!
//! - [`manifest`]: blob ids (BLAKE2b-256 over the list of chunk hashes) and manifests.
//! - [`store`]: the store: streaming put and get, range reads, every chunk verified when read,
//!   chunks shared between blobs with reference counts, holds with expiry and pins, per-owner
//!   and total quotas, bounded garbage collection, usage reports.
//! - [`wire`]: the transfer messages (`docs/PROTOCOL.md` §13).
//! - [`transfer`]: the async service that serves blobs to peers and fetches them, chunk by
//!   chunk, verified, resuming after a disconnect from the first missing chunk.
//! - [`private`]: optional encryption of a blob's content to one recipient (a libsodium secret
//!   stream under a fresh key, the key sealed to the recipient in a mesh-crypto envelope).
//! - [`metrics`]: opentelemetry instruments.
//!
//! Why BLAKE2b and not BLAKE3: mesh already uses BLAKE2b everywhere (libsodium's
//! `crypto_generichash`, through dryoc), so an independent implementation checks blob ids with
//! the same library it checks everything else with, and no second hash enters the tree.
//! BLAKE3's speed and its verified streaming inside one hash are not needed here: chunks are
//! hashed separately anyway, and the manifest's digest authenticates the list.

#![forbid(unsafe_code)]

pub mod manifest;
pub mod metrics;
pub mod private;
pub mod store;
pub mod transfer;
pub mod wire;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use manifest::{BlobId, Manifest};

/// Locks `m`, going on with what is there if a panic poisoned it (no state here is left
/// half-updated in a way that matters more than stopping would).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub use store::{
    BlobConfig, BlobError, BlobInfo, BlobReader, BlobStore, BlobWriter, GcReport, Hold, OwnerUsage,
    PutOptions, Stored, Usage,
};
