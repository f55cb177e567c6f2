//! Native WebRTC links on loopback: several peers exchanging frames both ways through every
//! kind of signaling, a signaling relay that splices itself in and is refused, and bad input
//! from an authenticated peer closing the link with a typed error.

#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::many_single_char_names
)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::frame::MAX_FRAME_PAYLOAD;
use mesh_transport::handshake::HandshakeError;
use mesh_transport::memory::{LinkConfig, MemoryNetwork};
use mesh_transport::{Connection, Frame, ProtocolId, Transport, TransportError, TransportKind};
use mesh_transport_webrtc::raw::{RawChannel, RawPending};
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::signaling::manual::ManualSignaling;
use mesh_transport_webrtc::signaling::mesh::MeshSignaling;
use mesh_transport_webrtc::signaling::{IncomingOffer, Signaling, SignalingError};
use mesh_transport_webrtc::wire::{self, Description, DescriptionKind};
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};

const T: Duration = Duration::from_secs(30);

async fn http_peer(seed: u8) -> (Arc<Identity>, WebRtcTransport<HttpSignaling>, String) {
    let identity = Arc::new(Identity::from_seed(&[seed; 32]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let signaling = Arc::new(HttpSignaling::serve(listener).unwrap());
    let url = signaling.url().unwrap();
    let t = WebRtcTransport::new(identity.clone(), signaling, WebRtcConfig::loopback());
    (identity, t, url)
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Sends a small, a multi-chunk and a largest frame each way and checks them.
async fn exchange_frames(a: &dyn Connection, b: &dyn Connection) {
    let sizes = [0, 1000, 100_000, MAX_FRAME_PAYLOAD];
    for (i, &len) in sizes.iter().enumerate() {
        let fa = Frame::new(ProtocolId::GOSSIP, payload(i as u8, len)).unwrap();
        let fb = Frame::new(ProtocolId::DHT, payload(100 + i as u8, len)).unwrap();
        let (ra, rb) = tokio::join!(
            async {
                a.send(fa.clone()).await.unwrap();
                a.recv().await.unwrap()
            },
            async {
                b.send(fb.clone()).await.unwrap();
                b.recv().await.unwrap()
            }
        );
        assert_eq!(ra, fb, "frame of {len} bytes from b to a");
        assert_eq!(rb, fa, "frame of {len} bytes from a to b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_exchange_frames_both_ways_over_http_signaling() {
    let mut peers = Vec::new();
    for seed in 1..=4 {
        peers.push(http_peer(seed).await);
    }
    let peers = Arc::new(peers);
    let mut links = 0;
    for i in 0..peers.len() {
        for j in i + 1..peers.len() {
            let (a, b) = tokio::time::timeout(T, async {
                let (_, ta, _) = &peers[i];
                let (idb, tb, url) = &peers[j];
                tokio::join!(ta.dial(idb.peer_id(), url), tb.accept())
            })
            .await
            .unwrap();
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.remote(), peers[j].0.peer_id());
            assert_eq!(b.remote(), peers[i].0.peer_id());
            assert_eq!(a.kind(), TransportKind::WebRtc);
            tokio::time::timeout(T, exchange_frames(&a, &b))
                .await
                .unwrap();
            // Quality is measured, not assumed.
            assert_eq!(a.quality().rtt, None);
            a.ping().await.unwrap();
            // b answers the ping before it reads the next frame, and a reads the pong before
            // b's reply: both channels are ordered.
            let f = Frame::new(ProtocolId::MESSAGING, b"after ping".to_vec()).unwrap();
            a.send(f.clone()).await.unwrap();
            assert_eq!(b.recv().await.unwrap(), f);
            b.send(f.clone()).await.unwrap();
            assert_eq!(a.recv().await.unwrap(), f);
            assert!(a.quality().rtt.is_some(), "the pong came before the reply");
            // Close: the other side sees the link end.
            a.close().await.unwrap();
            assert_eq!(
                tokio::time::timeout(T, b.recv()).await.unwrap(),
                Err(TransportError::Closed)
            );
            links += 1;
        }
    }
    assert_eq!(links, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreliable_frames_arrive_on_loopback_and_oversized_ones_are_refused() {
    let (_, ta, _) = http_peer(11).await;
    let (idb, tb, url) = http_peer(12).await;
    let (a, b) = tokio::join!(ta.dial(idb.peer_id(), &url), tb.accept());
    let (a, b) = (a.unwrap(), b.unwrap());
    let f = Frame::new(ProtocolId::MESSAGING, vec![7; 1000]).unwrap();
    a.send_unreliable(f.clone()).await.unwrap();
    // Loopback does not lose packets; a lost frame would time out here.
    assert_eq!(tokio::time::timeout(T, b.recv()).await.unwrap().unwrap(), f);
    let big = Frame::new(
        ProtocolId::MESSAGING,
        vec![0; wire::MAX_UNRELIABLE_FRAME + 1],
    )
    .unwrap();
    assert!(matches!(
        a.send_unreliable(big).await,
        Err(TransportError::FrameTooLarge { .. })
    ));
    // The reliable path still works afterwards.
    a.send(f.clone()).await.unwrap();
    assert_eq!(b.recv().await.unwrap(), f);
}

/// Hands each node's `SIGNALING` frames to its `MeshSignaling`, as mesh-node's dispatcher does.
fn pump(signaling: Arc<MeshSignaling>, link: Arc<dyn Connection>) {
    tokio::spawn(async move {
        while let Ok(frame) = link.recv().await {
            if frame.protocol == ProtocolId::SIGNALING {
                let _ = signaling.on_frame(link.remote(), &frame.payload).await;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_relays_signaling_between_two_peers() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (21..=23)
        .map(|s| Arc::new(Identity::from_seed(&[s; 32])))
        .collect();
    let mem: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| net.transport(id.clone(), &format!("m{i}")).unwrap())
        .collect();
    let sig: Vec<Arc<MeshSignaling>> = ids
        .iter()
        .map(|id| Arc::new(MeshSignaling::new(id.peer_id())))
        .collect();
    // Memory links a-r and r-b; a and b are not neighbours.
    for (x, y) in [(0, 1), (2, 1)] {
        let address = format!("m{y}");
        let (cx, cy) = tokio::join!(mem[x].dial(ids[y].peer_id(), &address), mem[y].accept());
        let (cx, cy): (Arc<dyn Connection>, Arc<dyn Connection>) =
            (Arc::new(cx.unwrap()), Arc::new(cy.unwrap()));
        sig[x].add_link(cx.clone());
        sig[y].add_link(cy.clone());
        pump(sig[x].clone(), cx);
        pump(sig[y].clone(), cy);
    }
    let ta = WebRtcTransport::new(ids[0].clone(), sig[0].clone(), WebRtcConfig::loopback());
    let tb = WebRtcTransport::new(ids[2].clone(), sig[2].clone(), WebRtcConfig::loopback());
    let relay = ids[1].peer_id().to_string();
    let (a, b) = tokio::time::timeout(T, async {
        tokio::join!(ta.dial(ids[2].peer_id(), &relay), tb.accept())
    })
    .await
    .unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(b.remote(), ids[0].peer_id());
    tokio::time::timeout(T, exchange_frames(&a, &b))
        .await
        .unwrap();

    // A peer the relay has no link to is reported unreachable, quickly.
    let stranger = Identity::from_seed(&[99; 32]).peer_id();
    let e = tokio::time::timeout(T, ta.dial(stranger, &relay))
        .await
        .unwrap();
    assert!(
        matches!(&e, Err(TransportError::Unreachable(m)) if m.contains("unreachable")),
        "{e:?}"
    );
    // Upgrading a direct neighbour link: no relay address.
    let tr = WebRtcTransport::new(ids[1].clone(), sig[1].clone(), WebRtcConfig::loopback());
    let (a, r) = tokio::join!(ta.dial(ids[1].peer_id(), ""), tr.accept());
    let (a, r) = (a.unwrap(), r.unwrap());
    assert_eq!(r.remote(), ids[0].peer_id());
    let f = Frame::new(ProtocolId::BLOB, b"direct".to_vec()).unwrap();
    a.send(f.clone()).await.unwrap();
    assert_eq!(r.recv().await.unwrap(), f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_pairing_by_signed_text() {
    let rt = TokioRuntime::current();
    let ida = Arc::new(Identity::from_seed(&[31; 32]));
    let idb = Arc::new(Identity::from_seed(&[32; 32]));
    let sa = Arc::new(ManualSignaling::new(ida.clone(), rt.clone()));
    let sb = Arc::new(ManualSignaling::new(idb.clone(), rt.clone()));
    let ta = WebRtcTransport::new(ida.clone(), sa.clone(), WebRtcConfig::loopback());
    let tb = WebRtcTransport::new(idb.clone(), sb.clone(), WebRtcConfig::loopback());
    let user = async {
        let offer = sa.next_text().await.unwrap();
        assert!(offer.starts_with("mesh://webrtc/"));
        // Tampering anywhere breaks the signature.
        let mut chars: Vec<char> = offer.chars().collect();
        let k = chars.len() - 10;
        chars[k] = if chars[k] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(matches!(
            sb.paste(&tampered),
            Err(SignalingError::Malformed(_))
        ));
        // Text meant for b cannot be used by anyone else.
        let sc = ManualSignaling::new(Arc::new(Identity::from_seed(&[33; 32])), rt.clone());
        assert!(matches!(sc.paste(&offer), Err(SignalingError::Refused(_))));
        let pasted = sb.paste(&offer).unwrap();
        assert_eq!(pasted.from, ida.peer_id());
        assert_eq!(pasted.kind, DescriptionKind::Offer);
        let answer = sb.next_text().await.unwrap();
        assert_eq!(sa.paste(&answer).unwrap().kind, DescriptionKind::Answer);
        // The same answer again finds nobody waiting.
        assert!(matches!(sa.paste(&answer), Err(SignalingError::Refused(_))));
    };
    let (a, b, ()) = tokio::time::timeout(T, async {
        tokio::join!(ta.dial(idb.peer_id(), ""), tb.accept(), user)
    })
    .await
    .unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    let f = Frame::new(ProtocolId::MESSAGING, b"paired".to_vec()).unwrap();
    a.send(f.clone()).await.unwrap();
    assert_eq!(b.recv().await.unwrap(), f);
}

/// A signaling server that splices itself in: it answers the dialler with its own peer
/// connection, offers to the real peer from another, and pipes every data-channel message
/// between the two. Only the DTLS fingerprints differ from an honest relay.
struct SplicingRelay {
    upstream: HttpSignaling,
    forwarded: Arc<AtomicUsize>,
}

#[async_trait]
impl Signaling for SplicingRelay {
    async fn exchange(
        &self,
        to: PeerId,
        address: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<u8>, SignalingError> {
        let offer = Description::decode(&offer).unwrap();
        // Towards the dialler: answer its offer ourselves.
        let cfg = WebRtcConfig::loopback();
        let (toward_a, answer_sdp) = RawPending::answer(&offer.sdp, &cfg).await.unwrap();
        // Towards the real peer: our own offer, in the dialler's name.
        let (mut toward_b, sdp) = RawPending::offer(&cfg).await.unwrap();
        let d = Description {
            kind: DescriptionKind::Offer,
            session: offer.session,
            from: offer.from,
            to,
            sdp,
        };
        let answer = self
            .upstream
            .exchange(to, address, d.encode().unwrap())
            .await?;
        toward_b
            .accept_answer(&Description::decode(&answer).unwrap().sdp)
            .await
            .unwrap();
        let forwarded = self.forwarded.clone();
        tokio::spawn(async move {
            let mut a = toward_a.open().await.unwrap();
            let mut b = toward_b.open().await.unwrap();
            loop {
                tokio::select! {
                    m = a.recv() => match m { Ok(m) => { forwarded.fetch_add(1, Ordering::SeqCst); if b.send(&m).await.is_err() { break } } Err(_) => break },
                    m = b.recv() => match m { Ok(m) => { forwarded.fetch_add(1, Ordering::SeqCst); if a.send(&m).await.is_err() { break } } Err(_) => break },
                }
            }
        });
        Ok(Description {
            kind: DescriptionKind::Answer,
            session: offer.session,
            from: to,
            to: offer.from,
            sdp: answer_sdp,
        }
        .encode()
        .unwrap())
    }

    async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
        Err(SignalingError::Closed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splicing_signaling_relay_is_refused_by_the_handshake() {
    let (idb, tb, url) = http_peer(41).await;
    let ida = Arc::new(Identity::from_seed(&[42; 32]));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let relay = Arc::new(SplicingRelay {
        upstream: HttpSignaling::client(),
        forwarded: forwarded.clone(),
    });
    let ta = WebRtcTransport::new(ida, relay, WebRtcConfig::loopback());
    let dialled = tokio::time::timeout(T, ta.dial(idb.peer_id(), &url))
        .await
        .unwrap();
    assert_eq!(
        dialled.err(),
        Some(TransportError::Handshake(HandshakeError::BadSignature)),
        "the dialler must refuse the spliced link"
    );
    // The splice worked at the WebRTC level: the handshake messages crossed it (M1 to b, M2
    // back), so it is the channel binding that refused the link, not a broken pipe.
    assert!(forwarded.load(Ordering::SeqCst) >= 2);
    // And b never accepts a connection from it.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), tb.accept())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_oversized_frames_close_the_link_with_a_typed_error() {
    let (idb, tb, url) = http_peer(51).await;
    let ida = Identity::from_seed(&[52; 32]);
    let client = HttpSignaling::client();
    let config = WebRtcConfig::loopback();
    let cases: Vec<(Vec<Vec<u8>>, TransportError)> = vec![
        (
            vec![vec![0x80, 1, 2]],
            TransportError::Malformed("unknown chunk flags"),
        ),
        (
            vec![vec![]],
            TransportError::Malformed("empty data-channel message"),
        ),
        (
            vec![vec![0x01, 9, 5, 0]],
            TransportError::Malformed("unknown frame version"),
        ),
        (
            // Chunks adding up to more than the largest frame, never terminated.
            std::iter::repeat_n(
                [&[0u8][..], &[0u8; wire::CHUNK_DATA_LEN]].concat(),
                wire::Reassembler::MAX / wire::CHUNK_DATA_LEN + 1,
            )
            .collect(),
            TransportError::FrameTooLarge {
                len: (wire::Reassembler::MAX / wire::CHUNK_DATA_LEN + 1) * wire::CHUNK_DATA_LEN - 2,
                max: MAX_FRAME_PAYLOAD,
            },
        ),
        // A control frame that is not one.
        (
            vec![vec![0x01, 1, 0, 9]],
            TransportError::Malformed("unknown control frame"),
        ),
    ];
    for (messages, want) in cases {
        let (raw, b) = tokio::join!(
            RawChannel::dial(&ida, &client, &config, idb.peer_id(), &url),
            tb.accept()
        );
        let (mut raw, b) = (raw.unwrap(), b.unwrap());
        for m in &messages {
            if raw.send(m).await.is_err() {
                break;
            }
        }
        let got = tokio::time::timeout(T, b.recv()).await.unwrap();
        assert_eq!(got, Err(want.clone()), "after {} messages", messages.len());
        // Afterwards the link is closed for good, on both ends.
        assert_eq!(b.recv().await, Err(TransportError::Closed));
        assert_eq!(
            tokio::time::timeout(T, async {
                loop {
                    if raw.recv().await.is_err() {
                        return;
                    }
                }
            })
            .await,
            Ok(())
        );
    }
}
