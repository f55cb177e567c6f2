//! The async driver: runs a [`RecoveryNode`] on a [`Runtime`] over a connection [`Pool`],
//! keeps a guardian's shares in a [`KvStore`] (as the sealed envelopes they came in, so they
//! are encrypted at rest under the guardian's key), and reports [`Event`]s to the application.
//!
//! One task owns the core. After every input, share changes are written before anything is
//! sent, so a guardian acknowledges only a share that survives a restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Hash256, Identity, PeerId, UnixMillis};
use mesh_platform::kv::{Batch, KvError, KvStore, read_table};
use mesh_platform::runtime::Runtime;
use mesh_transport::pool::{Incoming, Pool};
use mesh_transport::{Frame as LinkFrame, ProtocolId, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::message::SetId;
use crate::node::{Event, Output, RecoveryConfig, RecoveryError, RecoveryNode};

/// Shares a guardian keeps: `owner [32] || set_id [32] -> version u8 = 1 | received_at u64 LE |
/// grant envelope` (the envelope as the owner sealed it to this guardian).
pub const SHARES_TABLE: &str = "recovery/shares";
/// The tables the recovery driver writes, for the node's `Schema`.
pub const TABLES: [&str; 1] = [SHARES_TABLE];
/// Version byte of the stored layout.
pub const LAYOUT_VERSION: u8 = 1;
/// Commands waiting at most.
pub const COMMAND_QUEUE: usize = 64;
/// Events waiting in the channel to the application at most.
pub const EVENT_QUEUE: usize = 256;
/// Events held back while that channel is full, at most (the oldest are dropped beyond).
pub const EVENT_BACKLOG: usize = 4096;
/// Sends in flight at most.
pub const MAX_SENDS_IN_FLIGHT: usize = 64;
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
    #[error("the recovery driver has stopped")]
    Stopped,
    /// The core refused the call.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] KvError),
}

/// How to start a driver.
#[derive(Clone, Default)]
pub struct DriverOptions {
    /// Policy and limits.
    pub config: RecoveryConfig,
    /// Where a guardian keeps shares (`None`: in memory only).
    pub store: Option<Arc<dyn KvStore>>,
}

impl std::fmt::Debug for DriverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverOptions")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .finish()
    }
}

type Reply<T> = oneshot::Sender<Result<T, RecoveryError>>;
type Guardians = Vec<(PeerId, String)>;

enum Command {
    Protect(Guardians, u8, Reply<SetId>),
    Refresh(SetId, Guardians, u8, Reply<SetId>),
    Recover(
        PeerId,
        Guardians,
        Option<SetId>,
        Reply<Vec<(PeerId, String)>>,
    ),
    Approve(Hash256, Reply<()>),
    Deny(Hash256, Reply<()>),
    TakeRecovered(PeerId, Reply<Identity>),
    Unacknowledged(SetId, oneshot::Sender<Vec<PeerId>>),
    Held(oneshot::Sender<Vec<(PeerId, SetId)>>),
    Shutdown(oneshot::Sender<()>),
}

/// Talks to a running driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RecoveryHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl RecoveryHandle {
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

    /// See [`RecoveryNode::protect`].
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn protect(&self, guardians: Guardians, k: u8) -> Result<SetId, DriverError> {
        Ok(self.call(|r| Command::Protect(guardians, k, r)).await??)
    }

    /// See [`RecoveryNode::refresh`].
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn refresh(
        &self,
        old: SetId,
        guardians: Guardians,
        k: u8,
    ) -> Result<SetId, DriverError> {
        Ok(self
            .call(|r| Command::Refresh(old, guardians, k, r))
            .await??)
    }

    /// See [`RecoveryNode::recover`]: returns each guardian's verification code.
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn recover(
        &self,
        owner: PeerId,
        guardians: Guardians,
        set_id: Option<SetId>,
    ) -> Result<Vec<(PeerId, String)>, DriverError> {
        Ok(self
            .call(|r| Command::Recover(owner, guardians, set_id, r))
            .await??)
    }

    /// See [`RecoveryNode::approve`].
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn approve(&self, request_id: Hash256) -> Result<(), DriverError> {
        Ok(self.call(|r| Command::Approve(request_id, r)).await??)
    }

    /// See [`RecoveryNode::deny`].
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn deny(&self, request_id: Hash256) -> Result<(), DriverError> {
        Ok(self.call(|r| Command::Deny(request_id, r)).await??)
    }

    /// See [`RecoveryNode::take_recovered`].
    ///
    /// # Errors
    /// Too few shares yet, or [`DriverError::Stopped`].
    pub async fn take_recovered(&self, owner: PeerId) -> Result<Identity, DriverError> {
        Ok(self.call(|r| Command::TakeRecovered(owner, r)).await??)
    }

    /// See [`RecoveryNode::unacknowledged`].
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn unacknowledged(&self, set_id: SetId) -> Result<Vec<PeerId>, DriverError> {
        self.call(|r| Command::Unacknowledged(set_id, r)).await
    }

    /// See [`RecoveryNode::held`].
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn held(&self) -> Result<Vec<(PeerId, SetId)>, DriverError> {
        self.call(Command::Held).await
    }

    /// Stops the driver (after writing what it must).
    ///
    /// # Errors
    /// [`DriverError::Stopped`] if it had stopped already.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.call(Command::Shutdown).await
    }
}

fn share_key(owner: &PeerId, set_id: &SetId) -> Vec<u8> {
    let mut k = owner.as_bytes().to_vec();
    k.extend_from_slice(set_id);
    k
}

/// Reads the shares back into `node`; rows that do not verify are deleted. Returns how many
/// were restored.
///
/// # Errors
/// The store's [`KvError`].
pub async fn load(
    store: &dyn KvStore,
    node: &mut RecoveryNode,
    now: UnixMillis,
) -> Result<usize, KvError> {
    let mut restored = 0;
    let mut gone = Batch::new();
    for (key, value) in read_table(store, SHARES_TABLE, PAGE).await? {
        let ok = match (value.first(), value.get(1..9), value.get(9..)) {
            (Some(&LAYOUT_VERSION), Some(at), Some(grant)) => {
                let at = UnixMillis(u64::from_le_bytes(at.try_into().unwrap_or_default()));
                node.restore(grant, at, now).is_ok()
            }
            _ => false,
        };
        if ok {
            restored += 1;
        } else {
            gone.delete(SHARES_TABLE, key);
        }
    }
    if !gone.is_empty() {
        store.apply(gone).await?;
    }
    Ok(restored)
}

/// Starts a driver for `id` over `pool` (which must accept links). Returns its handle and the
/// channel of events.
///
/// # Errors
/// The store's error while loading shares.
pub async fn start<T: Transport + 'static, R: Runtime>(
    id: Arc<Identity>,
    pool: Pool<T, R>,
    runtime: R,
    options: DriverOptions,
) -> Result<(RecoveryHandle, mpsc::Receiver<Event>), DriverError> {
    let mut node = RecoveryNode::new(id, options.config);
    if let Some(store) = &options.store {
        let n = load(store.as_ref(), &mut node, runtime.unix_time()).await?;
        tracing::debug!(shares = n, "recovery shares restored");
        node.track_changes();
    }
    let incoming = pool.subscribe(ProtocolId::RECOVERY);
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let driver = Driver {
        node,
        pool,
        runtime: runtime.clone(),
        store: options.store,
        sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS_IN_FLIGHT)),
        events: events_tx,
        backlog: VecDeque::new(),
        unsaved: Vec::new(),
    };
    runtime.spawn(Box::pin(driver.run(incoming, commands)));
    Ok((RecoveryHandle { tx }, events))
}

struct Driver<T: Transport, R: Runtime> {
    node: RecoveryNode,
    pool: Pool<T, R>,
    runtime: R,
    store: Option<Arc<dyn KvStore>>,
    sends: Arc<tokio::sync::Semaphore>,
    events: mpsc::Sender<Event>,
    backlog: VecDeque<Event>,
    /// Changes whose write failed, tried again with the next ones.
    unsaved: Vec<(PeerId, SetId)>,
}

impl<T: Transport + 'static, R: Runtime> Driver<T, R> {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            let now = self.runtime.unix_time();
            let sleep = self
                .node
                .next_wakeup()
                .map_or(MAX_SLEEP, |t| {
                    Duration::from_millis(t.0.saturating_sub(now.0))
                })
                .min(MAX_SLEEP);
            tokio::select! {
                inc = incoming.recv() => match inc {
                    Some(inc) => {
                        let now = self.runtime.unix_time();
                        self.node.handle(inc.from, &inc.address, &inc.payload, now);
                    }
                    None => return,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        self.persist().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd),
                    None => {
                        self.persist().await;
                        return;
                    }
                },
                () = self.runtime.sleep(sleep) => {
                    let now = self.runtime.unix_time();
                    self.node.tick(now);
                }
            }
            self.persist().await;
            self.flush();
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.runtime.unix_time();
        let n = &mut self.node;
        match cmd {
            Command::Protect(g, k, r) => drop(r.send(n.protect(&g, k, now))),
            Command::Refresh(old, g, k, r) => drop(r.send(n.refresh(&old, &g, k, now))),
            Command::Recover(owner, g, set, r) => drop(r.send(n.recover(owner, &g, set, now))),
            Command::Approve(id, r) => drop(r.send(n.approve(&id, now))),
            Command::Deny(id, r) => drop(r.send(n.deny(&id, now))),
            Command::TakeRecovered(owner, r) => drop(r.send(n.take_recovered(&owner))),
            Command::Unacknowledged(set, r) => drop(r.send(n.unacknowledged(&set))),
            Command::Held(r) => drop(r.send(n.held())),
            Command::Shutdown(r) => drop(r.send(())),
        }
    }

    /// Writes share changes (before anything is sent: an acknowledgement follows a durable
    /// write).
    async fn persist(&mut self) {
        let Some(store) = &self.store else { return };
        let mut keys = std::mem::take(&mut self.unsaved);
        keys.extend(self.node.take_changes());
        if keys.is_empty() {
            return;
        }
        let mut batch = Batch::new();
        for key in &keys {
            match self.node.held_record(key) {
                Some((_, received_at, grant)) => {
                    let mut v = Vec::with_capacity(9 + grant.len());
                    v.push(LAYOUT_VERSION);
                    v.extend_from_slice(&received_at.0.to_le_bytes());
                    v.extend_from_slice(grant);
                    batch.put(SHARES_TABLE, share_key(&key.0, &key.1), v);
                }
                None => {
                    batch.delete(SHARES_TABLE, share_key(&key.0, &key.1));
                }
            }
        }
        if let Err(e) = store.apply(batch).await {
            tracing::warn!(error = %e, "recovery shares not written; trying again");
            self.unsaved = keys;
        }
    }

    fn flush(&mut self) {
        while let Some(out) = self.node.poll() {
            match out {
                Output::Send { to, address, bytes } => {
                    if let Ok(frame) = LinkFrame::new(ProtocolId::RECOVERY, bytes) {
                        self.pool
                            .spawn_send(&self.sends, to, address, frame, SEND_TIMEOUT);
                    }
                }
                Output::Event(e) => {
                    if self.backlog.len() >= EVENT_BACKLOG {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(e);
                }
            }
        }
        while let Some(e) = self.backlog.pop_front() {
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    self.backlog.push_front(e);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    break;
                }
            }
        }
    }
}
