//! A write cancelled after the backend committed it but before `Store::apply` returned (the
//! window a timeout or `select!` can hit on any backend that commits on another thread) must
//! leave the size accounting exact. The wrapper backend below makes that window deterministic:
//! it commits, then yields once before returning.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use mesh_platform::kv::{
    Direction, KeyRange, KvBackend, KvError, KvStore, RawOp, Schema, Store, TableStats,
};
use mesh_store_memory::MemoryBackend;

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Commits, then returns only on the next poll.
struct CommitThenYield(MemoryBackend);

#[async_trait]
impl KvBackend for CommitThenYield {
    fn name(&self) -> &'static str {
        "commit-then-yield"
    }
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).await
    }
    async fn range(
        &self,
        s: &[u8],
        se: bool,
        e: &[u8],
        ei: bool,
        d: Direction,
        l: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.0.range(s, se, e, ei, d, l).await
    }
    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError> {
        self.0.apply(ops).await?;
        YieldOnce(false).await;
        Ok(())
    }
}

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &["items"],
    migrations: &[],
};

/// Polls a future exactly once, then drops it.
fn poll_once_and_drop<F: Future>(fut: F) -> bool {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    fut.as_mut()
        .poll(&mut Context::from_waker(waker))
        .is_ready()
}

#[tokio::test]
async fn committed_but_cancelled_writes_are_accounted() {
    let store = Store::open(CommitThenYield(MemoryBackend::new()), &SCHEMA)
        .await
        .unwrap();
    for i in 0u8..5 {
        assert!(
            !poll_once_and_drop(store.put("items", &[i], &[0; 10])),
            "the write must be cut off after its commit"
        );
    }
    let rows = store
        .range("items", KeyRange::all(), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "the backend committed every cancelled write");
    assert_eq!(
        store.stats("items").await.unwrap(),
        TableStats {
            entries: 5,
            bytes: 55
        }
    );
    // And the counts stay right for the writes that follow.
    store.delete("items", &[0]).await.unwrap();
    assert_eq!(
        store.stats("items").await.unwrap(),
        TableStats {
            entries: 4,
            bytes: 44
        }
    );
}
