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

/// Shares a guardian keeps, and sets revoked: `owner [32] || set_id [32] -> version u8 = 1 |
/// kind u8 | at u64 LE | grant envelope`, kind 1 a share (`at`: received; the envelope as the
/// owner sealed it to this guardian), kind 2 a revoked set (`at`: revoked; no envelope).
pub const SHARES_TABLE: &str = "recovery/shares";
/// The tables the recovery driver writes, for the node's `Schema`.
pub const TABLES: [&str; 1] = [SHARES_TABLE];
/// Version byte of the stored layout.
pub const LAYOUT_VERSION: u8 = 1;
const KIND_SHARE: u8 = 1;
const KIND_REVOKED: u8 = 2;
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
    RevokeAt(SetId, Guardians, Reply<()>),
    AllowOwner(PeerId, bool, oneshot::Sender<()>),
    Pending(oneshot::Sender<Vec<(Hash256, PeerId, PeerId)>>),
    Approve(Hash256, Reply<()>),
    Deny(Hash256, Reply<()>),
    TakeRecovered(PeerId, Reply<Identity>),
    Recovered(PeerId, oneshot::Sender<Option<Identity>>),
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

    /// See [`RecoveryNode::revoke_at`].
    ///
    /// # Errors
    /// The core's refusal, or [`DriverError::Stopped`].
    pub async fn revoke_at(&self, set_id: SetId, guardians: Guardians) -> Result<(), DriverError> {
        Ok(self
            .call(|r| Command::RevokeAt(set_id, guardians, r))
            .await??)
    }

    /// See [`RecoveryNode::allow_owner`] (`allow` true) and [`RecoveryNode::forget_owner`].
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn allow_owner(&self, owner: PeerId, allow: bool) -> Result<(), DriverError> {
        self.call(|r| Command::AllowOwner(owner, allow, r)).await
    }

    /// See [`RecoveryNode::pending_requests`]: (request, owner, requester).
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn pending_requests(&self) -> Result<Vec<(Hash256, PeerId, PeerId)>, DriverError> {
        self.call(Command::Pending).await
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

    /// See [`RecoveryNode::recovered`].
    ///
    /// # Errors
    /// [`DriverError::Stopped`].
    pub async fn recovered(&self, owner: PeerId) -> Result<Option<Identity>, DriverError> {
        self.call(|r| Command::Recovered(owner, r)).await
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
    let rows = read_table(store, SHARES_TABLE, PAGE).await?;
    // Revocations first, so that no revoked share comes back.
    let (revoked, shares): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, v)| v.get(..2) == Some(&[LAYOUT_VERSION, KIND_REVOKED][..]));
    for (key, value) in revoked {
        let owner = key.get(..32).and_then(|k| <[u8; 32]>::try_from(k).ok());
        let set = key.get(32..).and_then(|k| <[u8; 32]>::try_from(k).ok());
        match (owner, set, value.get(2..10)) {
            (Some(o), Some(set), Some(at)) if value.len() == 10 => {
                let at = UnixMillis(u64::from_le_bytes(at.try_into().unwrap_or_default()));
                node.restore_revoked((PeerId::from_bytes_unvalidated(o), set), at);
            }
            _ => {
                gone.delete(SHARES_TABLE, key);
            }
        }
    }
    for (key, value) in shares {
        let ok = match (value.get(..2), value.get(2..10), value.get(10..)) {
            (Some(&[LAYOUT_VERSION, KIND_SHARE]), Some(at), Some(grant)) => {
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
        unsaved: std::collections::BTreeSet::new(),
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
    /// Changes whose write failed, tried again with the next ones (each key once).
    unsaved: std::collections::BTreeSet<(PeerId, SetId)>,
}

impl<T: Transport + 'static, R: Runtime> Driver<T, R> {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            let now = self.runtime.unix_time();
            // The core's timers run at their time even while frames keep coming.
            if self.node.next_wakeup().is_some_and(|t| t <= now) {
                self.node.tick(now);
                if self.persist().await {
                    self.flush();
                }
            }
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
                        if self.persist().await {
                            self.flush();
                        }
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
            // Nothing is sent before the changes it confirms are written; if writing fails,
            // the outputs wait for the next try.
            if self.persist().await {
                self.flush();
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.runtime.unix_time();
        let n = &mut self.node;
        match cmd {
            Command::Protect(g, k, r) => drop(r.send(n.protect(&g, k, now))),
            Command::Refresh(old, g, k, r) => drop(r.send(n.refresh(&old, &g, k, now))),
            Command::Recover(owner, g, set, r) => drop(r.send(n.recover(owner, &g, set, now))),
            Command::RevokeAt(set, g, r) => drop(r.send(n.revoke_at(&set, &g, now))),
            Command::AllowOwner(owner, allow, r) => {
                if allow {
                    n.allow_owner(owner);
                } else {
                    n.forget_owner(&owner);
                }
                let _ = r.send(());
            }
            Command::Pending(r) => drop(r.send(n.pending_requests())),
            Command::Approve(id, r) => drop(r.send(n.approve(&id, now))),
            Command::Deny(id, r) => drop(r.send(n.deny(&id, now))),
            Command::TakeRecovered(owner, r) => drop(r.send(n.take_recovered(&owner))),
            Command::Recovered(owner, r) => drop(r.send(n.recovered(&owner))),
            Command::Unacknowledged(set, r) => drop(r.send(n.unacknowledged(&set))),
            Command::Held(r) => drop(r.send(n.held())),
            Command::Shutdown(r) => drop(r.send(())),
        }
    }

    /// Writes share changes (before anything is sent: an acknowledgement follows a durable
    /// write). Returns whether everything is written.
    async fn persist(&mut self) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let mut keys = std::mem::take(&mut self.unsaved);
        keys.extend(self.node.take_changes());
        if keys.is_empty() {
            return true;
        }
        let mut batch = Batch::new();
        for key in &keys {
            let row = share_key(&key.0, &key.1);
            if let Some((_, received_at, grant)) = self.node.held_record(key) {
                let mut v = Vec::with_capacity(10 + grant.len());
                v.extend_from_slice(&[LAYOUT_VERSION, KIND_SHARE]);
                v.extend_from_slice(&received_at.0.to_le_bytes());
                v.extend_from_slice(grant);
                batch.put(SHARES_TABLE, row, v);
            } else if let Some(at) = self.node.revoked_at(key) {
                let mut v = vec![LAYOUT_VERSION, KIND_REVOKED];
                v.extend_from_slice(&at.0.to_le_bytes());
                batch.put(SHARES_TABLE, row, v);
            } else {
                batch.delete(SHARES_TABLE, row);
            }
        }
        match store.apply(batch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "recovery shares not written; trying again");
                self.unsaved = keys;
                false
            }
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
                        // Refusals of remote frames go first: they are what a flood makes.
                        match self
                            .backlog
                            .iter()
                            .position(|e| matches!(e, Event::Refused { .. }))
                        {
                            Some(i) => {
                                self.backlog.remove(i);
                            }
                            None => {
                                self.backlog.pop_front();
                            }
                        }
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
