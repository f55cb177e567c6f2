//! A browser peer (headless Chromium, the browser's `RTCPeerConnection`) and a native peer
//! (webrtc-rs) exchange authenticated frames over WebRTC.
//!
//! Needs the native `test-peer` example running; `cargo xtask ci` (and `cargo xtask
//! test-wasm`) starts it and passes its address at build time in `MESH_TEST_PEER`.

#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    // Built without the variable by clippy and plain `cargo test`; run, it says what to do.
    clippy::option_env_unwrap
)] // test code

use std::rc::Rc;

use mesh_crypto::{Identity, PeerId};
use mesh_transport::frame::MAX_FRAME_PAYLOAD;
use mesh_transport::{Connection, Frame, ProtocolId, Transport, TransportKind};
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{BrowserConfig, BrowserTransport};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn native_peer() -> (String, PeerId) {
    let spec = option_env!("MESH_TEST_PEER").expect(
        "MESH_TEST_PEER is not set: run this test through `cargo xtask test-wasm`, which starts \
         the native test peer",
    );
    let (url, peer) = spec
        .split_once(' ')
        .expect("MESH_TEST_PEER is `URL PEERID`");
    (url.to_string(), peer.parse().expect("a PeerId"))
}

#[wasm_bindgen_test]
async fn browser_and_native_peers_exchange_authenticated_frames() {
    let (url, native) = native_peer();
    let identity = Rc::new(Identity::generate());
    let transport = BrowserTransport::new(
        identity,
        Rc::new(HttpSignaling::client()),
        BrowserConfig::default(),
    );
    let conn = transport.dial(native, &url).await.unwrap();
    assert_eq!(conn.remote(), native);
    assert_eq!(conn.kind(), TransportKind::WebRtc);
    for len in [0, 1000, 100_000, MAX_FRAME_PAYLOAD] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let f = Frame::new(ProtocolId::GOSSIP, payload).unwrap();
        conn.send(f.clone()).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), f, "echo of {len} bytes");
    }
    // Round-trip time is measured from a ping (the echo comes after the pong).
    conn.ping().await.unwrap();
    let f = Frame::new(ProtocolId::MESSAGING, b"after ping".to_vec()).unwrap();
    conn.send(f.clone()).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), f);
    assert!(conn.quality().rtt.is_some());
    // The unordered channel, both ways (loopback loses nothing).
    let f = Frame::new(ProtocolId::MESSAGING, vec![0xff, 1, 2, 3]).unwrap();
    conn.send_unreliable(f.clone()).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), f);
    conn.close().await.unwrap();
}

#[wasm_bindgen_test]
async fn the_browser_refuses_a_peer_that_is_not_the_one_dialled() {
    let (url, _) = native_peer();
    let impostor_target = Identity::generate().peer_id();
    let transport = BrowserTransport::new(
        Rc::new(Identity::generate()),
        Rc::new(HttpSignaling::client()),
        BrowserConfig::default(),
    );
    // The native peer answers offers addressed to it only: an offer for someone else is
    // refused at the endpoint, and the dial fails without a link.
    let e = transport.dial(impostor_target, &url).await.err().unwrap();
    assert!(
        matches!(e, mesh_transport::TransportError::Unreachable(ref m) if m.contains("refused")),
        "{e:?}"
    );
}
