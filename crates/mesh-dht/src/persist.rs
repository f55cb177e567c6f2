//! The DHT's state in a [`KvStore`]: records as they change, contacts every maintenance round,
//! both read back on start (layout in `docs/PROTOCOL.md` §11, "Persistent layout").
//!
//! The node's schema must list [`TABLES`].

use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::kv::{Batch, KvError, KvStore, read_table};

use crate::node::Dht;
use crate::store::Change;

/// Records: `key [32] -> version u8 = 1 | owner [32] | record`.
pub const RECORDS_TABLE: &str = "dht/records";
/// Contacts: `peer [32] -> version u8 = 1 | address`.
pub const CONTACTS_TABLE: &str = "dht/contacts";
/// The tables the DHT writes, for the node's `Schema`.
pub const TABLES: [&str; 2] = [RECORDS_TABLE, CONTACTS_TABLE];
/// Version byte of both layouts.
pub const LAYOUT_VERSION: u8 = 1;
/// Entries read per range call on start.
const PAGE: usize = 256;

/// What [`load`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Records put back.
    pub records: usize,
    /// Records dropped (expired while down, or no longer valid) and deleted from storage.
    pub dropped: usize,
    /// Contacts put back into the routing table.
    pub contacts: usize,
}

/// Every entry of `table`, a page at a time.
/// Reads the records and contacts back into `dht`. Records are checked like a STORE (not rate
/// limited); those that fail are deleted. Unreadable entries are deleted too.
///
/// # Errors
/// The store's [`KvError`].
pub async fn load(
    store: &dyn KvStore,
    dht: &mut Dht,
    now: UnixMillis,
    monotonic: Duration,
) -> Result<Loaded, KvError> {
    let mut loaded = Loaded::default();
    let mut gone = Batch::new();
    for (key, value) in read_table(store, RECORDS_TABLE, PAGE).await? {
        let owner = value
            .get(1..33)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| PeerId::from_bytes(b).ok());
        let ok = match (value.first(), owner) {
            (Some(&LAYOUT_VERSION), Some(owner)) => dht
                .restore_record(owner, &value[33..], now, monotonic)
                .is_ok_and(|k| k.0.as_slice() == key.as_slice()),
            _ => false,
        };
        if ok {
            loaded.records += 1;
        } else {
            loaded.dropped += 1;
            gone.delete(RECORDS_TABLE, key);
        }
    }
    for (key, value) in read_table(store, CONTACTS_TABLE, PAGE).await? {
        let peer = <[u8; 32]>::try_from(key.as_slice())
            .ok()
            .and_then(|b| PeerId::from_bytes(b).ok());
        let address = match value.split_first() {
            Some((&LAYOUT_VERSION, rest)) => std::str::from_utf8(rest).ok(),
            _ => None,
        };
        match (peer, address) {
            (Some(peer), Some(address)) => {
                dht.add_contact(peer, address, monotonic);
                loaded.contacts += 1;
            }
            _ => {
                gone.delete(CONTACTS_TABLE, key);
            }
        }
    }
    // Restoring is not news: the records are stored already.
    dht.take_changes();
    if !gone.is_empty() {
        store.apply(gone).await?;
    }
    Ok(loaded)
}

/// Changes written per batch at most.
pub const CHANGES_PER_BATCH: usize = 1000;

/// `older` followed by `newer`, one change per key (the newer wins), in key order.
pub fn merge(older: Vec<Change>, newer: Vec<Change>) -> Vec<Change> {
    if older.is_empty() {
        return newer;
    }
    let key = |c: &Change| match c {
        Change::Put { key, .. } | Change::Removed(key) => *key,
    };
    let mut by_key = std::collections::BTreeMap::new();
    for c in older.into_iter().chain(newer) {
        by_key.insert(key(&c), c);
    }
    by_key.into_values().collect()
}

/// Writes record changes (from [`Dht::take_changes`]), in batches of at most
/// [`CHANGES_PER_BATCH`] (each atomic).
///
/// # Errors
/// The store's [`KvError`]; batches written before the failing one stay written, and
/// writing the same changes again is harmless.
pub async fn save_changes(store: &dyn KvStore, changes: &[Change]) -> Result<(), KvError> {
    for chunk in changes.chunks(CHANGES_PER_BATCH) {
        let mut batch = Batch::new();
        for change in chunk {
            match change {
                Change::Put { key, owner, record } => {
                    let mut value = Vec::with_capacity(33 + record.len());
                    value.push(LAYOUT_VERSION);
                    value.extend_from_slice(owner.as_bytes());
                    value.extend_from_slice(record);
                    batch.put(RECORDS_TABLE, key.0.to_vec(), value);
                }
                Change::Removed(key) => {
                    batch.delete(RECORDS_TABLE, key.0.to_vec());
                }
            }
        }
        store.apply(batch).await?;
    }
    Ok(())
}

/// Makes the stored contacts those of `dht`'s routing table, in one atomic batch.
///
/// # Errors
/// The store's [`KvError`].
pub async fn save_contacts(store: &dyn KvStore, dht: &Dht) -> Result<(), KvError> {
    let mut batch = Batch::new();
    let mut current = std::collections::BTreeMap::new();
    for c in dht.table().contacts() {
        let mut value = Vec::with_capacity(1 + c.address.len());
        value.push(LAYOUT_VERSION);
        value.extend_from_slice(c.address.as_bytes());
        current.insert(c.peer.as_bytes().to_vec(), value);
    }
    for (key, value) in read_table(store, CONTACTS_TABLE, PAGE).await? {
        match current.get(&key) {
            Some(v) if *v == value => {
                current.remove(&key);
            }
            Some(_) => {}
            None => {
                batch.delete(CONTACTS_TABLE, key);
            }
        }
    }
    for (key, value) in current {
        batch.put(CONTACTS_TABLE, key, value);
    }
    if batch.is_empty() {
        return Ok(());
    }
    store.apply(batch).await
}
