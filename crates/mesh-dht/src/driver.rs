//! The async driver: runs a [`Dht`] core on a [`Runtime`], over a connection [`Pool`], with its
//! state kept in a [`KvStore`].
//!
//! One task owns the core. It takes DHT frames from the pool, commands from [`DhtHandle`]s, and
//! ticks the core at its next deadline (at least once a second); what the core wants sent goes out through the pool (each send
//! in a task of its own, so a slow dial never stalls the node), and record changes are written
//! to the store before the next input is taken. Everything the core bounds stays bounded; the
//! command queue holds [`COMMAND_QUEUE`] requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::PeerId;
use mesh_platform::kv::{KvError, KvStore};
use mesh_platform::runtime::Runtime;
use mesh_transport::pool::{Incoming, Pool};
use mesh_transport::{Frame, ProtocolId, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::key::Key;
use crate::lookup::Outcome;
use crate::metrics::DhtMetrics;
use crate::node::{Dht, DhtConfig, Event, MAINTENANCE_INTERVAL, Output, QueryId};
use crate::persist;
use crate::routing::Contact;
use crate::store::Rejected;

/// Commands waiting for the driver at most; callers wait beyond.
pub const COMMAND_QUEUE: usize = 256;
/// Sends in flight at once at most; beyond, a send is dropped (the core treats it as a
/// request that timed out), so a peer that stops reading cannot make the node hold answers
/// without bound.
pub const MAX_SENDS_IN_FLIGHT: usize = 256;
/// How long one send (with its dial) may take before it is abandoned.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the driver sleeps between ticks of the core (it wakes earlier when the
/// core's [`Dht::next_deadline`] says so).
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver has stopped.
    #[error("the DHT driver has stopped")]
    Stopped,
    /// The record was refused by this node's own store.
    #[error("record refused: {0}")]
    Rejected(#[from] Rejected),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] KvError),
}

/// What a put reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    /// Nodes that stored the record.
    pub stored: usize,
    /// Nodes it was offered to.
    pub offered: usize,
}

/// A snapshot of the node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Contacts in the routing table.
    pub contacts: usize,
    /// Records held.
    pub records: usize,
    /// Bytes of records held.
    pub bytes: usize,
}

enum Command {
    AddContact(PeerId, String),
    Find(Key, bool, oneshot::Sender<Outcome>),
    Put(Vec<u8>, oneshot::Sender<Result<PutResult, DriverError>>),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<Result<(), DriverError>>),
}

enum Waiter {
    Found(oneshot::Sender<Outcome>),
    Put(oneshot::Sender<Result<PutResult, DriverError>>),
}

/// Talks to a running driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DhtHandle {
    local: PeerId,
    tx: mpsc::Sender<Command>,
}

impl DhtHandle {
    /// This node's identity.
    pub fn local(&self) -> PeerId {
        self.local
    }

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

    /// Adds a contact (a bootstrap peer) and looks this node up through it.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn add_contact(&self, peer: PeerId, address: &str) -> Result<(), DriverError> {
        self.tx
            .send(Command::AddContact(peer, address.to_string()))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// The k closest nodes to `target` that answered.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn find_node(&self, target: Key) -> Result<Vec<Contact>, DriverError> {
        Ok(self
            .call(|tx| Command::Find(target, false, tx))
            .await?
            .closest)
    }

    /// The record at `key` (its signed bytes, verified), if a node has it.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn find_value(&self, key: Key) -> Result<Option<Vec<u8>>, DriverError> {
        Ok(self
            .call(|tx| Command::Find(key, true, tx))
            .await?
            .value
            .map(|(_, v)| v))
    }

    /// Stores a signed record here and at the k closest nodes.
    ///
    /// # Errors
    /// [`DriverError::Rejected`] if this node's own store refuses it, or
    /// [`DriverError::Stopped`].
    pub async fn put(&self, record: Vec<u8>) -> Result<PutResult, DriverError> {
        self.call(|tx| Command::Put(record, tx)).await?
    }

    /// Contacts, records and bytes held.
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn status(&self) -> Result<Status, DriverError> {
        self.call(Command::Status).await
    }

    /// Saves the contacts and stops the driver.
    ///
    /// # Errors
    /// [`DriverError::Storage`] if the last save failed, or [`DriverError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.call(Command::Shutdown).await?
    }
}

/// How to start a driver.
#[derive(Default)]
pub struct DriverOptions {
    /// The core's settings.
    pub config: DhtConfig,
    /// Where the records and contacts are kept (`None`: in memory only).
    pub store: Option<Arc<dyn KvStore>>,
    /// Instruments to report to (`None`: none).
    pub metrics: Option<DhtMetrics>,
    /// Peers to join through, in addition to contacts restored from the store.
    pub bootstrap: Vec<(PeerId, String)>,
}

impl std::fmt::Debug for DriverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverOptions")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .field("bootstrap", &self.bootstrap.len())
            .finish_non_exhaustive()
    }
}

/// Loads the node's state, subscribes to DHT frames on `pool`, joins the network (looks
/// itself up through the restored and bootstrap contacts) and runs the driver on `runtime`.
///
/// # Errors
/// [`DriverError::Storage`] if the state cannot be read.
pub async fn start<T, R>(
    local: PeerId,
    pool: Pool<T, R>,
    runtime: R,
    options: DriverOptions,
) -> Result<DhtHandle, DriverError>
where
    T: Transport + 'static,
    R: Runtime,
{
    let mut dht = Dht::new(local, options.config);
    if let Some(m) = options.metrics {
        dht.set_metrics(m);
    }
    if let Some(store) = &options.store {
        dht.track_changes();
        let loaded = persist::load(
            store.as_ref(),
            &mut dht,
            runtime.unix_time(),
            runtime.monotonic(),
        )
        .await?;
        tracing::debug!(?loaded, "DHT state restored");
    }
    for (peer, address) in &options.bootstrap {
        dht.add_contact(*peer, address, runtime.monotonic());
    }
    if !dht.table().is_empty() {
        dht.find_node(Key::of_peer(&local), runtime.monotonic());
    }
    let incoming = pool.subscribe(ProtocolId::DHT);
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let driver = Driver {
        dht,
        pool,
        runtime: runtime.clone(),
        store: options.store,
        waiters: HashMap::new(),
        contacts_saved: runtime.monotonic(),
        sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS_IN_FLIGHT)),
        unsaved: Vec::new(),
    };
    runtime.spawn(Box::pin(driver.run(incoming, commands)));
    Ok(DhtHandle { local, tx })
}

struct Driver<T: Transport, R: Runtime> {
    dht: Dht,
    pool: Pool<T, R>,
    runtime: R,
    store: Option<Arc<dyn KvStore>>,
    waiters: HashMap<QueryId, Waiter>,
    contacts_saved: Duration,
    sends: Arc<tokio::sync::Semaphore>,
    /// Record changes whose write failed, written again with the next ones.
    unsaved: Vec<crate::store::Change>,
}

impl<T: Transport + 'static, R: Runtime> Driver<T, R> {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            self.flush().await;
            let next_tick = self
                .dht
                .next_deadline()
                .min(self.runtime.monotonic() + MAX_SLEEP);
            let wait = next_tick.saturating_sub(self.runtime.monotonic());
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(self.save_contacts().await);
                        return;
                    }
                    Some(command) => self.command(command),
                    // Every handle is gone: nobody can ask anything of this node any more.
                    None => {
                        let _ = self.save_contacts().await;
                        return;
                    }
                },
                frame = incoming.recv() => {
                    // The pool went away (or DHT frames were subscribed elsewhere).
                    let Some(f) = frame else {
                        let _ = self.save_contacts().await;
                        return;
                    };
                    self.dht.handle_message(
                        f.from,
                        &f.address,
                        &f.payload,
                        self.runtime.unix_time(),
                        self.runtime.monotonic(),
                    );
                }
                () = self.runtime.sleep(wait) => {}
            }
            let now = self.runtime.monotonic();
            if now >= next_tick {
                self.dht.tick(self.runtime.unix_time(), now);
                if now.saturating_sub(self.contacts_saved) >= MAINTENANCE_INTERVAL {
                    self.contacts_saved = now;
                    if let Err(e) = self.save_contacts().await {
                        tracing::warn!(error = %e, "saving DHT contacts failed");
                    }
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        let (unix, now) = (self.runtime.unix_time(), self.runtime.monotonic());
        match command {
            Command::AddContact(peer, address) => {
                self.dht.add_contact(peer, &address, now);
                let me = Key::of_peer(&self.dht.table().local_peer());
                self.dht.find_node(me, now);
            }
            Command::Find(key, value, done) => {
                let id = if value {
                    self.dht.find_value(key, now)
                } else {
                    self.dht.find_node(key, now)
                };
                self.waiters.insert(id, Waiter::Found(done));
            }
            Command::Put(record, done) => match self.dht.put(record, unix, now) {
                Ok(id) => {
                    self.waiters.insert(id, Waiter::Put(done));
                }
                Err(e) => {
                    let _ = done.send(Err(e.into()));
                }
            },
            Command::Status(done) => {
                let _ = done.send(Status {
                    contacts: self.dht.table().len(),
                    records: self.dht.store().len(),
                    bytes: self.dht.store().total_bytes(),
                });
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Writes record changes, then sends what the core wants sent and answers waiters: a
    /// STORE is answered "stored" only once its record is written, so a node that crashes
    /// right after its answer still has the record. If the write fails, the changes are kept
    /// in memory and written again with the next ones, and this batch's "stored" answers are
    /// not sent: the requester sees a timeout rather than an acknowledgement a crash would
    /// break.
    async fn flush(&mut self) {
        let mut outputs = Vec::new();
        while let Some(out) = self.dht.poll_output() {
            outputs.push(out);
        }
        let mut unsaved = false;
        if let Some(store) = &self.store {
            let changes =
                persist::merge(std::mem::take(&mut self.unsaved), self.dht.take_changes());
            if let Err(e) = persist::save_changes(store.as_ref(), &changes).await {
                // Kept, and written with the next changes (a later change of a key wins).
                tracing::warn!(error = %e, "saving DHT records failed");
                self.unsaved = changes;
                unsaved = true;
            }
        }
        for out in outputs {
            match out {
                Output::Send { bytes, .. } if unsaved && acknowledges_a_store(&bytes) => {}
                Output::Send { to, address, bytes } => {
                    let Ok(frame) = Frame::new(ProtocolId::DHT, bytes) else {
                        continue;
                    };
                    // A dropped, failed or abandoned send is a request that times out in
                    // the core.
                    self.pool
                        .spawn_send(&self.sends, to, address, frame, SEND_TIMEOUT);
                }
                Output::Event(Event::Found { id, outcome }) => {
                    if let Some(Waiter::Found(done)) = self.waiters.remove(&id) {
                        let _ = done.send(outcome);
                    }
                }
                Output::Event(Event::Put {
                    id,
                    stored,
                    offered,
                }) => {
                    if let Some(Waiter::Put(done)) = self.waiters.remove(&id) {
                        let _ = done.send(Ok(PutResult { stored, offered }));
                    }
                }
                Output::Event(Event::BadMessage { from }) => {
                    tracing::debug!(peer = %from, "bad DHT message");
                }
            }
        }
    }

    async fn save_contacts(&self) -> Result<(), DriverError> {
        match &self.store {
            Some(store) => Ok(persist::save_contacts(store.as_ref(), &self.dht).await?),
            None => Ok(()),
        }
    }
}

/// Whether `bytes` is a STORE answered "stored".
fn acknowledges_a_store(bytes: &[u8]) -> bool {
    matches!(
        crate::message::Message::decode(bytes),
        Ok(crate::message::Message {
            body: crate::message::Body::StoreResult(crate::message::StoreStatus::Stored),
            ..
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Body, Message, StoreStatus};

    #[test]
    fn only_a_stored_answer_is_held_back_when_a_write_fails() {
        let answer = |body| Message { request: 7, body }.encode();
        assert!(acknowledges_a_store(&answer(Body::StoreResult(
            StoreStatus::Stored
        ))));
        for other in [
            Body::StoreResult(StoreStatus::Quota),
            Body::StoreResult(StoreStatus::Stale),
            Body::Ping,
            Body::Pong,
            Body::Store(vec![1, 2, 3]),
        ] {
            assert!(!acknowledges_a_store(&answer(other)));
        }
        assert!(!acknowledges_a_store(b"not a message"));
    }
}
