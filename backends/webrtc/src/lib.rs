//! WebRTC transport for mesh.
//!
//! Two data channels per link, negotiated out of band (no in-band DCEP round trip): a
//! reliable, ordered one (stream 0) for protocol traffic and an unordered one without
//! retransmissions (stream 1) for [`Connection::send_unreliable`](mesh_transport::Connection).
//! Once both are open, the mesh handshake runs on the reliable channel with the DTLS
//! certificate fingerprints of both ends as its channel binding ([`wire::channel_binding`]):
//! a signaling server or relay that terminates DTLS itself to sit in the middle makes the two
//! ends sign different transcripts, and the link is refused. Frames then travel inside DTLS as
//! they are (no second encryption), cut into 16 KiB messages.
//!
//! - [`wire`]: descriptions, fingerprints and chunking (sans-IO, every target).
//! - [`signaling`]: the [`Signaling`](signaling::Signaling) trait and its three
//!   implementations (relayed through the mesh, HTTP, signed copy-paste / QR text).
//! - Native (`WebRtcTransport`): webrtc-rs 0.21 on tokio. ICE servers are configurable and
//!   none are used by default.
//! - Browser (`BrowserTransport`, wasm32): the browser's `RTCPeerConnection` through web-sys,
//!   behind the same traits.

//!
//! ```
//! # #[cfg(not(target_arch = "wasm32"))]
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mesh_crypto::Identity;
//! use mesh_transport::{Connection, Frame, ProtocolId, Transport};
//! use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport, signaling::http::HttpSignaling};
//!
//! // Bob serves HTTP signaling; Alice dials him through it.
//! let bob_id = Arc::new(Identity::generate());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let bob_sig = Arc::new(HttpSignaling::serve(listener)?);
//! let url = bob_sig.url().ok_or("not serving")?;
//! let bob = WebRtcTransport::new(bob_id.clone(), bob_sig, WebRtcConfig::loopback());
//! let alice = WebRtcTransport::new(
//!     Arc::new(Identity::generate()),
//!     Arc::new(HttpSignaling::client()),
//!     WebRtcConfig::loopback(),
//! );
//! let (a, b) = tokio::join!(alice.dial(bob_id.peer_id(), &url), bob.accept());
//! let (a, b) = (a?, b?); // both identities proven over the DTLS-bound handshake
//! a.send(Frame::new(ProtocolId::MESSAGING, b"hi".to_vec())?).await?;
//! assert_eq!(b.recv().await?.payload, b"hi");
//! # Ok(())
//! # }
//! # #[cfg(target_arch = "wasm32")]
//! # fn main() {}
//! ```

#![forbid(unsafe_code)]

mod session;
pub mod signaling;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(all(feature = "raw", not(target_arch = "wasm32")))]
pub mod raw;

#[cfg(target_arch = "wasm32")]
pub use browser::{BrowserConfig, BrowserConnection, BrowserTransport};
#[cfg(not(target_arch = "wasm32"))]
pub use native::{WebRtcConfig, WebRtcConnection, WebRtcTransport};

/// Runs `f` when the returned guard is dropped (however the enclosing future ends).
pub(crate) fn on_drop(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
