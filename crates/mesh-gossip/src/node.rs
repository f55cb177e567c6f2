//! The gossip core (sans-IO): push with fanout and TTL, pull with Bloom digests, a bounded
//! cache, per-peer limits on what digests may cost. Bytes from peers and the time go in;
//! bytes for peers and events come out of [`Gossip::poll_output`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::limit::KeyedLimiter;

use crate::bloom::{Bloom, FALSE_POSITIVE_RATE, FILTER_ITEMS};
use crate::cache::{CacheConfig, Change, MessageCache};
use crate::message::{
    Digest, Frame, GossipMessage, MAX_FRAME_LEN, MAX_MESSAGES_PER_FRAME, MAX_PARTITION_BITS,
    MessageId, message_id, partition_of,
};

/// Neighbours a message is pushed to (or all, if fewer).
pub const FANOUT: usize = 6;
/// Hops a published message may travel.
pub const TTL: u8 = 6;
/// How often a node pulls from a random neighbour.
pub const PULL_INTERVAL: Duration = Duration::from_secs(60);
/// Neighbours kept at most.
pub const MAX_NEIGHBOURS: usize = 64;
/// How much of the id space one peer's digests may cover per minute, in 64ths: 256 is four
/// full pull rounds. A digest covers `64 >> partition_bits` 64ths and is charged that much,
/// since answering it hashes every held id of its share: what a round costs the answerer is
/// the same however it is split.
pub const DIGEST_SPACE_PER_MINUTE: u32 = 256;
/// Bytes of messages sent per peer and minute in answer to its digests: 8 MiB.
pub const RESPONSE_BYTES_PER_MINUTE: u32 = 8 * 1024 * 1024;
/// New messages accepted by push from one peer per minute (20 a second): above, a peer's
/// pushes are refused before their signature is checked. Duplicates do not count.
pub const PUSHES_PER_MINUTE: u32 = 1200;
/// Bytes of messages sent in answer to one digest at most: 4 MiB.
pub const RESPONSE_BUDGET: usize = 4 * 1024 * 1024;
/// How long after sending a digest its answers are accepted.
pub const PULL_WINDOW: Duration = Duration::from_secs(120);
/// Outputs' room kept after the outbox empties.
const OUTBOX_KEPT: usize = 8;

/// Settings of a [`Gossip`] node; every field has a named default above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipConfig {
    /// Cache limits.
    pub cache: CacheConfig,
    /// Push fanout.
    pub fanout: usize,
    /// TTL of published messages.
    pub ttl: u8,
    /// Pull interval.
    pub pull_interval: Duration,
    /// Items one digest filter holds before the id space is split into partitions.
    pub filter_items: usize,
    /// False-positive rate digest filters are sized for.
    pub false_positive_rate: f64,
    /// Neighbours kept at most.
    pub max_neighbours: usize,
    /// Id space (in 64ths) a peer's digests may cover per minute.
    pub digest_space_per_minute: u32,
    /// Response bytes per peer and minute.
    pub response_bytes_per_minute: u32,
    /// New pushed messages accepted per peer and minute.
    pub pushes_per_minute: u32,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            cache: CacheConfig::default(),
            fanout: FANOUT,
            ttl: TTL,
            pull_interval: PULL_INTERVAL,
            filter_items: FILTER_ITEMS,
            false_positive_rate: FALSE_POSITIVE_RATE,
            max_neighbours: MAX_NEIGHBOURS,
            digest_space_per_minute: DIGEST_SPACE_PER_MINUTE,
            response_bytes_per_minute: RESPONSE_BYTES_PER_MINUTE,
            pushes_per_minute: PUSHES_PER_MINUTE,
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new, verified message (each is reported once).
    Message {
        /// Its id.
        id: MessageId,
        /// The author, whose signature verified.
        author: PeerId,
        /// Its topic.
        topic: Vec<u8>,
        /// Its body.
        body: Vec<u8>,
        /// Hops from the author (0: published here or pulled).
        hops: u8,
        /// Whether it came by pull rather than push.
        pulled: bool,
    },
    /// A peer sent something refused (count it against the peer).
    BadInput {
        /// Who.
        from: PeerId,
        /// Why, for metrics: `frame`, `message`, `digest_rate`, `push_rate`, `unsolicited`,
        /// `over_budget`.
        reason: &'static str,
    },
}

/// What the core wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a gossip frame.
    Send {
        /// The peer.
        to: PeerId,
        /// Its address.
        address: String,
        /// The frame's bytes.
        bytes: Vec<u8>,
    },
    /// Report an event.
    Event(Event),
}

/// Why [`Gossip::publish`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// It does not verify (or is expired).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// It is already known.
    #[error("already known")]
    Duplicate,
}

/// Counters for tests, simulations and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// PUSH frames received.
    pub pushes_received: u64,
    /// Messages received that were already known (push or pull).
    pub duplicates: u64,
    /// Messages received by pull that were new.
    pub pulled: u64,
    /// Messages received by push that were new.
    pub pushed: u64,
    /// PUSH frames sent.
    pub pushes_sent: u64,
    /// DIGEST frames sent.
    pub digests_sent: u64,
    /// Bytes of DIGEST frames sent.
    pub digest_bytes_sent: u64,
    /// Bytes of MESSAGES frames sent.
    pub response_bytes_sent: u64,
    /// Bytes of MESSAGES frames received.
    pub response_bytes_received: u64,
    /// Digests refused for rate.
    pub digests_refused: u64,
    /// Frames or messages refused as bad.
    pub bad_input: u64,
    /// Messages evicted from the cache.
    pub evicted: u64,
}

/// A gossip node.
pub struct Gossip {
    local: PeerId,
    config: GossipConfig,
    cache: MessageCache,
    neighbours: BTreeMap<PeerId, String>,
    /// Peers we sent digests to, and when: only they may answer with MESSAGES.
    /// With when we asked and how many answer bytes we still take from them: what an
    /// honest answerer may send ([`RESPONSE_BUDGET`] per digest).
    pulling: BTreeMap<PeerId, (Duration, usize)>,
    rng: u64,
    outbox: VecDeque<Output>,
    next_pull: Duration,
    clock: Duration,
    digests: KeyedLimiter<PeerId>,
    /// In KiB.
    responses: KeyedLimiter<PeerId>,
    pushes: KeyedLimiter<PeerId>,
    stats: GossipStats,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("local", &self.local)
            .field("cached", &self.cache.len())
            .field("neighbours", &self.neighbours.len())
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// A node for `local`. `seed` drives its random choices (fanout samples, pull partners,
    /// digest seeds): give it fresh randomness, or a fixed value to replay a simulation.
    pub fn new(local: PeerId, config: GossipConfig, seed: u64) -> Self {
        Self {
            local,
            config,
            cache: MessageCache::new(config.cache),
            neighbours: BTreeMap::new(),
            pulling: BTreeMap::new(),
            rng: seed | 1,
            outbox: VecDeque::new(),
            next_pull: config.pull_interval,
            clock: Duration::ZERO,
            digests: KeyedLimiter::per_minute(config.digest_space_per_minute),
            responses: KeyedLimiter::per_minute((config.response_bytes_per_minute / 1024).max(1)),
            pushes: KeyedLimiter::per_minute(config.pushes_per_minute),
            stats: GossipStats::default(),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &MessageCache {
        &self.cache
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        self.stats
    }

    /// Neighbours.
    pub fn neighbours(&self) -> impl Iterator<Item = &PeerId> {
        self.neighbours.keys()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outbox.pop_front();
        if out.is_none() && self.outbox.capacity() > OUTBOX_KEPT {
            self.outbox.shrink_to(OUTBOX_KEPT);
        }
        out
    }

    /// Starts recording cache changes for [`Gossip::take_changes`] (for persistence).
    pub fn track_changes(&mut self) {
        self.cache.track_changes();
    }

    /// Cache changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.cache.take_changes()
    }

    /// When [`Gossip::tick`] next has work.
    pub fn next_deadline(&self) -> Duration {
        self.next_pull
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: determinism for simulations, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn advance(&mut self, monotonic: Duration) {
        self.clock = self.clock.max(monotonic);
        self.digests.advance(monotonic);
        self.responses.advance(monotonic);
        self.pushes.advance(monotonic);
    }

    /// Adds a neighbour (at most `max_neighbours`; more are ignored) and pulls from it at once:
    /// a link that comes (back) up is when a peer catches up.
    pub fn add_neighbour(&mut self, peer: PeerId, address: &str, monotonic: Duration) {
        self.advance(monotonic);
        if peer == self.local {
            return;
        }
        if !self.neighbours.contains_key(&peer)
            && self.neighbours.len() >= self.config.max_neighbours
        {
            return;
        }
        self.neighbours.insert(peer, address.to_string());
        self.pull_from(peer, monotonic);
    }

    /// Forgets a neighbour (its link went down).
    pub fn remove_neighbour(&mut self, peer: &PeerId) {
        self.neighbours.remove(peer);
        self.pulling.remove(peer);
    }

    /// Publishes a signed message: verifies it, keeps it, pushes it to `fanout` neighbours.
    ///
    /// # Errors
    /// [`PublishError`].
    pub fn publish(
        &mut self,
        message: Vec<u8>,
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<MessageId, PublishError> {
        self.advance(monotonic);
        let verified = GossipMessage::decode(&message, now)
            .map_err(|e| PublishError::Invalid(e.to_string()))?;
        let id = MessageId(verified.id().0);
        if self.cache.seen(&id) {
            return Err(PublishError::Duplicate);
        }
        self.push(&message, self.config.ttl, 0, None, verified.author());
        self.stats.evicted +=
            self.cache
                .insert(id, message, verified.expires_at(), monotonic) as u64;
        Ok(id)
    }

    /// Sends `message` on to `fanout` random neighbours other than `except` and the author.
    fn push(
        &mut self,
        message: &[u8],
        ttl: u8,
        hops: u8,
        except: Option<&PeerId>,
        author: &PeerId,
    ) {
        // Ids only: the addresses of the few chosen are looked up below, not cloned for all.
        let mut candidates: Vec<PeerId> = self
            .neighbours
            .keys()
            .filter(|p| Some(*p) != except && *p != author)
            .copied()
            .collect();
        let n = self.config.fanout.min(candidates.len());
        // Partial Fisher-Yates: the first n are a uniform sample.
        for i in 0..n {
            #[allow(clippy::cast_possible_truncation)] // below the length, a usize
            let j = i + (self.random() % (candidates.len() - i) as u64) as usize;
            candidates.swap(i, j);
        }
        let bytes = Frame::Push {
            ttl,
            hops,
            message: message.to_vec(),
        }
        .encode();
        for to in candidates.into_iter().take(n) {
            let address = self.neighbours.get(&to).cloned().unwrap_or_default();
            self.stats.pushes_sent += 1;
            self.outbox.push_back(Output::Send {
                to,
                address,
                bytes: bytes.clone(),
            });
        }
    }

    fn bad(&mut self, from: PeerId, reason: &'static str) {
        self.stats.bad_input += 1;
        self.outbox
            .push_back(Output::Event(Event::BadInput { from, reason }));
    }

    /// Handles a gossip frame from `from` (authenticated by the link). Neighbours are managed
    /// with [`Gossip::add_neighbour`]; a frame from any linked peer is handled.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) {
        self.advance(monotonic);
        match Frame::decode(bytes) {
            Err(_) => self.bad(from, "frame"),
            Ok(Frame::Push { ttl, hops, message }) => {
                self.stats.pushes_received += 1;
                self.on_push(from, ttl, hops, message, now, monotonic);
            }
            Ok(Frame::Digest(d)) => self.on_digest(from, &d, now),
            Ok(Frame::Messages(list)) => {
                let Some((at, left)) = self.pulling.get_mut(&from) else {
                    self.bad(from, "unsolicited");
                    return;
                };
                if monotonic.saturating_sub(*at) > PULL_WINDOW {
                    self.bad(from, "unsolicited");
                    return;
                }
                // More than our digests allow an honest peer to answer: refused unread.
                let Some(rest) = left.checked_sub(bytes.len()) else {
                    self.bad(from, "over_budget");
                    return;
                };
                *left = rest;
                self.stats.response_bytes_received += bytes.len() as u64;
                for m in list {
                    self.accept(from, m, 0, true, now, monotonic);
                }
            }
        }
    }

    /// Verifies and keeps a message not seen before; returns it if it was new.
    fn accept(
        &mut self,
        from: PeerId,
        message: Vec<u8>,
        hops: u8,
        pulled: bool,
        now: UnixMillis,
        monotonic: Duration,
    ) -> Option<GossipMessage> {
        let Some(id) = message_id(&message) else {
            self.bad(from, "message");
            return None;
        };
        if self.cache.seen(&id) {
            self.stats.duplicates += 1;
            return None;
        }
        let Ok(verified) = GossipMessage::decode(&message, now) else {
            self.bad(from, "message");
            return None;
        };
        if pulled {
            self.stats.pulled += 1;
        } else {
            self.stats.pushed += 1;
        }
        self.stats.evicted +=
            self.cache
                .insert(id, message, verified.expires_at(), monotonic) as u64;
        self.outbox.push_back(Output::Event(Event::Message {
            id,
            author: *verified.author(),
            topic: verified.payload().topic.clone(),
            body: verified.payload().body.clone(),
            hops,
            pulled,
        }));
        Some(verified)
    }

    fn on_push(
        &mut self,
        from: PeerId,
        ttl: u8,
        hops: u8,
        message: Vec<u8>,
        now: UnixMillis,
        monotonic: Duration,
    ) {
        let hops = hops.saturating_add(1);
        // New messages cost a signature check and a place in the cache: a peer gets a rate
        // of them (duplicates are cheap and free).
        if message_id(&message).is_some_and(|id| !self.cache.seen(&id)) && !self.pushes.check(&from)
        {
            self.bad(from, "push_rate");
            return;
        }
        let Some(verified) = self.accept(from, message, hops, false, now, monotonic) else {
            return;
        };
        if ttl > 1 {
            let author = *verified.author();
            self.push(verified.as_bytes(), ttl - 1, hops, Some(&from), &author);
        }
    }

    /// Answers a digest with the held messages of its partition the filter does not contain,
    /// within the per-digest budget and the peer's byte rate.
    fn on_digest(&mut self, from: PeerId, digest: &Digest, now: UnixMillis) {
        let share = 64u32 >> digest.partition_bits.min(MAX_PARTITION_BITS);
        if !self.digests.check_n(&from, share) {
            self.stats.digests_refused += 1;
            self.bad(from, "digest_rate");
            return;
        }
        let mut missing: Vec<&[u8]> = Vec::new();
        let mut total = 0usize;
        for id in self.cache.ids() {
            if !digest.covers(id) || digest.filter.contains(id, digest.seed) {
                continue;
            }
            let Some(m) = self.cache.get_live(id, now) else {
                continue;
            };
            if total + m.len() > RESPONSE_BUDGET {
                break;
            }
            total += m.len();
            missing.push(m);
        }
        // The peer's byte rate, in KiB: answer with what it allows.
        while !missing.is_empty() {
            let kib = u32::try_from(total.div_ceil(1024))
                .unwrap_or(u32::MAX)
                .max(1);
            if self.responses.check_n(&from, kib) {
                break;
            }
            let half = missing.len() / 2;
            missing.truncate(half);
            total = missing.iter().map(|m| m.len()).sum();
        }
        if missing.is_empty() {
            return;
        }
        let frames = pack(&missing);
        let address = self.neighbours.get(&from).cloned().unwrap_or_default();
        for bytes in frames {
            self.stats.response_bytes_sent += bytes.len() as u64;
            self.outbox.push_back(Output::Send {
                to: from,
                address: address.clone(),
                bytes,
            });
        }
    }

    /// Sends digests of everything held to `peer`, under a fresh seed.
    pub fn pull_from(&mut self, peer: PeerId, monotonic: Duration) {
        let Some(address) = self.neighbours.get(&peer).cloned() else {
            return;
        };
        let seed = self.random();
        let digests = self.digests_of_cache(seed);
        // Each digest may be answered with up to RESPONSE_BUDGET bytes of messages, in frames
        // that carry a little framing of their own.
        let budget = digests.len() * (RESPONSE_BUDGET + RESPONSE_BUDGET / 64);
        self.pulling.insert(peer, (monotonic, budget));
        for digest in digests {
            let bytes = Frame::Digest(digest).encode();
            self.stats.digests_sent += 1;
            self.stats.digest_bytes_sent += bytes.len() as u64;
            self.outbox.push_back(Output::Send {
                to: peer,
                address: address.clone(),
                bytes,
            });
        }
    }

    /// The digests that describe the cache: one filter per partition of the id space, with
    /// as many partitions as it takes to keep each filter at `filter_items` (at most 64).
    pub fn digests_of_cache(&self, seed: u64) -> Vec<Digest> {
        let held = self.cache.len();
        let per = self.config.filter_items.max(1);
        let mut bits = 0u8;
        while bits < MAX_PARTITION_BITS && held.div_ceil(1 << bits) > per {
            bits += 1;
        }
        let parts = 1usize << bits;
        let mut ids: Vec<Vec<&MessageId>> = vec![Vec::new(); parts];
        for id in self.cache.ids() {
            ids[usize::from(partition_of(id, bits))].push(id);
        }
        ids.into_iter()
            .enumerate()
            .map(|(p, in_part)| {
                // Sized for what the partition holds (at most `filter_items`): a node that
                // holds little sends little.
                let mut filter = Bloom::for_items(in_part.len(), self.config.false_positive_rate);
                for id in in_part {
                    filter.insert(id, seed);
                }
                Digest {
                    seed,
                    partition_bits: bits,
                    partition: u16::try_from(p).unwrap_or(0),
                    filter,
                }
            })
            .collect()
    }

    /// Pulls from one random neighbour now (after the node was away, for example).
    pub fn pull_now(&mut self, monotonic: Duration) {
        self.advance(monotonic);
        if self.neighbours.is_empty() {
            return;
        }
        #[allow(clippy::cast_possible_truncation)] // below the count, a usize
        let pick = (self.random() % self.neighbours.len() as u64) as usize;
        if let Some(peer) = self.neighbours.keys().nth(pick).copied() {
            self.pull_from(peer, monotonic);
        }
    }

    /// Time passes: every pull interval, a pull from a random neighbour; expired messages go;
    /// idle rate-limiter state and stale pull windows are forgotten.
    pub fn tick(&mut self, now: UnixMillis, monotonic: Duration) {
        self.advance(monotonic);
        if monotonic < self.next_pull {
            return;
        }
        self.next_pull = monotonic + self.config.pull_interval;
        self.cache.expire(now, monotonic);
        self.pulling
            .retain(|_, (at, _)| monotonic.saturating_sub(*at) <= PULL_WINDOW);
        self.digests.reclaim_idle();
        self.responses.reclaim_idle();
        self.pushes.reclaim_idle();
        self.pull_now(monotonic);
    }

    /// Puts back a message read from storage (verified again; not announced as new) that
    /// first arrived at `received_at`, so its age limit keeps counting from then.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] if it no longer verifies (expired while the node was down).
    pub fn restore(
        &mut self,
        message: Vec<u8>,
        received_at: UnixMillis,
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<MessageId, PublishError> {
        let verified = GossipMessage::decode(&message, now)
            .map_err(|e| PublishError::Invalid(e.to_string()))?;
        let id = MessageId(verified.id().0);
        let age = Duration::from_millis(now.0.saturating_sub(received_at.0));
        self.cache.insert(
            id,
            message,
            verified.expires_at(),
            monotonic.saturating_sub(age),
        );
        Ok(id)
    }
}

/// Packs messages into MESSAGES frames within the frame size and count limits.
fn pack(messages: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut size = 4;
    for m in messages {
        if !current.is_empty()
            && (size + 4 + m.len() > MAX_FRAME_LEN / 2 || current.len() == MAX_MESSAGES_PER_FRAME)
        {
            frames.push(Frame::Messages(std::mem::take(&mut current)).encode());
            size = 4;
        }
        size += 4 + m.len();
        current.push(m.to_vec());
    }
    if !current.is_empty() {
        frames.push(Frame::Messages(current).encode());
    }
    frames
}
