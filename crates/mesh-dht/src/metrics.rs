//! The DHT's metrics, through the `opentelemetry` API (no SDK here: the application installs
//! one, or the instruments stay no-ops). No label carries a peer id or a key: every attribute
//! has a small, fixed set of values.
//!
//! | instrument | kind | what |
//! |---|---|---|
//! | `mesh.dht.stored.bytes` | up-down counter | bytes of records held |
//! | `mesh.dht.stored.records` | up-down counter | records held |
//! | `mesh.dht.quota.utilisation` | histogram | the storing peer's share of its quota after each accepted STORE (0..1) |
//! | `mesh.dht.stores` | counter | STOREs received, by `result` (`stored`, `too_large`, `rate_limited`, `quota`, `invalid`, `stale`) |
//! | `mesh.dht.evictions` | counter | records evicted to make room |
//! | `mesh.dht.expired` | counter | records dropped at expiry |
//! | `mesh.dht.lookup.duration` | histogram (s) | lookups, by `kind` (`find_node`, `find_value`, `put`) |
//! | `mesh.dht.lookup.hops` | histogram | hops of finished lookups, by `kind` |
//! | `mesh.dht.bad_messages` | counter | messages from peers that did not decode |

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};

/// Which kind of lookup, for the `kind` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupKind {
    FindNode,
    FindValue,
    Put,
}

impl LookupKind {
    fn label(self) -> &'static str {
        match self {
            Self::FindNode => "find_node",
            Self::FindValue => "find_value",
            Self::Put => "put",
        }
    }
}

/// The instruments of one DHT node (cheap to clone: they are handles).
#[derive(Debug, Clone)]
pub struct DhtMetrics {
    stored_bytes: UpDownCounter<i64>,
    stored_records: UpDownCounter<i64>,
    quota: Histogram<f64>,
    stores: Counter<u64>,
    evictions: Counter<u64>,
    expired: Counter<u64>,
    lookup_duration: Histogram<f64>,
    lookup_hops: Histogram<u64>,
    bad_messages: Counter<u64>,
}

impl DhtMetrics {
    /// Instruments created on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let m = Self {
            stored_bytes: meter
                .i64_up_down_counter("mesh.dht.stored.bytes")
                .with_unit("By")
                .with_description("Bytes of DHT records held")
                .build(),
            stored_records: meter
                .i64_up_down_counter("mesh.dht.stored.records")
                .with_description("DHT records held")
                .build(),
            quota: meter
                .f64_histogram("mesh.dht.quota.utilisation")
                .with_description("Storing peer's share of its quota after an accepted STORE")
                .with_boundaries(vec![0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
                .build(),
            stores: meter
                .u64_counter("mesh.dht.stores")
                .with_description("STOREs received, by result")
                .build(),
            evictions: meter
                .u64_counter("mesh.dht.evictions")
                .with_description("Records evicted to make room")
                .build(),
            expired: meter
                .u64_counter("mesh.dht.expired")
                .with_description("Records dropped at expiry")
                .build(),
            lookup_duration: meter
                .f64_histogram("mesh.dht.lookup.duration")
                .with_unit("s")
                .with_description("Duration of finished lookups, by kind")
                // Seconds (the SDK's default buckets are for milliseconds).
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
            lookup_hops: meter
                .u64_histogram("mesh.dht.lookup.hops")
                .with_description("Hops of finished lookups, by kind")
                .with_boundaries(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0])
                .build(),
            bad_messages: meter
                .u64_counter("mesh.dht.bad_messages")
                .with_description("Messages from peers that did not decode")
                .build(),
        };
        // Every series exists from the start, at zero: for an alert, absent is not zero.
        m.stored_bytes.add(0, &[]);
        m.stored_records.add(0, &[]);
        for result in [
            "stored",
            "too_large",
            "rate_limited",
            "quota",
            "invalid",
            "stale",
        ] {
            m.stores.add(0, &[KeyValue::new("result", result)]);
        }
        m.evictions.add(0, &[]);
        m.expired.add(0, &[]);
        m.bad_messages.add(0, &[]);
        m
    }

    /// Instruments on the global meter provider's `mesh-dht` meter.
    pub fn global() -> Self {
        Self::new(&opentelemetry::global::meter("mesh-dht"))
    }

    pub(crate) fn store_result(&self, result: &'static str) {
        self.stores.add(1, &[KeyValue::new("result", result)]);
    }

    pub(crate) fn quota_utilisation(&self, share: f64) {
        self.quota.record(share, &[]);
    }

    pub(crate) fn lookup(&self, kind: LookupKind, took: Duration, hops: u32) {
        let attrs = [KeyValue::new("kind", kind.label())];
        self.lookup_duration.record(took.as_secs_f64(), &attrs);
        self.lookup_hops.record(u64::from(hops), &attrs);
    }

    pub(crate) fn bad_message(&self) {
        self.bad_messages.add(1, &[]);
    }

    /// Reports the change from `before` to `after`.
    pub(crate) fn store_changed(&self, before: &Gauges, after: &Gauges) {
        let delta = |a: u64, b: u64| {
            i64::try_from(b).unwrap_or(i64::MAX) - i64::try_from(a).unwrap_or(i64::MAX)
        };
        if before.bytes != after.bytes {
            self.stored_bytes.add(delta(before.bytes, after.bytes), &[]);
        }
        if before.records != after.records {
            self.stored_records
                .add(delta(before.records, after.records), &[]);
        }
        if after.evicted > before.evicted {
            self.evictions.add(after.evicted - before.evicted, &[]);
        }
        if after.expired > before.expired {
            self.expired.add(after.expired - before.expired, &[]);
        }
    }
}

/// The store's levels and counters last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub bytes: u64,
    pub records: u64,
    pub evicted: u64,
    pub expired: u64,
}
