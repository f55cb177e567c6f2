//! Encrypted messaging between peers: sealed and signed with mesh-crypto envelopes, sent
//! directly when a link to the recipient is open and through the mesh (gossip) otherwise, so a
//! recipient that was offline gets it later by pull gossip; delivery receipts, dedup, a rate
//! limit on direct messages per peer, and a channel of incoming messages.
//!
//! Formats (`docs/PROTOCOL.md` §15):
//!
//! ```text
//! envelope plaintext = version u8 = 1 | kind u8 (1 message, 2 receipt) | body
//!                      (a message's bytes, or the id [32] of the envelope a receipt confirms)
//!                      sealed from sender to recipient with context "mesh/message/v1"
//! direct frame       = version u8 = 1 | envelope             (in frames of ProtocolId::MESSAGING)
//! through the mesh   = a gossip message (signed by the sender) of topic "mesh/dm/v1" whose
//!                      body is the envelope
//! ```
//!
//! Relays see who sent a gossip message and, in the envelope header, to whom; never what. Only
//! the recipient opens an envelope, which checks the sender's signature and that the gossip
//! author is the envelope's sender.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::envelope::{self, ENVELOPE_OVERHEAD};
use mesh_crypto::{Hash256, Identity, PeerId, UnixMillis};
use mesh_gossip::driver::{Delivered, GossipHandle};
use mesh_gossip::{GossipMessage, GossipPayload};
use mesh_platform::limit::KeyedLimiter;
use mesh_platform::runtime::Runtime;
use mesh_transport::pool::{Incoming as LinkIncoming, Pool};
use mesh_transport::{Frame, ProtocolId, Transport};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Envelope context of messages and receipts.
pub const MESSAGE_CONTEXT: &[u8] = b"mesh/message/v1";
/// Gossip topic of messages sent through the mesh.
pub const DM_TOPIC: &[u8] = b"mesh/dm/v1";
/// Version byte of the plaintext and of the direct frame.
pub const MESSAGE_VERSION: u8 = 1;
/// Largest message body: what fits in one gossip message with its envelope.
pub const MAX_BODY_LEN: usize = mesh_gossip::message::MAX_MESSAGE_LEN - ENVELOPE_OVERHEAD - 2 - 256;
/// How long a message sent through the mesh stays there for offline recipients to pull.
pub const MESH_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Direct messages one peer may send per minute (more are dropped).
pub const DIRECT_PER_MINUTE: u32 = 600;
/// Envelope ids remembered for dedup.
pub const SEEN_LIMIT: usize = 65_536;
/// How long a direct send may take before the message goes through the mesh instead.
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a message sent directly waits for its receipt before it also goes through the
/// mesh (so that it is not lost with a link that died, or a recipient that dropped it).
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages waiting for their receipt, remembered at most (the oldest are forgotten: a late
/// receipt for one is then not reported).
pub const MAX_OUTSTANDING: usize = 4096;
/// Direct messages waiting for a receipt with their mesh copy kept, at most (beyond, a direct
/// message also goes through the mesh at once).
pub const MAX_HELD_COPIES: usize = 256;
/// Sends in flight at most: `send` waits for one to end beyond.
pub const MAX_SENDS_IN_FLIGHT: usize = 256;
/// Receipts this node sends to one peer per minute at most (more messages are still
/// delivered, without receipt): what one sender can make it publish.
pub const RECEIPTS_PER_MINUTE: u32 = 600;
/// Events waiting for the application at most (the oldest are dropped beyond, and counted).
pub const EVENT_QUEUE: usize = 1024;
const KIND_MESSAGE: u8 = 1;
/// How often late receipts are looked for.
const TICK: Duration = Duration::from_secs(1);
const KIND_RECEIPT: u8 = 2;
/// Offset of the recipient in an envelope's header (`docs/PROTOCOL.md` §3).
const RECIPIENT_AT: usize = 1 + 32;

/// Errors of messaging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// The body is over [`MAX_BODY_LEN`].
    #[error("message of {0} bytes, over the limit of {MAX_BODY_LEN}")]
    TooLarge(usize),
    /// A message to this node itself.
    #[error("a message to oneself")]
    ToSelf,
    /// Sealing or signing failed.
    #[error(transparent)]
    Crypto(#[from] mesh_crypto::Error),
    /// The mesh refused the message.
    #[error("gossip: {0}")]
    Gossip(#[from] mesh_gossip::driver::DriverError),
    /// The messenger has stopped.
    #[error("the messenger has stopped")]
    Stopped,
}

/// A message for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its verified sender.
    pub from: PeerId,
    /// Its id (the envelope's), as the sender's [`Messenger::send`] returned it.
    pub id: Hash256,
    /// Its bytes.
    pub body: Vec<u8>,
    /// Whether it came over a direct link (otherwise through the mesh).
    pub direct: bool,
}

/// What the messenger reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagingEvent {
    /// A message arrived (once, however many ways it came).
    Message(Message),
    /// The recipient of message `id` confirmed it (only the recipient it was sent to can).
    Delivered {
        /// The message.
        id: Hash256,
        /// Who confirmed: its recipient.
        by: PeerId,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessagingStats {
    /// Messages and receipts sent directly.
    pub sent_direct: u64,
    /// Messages and receipts sent through the mesh (including copies of direct messages whose
    /// receipt did not come in time).
    pub sent_mesh: u64,
    /// Messages received (new ones).
    pub received: u64,
    /// Copies received again (dropped).
    pub duplicates: u64,
    /// Envelopes or frames refused (malformed, not opening, sender mismatch, rate limited,
    /// receipts for nothing we sent to their signer).
    pub refused: u64,
    /// Events dropped because the application did not read them (those messages got no
    /// receipt and will be accepted again if they come again).
    pub events_dropped: u64,
    /// Gossip messages of other topics dropped because the application did not read them.
    pub gossip_dropped: u64,
    /// Receipts not sent (the sender's receipt rate, or too many sends in flight).
    pub receipts_skipped: u64,
}

/// Messaging's per-peer limits (the defaults are the constants of this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagingConfig {
    /// Direct messages one peer may send per minute (more are dropped).
    pub direct_per_minute: u32,
    /// Receipts this node sends to one peer per minute at most.
    pub receipts_per_minute: u32,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            direct_per_minute: DIRECT_PER_MINUTE,
            receipts_per_minute: RECEIPTS_PER_MINUTE,
        }
    }
}

enum Command {
    Send(
        PeerId,
        Vec<u8>,
        tokio::sync::OwnedSemaphorePermit,
        oneshot::Sender<Result<Hash256, MessagingError>>,
    ),
    Stats(oneshot::Sender<MessagingStats>),
    Shutdown(oneshot::Sender<()>),
}

/// Sends messages; a handle to the messenger task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Messenger {
    tx: mpsc::Sender<Command>,
    sends: Arc<Semaphore>,
}

impl Messenger {
    /// Seals `body` to `to` and sends it: directly if a link is open, through the mesh
    /// otherwise (and also through the mesh if no receipt comes within [`RECEIPT_TIMEOUT`]).
    /// Waits while [`MAX_SENDS_IN_FLIGHT`] sends are in flight. Returns the message's id,
    /// which the recipient's receipt names.
    ///
    /// # Errors
    /// [`MessagingError::TooLarge`], [`MessagingError::ToSelf`], a sealing error, the mesh's
    /// refusal, or [`MessagingError::Stopped`].
    pub async fn send(&self, to: PeerId, body: &[u8]) -> Result<Hash256, MessagingError> {
        if body.len() > MAX_BODY_LEN {
            return Err(MessagingError::TooLarge(body.len()));
        }
        let permit = Arc::clone(&self.sends)
            .acquire_owned()
            .await
            .map_err(|_| MessagingError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Send(to, body.to_vec(), permit, tx))
            .await
            .map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// The counters so far.
    ///
    /// # Errors
    /// [`MessagingError::Stopped`].
    pub async fn stats(&self) -> Result<MessagingStats, MessagingError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(tx))
            .await
            .map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)
    }

    /// Stops the messenger (sends in flight finish on their own).
    ///
    /// # Errors
    /// [`MessagingError::Stopped`] if it had stopped already.
    pub async fn shutdown(&self) -> Result<(), MessagingError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| MessagingError::Stopped)?;
        self.sends.close();
        rx.await.map_err(|_| MessagingError::Stopped)
    }
}

/// Starts messaging for `identity` over `pool` and the node's gossip (its handle, and the
/// channel of messages it delivers, which the messenger reads: messages of other topics are
/// passed on in the third channel returned), with `config`'s limits. Returns the handle, the
/// events, and the other gossip messages.
pub fn start<T: Transport + 'static, R: Runtime>(
    identity: Arc<Identity>,
    pool: &Pool<T, R>,
    runtime: &R,
    gossip: GossipHandle,
    deliveries: mpsc::Receiver<Delivered>,
    config: MessagingConfig,
) -> (
    Messenger,
    mpsc::Receiver<MessagingEvent>,
    mpsc::Receiver<Delivered>,
) {
    let (tx, commands) = mpsc::channel(256);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (other_tx, other) = mpsc::channel(EVENT_QUEUE);
    let direct = pool.subscribe(ProtocolId::MESSAGING);
    let sends = Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT));
    let task = Task {
        identity,
        pool: pool.clone(),
        runtime: runtime.clone(),
        gossip,
        events: events_tx,
        other: other_tx,
        seen: HashSet::new(),
        order: VecDeque::new(),
        outstanding: HashMap::new(),
        outstanding_order: VecDeque::new(),
        held: 0,
        limiter: KeyedLimiter::per_minute(config.direct_per_minute),
        receipts: KeyedLimiter::per_minute(config.receipts_per_minute),
        sends: Arc::clone(&sends),
        stats: MessagingStats::default(),
        last_reclaim: Duration::ZERO,
    };
    runtime.spawn(Box::pin(task.run(commands, direct, deliveries)));
    (Messenger { tx, sends }, events, other)
}

/// A message sent and not yet confirmed.
struct Outstanding {
    to: PeerId,
    /// Its mesh copy, kept while it went directly and no receipt came yet.
    copy: Option<Vec<u8>>,
    /// When the copy goes through the mesh if no receipt came.
    deadline: Duration,
}

struct Task<T: Transport, R: Runtime> {
    identity: Arc<Identity>,
    pool: Pool<T, R>,
    runtime: R,
    gossip: GossipHandle,
    events: mpsc::Sender<MessagingEvent>,
    other: mpsc::Sender<Delivered>,
    seen: HashSet<Hash256>,
    order: VecDeque<Hash256>,
    outstanding: HashMap<Hash256, Outstanding>,
    outstanding_order: VecDeque<Hash256>,
    /// Outstanding entries holding a copy.
    held: usize,
    limiter: KeyedLimiter<PeerId>,
    receipts: KeyedLimiter<PeerId>,
    sends: Arc<Semaphore>,
    stats: MessagingStats,
    last_reclaim: Duration,
}

/// The plaintext of a message or receipt.
fn plaintext(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + body.len());
    p.push(MESSAGE_VERSION);
    p.push(kind);
    p.extend_from_slice(body);
    p
}

impl<T: Transport + 'static, R: Runtime> Task<T, R> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut direct: mpsc::Receiver<LinkIncoming>,
        mut deliveries: mpsc::Receiver<Delivered>,
    ) {
        let mut next_tick = self.runtime.monotonic();
        loop {
            // Ticks at their time even while inputs keep coming.
            let now = self.runtime.monotonic();
            if now >= next_tick {
                self.tick().await;
                next_tick = now + TICK;
            }
            let wait = next_tick.saturating_sub(now);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Send(to, body, permit, reply)) => {
                        let r = self.send(to, KIND_MESSAGE, &body, permit).await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.stats);
                    }
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
                inc = direct.recv() => match inc {
                    Some(inc) => self.on_direct(&inc).await,
                    None => return,
                },
                d = deliveries.recv() => match d {
                    Some(d) if d.topic == DM_TOPIC => {
                        self.on_envelope(Some(d.author), &d.body, false).await;
                    }
                    Some(d) => {
                        // Not ours to read: the application's.
                        if self.other.try_send(d).is_err() {
                            self.stats.gossip_dropped += 1;
                            tracing::debug!("gossip message dropped: the application is not reading");
                        }
                    }
                    None => return,
                },
                () = self.runtime.sleep(wait) => {}
            }
        }
    }

    /// Copies of direct messages whose receipt is late go through the mesh; idle rate-limit
    /// state is dropped now and then.
    async fn tick(&mut self) {
        let now = self.runtime.monotonic();
        let due: Vec<Hash256> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.copy.is_some() && o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(copy) = self.outstanding.get_mut(&id).and_then(|o| o.copy.take()) {
                self.held -= 1;
                self.stats.sent_mesh += 1;
                if let Err(e) = self.gossip.publish(copy).await {
                    tracing::debug!(error = %e, "late copy not published");
                }
            }
        }
        if now.saturating_sub(self.last_reclaim) >= Duration::from_secs(60) {
            self.last_reclaim = now;
            self.limiter.reclaim_idle();
            self.receipts.reclaim_idle();
        }
    }

    /// Seals and sends; returns the envelope's id. Messages are remembered until their
    /// receipt comes.
    async fn send(
        &mut self,
        to: PeerId,
        kind: u8,
        body: &[u8],
        permit: OwnedSemaphorePermit,
    ) -> Result<Hash256, MessagingError> {
        if to == self.identity.peer_id() {
            return Err(MessagingError::ToSelf);
        }
        let sealed = envelope::seal(&self.identity, &to, MESSAGE_CONTEXT, &plaintext(kind, body))?;
        // Our own envelope: its id without checking the signature we just made.
        let id = envelope::id(&sealed)?;
        let linked = self.pool.connected().contains(&to);
        let keep_copy = linked && kind == KIND_MESSAGE && self.held < MAX_HELD_COPIES;
        let publish = !linked || (kind == KIND_MESSAGE && !keep_copy);
        // The signed mesh copy, only when it is used: a receipt sent directly needs none.
        let copy = if publish || keep_copy {
            let now = self.runtime.unix_time();
            Some(
                GossipMessage::sign(
                    &self.identity,
                    GossipPayload {
                        topic: DM_TOPIC.to_vec(),
                        body: sealed.clone(),
                    },
                    now,
                    UnixMillis(now.0.saturating_add(MESH_TTL_MS)),
                )?
                .into_bytes(),
            )
        } else {
            None
        };
        if kind == KIND_MESSAGE {
            self.remember(id, to, copy.clone().filter(|_| keep_copy));
        }
        if publish && let Some(copy) = copy {
            self.stats.sent_mesh += 1;
            self.gossip.publish(copy).await?;
            if !linked {
                return Ok(id);
            }
        }
        self.stats.sent_direct += 1;
        let mut frame = vec![MESSAGE_VERSION];
        frame.extend_from_slice(&sealed);
        let frame = Frame::new(ProtocolId::MESSAGING, frame)
            .map_err(|_| MessagingError::TooLarge(body.len()))?;
        // A failed or late direct send is covered by the mesh copy (sent when the receipt
        // is late).
        self.pool
            .spawn_send_holding(permit, to, String::new(), frame, DIRECT_TIMEOUT);
        Ok(id)
    }

    fn remember(&mut self, id: Hash256, to: PeerId, copy: Option<Vec<u8>>) {
        if copy.is_some() {
            self.held += 1;
        }
        let deadline = self.runtime.monotonic() + RECEIPT_TIMEOUT;
        self.outstanding
            .insert(id, Outstanding { to, copy, deadline });
        self.outstanding_order.push_back(id);
        while self.outstanding_order.len() > MAX_OUTSTANDING {
            if let Some(old) = self.outstanding_order.pop_front()
                && let Some(o) = self.outstanding.remove(&old)
                && o.copy.is_some()
            {
                self.held -= 1;
            }
        }
    }

    async fn on_direct(&mut self, inc: &LinkIncoming) {
        self.limiter.advance(self.runtime.monotonic());
        if !self.limiter.check(&inc.from) {
            self.stats.refused += 1;
            return;
        }
        match inc.payload.split_first() {
            Some((&MESSAGE_VERSION, envelope)) => {
                self.on_envelope(Some(inc.from), envelope, true).await;
            }
            _ => self.stats.refused += 1,
        }
    }

    /// An envelope that came directly from `carrier` or through the mesh from its gossip
    /// author `carrier`.
    async fn on_envelope(&mut self, carrier: Option<PeerId>, bytes: &[u8], direct: bool) {
        // Only the recipient opens it; the header says who that is (an envelope for someone
        // else travels on through gossip, untouched).
        let recipient = bytes.get(RECIPIENT_AT..RECIPIENT_AT + 32);
        if recipient != Some(self.identity.peer_id().as_bytes().as_slice()) {
            if direct {
                self.stats.refused += 1;
            }
            return;
        }
        // A copy of one already taken (it came both directly and through the mesh) costs a
        // hash, not an open: ids enter `seen` only from envelopes that opened and verified.
        if envelope::id(bytes).is_ok_and(|id| self.seen.contains(&id)) {
            self.stats.duplicates += 1;
            return;
        }
        let Ok(opened) =
            envelope::open_with_limit(&self.identity, bytes, MESSAGE_CONTEXT, MAX_BODY_LEN + 2)
        else {
            self.stats.refused += 1;
            return;
        };
        // Whoever carried it signed it: the direct link's peer, or the gossip message's author.
        if carrier.is_some_and(|c| c != opened.sender) {
            self.stats.refused += 1;
            return;
        }
        if self.seen.contains(&opened.id) {
            self.stats.duplicates += 1;
            return;
        }
        match opened.plaintext.split_first() {
            Some((&MESSAGE_VERSION, [KIND_MESSAGE, body @ ..])) => {
                let event = MessagingEvent::Message(Message {
                    from: opened.sender,
                    id: opened.id,
                    body: body.to_vec(),
                    direct,
                });
                if self.events.try_send(event).is_err() {
                    // Not seen, no receipt: it is accepted again if it comes again.
                    self.stats.events_dropped += 1;
                    return;
                }
                self.mark_seen(opened.id);
                self.stats.received += 1;
                self.receipt(opened.sender, opened.id).await;
            }
            Some((&MESSAGE_VERSION, [KIND_RECEIPT, id @ ..])) if id.len() == 32 => {
                self.mark_seen(opened.id);
                let mut b = [0u8; 32];
                b.copy_from_slice(id);
                let id = Hash256(b);
                // Only the recipient of a message we sent confirms it.
                match self.outstanding.get(&id) {
                    Some(o) if o.to == opened.sender => {
                        if let Some(o) = self.outstanding.remove(&id)
                            && o.copy.is_some()
                        {
                            self.held -= 1;
                        }
                        if self
                            .events
                            .try_send(MessagingEvent::Delivered {
                                id,
                                by: opened.sender,
                            })
                            .is_err()
                        {
                            self.stats.events_dropped += 1;
                        }
                    }
                    _ => self.stats.refused += 1,
                }
            }
            _ => self.stats.refused += 1,
        }
    }

    fn mark_seen(&mut self, id: Hash256) {
        if self.seen.insert(id) {
            self.order.push_back(id);
            if self.order.len() > SEEN_LIMIT
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }

    /// Confirms message `id` to `to`, within its receipt rate and the sends in flight.
    async fn receipt(&mut self, to: PeerId, id: Hash256) {
        self.receipts.advance(self.runtime.monotonic());
        let permit = if self.receipts.check(&to) {
            Arc::clone(&self.sends).try_acquire_owned().ok()
        } else {
            None
        };
        let Some(permit) = permit else {
            self.stats.receipts_skipped += 1;
            return;
        };
        if let Err(e) = self.send(to, KIND_RECEIPT, id.as_bytes(), permit).await {
            tracing::debug!(error = %e, "receipt not sent");
        }
    }
}
