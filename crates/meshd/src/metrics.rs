//! `/metrics`: the OpenTelemetry SDK with its Prometheus exporter. The libraries record on the
//! global meter provider (installed here, before the node starts); what the node knows only
//! by asking (links, messaging counters, pending approvals) is polled into a [`Snapshot`]
//! that observable instruments read at each scrape.

use std::sync::{Arc, Mutex};

use opentelemetry::metrics::{MeterProvider as _, ObservableCounter, ObservableGauge};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// What the node reported at its last poll.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Snapshot {
    pub links: u64,
    pub dht_contacts: u64,
    /// The messenger's counters.
    pub messaging: mesh_node::MessagingStats,
    pub pending_approvals: u64,
    pub blob_requests: u64,
    pub blob_quota: u64,
    pub dht_quota: u64,
    pub uptime_s: f64,
}

/// The installed provider and the exporter's registry.
pub(crate) struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    snapshot: Arc<Mutex<Snapshot>>,
    _gauges: Vec<ObservableGauge<u64>>,
    _uptime: ObservableGauge<f64>,
    _counters: Vec<ObservableCounter<u64>>,
}

fn read(s: &Mutex<Snapshot>) -> Snapshot {
    *s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Installs the SDK as the global meter provider, exporting to a Prometheus registry.
    #[allow(clippy::too_many_lines)] // one declaration per instrument
    pub(crate) fn install() -> Result<Self, String> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            // Names as the libraries chose them (`mesh.blob.stored.bytes` is
            // `mesh_blob_stored_bytes`, not `..._bytes_bytes`); units are in the descriptions.
            .without_units()
            .build()
            .map_err(|e| format!("metrics exporter: {e}"))?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(Resource::builder().with_service_name("meshd").build())
            .build();
        global::set_meter_provider(provider.clone());
        let meter = provider.meter("meshd");
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let gauge = |name: &'static str, what: &'static str, f: fn(&Snapshot) -> u64| {
            let s = Arc::clone(&snapshot);
            meter
                .u64_observable_gauge(name)
                .with_description(what)
                .with_callback(move |o| o.observe(f(&read(&s)), &[]))
                .build()
        };
        let gauges = vec![
            gauge("mesh.node.links", "Open links to peers", |s| s.links),
            gauge(
                "mesh.dht.contacts",
                "Contacts in the DHT routing table",
                |s| s.dht_contacts,
            ),
            gauge(
                "mesh.recovery.pending_approvals",
                "Recovery requests waiting for this guardian's user",
                |s| s.pending_approvals,
            ),
            gauge(
                "mesh.blob.serve.in_flight",
                "Blob requests being served now",
                |s| s.blob_requests,
            ),
            gauge(
                "mesh.blob.quota",
                "Bytes the blob store may hold in all (configured)",
                |s| s.blob_quota,
            ),
            gauge(
                "mesh.dht.quota",
                "Bytes of DHT records the node may hold in all (configured)",
                |s| s.dht_quota,
            ),
        ];
        let s = Arc::clone(&snapshot);
        let uptime = meter
            .f64_observable_gauge("mesh.node.uptime")
            .with_unit("s")
            .with_description("Seconds since the node started")
            .with_callback(move |o| o.observe(read(&s).uptime_s, &[]))
            .build();
        let s = Arc::clone(&snapshot);
        let sent = meter
            .u64_observable_counter("mesh.messaging.sent")
            .with_description("Messages and receipts sent, by path (direct or mesh)")
            .with_callback(move |o| {
                let v = read(&s);
                o.observe(v.messaging.sent_direct, &[KeyValue::new("path", "direct")]);
                o.observe(v.messaging.sent_mesh, &[KeyValue::new("path", "mesh")]);
            })
            .build();
        let counter = |name: &'static str, what: &'static str, f: fn(&Snapshot) -> u64| {
            let s = Arc::clone(&snapshot);
            meter
                .u64_observable_counter(name)
                .with_description(what)
                .with_callback(move |o| o.observe(f(&read(&s)), &[]))
                .build()
        };
        let counters = vec![
            sent,
            counter("mesh.messaging.received", "New messages received", |s| {
                s.messaging.received
            }),
            counter(
                "mesh.messaging.duplicates",
                "Copies of messages received again",
                |s| s.messaging.duplicates,
            ),
            counter(
                "mesh.messaging.refused",
                "Envelopes or frames refused (malformed, forged, rate limited)",
                |s| s.messaging.refused,
            ),
            counter(
                "mesh.messaging.events_dropped",
                "Incoming messages dropped because nobody read them",
                |s| s.messaging.events_dropped,
            ),
        ];
        Ok(Self {
            registry,
            provider,
            snapshot,
            _gauges: gauges,
            _uptime: uptime,
            _counters: counters,
        })
    }

    /// Replaces the polled values.
    pub(crate) fn update(&self, snapshot: Snapshot) {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Result<String, String> {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    /// Flushes and stops the provider.
    pub(crate) fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}
