//! The mesh node for Android and iOS apps, through [UniFFI](https://mozilla.github.io/uniffi-rs/).
//!
//! One crate, compiled to a C-ABI library (`cdylib` for Android, `staticlib` for iOS), with
//! bindings generated for Kotlin, Swift and Python by `cargo xtask bindings` (see
//! `docs/PLATFORMS.md`). What it exports:
//!
//! - [`identity`]: [`MeshIdentity`](identity::MeshIdentity), created or unlocked from the
//!   platform's keystore (the [`SecureStorage`](identity::SecureStorage) trait the app
//!   implements: Android Keystore, iOS Keychain) or from a passphrase-sealed file.
//! - [`node`]: [`start_node`](node::start_node) and [`MeshNode`](node::MeshNode): the full node
//!   (DHT, gossip, blobs, social recovery, messaging) on SQLite and native WebRTC, with
//!   messages and recovery requests as a stream of [`NodeEvent`](node::NodeEvent)s, blobs,
//!   recovery and network change notifications.
//! - [`ble`]: the [`BleRadio`](ble::BleRadio) trait the app implements over the OS's Bluetooth
//!   stack; an attached radio becomes an encrypted, authenticated link of the node.
//! - [`invite`]: signed invites (create, verify) and [`PinVerifier`](invite::PinVerifier),
//!   certificate pinning against a signed pin set.
//!
//! Every failure is a [`MeshError`], a typed exception in Kotlin, Swift and Python. Async
//! functions are driven by the caller's executor (Kotlin coroutines, Swift concurrency,
//! Python's asyncio); the node's own work runs on a Tokio runtime this library owns (two
//! worker threads), so no call blocks the app's main thread.

// Arguments cross the FFI as owned values (UniFFI lifts them into `String`, `Vec<u8>`).
#![allow(clippy::needless_pass_by_value)]

uniffi::setup_scaffolding!();

pub mod ble;
pub mod identity;
pub mod invite;
pub mod node;

use std::future::Future;
use std::sync::OnceLock;

use mesh_crypto::{Hash256, PeerId};

/// What went wrong, as the app sees it: one exception type per case, with a readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// A bad argument: a malformed peer id, blob id, URL or invite, an out-of-range number, a
    /// message over the size limit.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What was wrong.
        reason: String,
    },
    /// No identity is stored (create one, or recover it).
    #[error("no identity is stored")]
    NoIdentity,
    /// The passphrase does not open the sealed identity.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// Nobody reachable has what was asked for, or the peer could not be reached.
    #[error("unreachable: {reason}")]
    Unreachable {
        /// Details.
        reason: String,
    },
    /// The thing asked for is not stored here.
    #[error("not found: {reason}")]
    NotFound {
        /// What.
        reason: String,
    },
    /// The protocol refused: a recovery policy, a quota, a rate limit.
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// Local storage failed (disk full, a damaged database, a database in use).
    #[error("storage: {reason}")]
    Storage {
        /// Details.
        reason: String,
    },
    /// The app's platform code (a [`identity::SecureStorage`] or [`ble::BleRadio`]) failed or
    /// threw.
    #[error("platform: {reason}")]
    Platform {
        /// Details.
        reason: String,
    },
    /// The node (or link) was stopped.
    #[error("the node is stopped")]
    Closed,
    /// A fault inside the library (a bug: please report it with the reason).
    #[error("internal: {reason}")]
    Internal {
        /// Details.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for MeshError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Platform { reason: e.reason }
    }
}

pub(crate) fn invalid(reason: impl std::fmt::Display) -> MeshError {
    MeshError::InvalidInput {
        reason: reason.to_string(),
    }
}

pub(crate) fn storage(reason: impl std::fmt::Display) -> MeshError {
    MeshError::Storage {
        reason: reason.to_string(),
    }
}

pub(crate) fn parse_peer(text: &str) -> Result<PeerId, MeshError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(format!("{text:?} is not a peer id")))
}

pub(crate) fn parse_hash(text: &str, what: &str) -> Result<Hash256, MeshError> {
    Hash256::from_hex(text.trim()).ok_or_else(|| invalid(format!("{text:?} is not a {what}")))
}

/// The Tokio runtime every node of this process runs on: two worker threads (phones are
/// small, and the node's work is I/O bound).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mesh")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Only when the OS refuses threads or an epoll instance: nothing can run.
            #[allow(clippy::panic)]
            Err(e) => panic!("mesh-ffi: cannot start the Tokio runtime: {e}"),
        }
    })
}

/// Aborts the task when the caller stops waiting (a cancelled coroutine or Swift task), so
/// that work nobody waits for does not go on.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on the library's runtime and waits for it from the caller's executor (a
/// Tokio `JoinHandle` is an ordinary future, so asyncio, coroutines and Swift tasks can await
/// it). Cancelling the caller's call aborts the work.
pub(crate) async fn on_runtime<T, F>(work: F) -> Result<T, MeshError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, MeshError>> + Send + 'static,
{
    let mut task = AbortOnDrop(runtime().spawn(work));
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Err(MeshError::Closed),
        Err(e) => Err(MeshError::Internal {
            reason: format!("task failed: {e}"),
        }),
    }
}

/// The largest message body [`node::MeshNode::send`] takes, in bytes.
#[uniffi::export]
pub fn max_message_len() -> u64 {
    mesh_node::messaging::MAX_BODY_LEN as u64
}

/// This library's version (the crate's), for an app's about screen and bug reports.
#[uniffi::export]
pub fn mesh_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
