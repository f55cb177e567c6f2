//! The DHT core's opentelemetry metrics, read back through the SDK's in-memory exporter:
//! STOREs by result, stored bytes and records, quota utilisation, evictions, expiries, bad
//! messages and lookups. No attribute carries a peer id.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_crypto::{Identity, UnixMillis};
use mesh_dht::Key;
use mesh_dht::message::{Body, Message};
use mesh_dht::metrics::DhtMetrics;
use mesh_dht::node::{Dht, DhtConfig};
use mesh_dht::{Record, RecordPayload, StoreConfig};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

const NOW: UnixMillis = UnixMillis(1_000_000);

fn record(author: &Identity, name: &[u8], value_len: usize, until: u64) -> Vec<u8> {
    Record::sign(
        author,
        RecordPayload {
            name: name.to_vec(),
            seq: 1,
            value: vec![7; value_len],
        },
        NOW,
        UnixMillis(until),
    )
    .unwrap()
    .into_bytes()
}

fn store(request: u64, bytes: Vec<u8>) -> Vec<u8> {
    Message {
        request,
        body: Body::Store(bytes),
    }
    .encode()
}

/// name -> (attribute values joined -> value): sums and histogram counts; for histograms of
/// fractions also "max" in thousandths.
fn collect(exporter: &InMemoryMetricExporter) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let all = exporter.get_finished_metrics().unwrap();
    let last = all.last().expect("an export");
    for scope in last.scope_metrics() {
        for m in scope.metrics() {
            let entry = out.entry(m.name().to_string()).or_default();
            let label = |attrs: Vec<String>| attrs.join(",");
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_possible_wrap
            )]
            match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        let a = p.attributes().map(|kv| kv.value.to_string()).collect();
                        entry.insert(label(a), p.value());
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        let a = p.attributes().map(|kv| kv.value.to_string()).collect();
                        entry.insert(label(a), p.value() as u64);
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        let a = p.attributes().map(|kv| kv.value.to_string()).collect();
                        entry.insert(label(a), p.count());
                        let max = p.max().unwrap_or(0.0);
                        entry.insert("max".into(), (max * 1000.0).round() as u64);
                    }
                }
                AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        let a = p.attributes().map(|kv| kv.value.to_string()).collect();
                        entry.insert(label(a), p.count());
                    }
                }
                other => panic!("unexpected instrument kind {other:?}"),
            }
        }
    }
    out
}

#[test]
fn the_core_reports_stores_levels_and_lookups() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    let meter = provider.meter("mesh-dht");
    let local = Identity::generate();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let config = DhtConfig {
        store: StoreConfig {
            per_peer_bytes: 1000,
            total_bytes: 1500,
            stores_per_minute: 2,
            max_record_len: 900,
        },
        ..DhtConfig::default()
    };
    let mut dht = Dht::new(local.peer_id(), config);
    dht.set_metrics(DhtMetrics::new(&meter));
    let t = Duration::from_secs;
    let stored = record(&alice, b"a", 500, 2_000_000);
    let stored_len = stored.len();
    dht.handle_message(alice.peer_id(), "", &store(1, stored), NOW, t(0));
    dht.handle_message(
        alice.peer_id(),
        "",
        &store(2, record(&alice, b"big", 950, 2_000_000)),
        NOW,
        t(0),
    );
    // Over Alice's quota of 1000 bytes.
    dht.handle_message(
        alice.peer_id(),
        "",
        &store(3, record(&alice, b"b", 600, 2_000_000)),
        NOW,
        t(0),
    );
    // Third STORE in the minute (the oversized one was refused before the rate check):
    // rate limited.
    dht.handle_message(
        alice.peer_id(),
        "",
        &store(4, record(&alice, b"c", 10, 2_000_000)),
        NOW,
        t(0),
    );
    // Bob: one record that expires soon, and a forged one.
    let short = record(&bob, b"short", 300, 1_000_500);
    let short_len = short.len();
    dht.handle_message(bob.peer_id(), "", &store(5, short), NOW, t(1));
    let mut forged = record(&bob, b"forged", 10, 2_000_000);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    dht.handle_message(bob.peer_id(), "", &store(6, forged), NOW, t(1));
    dht.handle_message(bob.peer_id(), "", b"\x01\xff garbage", NOW, t(1));
    // Expiry at the next maintenance round.
    dht.tick(UnixMillis(1_000_600), t(61));
    // A lookup (to Alice and Bob, who never answer: it ends after its retries time out).
    dht.find_node(Key::of_peer(&bob.peer_id()), t(62));
    for s in 63..100 {
        dht.tick(UnixMillis(1_000_600), t(s));
    }
    while dht.poll_output().is_some() {}

    provider.force_flush().unwrap();
    let m = collect(&exporter);
    let by_result = &m["mesh.dht.stores"];
    assert_eq!(by_result["stored"], 2);
    assert_eq!(by_result["too_large"], 1);
    assert_eq!(by_result["quota"], 1);
    assert_eq!(by_result["rate_limited"], 1);
    assert_eq!(by_result["invalid"], 1);
    assert_eq!(m["mesh.dht.bad_messages"][""], 1);
    assert_eq!(m["mesh.dht.expired"][""], 1);
    // Levels follow the store: Alice's record stays, Bob's expired.
    assert_eq!(m["mesh.dht.stored.records"][""], 1);
    let bytes = stored_len as u64;
    assert_eq!(m["mesh.dht.stored.bytes"][""], bytes);
    assert!(short_len > 0);
    // Quota utilisation: one observation per accepted STORE; the highest is Alice's one
    // record against her quota of 1000 bytes.
    let quota = &m["mesh.dht.quota.utilisation"];
    assert_eq!(quota[""], 2);
    assert_eq!(quota["max"], bytes, "{quota:?}");
    assert!(m["mesh.dht.lookup.hops"]["find_node"] >= 1);
    assert!(m["mesh.dht.lookup.duration"]["find_node"] >= 1);
    // No label anywhere carries a peer id.
    let ids = [
        alice.peer_id().to_string(),
        bob.peer_id().to_string(),
        local.peer_id().to_string(),
    ];
    for labels in m.values() {
        for l in labels.keys() {
            assert!(ids.iter().all(|id| !l.contains(id.as_str())), "{l}");
        }
    }
}

#[test]
fn evictions_are_counted() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    let local = Identity::generate();
    let mut dht = Dht::new(
        local.peer_id(),
        DhtConfig {
            store: StoreConfig {
                per_peer_bytes: 1000,
                total_bytes: 1000,
                stores_per_minute: 100,
                max_record_len: 900,
            },
            ..DhtConfig::default()
        },
    );
    dht.set_metrics(DhtMetrics::new(&provider.meter("mesh-dht")));
    let (a, b) = (Identity::generate(), Identity::generate());
    for (i, who) in [&a, &a, &b, &b].into_iter().enumerate() {
        let r = record(who, &[0], 300, 2_000_000);
        let r = if i % 2 == 0 {
            r
        } else {
            record(who, &[1], 300, 2_000_000)
        };
        let msg = store(i as u64, r); // i < 4
        dht.handle_message(who.peer_id(), "", &msg, NOW, Duration::ZERO);
    }
    provider.force_flush().unwrap();
    let m = collect(&exporter);
    // Records of ~400 bytes: two fit the budget of 1000; each of Bob's evicts one of the
    // biggest user's (Alice's first, then a tie).
    assert_eq!(m["mesh.dht.stores"]["stored"], 4);
    assert_eq!(m["mesh.dht.evictions"][""], 2);
    assert_eq!(m["mesh.dht.stored.records"][""], 2);
}
