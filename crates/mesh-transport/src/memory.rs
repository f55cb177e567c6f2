//! An in-process [`Transport`]: links are bounded channels with configurable latency and loss,
//! authenticated by the handshake and encrypted like any link without its own security.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::Runtime;
use tokio::sync::mpsc;

use crate::handshake::{Initiator, Responder};
use crate::link::{Incoming, Link};
use crate::quality::ConnectionQuality;
use crate::{Connection, Frame, Transport, TransportError, TransportKind};

/// Most messages queued in one direction of a link.
pub const MAX_QUEUE: usize = 4096;
/// How long a handshake may take before the link is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most links waiting to be accepted per listener.
pub const MAX_PENDING_ACCEPTS: usize = 64;

/// Link properties of a [`MemoryNetwork`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way delay of every message.
    pub latency: Duration,
    /// Probability that a frame is lost after the handshake (0.0 to 1.0).
    pub loss: f64,
    /// Messages queued per direction before `send` waits (1 to [`MAX_QUEUE`]).
    pub queue: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            loss: 0.0,
            queue: 64,
        }
    }
}

struct Packet {
    deliver_at: Duration,
    bytes: Vec<u8>,
}

struct RawLink {
    tx: mpsc::Sender<Packet>,
    rx: mpsc::Receiver<Packet>,
}

/// The "network": addresses to listeners.
pub struct MemoryNetwork<R: Runtime> {
    runtime: R,
    config: LinkConfig,
    listeners: Mutex<HashMap<String, mpsc::Sender<RawLink>>>,
}

impl<R: Runtime> std::fmt::Debug for MemoryNetwork<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> MemoryNetwork<R> {
    /// A network whose links all have `config`.
    pub fn new(runtime: R, config: LinkConfig) -> Arc<Self> {
        let config = LinkConfig {
            queue: config.queue.clamp(1, MAX_QUEUE),
            loss: config.loss.clamp(0.0, 1.0),
            ..config
        };
        Arc::new(Self {
            runtime,
            config,
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// A transport for `identity` listening at `address`.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if the address is taken.
    pub fn transport(
        self: &Arc<Self>,
        identity: Arc<Identity>,
        address: &str,
    ) -> Result<MemoryTransport<R>, TransportError> {
        let (tx, rx) = mpsc::channel(MAX_PENDING_ACCEPTS);
        let mut listeners = self.listeners.lock().map_err(|_| TransportError::Closed)?;
        if listeners.contains_key(address) {
            return Err(TransportError::Unreachable(format!(
                "address {address} already in use"
            )));
        }
        listeners.insert(address.to_string(), tx);
        Ok(MemoryTransport {
            net: Arc::clone(self),
            identity,
            incoming: tokio::sync::Mutex::new(rx),
        })
    }

    fn link(&self) -> (RawLink, RawLink) {
        let (a_tx, b_rx) = mpsc::channel(self.config.queue);
        let (b_tx, a_rx) = mpsc::channel(self.config.queue);
        (
            RawLink { tx: a_tx, rx: a_rx },
            RawLink { tx: b_tx, rx: b_rx },
        )
    }
}

/// One peer's endpoint on a [`MemoryNetwork`].
pub struct MemoryTransport<R: Runtime> {
    net: Arc<MemoryNetwork<R>>,
    identity: Arc<Identity>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<RawLink>>,
}

impl<R: Runtime> std::fmt::Debug for MemoryTransport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("peer", &self.identity.peer_id())
            .finish_non_exhaustive()
    }
}

async fn raw_recv<R: Runtime>(runtime: &R, link: &mut RawLink) -> Result<Vec<u8>, TransportError> {
    let timeout = runtime.sleep(HANDSHAKE_TIMEOUT);
    tokio::select! {
        p = link.rx.recv() => p.map(|p| p.bytes).ok_or(TransportError::Closed),
        () = timeout => Err(TransportError::Timeout),
    }
}

async fn raw_send(link: &RawLink, bytes: Vec<u8>) -> Result<(), TransportError> {
    link.tx
        .send(Packet {
            deliver_at: Duration::ZERO,
            bytes,
        })
        .await
        .map_err(|_| TransportError::Closed)
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<R: Runtime> Transport for MemoryTransport<R> {
    type Connection = MemoryConnection<R>;

    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }

    async fn dial(
        &self,
        peer: PeerId,
        address: &str,
    ) -> Result<MemoryConnection<R>, TransportError> {
        let listener = self
            .net
            .listeners
            .lock()
            .map_err(|_| TransportError::Closed)?
            .get(address)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable(address.to_string()))?;
        let (mut mine, theirs) = self.net.link();
        listener
            .send(theirs)
            .await
            .map_err(|_| TransportError::Unreachable(address.to_string()))?;
        let (initiator, m1) = Initiator::start(b"", Some(peer))?;
        raw_send(&mine, m1).await?;
        let m2 = raw_recv(&self.net.runtime, &mut mine).await?;
        let (m3, session) = initiator.on_m2(&self.identity, &m2)?;
        raw_send(&mine, m3).await?;
        Ok(MemoryConnection::new(&self.net, mine, session))
    }

    async fn accept(&self) -> Result<MemoryConnection<R>, TransportError> {
        loop {
            let mut link = self
                .incoming
                .lock()
                .await
                .recv()
                .await
                .ok_or(TransportError::Closed)?;
            let result = async {
                let m1 = raw_recv(&self.net.runtime, &mut link).await?;
                let (responder, m2) = Responder::on_m1(&self.identity, b"", &m1)?;
                raw_send(&link, m2).await?;
                let m3 = raw_recv(&self.net.runtime, &mut link).await?;
                Ok::<_, TransportError>(responder.on_m3(&m3)?)
            }
            .await;
            match result {
                Ok(session) => return Ok(MemoryConnection::new(&self.net, link, session)),
                // A failed handshake drops that link only; keep accepting others.
                Err(e) => tracing::debug!(error = %e, "inbound handshake failed"),
            }
        }
    }
}

/// A link of the memory transport.
pub struct MemoryConnection<R: Runtime> {
    remote: PeerId,
    runtime: R,
    config: LinkConfig,
    /// Taken (dropped) on close, which ends the remote's receive loop even if frames are lost.
    tx: Mutex<Option<mpsc::Sender<Packet>>>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Packet>>,
    link: Link,
}

impl<R: Runtime> std::fmt::Debug for MemoryConnection<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConnection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

fn lost(p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    let mut b = [0u8; 8];
    dryoc::rng::copy_randombytes(&mut b);
    #[allow(clippy::cast_precision_loss)]
    let x = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    x < p
}

impl<R: Runtime> MemoryConnection<R> {
    fn new(net: &MemoryNetwork<R>, link: RawLink, session: crate::handshake::Session) -> Self {
        Self {
            remote: session.remote,
            runtime: net.runtime.clone(),
            config: net.config,
            tx: Mutex::new(Some(link.tx)),
            rx: tokio::sync::Mutex::new(link.rx),
            link: Link::sealed(session, false),
        }
    }

    /// Puts sealed bytes on the wire; `reliable` messages (a close) are never lost.
    async fn transmit(&self, sealed: Vec<u8>, reliable: bool) -> Result<(), TransportError> {
        if !reliable && lost(self.config.loss) {
            return Ok(());
        }
        let deliver_at = self.runtime.monotonic() + self.config.latency;
        let tx = self
            .tx
            .lock()
            .map_err(|_| TransportError::Closed)?
            .clone()
            .ok_or(TransportError::Closed)?;
        tx.send(Packet {
            deliver_at,
            bytes: sealed,
        })
        .await
        .map_err(|_| TransportError::Closed)
    }

    /// Drops the sending side, so the remote sees the link closed.
    fn hang_up(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<R: Runtime> Connection for MemoryConnection<R> {
    fn remote(&self) -> PeerId {
        self.remote
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }

    fn quality(&self) -> ConnectionQuality {
        self.link.quality()
    }

    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let sealed = self.link.seal_frame(&frame)?;
        self.transmit(sealed, false).await
    }

    async fn recv(&self) -> Result<Frame, TransportError> {
        let mut rx = self.rx.lock().await;
        loop {
            if self.link.is_closed() {
                return Err(TransportError::Closed);
            }
            let packet = rx.recv().await.ok_or(TransportError::Closed)?;
            let now = self.runtime.monotonic();
            if packet.deliver_at > now {
                self.runtime
                    .sleep(packet.deliver_at.saturating_sub(now))
                    .await;
            }
            // Bad input from the peer closes the link with a typed error.
            match self
                .link
                .receive(&packet.bytes, self.runtime.monotonic())
                .inspect_err(|_| self.hang_up())?
            {
                Incoming::Frame(f) => return Ok(f),
                Incoming::Reply(pong) => self.transmit(pong, false).await?,
                Incoming::Nothing => {}
                Incoming::Closed => {
                    self.hang_up();
                    return Err(TransportError::Closed);
                }
            }
        }
    }

    async fn ping(&self) -> Result<(), TransportError> {
        let sealed = self.link.ping(self.runtime.monotonic())?;
        self.transmit(sealed, false).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        if let Ok(sealed) = self.link.close() {
            let _ = self.transmit(sealed, true).await;
        }
        self.hang_up();
        Ok(())
    }
}
