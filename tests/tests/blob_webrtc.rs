//! Blob transfer over real WebRTC on loopback, with redb stores: the provider drops every
//! link in the middle of a transfer, and a lying provider is tried first. The fetch names the
//! liar, refuses its chunks, redials the honest provider after the disconnect and resumes from
//! the first missing chunk.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::many_single_char_names
)] // test code: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use mesh_blob::store::{BlobConfig, BlobStore, PutOptions, TABLES};
use mesh_blob::transfer::{BlobService, TransferConfig, start};
use mesh_blob::wire::{Message, Request, Response};
use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::TokioRuntime;
use mesh_store_redb::RedbBackend;
use mesh_transport::pool::Pool;
use mesh_transport::{Frame, ProtocolId};
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

type RtcPool = Pool<WebRtcTransport<HttpSignaling>, TokioRuntime>;

async fn rtc_pool(id: &Arc<Identity>) -> (RtcPool, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let signaling = Arc::new(HttpSignaling::serve(listener).unwrap());
    let address = signaling.url().unwrap();
    let transport = WebRtcTransport::new(Arc::clone(id), signaling, WebRtcConfig::loopback());
    let pool = Pool::new(transport, TokioRuntime::current(), id.peer_id(), &address);
    pool.start_accepting();
    (pool, address)
}

struct Node {
    id: Arc<Identity>,
    address: String,
    pool: RtcPool,
    service: BlobService,
}

async fn node(dir: &tempfile::TempDir, name: &str) -> Node {
    let id = Arc::new(Identity::generate());
    let (pool, address) = rtc_pool(&id).await;
    let kv: Arc<dyn KvStore> = Arc::new(
        Store::open(
            RedbBackend::open(dir.path().join(format!("{name}.redb")))
                .await
                .unwrap(),
            &SCHEMA,
        )
        .await
        .unwrap(),
    );
    let store = BlobStore::open(kv, BlobConfig::default()).await.unwrap();
    let config = TransferConfig {
        window: 4,
        // Long against a loaded machine: a request that times out also cancels the WebRTC
        // dial it waits on, and a chunk asked for again would break the count of chunks served.
        request_timeout: Duration::from_secs(10),
        max_failures: 6,
        ..TransferConfig::default()
    };
    let service = start(&pool, &TokioRuntime::current(), store, config);
    Node {
        id,
        address,
        pool,
        service,
    }
}

fn content(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[5]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_over_webrtc_survives_a_disconnect_and_a_lying_provider() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir, "a").await;
    let b = node(&dir, "b").await;
    let data = content(3 * 1024 * 1024 + 777);
    let stored = a
        .service
        .store()
        .put(a.id.peer_id(), &data, PutOptions::default(), UnixMillis(1))
        .await
        .unwrap();
    let chunks = u64::from(stored.chunks);
    assert_eq!(chunks, 49);

    // The liar: the right manifest, every chunk with a byte flipped.
    let liar_id = Arc::new(Identity::generate());
    let (liar_pool, liar_address) = rtc_pool(&liar_id).await;
    let mut rx = liar_pool.subscribe(ProtocolId::BLOB);
    let manifest = a
        .service
        .store()
        .manifest(&stored.id)
        .await
        .unwrap()
        .unwrap();
    let (m, d, lp) = (manifest.encode(), data.clone(), liar_pool.clone());
    tokio::spawn(async move {
        while let Some(inc) = rx.recv().await {
            let Ok(Message::Request(rid, req)) = Message::decode(&inc.payload) else {
                continue;
            };
            let resp = match req {
                Request::GetManifest(blob) => Response::Manifest(blob, m.clone()),
                Request::GetChunk(blob, i) => {
                    let start = i as usize * 65_408;
                    let mut c = d[start..(start + 65_408).min(d.len())].to_vec();
                    c[0] ^= 0xff;
                    Response::Chunk(blob, i, c)
                }
            };
            let frame = Frame::new(ProtocolId::BLOB, Message::Response(rid, resp).encode());
            let _ = lp.send(inc.from, &inc.address, frame.unwrap()).await;
        }
    });

    // Drop every link of the provider once it has served a fifth of the chunks.
    let (watch_service, watch_pool) = (a.service.clone(), a.pool.clone());
    let cut = tokio::spawn(async move {
        // Polled for up to 60 s: two WebRTC dials and ten chunks on a loaded machine.
        for _ in 0..12_000 {
            if watch_service.stats().served_chunks >= 10 {
                watch_pool.close_all().await;
                return watch_service.stats().served_chunks;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the transfer never reached 10 chunks");
    });

    let providers: Vec<(PeerId, String)> = vec![
        (liar_id.peer_id(), liar_address),
        (a.id.peer_id(), a.address.clone()),
    ];
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        b.service
            .fetch(stored.id, &providers, b.id.peer_id(), PutOptions::default()),
    )
    .await
    .expect("the fetch ends")
    .expect("the fetch succeeds");
    let served_at_cut = cut.await.unwrap();
    assert!(served_at_cut < chunks, "the cut came mid-transfer");

    assert_eq!(
        report.bad_peers,
        vec![liar_id.peer_id()],
        "the liar is named"
    );
    assert_eq!(u64::from(report.fetched_chunks), chunks, "every chunk once");
    assert_eq!(
        b.service.stats().bad_chunks,
        1,
        "the liar's chunk was refused"
    );
    assert_eq!(b.service.store().get(&stored.id).await.unwrap(), data);
    // Resumed, not restarted: the provider sent each chunk about once (answers in flight
    // at the cut may be sent again).
    let served = a.service.stats().served_chunks;
    assert!(
        served >= chunks && served <= chunks + 2 * 4,
        "served {served} for {chunks} chunks"
    );
    assert_eq!(
        a.service.stats().served_manifests,
        0,
        "the liar's manifest was right and kept"
    );
    assert!(
        a.pool.connected().contains(&b.id.peer_id()),
        "the fetcher dialed the provider again"
    );
}
