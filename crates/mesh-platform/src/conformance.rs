//! The `KvStore` conformance suite: generic async test functions that every storage backend runs
//! unchanged (natively under `cargo test`, IndexedDB in headless Chromium).
//!
//! A backend's test file implements [`StoreFactory`] and expands
//! [`kv_conformance_tests!`](crate::kv_conformance_tests) with its test attribute:
//!
//! ```text
//! mesh_platform::kv_conformance_tests!(#[tokio::test] MyFactory::new());
//! ```
//!
//! Each case panics with a message naming what broke.

#![allow(
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::ops::Bound::{Excluded as E, Included as I, Unbounded as U};

use async_trait::async_trait;

use crate::kv::{
    Batch, Commit, Direction, KeyRange, KvError, KvStore, MAX_KEY_LEN, MAX_VALUE_LEN, Migration,
    MigrationStep, Schema, TableStats,
};

/// Opens stores for the suite. `open` with the same `name` must reach the same stored data
/// (after the previous store was closed and dropped).
#[async_trait(?Send)]
pub trait StoreFactory {
    /// The store type.
    type Store: KvStore + 'static;

    /// Opens (creating if needed) the store called `name` with `schema`.
    async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError>;
}

/// Tables of the suite's main schema.
pub const TABLES: &[&str] = &["items", "other", "big"];

/// The suite's version-1 schema.
pub static SCHEMA_V1: Schema = Schema {
    version: 1,
    tables: TABLES,
    migrations: &[],
};

fn upper(k: &[u8], v: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    // Deletes entries whose value is "drop", upper-cases the others and re-keys them.
    if v == b"drop" {
        return None;
    }
    let mut nk = b"v2/".to_vec();
    nk.extend_from_slice(k);
    Some((nk, v.to_ascii_uppercase()))
}

static MIGRATIONS: &[Migration] = &[Migration {
    to_version: 2,
    description: "rename other to renamed, rewrite items, drop big",
    steps: &[
        MigrationStep::RenameTable {
            from: "other",
            to: "renamed",
        },
        MigrationStep::Rewrite {
            table: "items",
            f: upper,
        },
        MigrationStep::DropTable("big"),
    ],
}];

/// The suite's version-2 schema: migrates a version-1 store.
pub static SCHEMA_V2: Schema = Schema {
    version: 2,
    tables: &["items", "renamed", "big"],
    migrations: MIGRATIONS,
};

async fn keys<S: KvStore>(
    s: &S,
    table: &str,
    range: KeyRange,
    dir: Direction,
    limit: usize,
) -> Vec<Vec<u8>> {
    s.range(table, range, dir, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn sample_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0xff],
        vec![2],
        vec![0x7f],
        vec![0x80],
        vec![0xff],
        vec![0xff, 0xff],
        b"abc".to_vec(),
        b"abd".to_vec(),
        b"ab".to_vec(),
    ]
}

/// Keys come back in unsigned bytewise order (prefix first), forward and reverse.
pub async fn ordering<F: StoreFactory>(f: &F) {
    let s = f.open("ordering", &SCHEMA_V1).await.unwrap();
    let mut ks = sample_keys();
    // Insert in a scrambled order, one batch per key.
    for k in ks.iter().rev().step_by(2).chain(ks.iter().step_by(2)) {
        s.put("items", k, b"v").await.unwrap();
    }
    ks.sort();
    assert_eq!(
        keys(&s, "items", KeyRange::all(), Direction::Forward, 100).await,
        ks,
        "forward order"
    );
    let mut rev = ks.clone();
    rev.reverse();
    assert_eq!(
        keys(&s, "items", KeyRange::all(), Direction::Reverse, 100).await,
        rev,
        "reverse order"
    );
    // Tables are separate: nothing of "items" shows in "other".
    assert!(
        keys(&s, "other", KeyRange::all(), Direction::Forward, 100)
            .await
            .is_empty()
    );
    s.close().await.unwrap();
}

/// Included, excluded and unbounded bounds, prefixes, empty and inverted ranges, limits.
pub async fn range_bounds<F: StoreFactory>(f: &F) {
    let s = f.open("range-bounds", &SCHEMA_V1).await.unwrap();
    for i in 0u8..10 {
        s.put("items", &[i], &[i]).await.unwrap();
    }
    s.put("other", &[5], b"x").await.unwrap();
    let k = |v: &[u8]| v.iter().map(|b| vec![*b]).collect::<Vec<_>>();
    let r = |start, end| KeyRange { start, end };
    let cases: Vec<(KeyRange, Vec<u8>)> = vec![
        (r(I(vec![2]), I(vec![5])), vec![2, 3, 4, 5]),
        (r(E(vec![2]), E(vec![5])), vec![3, 4]),
        (r(I(vec![2]), E(vec![5])), vec![2, 3, 4]),
        (r(E(vec![2]), I(vec![5])), vec![3, 4, 5]),
        (r(U, E(vec![3])), vec![0, 1, 2]),
        (r(E(vec![7]), U), vec![8, 9]),
        (r(I(vec![5]), I(vec![5])), vec![5]),
        (r(I(vec![5]), E(vec![5])), vec![]),
        (r(I(vec![7]), I(vec![3])), vec![]),
        (r(I(vec![2, 0]), I(vec![3])), vec![3]),
        (KeyRange::between(&[4], &[6]), vec![4, 5]),
        (KeyRange::from(&[8]), vec![8, 9]),
    ];
    for (range, want) in cases {
        let got = keys(&s, "items", range.clone(), Direction::Forward, 100).await;
        assert_eq!(got, k(&want), "forward {range:?}");
        let mut want_rev = k(&want);
        want_rev.reverse();
        assert_eq!(
            keys(&s, "items", range.clone(), Direction::Reverse, 100).await,
            want_rev,
            "reverse {range:?}"
        );
    }
    // Limits: forward takes the smallest keys, reverse the largest.
    assert_eq!(
        keys(&s, "items", KeyRange::all(), Direction::Forward, 3).await,
        k(&[0, 1, 2])
    );
    assert_eq!(
        keys(&s, "items", KeyRange::all(), Direction::Reverse, 3).await,
        k(&[9, 8, 7])
    );
    assert!(
        keys(&s, "items", KeyRange::all(), Direction::Forward, 0)
            .await
            .is_empty()
    );
    // Prefix ranges, including an all-0xff prefix with no successor.
    s.put("big", b"user/1", b"a").await.unwrap();
    s.put("big", b"user/2", b"b").await.unwrap();
    s.put("big", b"users", b"c").await.unwrap();
    s.put("big", &[0xff, 0xff, 1], b"d").await.unwrap();
    assert_eq!(
        keys(
            &s,
            "big",
            KeyRange::prefix(b"user/"),
            Direction::Forward,
            10
        )
        .await,
        vec![b"user/1".to_vec(), b"user/2".to_vec()]
    );
    assert_eq!(
        keys(
            &s,
            "big",
            KeyRange::prefix(&[0xff, 0xff]),
            Direction::Forward,
            10
        )
        .await,
        vec![vec![0xff, 0xff, 1]]
    );
    // Values come back with their keys.
    let rows = s
        .range(
            "items",
            KeyRange::between(&[3], &[5]),
            Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![(vec![3], vec![3]), (vec![4], vec![4])]);
    s.close().await.unwrap();
}

/// A batch is applied whole or not at all; later operations on a key win.
pub async fn batch_atomicity<F: StoreFactory>(f: &F) {
    let s = f.open("batches", &SCHEMA_V1).await.unwrap();
    s.put("items", b"keep", b"1").await.unwrap();
    let mut b = Batch::new();
    b.put("items", b"a".as_slice(), b"1".as_slice())
        .put("other", b"b".as_slice(), b"2".as_slice())
        .delete("items", b"keep".as_slice())
        .put("items", b"a".as_slice(), b"last".as_slice())
        .delete("items", b"never-there".as_slice());
    s.apply(b).await.unwrap();
    assert_eq!(
        s.get("items", b"a").await.unwrap().as_deref(),
        Some(b"last".as_slice()),
        "later put wins"
    );
    assert_eq!(
        s.get("other", b"b").await.unwrap().as_deref(),
        Some(b"2".as_slice())
    );
    assert_eq!(
        s.get("items", b"keep").await.unwrap(),
        None,
        "delete applied"
    );

    // A batch with one bad operation (undeclared table, oversized value) changes nothing.
    for bad in [0, 1] {
        let mut b = Batch::new();
        b.put("items", b"x".as_slice(), b"1".as_slice())
            .delete("items", b"a".as_slice());
        if bad == 0 {
            b.put("nope", b"y".as_slice(), b"1".as_slice());
        } else {
            b.put("items", b"y".as_slice(), vec![0; MAX_VALUE_LEN + 1]);
        }
        assert!(s.apply(b).await.is_err(), "bad batch {bad} accepted");
        assert_eq!(
            s.get("items", b"x").await.unwrap(),
            None,
            "part of a failed batch was applied"
        );
        assert!(
            s.get("items", b"a").await.unwrap().is_some(),
            "delete of a failed batch was applied"
        );
    }
    // An empty batch is fine.
    s.apply(Batch::new()).await.unwrap();
    s.close().await.unwrap();
}

/// Values of several MiB round-trip; the limit is enforced exactly.
pub async fn large_values<F: StoreFactory>(f: &F) {
    let s = f.open("large", &SCHEMA_V1).await.unwrap();
    let four = (0..4 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>();
    s.put("big", b"four", &four).await.unwrap();
    let at_limit = vec![0xa5u8; MAX_VALUE_LEN];
    s.put("big", b"limit", &at_limit).await.unwrap();
    assert_eq!(
        s.get("big", b"four").await.unwrap().as_deref(),
        Some(four.as_slice())
    );
    assert_eq!(
        s.get("big", b"limit").await.unwrap().map(|v| v.len()),
        Some(MAX_VALUE_LEN)
    );
    let over = s.put("big", b"over", &vec![0u8; MAX_VALUE_LEN + 1]).await;
    assert_eq!(
        over,
        Err(KvError::ValueTooLarge {
            len: MAX_VALUE_LEN + 1,
            max: MAX_VALUE_LEN
        })
    );
    let key_at_limit = vec![7u8; MAX_KEY_LEN];
    s.put("items", &key_at_limit, b"k").await.unwrap();
    assert_eq!(
        s.get("items", &key_at_limit).await.unwrap().as_deref(),
        Some(b"k".as_slice())
    );
    let long_key = vec![7u8; MAX_KEY_LEN + 1];
    assert_eq!(
        s.put("items", &long_key, b"k").await,
        Err(KvError::KeyTooLarge {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        })
    );
    s.close().await.unwrap();
}

/// An empty key and an empty value are ordinary data, distinct from "absent".
pub async fn empty_keys_and_values<F: StoreFactory>(f: &F) {
    let s = f.open("empty", &SCHEMA_V1).await.unwrap();
    assert_eq!(s.get("items", b"").await.unwrap(), None);
    s.put("items", b"", b"").await.unwrap();
    assert_eq!(s.get("items", b"").await.unwrap(), Some(Vec::new()));
    s.put("items", b"k", b"").await.unwrap();
    assert_eq!(s.get("items", b"k").await.unwrap(), Some(Vec::new()));
    assert_eq!(
        keys(&s, "items", KeyRange::all(), Direction::Forward, 10).await,
        vec![vec![], b"k".to_vec()]
    );
    s.delete("items", b"").await.unwrap();
    assert_eq!(s.get("items", b"").await.unwrap(), None);
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 1,
            bytes: 1
        }
    );
    s.close().await.unwrap();
}

/// Tables not in the schema are refused by every operation.
pub async fn unknown_tables<F: StoreFactory>(f: &F) {
    let s = f.open("unknown", &SCHEMA_V1).await.unwrap();
    let unknown = KvError::UnknownTable("renamed".into());
    assert_eq!(s.get("renamed", b"k").await, Err(unknown.clone()));
    assert_eq!(s.put("renamed", b"k", b"v").await, Err(unknown.clone()));
    assert_eq!(s.delete("renamed", b"k").await, Err(unknown.clone()));
    assert_eq!(
        s.range("renamed", KeyRange::all(), Direction::Forward, 1)
            .await,
        Err(unknown.clone())
    );
    assert_eq!(s.stats("renamed").await, Err(unknown));
    // Reserved internal tables are not reachable either.
    assert!(matches!(
        s.get("__meta", b"schema_version").await,
        Err(KvError::UnknownTable(_))
    ));
    s.close().await.unwrap();
}

/// Data survives close and reopen; a closed store refuses work.
pub async fn reopen_persists<F: StoreFactory>(f: &F) {
    {
        let s = f.open("reopen", &SCHEMA_V1).await.unwrap();
        let mut b = Batch::new();
        for i in 0u32..100 {
            b.put("items", i.to_be_bytes(), i.to_le_bytes());
        }
        s.apply(b).await.unwrap();
        s.delete("items", &7u32.to_be_bytes()).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(s.get("items", b"x").await, Err(KvError::Closed));
        assert_eq!(s.put("items", b"x", b"y").await, Err(KvError::Closed));
    }
    let s = f.open("reopen", &SCHEMA_V1).await.unwrap();
    assert_eq!(s.schema_version(), 1);
    let rows = s
        .range("items", KeyRange::all(), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 99);
    assert_eq!(
        s.get("items", &42u32.to_be_bytes()).await.unwrap(),
        Some(42u32.to_le_bytes().to_vec())
    );
    assert_eq!(s.get("items", &7u32.to_be_bytes()).await.unwrap(), None);
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 99,
            bytes: 99 * 8
        },
        "stats persist"
    );
    s.close().await.unwrap();
}

/// Migrations run in order on open; a store from a newer schema is refused.
pub async fn schema_versions<F: StoreFactory>(f: &F) {
    {
        let s = f.open("schema", &SCHEMA_V1).await.unwrap();
        let mut b = Batch::new();
        b.put("items", b"a".as_slice(), b"hello".as_slice())
            .put("items", b"b".as_slice(), b"drop".as_slice())
            .put("other", b"o".as_slice(), b"moved".as_slice())
            .put("big", b"g".as_slice(), vec![1u8; 1000]);
        s.apply(b).await.unwrap();
        s.close().await.unwrap();
    }
    {
        let s = f.open("schema", &SCHEMA_V2).await.unwrap();
        assert_eq!(s.schema_version(), 2);
        let items = s
            .range("items", KeyRange::all(), Direction::Forward, 10)
            .await
            .unwrap();
        assert_eq!(
            items,
            vec![(b"v2/a".to_vec(), b"HELLO".to_vec())],
            "rewrite applied"
        );
        assert_eq!(
            s.get("renamed", b"o").await.unwrap().as_deref(),
            Some(b"moved".as_slice()),
            "rename applied"
        );
        assert!(
            s.range("big", KeyRange::all(), Direction::Forward, 10)
                .await
                .unwrap()
                .is_empty(),
            "drop applied"
        );
        assert_eq!(
            s.stats("items").await.unwrap(),
            TableStats {
                entries: 1,
                bytes: 4 + 5
            }
        );
        assert_eq!(
            s.stats("renamed").await.unwrap(),
            TableStats {
                entries: 1,
                bytes: 1 + 5
            }
        );
        assert_eq!(s.stats("big").await.unwrap(), TableStats::default());
        s.close().await.unwrap();
    }
    // Reopening at the same version changes nothing; at an older one is refused.
    let s = f.open("schema", &SCHEMA_V2).await.unwrap();
    assert_eq!(
        s.get("items", b"v2/a").await.unwrap().as_deref(),
        Some(b"HELLO".as_slice())
    );
    s.close().await.unwrap();
    drop(s);
    match f.open("schema", &SCHEMA_V1).await {
        Err(KvError::SchemaTooNew {
            found: 2,
            supported: 1,
        }) => {}
        other => panic!(
            "a v2 store opened with the v1 schema: {:?}",
            other.map(|_| ())
        ),
    }
}

/// Batches the writer of [`concurrent_readers`] applies.
const ROUNDS: u64 = 60;

/// Readers running alongside a writer always see whole batches.
pub async fn concurrent_readers<F: StoreFactory>(f: &F) {
    let s = f.open("concurrent", &SCHEMA_V1).await.unwrap();
    let mut b = Batch::new();
    b.put("items", b"a".as_slice(), 0u64.to_le_bytes()).put(
        "items",
        b"b".as_slice(),
        0u64.to_le_bytes(),
    );
    s.apply(b).await.unwrap();
    let writer = async {
        for i in 1..=ROUNDS {
            let mut b = Batch::new();
            b.put("items", b"a".as_slice(), i.to_le_bytes()).put(
                "items",
                b"b".as_slice(),
                i.to_le_bytes(),
            );
            s.apply(b).await.unwrap();
        }
    };
    let reader = |id: u32| {
        let s = &s;
        async move {
            let mut last = 0u64;
            for _ in 0..ROUNDS {
                let rows = s
                    .range("items", KeyRange::all(), Direction::Forward, 10)
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 2, "reader {id}");
                let a = u64::from_le_bytes(rows[0].1.clone().try_into().unwrap());
                let b = u64::from_le_bytes(rows[1].1.clone().try_into().unwrap());
                assert_eq!(a, b, "reader {id} saw half a batch");
                assert!(a >= last, "reader {id} went back in time");
                last = a;
            }
        }
    };
    futures_util::future::join4(writer, reader(1), reader(2), reader(3)).await;
    assert_eq!(
        s.get("items", b"a").await.unwrap(),
        Some(ROUNDS.to_le_bytes().to_vec())
    );
    s.close().await.unwrap();
}

/// Per-table entries and bytes follow puts, overwrites, deletes and batches exactly.
pub async fn stats_accounting<F: StoreFactory>(f: &F) {
    let s = f.open("stats", &SCHEMA_V1).await.unwrap();
    assert_eq!(s.stats("items").await.unwrap(), TableStats::default());
    s.put("items", b"k1", &[0; 10]).await.unwrap();
    s.put("items", b"k2", &[0; 20]).await.unwrap();
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 2,
            bytes: 34
        }
    );
    s.put("items", b"k1", &[0; 5]).await.unwrap();
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 2,
            bytes: 29
        },
        "overwrite"
    );
    s.delete("items", b"k2").await.unwrap();
    s.delete("items", b"missing").await.unwrap();
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 1,
            bytes: 7
        },
        "delete"
    );
    let mut b = Batch::new();
    b.put("items", b"k3".as_slice(), vec![0; 100])
        .put("items", b"k3".as_slice(), vec![0; 50])
        .delete("items", b"k1".as_slice())
        .put("other", b"o".as_slice(), vec![0; 9]);
    s.apply(b).await.unwrap();
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 1,
            bytes: 52
        },
        "batch"
    );
    assert_eq!(
        s.stats("other").await.unwrap(),
        TableStats {
            entries: 1,
            bytes: 10
        }
    );
    assert_eq!(s.stats("big").await.unwrap(), TableStats::default());
    s.close().await.unwrap();
}

#[allow(clippy::unnecessary_wraps)] // the signature of a migration rewrite
fn shift(k: &[u8], v: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    // Re-keys entry n to n + 1: every new key but the last equals an old key.
    Some((vec![k[0] + 1], v.to_vec()))
}

static SHIFT_SCHEMA: Schema = Schema {
    version: 2,
    tables: TABLES,
    migrations: &[Migration {
        to_version: 2,
        description: "shift keys by one",
        steps: &[MigrationStep::Rewrite {
            table: "items",
            f: shift,
        }],
    }],
};

/// A rewrite whose new keys collide with old keys not yet rewritten loses nothing.
pub async fn migration_rekeys_without_loss<F: StoreFactory>(f: &F) {
    {
        let s = f.open("shift", &SCHEMA_V1).await.unwrap();
        for i in 1u8..=3 {
            s.put("items", &[i], &[i * 10]).await.unwrap();
        }
        s.close().await.unwrap();
    }
    let s = f.open("shift", &SHIFT_SCHEMA).await.unwrap();
    let rows = s
        .range("items", KeyRange::all(), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (vec![2], vec![10]),
            (vec![3], vec![20]),
            (vec![4], vec![30])
        ]
    );
    assert_eq!(
        s.stats("items").await.unwrap(),
        TableStats {
            entries: 3,
            bytes: 6
        }
    );
    s.close().await.unwrap();
}

/// A write whose future is dropped mid-flight (a timeout, a `select!`) leaves the statistics
/// exact: whatever the backend did with the batch, the counts match the data.
pub async fn cancelled_write_keeps_stats_exact<F: StoreFactory>(f: &F) {
    let s = f.open("cancel", &SCHEMA_V1).await.unwrap();
    // Cancel after 1, 2, ... polls, so that some rounds drop the write while the backend is
    // committing it on another thread.
    for round in 0u8..40 {
        let key = [round];
        poll_then_drop(s.put("items", &key, &[0; 100]), usize::from(round) + 1).await;
        // stats() first: it waits for a cancelled write still in flight, so the scan after it
        // sees the data the counts describe.
        let stats = s.stats("items").await.unwrap();
        let rows = s
            .range("items", KeyRange::all(), Direction::Forward, 100)
            .await
            .unwrap();
        assert_eq!(
            stats.entries,
            rows.len() as u64,
            "round {round}: stats disagree with the data"
        );
        assert_eq!(
            stats.bytes,
            rows.len() as u64 * 101,
            "round {round}: byte count"
        );
        s.delete("items", &key).await.unwrap();
        let left = rows.len() as u64 - u64::from(rows.iter().any(|(k, _)| k == &key));
        assert_eq!(
            s.stats("items").await.unwrap().entries,
            left,
            "round {round}: after delete"
        );
    }
    s.close().await.unwrap();
}

/// Polls `fut` up to `polls` times, yielding in between, then drops it if it is not done.
async fn poll_then_drop<T>(fut: impl std::future::Future<Output = T>, polls: usize) {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        let done =
            std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready()))
                .await;
        if done {
            return;
        }
        YieldOnce(false).await;
    }
}

/// Returns `Pending` once (waking itself), then `Ready`: lets other work run.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

/// Fast batches (`Commit::Fast`) are as atomic and as visible as durable ones, mixed in any
/// order, and what they wrote is there after a clean close and reopen.
pub async fn fast_commits<F: StoreFactory>(f: &F) {
    {
        let s = f.open("fast", &SCHEMA_V1).await.unwrap();
        for i in 0u32..50 {
            let mut b = Batch::new();
            b.put("items", i.to_be_bytes(), i.to_le_bytes()).put(
                "other",
                i.to_be_bytes(),
                b"x".to_vec(),
            );
            if i % 3 != 0 {
                b.set_commit(Commit::Fast);
            }
            assert_eq!(b.commit() == Commit::Fast, i % 3 != 0);
            s.apply(b).await.unwrap();
            assert_eq!(
                s.get("items", &i.to_be_bytes()).await.unwrap(),
                Some(i.to_le_bytes().to_vec())
            );
        }
        // A fast batch with a bad op applies nothing.
        let mut bad = Batch::new();
        bad.put("items", 99u32.to_be_bytes(), b"y".to_vec())
            .put("nope", b"k".to_vec(), b"v".to_vec())
            .set_commit(Commit::Fast);
        assert!(s.apply(bad).await.is_err());
        assert_eq!(s.get("items", &99u32.to_be_bytes()).await.unwrap(), None);
        s.sync().await.unwrap();
        s.close().await.unwrap();
        assert_eq!(s.sync().await, Err(KvError::Closed));
    }
    let s = f.open("fast", &SCHEMA_V1).await.unwrap();
    assert_eq!(s.stats("items").await.unwrap().entries, 50);
    assert_eq!(s.stats("other").await.unwrap().entries, 50);
    s.close().await.unwrap();
}

/// Expands to one test per conformance case, with the given test attribute.
#[macro_export]
macro_rules! kv_conformance_tests {
    (#[$attr:meta] $factory:expr) => {
        $crate::kv_conformance_tests!(@cases #[$attr] $factory;
            ordering, range_bounds, batch_atomicity, large_values, empty_keys_and_values,
            unknown_tables, reopen_persists, schema_versions, concurrent_readers, stats_accounting,
            migration_rekeys_without_loss, cancelled_write_keeps_stats_exact, fast_commits);
    };
    (@cases #[$attr:meta] $factory:expr; $($case:ident),*) => {
        $(
            #[$attr]
            async fn $case() {
                $crate::conformance::$case(&$factory).await;
            }
        )*
    };
}
