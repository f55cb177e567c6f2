//! Signaling relayed through existing mesh connections.
//!
//! Every node runs one [`MeshSignaling`] over its open links (of any transport). It is both a
//! client (dial a neighbour's neighbour through that neighbour, or upgrade a link to a direct
//! neighbour) and a relay for others. Messages travel in [`ProtocolId::SIGNALING`] frames:
//!
//! ```text
//! version u8 = 1 | kind u8 | exchange u64 LE | peer [32] | body_len u16 LE | body
//! kind: 1 offer, 2 answer, 3 unreachable; | 0x80 when delivered (peer = origin),
//!       without it a request to relay (peer = destination)
//! ```
//!
//! A relay replaces nothing but the `peer` field, with the identity the link authenticated, so
//! a receiver always learns which neighbour a message came through. The relay forwards exactly
//! one message for each it receives (no amplification) and answers `unreachable` when the
//! destination is not one of its links.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use mesh_crypto::PeerId;
use mesh_crypto::wire::Reader;
use mesh_platform::limit::KeyedLimiter;
use mesh_platform::runtime::Runtime;
use mesh_transport::pool::Pool;
use mesh_transport::{Connection, Frame, ProtocolId, Transport};
use tokio::sync::{mpsc, oneshot};

use super::{IncomingOffer, MAX_SIGNALING_MESSAGE, Responder, Signaling, SignalingError};

const VERSION: u8 = 1;
const OFFER: u8 = 1;
const ANSWER: u8 = 2;
const UNREACHABLE: u8 = 3;
const DELIVERED: u8 = 0x80;
/// Offers waiting for the transport to take them; more are refused as unreachable.
pub const MAX_QUEUED_OFFERS: usize = 32;
/// Exchanges this node waits on at once.
pub const MAX_PENDING_EXCHANGES: usize = 256;
/// Signaling frames one peer may send a minute (offers, answers, relay requests) when
/// attached to a pool; more are dropped.
pub const SIGNALING_PER_MINUTE: u32 = 120;
/// Signaling frames handled at once when attached to a pool; more are dropped.
pub const MAX_HANDLING: usize = 64;
/// Longest time one frame's handling (a relay's send, an answer) may take.
pub const HANDLING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    kind: u8,
    exchange: u64,
    peer: PeerId,
    body: Vec<u8>,
}

impl Message {
    fn encode(&self) -> Result<Frame, SignalingError> {
        let len = u16::try_from(self.body.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_SIGNALING_MESSAGE)
            .ok_or(SignalingError::TooLarge {
                len: self.body.len(),
                max: MAX_SIGNALING_MESSAGE,
            })?;
        let mut out = Vec::with_capacity(44 + self.body.len());
        out.extend_from_slice(&[VERSION, self.kind]);
        out.extend_from_slice(&self.exchange.to_le_bytes());
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.body);
        Frame::new(ProtocolId::SIGNALING, out).map_err(|e| SignalingError::Malformed(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<Self, SignalingError> {
        let parse = || -> Result<Self, mesh_crypto::Error> {
            let mut r = Reader::new(bytes);
            if r.u8()? != VERSION {
                return Err(mesh_crypto::Error::Malformed("unknown signaling version"));
            }
            let kind = r.u8()?;
            if !matches!(kind & !DELIVERED, OFFER | ANSWER | UNREACHABLE) {
                return Err(mesh_crypto::Error::Malformed("unknown signaling kind"));
            }
            let exchange = r.u64_le()?;
            let peer = PeerId::from_bytes(r.array()?)?;
            let len = usize::from(r.u16_le()?);
            if len > MAX_SIGNALING_MESSAGE {
                return Err(mesh_crypto::Error::Malformed("signaling body too long"));
            }
            let body = r.bytes(len)?.to_vec();
            r.finish()?;
            Ok(Self {
                kind,
                exchange,
                peer,
                body,
            })
        };
        parse().map_err(|e| SignalingError::Malformed(e.to_string()))
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Vec<u8>, SignalingError>>>;

#[cfg(not(target_arch = "wasm32"))]
type LinkLookup = dyn Fn(&PeerId) -> Option<Arc<dyn Connection>> + Send + Sync;
#[cfg(target_arch = "wasm32")]
type LinkLookup = dyn Fn(&PeerId) -> Option<Arc<dyn Connection>>;

/// Signaling over this node's mesh links; also relays for its neighbours.
pub struct MeshSignaling {
    own: PeerId,
    links: Mutex<HashMap<PeerId, Arc<dyn Connection>>>,
    /// The pool's links, once attached ([`MeshSignaling::attach`]).
    lookup: OnceLock<Box<LinkLookup>>,
    /// Whether offers for this node are taken (otherwise answered `unreachable`).
    accepting: AtomicBool,
    pending: Arc<Mutex<Pending>>,
    offers_tx: mpsc::Sender<IncomingOffer>,
    offers_rx: tokio::sync::Mutex<mpsc::Receiver<IncomingOffer>>,
}

impl std::fmt::Debug for MeshSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSignaling")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl MeshSignaling {
    /// Signaling for the node `own`.
    pub fn new(own: PeerId) -> Self {
        let (offers_tx, offers_rx) = mpsc::channel(MAX_QUEUED_OFFERS);
        Self {
            own,
            links: Mutex::new(HashMap::new()),
            lookup: OnceLock::new(),
            accepting: AtomicBool::new(true),
            pending: Arc::new(Mutex::new(HashMap::new())),
            offers_tx,
            offers_rx: tokio::sync::Mutex::new(offers_rx),
        }
    }

    /// Makes an open link available for signaling (to relay through, or to its peer).
    pub fn add_link(&self, link: Arc<dyn Connection>) {
        if let Ok(mut links) = self.links.lock() {
            links.insert(link.remote(), link);
        }
    }

    /// Forgets the link to `peer`.
    pub fn remove_link(&self, peer: &PeerId) {
        if let Ok(mut links) = self.links.lock() {
            links.remove(peer);
        }
    }

    fn link(&self, peer: &PeerId) -> Option<Arc<dyn Connection>> {
        if let Some(link) = self.links.lock().ok()?.get(peer).cloned() {
            return Some(link);
        }
        self.lookup.get().and_then(|lookup| lookup(peer))
    }

    /// Whether offers relayed to this node are taken (the default) or answered `unreachable`
    /// at once: a node that refuses them links only to peers that know its own endpoint or
    /// that it dials itself (its address stays hidden from the others), and is otherwise
    /// reached through the mesh. It still relays for others. That it is online and linked
    /// to a relay is not hidden: a refusal comes back later than a relay's own `unreachable`
    /// for a peer it has no link to.
    pub fn set_accepting(&self, accept: bool) {
        self.accepting.store(accept, Ordering::Relaxed);
    }

    /// Signals over `pool`'s links: relays through them, and handles the
    /// [`ProtocolId::SIGNALING`] frames that arrive on them (frames that do not parse are
    /// dropped and logged). Each peer may send [`SIGNALING_PER_MINUTE`] frames a minute; each
    /// frame is handled in a task of its own, at most [`MAX_HANDLING`] at once and for
    /// [`HANDLING_TIMEOUT`] each, so a link that stops reading cannot stall signaling (nor
    /// the links whose frames wait behind it). Holds the pool weakly: it goes when its node
    /// drops it. Links added with [`MeshSignaling::add_link`] are still used first. Call once.
    pub fn attach<T, R>(self: &Arc<Self>, pool: &Pool<T, R>, runtime: &R)
    where
        T: Transport + 'static,
        T::Connection: 'static,
        R: Runtime,
    {
        let links = pool.downgrade();
        let lookup: Box<LinkLookup> = Box::new(move |peer: &PeerId| {
            links
                .upgrade()?
                .connection(peer)
                .map(|c| -> Arc<dyn Connection> { c })
        });
        if self.lookup.set(lookup).is_err() {
            tracing::warn!("MeshSignaling::attach called twice: the first pool stays");
            return;
        }
        let mut frames = pool.subscribe(ProtocolId::SIGNALING);
        let this = Arc::clone(self);
        let rt = runtime.clone();
        runtime.spawn(Box::pin(async move {
            let mut limits = KeyedLimiter::per_minute(SIGNALING_PER_MINUTE);
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDLING));
            while let Some(f) = frames.recv().await {
                limits.advance(rt.monotonic());
                if !limits.check(&f.from) {
                    tracing::debug!(peer = %f.from, "signaling: over the rate, frame dropped");
                    continue;
                }
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!(peer = %f.from, "signaling: busy, frame dropped");
                    continue;
                };
                let this = Arc::clone(&this);
                let timer = rt.clone();
                rt.spawn(Box::pin(async move {
                    tokio::select! {
                        r = this.on_frame(f.from, &f.payload) => if let Err(e) = r {
                            tracing::debug!(peer = %f.from, error = %e, "signaling frame");
                        },
                        () = timer.sleep(HANDLING_TIMEOUT) => {
                            tracing::debug!(peer = %f.from, "signaling frame: timed out");
                        }
                    }
                    drop(slot);
                }));
            }
        }));
    }

    /// Answers the offer of exchange `exchange` from `origin`, which came over the link to
    /// `via`, with `unreachable`.
    async fn unreachable(
        &self,
        via: PeerId,
        origin: PeerId,
        exchange: u64,
    ) -> Result<(), SignalingError> {
        let via = self.link(&via).ok_or(SignalingError::Closed)?;
        send_via(
            via.as_ref(),
            self.own,
            origin,
            UNREACHABLE,
            exchange,
            Vec::new(),
        )
        .await
    }

    /// Handles the payload of a [`ProtocolId::SIGNALING`] frame received on the link to `via`:
    /// relays it, queues an offer, or completes an exchange.
    ///
    /// # Errors
    /// [`SignalingError::Malformed`] for bad input (the caller may count it against `via`);
    /// [`SignalingError::Closed`] when a link to forward on failed.
    pub async fn on_frame(&self, via: PeerId, payload: &[u8]) -> Result<(), SignalingError> {
        let msg = Message::decode(payload)?;
        if msg.kind & DELIVERED == 0 {
            return self.relay(via, msg).await;
        }
        match msg.kind & !DELIVERED {
            OFFER if !self.accepting.load(Ordering::Relaxed) => {
                self.unreachable(via, msg.peer, msg.exchange).await
            }
            OFFER => {
                let responder = Box::new(MeshResponder {
                    via: self.link(&via).ok_or(SignalingError::Closed)?,
                    own: self.own,
                    origin: msg.peer,
                    exchange: msg.exchange,
                });
                let offer = IncomingOffer {
                    offer: msg.body,
                    responder,
                };
                if self.offers_tx.try_send(offer).is_err() {
                    // Full: say so at once rather than let the dialer wait for its timeout.
                    tracing::debug!(%via, "signaling: offer queue full, answered unreachable");
                    return self.unreachable(via, msg.peer, msg.exchange).await;
                }
                Ok(())
            }
            kind => {
                let waiter = self
                    .pending
                    .lock()
                    .map_err(|_| SignalingError::Closed)?
                    .remove(&msg.exchange);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(if kind == ANSWER {
                        Ok(msg.body)
                    } else {
                        Err(SignalingError::Unreachable(msg.peer.to_string()))
                    });
                }
                Ok(())
            }
        }
    }

    async fn relay(&self, via: PeerId, msg: Message) -> Result<(), SignalingError> {
        let (to, out) = match self.link(&msg.peer) {
            Some(dest) if msg.peer != via => (
                dest,
                Message {
                    kind: msg.kind | DELIVERED,
                    peer: via,
                    ..msg
                },
            ),
            _ => (
                self.link(&via).ok_or(SignalingError::Closed)?,
                Message {
                    kind: UNREACHABLE | DELIVERED,
                    exchange: msg.exchange,
                    peer: msg.peer,
                    body: Vec::new(),
                },
            ),
        };
        to.send(out.encode()?)
            .await
            .map_err(|_| SignalingError::Closed)
    }
}

/// Sends the message for `dest` on the link to `via`: delivered directly when `via` is the
/// destination, otherwise as a request to relay.
async fn send_via(
    via: &dyn Connection,
    own: PeerId,
    dest: PeerId,
    kind: u8,
    exchange: u64,
    body: Vec<u8>,
) -> Result<(), SignalingError> {
    let msg = if via.remote() == dest {
        Message {
            kind: kind | DELIVERED,
            exchange,
            peer: own,
            body,
        }
    } else {
        Message {
            kind,
            exchange,
            peer: dest,
            body,
        }
    };
    via.send(msg.encode()?)
        .await
        .map_err(|_| SignalingError::Closed)
}

struct MeshResponder {
    via: Arc<dyn Connection>,
    own: PeerId,
    origin: PeerId,
    exchange: u64,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl Responder for MeshResponder {
    async fn answer(self: Box<Self>, answer: Vec<u8>) -> Result<(), SignalingError> {
        send_via(
            self.via.as_ref(),
            self.own,
            self.origin,
            ANSWER,
            self.exchange,
            answer,
        )
        .await
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl Signaling for MeshSignaling {
    /// `address` is the relay's `PeerId` in text form; empty (or `to` itself) sends directly on
    /// the link to `to`.
    async fn exchange(
        &self,
        to: PeerId,
        address: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<u8>, SignalingError> {
        let via_peer = if address.is_empty() {
            to
        } else {
            address.parse::<PeerId>().map_err(|_| {
                SignalingError::Unreachable(format!("not a relay PeerId: {address}"))
            })?
        };
        let via = self
            .link(&via_peer)
            .ok_or_else(|| SignalingError::Unreachable(format!("no link to {via_peer}")))?;
        let mut id = [0u8; 8];
        dryoc::rng::copy_randombytes(&mut id);
        let exchange = u64::from_le_bytes(id);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| SignalingError::Closed)?;
            if pending.len() >= MAX_PENDING_EXCHANGES {
                return Err(SignalingError::Refused(
                    "too many signaling exchanges in flight".into(),
                ));
            }
            pending.insert(exchange, tx);
        }
        // Removes the pending exchange however the wait ends (answer, timeout, cancellation).
        let pending = self.pending.clone();
        let _guard = crate::on_drop(move || {
            if let Ok(mut p) = pending.lock() {
                p.remove(&exchange);
            }
        });
        send_via(via.as_ref(), self.own, to, OFFER, exchange, offer).await?;
        rx.await.map_err(|_| SignalingError::Closed)?
    }

    async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
        self.offers_rx
            .lock()
            .await
            .recv()
            .await
            .ok_or(SignalingError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use mesh_crypto::Identity;

    use super::*;

    #[test]
    fn messages_round_trip_and_bad_input_is_refused() {
        let m = Message {
            kind: OFFER,
            exchange: 42,
            peer: Identity::from_seed(&[1; 32]).peer_id(),
            body: vec![5; 100],
        };
        let f = m.encode().unwrap();
        assert_eq!(f.protocol, ProtocolId::SIGNALING);
        assert_eq!(Message::decode(&f.payload).unwrap(), m);
        for cut in 0..f.payload.len() {
            assert!(Message::decode(&f.payload[..cut]).is_err());
        }
        let mut bad = f.payload.clone();
        bad[1] = 7;
        assert!(Message::decode(&bad).is_err());
        let mut bad = f.payload;
        bad[0] = 2;
        assert!(Message::decode(&bad).is_err());
        let big = Message {
            body: vec![0; MAX_SIGNALING_MESSAGE + 1],
            ..m
        };
        assert!(matches!(big.encode(), Err(SignalingError::TooLarge { .. })));
    }
}
