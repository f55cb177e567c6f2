//! Blob transfer over the memory transport: verified fetches, dedup against local chunks,
//! lying providers named and refused, resuming from the first missing chunk, serving limits.
//! (The same over real WebRTC, with a disconnect, runs in `mesh-tests`.)

#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names
)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_blob::manifest::Manifest;
use mesh_blob::store::{BlobConfig, BlobStore, PutOptions, TABLES};
use mesh_blob::transfer::{BlobService, FetchError, TransferConfig, start};
use mesh_blob::wire::{Message, Request, Response};
use mesh_blob::{BlobError, BlobId};
use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::TokioRuntime;
use mesh_store_memory::MemoryBackend;
use mesh_transport::memory::{LinkConfig, MemoryNetwork, MemoryTransport};
use mesh_transport::pool::Pool;
use mesh_transport::{Frame, ProtocolId};

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

const CHUNK: u32 = 4096;
const T0: UnixMillis = UnixMillis(1_700_000_000_000);

type Net = Arc<MemoryNetwork<TokioRuntime>>;
type MemPool = Pool<MemoryTransport<TokioRuntime>, TokioRuntime>;

/// Pseudo-random content (no two chunks alike).
fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

fn blob_config() -> BlobConfig {
    BlobConfig {
        chunk_size: CHUNK,
        ..BlobConfig::default()
    }
}

fn pool(net: &Net, id: &Arc<Identity>, address: &str) -> MemPool {
    let rt = TokioRuntime::current();
    let pool = Pool::new(
        net.transport(Arc::clone(id), address).unwrap(),
        rt,
        id.peer_id(),
        address,
    );
    pool.start_accepting();
    pool
}

struct Node {
    id: Arc<Identity>,
    address: String,
    service: BlobService,
}

async fn node(net: &Net, address: &str, blobs: BlobConfig, transfer: TransferConfig) -> Node {
    let id = Arc::new(Identity::generate());
    let kv: Arc<dyn KvStore> = Arc::new(Store::open(MemoryBackend::new(), &SCHEMA).await.unwrap());
    let store = BlobStore::open(kv, blobs).await.unwrap();
    let p = pool(net, &id, address);
    let service = start(&p, &TokioRuntime::current(), store, transfer);
    Node {
        id,
        address: address.to_string(),
        service,
    }
}

impl Node {
    fn provider(&self) -> (PeerId, String) {
        (self.id.peer_id(), self.address.clone())
    }
    fn peer(&self) -> PeerId {
        self.id.peer_id()
    }
}

/// For tests where every provider answers: a request that times out would be a stall of the
/// machine, not of the provider, and would make a chunk travel twice (the exact counts below
/// would break), so the timeout is long.
fn quick() -> TransferConfig {
    TransferConfig {
        request_timeout: Duration::from_secs(10),
        max_failures: 2,
        ..TransferConfig::default()
    }
}

/// For tests where a provider stays silent and the fetch must wait out its timeouts: short
/// enough to keep the test quick, long against a loaded machine's stalls.
fn with_silence() -> TransferConfig {
    TransferConfig {
        request_timeout: Duration::from_secs(1),
        ..quick()
    }
}

/// A raw peer answering BLOB requests with `answer` (None: stay silent).
fn raw_peer(
    net: &Net,
    address: &str,
    answer: impl Fn(Request) -> Option<Response> + Send + 'static,
) -> (PeerId, String) {
    let id = Arc::new(Identity::generate());
    let p = pool(net, &id, address);
    let mut rx = p.subscribe(ProtocolId::BLOB);
    tokio::spawn(async move {
        while let Some(inc) = rx.recv().await {
            let Ok(Message::Request(rid, req)) = Message::decode(&inc.payload) else {
                continue;
            };
            if let Some(resp) = answer(req) {
                let frame =
                    Frame::new(ProtocolId::BLOB, Message::Response(rid, resp).encode()).unwrap();
                let _ = p.send(inc.from, &inc.address, frame).await;
            }
        }
    });
    (id.peer_id(), address.to_string())
}

async fn put(n: &Node, content: &[u8]) -> BlobId {
    n.service
        .store()
        .put(n.peer(), content, PutOptions::default(), T0)
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_fetch_verifies_every_chunk_and_stores_the_blob() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let b = node(&net, "b", blob_config(), quick()).await;
    let content = data(1, 75 * CHUNK as usize + 10);
    let id = put(&a, &content).await;

    let report = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(report.stored.id, id);
    assert_eq!(report.fetched_chunks, 76);
    assert_eq!(report.resumed_with, 0);
    assert!(report.bad_peers.is_empty());
    assert_eq!(b.service.store().get(&id).await.unwrap(), content);
    let served = a.service.stats();
    assert_eq!((served.served_manifests, served.served_chunks), (1, 76));
    assert_eq!(b.service.stats().fetched_chunks, 76);

    // Fetched again: only the hold changes, nothing travels.
    let again = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap();
    assert!(again.stored.duplicate);
    assert_eq!(again.fetched_chunks, 0);
    assert_eq!(a.service.stats().served_chunks, 76);

    // An unknown blob: every provider says NOT_FOUND.
    let unknown = BlobId::from_bytes([3; 32]);
    let e = b
        .service
        .fetch(unknown, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FetchError::Failed { missing: u32::MAX, ref bad_peers, .. } if bad_peers.is_empty()),
        "{e:?}"
    );
}

#[tokio::test]
async fn chunks_already_stored_are_not_fetched() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let b = node(&net, "b", blob_config(), quick()).await;
    let content = data(2, 20 * CHUNK as usize);
    let id = put(&a, &content).await;
    // b already has the first 12 chunks, in a blob of its own.
    put(&b, &content[..12 * CHUNK as usize]).await;
    let report = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(report.resumed_with, 12);
    assert_eq!(report.fetched_chunks, 8);
    assert_eq!(a.service.stats().served_chunks, 8);
    assert_eq!(report.stored.new_bytes, 8 * u64::from(CHUNK));
    assert_eq!(b.service.store().get(&id).await.unwrap(), content);
}

#[tokio::test]
async fn a_lying_provider_is_named_and_its_data_refused() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let b = node(&net, "b", blob_config(), quick()).await;
    let content = data(3, 10 * CHUNK as usize);
    let id = put(&a, &content).await;
    let manifest = Manifest::of(&content, CHUNK).unwrap();

    // Right manifest, chunks with one byte flipped.
    let (m, c) = (manifest.encode(), content.clone());
    let flipper = raw_peer(&net, "flipper", move |req| match req {
        Request::GetManifest(b) => Some(Response::Manifest(b, m.clone())),
        Request::GetChunk(b, i) => {
            let s = i as usize * CHUNK as usize;
            let mut chunk = c[s..s + CHUNK as usize].to_vec();
            chunk[7] ^= 1;
            Some(Response::Chunk(b, i, chunk))
        }
    });
    // The manifest of another blob.
    let other = Manifest::of(&data(9, 5000), CHUNK).unwrap().encode();
    let forger = raw_peer(&net, "forger", move |req| match req {
        Request::GetManifest(b) => Some(Response::Manifest(b, other.clone())),
        Request::GetChunk(..) => None,
    });

    let report = b
        .service
        .fetch(
            id,
            &[forger.clone(), flipper.clone(), a.provider()],
            b.peer(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    // The forger was asked for the manifest, the flipper (once the manifest was known) for
    // chunks.
    assert_eq!(report.bad_peers, vec![forger.0, flipper.0]);
    assert_eq!(b.service.store().get(&id).await.unwrap(), content);
    assert_eq!(b.service.stats().bad_chunks, 2);

    // With liars only: a clean error that names them, and nothing of theirs kept.
    let c = node(&net, "c", blob_config(), quick()).await;
    let e = c
        .service
        .fetch(
            id,
            &[forger.clone(), flipper.clone()],
            c.peer(),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    match e {
        FetchError::Failed {
            missing, bad_peers, ..
        } => {
            assert_eq!(bad_peers, vec![forger.0, flipper.0]);
            assert_eq!(missing, 10);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.service.store().usage().chunks, 0);
}

#[tokio::test]
async fn a_fetch_resumes_from_the_first_missing_chunk() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let b = node(&net, "b", blob_config(), with_silence()).await;
    let content = data(4, 30 * CHUNK as usize);
    let id = put(&a, &content).await;
    let manifest = Manifest::of(&content, CHUNK).unwrap();

    // A provider that goes silent after chunk 9.
    let (m, c) = (manifest.encode(), content.clone());
    let answered = Arc::new(AtomicU32::new(0));
    let n = Arc::clone(&answered);
    let flaky = raw_peer(&net, "flaky", move |req| match req {
        Request::GetManifest(b) => Some(Response::Manifest(b, m.clone())),
        Request::GetChunk(b, i) if i < 10 => {
            n.fetch_add(1, Ordering::Relaxed);
            let s = i as usize * CHUNK as usize;
            Some(Response::Chunk(b, i, c[s..s + CHUNK as usize].to_vec()))
        }
        Request::GetChunk(..) => None,
    });
    let e = b
        .service
        .fetch(id, &[flaky], b.peer(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Failed { missing: 20, .. }), "{e:?}");
    assert_eq!(b.service.partial_fetches(), 1);
    assert!(
        !b.service.store().contains(&id).await.unwrap(),
        "not visible yet"
    );

    let report = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(report.resumed_with, 10);
    assert_eq!(report.fetched_chunks, 20);
    assert_eq!(
        a.service.stats().served_chunks,
        20,
        "only the missing chunks"
    );
    assert_eq!(
        a.service.stats().served_manifests,
        0,
        "the manifest was kept"
    );
    assert_eq!(b.service.partial_fetches(), 0);
    assert_eq!(b.service.store().get(&id).await.unwrap(), content);
}

#[tokio::test]
async fn the_store_refuses_a_blob_over_its_limit_before_any_chunk_travels() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let small = BlobConfig {
        max_blob_size: 16 * 1024,
        ..blob_config()
    };
    let b = node(&net, "b", small, quick()).await;
    let id = put(&a, &data(5, 40_000)).await;
    let e = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Store(BlobError::TooLarge { size: 40_000, .. })
        ),
        "{e:?}"
    );
    assert_eq!(a.service.stats().served_chunks, 0);
}

/// Sends `n` chunk requests at once from a raw peer and counts the answers of each kind.
/// Sends `n` chunk requests at once from a fresh peer at `address` and reads the `answers`
/// expected: (chunks, busy). Then checks that no more answers come.
async fn flood(
    net: &Net,
    target: &Node,
    address: &str,
    id: BlobId,
    n: u32,
    answers: u32,
) -> (u32, u32) {
    let me = Arc::new(Identity::generate());
    let p = pool(net, &me, address);
    let mut rx = p.subscribe(ProtocolId::BLOB);
    for i in 0..n {
        let msg = Message::Request(u64::from(i), Request::GetChunk(id, i % 4)).encode();
        p.send(
            target.peer(),
            &target.address,
            Frame::new(ProtocolId::BLOB, msg).unwrap(),
        )
        .await
        .unwrap();
    }
    let (mut chunks, mut busy) = (0, 0);
    for _ in 0..answers {
        let inc = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{chunks} chunks and {busy} busy of {answers} answers"))
            .unwrap();
        match Message::decode(&inc.payload).unwrap() {
            Message::Response(_, Response::Chunk(..)) => chunks += 1,
            Message::Response(_, Response::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(more.is_err(), "an answer past the {answers} expected");
    (chunks, busy)
}

#[tokio::test]
async fn serving_is_limited_per_peer() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(
        &net,
        "a",
        blob_config(),
        TransferConfig {
            requests_per_minute: 20,
            serve_per_peer: 2,
            ..quick()
        },
    )
    .await;
    let id = put(&a, &data(6, 4 * CHUNK as usize)).await;
    // 50 requests at once: 20 pass the rate limit, the rest are dropped unanswered; of those
    // 20, some find two of the peer's requests already in progress and are answered BUSY.
    let (chunks, busy) = flood(&net, &a, "flooder", id, 50, 20).await;
    assert!(chunks >= 2);
    let s = a.service.stats();
    assert_eq!(s.rate_limited, 30);
    assert_eq!(u64::from(busy), s.busy);
    // Another peer has its own allowance.
    let (chunks2, busy2) = flood(&net, &a, "other", id, 5, 5).await;
    assert!(chunks2 >= 2, "chunks {chunks2}, busy {busy2}");
}

#[tokio::test]
async fn garbage_and_unasked_answers_are_counted_and_ignored() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let me = Arc::new(Identity::generate());
    let p = pool(&net, &me, "x");
    for payload in [
        vec![],
        vec![9; 3],
        Message::Response(77, Response::Busy).encode(),
        Message::Response(1, Response::NotFound(BlobId::from_bytes([1; 32]))).encode(),
    ] {
        p.send(
            a.peer(),
            "a",
            Frame::new(ProtocolId::BLOB, payload).unwrap(),
        )
        .await
        .unwrap();
    }
    // Polled for up to 10 s (a loaded machine may be slow to read them).
    for _ in 0..500 {
        if a.service.stats().bad_messages == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.service.stats().bad_messages, 4);
    // Still serving.
    let b = node(&net, "b", blob_config(), quick()).await;
    let id = put(&a, b"still here").await;
    b.service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cancelled_fetch_leaves_no_request_behind() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let b = node(
        &net,
        "b",
        blob_config(),
        TransferConfig {
            request_timeout: Duration::from_secs(30),
            ..quick()
        },
    )
    .await;
    let providers = [raw_peer(&net, "silent", |_| None)];
    let fetch = b.service.fetch(
        BlobId::from_bytes([5; 32]),
        &providers,
        b.peer(),
        PutOptions::default(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fetch)
            .await
            .is_err()
    );
    assert_eq!(b.service.requests_in_flight(), 0);
}

#[tokio::test]
async fn shutdown_stops_serving_and_fetching() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let a = node(&net, "a", blob_config(), quick()).await;
    let b = node(&net, "b", blob_config(), with_silence()).await;
    let id = put(&a, &data(7, 3 * CHUNK as usize)).await;
    a.service.shutdown();
    // a no longer answers: b's fetch fails (after its retries), nothing served.
    let e = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Failed { .. }), "{e:?}");
    assert_eq!(a.service.stats().served_manifests, 0);
    // And b, shut down, refuses to fetch.
    b.service.shutdown();
    let e = b
        .service
        .fetch(id, &[a.provider()], b.peer(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Stopped), "{e:?}");
}
