//! Two transports as one: each link of either kind does everything a link does, and accepting
//! goes on while one transport still accepts and ends once neither does.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::memory::{LinkConfig, MemoryConnection, MemoryNetwork, MemoryTransport};
use mesh_transport::multi::{Either, Transports};
use mesh_transport::{Connection, Frame, ProtocolId, Transport, TransportError, TransportKind};

type Mem = MemoryTransport<TokioRuntime>;
type Conn = MemoryConnection<TokioRuntime>;

/// A transport that has stopped: it neither dials nor accepts.
struct Stopped;

#[async_trait]
impl Transport for Stopped {
    type Connection = Conn;

    fn kind(&self) -> TransportKind {
        TransportKind::Ble
    }
    async fn dial(&self, _peer: PeerId, address: &str) -> Result<Conn, TransportError> {
        Err(TransportError::Unreachable(address.to_string()))
    }
    async fn accept(&self) -> Result<Conn, TransportError> {
        Err(TransportError::Closed)
    }
}

fn frame(n: u8) -> Frame {
    Frame::new(ProtocolId::GOSSIP, vec![n]).unwrap()
}

/// `ours` pings, sends and receives through the `Either`, `theirs` is the plain far end.
async fn exercise(ours: &Either<Conn, Conn>, theirs: &Conn, me: PeerId) {
    assert_eq!(theirs.remote(), me);
    assert_eq!(ours.kind(), TransportKind::Memory);
    assert!(!ours.initiated_here(), "a memory link never says so");
    assert_eq!(ours.quality().samples, 0);
    ours.ping().await.unwrap();
    ours.send(frame(1)).await.unwrap();
    ours.send_unreliable(frame(2)).await.unwrap();
    // The far end answers the ping on its way to the frames.
    assert_eq!(theirs.recv().await.unwrap(), frame(1));
    assert_eq!(theirs.recv().await.unwrap(), frame(2));
    theirs.send(frame(3)).await.unwrap();
    // And the pong is taken on the way to its frame.
    assert_eq!(ours.recv().await.unwrap(), frame(3));
    assert_eq!(ours.quality().samples, 1);
    ours.close().await.unwrap();
    assert_eq!(theirs.recv().await, Err(TransportError::Closed));
}

#[tokio::test]
async fn links_of_either_transport_do_everything_a_link_does() {
    let rt = TokioRuntime::current();
    let (lan, radio) = (
        MemoryNetwork::new(rt.clone(), LinkConfig::default()),
        MemoryNetwork::new(rt.clone(), LinkConfig::default()),
    );
    let (x, y) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let both: Transports<Mem, Mem> = Transports::new(
        lan.transport(Arc::clone(&x), "mem:x").unwrap(),
        radio.transport(Arc::clone(&x), "ble:x").unwrap(),
        &["ble:"],
        &rt,
    );
    let shown = format!("{both:?}");
    assert!(shown.contains("second_prefixes: [\"ble:\"]"), "{shown}");
    let y_lan = lan.transport(Arc::clone(&y), "mem:y").unwrap();
    let y_radio = radio.transport(Arc::clone(&y), "ble:y").unwrap();

    let (first, theirs) = tokio::join!(both.dial(y.peer_id(), "mem:y"), y_lan.accept());
    let first = first.unwrap();
    assert!(matches!(first, Either::First(_)), "{first:?}");
    assert_eq!(first.remote(), y.peer_id());
    exercise(&first, &theirs.unwrap(), x.peer_id()).await;

    let (second, theirs) = tokio::join!(both.dial(y.peer_id(), "ble:y"), y_radio.accept());
    let second = second.unwrap();
    assert!(matches!(second, Either::Second(_)), "{second:?}");
    assert_eq!(second.remote(), y.peer_id());
    exercise(&second, &theirs.unwrap(), x.peer_id()).await;

    // An address on the wrong network goes nowhere.
    assert!(matches!(
        both.dial(y.peer_id(), "ble:nowhere").await,
        Err(TransportError::Unreachable(_))
    ));
}

#[tokio::test]
async fn accepting_goes_on_while_one_transport_does_and_ends_when_neither_does() {
    let rt = TokioRuntime::current();
    let net = MemoryNetwork::new(rt.clone(), LinkConfig::default());
    let (x, y) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let one: Transports<Mem, Stopped> = Transports::new(
        net.transport(Arc::clone(&x), "mem:x").unwrap(),
        Stopped,
        &["ble:"],
        &rt,
    );
    // The first transport's kind speaks for the pair.
    assert_eq!(one.kind(), TransportKind::Memory);
    let ty = net.transport(Arc::clone(&y), "mem:y").unwrap();
    let (dialed, accepted) = tokio::join!(ty.dial(x.peer_id(), "mem:x"), one.accept());
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
    assert!(matches!(accepted, Either::First(_)));
    assert_eq!(accepted.remote(), y.peer_id());
    dialed.send(frame(9)).await.unwrap();
    assert_eq!(accepted.recv().await.unwrap(), frame(9));
    // Dials for the stopped one fail as it says.
    assert_eq!(
        one.dial(y.peer_id(), "ble:y").await.unwrap_err(),
        TransportError::Unreachable("ble:y".into())
    );

    let none: Transports<Stopped, Stopped> = Transports::new(Stopped, Stopped, &["ble:"], &rt);
    assert_eq!(none.kind(), TransportKind::Ble);
    assert_eq!(none.accept().await.unwrap_err(), TransportError::Closed);
    assert_eq!(none.accept().await.unwrap_err(), TransportError::Closed);
}
