//! The gossip driver over the memory transport: a message published at one node reaches the
//! others by push; a node restarted on the same storage still holds and serves it by pull;
//! hostile frames are counted in the metrics.

#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names
)] // test code

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Identity, UnixMillis};
use mesh_gossip::driver::{Delivered, DriverOptions, GossipHandle, GossipMetrics, TABLES, start};
use mesh_gossip::{GossipMessage, GossipPayload};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_store_memory::{MemoryBackend, SharedMap};
use mesh_transport::memory::{LinkConfig, MemoryNetwork};
use mesh_transport::pool::Pool;
use mesh_transport::{Frame, ProtocolId};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};
use tokio::sync::mpsc::Receiver;
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
    metrics: Option<GossipMetrics>,
) -> (GossipHandle, Receiver<Delivered>) {
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
            metrics,
            seed: address.bytes().map(u64::from).sum(),
            ..DriverOptions::default()
        },
    )
    .await
    .unwrap()
}

async fn link(a: (&GossipHandle, &Identity, &str), b: (&GossipHandle, &Identity, &str)) {
    a.0.add_neighbour(b.1.peer_id(), b.2).await.unwrap();
    b.0.add_neighbour(a.1.peer_id(), a.2).await.unwrap();
}

async fn next(rx: &mut Receiver<Delivered>) -> Delivered {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5 s")
        .expect("the driver is alive")
}

fn message(author: &Identity, body: &[u8]) -> Vec<u8> {
    let now = TokioRuntime::current().unix_time();
    GossipMessage::sign(
        author,
        GossipPayload {
            topic: b"news".to_vec(),
            body: body.to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )
    .unwrap()
    .into_bytes()
}

async fn open(map: &SharedMap) -> Arc<dyn KvStore> {
    Arc::new(
        Store::open(MemoryBackend::with_map(map.clone()), &SCHEMA)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn messages_spread_and_a_restarted_node_still_serves_them() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (0..4).map(|_| Arc::new(Identity::generate())).collect();
    let map = SharedMap::default();
    let (a, mut a_rx) = node(&net, &ids[0], "mem:a", None, None).await;
    let (b, mut b_rx) = node(&net, &ids[1], "mem:b", None, None).await;
    let (c, mut c_rx) = node(&net, &ids[2], "mem:c", Some(open(&map).await), None).await;
    link((&a, &ids[0], "mem:a"), (&b, &ids[1], "mem:b")).await;
    link((&b, &ids[1], "mem:b"), (&c, &ids[2], "mem:c")).await;

    let author = Identity::generate();
    let m = message(&author, b"hello");
    let id = a.publish(m.clone()).await.unwrap();
    // A published it (not delivered back to itself); B and C get it by push through B.
    for rx in [&mut b_rx, &mut c_rx] {
        let d = next(rx).await;
        assert_eq!(
            (d.id, d.author, d.body.as_slice()),
            (id, author.peer_id(), &b"hello"[..])
        );
    }
    assert!(a_rx.try_recv().is_err());
    // Publishing the same message again is refused.
    assert!(a.publish(m).await.is_err());

    // C restarts on the same storage (new links, new address) and still holds it.
    c.shutdown().await.unwrap();
    let (c2, _c2_rx) = node(&net, &ids[2], "mem:c2", Some(open(&map).await), None).await;
    assert_eq!(c2.status().await.unwrap().messages, 1);
    // A newcomer linked only to C catches up from it by pull.
    let (d, mut d_rx) = node(&net, &ids[3], "mem:d", None, None).await;
    link((&d, &ids[3], "mem:d"), (&c2, &ids[2], "mem:c2")).await;
    let got = next(&mut d_rx).await;
    assert_eq!(got.id, id);
    assert!(d.status().await.unwrap().stats.pulled >= 1);
}

fn counter(exporter: &InMemoryMetricExporter, name: &str, attr: Option<&str>) -> u64 {
    let all = exporter.get_finished_metrics().unwrap();
    let Some(last) = all.last() else { return 0 };
    let mut total = 0;
    for scope in last.scope_metrics() {
        for m in scope.metrics().filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                for p in s.data_points() {
                    let matches = attr
                        .is_none_or(|want| p.attributes().any(|kv| kv.value.to_string() == want));
                    if matches {
                        total += p.value();
                    }
                }
            }
        }
    }
    total
}

#[tokio::test]
async fn hostile_frames_are_refused_and_counted() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    let metrics = GossipMetrics::new(&provider.meter("mesh-gossip"));
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let target = Arc::new(Identity::generate());
    let (g, _rx) = node(&net, &target, "mem:t", None, Some(metrics)).await;
    // A raw peer sends garbage, an oversized digest header and unsolicited messages.
    let attacker = Arc::new(Identity::generate());
    let raw = Pool::new(
        net.transport(Arc::clone(&attacker), "mem:x").unwrap(),
        TokioRuntime::current(),
        attacker.peer_id(),
        "mem:x",
    );
    let send = |bytes: Vec<u8>| {
        let raw = raw.clone();
        let to = target.peer_id();
        async move {
            raw.send(to, "mem:t", Frame::new(ProtocolId::GOSSIP, bytes).unwrap())
                .await
                .unwrap();
        }
    };
    send(vec![1, 9, 9]).await;
    let mut huge_digest = vec![1, 2];
    huge_digest.extend_from_slice(&7u64.to_le_bytes());
    huge_digest.extend_from_slice(&[0, 0, 0, 7]);
    huge_digest.extend_from_slice(&(1u32 << 24).to_le_bytes());
    send(huge_digest).await;
    let mut unsolicited = vec![1, 3];
    unsolicited.extend_from_slice(&0u16.to_le_bytes());
    send(unsolicited).await;
    // Wait until the driver handled them (status is answered after earlier input).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = g.status().await.unwrap();
    assert_eq!(status.stats.bad_input, 3);
    provider.force_flush().unwrap();
    assert_eq!(
        counter(&exporter, "mesh.gossip.bad_input", Some("frame")),
        2
    );
    assert_eq!(
        counter(&exporter, "mesh.gossip.bad_input", Some("unsolicited")),
        1
    );
    assert_eq!(status.messages, 0);
}

#[tokio::test]
async fn an_application_that_does_not_read_does_not_stall_the_node() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (0..2).map(|_| Arc::new(Identity::generate())).collect();
    let (a, _a_rx) = node(&net, &ids[0], "mem:a", None, None).await;
    // B's application never reads its channel.
    let (b, b_rx) = node(&net, &ids[1], "mem:b", None, None).await;
    link((&a, &ids[0], "mem:a"), (&b, &ids[1], "mem:b")).await;
    let author = Identity::generate();
    // More than the channel holds, fewer than the per-peer push rate (1,200 a minute).
    let n = mesh_gossip::driver::DELIVERY_QUEUE + 100;
    for i in 0..n {
        a.publish(message(&author, format!("m{i}").as_bytes()))
            .await
            .unwrap();
    }
    // B keeps taking frames and answering commands with its channel full.
    let mut held = 0;
    for _ in 0..100 {
        held = timeout(Duration::from_secs(5), b.status())
            .await
            .expect("B answers while its application sleeps")
            .unwrap()
            .messages;
        if held == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, n);
    drop(b_rx);
}
