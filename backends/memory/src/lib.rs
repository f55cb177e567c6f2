//! An in-memory [`KvBackend`]: a `BTreeMap` behind a lock. For tests, the simulator and
//! ephemeral nodes. Open it with [`mesh_platform::kv::Store::open`].
//!
//! "Persistence" lasts as long as the [`SharedMap`]: two backends made from the same map see
//! the same data, which is how tests close and reopen a memory store.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use mesh_platform::kv::{Direction, KvBackend, KvError, RawOp, selects_nothing, std_bounds};

/// The data of a memory store, shareable between backends.
pub type SharedMap = Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// In-memory backend.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    map: SharedMap,
}

impl MemoryBackend {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend over an existing map (to "reopen" a store in tests).
    pub fn with_map(map: SharedMap) -> Self {
        Self { map }
    }

    /// The map, to hand to a later [`MemoryBackend::with_map`].
    pub fn map(&self) -> SharedMap {
        Arc::clone(&self.map)
    }
}

fn poisoned<T>(_: T) -> KvError {
    KvError::Backend {
        backend: "memory",
        message: "lock poisoned by a panicked writer".into(),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl KvBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.read().map_err(poisoned)?.get(key).cloned())
    }

    async fn range(
        &self,
        start: &[u8],
        start_exclusive: bool,
        end: &[u8],
        end_inclusive: bool,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        // BTreeMap::range panics on inverted or empty-open bounds; they select nothing.
        if selects_nothing(start, start_exclusive, end, end_inclusive) {
            return Ok(Vec::new());
        }
        let bounds = std_bounds(start, start_exclusive, end, end_inclusive);
        let map = self.map.read().map_err(poisoned)?;
        let iter = map
            .range::<[u8], _>(bounds)
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(match direction {
            Direction::Forward => iter.take(limit).collect(),
            Direction::Reverse => iter.rev().take(limit).collect(),
        })
    }

    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError> {
        let mut map = self.map.write().map_err(poisoned)?;
        for op in ops {
            match op {
                RawOp::Put(k, v) => {
                    map.insert(k, v);
                }
                RawOp::Delete(k) => {
                    map.remove(&k);
                }
                RawOp::DeleteRange(lo, hi) => {
                    let doomed: Vec<Vec<u8>> = map.range(lo..hi).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inverted_and_empty_open_ranges_select_nothing() {
        let b = MemoryBackend::new();
        b.apply(vec![
            RawOp::Put(vec![1], vec![1]),
            RawOp::Put(vec![5], vec![5]),
        ])
        .await
        .unwrap();
        assert!(
            b.range(&[5], false, &[1], false, Direction::Forward, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            b.range(&[1], true, &[1], true, Direction::Forward, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            b.range(&[1], false, &[1], true, Direction::Forward, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn backends_over_one_map_share_their_data() {
        let a = MemoryBackend::new();
        assert_eq!(a.name(), "memory");
        a.apply(vec![
            RawOp::Put(vec![1], vec![10]),
            RawOp::Put(vec![2], vec![20]),
            RawOp::Put(vec![3], vec![30]),
        ])
        .await
        .unwrap();
        // "Reopened": a new backend over the same map sees the data and its writes.
        let b = MemoryBackend::with_map(a.map());
        assert_eq!(b.get(&[2]).await.unwrap(), Some(vec![20]));
        b.apply(vec![RawOp::DeleteRange(vec![1], vec![3])])
            .await
            .unwrap();
        // Half-open: the upper bound stays.
        assert_eq!(
            a.range(&[], false, &[9], false, Direction::Reverse, 10)
                .await
                .unwrap(),
            vec![(vec![3], vec![30])]
        );
        // A fresh backend shares nothing.
        assert_eq!(MemoryBackend::new().get(&[3]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_map_poisoned_by_a_panicked_writer_fails_with_a_backend_error() {
        let b = MemoryBackend::new();
        let map = b.map();
        let _ = std::thread::spawn(move || {
            let _guard = map.write().unwrap();
            panic!("a writer dies holding the lock");
        })
        .join();
        let want = || KvError::Backend {
            backend: "memory",
            message: "lock poisoned by a panicked writer".into(),
        };
        assert_eq!(b.get(&[1]).await.unwrap_err(), want());
        assert_eq!(
            b.range(&[0], false, &[9], false, Direction::Forward, 1)
                .await
                .unwrap_err(),
            want()
        );
        assert_eq!(
            b.apply(vec![RawOp::Put(vec![1], vec![1])])
                .await
                .unwrap_err(),
            want()
        );
    }
}

/// A `StoreFactory` of memory stores, for the conformance suites (`mesh-platform`'s and the
/// blob store's): the same name reaches the same data for as long as the factory lives.
#[cfg(feature = "conformance")]
pub mod conformance {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use mesh_platform::conformance::StoreFactory;
    use mesh_platform::kv::{KvError, Schema, Store};

    use super::{MemoryBackend, SharedMap};

    /// Memory stores by name.
    #[derive(Debug, Default)]
    pub struct Factory {
        maps: Mutex<HashMap<String, SharedMap>>,
    }

    #[async_trait(?Send)]
    impl StoreFactory for Factory {
        type Store = Store<MemoryBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            let map = self
                .maps
                .lock()
                .map_err(|_| KvError::Closed)?
                .entry(name.to_string())
                .or_default()
                .clone();
            Store::open(MemoryBackend::with_map(map), schema).await
        }
    }
}
