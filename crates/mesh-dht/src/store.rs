//! The record store with the DHT's defences (sans-IO: time is passed in).
//!
//! A STORE from peer `from` goes through the cheap checks first and the signature last, so a
//! flood costs the sender more than the node:
//!
//! 1. size: over [`StoreConfig::max_record_len`] bytes is refused before anything is parsed;
//! 2. rate: at most [`StoreConfig::stores_per_minute`] per peer (governor, keyed by `PeerId`);
//! 3. quota: at most [`StoreConfig::per_peer_bytes`] stored on behalf of one peer;
//! 4. signature, validity window and sequence number.
//!
//! When the node's budget ([`StoreConfig::total_bytes`]) is full, room is made by evicting the
//! least recently used record of the peer that has the most stored: a peer that floods loses its
//! own records first, and an honest peer below the flooders' usage is never evicted for them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mesh_crypto::{PeerId, SIGNED_HEADER_LEN, UnixMillis};
use mesh_platform::kv::ChangeSet;
use mesh_platform::limit::KeyedLimiter;

use crate::key::Key;
use crate::record::{MAX_RECORD_LEN, Record, key_of, record_key_of_bytes};

/// Bytes stored on behalf of one peer at most: 10 MiB.
pub const PER_PEER_BYTES: usize = 10 * 1024 * 1024;
/// The node's default storage budget for records: 256 MiB.
pub const TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// STOREs accepted per peer and minute.
pub const STORES_PER_MINUTE: u32 = 100;

/// Limits of a [`RecordStore`]. Every field is a named default above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Largest encoded record.
    pub max_record_len: usize,
    /// Bytes stored on behalf of one peer.
    pub per_peer_bytes: usize,
    /// Bytes stored in all.
    pub total_bytes: usize,
    /// STOREs per peer and minute.
    pub stores_per_minute: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_record_len: MAX_RECORD_LEN,
            per_peer_bytes: PER_PEER_BYTES,
            total_bytes: TOTAL_BYTES,
            stores_per_minute: STORES_PER_MINUTE,
        }
    }
}

/// Why a STORE was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Over the size limit (checked first).
    #[error("record of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Over the peer's STORE rate.
    #[error("rate limited")]
    RateLimited,
    /// Over the peer's quota (or larger than the whole budget).
    #[error("quota: {used} bytes stored, {len} more would pass {quota}")]
    QuotaExceeded {
        /// Bytes stored for the peer already.
        used: usize,
        /// The record's length.
        len: usize,
        /// The quota.
        quota: usize,
    },
    /// Bad encoding, bad signature, expired or not yet valid.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// A record with the same or a newer sequence number is stored.
    #[error("stale: sequence {got}, have {have}")]
    Stale {
        /// Sequence number stored.
        have: u64,
        /// Sequence number offered.
        got: u64,
    },
}

impl Rejected {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded { .. } => "quota",
            Self::Invalid(_) => "invalid",
            Self::Stale { .. } => "stale",
        }
    }
}

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    seq: u64,
    expires_at: UnixMillis,
    /// The peer the record is charged to: the one that stored it here.
    owner: PeerId,
    /// Position in the owner's LRU order.
    used: u64,
    /// When it was last stored or republished (monotonic): what republishing is timed from.
    stored_at: Duration,
}

/// A change to the stored records, for a driver that mirrors them to persistent storage
/// (see [`RecordStore::track_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record at `key` is now `record`, charged to `owner`.
    Put {
        /// Its key.
        key: Key,
        /// The peer it is charged to.
        owner: PeerId,
        /// The signed record's bytes.
        record: Vec<u8>,
    },
    /// Nothing is stored at this key any more.
    Removed(Key),
}

#[derive(Debug, Default)]
struct Usage {
    bytes: usize,
    /// Least recently used first: tick -> key.
    lru: BTreeMap<u64, Key>,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// STOREs accepted.
    pub accepted: u64,
    /// STOREs refused, by [`Rejected::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Records evicted to make room.
    pub evicted: u64,
    /// Records dropped because they expired.
    pub expired: u64,
}

/// Records held by this node, with quotas, rate limits and fair LRU eviction.
pub struct RecordStore {
    config: StoreConfig,
    entries: HashMap<Key, Entry>,
    /// Ordered, so eviction breaks ties the same way in every run.
    usage: BTreeMap<PeerId, Usage>,
    total: usize,
    tick: u64,
    /// STOREs per peer (governor), on the monotonic time passed in.
    limiter: KeyedLimiter<PeerId>,
    stats: StoreStats,
    /// Keys changed since the last [`RecordStore::take_changes`], when tracking is on.
    dirty: ChangeSet<Key>,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore")
            .field("records", &self.entries.len())
            .field("bytes", &self.total)
            .finish_non_exhaustive()
    }
}

/// The key an unverified record claims, read without verifying anything (for quota credit
/// only; the verified key is computed again afterwards).
fn claimed_key(bytes: &[u8]) -> Option<Key> {
    // Raw bytes, not a validated `PeerId`: point validation costs as much as the signature
    // check this runs ahead of.
    let author: &[u8; 32] = bytes.get(1..33)?.try_into().ok()?;
    let payload = bytes.get(SIGNED_HEADER_LEN..)?;
    let len = usize::from(*payload.get(1)?);
    Some(record_key_of_bytes(author, payload.get(2..2 + len)?))
}

impl RecordStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            usage: BTreeMap::new(),
            total: 0,
            tick: 0,
            limiter: KeyedLimiter::per_minute(config.stores_per_minute),
            stats: StoreStats::default(),
            dirty: ChangeSet::default(),
        }
    }

    /// Starts recording which keys change, for [`RecordStore::take_changes`]. Off by default
    /// (a simulated node has nothing to persist); the set holds at most one entry per key
    /// changed between two calls of `take_changes`.
    pub fn track_changes(&mut self) {
        self.dirty.enable();
    }

    /// What changed since the last call, in key order (empty unless tracking is on).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.dirty
            .take()
            .into_iter()
            .map(|key| match self.entries.get(&key) {
                Some(e) => Change::Put {
                    key,
                    owner: e.owner,
                    record: e.bytes.clone(),
                },
                None => Change::Removed(key),
            })
            .collect()
    }

    fn mark(&mut self, key: Key) {
        self.dirty.mark(key);
    }

    /// Its limits.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn advance(&mut self, monotonic: Duration) {
        self.limiter.advance(monotonic);
    }

    /// Stores a record sent by `from`. `now` checks the validity window, `monotonic` drives the
    /// rate limiter.
    ///
    /// # Errors
    /// [`Rejected`], cheapest reasons first.
    pub fn put(
        &mut self,
        from: PeerId,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<Key, Rejected> {
        let result = self.try_put(from, bytes, now, monotonic);
        match &result {
            Ok(_) => self.stats.accepted += 1,
            Err(e) => *self.stats.rejected.entry(e.reason()).or_default() += 1,
        }
        result
    }

    fn try_put(
        &mut self,
        from: PeerId,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<Key, Rejected> {
        self.check_size(bytes.len())?;
        self.advance(monotonic);
        if !self.limiter.check(&from) {
            return Err(Rejected::RateLimited);
        }
        self.admit(from, bytes, now, monotonic)
    }

    /// Puts a record read back from persistent storage, charged to `owner` as before. Not
    /// rate limited (it is not a STORE from anyone), but size, quota, signature, validity and
    /// sequence are checked as for a STORE: storage is not trusted more than a peer.
    ///
    /// # Errors
    /// [`Rejected`] as for [`RecordStore::put`], never [`Rejected::RateLimited`].
    pub fn load(
        &mut self,
        owner: PeerId,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<Key, Rejected> {
        self.check_size(bytes.len())?;
        self.advance(monotonic);
        self.admit(owner, bytes, now, monotonic)
    }

    fn check_size(&self, len: usize) -> Result<(), Rejected> {
        if len > self.config.max_record_len {
            return Err(Rejected::TooLarge {
                len,
                max: self.config.max_record_len,
            });
        }
        Ok(())
    }

    /// Quota, signature and sequence checks, then the write.
    fn admit(
        &mut self,
        from: PeerId,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<Key, Rejected> {
        let len = bytes.len();
        let claimed = claimed_key(bytes);
        // The very bytes we hold (a republish): they verified when stored, so refresh them
        // without a signature check and without charging anyone's quota again.
        if let Some(key) = claimed
            && let Some(e) = self.entries.get_mut(&key)
            && e.bytes == bytes
        {
            e.stored_at = monotonic;
            self.touch(&key);
            return Ok(key);
        }
        self.check_quota(from, claimed, len)?;
        let record = Record::decode(bytes, now).map_err(|e| Rejected::Invalid(e.to_string()))?;
        let key = key_of(&record);
        let seq = record.payload().seq;
        if let Some(old) = self.entries.get(&key) {
            if old.seq == seq && old.bytes == bytes {
                // A republish of what we hold: refresh, nothing to store; whoever republished
                // it saves us republishing it ourselves for a while.
                self.touch(&key);
                if let Some(e) = self.entries.get_mut(&key) {
                    e.stored_at = monotonic;
                }
                return Ok(key);
            }
            if old.seq >= seq {
                return Err(Rejected::Stale {
                    have: old.seq,
                    got: seq,
                });
            }
        }
        // With the verified key, the credit is exact.
        self.check_quota(from, Some(key), len)?;
        self.remove(&key);
        self.make_room(len)?;
        self.tick += 1;
        let usage = self.usage.entry(from).or_default();
        usage.bytes += len;
        usage.lru.insert(self.tick, key);
        self.total += len;
        self.entries.insert(
            key,
            Entry {
                bytes: bytes.to_vec(),
                seq,
                expires_at: record.expires_at(),
                owner: from,
                used: self.tick,
                stored_at: monotonic,
            },
        );
        self.mark(key);
        Ok(key)
    }

    /// Whether `len` more bytes fit `from`'s quota, counting a record it owns at `replacing`
    /// as freed.
    fn check_quota(
        &self,
        from: PeerId,
        replacing: Option<Key>,
        len: usize,
    ) -> Result<(), Rejected> {
        let used = self.usage.get(&from).map_or(0, |u| u.bytes);
        let credit = replacing
            .and_then(|k| self.entries.get(&k))
            .filter(|e| e.owner == from)
            .map_or(0, |e| e.bytes.len());
        let quota = self.config.per_peer_bytes.min(self.config.total_bytes);
        if used - credit + len > quota {
            return Err(Rejected::QuotaExceeded { used, len, quota });
        }
        Ok(())
    }

    /// Evicts, from whoever has the most stored, least recently used first, until `len` fits.
    fn make_room(&mut self, len: usize) -> Result<(), Rejected> {
        while self.total + len > self.config.total_bytes {
            let victim = self
                .usage
                .iter()
                .max_by_key(|(_, u)| u.bytes)
                .and_then(|(_, u)| u.lru.first_key_value().map(|(_, k)| *k));
            let Some(key) = victim else {
                return Err(Rejected::QuotaExceeded {
                    used: self.total,
                    len,
                    quota: self.config.total_bytes,
                });
            };
            self.remove(&key);
            self.stats.evicted += 1;
        }
        Ok(())
    }

    fn remove(&mut self, key: &Key) {
        let Some(e) = self.entries.remove(key) else {
            return;
        };
        self.mark(*key);
        self.total -= e.bytes.len();
        if let Some(u) = self.usage.get_mut(&e.owner) {
            u.bytes -= e.bytes.len();
            u.lru.remove(&e.used);
            if u.lru.is_empty() {
                self.usage.remove(&e.owner);
            }
        }
    }

    fn touch(&mut self, key: &Key) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.tick += 1;
        if let Some(u) = self.usage.get_mut(&e.owner) {
            u.lru.remove(&e.used);
            u.lru.insert(self.tick, *key);
        }
        e.used = self.tick;
    }

    /// The record at `key`, as stored (marks it used). An expired record is dropped instead.
    pub fn get(&mut self, key: &Key, now: UnixMillis) -> Option<&[u8]> {
        let expired = self.entries.get(key)?.expires_at <= now;
        if expired {
            self.remove(key);
            self.stats.expired += 1;
            return None;
        }
        self.touch(key);
        self.entries.get(key).map(|e| e.bytes.as_slice())
    }

    /// Drops every expired record; returns how many.
    pub fn expire(&mut self, now: UnixMillis) -> usize {
        let gone: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(k);
        }
        self.stats.expired += gone.len() as u64;
        gone.len()
    }

    /// Forgets rate-limiter state of peers idle for a minute or more (call periodically).
    pub fn reclaim_idle(&mut self, monotonic: Duration) {
        self.advance(monotonic);
        self.limiter.reclaim_idle();
    }

    /// Up to `max` unexpired records not stored or republished for `interval`, least
    /// recently (re)published first, with their keys; each is marked republished at
    /// `monotonic`.
    pub fn due_for_republish(
        &mut self,
        now: UnixMillis,
        monotonic: Duration,
        interval: Duration,
        max: usize,
    ) -> Vec<(Key, Vec<u8>)> {
        let mut due: Vec<(Duration, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.expires_at > now && monotonic.saturating_sub(e.stored_at) >= interval
            })
            .map(|(k, e)| (e.stored_at, *k))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        due.into_iter()
            .filter_map(|(_, k)| {
                let e = self.entries.get_mut(&k)?;
                e.stored_at = monotonic;
                Some((k, e.bytes.clone()))
            })
            .collect()
    }

    /// Every record with the peer it is charged to, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (&Key, &PeerId, &[u8])> {
        self.entries
            .iter()
            .map(|(k, e)| (k, &e.owner, e.bytes.as_slice()))
    }

    /// Bytes stored on behalf of `peer`.
    pub fn usage_of(&self, peer: &PeerId) -> usize {
        self.usage.get(peer).map_or(0, |u| u.bytes)
    }

    /// Bytes stored in all.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Records stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Peers the rate limiter tracks.
    pub fn tracked_peers(&self) -> usize {
        self.limiter.len()
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}
