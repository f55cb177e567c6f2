//! Messaging over the memory transport with real gossip drivers: a direct message to a linked
//! peer, a message through a relay to a peer with no link (and its receipt back the same way),
//! a message to a peer that joins later (store-and-forward by pull), dedup, forged and
//! rate-limited direct frames refused.

#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names
)] // test code

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_crypto::{Identity, PeerId, envelope};
use mesh_gossip::driver::{DriverOptions, GossipHandle};
use mesh_node::messaging::{MAX_BODY_LEN, MESSAGE_CONTEXT, MESSAGE_VERSION, start};
use mesh_node::{MessagingConfig, MessagingError, MessagingEvent, MessagingStats, Messenger};
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::memory::{LinkConfig, MemoryNetwork, MemoryTransport};
use mesh_transport::pool::Pool;
use mesh_transport::{Frame, ProtocolId};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

type Net = Arc<MemoryNetwork<TokioRuntime>>;
type MemPool = Pool<MemoryTransport<TokioRuntime>, TokioRuntime>;

struct Node {
    id: Arc<Identity>,
    address: String,
    pool: MemPool,
    gossip: GossipHandle,
    messenger: Messenger,
    events: Receiver<MessagingEvent>,
}

async fn node(net: &Net, address: &str) -> Node {
    node_with(
        net,
        address,
        Arc::new(Identity::generate()),
        MessagingConfig::default(),
    )
    .await
}

impl Node {
    fn peer(&self) -> PeerId {
        self.id.peer_id()
    }

    async fn next(&mut self) -> MessagingEvent {
        timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the messenger is alive")
    }
}

/// The messenger's stats once `done` holds of them. Polled, not slept on: a loaded machine
/// may take a while to process what was sent. After 30 s the last stats are returned, for the
/// caller's assertions to report.
async fn stats_when(node: &Node, done: impl Fn(&MessagingStats) -> bool) -> MessagingStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = node.messenger.stats().await.unwrap();
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many more a `per_minute` limiter can have let through since `since`: it refills
/// continuously, so a slow run admits more than its burst (rounded up, plus one for a refill
/// landing on the last check).
fn refilled(since: Instant, per_minute: u32) -> u64 {
    let refills = since.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let refills = refills.ceil() as u64;
    refills + 1
}

async fn link(a: &Node, b: &Node) {
    a.gossip.add_neighbour(b.peer(), &b.address).await.unwrap();
    b.gossip.add_neighbour(a.peer(), &a.address).await.unwrap();
    for _ in 0..200 {
        if a.pool.connected().contains(&b.peer()) && b.pool.connected().contains(&a.peer()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no link");
}

#[tokio::test]
async fn messages_go_direct_or_through_the_mesh_and_come_back_as_receipts() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let mut a = node(&net, "a").await;
    let mut b = node(&net, "b").await;
    let mut c = node(&net, "c").await;
    // A line: a - b - c. a has no link to c.
    link(&a, &b).await;
    link(&b, &c).await;
    assert!(!a.pool.connected().contains(&c.peer()));

    // Direct: a to b.
    let id = a.messenger.send(b.peer(), b"hi b").await.unwrap();
    let MessagingEvent::Message(m) = b.next().await else {
        panic!()
    };
    assert_eq!(
        (m.from, m.id, m.body.as_slice(), m.direct),
        (a.peer(), id, &b"hi b"[..], true)
    );
    assert_eq!(
        a.next().await,
        MessagingEvent::Delivered { id, by: b.peer() }
    );

    // Through the mesh: a to c, relayed by b, which cannot read it; the receipt comes back
    // the same way.
    let id = a.messenger.send(c.peer(), b"hi c, via b").await.unwrap();
    let MessagingEvent::Message(m) = c.next().await else {
        panic!()
    };
    assert_eq!(
        (m.from, m.body.as_slice(), m.direct),
        (a.peer(), &b"hi c, via b"[..], false)
    );
    assert_eq!(
        a.next().await,
        MessagingEvent::Delivered { id, by: c.peer() }
    );
    assert!(
        timeout(Duration::from_millis(300), b.events.recv())
            .await
            .is_err(),
        "the relay got nothing to read"
    );
    let s = a.messenger.stats().await.unwrap();
    assert_eq!((s.sent_direct, s.sent_mesh), (1, 1));

    // Store and forward: d does not exist yet when a writes to it; it joins later, links to
    // c only, and gets the message by pull.
    let d_id = Arc::new(Identity::generate());
    let id = a
        .messenger
        .send(d_id.peer_id(), b"for when you arrive")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = node_with(&net, "d", d_id, MessagingConfig::default()).await;
    link(&c, &d).await;
    let MessagingEvent::Message(m) = d.next().await else {
        panic!()
    };
    assert_eq!((m.id, m.body.as_slice()), (id, &b"for when you arrive"[..]));

    // Too large: refused before anything is sent.
    let big = vec![0; MAX_BODY_LEN + 1];
    assert!(matches!(
        a.messenger.send(b.peer(), &big).await,
        Err(MessagingError::TooLarge(_))
    ));
}

async fn node_with(net: &Net, address: &str, id: Arc<Identity>, config: MessagingConfig) -> Node {
    let rt = TokioRuntime::current();
    let pool = Pool::new(
        net.transport(Arc::clone(&id), address).unwrap(),
        rt.clone(),
        id.peer_id(),
        address,
    );
    pool.start_accepting();
    let (gossip, deliveries) = mesh_gossip::driver::start(
        id.peer_id(),
        pool.clone(),
        rt.clone(),
        DriverOptions::default(),
    )
    .await
    .unwrap();
    let (messenger, events, _other) = start(
        Arc::clone(&id),
        &pool,
        &rt,
        gossip.clone(),
        deliveries,
        config,
    );
    Node {
        id,
        address: address.to_string(),
        pool,
        gossip,
        messenger,
        events,
    }
}

#[tokio::test]
async fn the_direct_limit_is_configurable() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let config = MessagingConfig {
        direct_per_minute: 20,
        ..MessagingConfig::default()
    };
    let b = node_with(&net, "b", Arc::new(Identity::generate()), config).await;
    let a = node(&net, "a").await;
    link(&a, &b).await;
    let started = Instant::now();
    for i in 0..60u32 {
        a.messenger.send(b.peer(), &i.to_le_bytes()).await.unwrap();
    }
    let s = stats_when(&b, |s| s.received + s.refused >= 60).await;
    // 20 at once, refilling at one every 3 s: the rest of the burst is refused.
    let most = 20 + refilled(started, 20);
    assert!((20..=most).contains(&s.received), "{s:?}, at most {most}");
    assert_eq!(s.received + s.refused, 60, "{s:?}");
}

#[tokio::test]
async fn duplicates_forgeries_and_floods_are_refused() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let mut b = node(&net, "b").await;
    // A raw peer that sends direct frames.
    let a = Arc::new(Identity::generate());
    let pool = Pool::new(
        net.transport(Arc::clone(&a), "raw").unwrap(),
        TokioRuntime::current(),
        a.peer_id(),
        "raw",
    );
    pool.start_accepting();
    let to = b.peer();
    let frame = |sender: &Identity, body: &[u8]| {
        let mut p = vec![MESSAGE_VERSION, 1];
        p.extend_from_slice(body);
        let env = envelope::seal(sender, &to, MESSAGE_CONTEXT, &p).unwrap();
        let mut f = vec![MESSAGE_VERSION];
        f.extend_from_slice(&env);
        Frame::new(ProtocolId::MESSAGING, f).unwrap()
    };
    // The same envelope twice: one message.
    let started = Instant::now();
    let once = frame(&a, b"once");
    pool.send(b.peer(), "b", once.clone()).await.unwrap();
    pool.send(b.peer(), "b", once).await.unwrap();
    // An envelope sealed by someone else, carried over a's link: refused (the carrier must be
    // the sender). Garbage: refused.
    let other = Identity::generate();
    pool.send(b.peer(), "b", frame(&other, b"not from a"))
        .await
        .unwrap();
    pool.send(
        b.peer(),
        "b",
        Frame::new(ProtocolId::MESSAGING, vec![9, 9, 9]).unwrap(),
    )
    .await
    .unwrap();
    let MessagingEvent::Message(m) = b.next().await else {
        panic!()
    };
    assert_eq!(m.body, b"once");
    let s = stats_when(&b, |s| s.received + s.duplicates + s.refused >= 4).await;
    assert_eq!((s.received, s.duplicates, s.refused), (1, 1, 2));

    // A receipt for a message b never sent to its signer: refused, nothing reported.
    let mut receipt = vec![MESSAGE_VERSION, 2];
    receipt.extend_from_slice(&[5; 32]);
    let env = envelope::seal(&a, &to, MESSAGE_CONTEXT, &receipt).unwrap();
    let mut f = vec![MESSAGE_VERSION];
    f.extend_from_slice(&env);
    pool.send(b.peer(), "b", Frame::new(ProtocolId::MESSAGING, f).unwrap())
        .await
        .unwrap();
    assert_eq!(stats_when(&b, |s| s.refused >= 3).await.refused, 3);
    assert!(
        b.events.try_recv().is_err(),
        "no Delivered for a forged receipt"
    );
    // A message to oneself is refused.
    assert!(matches!(
        b.messenger.send(b.peer(), b"me").await,
        Err(MessagingError::ToSelf)
    ));

    // A flood: 700 direct frames in a minute; 600 are allowed (minus the 5 already sent).
    for i in 0..700u32 {
        pool.send(b.peer(), "b", frame(&a, &i.to_le_bytes()))
            .await
            .unwrap();
    }
    let s = stats_when(&b, |s| s.received + s.refused + s.duplicates >= 5 + 700).await;
    assert_eq!(
        s.received + s.refused + s.duplicates,
        5 + 700,
        "every frame counted once: {s:?}"
    );
    assert_eq!(s.duplicates, 1, "{s:?}");
    // The limit refills at 10 a second while the test runs: a few more than the burst may
    // pass, and the rest are refused.
    let most = 596 + refilled(started, 600);
    assert!((596..=most).contains(&s.received), "{s:?}, at most {most}");
}
