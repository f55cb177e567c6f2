//! `KvBackend` over the browser's IndexedDB (wasm32 only), through the
//! [idb](https://docs.rs/idb) crate.
//!
//! One object store, `kv`, holds the flat keyspace with binary keys (IndexedDB compares binary
//! keys as unsigned bytes, shorter first on a tie: the order the trait requires) and
//! `Uint8Array` values. Each `KvBackend::apply` is one `readwrite` transaction: it commits
//! whole or is aborted whole. Reads use one `readonly` transaction each, a consistent snapshot.
//!
//! On other targets this crate is empty.

#![forbid(unsafe_code)]
#![cfg(target_arch = "wasm32")]

use async_trait::async_trait;
use idb::{
    CursorDirection, Database, DatabaseEvent, Factory, KeyRange, ObjectStoreParams, Query,
    TransactionMode,
};
use js_sys::Uint8Array;
use mesh_platform::kv::{Direction, KvBackend, KvError, RawOp, selects_nothing};
use wasm_bindgen::JsValue;

const STORE: &str = "kv";
/// IndexedDB version of the database layout (one object store). The data's own schema version
/// lives inside the keyspace, managed by `mesh_platform::kv::Store`.
const IDB_VERSION: u32 = 1;

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Backend {
        backend: "indexeddb",
        message: e.to_string(),
    }
}

fn js(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).into()
}

/// Keys come back as `ArrayBuffer`, values as `Uint8Array`; `Uint8Array::new` takes both.
fn bytes(v: &JsValue) -> Vec<u8> {
    Uint8Array::new(v).to_vec()
}

/// IndexedDB backend.
#[derive(Debug)]
pub struct IndexedDbBackend {
    db: Database,
}

impl IndexedDbBackend {
    /// Opens (or creates) the IndexedDB database `name`.
    ///
    /// # Errors
    /// A backend error if IndexedDB is unavailable or refuses to open.
    pub async fn open(name: &str) -> Result<Self, KvError> {
        let mut request = Factory::new()
            .map_err(err)?
            .open(name, Some(IDB_VERSION))
            .map_err(err)?;
        request.on_upgrade_needed(|event| {
            // Errors here cannot be returned; a missing store surfaces on first use.
            if let Ok(db) = event.database()
                && !db.store_names().iter().any(|s| s == STORE)
            {
                let _ = db.create_object_store(STORE, ObjectStoreParams::new());
            }
        });
        let db = request.await.map_err(err)?;
        Ok(Self { db })
    }

    /// Deletes the IndexedDB database `name` (it must not be open).
    ///
    /// # Errors
    /// A backend error if IndexedDB refuses.
    pub async fn delete(name: &str) -> Result<(), KvError> {
        Factory::new()
            .map_err(err)?
            .delete(name)
            .map_err(err)?
            .await
            .map_err(err)
    }

    async fn apply_in(&self, store: &idb::ObjectStore, ops: &[RawOp]) -> Result<(), KvError> {
        for op in ops {
            match op {
                RawOp::Put(k, v) => {
                    store
                        .put(&js(v), Some(&js(k)))
                        .map_err(err)?
                        .await
                        .map_err(err)?;
                }
                RawOp::Delete(k) => {
                    store
                        .delete(Query::from(js(k)))
                        .map_err(err)?
                        .await
                        .map_err(err)?;
                }
                RawOp::DeleteRange(lo, hi) => {
                    if lo < hi {
                        let range = KeyRange::bound(&js(lo), &js(hi), Some(false), Some(true))
                            .map_err(err)?;
                        store
                            .delete(Query::from(range))
                            .map_err(err)?
                            .await
                            .map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl KvBackend for IndexedDbBackend {
    fn name(&self) -> &'static str {
        "indexeddb"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self
            .db
            .transaction(&[STORE], TransactionMode::ReadOnly)
            .map_err(err)?;
        let store = tx.object_store(STORE).map_err(err)?;
        let value = store
            .get(Query::from(js(key)))
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok(value.as_ref().map(bytes))
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
        let mut out = Vec::new();
        // IndexedDB refuses inverted or empty-open ranges instead of returning nothing.
        if limit == 0 || selects_nothing(start, start_exclusive, end, end_inclusive) {
            return Ok(out);
        }
        let tx = self
            .db
            .transaction(&[STORE], TransactionMode::ReadOnly)
            .map_err(err)?;
        let store = tx.object_store(STORE).map_err(err)?;
        let range = KeyRange::bound(
            &js(start),
            &js(end),
            Some(start_exclusive),
            Some(!end_inclusive),
        )
        .map_err(err)?;
        let dir = match direction {
            Direction::Forward => CursorDirection::Next,
            Direction::Reverse => CursorDirection::Prev,
        };
        let mut cursor = store
            .open_cursor(Some(Query::from(range)), Some(dir))
            .map_err(err)?
            .await
            .map_err(err)?;
        while let Some(c) = cursor {
            out.push((
                bytes(&c.key().map_err(err)?),
                bytes(&c.value().map_err(err)?),
            ));
            if out.len() >= limit {
                break;
            }
            cursor = c.next(None).map_err(err)?.await.map_err(err)?;
        }
        Ok(out)
    }

    async fn apply(&self, ops: Vec<RawOp>) -> Result<(), KvError> {
        let tx = self
            .db
            .transaction(&[STORE], TransactionMode::ReadWrite)
            .map_err(err)?;
        let store = tx.object_store(STORE).map_err(err)?;
        if let Err(e) = self.apply_in(&store, &ops).await {
            // Dropping a transaction does not abort it: abort explicitly so nothing applies.
            if let Ok(t) = tx.abort() {
                let _ = t.await;
            }
            return Err(e);
        }
        let result = tx.commit().map_err(err)?.await.map_err(err)?;
        if result.is_committed() {
            Ok(())
        } else {
            Err(err("transaction aborted by the browser"))
        }
    }

    async fn barrier(&self) -> Result<(), KvError> {
        // readwrite transactions on one store run one after another: an empty one completes
        // only after every earlier one has.
        let tx = self
            .db
            .transaction(&[STORE], TransactionMode::ReadWrite)
            .map_err(err)?;
        tx.commit().map_err(err)?.await.map_err(err)?;
        Ok(())
    }

    async fn close(&self) -> Result<(), KvError> {
        self.db.close();
        Ok(())
    }
}

/// A `StoreFactory` of IndexedDB stores under names unique to the factory (so runs never see
/// each other's data), for the conformance suites (`mesh-platform`'s and the blob store's).
#[cfg(all(feature = "conformance", target_arch = "wasm32"))]
pub mod conformance {
    use async_trait::async_trait;
    use mesh_platform::conformance::StoreFactory;
    use mesh_platform::kv::{KvError, Schema, Store};

    use super::IndexedDbBackend;

    /// IndexedDB databases named `PREFIX-RANDOM-NAME`.
    #[derive(Debug)]
    pub struct Factory {
        prefix: String,
    }

    impl Factory {
        /// A factory whose databases start with `prefix`.
        pub fn new(prefix: &str) -> Self {
            Self {
                prefix: format!("{prefix}-{}", js_sys::Math::random().to_bits()),
            }
        }
    }

    #[async_trait(?Send)]
    impl StoreFactory for Factory {
        type Store = Store<IndexedDbBackend>;

        async fn open(&self, name: &str, schema: &'static Schema) -> Result<Self::Store, KvError> {
            Store::open(
                IndexedDbBackend::open(&format!("{}-{name}", self.prefix)).await?,
                schema,
            )
            .await
        }
    }
}
