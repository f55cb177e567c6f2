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

use std::collections::{HashSet, VecDeque};
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
use tokio::sync::{mpsc, oneshot};

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
/// Events waiting for the application at most (the oldest are dropped beyond, and counted).
pub const EVENT_QUEUE: usize = 1024;
const KIND_MESSAGE: u8 = 1;
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
    /// The recipient of message `id` confirmed it.
    Delivered {
        /// The message.
        id: Hash256,
        /// Who confirmed.
        by: PeerId,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessagingStats {
    /// Messages sent directly.
    pub sent_direct: u64,
    /// Messages sent through the mesh.
    pub sent_mesh: u64,
    /// Messages received (new ones).
    pub received: u64,
    /// Copies received again (dropped).
    pub duplicates: u64,
    /// Envelopes or frames refused (malformed, not opening, sender mismatch, rate limited).
    pub refused: u64,
    /// Events dropped because the application did not read them.
    pub events_dropped: u64,
}

enum Command {
    Send(
        PeerId,
        Vec<u8>,
        oneshot::Sender<Result<Hash256, MessagingError>>,
    ),
    Stats(oneshot::Sender<MessagingStats>),
}

/// Sends messages; a handle to the messenger task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Messenger {
    tx: mpsc::Sender<Command>,
}

impl Messenger {
    /// Seals `body` to `to` and sends it: directly if a link is open, through the mesh
    /// otherwise (or if the direct send fails). Returns the message's id, which the
    /// recipient's receipt names.
    ///
    /// # Errors
    /// [`MessagingError::TooLarge`], a sealing error, or [`MessagingError::Stopped`].
    pub async fn send(&self, to: PeerId, body: &[u8]) -> Result<Hash256, MessagingError> {
        if body.len() > MAX_BODY_LEN {
            return Err(MessagingError::TooLarge(body.len()));
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Send(to, body.to_vec(), tx))
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
}

/// Starts messaging for `identity` over `pool` and the node's gossip (its handle, and the
/// channel of messages it delivers, which the messenger reads: messages of other topics are
/// passed on in the third channel returned). Returns the handle, the events, and the other
/// gossip messages.
pub fn start<T: Transport + 'static, R: Runtime>(
    identity: Arc<Identity>,
    pool: &Pool<T, R>,
    runtime: &R,
    gossip: GossipHandle,
    deliveries: mpsc::Receiver<Delivered>,
) -> (
    Messenger,
    mpsc::Receiver<MessagingEvent>,
    mpsc::Receiver<Delivered>,
) {
    let (tx, commands) = mpsc::channel(256);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (other_tx, other) = mpsc::channel(EVENT_QUEUE);
    let direct = pool.subscribe(ProtocolId::MESSAGING);
    let task = Task {
        identity,
        pool: pool.clone(),
        runtime: runtime.clone(),
        gossip,
        events: events_tx,
        other: other_tx,
        seen: HashSet::new(),
        order: VecDeque::new(),
        limiter: KeyedLimiter::per_minute(DIRECT_PER_MINUTE),
        stats: MessagingStats::default(),
    };
    runtime.spawn(Box::pin(task.run(commands, direct, deliveries)));
    (Messenger { tx }, events, other)
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
    limiter: KeyedLimiter<PeerId>,
    stats: MessagingStats,
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
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Send(to, body, reply)) => {
                        let r = self.send(to, KIND_MESSAGE, &body);
                        let _ = reply.send(r);
                    }
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.stats);
                    }
                    None => return,
                },
                inc = direct.recv() => match inc {
                    Some(inc) => self.on_direct(&inc),
                    None => return,
                },
                d = deliveries.recv() => match d {
                    Some(d) if d.topic == DM_TOPIC => self.on_envelope(Some(d.author), &d.body, false),
                    Some(d) => {
                        // Not ours to read: the application's.
                        let _ = self.other.try_send(d);
                    }
                    None => return,
                },
            }
        }
    }

    /// Seals and sends; returns the envelope's id.
    fn send(&mut self, to: PeerId, kind: u8, body: &[u8]) -> Result<Hash256, MessagingError> {
        let sealed = envelope::seal(&self.identity, &to, MESSAGE_CONTEXT, &plaintext(kind, body))?;
        let id = envelope::verify(&sealed, MAX_BODY_LEN + 2)?.id;
        let now = self.runtime.unix_time();
        let message = GossipMessage::sign(
            &self.identity,
            GossipPayload {
                topic: DM_TOPIC.to_vec(),
                body: sealed.clone(),
            },
            now,
            UnixMillis(now.0.saturating_add(MESH_TTL_MS)),
        )?
        .into_bytes();
        let linked = self.pool.connected().contains(&to);
        if linked {
            self.stats.sent_direct += 1;
        } else {
            self.stats.sent_mesh += 1;
        }
        let pool = self.pool.clone();
        let gossip = self.gossip.clone();
        let runtime = self.runtime.clone();
        self.runtime.spawn(Box::pin(async move {
            if linked {
                let mut frame = vec![MESSAGE_VERSION];
                frame.extend_from_slice(&sealed);
                if let Ok(frame) = Frame::new(ProtocolId::MESSAGING, frame) {
                    let sent = tokio::select! {
                        r = pool.send(to, "", frame) => r.is_ok(),
                        () = runtime.sleep(DIRECT_TIMEOUT) => false,
                    };
                    if sent {
                        return;
                    }
                }
            }
            if let Err(e) = gossip.publish(message).await {
                tracing::debug!(error = %e, "message not published");
            }
        }));
        Ok(id)
    }

    fn on_direct(&mut self, inc: &LinkIncoming) {
        self.limiter.advance(self.runtime.monotonic());
        if !self.limiter.check(&inc.from) {
            self.stats.refused += 1;
            return;
        }
        match inc.payload.split_first() {
            Some((&MESSAGE_VERSION, envelope)) => self.on_envelope(Some(inc.from), envelope, true),
            _ => self.stats.refused += 1,
        }
    }

    /// An envelope that came directly from `carrier` or through the mesh from its gossip
    /// author `carrier`.
    fn on_envelope(&mut self, carrier: Option<PeerId>, bytes: &[u8], direct: bool) {
        // Only the recipient opens it; the header says who that is (an envelope for someone
        // else travels on through gossip, untouched).
        let recipient = bytes.get(RECIPIENT_AT..RECIPIENT_AT + 32);
        if recipient != Some(self.identity.peer_id().as_bytes().as_slice()) {
            if direct {
                self.stats.refused += 1;
            }
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
        if !self.seen.insert(opened.id) {
            self.stats.duplicates += 1;
            return;
        }
        self.order.push_back(opened.id);
        if self.order.len() > SEEN_LIMIT
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        match opened.plaintext.split_first() {
            Some((&MESSAGE_VERSION, [KIND_MESSAGE, body @ ..])) => {
                self.stats.received += 1;
                self.emit(MessagingEvent::Message(Message {
                    from: opened.sender,
                    id: opened.id,
                    body: body.to_vec(),
                    direct,
                }));
                if let Err(e) = self.send(opened.sender, KIND_RECEIPT, opened.id.as_bytes()) {
                    tracing::debug!(error = %e, "receipt not sent");
                }
            }
            Some((&MESSAGE_VERSION, [KIND_RECEIPT, id @ ..])) if id.len() == 32 => {
                let mut b = [0u8; 32];
                b.copy_from_slice(id);
                self.emit(MessagingEvent::Delivered {
                    id: Hash256(b),
                    by: opened.sender,
                });
            }
            _ => self.stats.refused += 1,
        }
    }

    fn emit(&mut self, e: MessagingEvent) {
        if self.events.try_send(e).is_err() {
            self.stats.events_dropped += 1;
        }
    }
}
