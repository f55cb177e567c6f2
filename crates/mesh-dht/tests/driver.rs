//! The async driver end to end over the memory transport: nodes join through a bootstrap
//! node, put and find a record, and a restarted node keeps its records and contacts from its
//! `KvStore` and rejoins without being told a bootstrap peer.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::driver::{DhtHandle, DriverOptions, start};
use mesh_dht::persist::{RECORDS_TABLE, TABLES};
use mesh_dht::record::record_key;
use mesh_dht::{Key, Record, RecordPayload};
use mesh_platform::kv::{Direction, KeyRange, KvStore, Schema, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_store_memory::MemoryBackend;
use mesh_transport::memory::{LinkConfig, MemoryNetwork};
use mesh_transport::pool::Pool;
use tokio::time::timeout;

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

type Net = Arc<MemoryNetwork<TokioRuntime>>;

async fn node(
    net: &Net,
    id: &Arc<Identity>,
    address: &str,
    store: Option<Arc<dyn KvStore>>,
    bootstrap: Vec<(PeerId, String)>,
) -> DhtHandle {
    let rt = TokioRuntime::current();
    let pool = Pool::new(
        net.transport(Arc::clone(id), address).unwrap(),
        rt.clone(),
        id.peer_id(),
        address,
    );
    pool.start_accepting();
    start(
        id.peer_id(),
        pool,
        rt,
        DriverOptions {
            store,
            bootstrap,
            ..DriverOptions::default()
        },
    )
    .await
    .unwrap()
}

fn record(author: &Identity, name: &[u8], value: &[u8]) -> Vec<u8> {
    let now = TokioRuntime::current().unix_time();
    Record::sign(
        author,
        RecordPayload {
            name: name.to_vec(),
            seq: 1,
            value: value.to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )
    .unwrap()
    .into_bytes()
}

/// Waits (bounded) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn nodes_join_put_and_find_and_a_restarted_node_keeps_its_state() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (0..6).map(|_| Arc::new(Identity::generate())).collect();
    let boot = node(&net, &ids[0], "mem:0", None, vec![]).await;
    let boot_contact = vec![(boot.local(), "mem:0".to_string())];
    let mut nodes = vec![boot];
    for (i, id) in ids.iter().enumerate().skip(1) {
        nodes.push(node(&net, id, &format!("mem:{i}"), None, boot_contact.clone()).await);
    }
    // Everyone learns everyone through the bootstrap node and the self-lookups.
    for n in &nodes {
        eventually("joining", || async {
            n.status().await.unwrap().contacts >= 3
        })
        .await;
    }

    // A node with persistent storage joins, then stores a record.
    let map = mesh_store_memory::SharedMap::default();
    let open = || async {
        let s: Arc<dyn KvStore> = Arc::new(
            Store::open(MemoryBackend::with_map(map.clone()), &SCHEMA)
                .await
                .unwrap(),
        );
        s
    };
    let keeper_id = Arc::new(Identity::generate());
    let store = open().await;
    let keeper = node(
        &net,
        &keeper_id,
        "mem:keeper",
        Some(Arc::clone(&store)),
        boot_contact.clone(),
    )
    .await;
    eventually("keeper joining", || async {
        keeper.status().await.unwrap().contacts >= 3
    })
    .await;
    let author = Identity::generate();
    let r = record(&author, b"profile", b"hello");
    let put = timeout(Duration::from_secs(20), keeper.put(r.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(put.offered >= 3 && put.stored == put.offered, "{put:?}");

    // Another node finds it.
    let key = record_key(&author.peer_id(), b"profile");
    let found = timeout(Duration::from_secs(20), nodes[3].find_value(key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, Some(r.clone()));
    // A key nobody stored: no value, but the closest nodes.
    let missing = nodes[3]
        .find_value(record_key(&author.peer_id(), b"other"))
        .await
        .unwrap();
    assert_eq!(missing, None);
    let closest = nodes[3]
        .find_node(Key::of_peer(&ids[5].peer_id()))
        .await
        .unwrap();
    assert_eq!(closest.first().map(|c| c.peer), Some(ids[5].peer_id()));

    // The record is on disk as it was stored.
    let rows = store
        .range(RECORDS_TABLE, KeyRange::all(), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, key.0.to_vec());

    // Restart: a new driver (and a new link layer) on the same storage, no bootstrap given.
    keeper.shutdown().await.unwrap();
    assert!(
        keeper.status().await.is_err(),
        "a stopped driver refuses calls"
    );
    drop(store);
    let store = open().await;
    let again = node(&net, &keeper_id, "mem:keeper2", Some(store), vec![]).await;
    let status = again.status().await.unwrap();
    assert_eq!(status.records, 1, "the record came back from storage");
    assert!(status.contacts >= 3, "contacts came back: {status:?}");
    // It serves the record and reaches the network through its restored contacts.
    let found = timeout(Duration::from_secs(20), again.find_value(key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, Some(r));
    let closest = again
        .find_node(Key::of_peer(&ids[2].peer_id()))
        .await
        .unwrap();
    assert_eq!(closest.first().map(|c| c.peer), Some(ids[2].peer_id()));
}

#[tokio::test]
async fn damaged_and_expired_entries_are_dropped_on_start() {
    use mesh_platform::kv::Batch;
    let map = mesh_store_memory::SharedMap::default();
    let store: Arc<dyn KvStore> = Arc::new(
        Store::open(MemoryBackend::with_map(map.clone()), &SCHEMA)
            .await
            .unwrap(),
    );
    let author = Identity::generate();
    let owner = Identity::generate().peer_id();
    let good = record(&author, b"good", b"1");
    let key = |name: &[u8]| record_key(&author.peer_id(), name).0.to_vec();
    let value = |r: &[u8]| [&[1u8][..], owner.as_bytes(), r].concat();
    let expired = Record::sign(
        &author,
        RecordPayload {
            name: b"old".to_vec(),
            seq: 1,
            value: vec![],
        },
        UnixMillis(1),
        UnixMillis(2),
    )
    .unwrap()
    .into_bytes();
    let mut b = Batch::new();
    b.put(RECORDS_TABLE, key(b"good"), value(&good));
    b.put(RECORDS_TABLE, key(b"old"), value(&expired));
    // Under the wrong key: refused, since storage is not trusted more than a peer.
    b.put(RECORDS_TABLE, key(b"elsewhere"), value(&good));
    b.put(RECORDS_TABLE, key(b"short"), vec![1, 2, 3]);
    b.put(
        RECORDS_TABLE,
        key(b"version"),
        [&[9u8][..], &value(&good)[1..]].concat(),
    );
    b.put("dht/contacts", vec![0u8; 5], vec![1]);
    store.apply(b).await.unwrap();

    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let id = Arc::new(Identity::generate());
    let n = node(&net, &id, "mem:n", Some(Arc::clone(&store)), vec![]).await;
    assert_eq!(n.status().await.unwrap().records, 1);
    let left = store
        .range(RECORDS_TABLE, KeyRange::all(), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "bad entries deleted");
    assert_eq!(left[0].0, key(b"good"));
    let contacts = store
        .range("dht/contacts", KeyRange::all(), Direction::Forward, 10)
        .await
        .unwrap();
    assert!(contacts.is_empty());
    n.shutdown().await.unwrap();
}
