//! Raw data channels, without the mesh link on top: the baseline of the transport benchmark,
//! and a misbehaving peer for tests (it can put any bytes on a channel after an honest
//! handshake). Behind the `raw` feature; not for production use.

use mesh_crypto::{Identity, PeerId};
use mesh_transport::TransportError;

use crate::WebRtcConfig;
use crate::native::{Peer, dial_peer};
use crate::session::RtcPeer;
use crate::signaling::Signaling;

/// One end of an open reliable, ordered data channel.
pub struct RawChannel {
    peer: Peer,
}

impl std::fmt::Debug for RawChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawChannel").finish_non_exhaustive()
    }
}

impl RawChannel {
    /// Two peer connections in this process, connected by handing the SDPs across directly,
    /// with their channels open. No handshake.
    ///
    /// # Errors
    /// Any WebRTC failure.
    pub async fn pair(config: &WebRtcConfig) -> Result<(Self, Self), TransportError> {
        let (mut a, offer) = RawPending::offer(config).await?;
        let (b, answer) = RawPending::answer(&offer, config).await?;
        a.accept_answer(&answer).await?;
        let (a, b) = tokio::join!(a.open(), b.open());
        Ok((a?, b?))
    }

    /// Dials `peer` like the transport does, handshake included, and hands over the raw
    /// channel instead of a connection.
    ///
    /// # Errors
    /// What [`crate::WebRtcTransport`]'s dial returns.
    pub async fn dial<S: Signaling>(
        identity: &Identity,
        signaling: &S,
        config: &WebRtcConfig,
        peer: PeerId,
        address: &str,
    ) -> Result<Self, TransportError> {
        let (p, _) = dial_peer(identity, signaling, config, peer, address).await?;
        Ok(Self { peer: p })
    }

    /// Sends one data-channel message exactly as given.
    ///
    /// # Errors
    /// [`TransportError::Closed`].
    pub async fn send(&self, message: &[u8]) -> Result<(), TransportError> {
        self.peer.send_message(message).await
    }

    /// The next data-channel message.
    ///
    /// # Errors
    /// [`TransportError::Closed`] once the channel closed.
    pub async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.peer.recv_message().await
    }

    /// Closes the peer connection.
    pub async fn close(&self) {
        let _ = self.peer.pc.close().await;
    }
}

/// A peer connection whose SDP is being swapped by hand (channels not open yet).
pub struct RawPending {
    peer: Peer,
}

impl std::fmt::Debug for RawPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPending").finish_non_exhaustive()
    }
}

impl RawPending {
    /// A new peer connection and its offer SDP (ICE gathered).
    ///
    /// # Errors
    /// Any WebRTC failure.
    pub async fn offer(config: &WebRtcConfig) -> Result<(Self, String), TransportError> {
        let mut peer = Peer::open(config).await?;
        let sdp = peer.create_offer().await?;
        Ok((Self { peer }, sdp))
    }

    /// A new peer connection answering `offer`, and its answer SDP.
    ///
    /// # Errors
    /// Any WebRTC failure.
    pub async fn answer(
        offer: &str,
        config: &WebRtcConfig,
    ) -> Result<(Self, String), TransportError> {
        let mut peer = Peer::open(config).await?;
        let sdp = peer.create_answer(offer).await?;
        Ok((Self { peer }, sdp))
    }

    /// Applies the answer to an [`RawPending::offer`].
    ///
    /// # Errors
    /// Any WebRTC failure.
    pub async fn accept_answer(&mut self, answer: &str) -> Result<(), TransportError> {
        self.peer.accept_answer(answer).await
    }

    /// Waits until both channels are open.
    ///
    /// # Errors
    /// [`TransportError::Closed`] if the connection failed.
    pub async fn open(mut self) -> Result<RawChannel, TransportError> {
        self.peer.wait_open().await?;
        Ok(RawChannel { peer: self.peer })
    }
}
