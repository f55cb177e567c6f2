//! The routing table: 256 k-buckets with replacement caches and liveness checks (sans-IO).
//!
//! A bucket keeps its contacts least recently seen first. A new contact for a full bucket does
//! not evict anyone: it waits in the bucket's replacement cache while the least recently seen
//! contact is pinged ([`Insert::Full`]); only a failed ping ([`RoutingTable::on_failure`], after
//! [`MAX_FAILURES`]) makes room, and the freshest replacement takes the place. Long-lived
//! contacts are thereby preferred, which is what makes Kademlia hard to flood with new
//! identities.

use std::collections::VecDeque;
use std::time::Duration;

use mesh_crypto::PeerId;

use crate::key::{KEY_BITS, Key};

/// Contacts per bucket (Kademlia's k).
pub const K: usize = 20;
/// Waiting contacts per bucket.
pub const REPLACEMENTS: usize = K;
/// Failed requests in a row after which a contact is dropped.
pub const MAX_FAILURES: u8 = 3;
/// Longest transport address kept for a contact.
pub const MAX_ADDRESS_LEN: usize = 256;

/// A node we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Its identity.
    pub peer: PeerId,
    /// BLAKE2b-256 of `peer`.
    pub key: Key,
    /// How to reach it (transport-specific; empty when only reachable through others).
    pub address: String,
    /// When it last answered us or sent us something, on the node's monotonic clock.
    pub last_seen: Duration,
    /// Requests to it that failed since it last answered.
    pub failures: u8,
}

impl Contact {
    /// A contact seen at `now`. Addresses over [`MAX_ADDRESS_LEN`] are dropped.
    pub fn new(peer: PeerId, address: &str, now: Duration) -> Self {
        Self {
            peer,
            key: Key::of_peer(&peer),
            address: if address.len() <= MAX_ADDRESS_LEN {
                address.to_string()
            } else {
                String::new()
            },
            last_seen: now,
            failures: 0,
        }
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// Added to its bucket.
    Added,
    /// Already known: moved to the most recently seen end, address refreshed.
    Updated,
    /// The bucket is full: the contact waits in the replacement cache; ping `check` (the least
    /// recently seen contact) and report the outcome.
    Full {
        /// Whom to ping.
        check: PeerId,
    },
    /// Our own identity: never stored.
    SelfIgnored,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Least recently seen first.
    entries: VecDeque<Contact>,
    /// Most recently seen last.
    replacements: VecDeque<Contact>,
    /// When a lookup last touched this bucket's range.
    refreshed: Duration,
}

/// Pushes onto a deque that grows in steps of 4, 8, 16, then to `cap` exactly (buckets are
/// many and mostly small; doubling to 32 would waste a dozen contacts' room in every full one).
fn push_bounded(d: &mut VecDeque<Contact>, c: Contact, cap: usize) {
    if d.len() == d.capacity() {
        let target = (d.len() * 2).clamp(4, cap.max(4));
        d.reserve_exact(target.saturating_sub(d.len()).max(1));
    }
    d.push_back(c);
}

/// 256 k-buckets around the local key.
///
/// Stored sparsely: bucket `i` is at position `255 - i`, and only positions up to the
/// deepest bucket used exist. With `N` nodes a table uses about `log2(N)` buckets, not 256,
/// which is what keeps a simulated million-node network within memory.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: Key,
    local_peer: PeerId,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for the node `local`.
    pub fn new(local: PeerId) -> Self {
        Self {
            local: Key::of_peer(&local),
            local_peer: local,
            buckets: Vec::new(),
        }
    }

    /// The local node's key.
    pub fn local_key(&self) -> Key {
        self.local
    }

    /// The local node's identity.
    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    /// Contacts in the table (replacements not counted).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Contacts waiting in replacement caches.
    pub fn replacements(&self) -> usize {
        self.buckets.iter().map(|b| b.replacements.len()).sum()
    }

    /// Whether the table has no contacts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the bucket `key` falls in.
    fn bucket_of(&self, key: &Key) -> Option<usize> {
        self.local.bucket_index(key).map(|i| KEY_BITS - 1 - i)
    }

    fn bucket(&self, pos: usize) -> Option<&Bucket> {
        self.buckets.get(pos)
    }

    /// The bucket at `pos`, created (with the ones before it) if needed.
    fn bucket_mut(&mut self, pos: usize) -> &mut Bucket {
        if self.buckets.len() <= pos {
            self.buckets.resize_with(pos + 1, Bucket::default);
        }
        &mut self.buckets[pos]
    }

    /// Records that `contact` is alive (it answered, or sent us a valid message).
    pub fn insert(&mut self, contact: Contact) -> Insert {
        if contact.peer == self.local_peer {
            return Insert::SelfIgnored;
        }
        let Some(i) = self.bucket_of(&contact.key) else {
            return Insert::SelfIgnored;
        };
        let local_peer = self.local_peer;
        let bucket = self.bucket_mut(i);
        if bucket.entries.is_empty() && bucket.replacements.is_empty() {
            // A bucket counts as fresh from its first contact.
            bucket.refreshed = contact.last_seen;
        }
        if let Some(pos) = bucket.entries.iter().position(|c| c.peer == contact.peer) {
            let mut known = bucket
                .entries
                .remove(pos)
                .unwrap_or_else(|| contact.clone());
            known.last_seen = contact.last_seen;
            known.failures = 0;
            if !contact.address.is_empty() {
                known.address = contact.address;
            }
            bucket.entries.push_back(known);
            return Insert::Updated;
        }
        if bucket.entries.len() < K {
            push_bounded(&mut bucket.entries, contact, K);
            return Insert::Added;
        }
        bucket.replacements.retain(|c| c.peer != contact.peer);
        if bucket.replacements.len() >= REPLACEMENTS {
            bucket.replacements.pop_front();
        }
        push_bounded(&mut bucket.replacements, contact, REPLACEMENTS);
        let check = bucket.entries.front().map_or(local_peer, |c| c.peer);
        Insert::Full { check }
    }

    /// Records a failed request to `peer`; after [`MAX_FAILURES`] in a row it is dropped and
    /// the freshest replacement takes its place. Returns whether it was dropped.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        let Some(bucket) = self
            .bucket_of(&Key::of_peer(peer))
            .and_then(|i| self.buckets.get_mut(i))
        else {
            return false;
        };
        let Some(pos) = bucket.entries.iter().position(|c| c.peer == *peer) else {
            bucket.replacements.retain(|c| c.peer != *peer);
            return false;
        };
        let contact = &mut bucket.entries[pos];
        contact.failures = contact.failures.saturating_add(1);
        if contact.failures < MAX_FAILURES {
            return false;
        }
        // Stale. Dropped only if a replacement can take its place: otherwise it stays,
        // flagged (as Kademlia does), so that lost messages or our own link going down do not
        // empty the table; stale contacts come last in `closest`.
        let Some(replacement) = bucket.replacements.pop_back() else {
            return false;
        };
        bucket.entries.remove(pos);
        bucket.entries.push_back(replacement);
        true
    }

    /// Removes `peer` at once (it proved hostile, or left).
    pub fn remove(&mut self, peer: &PeerId) {
        if let Some(bucket) = self
            .bucket_of(&Key::of_peer(peer))
            .and_then(|i| self.buckets.get_mut(i))
        {
            bucket.entries.retain(|c| c.peer != *peer);
            bucket.replacements.retain(|c| c.peer != *peer);
        }
    }

    /// The contact for `peer`, if in the table.
    pub fn get(&self, peer: &PeerId) -> Option<&Contact> {
        let i = self.bucket_of(&Key::of_peer(peer))?;
        self.bucket(i)?.entries.iter().find(|c| c.peer == *peer)
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Contact> {
        // Each distance computed once; only the `n` closest sorted.
        let mut all: Vec<((bool, crate::key::Distance), &Contact)> = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .map(|c| ((c.failures >= MAX_FAILURES, c.key.distance(target)), c))
            .collect();
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |a| a.0);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, c)| c.clone()).collect()
    }

    /// Every contact (for persistence).
    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.buckets.iter().flat_map(|b| &b.entries)
    }

    /// Marks the bucket `target` falls in as refreshed at `now` (a lookup went there).
    pub fn touch(&mut self, target: &Key, now: Duration) {
        if let Some(bucket) = self.bucket_of(target).and_then(|i| self.buckets.get_mut(i)) {
            bucket.refreshed = now;
        }
    }

    /// Indices of non-empty buckets not refreshed within `interval` before `now`.
    pub fn stale_buckets(&self, now: Duration, interval: Duration) -> Vec<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty() && now.saturating_sub(b.refreshed) >= interval)
            .map(|(pos, _)| KEY_BITS - 1 - pos)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use mesh_crypto::Identity;

    use super::*;

    fn peer(n: u32) -> PeerId {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        Identity::from_seed(&seed).peer_id()
    }

    /// Peers that land in the local node's bucket `index`, found by search.
    fn peers_in_bucket(table: &RoutingTable, index: usize, count: usize) -> Vec<PeerId> {
        (1..)
            .map(peer)
            .filter(|p| table.local_key().bucket_index(&Key::of_peer(p)) == Some(index))
            .take(count)
            .collect()
    }

    #[test]
    fn a_full_bucket_keeps_old_contacts_until_they_fail() {
        let mut t = RoutingTable::new(peer(0));
        // Bucket 255 holds half the key space: easy to fill.
        let ps = peers_in_bucket(&t, 255, K + 2);
        for (i, p) in ps[..K].iter().enumerate() {
            assert_eq!(
                t.insert(Contact::new(*p, "a", Duration::from_secs(i as u64))),
                Insert::Added
            );
        }
        assert_eq!(t.len(), K);
        // The 21st waits; the least recently seen is to be checked.
        let newcomer = Contact::new(ps[K], "b", Duration::from_secs(100));
        assert_eq!(t.insert(newcomer), Insert::Full { check: ps[0] });
        assert_eq!(t.len(), K);
        assert!(t.get(&ps[K]).is_none());
        // The old contact answers: it stays, the newcomer keeps waiting.
        assert_eq!(
            t.insert(Contact::new(ps[0], "", Duration::from_secs(101))),
            Insert::Updated
        );
        assert_eq!(
            t.get(&ps[0]).unwrap().address,
            "a",
            "empty address keeps the old one"
        );
        // ps[1] is now least recently seen; it fails MAX_FAILURES times and is replaced.
        for i in 0..MAX_FAILURES {
            assert_eq!(t.on_failure(&ps[1]), i + 1 == MAX_FAILURES);
        }
        assert!(t.get(&ps[1]).is_none());
        assert!(
            t.get(&ps[K]).is_some(),
            "the waiting contact took the place"
        );
        assert_eq!(t.len(), K);
    }

    #[test]
    fn a_stale_contact_without_a_replacement_stays_flagged_and_comes_last() {
        let mut t = RoutingTable::new(peer(0));
        let ps = peers_in_bucket(&t, 255, 3);
        for p in &ps[..2] {
            t.insert(Contact::new(*p, "a", Duration::ZERO));
        }
        for _ in 0..MAX_FAILURES + 2 {
            assert!(!t.on_failure(&ps[0]), "no replacement: kept");
        }
        assert_eq!(t.len(), 2);
        // Whatever the distance, the live contact is offered first.
        for target in [Key::of_peer(&ps[0]), Key::of_peer(&ps[1])] {
            assert_eq!(t.closest(&target, 2)[0].peer, ps[1]);
        }
        // An answer makes it live again.
        t.insert(Contact::new(ps[0], "", Duration::from_secs(1)));
        assert_eq!(t.closest(&Key::of_peer(&ps[0]), 1)[0].peer, ps[0]);
    }

    #[test]
    fn replacement_caches_are_bounded_and_self_is_ignored() {
        let me = peer(0);
        let mut t = RoutingTable::new(me);
        assert_eq!(
            t.insert(Contact::new(me, "", Duration::ZERO)),
            Insert::SelfIgnored
        );
        let ps = peers_in_bucket(&t, 255, K + REPLACEMENTS + 5);
        for p in &ps {
            t.insert(Contact::new(*p, "", Duration::ZERO));
        }
        assert_eq!(t.len(), K);
        assert_eq!(t.buckets[0].replacements.len(), REPLACEMENTS);
        // The oldest waiting contacts were the ones dropped.
        assert!(t.buckets[0].replacements.iter().all(|c| c.peer != ps[K]));
        let long = "x".repeat(MAX_ADDRESS_LEN + 1);
        assert_eq!(Contact::new(ps[0], &long, Duration::ZERO).address, "");
    }

    #[test]
    fn closest_sorts_by_xor_distance() {
        let mut t = RoutingTable::new(peer(0));
        for n in 1..200 {
            t.insert(Contact::new(peer(n), "", Duration::ZERO));
        }
        let target = Key::of_peer(&peer(5000));
        let got = t.closest(&target, K);
        assert_eq!(got.len(), K);
        let mut all: Vec<Contact> = t.contacts().cloned().collect();
        all.sort_by_key(|c| c.key.distance(&target));
        assert_eq!(got, all[..K].to_vec());
        assert!(
            got.windows(2)
                .all(|w| w[0].key.distance(&target) <= w[1].key.distance(&target))
        );
    }

    #[test]
    fn stale_buckets_are_reported_until_touched() {
        let mut t = RoutingTable::new(peer(0));
        let p = peers_in_bucket(&t, 255, 1)[0];
        t.insert(Contact::new(p, "", Duration::ZERO));
        let hour = Duration::from_secs(3600);
        assert_eq!(t.stale_buckets(hour, hour), vec![255]);
        t.touch(&Key::of_peer(&p), hour);
        assert!(
            t.stale_buckets(hour + Duration::from_secs(1), hour)
                .is_empty()
        );
        t.remove(&p);
        assert!(t.is_empty());
        assert!(t.stale_buckets(3 * hour, hour).is_empty());
    }
}
