//! The DHT record store under a STORE flood: what one refused STORE costs the node.
//!
//! Ours: `RecordStore::put`, which checks size, rate and quota before it verifies anything.
//! Baseline, same run, same inputs: a store that verifies the record's signature first and only
//! then applies the same checks (what a naive implementation does). The ratio is what the order
//! of the checks saves per flooded STORE.

use std::time::Duration;

use mesh_crypto::{Identity, UnixMillis};
use mesh_dht::{Record, RecordPayload, RecordStore, StoreConfig};

use crate::timing::{Measurement, measure};

const NOW: UnixMillis = UnixMillis(1_000_000);

fn signed(author: &Identity, name: &str, len: usize) -> Vec<u8> {
    Record::sign(
        author,
        RecordPayload {
            name: name.as_bytes().to_vec(),
            seq: 1,
            value: vec![0x42; len],
        },
        NOW,
        UnixMillis(NOW.0 + 3_600_000),
    )
    .map(Record::into_bytes)
    .unwrap_or_default()
}

/// The flood cases: (name, store prepared so the STORE is refused, sender, bytes).
fn cases() -> Vec<(&'static str, RecordStore, Identity, Vec<u8>)> {
    let flooder = Identity::from_seed(&[9; 32]);
    let record = signed(&flooder, "flood", 1024);
    // Rate: the sender used its 100 STOREs of this minute.
    let mut rated = RecordStore::new(StoreConfig::default());
    for i in 0..100 {
        let _ = rated.put(
            flooder.peer_id(),
            &signed(&flooder, &format!("r{i}"), 10),
            NOW,
            Duration::ZERO,
        );
    }
    // Quota: the sender's quota is full.
    let mut full = RecordStore::new(StoreConfig {
        per_peer_bytes: 4096,
        stores_per_minute: u32::MAX,
        ..StoreConfig::default()
    });
    let _ = full.put(
        flooder.peer_id(),
        &signed(&flooder, "big", 3900),
        NOW,
        Duration::ZERO,
    );
    let copy = |seed: u8| Identity::from_seed(&[seed; 32]);
    vec![
        (
            "refused STORE: rate limited, 1 KiB",
            rated,
            copy(9),
            record.clone(),
        ),
        ("refused STORE: over quota, 1 KiB", full, copy(9), record),
    ]
}

/// Ours: the store as built.
pub(crate) fn run(budget: Duration) -> Vec<Measurement> {
    cases()
        .into_iter()
        .map(|(name, mut store, from, bytes)| {
            let peer = from.peer_id();
            measure(name, 0, budget, || {
                store.put(peer, &bytes, NOW, Duration::ZERO)
            })
        })
        .collect()
}

/// Baseline: verify the signature first, then the same store decides.
pub(crate) fn run_baseline(budget: Duration) -> Vec<Measurement> {
    cases()
        .into_iter()
        .map(|(name, mut store, from, bytes)| {
            let peer = from.peer_id();
            measure(name, 0, budget, || {
                let verified = Record::decode(&bytes, NOW).is_ok();
                (verified, store.put(peer, &bytes, NOW, Duration::ZERO))
            })
        })
        .collect()
}
