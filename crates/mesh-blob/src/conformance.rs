//! The blob store conformance suite: generic async test functions every storage backend runs
//! unchanged (natively under `cargo test`, IndexedDB in headless Chromium).
//!
//! A backend's test file implements `mesh_platform::conformance::StoreFactory` and expands
//! [`blob_conformance_tests!`](crate::blob_conformance_tests) with its test attribute:
//!
//! ```text
//! mesh_blob::blob_conformance_tests!(#[tokio::test] MyFactory::new());
//! ```
//!
//! Each case panics with a message naming what broke.

#![allow(
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::too_many_lines,
    clippy::many_single_char_names
)]

use std::sync::Arc;

use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::conformance::StoreFactory;
use mesh_platform::kv::{KvStore, Schema};

use crate::manifest::{MIN_CHUNK_SIZE, Manifest};
use crate::store::{
    BlobConfig, BlobError, BlobStore, CHUNKS_TABLE, DEFAULT_CHUNK_SIZE, PENDING_TABLE, PutOptions,
    TABLES,
};

/// The suite's schema: the blob tables.
pub static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

/// Small chunks, so that every case crosses chunk boundaries cheaply.
const CHUNK: u32 = MIN_CHUNK_SIZE;

fn config() -> BlobConfig {
    BlobConfig {
        chunk_size: CHUNK,
        max_blob_size: 64 * 1024,
        owner_quota: 256 * 1024,
        total_quota: 512 * 1024,
    }
}

fn owner(n: u8) -> PeerId {
    PeerId::from_bytes_unvalidated([n; 32])
}

/// Deterministic content: `len` bytes from `seed`.
fn data(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

const T0: UnixMillis = UnixMillis(1_700_000_000_000);

async fn open<F: StoreFactory>(f: &F, name: &str, cfg: BlobConfig) -> (Arc<dyn KvStore>, BlobStore)
where
    F::Store: 'static,
{
    let kv: Arc<dyn KvStore> = Arc::new(f.open(name, &SCHEMA).await.expect("open the store"));
    let blobs = BlobStore::open(Arc::clone(&kv), cfg)
        .await
        .expect("open the blob store");
    (kv, blobs)
}

async fn entries(kv: &Arc<dyn KvStore>, table: &str) -> u64 {
    kv.stats(table).await.unwrap().entries
}

/// Put and get, whole and streamed in odd pieces; an empty blob; info and usage.
pub async fn round_trip<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-round-trip", config()).await;
    let content = data(1, 3 * CHUNK as usize + 123);
    let stored = s
        .put(owner(1), &content, PutOptions::default(), T0)
        .await
        .unwrap();
    assert_eq!(stored.chunks, 4);
    assert_eq!(stored.size, content.len() as u64);
    assert_eq!(stored.new_bytes, content.len() as u64);
    assert!(!stored.duplicate);
    assert_eq!(stored.id, Manifest::of(&content, CHUNK).unwrap().id());
    assert_eq!(s.get(&stored.id).await.unwrap(), content);

    // Streamed in pieces that do not line up with chunks.
    let mut w = s
        .writer(owner(1), PutOptions::default(), None)
        .await
        .unwrap();
    for piece in content.chunks(700) {
        w.write(piece).await.unwrap();
    }
    let again = w.finish(T0).await.unwrap();
    assert_eq!(again.id, stored.id, "same content, same id");
    assert!(again.duplicate);
    assert_eq!(again.new_bytes, 0);

    let mut r = s.reader(&stored.id).await.unwrap();
    let mut pieces = 0;
    let mut back = Vec::new();
    while let Some(p) = r.next_piece().await.unwrap() {
        assert!(p.len() <= CHUNK as usize, "a piece is at most one chunk");
        back.extend_from_slice(&p);
        pieces += 1;
    }
    assert_eq!(pieces, 4);
    assert_eq!(back, content);

    let empty = s
        .put(owner(1), &[], PutOptions::default(), T0)
        .await
        .unwrap();
    assert_eq!(empty.chunks, 0);
    assert_eq!(s.get(&empty.id).await.unwrap(), Vec::<u8>::new());

    let info = s.info(&stored.id).await.unwrap().unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.holds.len(), 1);
    assert_eq!(info.holds[0].owner, owner(1));
    let usage = s.usage();
    assert_eq!(usage.blobs, 2);
    assert_eq!(usage.chunks, 4);
    assert_eq!(usage.stored_bytes, content.len() as u64);
    let ou = s.owner_usage(&owner(1)).await.unwrap();
    assert_eq!(ou.blobs, 2);
    assert_eq!(ou.bytes, content.len() as u64);
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, 4);
    assert_eq!(
        entries(&kv, PENDING_TABLE).await,
        0,
        "a commit leaves no pending rows"
    );
    let missing = crate::BlobId::from_bytes([9; 32]);
    assert_eq!(s.get(&missing).await, Err(BlobError::NotFound(missing)));
}

/// Identical chunks are stored once, with references; removing one blob keeps the chunks
/// another still uses.
pub async fn dedup<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-dedup", config()).await;
    let shared = data(2, 4 * CHUNK as usize);
    let mut a = shared.clone();
    a.extend_from_slice(&data(3, CHUNK as usize));
    let mut b = shared.clone();
    b.extend_from_slice(&data(4, 100));
    // A blob whose chunks are all the same.
    let zeros = vec![0u8; 8 * CHUNK as usize];

    let sa = s
        .put(owner(1), &a, PutOptions::default(), T0)
        .await
        .unwrap();
    let sb = s
        .put(owner(2), &b, PutOptions::default(), T0)
        .await
        .unwrap();
    assert_eq!(sb.new_bytes, 100, "only the last chunk of b is new");
    let sz = s
        .put(owner(1), &zeros, PutOptions::default(), T0)
        .await
        .unwrap();
    assert_eq!(
        sz.new_bytes,
        u64::from(CHUNK),
        "eight equal chunks stored once"
    );
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, 4 + 1 + 1 + 1);
    assert_eq!(s.usage().stored_bytes, u64::from(6 * CHUNK) + 100);
    assert_eq!(s.get(&sz.id).await.unwrap(), zeros);

    // The same blob held by a second owner: charged to both, stored once.
    let dup = s
        .put(owner(2), &a, PutOptions::default(), T0)
        .await
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(
        s.owner_usage(&owner(2)).await.unwrap().bytes,
        (a.len() + b.len()) as u64
    );

    assert!(s.delete(&sa.id, &owner(1)).await.unwrap());
    assert_eq!(s.get(&sa.id).await.unwrap(), a, "owner 2 still holds a");
    assert!(s.delete(&sa.id, &owner(2)).await.unwrap());
    assert!(!s.delete(&sa.id, &owner(2)).await.unwrap(), "no hold left");
    assert!(!s.contains(&sa.id).await.unwrap());
    assert_eq!(s.get(&sb.id).await.unwrap(), b, "b keeps the shared chunks");
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, 4 + 1 + 1);
    s.delete(&sb.id, &owner(2)).await.unwrap();
    s.delete(&sz.id, &owner(1)).await.unwrap();
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, 0, "every chunk released");
    assert_eq!(s.usage(), crate::Usage::default());
    assert_eq!(s.owners(None, 10).await.unwrap(), vec![]);
}

/// Ranges within, across and at the edges of chunks; ranges outside are refused.
pub async fn range_reads<F: StoreFactory>(f: &F) {
    let (_kv, s) = open(f, "blob-range", config()).await;
    let content = data(5, 5 * CHUNK as usize + 17);
    let id = s
        .put(owner(1), &content, PutOptions::default(), T0)
        .await
        .unwrap()
        .id;
    let c = u64::from(CHUNK);
    let len = content.len() as u64;
    for (start, end) in [
        (0, 1),
        (0, c),
        (c - 1, c + 1),
        (10, 3 * c + 5),
        (2 * c, 3 * c),
        (len - 17, len),
        (len - 1, len),
        (0, len),
        (7, 7),
        (len, len),
    ] {
        let mut r = s.read_range(&id, start..end).await.unwrap();
        assert_eq!(r.remaining(), end - start);
        let got = r.read_to_end().await.unwrap();
        assert_eq!(
            got,
            content[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    for (start, end) in [(0, len + 1), (len + 1, len + 2), (5, 4)] {
        assert!(
            matches!(
                s.read_range(&id, start..end).await,
                Err(BlobError::OutOfRange { .. })
            ),
            "range {start}..{end} is refused"
        );
    }
    for index in [6, u32::MAX] {
        assert!(matches!(
            s.chunk(&id, index).await,
            Err(BlobError::OutOfRange { .. })
        ));
    }
}

/// Holds expire and GC removes what no hold keeps; pinned holds stay; GC runs in bounded
/// steps.
pub async fn expiry_and_gc<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-expiry", config()).await;
    let at = |ms: u64| Some(T0.saturating_add(ms));
    let short = s
        .put(
            owner(1),
            &data(6, 3000),
            PutOptions {
                expires_at: at(1000),
                pinned: false,
            },
            T0,
        )
        .await
        .unwrap();
    let long = s
        .put(
            owner(1),
            &data(7, 3000),
            PutOptions {
                expires_at: at(5000),
                pinned: false,
            },
            T0,
        )
        .await
        .unwrap();
    let pinned = s
        .put(
            owner(2),
            &data(8, 3000),
            PutOptions {
                expires_at: at(1000),
                pinned: true,
            },
            T0,
        )
        .await
        .unwrap();
    let forever = s
        .put(owner(2), &data(9, 3000), PutOptions::default(), T0)
        .await
        .unwrap();

    let r = s.gc(T0.saturating_add(999), 1000).await.unwrap();
    assert_eq!(
        (r.holds_expired, r.blobs_removed),
        (0, 0),
        "nothing due yet"
    );
    assert!(r.done);
    let r = s.gc(T0.saturating_add(1000), 1000).await.unwrap();
    assert_eq!(
        (r.holds_expired, r.blobs_removed, r.chunks_removed),
        (1, 1, 3)
    );
    assert_eq!(r.bytes_freed, 3000);
    assert!(!s.contains(&short.id).await.unwrap());
    assert!(s.contains(&long.id).await.unwrap());
    assert!(
        s.contains(&pinned.id).await.unwrap(),
        "a pinned hold does not expire"
    );
    let r = s.gc(T0.saturating_add(1_000_000), 1000).await.unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(!s.contains(&long.id).await.unwrap());
    assert!(s.contains(&pinned.id).await.unwrap());
    assert!(s.contains(&forever.id).await.unwrap());
    // Unpinned, its expiry (long past) applies at the next step.
    s.set_hold(
        &pinned.id,
        &owner(2),
        PutOptions {
            expires_at: at(1000),
            pinned: false,
        },
    )
    .await
    .unwrap();
    s.gc(T0.saturating_add(1_000_000), 1000).await.unwrap();
    assert!(!s.contains(&pinned.id).await.unwrap());
    assert!(s.contains(&forever.id).await.unwrap());
    assert_eq!(s.owner_usage(&owner(1)).await.unwrap().blobs, 0);
    assert_eq!(s.owner_usage(&owner(2)).await.unwrap().blobs, 1);
    assert!(matches!(
        s.set_hold(&pinned.id, &owner(2), PutOptions::default())
            .await,
        Err(BlobError::NotFound(_))
    ));

    // Bounded steps: 12 expired one-chunk blobs, a budget of 5 units a step.
    for i in 0..12 {
        s.put(
            owner(3),
            &data(100 + i, 500),
            PutOptions {
                expires_at: at(10),
                pinned: false,
            },
            T0,
        )
        .await
        .unwrap();
    }
    let mut steps = 0;
    let mut removed = 0;
    loop {
        let r = s.gc(T0.saturating_add(20), 5).await.unwrap();
        steps += 1;
        removed += r.blobs_removed;
        assert!(r.holds_expired <= 3, "a step stays within its budget");
        if r.done {
            break;
        }
        assert!(steps < 20, "GC makes progress");
    }
    assert_eq!(removed, 12);
    assert!(
        steps >= 4,
        "12 blobs at 2 units each take several steps of 5"
    );
    assert_eq!(s.usage().blobs, 1);
    assert_eq!(
        entries(&kv, CHUNKS_TABLE).await,
        3,
        "only `forever` is left"
    );
}

/// Limits refuse clearly and leave nothing behind.
pub async fn quota_refusal<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-quota", config()).await;
    let max = config().max_blob_size;
    // Announced too large: refused before anything is written.
    assert_eq!(
        s.writer(owner(1), PutOptions::default(), Some(max + 1))
            .await
            .err(),
        Some(BlobError::TooLarge { size: max + 1, max })
    );
    // Streamed past the limit: refused when it gets there, what it wrote removed.
    let mut w = s
        .writer(owner(1), PutOptions::default(), None)
        .await
        .unwrap();
    let piece = data(10, 4 * CHUNK as usize);
    let mut err = None;
    for _ in 0..20 {
        if let Err(e) = w.write(&piece).await {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(BlobError::TooLarge { .. })), "{err:?}");
    assert_eq!(w.write(b"x").await, Err(BlobError::Finished));
    drop(w);
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, 0, "nothing half-written");
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    // Exactly the limit is fine.
    let at_max = s
        .put(owner(1), &data(11, max as usize), PutOptions::default(), T0)
        .await
        .unwrap();
    assert_eq!(at_max.size, max);

    // Owner quota (256 KiB): owner 1 holds 64 KiB; three more fit, the fourth does not.
    for i in 0..3 {
        s.put(
            owner(1),
            &data(20 + i, max as usize),
            PutOptions::default(),
            T0,
        )
        .await
        .unwrap();
    }
    let before = s.usage();
    let e = s
        .put(owner(1), &data(30, 100), PutOptions::default(), T0)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        BlobError::OwnerQuota {
            used: 4 * max,
            size: 100,
            quota: 4 * max
        }
    );
    assert_eq!(s.usage(), before);
    // Total quota (512 KiB of chunks): other owners fill it up, then a put is refused at
    // commit, and what it wrote is removed.
    for i in 0..4 {
        s.put(
            owner(2 + i),
            &data(40 + u32::from(i), max as usize),
            PutOptions::default(),
            T0,
        )
        .await
        .unwrap();
    }
    let chunks = entries(&kv, CHUNKS_TABLE).await;
    let e = s
        .put(owner(9), &data(50, 2000), PutOptions::default(), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, BlobError::TotalQuota { needed: 2000, .. }),
        "{e:?}"
    );
    assert_eq!(
        entries(&kv, CHUNKS_TABLE).await,
        chunks,
        "nothing half-written"
    );
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    assert_eq!(s.owner_usage(&owner(9)).await.unwrap().blobs, 0);
    // A blob that is already stored costs no new chunk bytes: allowed even now.
    let dup = s
        .put(owner(9), &data(11, max as usize), PutOptions::default(), T0)
        .await
        .unwrap();
    assert!(dup.duplicate);
}

/// A put that stops half-way leaves nothing visible, and GC removes what it wrote, also after
/// a restart.
pub async fn interrupted_put<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-interrupted", config()).await;
    let keep = s
        .put(owner(1), &data(60, 3000), PutOptions::default(), T0)
        .await
        .unwrap();
    let chunks_before = entries(&kv, CHUNKS_TABLE).await;
    let content = data(61, 40 * CHUNK as usize);
    let mut w = s
        .writer(owner(1), PutOptions::default(), None)
        .await
        .unwrap();
    w.write(&content[..30 * CHUNK as usize]).await.unwrap();
    assert!(
        entries(&kv, PENDING_TABLE).await > 0,
        "chunks were written as they came"
    );
    // A GC while the writer lives keeps its chunks.
    let r = s.gc(T0, 10_000).await.unwrap();
    assert_eq!(r.chunks_removed, 0);
    assert_eq!(r.pending_removed, 0);
    drop(w);
    let id = Manifest::of(&content, CHUNK).unwrap().id();
    assert!(!s.contains(&id).await.unwrap(), "never visible");
    let r = s.gc(T0, 10_000).await.unwrap();
    assert!(r.pending_removed >= 16 && r.chunks_removed >= 16, "{r:?}");
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, chunks_before);
    assert_eq!(s.get(&keep.id).await.unwrap(), data(60, 3000));

    // An explicit abort removes at once.
    let mut w = s
        .writer(owner(1), PutOptions::default(), None)
        .await
        .unwrap();
    w.write(&content).await.unwrap();
    w.abort().await.unwrap();
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, chunks_before);

    // A process that dies mid-put: the store is closed under the writer; after reopening,
    // GC removes what it left.
    let mut w = s
        .writer(owner(1), PutOptions::default(), None)
        .await
        .unwrap();
    w.write(&content).await.unwrap();
    std::mem::forget(w); // as if the process died: no destructor runs
    drop(s);
    kv.close().await.unwrap();
    drop(kv);
    let (kv, s) = open(f, "blob-interrupted", config()).await;
    assert!(entries(&kv, PENDING_TABLE).await > 0);
    let mut total = crate::GcReport::default();
    loop {
        let r = s.gc(T0, 8).await.unwrap();
        total.pending_removed += r.pending_removed;
        total.chunks_removed += r.chunks_removed;
        if r.done {
            break;
        }
    }
    assert!(total.pending_removed >= 32, "{total:?}");
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    assert_eq!(entries(&kv, CHUNKS_TABLE).await, chunks_before);
    assert_eq!(s.get(&keep.id).await.unwrap(), data(60, 3000));
}

/// A chunk changed in the backend is detected when read, and named.
pub async fn corrupted_chunk<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-corrupt", config()).await;
    let content = data(70, 4 * CHUNK as usize);
    let stored = s
        .put(owner(1), &content, PutOptions::default(), T0)
        .await
        .unwrap();
    let m = s.manifest(&stored.id).await.unwrap().unwrap();
    let hash = m.hashes()[2];
    let mut bytes = kv
        .get(CHUNKS_TABLE, hash.as_bytes())
        .await
        .unwrap()
        .unwrap();
    bytes[100] ^= 0x40;
    kv.put(CHUNKS_TABLE, hash.as_bytes(), &bytes).await.unwrap();
    assert_eq!(
        s.get(&stored.id).await,
        Err(BlobError::Corrupt {
            id: stored.id,
            index: 2
        })
    );
    assert_eq!(
        s.chunk(&stored.id, 2).await,
        Err(BlobError::Corrupt {
            id: stored.id,
            index: 2
        })
    );
    // A truncated chunk too.
    kv.put(CHUNKS_TABLE, hash.as_bytes(), &bytes[..10])
        .await
        .unwrap();
    assert!(matches!(
        s.get(&stored.id).await,
        Err(BlobError::Corrupt { index: 2, .. })
    ));
    // Ranges that do not touch it still read.
    let c = CHUNK as usize;
    let got = s
        .read_range(&stored.id, 0..2 * c as u64)
        .await
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(got, content[..2 * c]);
    // A missing chunk is named too.
    kv.delete(CHUNKS_TABLE, hash.as_bytes()).await.unwrap();
    assert_eq!(
        s.get(&stored.id).await,
        Err(BlobError::MissingChunk {
            id: stored.id,
            index: 2
        })
    );
}

/// Everything survives closing and reopening: blobs, holds, usage, expiry.
pub async fn reopen_persistence<F: StoreFactory>(f: &F) {
    let content = data(80, 2 * DEFAULT_CHUNK_SIZE as usize + 999);
    let cfg = BlobConfig::default();
    let (kv, s) = open(f, "blob-reopen", cfg).await;
    let big = s
        .put(
            owner(1),
            &content,
            PutOptions {
                expires_at: Some(T0.saturating_add(50)),
                pinned: false,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(big.chunks, 3, "the default chunk size");
    let small = s
        .put(owner(2), b"hello", PutOptions::default(), T0)
        .await
        .unwrap();
    let usage = s.usage();
    drop(s);
    kv.close().await.unwrap();
    drop(kv);

    let (_kv, s) = open(f, "blob-reopen", cfg).await;
    assert_eq!(s.usage(), usage);
    assert_eq!(s.get(&big.id).await.unwrap(), content);
    assert_eq!(s.get(&small.id).await.unwrap(), b"hello");
    assert_eq!(
        s.owner_usage(&owner(1)).await.unwrap().bytes,
        content.len() as u64
    );
    let owners = s.owners(None, 10).await.unwrap();
    assert_eq!(owners.len(), 2);
    assert_eq!(s.owners(Some(&owners[0].0), 10).await.unwrap().len(), 1);
    let r = s.gc(T0.saturating_add(60), 100).await.unwrap();
    assert_eq!(r.blobs_removed, 1, "the expiry survived the restart");
    assert!(!s.contains(&big.id).await.unwrap());
    assert_eq!(s.usage().blobs, 1);
}

/// An import takes chunks in any order, refuses wrong ones, and never needs chunks the store
/// already has.
pub async fn import<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-import", config()).await;
    let content = data(90, 6 * CHUNK as usize + 5);
    let m = Manifest::of(&content, CHUNK).unwrap();
    let chunks: Vec<Vec<u8>> = content.chunks(CHUNK as usize).map(<[u8]>::to_vec).collect();
    // The store already has chunks 1 and 4 (in another blob).
    let mut other = chunks[1].clone();
    other.extend_from_slice(&chunks[4]);
    s.put(owner(2), &other, PutOptions::default(), T0)
        .await
        .unwrap();

    let mut w = s
        .importer(m.clone(), owner(1), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(w.missing(), 5);
    assert!(w.has_chunk(1) && w.has_chunk(4));
    assert_eq!(w.next_missing(0), Some(0));
    assert_eq!(w.next_missing(1), Some(2));
    // A wrong chunk, a chunk at the wrong index, a truncated one: refused, nothing kept.
    assert_eq!(
        w.write_chunk(3, data(91, CHUNK as usize)).await,
        Err(BlobError::ChunkMismatch { index: 3 })
    );
    assert_eq!(
        w.write_chunk(3, chunks[2].clone()).await,
        Err(BlobError::ChunkMismatch { index: 3 })
    );
    assert_eq!(
        w.write_chunk(6, chunks[6][..4].to_vec()).await,
        Err(BlobError::ChunkMismatch { index: 6 })
    );
    assert!(matches!(
        w.write_chunk(7, vec![1]).await,
        Err(BlobError::OutOfRange { .. })
    ));
    assert_eq!(w.missing(), 5);
    for i in [6, 0, 3] {
        assert!(w.write_chunk(i, chunks[i as usize].clone()).await.unwrap());
    }
    assert!(
        !w.write_chunk(0, chunks[0].clone()).await.unwrap(),
        "a repeat is no news"
    );
    assert_eq!(
        w.finish(T0).await,
        Err(BlobError::Incomplete { missing: 2 })
    );
    assert_eq!(w.next_missing(0), Some(2));
    w.write_chunk(2, chunks[2].clone()).await.unwrap();
    w.write_chunk(5, chunks[5].clone()).await.unwrap();
    let stored = w.finish(T0).await.unwrap();
    assert_eq!(stored.id, m.id());
    assert_eq!(
        stored.new_bytes,
        content.len() as u64 - 2 * u64::from(CHUNK)
    );
    assert_eq!(s.get(&m.id()).await.unwrap(), content);
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);
    // Over the size limit: refused before anything is fetched.
    let huge = Manifest::of(&data(92, 70 * 1024), CHUNK).unwrap();
    assert!(matches!(
        s.importer(huge, owner(1), PutOptions::default()).await,
        Err(BlobError::TooLarge { .. })
    ));
}

/// A chunk a live import counts on outlives the blob it came from, and is collected once the
/// import is gone; committed, the import owns it.
pub async fn shared_chunks_during_an_import<F: StoreFactory>(f: &F) {
    let (kv, s) = open(f, "blob-shared-import", config()).await;
    let x = data(95, CHUNK as usize);
    let mut content = x.clone();
    content.extend_from_slice(&data(96, 500));
    let m = Manifest::of(&content, CHUNK).unwrap();
    let chunks: Vec<Vec<u8>> = content.chunks(CHUNK as usize).map(<[u8]>::to_vec).collect();

    // Abandoned import: the chunk it found stored loses its blob meanwhile.
    let b = s
        .put(owner(2), &x, PutOptions::default(), T0)
        .await
        .unwrap();
    let w = s
        .importer(m.clone(), owner(1), PutOptions::default())
        .await
        .unwrap();
    assert!(w.has_chunk(0));
    assert!(s.delete(&b.id, &owner(2)).await.unwrap());
    assert_eq!(
        entries(&kv, CHUNKS_TABLE).await,
        1,
        "kept for the live import"
    );
    assert_eq!(s.usage().stored_bytes, 0, "but no longer counted as stored");
    s.gc(T0, 1000).await.unwrap();
    assert_eq!(
        entries(&kv, CHUNKS_TABLE).await,
        1,
        "GC keeps it while the import lives"
    );
    drop(w);
    s.gc(T0, 1000).await.unwrap();
    assert_eq!(
        entries(&kv, CHUNKS_TABLE).await,
        0,
        "collected once the import is gone"
    );
    assert_eq!(entries(&kv, PENDING_TABLE).await, 0);

    // Finished import: the chunk is counted and kept.
    let b = s
        .put(owner(2), &x, PutOptions::default(), T0)
        .await
        .unwrap();
    let mut w = s
        .importer(m.clone(), owner(1), PutOptions::default())
        .await
        .unwrap();
    s.delete(&b.id, &owner(2)).await.unwrap();
    w.write_chunk(1, chunks[1].clone()).await.unwrap();
    let stored = w.finish(T0).await.unwrap();
    assert_eq!(
        stored.new_bytes,
        content.len() as u64,
        "both chunks are new again"
    );
    s.gc(T0, 1000).await.unwrap();
    assert_eq!(s.get(&m.id()).await.unwrap(), content);
    assert_eq!(s.usage().stored_bytes, content.len() as u64);
    assert_eq!(
        entries(&kv, PENDING_TABLE).await,
        0,
        "GC dropped the orphan row"
    );
}

/// Expands one test per case for a `StoreFactory`, with the given test attribute.
#[macro_export]
macro_rules! blob_conformance_tests {
    (#[$attr:meta] $factory:expr) => {
        $crate::blob_conformance_tests!(@cases #[$attr] $factory;
            round_trip, dedup, range_reads, expiry_and_gc, quota_refusal, interrupted_put,
            corrupted_chunk, reopen_persistence, import, shared_chunks_during_an_import);
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
