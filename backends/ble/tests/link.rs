//! BLE links against a hand-driven peer (it runs the handshake itself, then writes whatever
//! fragments it likes): damaged, malformed, forged, replayed and reordered input; pings, close,
//! radios that misbehave, handshakes nobody answers; and the attacher's edge cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, UnixMillis};
use mesh_platform::runtime::{BoxFuture, Runtime, TokioRuntime};
use mesh_transport::handshake::{Responder, Session};
use mesh_transport::link::Link as Sealing;
use mesh_transport::{Connection, Frame, ProtocolId, Transport, TransportError};
use mesh_transport_ble::fragment::{MAX_MESSAGE_LEN, Reassembler, fragment};
use mesh_transport_ble::link::BleConnection;
use mesh_transport_ble::radio::{Radio, RadioError, SimConfig, SimRadio};
use mesh_transport_ble::transport::{BleTransport, Role};

type Sim = SimRadio<TokioRuntime>;
type Link = BleConnection<Sim, TokioRuntime>;

/// Tokio, with every timer `div` times shorter: timeouts of seconds in milliseconds.
#[derive(Clone)]
struct Fast {
    inner: TokioRuntime,
    div: u32,
}

impl Fast {
    fn new(div: u32) -> Self {
        Self {
            inner: TokioRuntime::current(),
            div,
        }
    }
}

impl Runtime for Fast {
    fn monotonic(&self) -> Duration {
        self.inner.monotonic()
    }
    fn unix_time(&self) -> UnixMillis {
        self.inner.unix_time()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(duration / self.div)
    }
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.inner.spawn(task);
    }
}

fn config(mtu: usize) -> SimConfig {
    SimConfig {
        mtu,
        credits: 64,
        ..SimConfig::default()
    }
}

fn frame(n: u8) -> Frame {
    Frame::new(ProtocolId::MESSAGING, vec![n; 12]).unwrap()
}

/// The far end, driven by hand over its radio.
struct Peer {
    radio: Sim,
    reasm: Reassembler,
    next_id: u16,
    /// Seals with the session keys of the handshake.
    sealing: Sealing,
}

impl Peer {
    async fn write_message(&mut self, message: &[u8]) {
        let id = self.next_id;
        self.next_id += 1;
        for f in fragment(id, message, self.radio.mtu()).unwrap() {
            self.radio.write(&f).await.unwrap();
        }
    }

    async fn read_message(&mut self) -> Vec<u8> {
        loop {
            let data = self.radio.read().await.unwrap();
            if let Some(m) = self.reasm.push(&data, Duration::ZERO).unwrap() {
                return m;
            }
        }
    }

    fn seal(&self, f: &Frame) -> Vec<u8> {
        self.sealing.seal_frame(f).unwrap()
    }
}

/// A link connected (as the central) to a peer driven by hand (as the peripheral).
async fn with_peer(mtu: usize) -> (Link, Peer) {
    with_peer_over(mtu, |r| r).await
}

/// As [`with_peer`], with the link's radio wrapped by `wrap`.
async fn with_peer_over<Ra: Radio>(
    mtu: usize,
    wrap: impl FnOnce(Sim) -> Ra,
) -> (BleConnection<Ra, TokioRuntime>, Peer) {
    let rt = TokioRuntime::current();
    let (ra, rb) = SimRadio::pair(&rt, config(mtu));
    let ra = wrap(ra);
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut peer = Peer {
        radio: rb,
        reasm: Reassembler::new(),
        next_id: 0,
        sealing: Sealing::plain(),
    };
    let respond = async {
        let m1 = peer.read_message().await;
        let (resp, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
        peer.write_message(&m2).await;
        let m3 = peer.read_message().await;
        resp.on_m3(&m3).unwrap()
    };
    let (conn, session): (_, Session) = tokio::join!(
        BleConnection::connect(ra, rt.clone(), &a, b.peer_id()),
        respond
    );
    peer.sealing = Sealing::sealed(session, false);
    (conn.unwrap(), peer)
}

async fn pair(mtu: usize) -> (Link, Link) {
    let rt = TokioRuntime::current();
    let (ra, rb) = SimRadio::pair(&rt, config(mtu));
    let (a, b) = (Identity::generate(), Identity::generate());
    let (ca, cb) = tokio::join!(
        BleConnection::connect_any(ra, rt.clone(), &a),
        BleConnection::accept(rb, rt.clone(), &b)
    );
    (ca.unwrap(), cb.unwrap())
}

#[tokio::test]
async fn a_message_failing_its_checksum_is_dropped_and_the_link_goes_on() {
    let (conn, mut peer) = with_peer(517).await;
    let sealed = peer.seal(&frame(1));
    let mut damaged = fragment(40, &sealed, 517).unwrap();
    assert_eq!(damaged.len(), 1);
    let last = damaged[0].len() - 1;
    damaged[0][last] ^= 1;
    peer.radio.write(&damaged[0]).await.unwrap();
    let next = peer.seal(&frame(2));
    peer.write_message(&next).await;
    assert_eq!(conn.recv().await.unwrap(), frame(2));
    // The link is still up in both directions.
    conn.send(frame(3)).await.unwrap();
    let got = peer.read_message().await;
    assert!(!got.is_empty());
}

#[tokio::test]
async fn a_malformed_fragment_closes_the_link() {
    let (conn, peer) = with_peer(23).await;
    peer.radio.write(&[9, 9, 9]).await.unwrap();
    assert_eq!(
        conn.recv().await,
        Err(TransportError::Malformed("bad GATT fragment"))
    );
    assert_eq!(conn.recv().await, Err(TransportError::Closed));
    assert_eq!(conn.send(frame(1)).await, Err(TransportError::Closed));
    assert_eq!(conn.ping().await, Err(TransportError::Closed));
}

#[tokio::test]
async fn a_forged_message_closes_the_link_with_decryption() {
    let (conn, mut peer) = with_peer(23).await;
    // Well fragmented, but not sealed with the session's key.
    let mut forged = vec![0u8; 8];
    forged.extend_from_slice(&[0x55; 40]);
    peer.write_message(&forged).await;
    assert_eq!(conn.recv().await, Err(TransportError::Decryption));
    assert_eq!(conn.recv().await, Err(TransportError::Closed));
}

#[tokio::test]
async fn replayed_and_reordered_messages_are_dropped_and_the_link_goes_on() {
    let (conn, mut peer) = with_peer(23).await;
    let (m0, m1, m2) = (
        peer.seal(&frame(0)),
        peer.seal(&frame(1)),
        peer.seal(&frame(2)),
    );
    // m1 overtakes m0; m1 is then replayed; m2 follows.
    for m in [&m1, &m0, &m1, &m2] {
        peer.write_message(m).await;
    }
    assert_eq!(conn.recv().await.unwrap(), frame(1));
    assert_eq!(conn.recv().await.unwrap(), frame(2));
}

#[tokio::test]
async fn a_close_from_the_peer_ends_the_link() {
    let (conn, mut peer) = with_peer(23).await;
    let close = peer.sealing.close().unwrap();
    peer.write_message(&close).await;
    assert_eq!(conn.recv().await, Err(TransportError::Closed));
    assert_eq!(conn.send(frame(1)).await, Err(TransportError::Closed));
}

#[tokio::test]
async fn pings_are_answered_and_their_pongs_measure_the_link() {
    let (ca, cb) = pair(23).await;
    assert_eq!(
        format!("{ca:?}"),
        format!("BleConnection {{ remote: {:?}, .. }}", ca.remote())
    );
    assert!(format!("{:?}", ca.radio()).contains("mtu: 23"));
    assert_eq!(ca.quality().samples, 0);
    ca.ping().await.unwrap();
    ca.send(frame(1)).await.unwrap();
    // Bob's recv answers the ping on its way to the frame.
    assert_eq!(cb.recv().await.unwrap(), frame(1));
    cb.send(frame(2)).await.unwrap();
    // Alice's recv takes the pong on its way to the frame.
    assert_eq!(ca.recv().await.unwrap(), frame(2));
    let q = ca.quality();
    assert_eq!(q.samples, 1, "{q:?}");
    assert!(q.rtt.is_some());
    assert_eq!(cb.quality().samples, 0, "Bob sent no ping");
}

#[tokio::test]
async fn closing_tells_the_remote_and_the_closed_side_refuses_to_send() {
    let (ca, cb) = pair(517).await;
    assert!(ca.initiated_here() && !cb.initiated_here());
    ca.close().await.unwrap();
    assert_eq!(cb.recv().await, Err(TransportError::Closed));
    assert_eq!(ca.send(frame(1)).await, Err(TransportError::Closed));
    assert_eq!(ca.recv().await, Err(TransportError::Closed));
    // Closing again is harmless.
    ca.close().await.unwrap();
    // Protocol 0 is the link's own.
    assert!(matches!(
        cb.send(Frame::new(ProtocolId::CONTROL, vec![3]).unwrap())
            .await,
        Err(TransportError::Malformed(_))
    ));
}

#[tokio::test]
async fn a_frame_needing_more_than_65535_fragments_is_refused_and_the_link_goes_on() {
    let (ca, cb) = pair(23).await;
    // 9 data bytes per fragment at MTU 23: at most 589,815 bytes per sealed message.
    let big = Frame::new(ProtocolId::BLOB, vec![0; 600_000]).unwrap();
    let sealed_len = 600_000 + 2 + mesh_transport::secure::SEAL_OVERHEAD;
    assert_eq!(
        ca.send(big).await,
        Err(TransportError::FrameTooLarge {
            len: sealed_len,
            max: MAX_MESSAGE_LEN
        })
    );
    ca.send(frame(7)).await.unwrap();
    assert_eq!(cb.recv().await.unwrap(), frame(7));
}

#[tokio::test]
async fn an_mtu_outside_the_att_range_fails_the_handshake() {
    let rt = TokioRuntime::current();
    let (ra, _rb) = SimRadio::pair(&rt, config(22));
    let (a, b) = (Identity::generate(), Identity::generate());
    assert_eq!(
        BleConnection::connect(ra, rt, &a, b.peer_id())
            .await
            .unwrap_err(),
        TransportError::Malformed("bad GATT fragment")
    );
}

/// A radio that claims a larger MTU than it takes.
struct Boastful(Sim);

#[async_trait]
impl Radio for Boastful {
    fn mtu(&self) -> usize {
        517
    }
    async fn write(&self, data: &[u8]) -> Result<(), RadioError> {
        self.0.write(data).await
    }
    async fn read(&self) -> Result<Vec<u8>, RadioError> {
        self.0.read().await
    }
}

#[tokio::test]
async fn a_radio_refusing_a_write_fails_the_link_as_malformed() {
    let rt = TokioRuntime::current();
    let (ra, _rb) = SimRadio::pair(&rt, config(23));
    let (a, b) = (Identity::generate(), Identity::generate());
    assert_eq!(
        BleConnection::connect(Boastful(ra), rt, &a, b.peer_id())
            .await
            .unwrap_err(),
        TransportError::Malformed("radio refused a write")
    );
}

#[tokio::test]
async fn a_handshake_nobody_answers_times_out() {
    // HANDSHAKE_TIMEOUT (15 s) runs in 15 ms.
    let fast = Fast::new(1000);
    let (ra, rb) = SimRadio::pair(&TokioRuntime::current(), config(23));
    let (a, b) = (Identity::generate(), Identity::generate());
    let connect = BleConnection::connect(ra, fast.clone(), &a, b.peer_id()).await;
    assert_eq!(connect.unwrap_err(), TransportError::Timeout);
    // Nor does a peripheral wait for ever for a central that says nothing.
    let (_ra, rb2) = SimRadio::pair(&TokioRuntime::current(), config(23));
    let accept = BleConnection::accept(rb2, fast, &b).await;
    assert_eq!(accept.unwrap_err(), TransportError::Timeout);
    drop(rb);
}

#[tokio::test]
async fn closing_does_not_wait_for_ever_on_a_radio_that_takes_no_writes() {
    // CLOSE_TIMEOUT (2 s) runs in 0.5 s, the handshake's 15 s in 3.75 s.
    let fast = Fast::new(4);
    let rt = TokioRuntime::current();
    let (ra, rb) = SimRadio::pair(
        &rt,
        SimConfig {
            mtu: 23,
            credits: 1,
            ..SimConfig::default()
        },
    );
    let (a, b) = (Identity::generate(), Identity::generate());
    let (ca, cb) = tokio::join!(
        BleConnection::connect(ra, fast.clone(), &a, b.peer_id()),
        BleConnection::accept(rb, fast.clone(), &b)
    );
    let (ca, _cb) = (ca.unwrap(), cb.unwrap());
    // Bob never reads: the close message (several fragments) cannot all be written.
    let closed = tokio::time::timeout(Duration::from_secs(30), ca.close()).await;
    assert_eq!(closed.expect("close is bounded"), Ok(()));
    assert_eq!(ca.send(frame(1)).await, Err(TransportError::Closed));
}

/// A radio like a phone's: each write takes a while, and closing it cancels the writes in
/// flight (they fail as disconnected); the far end keeps what was written before.
struct Cancelling {
    inner: Sim,
    closed: std::sync::atomic::AtomicBool,
    gone: tokio::sync::Notify,
}

#[async_trait]
impl Radio for Cancelling {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    async fn write(&self, data: &[u8]) -> Result<(), RadioError> {
        let gone = self.gone.notified();
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        tokio::select! {
            () = async { tokio::time::sleep(Duration::from_millis(2)).await } => {
                self.inner.write(data).await
            }
            () = gone => Err(RadioError::Disconnected),
        }
    }
    async fn read(&self) -> Result<Vec<u8>, RadioError> {
        self.inner.read().await
    }
    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.gone.notify_waiters();
    }
}

#[tokio::test]
async fn a_second_close_waits_for_the_first_and_the_peer_hears_the_whole_close_message() {
    // At MTU 23 the close message is several fragments, each write taking 2 ms: a second close
    // that cut the radio at once would cancel the first one's writes half way.
    let (conn, mut peer) = with_peer_over(23, |inner| Cancelling {
        inner,
        closed: std::sync::atomic::AtomicBool::new(false),
        gone: tokio::sync::Notify::new(),
    })
    .await;
    let (first, second) = tokio::join!(conn.close(), async {
        tokio::time::sleep(Duration::from_millis(3)).await;
        conn.close().await
    });
    assert_eq!((first, second), (Ok(()), Ok(())));
    assert!(
        conn.radio()
            .closed
            .load(std::sync::atomic::Ordering::Acquire),
        "closing closes the radio"
    );
    let close = tokio::time::timeout(Duration::from_secs(5), peer.read_message())
        .await
        .expect("the whole close message arrived");
    assert_eq!(
        peer.sealing.receive(&close, Duration::ZERO),
        Ok(mesh_transport::link::Incoming::Closed)
    );
}

mod attacher {
    use super::*;

    type Ble = BleTransport<Sim, TokioRuntime>;

    #[tokio::test]
    async fn a_cloned_attacher_keeps_the_transport_accepting() {
        let rt = TokioRuntime::current();
        let (a, b) = (
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        );
        let (ta, attach_a): (Ble, _) = BleTransport::new(Arc::clone(&a), rt.clone());
        let (_tb, attach_b): (Ble, _) = BleTransport::new(Arc::clone(&b), rt.clone());
        let clone = attach_a.clone();
        drop(attach_a);
        assert!(format!("{clone:?}").contains(&a.peer_id().to_string()));
        let (ra, rb) = SimRadio::pair(&rt, SimConfig::default());
        // The central knows whom it connected to this time.
        let (pa, pb) = tokio::join!(
            clone.attach(ra, Role::Central, Some(b.peer_id())),
            attach_b.attach(rb, Role::Peripheral, None)
        );
        assert_eq!((pa.unwrap(), pb.unwrap()), (b.peer_id(), a.peer_id()));
        let link = ta.accept().await.unwrap();
        assert_eq!(link.remote(), b.peer_id());
        drop(clone);
        assert_eq!(ta.accept().await.unwrap_err(), TransportError::Closed);
    }

    #[tokio::test]
    async fn attaching_to_a_transport_that_is_gone_fails_with_closed() {
        let rt = TokioRuntime::current();
        let (a, b) = (
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        );
        let (ta, attach_a): (Ble, _) = BleTransport::new(Arc::clone(&a), rt.clone());
        let (tb, attach_b): (Ble, _) = BleTransport::new(Arc::clone(&b), rt.clone());
        assert_eq!(format!("{ta:?}"), "BleTransport { .. }");
        drop(ta);
        let (ra, rb) = SimRadio::pair(&rt, SimConfig::default());
        let (pa, pb) = tokio::join!(
            attach_a.attach(ra, Role::Central, None),
            attach_b.attach(rb, Role::Peripheral, None)
        );
        // The handshake succeeded, but there is nobody to hand Alice's link to.
        assert_eq!(pa, Err(TransportError::Closed));
        assert_eq!(pb.unwrap(), a.peer_id());
        assert_eq!(tb.accept().await.unwrap().remote(), a.peer_id());
    }
}
