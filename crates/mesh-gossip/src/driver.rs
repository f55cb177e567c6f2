//! The async driver: runs a [`Gossip`] core on a [`Runtime`] over a connection [`Pool`], keeps
//! its message cache in a [`KvStore`] (so a restarted node still serves pulls), reports to
//! opentelemetry, and hands new messages to the application.
//!
//! One task owns the core: it takes GOSSIP frames from the pool and commands from
//! [`GossipHandle`]s, ticks the core at its deadline, sends through the pool (bounded and timed
//! sends), writes cache changes before the next input, and delivers each new message once on
//! the channel [`start`] returns (bounded: a reader that falls behind slows gossip down rather
//! than growing memory).

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::kv::{Batch, Commit, KvError, KvStore, read_table};
use mesh_platform::runtime::Runtime;
use mesh_transport::pool::{Incoming, Pool};
use mesh_transport::{Frame as LinkFrame, ProtocolId, Transport};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, UpDownCounter};
use tokio::sync::{mpsc, oneshot};

use crate::cache::Change;
use crate::message::MessageId;
use crate::node::{Event, Gossip, GossipConfig, GossipStats, Output, PublishError};

/// The message cache: `id [32] -> version u8 = 1 | received_at u64 LE (Unix ms) | signed
/// message`.
pub const MESSAGES_TABLE: &str = "gossip/messages";
/// The tables the gossip driver writes, for the node's `Schema`.
pub const TABLES: [&str; 1] = [MESSAGES_TABLE];
/// Version byte of the stored layout.
pub const LAYOUT_VERSION: u8 = 1;
/// Commands waiting at most.
pub const COMMAND_QUEUE: usize = 256;
/// New messages waiting in the channel to the application at most.
pub const DELIVERY_QUEUE: usize = 1024;
/// New messages held back while that channel is full, at most; beyond, the oldest are
/// dropped and counted (`mesh.gossip.deliveries.dropped`). The driver never waits on the
/// application, so a slow reader cannot stall gossip, or the links it shares with the DHT.
pub const DELIVERY_BACKLOG: usize = 4096;
/// Sends in flight at most (more are dropped: gossip heals by pull).
pub const MAX_SENDS_IN_FLIGHT: usize = 256;
/// How long one send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the driver sleeps between ticks.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);
const PAGE: usize = 256;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver has stopped.
    #[error("the gossip driver has stopped")]
    Stopped,
    /// The message was refused.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] KvError),
}

/// A new message for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its id.
    pub id: MessageId,
    /// Its verified author.
    pub author: PeerId,
    /// Its topic.
    pub topic: Vec<u8>,
    /// Its body.
    pub body: Vec<u8>,
}

/// A snapshot of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Messages cached.
    pub messages: usize,
    /// Bytes cached.
    pub bytes: usize,
    /// Neighbours.
    pub neighbours: usize,
    /// Counters.
    pub stats: GossipStats,
}

enum Command {
    Publish(Vec<u8>, oneshot::Sender<Result<MessageId, DriverError>>),
    AddNeighbour(PeerId, String),
    RemoveNeighbour(PeerId),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
}

/// Talks to a running driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    tx: mpsc::Sender<Command>,
}

impl GossipHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Publishes a signed message (see [`crate::GossipMessage`]).
    ///
    /// # Errors
    /// [`DriverError::Publish`] if it does not verify or is known, or
    /// [`DriverError::Stopped`].
    pub async fn publish(&self, message: Vec<u8>) -> Result<MessageId, DriverError> {
        self.call(|tx| Command::Publish(message, tx)).await?
    }

    /// A link to `peer` is up: it becomes a neighbour, and the node pulls from it.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn add_neighbour(&self, peer: PeerId, address: &str) -> Result<(), DriverError> {
        self.tx
            .send(Command::AddNeighbour(peer, address.to_string()))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// The link to `peer` is down.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn remove_neighbour(&self, peer: PeerId) -> Result<(), DriverError> {
        self.tx
            .send(Command::RemoveNeighbour(peer))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Cache size, neighbours, counters.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn status(&self) -> Result<Status, DriverError> {
        self.call(Command::Status).await
    }

    /// Stops the driver (the cache is written as it changes, so nothing is left to save).
    ///
    /// # Errors
    /// [`DriverError::Stopped`] if it had stopped already.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.call(Command::Shutdown).await
    }
}

/// The gossip instruments (opentelemetry API; no peer id in any attribute).
///
/// `mesh.gossip.messages` (by `path`: push, pull), `mesh.gossip.duplicates`,
/// `mesh.gossip.bad_input` (by `reason`: `frame`, `message`, `digest_rate`, `unsolicited`),
/// `mesh.gossip.digests.sent`, `mesh.gossip.digests.refused`, `mesh.gossip.response.bytes`
/// (by `direction`: sent, received), `mesh.gossip.cache.messages`, `mesh.gossip.cache.bytes`,
/// `mesh.gossip.deliveries.dropped`.
#[derive(Debug, Clone)]
pub struct GossipMetrics {
    messages: Counter<u64>,
    duplicates: Counter<u64>,
    bad_input: Counter<u64>,
    digests_sent: Counter<u64>,
    digests_refused: Counter<u64>,
    response_bytes: Counter<u64>,
    cache_messages: UpDownCounter<i64>,
    cache_bytes: UpDownCounter<i64>,
    deliveries_dropped: Counter<u64>,
}

impl GossipMetrics {
    /// Instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let m = Self {
            messages: meter
                .u64_counter("mesh.gossip.messages")
                .with_description("New messages received, by path")
                .build(),
            duplicates: meter
                .u64_counter("mesh.gossip.duplicates")
                .with_description("Messages received that were already known")
                .build(),
            bad_input: meter
                .u64_counter("mesh.gossip.bad_input")
                .with_description("Frames and messages refused, by reason")
                .build(),
            digests_sent: meter.u64_counter("mesh.gossip.digests.sent").build(),
            digests_refused: meter
                .u64_counter("mesh.gossip.digests.refused")
                .with_description("Digests refused for the per-peer rate")
                .build(),
            response_bytes: meter
                .u64_counter("mesh.gossip.response.bytes")
                .with_unit("By")
                .build(),
            cache_messages: meter
                .i64_up_down_counter("mesh.gossip.cache.messages")
                .build(),
            cache_bytes: meter
                .i64_up_down_counter("mesh.gossip.cache.bytes")
                .with_unit("By")
                .build(),
            deliveries_dropped: meter
                .u64_counter("mesh.gossip.deliveries.dropped")
                .with_description("New messages dropped because the application did not read")
                .build(),
        };
        // Every series exists from the start, at zero: for an alert, absent is not zero.
        for path in ["push", "pull"] {
            m.messages.add(0, &[KeyValue::new("path", path)]);
        }
        for direction in ["sent", "received"] {
            m.response_bytes
                .add(0, &[KeyValue::new("direction", direction)]);
        }
        m.duplicates.add(0, &[]);
        m.bad_input.add(0, &[]);
        m.digests_sent.add(0, &[]);
        m.digests_refused.add(0, &[]);
        m.cache_messages.add(0, &[]);
        m.cache_bytes.add(0, &[]);
        m.deliveries_dropped.add(0, &[]);
        m
    }

    fn report(&self, before: &(GossipStats, usize, usize), after: &(GossipStats, usize, usize)) {
        let (b, a) = (&before.0, &after.0);
        let new_push = a.pushed - b.pushed;
        let pulled = a.pulled - b.pulled;
        if new_push > 0 {
            self.messages
                .add(new_push, &[KeyValue::new("path", "push")]);
        }
        if pulled > 0 {
            self.messages.add(pulled, &[KeyValue::new("path", "pull")]);
        }
        self.duplicates.add(a.duplicates - b.duplicates, &[]);
        self.digests_sent.add(a.digests_sent - b.digests_sent, &[]);
        self.digests_refused
            .add(a.digests_refused - b.digests_refused, &[]);
        self.response_bytes.add(
            a.response_bytes_sent - b.response_bytes_sent,
            &[KeyValue::new("direction", "sent")],
        );
        self.response_bytes.add(
            a.response_bytes_received - b.response_bytes_received,
            &[KeyValue::new("direction", "received")],
        );
        let delta = |x: usize, y: usize| {
            i64::try_from(y).unwrap_or(i64::MAX) - i64::try_from(x).unwrap_or(i64::MAX)
        };
        self.cache_messages.add(delta(before.1, after.1), &[]);
        self.cache_bytes.add(delta(before.2, after.2), &[]);
    }
}

/// How to start a driver.
#[derive(Default)]
pub struct DriverOptions {
    /// The core's settings.
    pub config: GossipConfig,
    /// Seed of the core's random choices; 0 (the default) draws one from the operating
    /// system, which is what a real node wants (a fixed seed replays a run).
    pub seed: u64,
    /// Where the cache is kept (`None`: memory only).
    pub store: Option<Arc<dyn KvStore>>,
    /// Instruments (`None`: none).
    pub metrics: Option<GossipMetrics>,
}

impl std::fmt::Debug for DriverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverOptions")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads the stored cache back into `gossip` (each message verified again; the expired and
/// the unreadable are deleted). Returns how many came back.
///
/// # Errors
/// The store's [`KvError`].
pub async fn load(
    store: &dyn KvStore,
    gossip: &mut Gossip,
    now: UnixMillis,
    monotonic: Duration,
) -> Result<usize, KvError> {
    let mut back = 0;
    let mut gone = Batch::new();
    for (key, value) in read_table(store, MESSAGES_TABLE, PAGE).await? {
        let ok = match (value.first(), value.get(1..9), value.get(9..)) {
            (Some(&LAYOUT_VERSION), Some(at), Some(message)) => {
                let at = u64::from_le_bytes(at.try_into().unwrap_or([0; 8]));
                gossip
                    .restore(message.to_vec(), UnixMillis(at), now, monotonic)
                    .is_ok_and(|id| id.0.as_slice() == key.as_slice())
            }
            _ => false,
        };
        if ok {
            back += 1;
        } else {
            gone.delete(MESSAGES_TABLE, key);
        }
    }
    // Restored rows are stored already; rows the cache evicted while filling up are not
    // wanted any more.
    for change in gossip.take_changes() {
        if let Change::Removed(id) = change {
            gone.delete(MESSAGES_TABLE, id.0.to_vec());
        }
    }
    if !gone.is_empty() {
        store.apply(gone).await?;
    }
    Ok(back)
}

/// Writes cache changes in batches of at most 1,000 (each atomic). `now` and `monotonic` are
/// the same instant on both clocks (arrival times are stored as Unix time).
///
/// # Errors
/// The store's [`KvError`].
pub async fn save_changes(
    store: &dyn KvStore,
    changes: &[Change],
    now: UnixMillis,
    monotonic: Duration,
) -> Result<(), KvError> {
    for chunk in changes.chunks(1000) {
        let mut batch = Batch::new();
        // A cache: what a crash loses, neighbours supply again by pull. Not waiting for the
        // disk on every message is what keeps relaying fast (see `Batch::set_commit`).
        batch.set_commit(Commit::Fast);
        for c in chunk {
            match c {
                Change::Put {
                    id,
                    message,
                    received,
                } => {
                    let age = u64::try_from(monotonic.saturating_sub(*received).as_millis())
                        .unwrap_or(u64::MAX);
                    let mut v = Vec::with_capacity(9 + message.len());
                    v.push(LAYOUT_VERSION);
                    v.extend_from_slice(&now.0.saturating_sub(age).to_le_bytes());
                    v.extend_from_slice(message);
                    batch.put(MESSAGES_TABLE, id.0.to_vec(), v);
                }
                Change::Removed(id) => {
                    batch.delete(MESSAGES_TABLE, id.0.to_vec());
                }
            }
        }
        store.apply(batch).await?;
    }
    Ok(())
}

/// Loads the cache, subscribes to GOSSIP frames on `pool`, and runs the driver on `runtime`.
/// Returns the handle and the channel of new messages.
///
/// # Errors
/// [`DriverError::Storage`] if the cache cannot be read.
pub async fn start<T, R>(
    local: PeerId,
    pool: Pool<T, R>,
    runtime: R,
    options: DriverOptions,
) -> Result<(GossipHandle, mpsc::Receiver<Delivered>), DriverError>
where
    T: Transport + 'static,
    R: Runtime,
{
    let seed = if options.seed == 0 {
        let mut b = [0u8; 8];
        mesh_crypto::random_fill(&mut b);
        u64::from_le_bytes(b)
    } else {
        options.seed
    };
    let mut gossip = Gossip::new(local, options.config, seed);
    if let Some(store) = &options.store {
        gossip.track_changes();
        let n = load(
            store.as_ref(),
            &mut gossip,
            runtime.unix_time(),
            runtime.monotonic(),
        )
        .await?;
        tracing::debug!(messages = n, "gossip cache restored");
    }
    let incoming = pool.subscribe(ProtocolId::GOSSIP);
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (deliver, delivered) = mpsc::channel(DELIVERY_QUEUE);
    let reported = (gossip.stats(), gossip.cache().len(), gossip.cache().bytes());
    if let Some(m) = &options.metrics {
        m.report(&(GossipStats::default(), 0, 0), &reported);
    }
    let driver = Driver {
        gossip,
        pool,
        runtime: runtime.clone(),
        store: options.store,
        metrics: options.metrics,
        reported,
        deliver,
        backlog: std::collections::VecDeque::new(),
        sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS_IN_FLIGHT)),
        unsaved: Vec::new(),
        unsynced_since: None,
    };
    runtime.spawn(Box::pin(driver.run(incoming, commands)));
    Ok((GossipHandle { tx }, delivered))
}

struct Driver<T: Transport, R: Runtime> {
    gossip: Gossip,
    pool: Pool<T, R>,
    runtime: R,
    store: Option<Arc<dyn KvStore>>,
    metrics: Option<GossipMetrics>,
    reported: (GossipStats, usize, usize),
    deliver: mpsc::Sender<Delivered>,
    /// New messages waiting for room in `deliver` (bounded by `DELIVERY_BACKLOG`).
    backlog: std::collections::VecDeque<Delivered>,
    sends: Arc<tokio::sync::Semaphore>,
    unsaved: Vec<Change>,
    /// When the first cache write not yet made durable happened (they are fast batches).
    unsynced_since: Option<Duration>,
}

/// How long fast cache writes may wait before the driver makes them durable.
const SYNC_AFTER: Duration = Duration::from_secs(1);

impl<T: Transport + 'static, R: Runtime> Driver<T, R> {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            self.flush().await;
            let (unix, now) = (self.runtime.unix_time(), self.runtime.monotonic());
            let mut next = self.gossip.next_deadline().min(now + MAX_SLEEP);
            if let Some(since) = self.unsynced_since {
                next = next.min(since + SYNC_AFTER);
            }
            let deliver = self.deliver.clone();
            let waiting = !self.backlog.is_empty();
            tokio::select! {
                permit = deliver.reserve(), if waiting => {
                    match (permit, self.backlog.pop_front()) {
                        (Ok(permit), Some(d)) => permit.send(d),
                        // The application dropped its receiver: nobody reads any more.
                        (Err(_), _) => self.backlog.clear(),
                        (Ok(_), None) => {}
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    match command {
                        Command::Publish(m, done) => {
                            let _ = done.send(self.gossip.publish(m, unix, now).map_err(Into::into));
                        }
                        Command::AddNeighbour(p, a) => self.gossip.add_neighbour(p, &a, now),
                        Command::RemoveNeighbour(p) => self.gossip.remove_neighbour(&p),
                        Command::Status(done) => {
                            let _ = done.send(Status {
                                messages: self.gossip.cache().len(),
                                bytes: self.gossip.cache().bytes(),
                                neighbours: self.gossip.neighbours().count(),
                                stats: self.gossip.stats(),
                            });
                        }
                        Command::Shutdown(done) => {
                            self.flush().await;
                            self.sync().await;
                            let _ = done.send(());
                            return;
                        }
                    }
                }
                frame = incoming.recv() => {
                    let Some(f) = frame else { return };
                    self.gossip.handle_message(f.from, &f.payload, unix, now);
                }
                () = self.runtime.sleep(next.saturating_sub(now)) => {}
            }
            let now = self.runtime.monotonic();
            if now >= self.gossip.next_deadline() {
                self.gossip.tick(self.runtime.unix_time(), now);
            }
            if self
                .unsynced_since
                .is_some_and(|since| now >= since + SYNC_AFTER)
            {
                self.sync().await;
            }
        }
    }

    /// Makes the cache writes so far durable (they are written as fast batches).
    async fn sync(&mut self) {
        if self.unsynced_since.take().is_some()
            && let Some(store) = &self.store
            && let Err(e) = store.sync().await
        {
            tracing::warn!(error = %e, "making the gossip cache durable failed");
        }
    }

    async fn flush(&mut self) {
        while let Some(out) = self.gossip.poll_output() {
            match out {
                Output::Send { to, address, bytes } => {
                    if let Ok(frame) = LinkFrame::new(ProtocolId::GOSSIP, bytes) {
                        self.pool
                            .spawn_send(&self.sends, to, address, frame, SEND_TIMEOUT);
                    }
                }
                Output::Event(Event::Message {
                    id,
                    author,
                    topic,
                    body,
                    ..
                }) => {
                    let d = Delivered {
                        id,
                        author,
                        topic,
                        body,
                    };
                    match self.deliver.try_send(d) {
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                        Err(mpsc::error::TrySendError::Full(d)) => {
                            if self.backlog.len() >= DELIVERY_BACKLOG {
                                self.backlog.pop_front();
                                if let Some(m) = &self.metrics {
                                    m.deliveries_dropped.add(1, &[]);
                                }
                                tracing::warn!("gossip delivery backlog full: oldest dropped");
                            }
                            self.backlog.push_back(d);
                        }
                    }
                }
                Output::Event(Event::BadInput { from, reason }) => {
                    tracing::debug!(peer = %from, reason, "bad gossip input");
                    if let Some(m) = &self.metrics {
                        m.bad_input.add(1, &[KeyValue::new("reason", reason)]);
                    }
                }
            }
        }
        if let Some(m) = &self.metrics {
            let now = (
                self.gossip.stats(),
                self.gossip.cache().len(),
                self.gossip.cache().bytes(),
            );
            m.report(&self.reported, &now);
            self.reported = now;
        }
        if let Some(store) = &self.store {
            let mut changes = std::mem::take(&mut self.unsaved);
            changes.extend(self.gossip.take_changes());
            let (unix, now) = (self.runtime.unix_time(), self.runtime.monotonic());
            if let Err(e) = save_changes(store.as_ref(), &changes, unix, now).await {
                tracing::warn!(error = %e, "saving the gossip cache failed");
                self.unsaved = changes;
            } else if !changes.is_empty() {
                self.unsynced_since.get_or_insert(now);
            }
        }
    }
}
