//! The DHT node core: routing table, record store and lookups joined to the wire messages
//! (sans-IO). Bytes from peers and the time go in; bytes for peers and events come out of
//! [`Dht::poll_output`]. A driver moves the bytes over connections; the simulator moves them
//! with virtual latency and loss.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};

use crate::key::Key;
use crate::lookup::{Lookup, Outcome, REQUEST_TIMEOUT};
use crate::message::{Body, Message, StoreStatus, WireContact};
use crate::metrics::{DhtMetrics, Gauges, LookupKind};
use crate::record::{Record, key_of};
use crate::routing::{Contact, Insert, K, RoutingTable};
use crate::store::{Change, RecordStore, Rejected, StoreConfig};

/// Requests this node waits on at once; more lookups wait their turn.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Requests in flight to one peer at once.
pub const MAX_REQUESTS_PER_PEER: usize = 8;
/// Lookups running at once.
pub const MAX_LOOKUPS: usize = 64;
/// Outputs' room kept after the outbox empties.
const OUTBOX_KEPT: usize = 8;
/// How often a bucket no lookup went through is refreshed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// How often [`Dht::tick`] does housekeeping (bucket refresh, record expiry, reclaiming idle
/// rate-limiter state); timeouts are handled on every tick.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a record rests before this node offers it again to the k closest nodes it can
/// find (one hour, as in Kademlia). A STORE of the same record from another node restarts
/// the wait, so of the k holders usually one republishes per interval, not all k.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(3600);
/// Records republished per [`MAINTENANCE_INTERVAL`] at most (so at most 1,920 an hour with
/// the defaults): republishing never crowds out the node's own lookups.
pub const REPUBLISH_BATCH: usize = 32;

/// Settings of a [`Dht`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Record store limits.
    pub store: StoreConfig,
    /// Bucket refresh interval.
    pub refresh_interval: Duration,
    /// Republish interval.
    pub republish_interval: Duration,
    /// Records republished per maintenance round at most.
    pub republish_batch: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            store: StoreConfig::default(),
            refresh_interval: REFRESH_INTERVAL,
            republish_interval: REPUBLISH_INTERVAL,
            republish_batch: REPUBLISH_BATCH,
        }
    }
}

/// Identifies a lookup or a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A FIND_NODE or FIND_VALUE finished.
    Found {
        /// Which.
        id: QueryId,
        /// What it found.
        outcome: Outcome,
    },
    /// A put finished: the record was offered to the closest nodes found.
    Put {
        /// Which.
        id: QueryId,
        /// Nodes that answered STORE with "stored".
        stored: usize,
        /// Nodes it was offered to.
        offered: usize,
    },
    /// A peer sent something that is not a valid message (count it against the peer).
    BadMessage {
        /// Who.
        from: PeerId,
    },
}

/// What the core wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to `to` (at `address` if no link is open).
    Send {
        /// The peer.
        to: PeerId,
        /// Where it can be reached, if known.
        address: String,
        /// A DHT message.
        bytes: Vec<u8>,
    },
    /// Report an event.
    Event(Event),
}

#[derive(Debug)]
enum Purpose {
    Ping,
    Lookup(QueryId),
    Store(QueryId),
}

#[derive(Debug)]
struct Pending {
    to: PeerId,
    sent: Duration,
    purpose: Purpose,
}

#[derive(Debug)]
enum Task {
    Find {
        lookup: Lookup,
        value: bool,
        started: Duration,
    },
    /// Looking up the closest nodes, then storing `record` there. A republish is `quiet`:
    /// nobody waits for its event.
    Put {
        lookup: Lookup,
        record: Vec<u8>,
        started: Duration,
        quiet: bool,
    },
    /// STOREs sent, waiting for answers.
    Storing {
        waiting: usize,
        stored: usize,
        offered: usize,
        quiet: bool,
    },
}

/// A DHT node.
#[derive(Debug)]
pub struct Dht {
    local: PeerId,
    config: DhtConfig,
    table: RoutingTable,
    store: RecordStore,
    // Ordered maps: iteration order (ticks, timeouts) is the same in every run, which keeps
    // simulations deterministic.
    tasks: BTreeMap<QueryId, Task>,
    pending: BTreeMap<u64, Pending>,
    // A BTreeMap gives its memory back as it empties (a HashMap keeps its peak capacity,
    // which across a million simulated nodes adds up).
    per_peer: BTreeMap<PeerId, usize>,
    next_request: u64,
    next_query: u64,
    outbox: VecDeque<Output>,
    maintained: Duration,
    metrics: Option<DhtMetrics>,
    reported: Gauges,
    /// The latest monotonic time passed in.
    clock: Duration,
    /// When [`Dht::tick`] last ran.
    ticked: Duration,
}

impl Dht {
    /// A node for `local` with an empty routing table and store.
    pub fn new(local: PeerId, config: DhtConfig) -> Self {
        Self {
            local,
            config,
            table: RoutingTable::new(local),
            store: RecordStore::new(config.store),
            tasks: BTreeMap::new(),
            pending: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            next_request: 1,
            next_query: 1,
            outbox: VecDeque::new(),
            maintained: Duration::ZERO,
            metrics: None,
            reported: Gauges::default(),
            clock: Duration::ZERO,
            ticked: Duration::ZERO,
        }
    }

    /// When [`Dht::tick`] next has work: the earliest request timeout, a lookup waiting for
    /// room to send, or the next maintenance round. Calling `tick` more often is harmless; a
    /// driver or simulator may sleep until then (any input in between may move it earlier).
    pub fn next_deadline(&self) -> Duration {
        let maintenance = self.maintained + MAINTENANCE_INTERVAL;
        // Request ids grow with time, so the first pending request is the oldest.
        let timeout = self
            .pending
            .first_key_value()
            .map_or(maintenance, |(_, p)| p.sent + REQUEST_TIMEOUT);
        let waiting = if self.tasks.is_empty() {
            maintenance
        } else {
            // A lookup held back by the in-flight limits retries a second after the last
            // tick (not after the last input: steady traffic must not postpone it).
            self.ticked + Duration::from_secs(1)
        };
        maintenance.min(timeout).min(waiting)
    }

    /// Reports to these instruments from now on (see [`crate::metrics`]). Without, the core
    /// reports nothing (a simulator runs a million cores without).
    pub fn set_metrics(&mut self, metrics: DhtMetrics) {
        self.metrics = Some(metrics);
        self.report();
    }

    /// Starts recording changes to the stored records for [`Dht::take_changes`]: what a
    /// driver mirrors to persistent storage.
    pub fn track_changes(&mut self) {
        self.store.track_changes();
    }

    /// Changes to the stored records since the last call (see [`Dht::track_changes`]).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.store.take_changes()
    }

    /// Puts back a record read from persistent storage, charged to `owner` as before; checked
    /// like a STORE (size, quota, signature, expiry, sequence) but not rate limited.
    ///
    /// # Errors
    /// [`Rejected`] if it is no longer valid (for example, it expired while the node was
    /// down).
    pub fn restore_record(
        &mut self,
        owner: PeerId,
        record: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<Key, Rejected> {
        let r = self.store.load(owner, record, now, monotonic);
        self.report();
        r
    }

    fn gauges(&self) -> Gauges {
        let stats = self.store.stats();
        Gauges {
            bytes: self.store.total_bytes() as u64,
            records: self.store.len() as u64,
            evicted: stats.evicted,
            expired: stats.expired,
        }
    }

    /// Reports changes of the store's levels to the metrics.
    fn report(&mut self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let now = self.gauges();
        m.store_changed(&self.reported, &now);
        self.reported = now;
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outbox.pop_front();
        if out.is_none() && self.outbox.capacity() > OUTBOX_KEPT {
            // A burst (a put to k nodes) leaves a large buffer behind; give it back.
            self.outbox.shrink_to(OUTBOX_KEPT);
        }
        out
    }

    /// Learns a contact (a bootstrap peer, or one met on another protocol).
    pub fn add_contact(&mut self, peer: PeerId, address: &str, monotonic: Duration) {
        self.learn(Contact::new(peer, address, monotonic), monotonic);
    }

    fn learn(&mut self, contact: Contact, monotonic: Duration) {
        if let Insert::Full { check } = self.table.insert(contact) {
            // Ask the least recently seen contact whether it is still there.
            let address = self
                .table
                .get(&check)
                .map(|c| c.address.clone())
                .unwrap_or_default();
            self.request(check, &address, Body::Ping, Purpose::Ping, monotonic);
        }
    }

    fn query_id(&mut self) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        id
    }

    /// Starts a FIND_NODE for `target`; ends with [`Event::Found`].
    pub fn find_node(&mut self, target: Key, monotonic: Duration) -> QueryId {
        self.start(target, false, None, monotonic)
    }

    /// Starts a FIND_VALUE for `key`; ends with [`Event::Found`] (a verified record in
    /// `outcome.value` if one was found).
    pub fn find_value(&mut self, key: Key, monotonic: Duration) -> QueryId {
        self.start(key, true, None, monotonic)
    }

    /// Stores `record` (a signed record's bytes) here and at the k closest nodes to its key;
    /// ends with [`Event::Put`].
    ///
    /// # Errors
    /// [`Rejected`] if the record is not valid for this node's own store.
    pub fn put(
        &mut self,
        record: Vec<u8>,
        now: UnixMillis,
        monotonic: Duration,
    ) -> Result<QueryId, Rejected> {
        let key = self.store.put(self.local, &record, now, monotonic);
        self.report();
        Ok(self.start(key?, false, Some((record, false)), monotonic))
    }

    /// `record`: what to store at the end, and whether quietly (a republish).
    fn start(
        &mut self,
        target: Key,
        value: bool,
        record: Option<(Vec<u8>, bool)>,
        monotonic: Duration,
    ) -> QueryId {
        self.clock = self.clock.max(monotonic);
        let id = self.query_id();
        let lookup = Lookup::new(self.local, target, self.table.closest(&target, K));
        self.table.touch(&target, monotonic);
        let started = monotonic;
        let task = match record {
            Some((record, quiet)) => Task::Put {
                lookup,
                record,
                started,
                quiet,
            },
            None => Task::Find {
                lookup,
                value,
                started,
            },
        };
        if self.tasks.len() >= MAX_LOOKUPS {
            // Bounded: report an empty result at once rather than queue without limit.
            self.finish(id, task, monotonic);
            return id;
        }
        self.tasks.insert(id, task);
        self.drive(id, monotonic);
        id
    }

    /// Sends a request to `to` at `address` (lookup candidates are not in the table yet, so
    /// the caller says where).
    fn request(
        &mut self,
        to: PeerId,
        address: &str,
        body: Body,
        purpose: Purpose,
        monotonic: Duration,
    ) -> bool {
        let busy = self.per_peer.get(&to).copied().unwrap_or(0);
        if self.pending.len() >= MAX_PENDING_REQUESTS || busy >= MAX_REQUESTS_PER_PEER {
            return false;
        }
        let request = self.next_request;
        self.next_request += 1;
        self.outbox.push_back(Output::Send {
            to,
            address: address.to_string(),
            bytes: Message { request, body }.encode(),
        });
        self.pending.insert(
            request,
            Pending {
                to,
                sent: monotonic,
                purpose,
            },
        );
        *self.per_peer.entry(to).or_default() += 1;
        true
    }

    fn settle(&mut self, request: u64) -> Option<Pending> {
        let p = self.pending.remove(&request)?;
        if let Some(n) = self.per_peer.get_mut(&p.to) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&p.to);
            }
        }
        Some(p)
    }

    /// Sends what the lookup of `id` wants sent, or finishes it.
    fn drive(&mut self, id: QueryId, monotonic: Duration) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let (lookup, value) = match task {
            Task::Find { lookup, value, .. } => (lookup, *value),
            Task::Put { lookup, .. } => (lookup, false),
            Task::Storing { .. } => return,
        };
        let target = lookup.target();
        let asks = lookup.next(monotonic);
        let done = lookup.is_done();
        for contact in asks {
            let body = if value {
                Body::FindValue(target)
            } else {
                Body::FindNode(target)
            };
            if !self.request(
                contact.peer,
                &contact.address,
                body,
                Purpose::Lookup(id),
                monotonic,
            ) && let Some(Task::Find { lookup, .. } | Task::Put { lookup, .. }) =
                self.tasks.get_mut(&id)
            {
                lookup.on_failure(&contact.peer);
            }
        }
        if done && let Some(task) = self.tasks.remove(&id) {
            self.after_lookup(id, task, monotonic);
        }
    }

    fn after_lookup(&mut self, id: QueryId, task: Task, monotonic: Duration) {
        match task {
            Task::Put {
                lookup,
                record,
                started,
                quiet,
            } => {
                let outcome = lookup.outcome();
                // Republishing is the node's own housekeeping, not a user's put.
                if let Some(m) = self.metrics.as_ref().filter(|_| !quiet) {
                    m.lookup(
                        LookupKind::Put,
                        monotonic.saturating_sub(started),
                        outcome.hops,
                    );
                }
                let closest = outcome.closest;
                let mut offered = 0;
                for c in closest {
                    if self.request(
                        c.peer,
                        &c.address,
                        Body::Store(record.clone()),
                        Purpose::Store(id),
                        monotonic,
                    ) {
                        offered += 1;
                    }
                }
                if offered == 0 {
                    if !quiet {
                        self.emit(Event::Put {
                            id,
                            stored: 0,
                            offered: 0,
                        });
                    }
                } else {
                    self.tasks.insert(
                        id,
                        Task::Storing {
                            waiting: offered,
                            stored: 0,
                            offered,
                            quiet,
                        },
                    );
                }
            }
            task => self.finish(id, task, monotonic),
        }
    }

    fn finish(&mut self, id: QueryId, task: Task, monotonic: Duration) {
        let event = match task {
            Task::Find {
                lookup,
                value,
                started,
            } => {
                let outcome = lookup.outcome();
                if let Some(m) = &self.metrics {
                    let kind = if value {
                        LookupKind::FindValue
                    } else {
                        LookupKind::FindNode
                    };
                    m.lookup(kind, monotonic.saturating_sub(started), outcome.hops);
                }
                Event::Found { id, outcome }
            }
            // A republish: nobody waits for it.
            Task::Put { quiet: true, .. } | Task::Storing { quiet: true, .. } => return,
            // A put refused before its lookup ran (too many lookups at once).
            Task::Put { .. } => Event::Put {
                id,
                stored: 0,
                offered: 0,
            },
            Task::Storing {
                stored, offered, ..
            } => Event::Put {
                id,
                stored,
                offered,
            },
        };
        self.emit(event);
    }

    fn emit(&mut self, event: Event) {
        self.outbox.push_back(Output::Event(event));
    }

    /// Handles a message from `from` (authenticated by the link), reachable at `address`.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        address: &str,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) {
        self.clock = self.clock.max(monotonic);
        self.handle(from, address, bytes, now, monotonic);
        self.report();
    }

    fn handle(
        &mut self,
        from: PeerId,
        address: &str,
        bytes: &[u8],
        now: UnixMillis,
        monotonic: Duration,
    ) {
        let Ok(msg) = Message::decode(bytes) else {
            if let Some(m) = &self.metrics {
                m.bad_message();
            }
            self.emit(Event::BadMessage { from });
            return;
        };
        let answer = |body| Output::Send {
            to: from,
            address: address.to_string(),
            bytes: Message {
                request: msg.request,
                body,
            }
            .encode(),
        };
        match msg.body {
            Body::Ping => {
                self.learn(Contact::new(from, address, monotonic), monotonic);
                self.outbox.push_back(answer(Body::Pong));
            }
            Body::FindNode(target) => {
                self.learn(Contact::new(from, address, monotonic), monotonic);
                let nodes = self.wire_closest(&target, &from);
                self.outbox.push_back(answer(Body::Nodes(nodes)));
            }
            Body::FindValue(key) => {
                self.learn(Contact::new(from, address, monotonic), monotonic);
                let body = match self.store.get(&key, now) {
                    Some(record) => Body::Value(record.to_vec()),
                    None => Body::Nodes(self.wire_closest(&key, &from)),
                };
                self.outbox.push_back(answer(body));
            }
            Body::Store(record) => {
                let result = self.store.put(from, &record, now, monotonic);
                if let Some(m) = &self.metrics {
                    match &result {
                        Ok(_) => {
                            m.store_result("stored");
                            let quota = self
                                .config
                                .store
                                .per_peer_bytes
                                .min(self.config.store.total_bytes)
                                .max(1);
                            #[allow(clippy::cast_precision_loss)] // a ratio for a histogram
                            m.quota_utilisation(self.store.usage_of(&from) as f64 / quota as f64);
                        }
                        Err(e) => m.store_result(e.reason()),
                    }
                }
                let status = match result {
                    Ok(_) => StoreStatus::Stored,
                    Err(Rejected::TooLarge { .. }) => StoreStatus::TooLarge,
                    Err(Rejected::RateLimited) => StoreStatus::RateLimited,
                    Err(Rejected::QuotaExceeded { .. }) => StoreStatus::Quota,
                    Err(Rejected::Stale { .. }) => StoreStatus::Stale,
                    Err(_) => StoreStatus::Invalid,
                };
                self.learn(Contact::new(from, address, monotonic), monotonic);
                self.outbox.push_back(answer(Body::StoreResult(status)));
            }
            Body::Pong | Body::Nodes(_) | Body::Value(_) | Body::StoreResult(_) => {
                self.on_answer(from, address, msg.request, msg.body, now, monotonic);
            }
        }
    }

    fn wire_closest(&self, target: &Key, asker: &PeerId) -> Vec<WireContact> {
        self.table
            .closest(target, K + 1)
            .into_iter()
            .filter(|c| c.peer != *asker)
            .take(K)
            .map(|c| WireContact {
                peer: c.peer,
                address: c.address,
            })
            .collect()
    }

    fn on_answer(
        &mut self,
        from: PeerId,
        address: &str,
        request: u64,
        body: Body,
        now: UnixMillis,
        monotonic: Duration,
    ) {
        // Only answers to requests we sent, from the peer we sent them to.
        if self.pending.get(&request).is_none_or(|p| p.to != from) {
            return;
        }
        let Some(pending) = self.settle(request) else {
            return;
        };
        self.learn(Contact::new(from, address, monotonic), monotonic);
        match pending.purpose {
            Purpose::Ping => {}
            Purpose::Lookup(id) => {
                if let Some(Task::Find { lookup, .. } | Task::Put { lookup, .. }) =
                    self.tasks.get_mut(&id)
                {
                    match body {
                        Body::Nodes(nodes) => {
                            let contacts = nodes
                                .into_iter()
                                .map(|n| Contact::new(n.peer, &n.address, monotonic))
                                .collect();
                            lookup.on_nodes(&from, contacts);
                        }
                        Body::Value(bytes) => {
                            // Believed only if it verifies and is the record asked for.
                            let good = Record::decode(&bytes, now)
                                .is_ok_and(|r| key_of(&r) == lookup.target());
                            if good {
                                lookup.on_value(&from, bytes);
                            } else {
                                lookup.on_failure(&from);
                            }
                        }
                        _ => lookup.on_failure(&from),
                    }
                }
                self.drive(id, monotonic);
            }
            Purpose::Store(id) => {
                if let Some(Task::Storing {
                    waiting, stored, ..
                }) = self.tasks.get_mut(&id)
                {
                    *waiting -= 1;
                    if body == Body::StoreResult(StoreStatus::Stored) {
                        *stored += 1;
                    }
                    if *waiting == 0
                        && let Some(task) = self.tasks.remove(&id)
                    {
                        self.finish(id, task, monotonic);
                    }
                }
            }
        }
    }

    /// Time passes: requests time out and lookups move on; every [`MAINTENANCE_INTERVAL`],
    /// stale buckets are refreshed, expired records go and idle rate-limiter state is
    /// reclaimed. Call it about once a second.
    pub fn tick(&mut self, now: UnixMillis, monotonic: Duration) {
        self.clock = self.clock.max(monotonic);
        self.ticked = self.ticked.max(monotonic);
        self.on_tick(now, monotonic);
        self.report();
    }

    fn on_tick(&mut self, now: UnixMillis, monotonic: Duration) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| monotonic.saturating_sub(p.sent) >= REQUEST_TIMEOUT)
            .map(|(r, _)| *r)
            .collect();
        for request in expired {
            let Some(p) = self.settle(request) else {
                continue;
            };
            self.table.on_failure(&p.to);
            match p.purpose {
                Purpose::Ping => {}
                Purpose::Lookup(id) => {
                    if let Some(Task::Find { lookup, .. } | Task::Put { lookup, .. }) =
                        self.tasks.get_mut(&id)
                    {
                        lookup.on_timeout(&p.to);
                    }
                }
                Purpose::Store(id) => {
                    if let Some(Task::Storing { waiting, .. }) = self.tasks.get_mut(&id) {
                        *waiting -= 1;
                        if *waiting == 0
                            && let Some(task) = self.tasks.remove(&id)
                        {
                            self.finish(id, task, monotonic);
                        }
                    }
                }
            }
        }
        let ids: Vec<QueryId> = self.tasks.keys().copied().collect();
        for id in ids {
            self.drive(id, monotonic);
        }
        if monotonic.saturating_sub(self.maintained) < MAINTENANCE_INTERVAL {
            return;
        }
        self.maintained = monotonic;
        for bucket in self
            .table
            .stale_buckets(monotonic, self.config.refresh_interval)
        {
            // Any key in the bucket will do; derived rather than drawn so that runs replay
            // exactly in the simulator.
            let stamp = monotonic.as_nanos().to_le_bytes();
            #[allow(clippy::cast_possible_truncation)] // bucket < 256
            let salt = mesh_crypto::hash::domain_hash(
                "mesh/dht-refresh/v1",
                &[&self.table.local_key().0, &[bucket as u8], &stamp],
            );
            let target = self.table.local_key().in_bucket(bucket, salt.0);
            self.find_node(target, monotonic);
        }
        self.store.expire(now);
        self.store.reclaim_idle(monotonic);
        self.republish(now, monotonic);
    }

    /// Offers records that have rested for the republish interval to the k closest nodes,
    /// a batch at a time, leaving room for the node's own lookups.
    fn republish(&mut self, now: UnixMillis, monotonic: Duration) {
        if self.table.is_empty() {
            return;
        }
        let room = (MAX_LOOKUPS / 2).saturating_sub(self.tasks.len());
        let batch = self.config.republish_batch.min(room);
        let due =
            self.store
                .due_for_republish(now, monotonic, self.config.republish_interval, batch);
        for (key, record) in due {
            self.start(key, false, Some((record, true)), monotonic);
        }
    }
}
