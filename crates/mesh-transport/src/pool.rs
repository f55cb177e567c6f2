//! A pool of connections shared by every protocol of a node.
//!
//! One link per peer carries all protocols ([`ProtocolId`] tags each frame). The pool dials on
//! demand when a protocol sends to a peer it has no link to, accepts incoming links, reads each
//! link in a task of its own and hands frames to the protocol that subscribed to their id.
//! Frames of a protocol nobody subscribed to are dropped (and counted).
//!
//! Every link starts with a [`ProtocolId::PEER`] frame in each direction: the address its
//! sender can be dialed at (`version u8 = 1 | len u16 LE | address`, empty if none). A peer
//! that accepted a link learns from it where to reach the dialer again, and can tell others
//! (the DHT puts it in its contacts).
//!
//! Keepalive: a link silent for [`Keepalive::interval`] is pinged, and one from which nothing
//! came (no frame, no pong) for [`Keepalive::timeout`], with at least two pings unanswered, is
//! closed as dead, so that a link whose other end went away without a word (its close lost, a
//! half-open WebRTC connection, a radio out of range) does not look open for ever: the node
//! dials again, and gossip pulls on the new link. Silence is only counted while checks run on
//! time: after a gap (timers throttled in a hidden browser tab, a stalled runtime) every link
//! starts afresh. A peer whose protocol stops reading for longer than the timeout, with our
//! ping queued behind what we sent it, looks dead too: its link is closed and dialed again,
//! which the protocols treat as loss.
//!
//! Limits: [`MAX_CONNECTIONS`] links (more incoming ones are closed at once);
//! [`INCOMING_QUEUE`] frames waiting per protocol (a full queue stops reading the links that
//! feed it: backpressure to the senders, not unbounded memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_crypto::PeerId;
use mesh_platform::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::frame::{decode_peer_address, encode_peer_address};
use crate::{Connection, Frame, ProtocolId, Transport, TransportError};

/// Links open at once at most.
pub const MAX_CONNECTIONS: usize = 256;
/// Frames queued per subscribed protocol before the links feeding it wait.
pub const INCOMING_QUEUE: usize = 1024;
/// How long the losing one of two links to the same peer is still read before it is closed.
pub const LOSER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// When links are pinged and when a silent one is closed ([`Pool::set_keepalive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// A link from which nothing came for this long is pinged (checked this often; at least
    /// 10 ms).
    pub interval: Duration,
    /// A link from which nothing (no frame, no pong) came for this long, and that left at
    /// least two pings unanswered, is closed as dead (at least two intervals).
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// Pinged after 10 s of silence, closed after 45 s: about four pings unanswered in a row,
    /// so a lossy but live link survives (a lost ping is retried at the next check).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(45),
        }
    }
}

impl Keepalive {
    /// Within its limits: an interval of at least 10 ms (no busy loop), a timeout of at least
    /// two intervals (a link is pinged before it is judged).
    fn checked(self) -> Self {
        let interval = self.interval.max(Duration::from_millis(10));
        Self {
            interval,
            timeout: self.timeout.max(interval.saturating_mul(2)),
        }
    }
}

/// Pings a silent link must have left unanswered before it is closed as dead.
const UNANSWERED: u32 = 2;

/// What the keepalive task knows of one link.
struct Watched {
    /// The link's count of answered pings at the last check.
    pongs: u32,
    /// When it last showed it was alive (a frame, a pong, or when the task began watching).
    alive_at: u64,
    /// Pings sent since then.
    pings: u32,
}

/// `Link::heard` while the link's reader waits to hand a frame on (backpressure): the link is
/// alive, it is the protocol that is slow, and pongs are not read meanwhile.
const HANDING_ON: u64 = u64::MAX;

/// A frame that arrived for a subscribed protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The authenticated sender.
    pub from: PeerId,
    /// Where the sender says it can be dialed (empty if it did not say, or not yet).
    pub address: String,
    /// The frame's payload.
    pub payload: Vec<u8>,
}

struct Link<C> {
    conn: Arc<C>,
    /// Whether this side dialed it.
    dialed: bool,
    /// Distinguishes this link from a later one to the same peer.
    serial: u64,
    /// The address the peer advertised.
    address: Arc<Mutex<String>>,
    /// When a frame last came from it (the runtime's monotonic milliseconds), or
    /// [`HANDING_ON`].
    heard: Arc<AtomicU64>,
}

struct Inner<T: Transport, R: Runtime> {
    transport: T,
    runtime: R,
    local: PeerId,
    local_address: String,
    /// One dial per peer at a time: later sends wait for it and use its link.
    dialing: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    links: Mutex<HashMap<PeerId, Link<T::Connection>>>,
    routes: Mutex<HashMap<u8, mpsc::Sender<Incoming>>>,
    serial: AtomicU64,
    dropped: AtomicU64,
    /// Set by [`Pool::shutdown`]: no more accepting, new links closed.
    stopped: watch::Sender<bool>,
    /// Bumped whenever a link comes up, goes down, or its peer's address becomes known.
    changes: watch::Sender<u64>,
    /// None: links are never pinged nor closed for silence.
    keepalive: watch::Sender<Option<Keepalive>>,
    /// Whether the keepalive task runs (started with the first link).
    keeping_alive: AtomicBool,
}

/// Runs its closure when dropped.
struct ReleaseGate<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for ReleaseGate<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// A [`Pool`] handle that does not keep it alive ([`Pool::downgrade`]).
pub struct WeakPool<T: Transport, R: Runtime> {
    inner: std::sync::Weak<Inner<T, R>>,
}

impl<T: Transport, R: Runtime> Clone for WeakPool<T, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport, R: Runtime> WeakPool<T, R> {
    /// The pool, if it still exists.
    pub fn upgrade(&self) -> Option<Pool<T, R>> {
        self.inner.upgrade().map(|inner| Pool { inner })
    }
}

/// The connection pool. Cheap to clone (a handle).
pub struct Pool<T: Transport, R: Runtime> {
    inner: Arc<Inner<T, R>>,
}

impl<T: Transport, R: Runtime> Clone for Pool<T, R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Transport + 'static, R: Runtime> std::fmt::Debug for Pool<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("local_address", &self.inner.local_address)
            .field("links", &self.connected().len())
            .finish_non_exhaustive()
    }
}

impl<T: Transport + 'static, R: Runtime> Pool<T, R> {
    /// A pool over `transport` for the node `local`, advertising `local_address` (empty: not
    /// dialable) to every peer it links with.
    pub fn new(transport: T, runtime: R, local: PeerId, local_address: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                runtime,
                local,
                local_address: local_address.to_string(),
                dialing: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
                serial: AtomicU64::new(1),
                changes: watch::channel(0).0,
                dropped: AtomicU64::new(0),
                stopped: watch::channel(false).0,
                keepalive: watch::channel(Some(Keepalive::default())).0,
                keeping_alive: AtomicBool::new(false),
            }),
        }
    }

    /// Changes when links are pinged and closed for silence (default [`Keepalive::default`];
    /// values below its limits are raised to them); `None` turns it off. Takes effect at once,
    /// and silence is counted afresh from then.
    pub fn set_keepalive(&self, keepalive: Option<Keepalive>) {
        self.inner
            .keepalive
            .send_replace(keepalive.map(Keepalive::checked));
    }

    /// The runtime the pool's tasks run on.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// The address this pool advertises.
    pub fn local_address(&self) -> &str {
        &self.inner.local_address
    }

    /// Frames of `protocol` from now on (a later subscription to the same id replaces this
    /// one). [`ProtocolId::PEER`] and [`ProtocolId::CONTROL`] belong to the pool and links.
    pub fn subscribe(&self, protocol: ProtocolId) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        if let Ok(mut routes) = self.inner.routes.lock() {
            routes.insert(protocol.0, tx);
        }
        rx
    }

    /// Peers with an open link.
    pub fn connected(&self) -> Vec<PeerId> {
        self.inner
            .links
            .lock()
            .map(|l| l.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The address `peer` advertised on its open link (empty if it advertised none), or
    /// `None` without a link.
    pub fn address_of(&self, peer: &PeerId) -> Option<String> {
        let links = self.inner.links.lock().ok()?;
        let link = links.get(peer)?;
        link.address.lock().ok().map(|a| a.clone())
    }

    /// Frames dropped because no protocol subscribed to their id.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Sends `frame` to `peer`, dialing `address` first if no link is open. A link that fails
    /// to send is dropped, and one new dial is tried.
    ///
    /// # Errors
    /// The dial's or the send's [`TransportError`].
    pub async fn send(
        &self,
        peer: PeerId,
        address: &str,
        frame: Frame,
    ) -> Result<(), TransportError> {
        if let Some((conn, serial)) = self.link(&peer) {
            match conn.send(frame.clone()).await {
                Ok(()) => return Ok(()),
                Err(_) => self.forget(&peer, serial),
            }
        }
        self.open(peer, address).await?.send(frame).await
    }

    /// Makes sure a link to `peer` is open, dialing `address` if none is.
    ///
    /// # Errors
    /// The dial's [`TransportError`].
    pub async fn dial(&self, peer: PeerId, address: &str) -> Result<(), TransportError> {
        if self.link(&peer).is_some() {
            return Ok(());
        }
        self.open(peer, address).await.map(|_| ())
    }

    /// The link to `peer`, dialed at `address` unless one opened meanwhile; concurrent
    /// callers share one dial.
    async fn open(
        &self,
        peer: PeerId,
        address: &str,
    ) -> Result<Arc<T::Connection>, TransportError> {
        if *self.inner.stopped.borrow() {
            return Err(TransportError::Closed);
        }
        if address.is_empty() {
            return Err(TransportError::Unreachable(
                "no link to the peer and no address to dial".into(),
            ));
        }
        let gate = {
            let mut dialing = self
                .inner
                .dialing
                .lock()
                .map_err(|_| TransportError::Closed)?;
            Arc::clone(dialing.entry(peer).or_default())
        };
        let _turn = gate.lock().await;
        // A dial that finished while we waited left its link.
        if let Some((conn, _)) = self.link(&peer) {
            return Ok(conn);
        }
        // However this ends (done, failed, cancelled), the gate goes once the link is in,
        // and only if it is still this dial's (a later dial may have made a new one).
        let inner = Arc::clone(&self.inner);
        let mine = Arc::clone(&gate);
        let _release = ReleaseGate(Some(move || {
            if let Ok(mut d) = inner.dialing.lock()
                && d.get(&peer).is_some_and(|g| Arc::ptr_eq(g, &mine))
            {
                d.remove(&peer);
            }
        }));
        let dialed = self.inner.transport.dial(peer, address).await?;
        self.add(dialed, Some(address)).await
    }

    /// Sends in a task of its own, abandoned after `timeout`, holding one of `permits` while
    /// it runs; with no permit free the frame is dropped and `false` returned. What protocol
    /// drivers use, so that a peer that stops reading cannot make a node hold frames without
    /// bound (their protocols treat a dropped frame as a lost one).
    pub fn spawn_send(
        &self,
        permits: &Arc<tokio::sync::Semaphore>,
        peer: PeerId,
        address: String,
        frame: Frame,
        timeout: std::time::Duration,
    ) -> bool {
        let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
            tracing::debug!(%peer, "send dropped: too many in flight");
            return false;
        };
        self.spawn_send_holding(permit, peer, address, frame, timeout);
        true
    }

    /// [`Pool::spawn_send`] with a permit the caller already holds (released when the send
    /// ends or times out): for callers that wait for a permit rather than drop the frame.
    pub fn spawn_send_holding(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        peer: PeerId,
        address: String,
        frame: Frame,
        timeout: std::time::Duration,
    ) {
        let pool = self.clone();
        let runtime = self.inner.runtime.clone();
        self.inner.runtime.spawn(Box::pin(async move {
            tokio::select! {
                r = pool.send(peer, &address, frame) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "send failed");
                    }
                }
                () = runtime.sleep(timeout) => {
                    tracing::debug!(%peer, "send timed out");
                }
            }
            drop(permit);
        }));
    }

    /// Accepts incoming links until the transport fails or [`Pool::shutdown`] (spawned on the
    /// runtime).
    pub fn start_accepting(&self) {
        let pool = self.clone();
        let mut stopped = self.inner.stopped.subscribe();
        self.inner.runtime.spawn(Box::pin(async move {
            loop {
                let accepted = tokio::select! {
                    r = pool.inner.transport.accept() => r,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Ok(conn) = accepted else {
                    return;
                };
                let p = pool.clone();
                pool.inner.runtime.spawn(Box::pin(async move {
                    // Over the limit (or shut down): refused by `add`, which closes it.
                    let _ = p.add(conn, None).await;
                }));
            }
        }));
    }

    /// Stops accepting and closes every link; links that arrive later are closed at once. The
    /// transport goes when the last handle to the pool does (its listeners with it).
    pub async fn shutdown(&self) {
        self.stop_accepting();
        self.close_all().await;
    }

    /// The first half of [`Pool::shutdown`], which does not wait: no more accepting or
    /// dialing; new links are closed at once; open ones stay until [`Pool::close_all`].
    pub fn stop_accepting(&self) {
        self.inner.stopped.send_replace(true);
    }

    /// Closes the link to `peer`, forgetting it first, so that the next [`Pool::dial`] makes a
    /// new link rather than finding the closing one (after a network change, say). Whether
    /// there was one.
    pub async fn close_link(&self, peer: &PeerId) -> bool {
        let link = self
            .inner
            .links
            .lock()
            .ok()
            .and_then(|mut l| l.remove(peer));
        let Some(link) = link else {
            return false;
        };
        self.changed();
        let _ = link.conn.close().await;
        true
    }

    /// Closes every link.
    pub async fn close_all(&self) {
        let conns: Vec<Arc<T::Connection>> = self
            .inner
            .links
            .lock()
            .map(|mut l| l.drain().map(|(_, link)| link.conn).collect())
            .unwrap_or_default();
        if !conns.is_empty() {
            self.changed();
        }
        // All at once: one slow close (a radio that does not answer) does not hold the rest.
        futures_util::future::join_all(conns.iter().map(|c| c.close())).await;
    }

    /// A handle that does not keep the pool alive (for what the pool itself owns, through its
    /// transport: signaling that relays over the pool's links, say).
    pub fn downgrade(&self) -> WeakPool<T, R> {
        WeakPool {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The open link to `peer`, if any (for protocols that talk over one link, such as
    /// signaling relayed by a neighbour).
    pub fn connection(&self, peer: &PeerId) -> Option<Arc<T::Connection>> {
        self.link(peer).map(|(conn, _)| conn)
    }

    fn link(&self, peer: &PeerId) -> Option<(Arc<T::Connection>, u64)> {
        let links = self.inner.links.lock().ok()?;
        links.get(peer).map(|l| (Arc::clone(&l.conn), l.serial))
    }

    fn forget(&self, peer: &PeerId, serial: u64) {
        if let Ok(mut links) = self.inner.links.lock()
            && links.get(peer).is_some_and(|l| l.serial == serial)
        {
            links.remove(peer);
            drop(links);
            self.changed();
        }
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes (`changed().await`) whenever a link comes up or goes down, or a linked peer's
    /// advertised address becomes known: a node reacts to links as they come (making them
    /// gossip neighbours, say) instead of polling [`Pool::connected`]. Ends (`Err`) when the
    /// pool is gone.
    pub fn watch_links(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Sends our address on a new link, registers it and starts reading it; returns the link
    /// to use. `dialed`: the address we reached it at.
    ///
    /// With a link to the peer already open, one of the two is closed, chosen so that both
    /// sides choose the same when they dialed each other at once: the link dialed by the
    /// lower `PeerId` stays. Two links dialed by the same side: the newer stays (the older
    /// one is likely dead).
    async fn add(
        &self,
        conn: T::Connection,
        dialed: Option<&str>,
    ) -> Result<Arc<T::Connection>, TransportError> {
        let conn = Arc::new(conn);
        let peer = conn.remote();
        if *self.inner.stopped.borrow() {
            let _ = conn.close().await;
            return Err(TransportError::Closed);
        }
        // First on the link, before any protocol's frame.
        let hello = Frame {
            protocol: ProtocolId::PEER,
            payload: encode_peer_address(&self.inner.local_address),
        };
        conn.send(hello).await?;
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let address = Arc::new(Mutex::new(dialed.unwrap_or_default().to_string()));
        let heard = Arc::new(AtomicU64::new(self.now_ms()));
        self.start_keepalive();
        {
            let mut links = self
                .inner
                .links
                .lock()
                .map_err(|_| TransportError::Closed)?;
            if links.len() >= MAX_CONNECTIONS && !links.contains_key(&peer) {
                drop(links);
                let c = Arc::clone(&conn);
                self.inner.runtime.spawn(Box::pin(async move {
                    let _ = c.close().await;
                }));
                return Err(TransportError::Unreachable(
                    "connection limit reached".into(),
                ));
            }
            // Checked again under the lock: a shutdown that drained the links while this one
            // sent its hello must not see it inserted afterwards.
            if *self.inner.stopped.borrow() {
                drop(links);
                let c = Arc::clone(&conn);
                self.inner.runtime.spawn(Box::pin(async move {
                    let _ = c.close().await;
                }));
                return Err(TransportError::Closed);
            }
            let ours = dialed.is_some() || conn.initiated_here();
            if let Some(old) = links.get(&peer) {
                let lower_dials = self.inner.local < peer;
                let (old_kind, new_kind) = (old.conn.kind(), conn.kind());
                let keep_old = if old.dialed == ours && old_kind != new_kind {
                    // Same side started both, over different transports: the order they came
                    // up in may differ between the two sides, the transports do not.
                    kind_rank(old_kind) >= kind_rank(new_kind)
                } else {
                    old.dialed != ours && old.dialed == lower_dials
                };
                let loser = if keep_old {
                    Arc::clone(&conn)
                } else {
                    Arc::clone(&old.conn)
                };
                // Closed after a grace period, read until then: frames the remote sent on it
                // before it made the same choice still arrive.
                let runtime = self.inner.runtime.clone();
                self.inner.runtime.spawn(Box::pin(async move {
                    runtime.sleep(LOSER_GRACE).await;
                    let _ = loser.close().await;
                }));
                if keep_old {
                    drop(links);
                    self.spawn_reader(peer, Arc::clone(&conn), None, address, heard);
                    return self
                        .link(&peer)
                        .map(|(c, _)| c)
                        .ok_or(TransportError::Closed);
                }
            }
            links.insert(
                peer,
                Link {
                    conn: Arc::clone(&conn),
                    dialed: ours,
                    serial,
                    address: Arc::clone(&address),
                    heard: Arc::clone(&heard),
                },
            );
        }
        self.changed();
        self.spawn_reader(peer, Arc::clone(&conn), Some(serial), address, heard);
        Ok(conn)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.runtime.monotonic().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Starts the keepalive task once (it holds the pool weakly and ends with it).
    fn start_keepalive(&self) {
        if self.inner.keeping_alive.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = self.downgrade();
        let runtime = self.inner.runtime.clone();
        let mut setting = self.inner.keepalive.subscribe();
        self.inner.runtime.spawn(Box::pin(async move {
            let mut watched: HashMap<u64, Watched> = HashMap::new();
            let mut last_check = None;
            loop {
                let current = *setting.borrow_and_update();
                let interval = {
                    let Some(pool) = weak.upgrade() else { return };
                    match current {
                        Some(k) => {
                            pool.keep_alive(k, &mut watched, &mut last_check);
                            k.interval
                        }
                        None => Keepalive::default().interval,
                    }
                };
                tokio::select! {
                    () = runtime.sleep(interval) => {}
                    changed = setting.changed() => {
                        // Gone with the pool; otherwise silence counts afresh from the change.
                        if changed.is_err() {
                            return;
                        }
                        watched.clear();
                        last_check = None;
                    }
                }
            }
        }));
    }

    /// One keepalive check: pings the links silent for `k.interval`; closes those silent for
    /// `k.timeout` that left [`UNANSWERED`] pings unanswered.
    fn keep_alive(
        &self,
        k: Keepalive,
        watched: &mut HashMap<u64, Watched>,
        last_check: &mut Option<u64>,
    ) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        // A check long overdue (timers throttled, as in a hidden browser tab, or the runtime
        // stalled): silence over a gap nobody watched proves nothing, so every link starts
        // afresh.
        if last_check.is_some_and(|t| now.saturating_sub(t) > ms(k.interval).saturating_mul(2)) {
            watched.clear();
        }
        *last_check = Some(now);
        let links: Vec<(PeerId, u64, Arc<T::Connection>, u64)> = match self.inner.links.lock() {
            Ok(l) => l
                .iter()
                .map(|(p, l)| {
                    (
                        *p,
                        l.serial,
                        Arc::clone(&l.conn),
                        l.heard.load(Ordering::Acquire),
                    )
                })
                .collect(),
            Err(_) => return,
        };
        watched.retain(|serial, _| links.iter().any(|l| l.1 == *serial));
        for (peer, serial, conn, heard) in links {
            let pongs = conn.quality().samples;
            let heard = if heard == HANDING_ON { now } else { heard };
            let w = watched.entry(serial).or_insert(Watched {
                pongs,
                alive_at: now,
                pings: 0,
            });
            if pongs != w.pongs {
                w.pongs = pongs;
                w.alive_at = now;
                w.pings = 0;
            }
            if heard > w.alive_at {
                w.alive_at = heard;
                w.pings = 0;
            }
            let silent = now.saturating_sub(w.alive_at);
            if silent >= ms(k.timeout) && w.pings >= UNANSWERED {
                tracing::debug!(%peer, silent_ms = silent, pings = w.pings, "link silent: closed as dead");
                self.forget(&peer, serial);
                self.inner.runtime.spawn(Box::pin(async move {
                    let _ = conn.close().await;
                }));
            } else if silent >= ms(k.interval) {
                w.pings += 1;
                // Bounded: a ping stuck behind a full send queue is retried at the next check.
                let (runtime, wait) = (self.inner.runtime.clone(), k.interval);
                self.inner.runtime.spawn(Box::pin(async move {
                    tokio::select! {
                        _ = conn.ping() => {}
                        () = runtime.sleep(wait) => {}
                    }
                }));
            }
        }
    }

    /// Reads `conn` until it fails or closes, then forgets it (if registered as `serial`) and
    /// closes our side too (not left to `Drop`).
    fn spawn_reader(
        &self,
        peer: PeerId,
        conn: Arc<T::Connection>,
        serial: Option<u64>,
        address: Arc<Mutex<String>>,
        heard: Arc<AtomicU64>,
    ) {
        let pool = self.clone();
        self.inner.runtime.spawn(Box::pin(async move {
            pool.read(peer, &conn, &address, &heard).await;
            if let Some(serial) = serial {
                pool.forget(&peer, serial);
            }
            let _ = conn.close().await;
        }));
    }

    async fn read(
        &self,
        peer: PeerId,
        conn: &T::Connection,
        address: &Mutex<String>,
        heard: &AtomicU64,
    ) {
        while let Ok(frame) = conn.recv().await {
            heard.store(self.now_ms(), Ordering::Release);
            if frame.protocol == ProtocolId::PEER {
                match decode_peer_address(&frame.payload) {
                    Ok(a) if !a.is_empty() => {
                        let new = address.lock().is_ok_and(|mut slot| {
                            let new = *slot != a;
                            *slot = a;
                            new
                        });
                        if new {
                            self.changed();
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
                continue;
            }
            let route = self
                .inner
                .routes
                .lock()
                .ok()
                .and_then(|r| r.get(&frame.protocol.0).cloned());
            let Some(route) = route else {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let incoming = Incoming {
                from: peer,
                address: address.lock().map(|a| a.clone()).unwrap_or_default(),
                payload: frame.payload,
            };
            heard.store(HANDING_ON, Ordering::Release);
            let handed = route.send(incoming).await;
            heard.store(self.now_ms(), Ordering::Release);
            if handed.is_err() {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Which of two links to one peer, started by the same side over different transports,
/// stays: the higher rank (WebRTC carries more than BLE).
fn kind_rank(kind: crate::TransportKind) -> u8 {
    match kind {
        crate::TransportKind::WebRtc => 2,
        crate::TransportKind::Ble => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keepalive_below_its_limits_is_raised_to_them() {
        let zero = Keepalive {
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        assert_eq!(
            zero.checked(),
            Keepalive {
                interval: Duration::from_millis(10),
                timeout: Duration::from_millis(20),
            }
        );
        let backwards = Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(backwards.checked().timeout, Duration::from_secs(20));
        assert_eq!(Keepalive::default().checked(), Keepalive::default());
        // No overflow with the largest values.
        let most = Keepalive {
            interval: Duration::MAX,
            timeout: Duration::ZERO,
        };
        assert_eq!(most.checked().timeout, Duration::MAX);
    }
}
