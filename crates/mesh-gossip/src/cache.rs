//! The message cache: verified messages this node holds and serves to pulls, bounded by count,
//! bytes and age (oldest received goes first), plus a bounded memory of ids seen, so a message
//! evicted early is not taken for new when it comes round again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use mesh_crypto::UnixMillis;
use mesh_platform::kv::ChangeSet;

use crate::message::MessageId;

/// Messages held at most.
pub const MAX_CACHE_MESSAGES: usize = 20_000;
/// Bytes of messages held at most: 64 MiB.
pub const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// How long a message is held after it arrived at most (its own expiry may be sooner).
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(24 * 3600);

/// Limits of a [`MessageCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Messages held at most.
    pub max_messages: usize,
    /// Bytes held at most.
    pub max_bytes: usize,
    /// Age at most.
    pub max_age: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_messages: MAX_CACHE_MESSAGES,
            max_bytes: MAX_CACHE_BYTES,
            max_age: MAX_CACHE_AGE,
        }
    }
}

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    received: Duration,
    expires_at: UnixMillis,
    order: u64,
}

/// A change for a driver that mirrors the cache to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Now held.
    Put {
        /// Its id.
        id: MessageId,
        /// The signed message.
        message: Vec<u8>,
        /// When it arrived (monotonic), which its age limit counts from.
        received: Duration,
    },
    /// No longer held.
    Removed(MessageId),
}

/// The cache.
#[derive(Debug)]
pub struct MessageCache {
    config: CacheConfig,
    entries: HashMap<MessageId, Entry>,
    /// Arrival order: oldest first.
    order: BTreeMap<u64, MessageId>,
    bytes: usize,
    next: u64,
    seen: VecDeque<MessageId>,
    seen_set: HashSet<MessageId>,
    dirty: ChangeSet<MessageId>,
}

impl MessageCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            next: 0,
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
            dirty: ChangeSet::default(),
        }
    }

    /// Starts recording changes for [`MessageCache::take_changes`].
    pub fn track_changes(&mut self) {
        self.dirty.enable();
    }

    /// Changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.dirty
            .take()
            .into_iter()
            .map(|id| match self.entries.get(&id) {
                Some(e) => Change::Put {
                    id,
                    message: e.bytes.clone(),
                    received: e.received,
                },
                None => Change::Removed(id),
            })
            .collect()
    }

    fn mark(&mut self, id: MessageId) {
        self.dirty.mark(id);
    }

    /// Whether `id` is held or was seen recently.
    pub fn seen(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id) || self.seen_set.contains(id)
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    /// The message `id`, if held.
    pub fn get(&self, id: &MessageId) -> Option<&[u8]> {
        self.entries.get(id).map(|e| e.bytes.as_slice())
    }

    /// The message `id`, if held and not expired at `now` (expiry runs only every pull
    /// interval; what is served must be valid when it leaves).
    pub fn get_live(&self, id: &MessageId, now: UnixMillis) -> Option<&[u8]> {
        self.entries
            .get(id)
            .filter(|e| e.expires_at > now)
            .map(|e| e.bytes.as_slice())
    }

    /// Ids held, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &MessageId> {
        self.entries.keys()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remember(&mut self, id: MessageId) {
        if self.seen_set.insert(id) {
            self.seen.push_back(id);
            // Twice the cache's count: ids outlive their messages for a while.
            while self.seen.len() > self.config.max_messages.saturating_mul(2).max(1) {
                if let Some(old) = self.seen.pop_front() {
                    self.seen_set.remove(&old);
                }
            }
        }
    }

    /// Holds a verified message (received at `received`, expiring at `expires_at`); evicts the
    /// oldest as needed. Returns how many were evicted. A message larger than the whole byte
    /// budget is only remembered as seen.
    pub fn insert(
        &mut self,
        id: MessageId,
        bytes: Vec<u8>,
        expires_at: UnixMillis,
        received: Duration,
    ) -> usize {
        self.remember(id);
        if self.entries.contains_key(&id) || bytes.len() > self.config.max_bytes {
            return 0;
        }
        let mut evicted = 0;
        while !self.entries.is_empty()
            && (self.entries.len() >= self.config.max_messages
                || self.bytes + bytes.len() > self.config.max_bytes)
        {
            if let Some((_, oldest)) = self.order.first_key_value() {
                let oldest = *oldest;
                self.remove(&oldest);
                evicted += 1;
            }
        }
        if self.config.max_messages == 0 {
            return evicted;
        }
        self.next += 1;
        self.bytes += bytes.len();
        self.order.insert(self.next, id);
        self.entries.insert(
            id,
            Entry {
                bytes,
                received,
                expires_at,
                order: self.next,
            },
        );
        self.mark(id);
        evicted
    }

    fn remove(&mut self, id: &MessageId) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes.len();
            self.order.remove(&e.order);
            self.mark(*id);
        }
    }

    /// Drops messages that expired or are older than the age limit; returns how many.
    pub fn expire(&mut self, now: UnixMillis, monotonic: Duration) -> usize {
        let gone: Vec<MessageId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.expires_at <= now || monotonic.saturating_sub(e.received) >= self.config.max_age
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.remove(id);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> MessageId {
        MessageId([i; 32])
    }

    const LATER: UnixMillis = UnixMillis(1_000_000);

    #[test]
    fn count_and_byte_limits_evict_the_oldest_at_the_boundary() {
        let mut c = MessageCache::new(CacheConfig {
            max_messages: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
        });
        let t = Duration::ZERO;
        assert_eq!(c.insert(id(1), vec![0; 10], LATER, t), 0);
        assert_eq!(c.insert(id(2), vec![0; 10], LATER, t), 0);
        assert_eq!(c.insert(id(3), vec![0; 10], LATER, t), 0);
        assert_eq!(c.len(), 3, "at the count limit");
        assert_eq!(c.insert(id(4), vec![0; 10], LATER, t), 1, "one over");
        assert!(!c.contains(&id(1)) && c.contains(&id(4)));
        // Evicted, but remembered: it does not count as new when it comes round again.
        assert!(c.seen(&id(1)));
        // Bytes: 30 held; 70 more fit exactly, 71 do not.
        let mut c = MessageCache::new(CacheConfig {
            max_messages: 100,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
        });
        c.insert(id(1), vec![0; 30], LATER, t);
        assert_eq!(c.insert(id(2), vec![0; 70], LATER, t), 0);
        assert_eq!(c.bytes(), 100);
        assert_eq!(c.insert(id(3), vec![0; 1], LATER, t), 1);
        assert_eq!(c.bytes(), 71);
        // Larger than the whole budget: never held.
        assert_eq!(c.insert(id(9), vec![0; 101], LATER, t), 0);
        assert!(!c.contains(&id(9)) && c.seen(&id(9)));
    }

    #[test]
    fn expiry_and_age_drop_messages_and_changes_are_tracked() {
        let mut c = MessageCache::new(CacheConfig {
            max_messages: 10,
            max_bytes: 1000,
            max_age: Duration::from_secs(60),
        });
        c.track_changes();
        c.insert(id(1), vec![1], UnixMillis(500), Duration::ZERO);
        c.insert(id(2), vec![2], LATER, Duration::ZERO);
        c.insert(id(3), vec![3], LATER, Duration::from_secs(30));
        assert_eq!(c.take_changes().len(), 3);
        assert_eq!(c.expire(UnixMillis(499), Duration::from_secs(59)), 0);
        assert_eq!(c.expire(UnixMillis(500), Duration::from_secs(59)), 1);
        assert_eq!(c.expire(UnixMillis(500), Duration::from_secs(60)), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.take_changes(),
            vec![Change::Removed(id(1)), Change::Removed(id(2))]
        );
    }

    #[test]
    fn the_seen_memory_is_bounded() {
        let mut c = MessageCache::new(CacheConfig {
            max_messages: 2,
            max_bytes: 1000,
            max_age: Duration::from_secs(60),
        });
        for i in 0..10 {
            c.insert(id(i), vec![i], LATER, Duration::ZERO);
        }
        assert_eq!(c.len(), 2);
        assert!(c.seen(&id(9)) && c.seen(&id(6)));
        assert!(!c.seen(&id(5)), "only the last 4 ids are remembered");
    }
}
