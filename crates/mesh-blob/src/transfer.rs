//! Blob transfer between peers, over a connection [`Pool`]: serving the local store, and
//! fetching a blob from a list of providers.
//!
//! **Fetching** ([`BlobService::fetch`]): the manifest is asked for first and checked against
//! the blob id; then chunks are asked for [`TransferConfig::window`] at a time, lowest missing
//! index first, and each is checked against the manifest before it is kept (the store's
//! importer does that). Chunks the store already has are never asked for. A provider that
//! sends a manifest or a chunk that does not match is reported in the result and the error
//! (and counted in `mesh.blob.transfer.chunks{result="bad"}`), its data refused, and the next
//! provider tried. A request that times out or cannot be sent is asked again (the pool redials
//! a lost link) until [`TransferConfig::max_failures`] failures in a row, then the next provider
//! is tried. A fetch that ran out of providers keeps what it got ([`MAX_PARTIALS`] such
//! fetches at most); a later fetch of the same blob resumes from the first missing chunk.
//!
//! **Serving**: manifests and chunks are read from the store (chunks verified on the way),
//! with at most [`TransferConfig::serve_per_peer`] requests of one peer in progress (more are
//! answered BUSY), [`TransferConfig::serve_max`] in all, and
//! [`TransferConfig::requests_per_minute`] per peer (more are dropped unanswered).
//!
//! **GC**: the service runs the store's [`BlobStore::gc`] every
//! [`TransferConfig::gc_interval`], in steps of [`TransferConfig::gc_budget`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};
use mesh_platform::limit::KeyedLimiter;
use mesh_platform::runtime::{BoxFuture, Runtime};
use mesh_platform::{MaybeSend, MaybeSync};
use mesh_transport::pool::{Incoming, Pool};
use mesh_transport::{Frame, ProtocolId, Transport, TransportError};
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::manifest::{BlobId, Manifest};
use crate::store::{BlobError, BlobStore, BlobWriter, PutOptions, Stored};
use crate::wire::{Message, Request, Response};

/// Fetches running at once at most (more wait their turn).
pub const MAX_FETCHES: usize = 8;
/// Chunk requests one fetch keeps in flight.
pub const WINDOW: usize = 8;
/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed requests in a row before a fetch moves to the next provider.
pub const MAX_FAILURES: u32 = 4;
/// BUSY answers one provider may give one fetch before it moves on.
pub const MAX_BUSY: u32 = 40;
/// How long a BUSY answer may take to send.
const BUSY_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait after a BUSY answer.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(200);
/// Requests of one peer served at once at most (more are answered BUSY).
pub const SERVE_PER_PEER: usize = 8;
/// Requests served at once at most, from all peers.
pub const SERVE_MAX: usize = 64;
/// Requests one peer may make per minute (more are dropped unanswered): about 200 MB a
/// minute of chunks at the default chunk size.
pub const REQUESTS_PER_MINUTE: u32 = 3000;
/// Unfinished fetches kept for resuming at most (the oldest is dropped, and GC removes what
/// it had written).
pub const MAX_PARTIALS: usize = 16;
/// Default interval of the GC task.
pub const GC_INTERVAL: Duration = Duration::from_secs(60);
/// Default work budget of one GC step.
pub const GC_BUDGET: usize = 4096;

/// Limits and timing of a [`BlobService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferConfig {
    /// See [`MAX_FETCHES`].
    pub max_fetches: usize,
    /// See [`WINDOW`].
    pub window: usize,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`MAX_FAILURES`].
    pub max_failures: u32,
    /// See [`SERVE_PER_PEER`].
    pub serve_per_peer: usize,
    /// See [`SERVE_MAX`].
    pub serve_max: usize,
    /// See [`REQUESTS_PER_MINUTE`].
    pub requests_per_minute: u32,
    /// See [`GC_INTERVAL`].
    pub gc_interval: Duration,
    /// See [`GC_BUDGET`].
    pub gc_budget: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_fetches: MAX_FETCHES,
            window: WINDOW,
            request_timeout: REQUEST_TIMEOUT,
            max_failures: MAX_FAILURES,
            serve_per_peer: SERVE_PER_PEER,
            serve_max: SERVE_MAX,
            requests_per_minute: REQUESTS_PER_MINUTE,
            gc_interval: GC_INTERVAL,
            gc_budget: GC_BUDGET,
        }
    }
}

/// What a successful fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The commit.
    pub stored: Stored,
    /// Chunks received from peers by this fetch.
    pub fetched_chunks: u32,
    /// Chunks that were already in when this fetch started (stored locally, or kept by an
    /// earlier, interrupted fetch).
    pub resumed_with: u32,
    /// Providers that sent data that did not match, and were dropped.
    pub bad_peers: Vec<PeerId>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No provider delivered the whole blob. What arrived is kept for a later fetch.
    #[error("blob {id} not fetched: {missing} chunks missing; bad providers: {bad_peers:?}")]
    Failed {
        /// The blob.
        id: BlobId,
        /// Chunks still missing (all of them while the manifest is unknown: `u32::MAX`).
        missing: u32,
        /// Providers that sent data that did not match.
        bad_peers: Vec<PeerId>,
    },
    /// The store refused or failed (limits, quota, storage).
    #[error(transparent)]
    Store(#[from] BlobError),
    /// The service was shut down.
    #[error("the blob service has stopped")]
    Stopped,
}

/// Counters of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferStats {
    /// Manifests sent.
    pub served_manifests: u64,
    /// Chunks sent.
    pub served_chunks: u64,
    /// Requests answered `NOT_FOUND`.
    pub not_found: u64,
    /// Requests answered BUSY.
    pub busy: u64,
    /// Requests dropped by the per-peer rate limit.
    pub rate_limited: u64,
    /// Messages that did not decode, or answers nobody asked for.
    pub bad_messages: u64,
    /// Chunks received and kept.
    pub fetched_chunks: u64,
    /// Chunks or manifests received that did not match.
    pub bad_chunks: u64,
}

#[derive(Default)]
struct Counters {
    served_manifests: AtomicU64,
    served_chunks: AtomicU64,
    not_found: AtomicU64,
    busy: AtomicU64,
    rate_limited: AtomicU64,
    bad_messages: AtomicU64,
    fetched_chunks: AtomicU64,
    bad_chunks: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The pool and runtime, with their types erased.
trait Net: MaybeSend + MaybeSync {
    fn send(
        &self,
        peer: PeerId,
        address: String,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    fn monotonic(&self) -> Duration;
    fn unix_time(&self) -> UnixMillis;
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

struct PoolNet<T: Transport, R: Runtime> {
    pool: Pool<T, R>,
    runtime: R,
}

impl<T: Transport + 'static, R: Runtime> Net for PoolNet<T, R> {
    fn send(
        &self,
        peer: PeerId,
        address: String,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let frame = Frame::new(ProtocolId::BLOB, payload)?;
            pool.send(peer, &address, frame).await
        })
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.runtime.sleep(d)
    }
    fn monotonic(&self) -> Duration {
        self.runtime.monotonic()
    }
    fn unix_time(&self) -> UnixMillis {
        self.runtime.unix_time()
    }
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.runtime.spawn(task);
    }
}

struct Route {
    peer: PeerId,
    /// The fetch that made the request.
    fetch: u64,
    tx: mpsc::Sender<(u64, Response)>,
}

/// Removes a fetch's routes when the fetch ends, however it ends (a caller may drop it).
struct RouteGuard<'a> {
    routes: &'a Mutex<HashMap<u64, Route>>,
    fetch: u64,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        lock(self.routes).retain(|_, r| r.fetch != self.fetch);
    }
}

struct Partial {
    id: BlobId,
    owner: PeerId,
    writer: BlobWriter,
}

struct Shared {
    net: Box<dyn Net>,
    store: BlobStore,
    config: TransferConfig,
    next_request: AtomicU64,
    routes: Mutex<HashMap<u64, Route>>,
    partials: Mutex<VecDeque<Partial>>,
    fetches: Arc<Semaphore>,
    serving: Mutex<HashMap<PeerId, usize>>,
    serve_permits: Arc<Semaphore>,
    limiter: Mutex<KeyedLimiter<PeerId>>,
    counters: Counters,
    stopped: AtomicBool,
    stop: Notify,
}

/// Serves the store to peers and fetches blobs from them. Cheap to clone (a handle).
#[derive(Clone)]
pub struct BlobService {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for BlobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobService")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Starts the service: subscribes to `ProtocolId::BLOB` frames on `pool` (the pool must
/// accept links: `Pool::start_accepting`), serves `store`, and runs its GC.
pub fn start<T: Transport + 'static, R: Runtime>(
    pool: &Pool<T, R>,
    runtime: &R,
    store: BlobStore,
    config: TransferConfig,
) -> BlobService {
    let rx = pool.subscribe(ProtocolId::BLOB);
    // On wasm32 the pool and store are `?Send` (one thread): the Arc only shares them between
    // tasks.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    let inner = Arc::new(Shared {
        net: Box::new(PoolNet {
            pool: pool.clone(),
            runtime: runtime.clone(),
        }),
        store,
        config,
        next_request: AtomicU64::new(1),
        routes: Mutex::new(HashMap::new()),
        partials: Mutex::new(VecDeque::new()),
        fetches: Arc::new(Semaphore::new(config.max_fetches.max(1))),
        serving: Mutex::new(HashMap::new()),
        serve_permits: Arc::new(Semaphore::new(config.serve_max.max(1))),
        limiter: Mutex::new(KeyedLimiter::per_minute(config.requests_per_minute)),
        counters: Counters::default(),
        stopped: AtomicBool::new(false),
        stop: Notify::new(),
    });
    runtime.spawn(Box::pin(receive_loop(Arc::clone(&inner), rx)));
    runtime.spawn(Box::pin(gc_loop(Arc::downgrade(&inner))));
    BlobService { inner }
}

async fn receive_loop(inner: Arc<Shared>, mut rx: mpsc::Receiver<Incoming>) {
    loop {
        let incoming = tokio::select! {
            i = rx.recv() => i,
            () = inner.stop.notified() => None,
        };
        let Some(incoming) = incoming else {
            return;
        };
        if inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        match Message::decode(&incoming.payload) {
            Err(e) => {
                tracing::debug!(peer = %incoming.from, error = %e, "bad blob message");
                bump(&inner.counters.bad_messages);
                inner.store.metrics().served("bad");
            }
            Ok(Message::Response(id, response)) => {
                let route = lock(&inner.routes).remove(&id);
                match route {
                    Some(r) if r.peer == incoming.from => {
                        // A full channel means the fetch is gone or far behind: drop it.
                        let _ = r.tx.try_send((id, response));
                    }
                    Some(r) => {
                        // Someone else answering: put the route back, ignore the answer.
                        lock(&inner.routes).insert(id, r);
                        bump(&inner.counters.bad_messages);
                    }
                    None => bump(&inner.counters.bad_messages),
                }
            }
            Ok(Message::Request(id, request)) => serve(&inner, incoming, id, request),
        }
    }
}

fn serve(inner: &Arc<Shared>, incoming: Incoming, id: u64, request: Request) {
    let peer = incoming.from;
    let allowed = {
        let mut l = lock(&inner.limiter);
        l.advance(inner.net.monotonic());
        l.check(&peer)
    };
    if !allowed {
        tracing::debug!(%peer, "blob request over the peer's rate: dropped");
        bump(&inner.counters.rate_limited);
        inner.store.metrics().served("rate_limited");
        return;
    }
    // The peer's own limit first, so that one peer cannot hold every slot.
    let admitted = {
        let mut serving = lock(&inner.serving);
        let n = serving.entry(peer).or_insert(0);
        if *n >= inner.config.serve_per_peer {
            false
        } else {
            *n += 1;
            true
        }
    };
    let permit = if admitted {
        let p = Arc::clone(&inner.serve_permits).try_acquire_owned().ok();
        if p.is_none() {
            release_slot(inner, &peer);
        }
        p
    } else {
        None
    };
    let task_inner = Arc::clone(inner);
    inner.net.spawn(Box::pin(async move {
        let inner = task_inner;
        let (response, timeout) = if permit.is_some() {
            (answer(&inner, request).await, inner.config.request_timeout)
        } else {
            bump(&inner.counters.busy);
            inner.store.metrics().served("busy");
            (Response::Busy, BUSY_SEND_TIMEOUT)
        };
        let payload = Message::Response(id, response).encode();
        let send = inner.net.send(peer, incoming.address, payload);
        tokio::select! {
            r = send => if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "blob answer not sent");
            },
            () = inner.net.sleep(timeout) => {
                tracing::debug!(%peer, "blob answer timed out");
            }
        }
        if let Some(permit) = permit {
            release_slot(&inner, &peer);
            drop(permit);
        }
    }));
}

/// Frees one of `peer`'s serving slots.
fn release_slot(inner: &Shared, peer: &PeerId) {
    let mut serving = lock(&inner.serving);
    if let Some(n) = serving.get_mut(peer) {
        *n -= 1;
        if *n == 0 {
            serving.remove(peer);
        }
    }
}

async fn answer(inner: &Shared, request: Request) -> Response {
    let store = &inner.store;
    match request {
        Request::GetManifest(b) => {
            if let Ok(Some(m)) = store.manifest(&b).await {
                bump(&inner.counters.served_manifests);
                store.metrics().served("ok");
                Response::Manifest(b, m.encode())
            } else {
                bump(&inner.counters.not_found);
                store.metrics().served("not_found");
                Response::NotFound(b)
            }
        }
        Request::GetChunk(b, i) => {
            // Missing, out of range, or corrupt here: never send what does not verify.
            if let Ok(c) = store.chunk(&b, i).await {
                bump(&inner.counters.served_chunks);
                store.metrics().served("ok");
                Response::Chunk(b, i, c)
            } else {
                bump(&inner.counters.not_found);
                store.metrics().served("not_found");
                Response::NotFound(b)
            }
        }
    }
}

async fn gc_loop(weak: std::sync::Weak<Shared>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        let sleep = inner.net.sleep(inner.config.gc_interval);
        drop(inner);
        sleep.await;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopped.load(Ordering::Relaxed) {
                return;
            }
            lock(&inner.limiter).reclaim_idle();
            let now = inner.net.unix_time();
            match inner.store.gc(now, inner.config.gc_budget).await {
                Ok(r) if r.done => break,
                Ok(_) => {
                    // Let other work in between steps.
                    let pause = inner.net.sleep(Duration::from_millis(10));
                    drop(inner);
                    pause.await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "blob GC failed");
                    break;
                }
            }
        }
    }
}

/// How one provider's attempt ended.
enum Attempt {
    Done,
    /// It does not have it, or stopped answering.
    Failed,
    /// It sent data that did not match.
    Bad,
}

impl BlobService {
    /// The store served and fetched into.
    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    /// Counters so far.
    pub fn stats(&self) -> TransferStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransferStats {
            served_manifests: get(&c.served_manifests),
            served_chunks: get(&c.served_chunks),
            not_found: get(&c.not_found),
            busy: get(&c.busy),
            rate_limited: get(&c.rate_limited),
            bad_messages: get(&c.bad_messages),
            fetched_chunks: get(&c.fetched_chunks),
            bad_chunks: get(&c.bad_chunks),
        }
    }

    /// Requests sent and not yet answered or given up on.
    pub fn requests_in_flight(&self) -> usize {
        lock(&self.inner.routes).len()
    }

    /// Unfinished fetches kept for resuming.
    pub fn partial_fetches(&self) -> usize {
        lock(&self.inner.partials).len()
    }

    /// Stops serving and the GC task; fetches in progress end with [`FetchError::Stopped`]
    /// at their next step.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        // notify_one keeps a permit if the receive loop is busy right now, so it still sees
        // the stop at its next wait (notify_waiters would be lost then).
        self.inner.stop.notify_one();
        self.inner.fetches.close();
        lock(&self.inner.partials).clear();
    }

    /// Fetches blob `id` from `providers` (peer and address to dial, tried in order) into
    /// the store, held by `owner` with `options`. A blob already stored only gets the hold.
    ///
    /// # Errors
    /// [`FetchError::Failed`] when no provider delivered it (what arrived is kept for a later
    /// fetch), [`FetchError::Store`] when the store refuses it (too large, quota) or fails,
    /// [`FetchError::Stopped`].
    pub async fn fetch(
        &self,
        id: BlobId,
        providers: &[(PeerId, String)],
        owner: PeerId,
        options: PutOptions,
    ) -> Result<FetchReport, FetchError> {
        let inner = &self.inner;
        let _permit = Arc::clone(&inner.fetches)
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Stopped)?;
        let token = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let _routes = RouteGuard {
            routes: &inner.routes,
            fetch: token,
        };
        let mut writer = self.take_partial(&id, &owner);
        if let Some(w) = writer.as_mut() {
            w.set_options(options);
        }
        if writer.is_none()
            && let Some(m) = inner.store.manifest(&id).await?
        {
            writer = Some(
                inner
                    .store
                    .importer(Manifest::clone(&m), owner, options)
                    .await?,
            );
        }
        let mut fetched = 0u32;
        let mut bad_peers = Vec::new();
        let (tx, mut rx) = mpsc::channel(inner.config.window.max(1) * 2 + 4);
        for (peer, address) in providers {
            if writer.as_ref().is_some_and(|w| w.missing() == 0) {
                break;
            }
            if bad_peers.contains(peer) {
                continue;
            }
            if inner.stopped.load(Ordering::Relaxed) {
                return Err(FetchError::Stopped);
            }
            let attempt = self
                .fetch_from(
                    &mut writer,
                    id,
                    (*peer, address),
                    (owner, options),
                    (&tx, &mut rx),
                    (token, &mut fetched),
                )
                .await;
            match attempt {
                Ok(Attempt::Done) => break,
                Ok(Attempt::Failed) => {}
                Ok(Attempt::Bad) => {
                    tracing::warn!(%peer, blob = %id, "provider sent data that does not match");
                    bad_peers.push(*peer);
                }
                Err(e) => {
                    inner.store.metrics().fetch(false);
                    if let Some(w) = writer {
                        // Refused by the store: nothing of it is worth keeping.
                        let _ = w.abort().await;
                    }
                    return Err(e);
                }
            }
        }
        match writer {
            Some(mut w) if w.missing() == 0 => {
                let now = inner.net.unix_time();
                let stored = w.finish(now).await.inspect_err(|_| {
                    inner.store.metrics().fetch(false);
                })?;
                inner.store.metrics().fetch(true);
                Ok(FetchReport {
                    stored,
                    fetched_chunks: fetched,
                    // Every chunk is in: those this fetch did not bring were there before.
                    resumed_with: stored.chunks.saturating_sub(fetched),
                    bad_peers,
                })
            }
            w => {
                inner.store.metrics().fetch(false);
                let missing = w.as_ref().map_or(u32::MAX, BlobWriter::missing);
                if let Some(mut writer) = w {
                    // Written out, so that a kept import holds no chunk bytes in memory.
                    if writer.sync().await.is_ok() {
                        self.keep_partial(id, owner, writer);
                    }
                }
                Err(FetchError::Failed {
                    id,
                    missing,
                    bad_peers,
                })
            }
        }
    }

    fn take_partial(&self, id: &BlobId, owner: &PeerId) -> Option<BlobWriter> {
        let mut partials = lock(&self.inner.partials);
        let at = partials
            .iter()
            .position(|p| p.id == *id && p.owner == *owner)?;
        partials.remove(at).map(|p| p.writer)
    }

    fn keep_partial(&self, id: BlobId, owner: PeerId, writer: BlobWriter) {
        let mut partials = lock(&self.inner.partials);
        if partials.len() >= MAX_PARTIALS {
            // Dropped: its rows are removed by the next GC.
            partials.pop_front();
        }
        partials.push_back(Partial { id, owner, writer });
    }

    fn new_request(&self, peer: PeerId, fetch: u64, tx: &mpsc::Sender<(u64, Response)>) -> u64 {
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.routes).insert(
            id,
            Route {
                peer,
                fetch,
                tx: tx.clone(),
            },
        );
        id
    }

    fn forget_requests(&self, ids: impl IntoIterator<Item = u64>) {
        let mut routes = lock(&self.inner.routes);
        for id in ids {
            routes.remove(&id);
        }
    }

    /// Sends a request; false if it could not be sent in time.
    async fn send_request(&self, peer: PeerId, address: &str, id: u64, request: Request) -> bool {
        let inner = &self.inner;
        let payload = Message::Request(id, request).encode();
        let send = inner.net.send(peer, address.to_string(), payload);
        tokio::select! {
            r = send => r.is_ok(),
            () = inner.net.sleep(inner.config.request_timeout) => false,
        }
    }

    async fn fetch_manifest(
        &self,
        id: BlobId,
        (peer, address, token): (PeerId, &str, u64),
        (tx, rx): Answers<'_>,
    ) -> Result<Option<Manifest>, Attempt> {
        let inner = &self.inner;
        let (mut failures, mut busy) = (0u32, 0u32);
        loop {
            if inner.stopped.load(Ordering::Relaxed) {
                return Err(Attempt::Failed);
            }
            let rid = self.new_request(peer, token, tx);
            let mut answer = None;
            if self
                .send_request(peer, address, rid, Request::GetManifest(id))
                .await
            {
                let deadline = inner.net.sleep(inner.config.request_timeout);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Some((got, resp)) if got == rid => { answer = Some(resp); break; }
                            Some(_) => {} // a late answer to an earlier request
                            None => break,
                        },
                        () = &mut deadline => break,
                    }
                }
            }
            self.forget_requests([rid]);
            match answer {
                Some(Response::Manifest(b, bytes)) if b == id => {
                    return match Manifest::decode_for(&id, &bytes) {
                        Ok(m) => Ok(Some(m)),
                        Err(_) => Err(Attempt::Bad),
                    };
                }
                Some(Response::NotFound(_)) => return Ok(None),
                Some(Response::Busy) => {
                    busy += 1;
                    if busy > MAX_BUSY {
                        return Ok(None);
                    }
                    inner.net.sleep(BUSY_BACKOFF).await;
                }
                Some(_) => return Err(Attempt::Bad),
                None => {
                    failures += 1;
                    if failures >= inner.config.max_failures {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn fetch_from(
        &self,
        writer: &mut Option<BlobWriter>,
        id: BlobId,
        (peer, address): (PeerId, &str),
        (owner, options): (PeerId, PutOptions),
        answers: Answers<'_>,
        (token, fetched): (u64, &mut u32),
    ) -> Result<Attempt, FetchError> {
        let inner = &self.inner;
        let (tx, rx) = answers;
        if writer.is_none() {
            match self
                .fetch_manifest(id, (peer, address, token), (tx, &mut *rx))
                .await
            {
                Ok(Some(m)) => {
                    *writer = Some(inner.store.importer(m, owner, options).await?);
                }
                Ok(None) => return Ok(Attempt::Failed),
                Err(a) => {
                    bump(&inner.counters.bad_chunks);
                    inner.store.metrics().transfer_chunk(false);
                    return Ok(a);
                }
            }
        }
        let Some(w) = writer.as_mut() else {
            return Ok(Attempt::Failed);
        };
        let mut d = Download {
            id,
            peer,
            address,
            token,
            in_flight: HashMap::new(),
            requested: HashSet::new(),
            cursor: 0,
            failures: 0,
            busy: 0,
        };
        let outcome = self.download(w, &mut d, tx, rx, fetched).await;
        self.forget_requests(d.in_flight.keys().copied());
        // Answers still queued belong to requests given up on.
        while rx.try_recv().is_ok() {}
        outcome
    }

    /// Asks for the missing chunks from one provider until none is missing or the provider
    /// fails.
    async fn download(
        &self,
        w: &mut BlobWriter,
        d: &mut Download<'_>,
        tx: &mpsc::Sender<(u64, Response)>,
        rx: &mut mpsc::Receiver<(u64, Response)>,
        fetched: &mut u32,
    ) -> Result<Attempt, FetchError> {
        let inner = &self.inner;
        loop {
            if w.missing() == 0 {
                return Ok(Attempt::Done);
            }
            if inner.stopped.load(Ordering::Relaxed) {
                return Ok(Attempt::Failed);
            }
            self.fill_window(w, d, tx).await;
            if d.failures >= inner.config.max_failures {
                return Ok(Attempt::Failed);
            }
            let Some(earliest) = d.in_flight.values().map(|(_, at)| *at).min() else {
                // Nothing could be sent: wait a little before trying again.
                inner.net.sleep(BUSY_BACKOFF).await;
                continue;
            };
            let wait = earliest.saturating_sub(inner.net.monotonic());
            let received = tokio::select! {
                r = rx.recv() => r,
                () = inner.net.sleep(wait) => None,
            };
            let Some((rid, response)) = received else {
                self.expire_overdue(d);
                if d.failures >= inner.config.max_failures {
                    return Ok(Attempt::Failed);
                }
                continue;
            };
            let Some((index, _)) = d.in_flight.remove(&rid) else {
                continue; // a late answer to a request given up on
            };
            d.requested.remove(&index);
            if let Some(end) = self.on_answer(w, d, index, response, fetched).await? {
                return Ok(end);
            }
        }
    }

    /// Sends requests for the lowest missing chunks not yet asked for, up to the window.
    async fn fill_window(
        &self,
        w: &BlobWriter,
        d: &mut Download<'_>,
        tx: &mpsc::Sender<(u64, Response)>,
    ) {
        let inner = &self.inner;
        while d.in_flight.len() < inner.config.window.max(1) {
            let mut next = w.next_missing(d.cursor);
            while let Some(i) = next.filter(|i| d.requested.contains(i)) {
                next = w.next_missing(i + 1);
            }
            let Some(index) = next else { return };
            d.cursor = index + 1;
            let rid = self.new_request(d.peer, d.token, tx);
            if self
                .send_request(d.peer, d.address, rid, Request::GetChunk(d.id, index))
                .await
            {
                let deadline = inner.net.monotonic() + inner.config.request_timeout;
                d.in_flight.insert(rid, (index, deadline));
                d.requested.insert(index);
            } else {
                self.forget_requests([rid]);
                d.cursor = d.cursor.min(index);
                d.failures += 1;
                return;
            }
        }
    }

    /// Puts the chunks of overdue requests back among the missing ones: one failure.
    fn expire_overdue(&self, d: &mut Download<'_>) {
        let now = self.inner.net.monotonic();
        let overdue: Vec<u64> = d
            .in_flight
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(r, _)| *r)
            .collect();
        for r in &overdue {
            if let Some((index, _)) = d.in_flight.remove(r) {
                d.requested.remove(&index);
                d.cursor = d.cursor.min(index);
            }
        }
        self.forget_requests(overdue);
        d.failures += 1;
    }

    /// Handles the answer to the request for chunk `index`; `Some` ends this provider's
    /// attempt.
    async fn on_answer(
        &self,
        w: &mut BlobWriter,
        d: &mut Download<'_>,
        index: u32,
        response: Response,
        fetched: &mut u32,
    ) -> Result<Option<Attempt>, FetchError> {
        let inner = &self.inner;
        match response {
            Response::Chunk(blob, at, bytes) if blob == d.id && at == index => {
                match w.write_chunk(index, bytes).await {
                    Ok(new) => {
                        if new {
                            *fetched += 1;
                            bump(&inner.counters.fetched_chunks);
                        }
                        d.failures = 0;
                        inner.store.metrics().transfer_chunk(true);
                        Ok(None)
                    }
                    Err(BlobError::ChunkMismatch { .. }) => {
                        bump(&inner.counters.bad_chunks);
                        inner.store.metrics().transfer_chunk(false);
                        Ok(Some(Attempt::Bad))
                    }
                    Err(other) => Err(other.into()),
                }
            }
            Response::Busy => {
                d.cursor = d.cursor.min(index);
                d.busy += 1;
                if d.busy > MAX_BUSY {
                    return Ok(Some(Attempt::Failed));
                }
                inner.net.sleep(BUSY_BACKOFF).await;
                Ok(None)
            }
            Response::NotFound(_) => Ok(Some(Attempt::Failed)),
            _ => {
                bump(&inner.counters.bad_chunks);
                inner.store.metrics().transfer_chunk(false);
                Ok(Some(Attempt::Bad))
            }
        }
    }
}

/// The answers channel of one fetch.
type Answers<'a> = (
    &'a mpsc::Sender<(u64, Response)>,
    &'a mut mpsc::Receiver<(u64, Response)>,
);

/// One provider's part of a fetch.
struct Download<'a> {
    id: BlobId,
    peer: PeerId,
    address: &'a str,
    /// The fetch's token, for its routes.
    token: u64,
    /// request id -> (chunk index, deadline)
    in_flight: HashMap<u64, (u32, Duration)>,
    requested: HashSet<u32>,
    /// No missing chunk below this one is unrequested.
    cursor: u32,
    failures: u32,
    busy: u32,
}
