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

pub(crate) const NOW: UnixMillis = UnixMillis(1_000_000);

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
pub(crate) fn cases() -> Vec<(&'static str, RecordStore, Identity, Vec<u8>)> {
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

/// Memory the store keeps per peer it tracks (rate-limiter state), measured as the growth of
/// the process's resident memory while `peers` distinct peers each send one STORE, with a
/// plain `HashMap<PeerId, u64>` of the same peers (the least any per-peer limiter can keep)
/// as the same-run baseline, and what is left after the idle peers are reclaimed.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TrackedPeers {
    pub peers: usize,
    pub tracked: usize,
    pub bytes_per_peer: f64,
    pub baseline_bytes_per_peer: f64,
    pub tracked_after_reclaim: usize,
    pub bytes_per_peer_after_reclaim: f64,
}

fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[allow(clippy::cast_precision_loss)] // bytes per peer, for a report
pub(crate) fn tracked_peers(peers: usize) -> Option<TrackedPeers> {
    // Distinct senders; the link authenticated them, so no key validation is needed here.
    let ids: Vec<mesh_crypto::PeerId> = (0..peers)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            mesh_crypto::PeerId::from_bytes_unvalidated(b)
        })
        .collect();
    // A STORE that passes the size check and is refused later: the sender is tracked.
    let junk = vec![0u8; 200];

    let before = rss()?;
    let mut map = std::collections::HashMap::new();
    for (i, p) in ids.iter().enumerate() {
        map.insert(*p, i as u64);
    }
    let baseline = rss()?.saturating_sub(before) as f64 / peers as f64;
    drop(map);

    let before = rss()?;
    let mut store = RecordStore::new(StoreConfig::default());
    for p in &ids {
        let _ = store.put(*p, &junk, NOW, Duration::ZERO);
    }
    let tracked = store.tracked_peers();
    let grown = rss()?.saturating_sub(before) as f64 / peers as f64;
    // A minute later every one of them is idle; the periodic reclaim forgets them.
    store.reclaim_idle(Duration::from_secs(61));
    let after = rss()?.saturating_sub(before) as f64 / peers as f64;
    Some(TrackedPeers {
        peers,
        tracked,
        bytes_per_peer: grown,
        baseline_bytes_per_peer: baseline,
        tracked_after_reclaim: store.tracked_peers(),
        bytes_per_peer_after_reclaim: after,
    })
}
