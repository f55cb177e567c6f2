//! What differs per platform, behind traits, so that protocol crates never see it:
//!
//! - [`kv`]: the [`KvStore`](kv::KvStore) trait every domain crate persists through, and the
//!   [`Store`](kv::Store) that builds tables, size accounting and schema migrations on any
//!   [`KvBackend`](kv::KvBackend) (SQLite, redb, IndexedDB, memory: crates under `backends/`).
//! - [`runtime`]: the [`Runtime`](runtime::Runtime) seam (monotonic clock, wall clock, sleep,
//!   spawn) with a tokio implementation (feature `tokio-runtime`) and a browser one (on wasm32).
//! - [`limit`]: per-key rate limits (governor) on a hand-driven clock, for sans-IO cores.
//! - [`invite`]: signed invites (NFC NDEF record, QR / link), verified on receipt.
//! - [`keystore`]: the identity key at rest (Argon2id + XChaCha20-Poly1305 through a
//!   `KvStore`), behind a `SecureStorage` trait that platform keystores implement.
//! - `pinning` (feature `pinning`, native): a rustls verifier with signed, rotatable pin sets.
//! - `conformance` (feature `conformance`): the test suite every storage backend runs.
//!
//! Traits are `Send + Sync` natively and `?Send` on wasm32, where everything runs on one thread.

#![forbid(unsafe_code)]

pub mod invite;
pub mod keystore;
pub mod kv;
pub mod limit;
#[cfg(all(feature = "pinning", not(target_arch = "wasm32")))]
pub mod pinning;
pub mod runtime;

#[cfg(feature = "conformance")]
pub mod conformance;

/// `Send` on native targets; nothing on wasm32 (single-threaded, JS values are `!Send`).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets; nothing on wasm32 (single-threaded, JS values are `!Send`).
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets; nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` on native targets; nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}
