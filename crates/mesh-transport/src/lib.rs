//! Links between peers, behind traits: the protocol crates never see WebRTC or BLE.
//!
//! - [`Transport`] dials and accepts; a [`Connection`] sends and receives [`Frame`]s (each
//!   tagged with a [`ProtocolId`], so every protocol shares one link), knows its authenticated
//!   remote [`PeerId`], and reports a [`ConnectionQuality`] measured from pings.
//! - [`handshake`]: the authenticated key exchange every link runs first (sans-IO), bound to
//!   the channel so a relay cannot splice itself in.
//! - [`secure`]: frame encryption for links without their own.
//! - [`pool`]: one link per peer shared by every protocol: dials on demand, accepts, and hands
//!   each protocol its frames.
//! - [`memory`]: an in-process transport with configurable latency, loss and queue size, for
//!   tests and the simulator.
//!
//! Limits: frames up to [`frame::MAX_FRAME_PAYLOAD`] bytes (checked before allocating), bounded
//! send queues (sending waits when the queue is full: backpressure).

#![forbid(unsafe_code)]

pub mod frame;
pub mod handshake;
pub mod link;
pub mod memory;
pub mod multi;
pub mod pool;
pub mod quality;
pub mod secure;

use async_trait::async_trait;
pub use frame::{Frame, ProtocolId};
use mesh_crypto::PeerId;
use mesh_platform::{MaybeSend, MaybeSync};
pub use quality::ConnectionQuality;

/// The kind of link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// In-process (tests, simulation).
    Memory,
    /// WebRTC data channel.
    WebRtc,
    /// Bluetooth Low Energy GATT.
    Ble,
}

/// Errors of transports and connections. Bad input from a peer closes the link with one of
/// these; it never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The link is closed.
    #[error("connection closed")]
    Closed,
    /// A frame over [`frame::MAX_FRAME_PAYLOAD`].
    #[error("frame of {len} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message that does not parse.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// A sealed message whose counter was already used.
    #[error("replayed or reordered message")]
    Replay,
    /// A sealed message that does not authenticate.
    #[error("message failed authentication")]
    Decryption,
    /// The handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] handshake::HandshakeError),
    /// Nobody listens at the address.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The remote did not answer in time.
    #[error("timed out")]
    Timeout,
}

/// An authenticated link to one peer.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Connection: MaybeSend + MaybeSync {
    /// The remote's identity, proven by the handshake.
    fn remote(&self) -> PeerId;
    /// What kind of link this is.
    fn kind(&self) -> TransportKind;
    /// Measured quality (round-trip time, loss).
    fn quality(&self) -> ConnectionQuality;
    /// Sends a frame; waits while the send queue is full.
    async fn send(&self, frame: Frame) -> Result<(), TransportError>;
    /// Sends a frame that may be lost or overtaken, for traffic that tolerates it (presence,
    /// live typing, media-like streams). Links with such a channel (WebRTC: unordered, no
    /// retransmissions) use it and may refuse frames larger than it carries; the others send
    /// it like [`Connection::send`].
    async fn send_unreliable(&self, frame: Frame) -> Result<(), TransportError> {
        self.send(frame).await
    }
    /// The next application frame. Control frames (pings, close) are handled inside.
    async fn recv(&self) -> Result<Frame, TransportError>;
    /// Sends a ping; its pong updates [`Connection::quality`] when it arrives.
    async fn ping(&self) -> Result<(), TransportError>;
    /// Closes the link (the remote's `recv` then returns [`TransportError::Closed`]).
    async fn close(&self) -> Result<(), TransportError>;
    /// Whether this side started the link although it came through [`Transport::accept`]: a
    /// BLE link whose central is this device, which the platform connected and handed over.
    /// The pool treats such a link as dialed by this side when it chooses between two links
    /// to one peer, so that both sides choose the same. Default: no.
    fn initiated_here(&self) -> bool {
        false
    }
}

/// Dials and accepts links of one kind.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Transport: MaybeSend + MaybeSync {
    /// The connection type.
    type Connection: Connection;
    /// What kind of links this makes.
    fn kind(&self) -> TransportKind;
    /// Opens a link to `peer` at `address`; refused unless the remote proves it is `peer`.
    async fn dial(&self, peer: PeerId, address: &str) -> Result<Self::Connection, TransportError>;
    /// The next incoming link, authenticated.
    async fn accept(&self) -> Result<Self::Connection, TransportError>;
}
