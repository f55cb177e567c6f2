//! Signaling: how two peers swap their session descriptions before a WebRTC link exists.
//!
//! Signaling only moves bytes and is never trusted: a description that was altered, swapped or
//! replayed on its way makes the mesh handshake fail on the connected channel (its binding
//! covers the DTLS fingerprints both ends actually used). Three implementations:
//!
//! - [`mesh::MeshSignaling`]: relayed through an existing mesh connection (a peer introduces
//!   two of its neighbours); the same type is the relay's side.
//! - [`http::HttpSignaling`]: an HTTP endpoint (what `meshd` serves for browsers and first
//!   contact) and its client.
//! - [`manual::ManualSignaling`]: signed copy-paste / QR text for manual pairing.
//!
//! [`routed::RoutedSignaling`] puts the first two behind one address space: `http(s)://...`
//! for an endpoint, `relay:PEER_ID` for a neighbour that relays.

pub mod http;
pub mod manual;
pub mod mesh;
pub mod routed;

use async_trait::async_trait;
use mesh_crypto::PeerId;
use mesh_platform::{MaybeSend, MaybeSync};

/// Why signaling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The address or peer cannot be reached through this signaling.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("signaling timed out")]
    Timeout,
    /// The signaling channel is gone.
    #[error("signaling closed")]
    Closed,
    /// A message over the size limit.
    #[error("signaling message of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that do not parse, or a signature that does not verify.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// The other side refused.
    #[error("refused: {0}")]
    Refused(String),
}

/// Sends the answer to one incoming offer back the way the offer came.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Responder: MaybeSend {
    /// Sends `answer`.
    async fn answer(self: Box<Self>, answer: Vec<u8>) -> Result<(), SignalingError>;
}

/// An offer that arrived, and the way back for its answer.
pub struct IncomingOffer {
    /// The offer's bytes (an encoded [`crate::wire::Description`], unverified).
    pub offer: Vec<u8>,
    /// Where the answer goes.
    pub responder: Box<dyn Responder>,
}

impl std::fmt::Debug for IncomingOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingOffer")
            .field("offer_len", &self.offer.len())
            .finish_non_exhaustive()
    }
}

/// A way to swap session descriptions.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Signaling: MaybeSend + MaybeSync + 'static {
    /// Delivers `offer` to `to` through `address` (what the address means is up to the
    /// implementation: a relay's `PeerId`, a URL, nothing) and returns the answer's bytes.
    async fn exchange(
        &self,
        to: PeerId,
        address: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<u8>, SignalingError>;

    /// The next offer addressed to this peer. Implementations that cannot receive offers
    /// return [`SignalingError::Closed`].
    async fn incoming(&self) -> Result<IncomingOffer, SignalingError>;
}

/// Longest signaling message any implementation accepts: a description plus framing.
pub const MAX_SIGNALING_MESSAGE: usize = crate::wire::MAX_DESCRIPTION_LEN + 256;
