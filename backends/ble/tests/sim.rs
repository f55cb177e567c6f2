//! BLE links over the simulated radio: MTU 23 and 517, loss and reordering of whole GATT writes,
//! disconnects, and an impostor refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use mesh_crypto::Identity;
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::handshake::HandshakeError;
use mesh_transport::{Connection, Frame, ProtocolId, TransportError, TransportKind};
use mesh_transport_ble::link::BleConnection;
use mesh_transport_ble::radio::{SimConfig, SimRadio};

type Link = BleConnection<SimRadio<TokioRuntime>, TokioRuntime>;

async fn pair(mtu: usize) -> (Link, Link, Identity, Identity) {
    let rt = TokioRuntime::current();
    let (ra, rb) = SimRadio::pair(
        &rt,
        SimConfig {
            mtu,
            credits: 64,
            ..SimConfig::default()
        },
    );
    let (a, b) = (Identity::generate(), Identity::generate());
    let (ca, cb) = tokio::join!(
        BleConnection::connect(ra, rt.clone(), &a, b.peer_id()),
        BleConnection::accept(rb, rt.clone(), &b)
    );
    (ca.unwrap(), cb.unwrap(), a, b)
}

fn frame(n: u32, len: usize) -> Frame {
    let mut p = n.to_le_bytes().to_vec();
    p.resize(len.max(4), 0xab);
    Frame::new(ProtocolId::MESSAGING, p).unwrap()
}

#[tokio::test]
async fn frames_cross_at_the_smallest_and_largest_mtu() {
    for mtu in [23, 517] {
        let (ca, cb, a, b) = pair(mtu).await;
        assert_eq!((ca.remote(), cb.remote()), (b.peer_id(), a.peer_id()));
        assert_eq!(ca.kind(), TransportKind::Ble);
        for (i, len) in [4usize, 100, 5_000, 70_000].into_iter().enumerate() {
            let n = u32::try_from(i).unwrap();
            let (sent, got) = tokio::join!(ca.send(frame(n, len)), cb.recv());
            sent.unwrap();
            assert_eq!(got.unwrap(), frame(n, len), "mtu {mtu} len {len}");
            let (sent, got) = tokio::join!(cb.send(frame(n, len)), ca.recv());
            sent.unwrap();
            assert_eq!(got.unwrap(), frame(n, len));
        }
    }
}

#[tokio::test]
async fn loss_and_reordering_of_whole_writes() {
    for mtu in [23, 517] {
        let (ca, cb, _, _) = pair(mtu).await;
        ca.radio().set_loss(0.05);
        ca.radio().set_reorder(0.2);
        let sender = async {
            for i in 0..200u32 {
                ca.send(frame(i, 60)).await.unwrap();
            }
            // Stop the impairments and send a marker so nothing is left held back.
            ca.radio().set_loss(0.0);
            ca.radio().set_reorder(0.0);
            ca.send(frame(u32::MAX, 4)).await.unwrap();
        };
        let receiver = async {
            let mut got = Vec::new();
            loop {
                let f = cb.recv().await.unwrap();
                let n = u32::from_le_bytes(f.payload[..4].try_into().unwrap());
                if n == u32::MAX {
                    break got;
                }
                got.push(n);
            }
        };
        let ((), got) = tokio::join!(sender, receiver);
        // Each intact message arrives once and in order; lost or reordered ones are dropped.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "mtu {mtu}: order");
        assert!(
            got.len() >= 20,
            "mtu {mtu}: only {} of 200 arrived",
            got.len()
        );
        assert!(
            got.len() < 200 || mtu == 517,
            "mtu {mtu}: with 5% loss of writes some messages must be lost"
        );
    }
}

#[tokio::test]
async fn a_disconnect_ends_the_link_with_closed() {
    let (ca, cb, _, _) = pair(23).await;
    ca.radio().disconnect();
    assert_eq!(ca.send(frame(1, 10)).await, Err(TransportError::Closed));
    assert_eq!(cb.recv().await, Err(TransportError::Closed));
}

#[tokio::test]
async fn an_impostor_peripheral_is_refused() {
    let rt = TokioRuntime::current();
    let (ra, rb) = SimRadio::pair(&rt, SimConfig::default());
    let (a, expected, mallory) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let accept = BleConnection::accept(rb, rt.clone(), &mallory);
    let connect = BleConnection::connect(ra, rt.clone(), &a, expected.peer_id());
    let (connected, ()) = tokio::join!(connect, async {
        tokio::select! {
            r = accept => { drop(r); }
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    });
    assert_eq!(
        connected.unwrap_err(),
        TransportError::Handshake(HandshakeError::UnexpectedPeer {
            expected: expected.peer_id(),
            actual: mallory.peer_id()
        })
    );
}

mod transport {
    use std::sync::Arc;

    use mesh_crypto::Identity;
    use mesh_platform::runtime::TokioRuntime;
    use mesh_transport::handshake::HandshakeError;
    use mesh_transport::{Connection, Transport, TransportError, TransportKind};
    use mesh_transport_ble::radio::{SimConfig, SimRadio};
    use mesh_transport_ble::transport::{BleTransport, Role};

    type Ble = BleTransport<SimRadio<TokioRuntime>, TokioRuntime>;

    #[tokio::test]
    async fn attached_radios_become_accepted_links_on_both_sides() {
        let rt = TokioRuntime::current();
        let (a, b) = (
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        );
        let (ta, attach_a): (Ble, _) = BleTransport::new(Arc::clone(&a), rt.clone());
        let (tb, attach_b): (Ble, _) = BleTransport::new(Arc::clone(&b), rt.clone());
        let (ra, rb) = SimRadio::pair(&rt, SimConfig::default());
        // The central does not know who it connected to (no peer in BLE advertisements).
        let (pa, pb) = tokio::join!(
            attach_a.attach(ra, Role::Central, None),
            attach_b.attach(rb, Role::Peripheral, None)
        );
        assert_eq!((pa.unwrap(), pb.unwrap()), (b.peer_id(), a.peer_id()));
        let (ca, cb) = (ta.accept().await.unwrap(), tb.accept().await.unwrap());
        assert_eq!((ca.remote(), cb.remote()), (b.peer_id(), a.peer_id()));
        // The central's link counts as dialed by it, though it came through accept.
        assert!(ca.initiated_here() && !cb.initiated_here());
        assert_eq!(ta.kind(), TransportKind::Ble);
        // Dialing is the platform's job.
        assert!(matches!(
            ta.dial(b.peer_id(), "ble:device").await,
            Err(TransportError::Unreachable(_))
        ));
        // Accept ends once no attacher is left.
        drop(attach_a);
        assert!(matches!(ta.accept().await, Err(TransportError::Closed)));
    }

    #[tokio::test]
    async fn an_unexpected_peer_is_refused_in_either_role() {
        let rt = TokioRuntime::current();
        let (a, b, c) = (
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
            Identity::generate(),
        );
        for role in [Role::Central, Role::Peripheral] {
            let (ta, attach_a): (Ble, _) = BleTransport::new(Arc::clone(&a), rt.clone());
            let (_tb, attach_b): (Ble, _) = BleTransport::new(Arc::clone(&b), rt.clone());
            let (ra, rb) = SimRadio::pair(&rt, SimConfig::default());
            let other = if role == Role::Central {
                Role::Peripheral
            } else {
                Role::Central
            };
            let (pa, _) = tokio::join!(
                attach_a.attach(ra, role, Some(c.peer_id())),
                attach_b.attach(rb, other, None)
            );
            assert!(
                matches!(
                    pa,
                    Err(TransportError::Handshake(
                        HandshakeError::UnexpectedPeer { .. }
                    ))
                ),
                "{role:?}: {pa:?}"
            );
            // Nothing was handed to the pool.
            drop(attach_a);
            assert!(matches!(ta.accept().await, Err(TransportError::Closed)));
        }
    }
}
