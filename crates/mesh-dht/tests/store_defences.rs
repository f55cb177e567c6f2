//! The record store under hostile input: every limit at, under and over its boundary; a STORE
//! flood; a thousand Sybils filling their quotas; forged, replayed and expired records. Memory
//! stays within the budget and honest peers' records survive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use mesh_crypto::{Identity, SIGNATURE_LEN, SIGNED_HEADER_LEN, UnixMillis};
use mesh_dht::record::{MAX_RECORD_LEN, record_key};
use mesh_dht::store::{PER_PEER_BYTES, STORES_PER_MINUTE, TOTAL_BYTES};
use mesh_dht::{Record, RecordPayload, RecordStore, Rejected, StoreConfig};

const NOW: UnixMillis = UnixMillis(1_000_000);
const LATER: UnixMillis = UnixMillis(10_000_000);

fn identity(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    seed[4] = 0xd7;
    Identity::from_seed(&seed)
}

/// Overhead of a record around its value, for a name of `name_len` bytes.
fn overhead(name_len: usize) -> usize {
    SIGNED_HEADER_LEN + 1 + 1 + name_len + 8 + SIGNATURE_LEN
}

fn record(author: &Identity, name: &[u8], seq: u64, value_len: usize) -> Vec<u8> {
    Record::sign(
        author,
        RecordPayload {
            name: name.to_vec(),
            seq,
            value: vec![0x5a; value_len],
        },
        NOW,
        LATER,
    )
    .unwrap()
    .into_bytes()
}

fn sized(author: &Identity, name: &[u8], seq: u64, total_len: usize) -> Vec<u8> {
    let r = record(author, name, seq, total_len - overhead(name.len()));
    assert_eq!(r.len(), total_len);
    r
}

fn t(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn defaults_are_the_documented_limits() {
    let c = StoreConfig::default();
    assert_eq!(c.max_record_len, 1024 * 1024);
    assert_eq!(c.per_peer_bytes, 10 * 1024 * 1024);
    assert_eq!(c.stores_per_minute, 100);
    assert_eq!(
        (MAX_RECORD_LEN, PER_PEER_BYTES, STORES_PER_MINUTE),
        (c.max_record_len, c.per_peer_bytes, c.stores_per_minute)
    );
    assert_eq!(c.total_bytes, TOTAL_BYTES);
}

#[test]
fn record_size_at_under_and_over_the_limit() {
    let mut s = RecordStore::new(StoreConfig::default());
    let a = identity(1);
    for (len, ok) in [(MAX_RECORD_LEN - 1, true), (MAX_RECORD_LEN, true)] {
        let r = sized(&a, format!("r{len}").as_bytes(), 1, len);
        assert_eq!(s.put(a.peer_id(), &r, NOW, t(0)).is_ok(), ok, "{len}");
    }
    // Over the limit: refused before it is even parsed (garbage gets the same answer), and
    // before the sender costs rate-limiter state.
    let over = vec![0u8; MAX_RECORD_LEN + 1];
    assert_eq!(
        s.put(identity(99).peer_id(), &over, NOW, t(0)),
        Err(Rejected::TooLarge {
            len: MAX_RECORD_LEN + 1,
            max: MAX_RECORD_LEN
        })
    );
    assert_eq!(s.stats().rejected.get("too_large"), Some(&1));
    assert_eq!(s.tracked_peers(), 1);
}

#[test]
fn store_rate_at_under_and_over_the_limit_then_recovers() {
    let mut s = RecordStore::new(StoreConfig::default());
    let a = identity(2);
    for i in 0..u64::from(STORES_PER_MINUTE) {
        let r = record(&a, format!("n{i}").as_bytes(), 1, 10);
        assert!(s.put(a.peer_id(), &r, NOW, t(0)).is_ok(), "store {i}");
    }
    let r = record(&a, b"one-more", 1, 10);
    assert_eq!(
        s.put(a.peer_id(), &r, NOW, t(0)),
        Err(Rejected::RateLimited)
    );
    // A rate-limited peer's garbage is refused as rate limited: no signature check is spent.
    assert_eq!(
        s.put(a.peer_id(), &[1, 2, 3], NOW, t(0)),
        Err(Rejected::RateLimited)
    );
    // Another peer is not affected.
    let b = identity(3);
    assert!(
        s.put(b.peer_id(), &record(&b, b"x", 1, 10), NOW, t(0))
            .is_ok()
    );
    // The bucket refills at 100 per minute: one more after 0.6 s, a full burst after a minute.
    assert!(
        s.put(a.peer_id(), &r, NOW, Duration::from_millis(600))
            .is_ok()
    );
    assert_eq!(
        s.put(
            a.peer_id(),
            &record(&a, b"y", 1, 1),
            NOW,
            Duration::from_millis(600)
        ),
        Err(Rejected::RateLimited)
    );
    // Idle peers' limiter state is reclaimed.
    s.reclaim_idle(t(3600));
    assert_eq!(s.tracked_peers(), 0);
}

#[test]
fn per_peer_quota_at_under_and_over_the_limit() {
    let config = StoreConfig {
        per_peer_bytes: 10_000,
        stores_per_minute: 1000,
        ..StoreConfig::default()
    };
    let mut s = RecordStore::new(config);
    let a = identity(4);
    // 9,999 then 1 more byte exactly reaches the quota.
    assert!(
        s.put(a.peer_id(), &sized(&a, b"a", 1, 5000), NOW, t(0))
            .is_ok()
    );
    assert!(
        s.put(a.peer_id(), &sized(&a, b"b", 1, 4999), NOW, t(0))
            .is_ok()
    );
    assert_eq!(s.usage_of(&a.peer_id()), 9999);
    let at_quota = sized(&a, b"c", 1, 1 + overhead(1));
    // 1 byte left: the smallest record is larger, refused with the numbers.
    assert!(matches!(
        s.put(a.peer_id(), &at_quota, NOW, t(0)),
        Err(Rejected::QuotaExceeded {
            used: 9999,
            quota: 10_000,
            ..
        })
    ));
    // Replacing its own record with a newer one of the same size is fine at the quota.
    assert!(
        s.put(a.peer_id(), &sized(&a, b"a", 2, 5001), NOW, t(0))
            .is_ok()
    );
    assert_eq!(s.usage_of(&a.peer_id()), 10_000);
    assert!(matches!(
        s.put(a.peer_id(), &sized(&a, b"a", 3, 5002), NOW, t(0)),
        Err(Rejected::QuotaExceeded { .. })
    ));
}

#[test]
fn forged_replayed_stale_and_expired_records_are_refused() {
    let mut s = RecordStore::new(StoreConfig::default());
    let a = identity(5);
    let v1 = record(&a, b"name", 1, 100);
    let v2 = record(&a, b"name", 2, 100);
    let key = s.put(a.peer_id(), &v2, NOW, t(0)).unwrap();
    assert_eq!(key, record_key(&a.peer_id(), b"name"));
    // Older sequence: stale.
    assert_eq!(
        s.put(a.peer_id(), &v1, NOW, t(0)),
        Err(Rejected::Stale { have: 2, got: 1 })
    );
    // The same record again (a republish) is accepted and changes nothing.
    assert_eq!(s.put(a.peer_id(), &v2, NOW, t(0)), Ok(key));
    assert_eq!(s.len(), 1);
    // A different record with the same sequence number: stale, not an overwrite.
    let rival = record(&a, b"name", 2, 50);
    assert!(matches!(
        s.put(a.peer_id(), &rival, NOW, t(0)),
        Err(Rejected::Stale { .. })
    ));
    // Every single flipped byte of a valid record is refused.
    let v3 = record(&a, b"name", 3, 20);
    for i in 0..v3.len() {
        let mut forged = v3.clone();
        forged[i] ^= 0x01;
        let r = s.put(identity(6).peer_id(), &forged, NOW, t(i as u64));
        assert!(r.is_err(), "flipped byte {i} accepted");
    }
    assert_eq!(s.get(&key, NOW).unwrap(), v2.as_slice());
    // Someone else cannot write into a's namespace: their record lands at their own key.
    let m = identity(7);
    let k = s
        .put(m.peer_id(), &record(&m, b"name", 99, 10), NOW, t(1000))
        .unwrap();
    assert_ne!(k, key);
    // Expired: not served, and dropped.
    assert_eq!(s.get(&key, LATER), None);
    assert_eq!(
        s.put(a.peer_id(), &v3, LATER, t(2000))
            .map_err(|e| e.reason()),
        Err("invalid")
    );
    assert_eq!(s.expire(LATER), 1);
    assert!(s.is_empty());
    assert_eq!(s.total_bytes(), 0);
}

#[test]
fn a_flooding_peer_evicts_only_its_own_records() {
    // The budget cannot hold the honest records and a full quota: eviction must choose.
    let config = StoreConfig {
        per_peer_bytes: 48 * 1024,
        total_bytes: 64 * 1024,
        stores_per_minute: 100_000,
        ..StoreConfig::default()
    };
    let mut s = RecordStore::new(config);
    let honest: Vec<Identity> = (100..110).map(identity).collect();
    let mut honest_keys = Vec::new();
    for h in &honest {
        let r = sized(h, b"profile", 1, 2000);
        honest_keys.push(s.put(h.peer_id(), &r, NOW, t(0)).unwrap());
    }
    // One peer stores 10,000 records, far past its quota and the budget.
    let flooder = identity(200);
    for i in 0..10_000u32 {
        let r = sized(&flooder, format!("spam{i}").as_bytes(), 1, 1000);
        let _ = s.put(flooder.peer_id(), &r, NOW, t(1));
        assert!(s.total_bytes() <= config.total_bytes);
        assert!(s.usage_of(&flooder.peer_id()) <= config.per_peer_bytes);
    }
    // The flood only ever displaced the flooder's own older records.
    assert!(s.stats().evicted > 9000, "{:?}", s.stats());
    for (h, k) in honest.iter().zip(&honest_keys) {
        assert!(
            s.get(k, NOW).is_some(),
            "{:?}'s record was evicted",
            h.peer_id()
        );
    }
}

#[test]
fn a_thousand_sybils_filling_their_quotas_cannot_push_out_honest_records() {
    let config = StoreConfig {
        per_peer_bytes: 4 * 1024,
        total_bytes: 256 * 1024,
        stores_per_minute: 1000,
        ..StoreConfig::default()
    };
    let mut s = RecordStore::new(config);
    let honest: Vec<Identity> = (1000..1020).map(identity).collect();
    let keys: Vec<_> = honest
        .iter()
        .map(|h| {
            s.put(h.peer_id(), &sized(h, b"inbox", 1, 1500), NOW, t(0))
                .unwrap()
        })
        .collect();
    // 1000 Sybils, 4 KiB each: 4 MB offered to a 256 KiB budget.
    for n in 0..1000u32 {
        let sybil = identity(10_000 + n);
        for j in 0..2 {
            let r = sized(&sybil, format!("s{j}").as_bytes(), 1, 2000);
            let _ = s.put(sybil.peer_id(), &r, NOW, t(u64::from(n)));
        }
        assert!(s.total_bytes() <= config.total_bytes);
    }
    assert!(s.stats().evicted > 0, "the budget was reached");
    for k in &keys {
        assert!(s.get(k, NOW).is_some(), "an honest record was evicted");
    }
    // What the Sybils still hold fits in what the honest peers left free.
    assert!(s.total_bytes() - 20 * 1500 <= config.total_bytes - 20 * 1500);
}

#[test]
fn changes_are_reported_once_per_key_and_loaded_records_are_checked() {
    use mesh_dht::store::Change;
    let (a, b) = (identity(1), identity(2));
    let mut s = RecordStore::new(StoreConfig::default());
    // Off by default: nothing accumulates for a store nobody persists.
    s.put(a.peer_id(), &record(&a, b"x", 1, 10), NOW, t(0))
        .unwrap();
    assert!(s.take_changes().is_empty());

    s.track_changes();
    let r1 = record(&a, b"x", 2, 10);
    let r2 = record(&a, b"x", 3, 10);
    s.put(a.peer_id(), &r1, NOW, t(1)).unwrap();
    s.put(a.peer_id(), &r2, NOW, t(2)).unwrap();
    let key = record_key(&a.peer_id(), b"x");
    // Two writes of one key: one change, with the latest bytes.
    assert_eq!(
        s.take_changes(),
        vec![Change::Put {
            key,
            owner: a.peer_id(),
            record: r2.clone()
        }]
    );
    assert!(s.take_changes().is_empty());
    // Expiry shows up as a removal.
    assert_eq!(s.expire(LATER), 1);
    assert_eq!(s.take_changes(), vec![Change::Removed(key)]);

    // Loading: checked like a STORE, charged to the owner, not rate limited.
    let mut fresh = RecordStore::new(StoreConfig {
        stores_per_minute: 1,
        ..StoreConfig::default()
    });
    for i in 0..5u8 {
        fresh
            .load(b.peer_id(), &record(&a, &[i], 1, 10), NOW, t(0))
            .unwrap();
    }
    assert_eq!(fresh.len(), 5);
    assert!(fresh.usage_of(&b.peer_id()) > 0);
    let mut forged = record(&a, b"y", 1, 10);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(matches!(
        fresh.load(b.peer_id(), &forged, NOW, t(0)),
        Err(Rejected::Invalid(_))
    ));
    // Expired while the node was down.
    assert!(fresh.load(b.peer_id(), &r1, LATER, t(0)).is_err());
}

#[test]
fn records_are_due_for_republishing_after_resting_and_a_republish_restarts_the_wait() {
    let a = identity(1);
    let mut s = RecordStore::new(StoreConfig::default());
    let hour = t(3600);
    let r = record(&a, b"x", 1, 10);
    s.put(a.peer_id(), &r, NOW, t(0)).unwrap();
    s.put(a.peer_id(), &record(&a, b"y", 1, 10), NOW, t(100))
        .unwrap();
    assert!(s.due_for_republish(NOW, t(3599), hour, 10).is_empty());
    // At the interval: the older one only, and only once.
    let due = s.due_for_republish(NOW, t(3600), hour, 10);
    assert_eq!(due, vec![(record_key(&a.peer_id(), b"x"), r.clone())]);
    assert!(s.due_for_republish(NOW, t(3650), hour, 10).is_empty());
    // Bounded by `max`, oldest first.
    assert_eq!(s.due_for_republish(NOW, t(9000), hour, 1).len(), 1);
    assert_eq!(
        s.due_for_republish(NOW, t(9000), hour, 1)[0].0,
        record_key(&a.peer_id(), b"x")
    );
    // Someone else republishing it to us restarts the wait.
    s.put(identity(2).peer_id(), &r, NOW, t(20_000)).unwrap();
    let due = s.due_for_republish(NOW, t(20_000 + 3599), hour, 10);
    assert!(
        due.iter()
            .all(|(k, _)| *k != record_key(&a.peer_id(), b"x"))
    );
    // Expired records are not republished.
    assert!(s.due_for_republish(LATER, t(100_000), hour, 10).is_empty());
}

#[test]
fn a_republish_of_held_bytes_passes_even_at_quota_and_is_not_verified_again() {
    let a = identity(1);
    let mut s = RecordStore::new(StoreConfig {
        per_peer_bytes: 2000,
        ..StoreConfig::default()
    });
    let r = sized(&a, b"x", 1, 1500);
    s.put(a.peer_id(), &r, NOW, t(0)).unwrap();
    // Another record would pass the quota...
    assert!(matches!(
        s.put(a.peer_id(), &sized(&a, b"y", 1, 600), NOW, t(1)),
        Err(Rejected::QuotaExceeded { .. })
    ));
    // ...but the same bytes again are a refresh, charged nothing.
    assert!(s.put(a.peer_id(), &r, NOW, t(2)).is_ok());
    assert_eq!(s.usage_of(&a.peer_id()), 1500);
    // And it restarted the republish wait.
    assert!(
        s.due_for_republish(NOW, t(3601), Duration::from_secs(3600), 10)
            .is_empty()
    );
}
