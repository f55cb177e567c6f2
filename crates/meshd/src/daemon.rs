//! `meshd run`: a long-running node.
//!
//! State lives in the data directory: `identity.key` (the node's seed, mode 0600; sealed with
//! Argon2id + XChaCha20-Poly1305 when `MESHD_PASSPHRASE` is set), `node.redb` (DHT records
//! and contacts, gossip messages, blobs, guardians' shares), `control` (the control
//! listener's address and bearer token, mode 0600, while the node runs) and `recovered/`
//! (keys recovered for others' identities, mode 0600).
//!
//! Two HTTP listeners:
//!
//! - public (`listen`): `POST /mesh/v1/signal` (WebRTC signaling for browsers and first
//!   contact), `GET /mesh/v1/id` (the node's peer id, for bootstrapping by URL),
//!   `GET /health`, `GET /metrics` (Prometheus), `GET /mesh/v1/pin-set` (the signed pin set,
//!   if configured);
//! - control (`control`, loopback only, bearer token): what the `meshd` sub-commands call
//!   (`/v1/...`, see [`crate::control`]).
//!
//! SIGINT, SIGTERM or `POST /v1/shutdown` stop it gracefully: `/health` turns 503, the
//! listeners stop taking connections, every driver writes what it must, links close, the
//! store is closed, and the process exits 0.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use mesh_crypto::{Hash256, Identity, PeerId};
use mesh_node::node::SCHEMA;
use mesh_node::{MessagingEvent, Node, NodeConfig, NodeEvents};
use mesh_platform::kv::{KvStore, Store};
use mesh_platform::pinning::PinPolicy;
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_recovery::Event as RecoveryEvent;
use mesh_store_redb::RedbBackend;
use mesh_transport_webrtc::signaling::http::{HttpSignaling, SIGNAL_PATH, SignalEndpoint};
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::{Notify, watch};

use crate::config::{Bootstrap, Settings};
use crate::http::{self, Resp};
use crate::metrics::{Metrics, Snapshot};

pub(crate) type MeshNode = Node<WebRtcTransport<HttpSignaling>, TokioRuntime>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// The identity file in the data directory.
pub(crate) const IDENTITY_FILE: &str = "identity.key";
/// The store file in the data directory.
pub(crate) const STORE_FILE: &str = "node.redb";
/// The control file (address and token) in the data directory.
pub(crate) const CONTROL_FILE: &str = "control";
/// Messages kept for `meshd inbox`.
pub(crate) const INBOX_LIMIT: usize = 1000;
/// Receipts remembered for `meshd send --wait`.
const RECEIPT_LIMIT: usize = 4096;
/// Recovery events kept for `meshd recovery status`.
const RECOVERY_LOG_LIMIT: usize = 200;
/// How often the node's counters are polled for `/metrics` and links become neighbours.
const POLL: Duration = Duration::from_secs(2);
/// How long a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// One received message.
#[derive(Debug, Clone)]
pub(crate) struct InboxEntry {
    pub seq: u64,
    pub from: PeerId,
    pub id: Hash256,
    pub body: Vec<u8>,
    pub direct: bool,
}

/// A recovery request waiting for this guardian's user.
#[derive(Debug, Clone)]
pub(crate) struct Approval {
    pub owner: PeerId,
    pub requester: PeerId,
    pub code: String,
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub next: u64,
    pub entries: VecDeque<InboxEntry>,
}

#[derive(Default)]
pub(crate) struct Receipts {
    pub by_id: HashMap<Hash256, PeerId>,
    pub order: VecDeque<Hash256>,
}

/// What the HTTP handlers share with the node's event loops.
pub(crate) struct Shared {
    pub node: MeshNode,
    pub data_dir: PathBuf,
    pub started: Instant,
    pub stopping: AtomicBool,
    pub stop: Notify,
    pub token: String,
    pub inbox: Mutex<Inbox>,
    pub inbox_changed: Notify,
    pub receipts: Mutex<Receipts>,
    pub receipt_came: Notify,
    pub approvals: Mutex<HashMap<Hash256, Approval>>,
    pub recovery_log: Mutex<VecDeque<String>>,
    pub recovered: Mutex<Vec<(PeerId, PathBuf)>>,
    pub pin_set: Option<Vec<u8>>,
    pub metrics: Metrics,
    pub signal: Option<SignalEndpoint>,
    pub serve_metrics: bool,
    /// Configured totals of the blob store and of the DHT's records, for `/metrics`.
    pub quotas: (u64, u64),
}

/// Locks a mutex, taking the data of a poisoned one (a panicked holder cannot leave these
/// maps half-updated in a way that matters more than stopping the daemon would).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `path` readable by the owner only, replacing it atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Loads the node's identity from `path`, or makes and saves a new one. With a passphrase
/// the seed is sealed (`mesh_platform::keystore` format); without, the file holds the raw
/// 32-byte seed.
pub(crate) fn load_or_create_identity(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<(Identity, bool), Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let seed: [u8; 32] = if bytes.len() == 32 {
                if passphrase.is_some() {
                    tracing::warn!(
                        "MESHD_PASSPHRASE is set but {} is not sealed",
                        path.display()
                    );
                }
                bytes.as_slice().try_into()?
            } else {
                let pass = passphrase.ok_or_else(|| {
                    format!(
                        "{} is sealed: set MESHD_PASSPHRASE to open it",
                        path.display()
                    )
                })?;
                let open = mesh_platform::keystore::open_secret(&bytes, pass.as_bytes())?;
                open.as_slice()
                    .try_into()
                    .map_err(|_| format!("{}: not a 32-byte seed", path.display()))?
            };
            Ok((Identity::from_seed(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::generate();
            let seed = identity.seed();
            let bytes = match passphrase {
                Some(p) => mesh_platform::keystore::seal_secret(
                    seed.as_slice(),
                    p.as_bytes(),
                    mesh_platform::keystore::KdfParams::DEFAULT,
                )?,
                None => seed.to_vec(),
            };
            write_private(path, &bytes)?;
            Ok((identity, true))
        }
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

/// Asks a node's public endpoint for its peer id (bootstrap by URL: trust on first use).
async fn resolve_bootstrap(b: &Bootstrap) -> Result<(PeerId, String), Error> {
    match b {
        Bootstrap::Known(peer, url) => Ok((*peer, url.clone())),
        Bootstrap::Url(url) => {
            let base = url.strip_suffix(SIGNAL_PATH).unwrap_or(url);
            let id_url = format!("{}{}", base.trim_end_matches('/'), crate::http::ID_PATH);
            let (status, body) = http::request(&id_url, Method::GET, None, None).await?;
            if status != StatusCode::OK {
                return Err(format!("{id_url}: {status}").into());
            }
            let peer: PeerId = String::from_utf8_lossy(&body).trim().parse()?;
            tracing::warn!(%peer, %url, "bootstrap peer id taken from its endpoint (trust on first use): give PEER_ID@URL to pin it");
            let signal = if url.ends_with(SIGNAL_PATH) {
                url.clone()
            } else {
                format!("{}{SIGNAL_PATH}", url.trim_end_matches('/'))
            };
            Ok((peer, signal))
        }
    }
}

fn random_token() -> String {
    let mut t = [0u8; 32];
    dryoc::rng::copy_randombytes(&mut t);
    data_encoding::HEXLOWER.encode(&t)
}

/// Runs the node until it is told to stop.
#[allow(clippy::too_many_lines)] // the start-up sequence, read top to bottom
pub(crate) async fn run(settings: Settings) -> Result<(), Error> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("data dir {}: {e}", settings.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let passphrase = std::env::var("MESHD_PASSPHRASE").ok();
    let (identity, created) = load_or_create_identity(
        &settings.data_dir.join(IDENTITY_FILE),
        passphrase.as_deref(),
    )?;
    let identity = Arc::new(identity);
    tracing::info!(peer = %identity.peer_id(), fingerprint = %identity.peer_id().fingerprint(), new = created, "identity");
    // Before any driver starts: they take their meters from the global provider.
    let metrics = Metrics::install()?;

    let public = match settings.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let (signaling, endpoint) = if public.is_some() {
        let (s, e) = HttpSignaling::endpoint();
        (s, Some(e))
    } else {
        (HttpSignaling::client(), None)
    };
    let address = match (&settings.public_url, &public) {
        (Some(url), _) => url.clone(),
        (None, Some(l)) => {
            let mut a = l.local_addr()?;
            if a.ip().is_unspecified() {
                tracing::warn!(
                    "listening on {a} without public_url: advertising 127.0.0.1 (set public_url for other machines)"
                );
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{a}{SIGNAL_PATH}")
        }
        (None, None) => String::new(),
    };
    let mut bootstrap = Vec::new();
    for b in &settings.bootstrap {
        match resolve_bootstrap(b).await {
            Ok(p) => bootstrap.push(p),
            Err(e) => tracing::warn!(error = %e, "bootstrap peer skipped"),
        }
    }
    let store: Arc<dyn KvStore> = Arc::new(
        Store::open(
            RedbBackend::open(&settings.data_dir.join(STORE_FILE)).await?,
            &SCHEMA,
        )
        .await?,
    );
    let webrtc = WebRtcConfig {
        udp_addrs: settings.udp.clone(),
        ice_servers: settings.ice_servers.clone(),
        ..WebRtcConfig::default()
    };
    let transport = WebRtcTransport::new(Arc::clone(&identity), Arc::new(signaling), webrtc);
    let (node, events) = Node::start(
        Arc::clone(&identity),
        transport,
        TokioRuntime::current(),
        &address,
        store,
        NodeConfig {
            bootstrap: bootstrap.clone(),
            dht: settings.dht,
            blobs: settings.blobs,
            ..NodeConfig::default()
        },
    )
    .await?;
    for (peer, url) in &bootstrap {
        if let Err(e) = node.add_neighbour(*peer, url).await {
            tracing::warn!(%peer, error = %e, "bootstrap neighbour");
        }
    }

    let pin_set = match &settings.pin_set {
        Some((path, signer)) => {
            let doc =
                std::fs::read(path).map_err(|e| format!("pin_set {}: {e}", path.display()))?;
            let policy = PinPolicy::new(*signer);
            policy
                .update(&doc, TokioRuntime::current().unix_time())
                .map_err(|e| format!("pin_set {}: {e}", path.display()))?;
            Some((doc, policy))
        }
        None => None,
    };

    let control = tokio::net::TcpListener::bind(settings.control)
        .await
        .map_err(|e| format!("control {}: {e}", settings.control))?;
    let control_addr = control.local_addr()?;
    let token = random_token();
    let control_file = settings.data_dir.join(CONTROL_FILE);
    write_private(
        &control_file,
        format!("{control_addr}\n{token}\n").as_bytes(),
    )?;

    let (pin_doc, pin_policy) = match pin_set {
        Some((d, p)) => (Some(d), Some(p)),
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        node: node.clone(),
        data_dir: settings.data_dir.clone(),
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        stop: Notify::new(),
        token,
        inbox: Mutex::new(Inbox::default()),
        inbox_changed: Notify::new(),
        receipts: Mutex::new(Receipts::default()),
        receipt_came: Notify::new(),
        approvals: Mutex::new(HashMap::new()),
        recovery_log: Mutex::new(VecDeque::new()),
        recovered: Mutex::new(Vec::new()),
        pin_set: pin_doc,
        metrics,
        signal: endpoint,
        serve_metrics: settings.metrics,
        quotas: (
            settings.blobs.total_quota,
            settings.dht.store.total_bytes as u64,
        ),
    });
    let NodeEvents {
        messages,
        recovery,
        gossip,
    } = events;
    tokio::spawn(message_loop(Arc::clone(&shared), messages));
    tokio::spawn(recovery_loop(Arc::clone(&shared), recovery));
    tokio::spawn(async move {
        // Gossip of other topics: nothing in meshd reads it; drain so it does not fill up.
        let mut gossip = gossip;
        while gossip.recv().await.is_some() {}
    });
    tokio::spawn(poll_loop(Arc::clone(&shared), pin_policy));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    if let Some(listener) = public {
        tracing::info!(address = %address, listen = %listener.local_addr()?, "public endpoint");
        let s = Arc::clone(&shared);
        servers.push(tokio::spawn(http::serve(
            listener,
            Arc::new(move |req| {
                let s = Arc::clone(&s);
                Box::pin(async move { public_route(&s, req).await })
            }),
            stop_rx.clone(),
        )));
    } else {
        tracing::info!("no public listener: reachable through other peers only");
    }
    tracing::info!(%control_addr, "control endpoint");
    let s = Arc::clone(&shared);
    servers.push(tokio::spawn(http::serve(
        control,
        Arc::new(move |req| {
            let s = Arc::clone(&s);
            Box::pin(async move { crate::control::route(&s, req).await })
        }),
        stop_rx,
    )));
    println!("meshd running: peer {}", identity.peer_id());
    if !address.is_empty() {
        println!("  signaling {address}");
        println!(
            "  bootstrap others with --bootstrap {}@{address}",
            identity.peer_id()
        );
    }

    wait_for_stop(&shared).await;
    tracing::info!("stopping");
    shared.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let graceful = async {
        for s in servers {
            let _ = s.await;
        }
        node.shutdown().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful)
        .await
        .is_err()
    {
        tracing::warn!("graceful shutdown took over {SHUTDOWN_GRACE:?}");
    }
    shared.metrics.shutdown();
    let _ = std::fs::remove_file(&control_file);
    // The drivers end asynchronously after shutdown: give them a moment to drop the store
    // (redb closes the file when its last handle goes).
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop(shared: &Shared) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = shared.stop.notified() => {}
    }
}

/// Stores incoming messages and receipts for the control API.
async fn message_loop(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<MessagingEvent>) {
    while let Some(event) = rx.recv().await {
        match event {
            MessagingEvent::Message(m) => {
                tracing::info!(from = %m.from, direct = m.direct, len = m.body.len(), "message");
                let mut inbox = lock(&shared.inbox);
                let seq = inbox.next;
                inbox.next += 1;
                inbox.entries.push_back(InboxEntry {
                    seq,
                    from: m.from,
                    id: m.id,
                    body: m.body,
                    direct: m.direct,
                });
                while inbox.entries.len() > INBOX_LIMIT {
                    inbox.entries.pop_front();
                }
                drop(inbox);
                shared.inbox_changed.notify_waiters();
            }
            MessagingEvent::Delivered { id, by } => {
                let mut r = lock(&shared.receipts);
                if r.by_id.insert(id, by).is_none() {
                    r.order.push_back(id);
                }
                while r.order.len() > RECEIPT_LIMIT {
                    if let Some(old) = r.order.pop_front() {
                        r.by_id.remove(&old);
                    }
                }
                drop(r);
                shared.receipt_came.notify_waiters();
            }
            _ => {}
        }
    }
}

fn log_recovery(shared: &Shared, line: String) {
    tracing::info!("recovery: {line}");
    let mut log = lock(&shared.recovery_log);
    log.push_back(line);
    while log.len() > RECOVERY_LOG_LIMIT {
        log.pop_front();
    }
}

/// Keeps approvals waiting for the user, the recovery log, and saves recovered keys.
async fn recovery_loop(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<RecoveryEvent>) {
    while let Some(event) = rx.recv().await {
        match &event {
            RecoveryEvent::ApprovalNeeded {
                request_id,
                owner,
                requester,
                code,
            } => {
                lock(&shared.approvals).insert(
                    *request_id,
                    Approval {
                        owner: *owner,
                        requester: *requester,
                        code: code.clone(),
                    },
                );
                log_recovery(
                    &shared,
                    format!(
                        "request {} from {requester} for {owner}'s key: compare code {code}, then `meshd recovery approve {}`",
                        request_id.to_hex(),
                        request_id.to_hex()
                    ),
                );
            }
            RecoveryEvent::Released { request_id, .. } => {
                lock(&shared.approvals).remove(request_id);
                log_recovery(&shared, format!("{event:?}"));
            }
            RecoveryEvent::Recovered { owner } => match save_recovered(&shared, *owner).await {
                Ok(path) => log_recovery(
                    &shared,
                    format!("recovered {owner}'s key into {}", path.display()),
                ),
                Err(e) => log_recovery(&shared, format!("recovered {owner}'s key, but: {e}")),
            },
            _ => log_recovery(&shared, format!("{event:?}")),
        }
    }
}

async fn save_recovered(shared: &Shared, owner: PeerId) -> Result<PathBuf, Error> {
    let key = shared.node.recovery.take_recovered(owner).await?;
    let dir = shared.data_dir.join("recovered");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{owner}.key"));
    write_private(&path, key.seed().as_slice())?;
    lock(&shared.recovered).push((owner, path.clone()));
    Ok(path)
}

/// Polls counters for `/metrics`, makes new links gossip neighbours, reports pin expiry.
async fn poll_loop(shared: Arc<Shared>, pins: Option<PinPolicy>) {
    let mut neighbours = std::collections::HashSet::new();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let node = &shared.node;
        let connected = node.pool.connected();
        for peer in &connected {
            if neighbours.insert(*peer) {
                let address = node.pool.address_of(peer).unwrap_or_default();
                if node.add_neighbour(*peer, &address).await.is_err() {
                    return;
                }
            }
        }
        neighbours.retain(|p| connected.contains(p));
        let mut snap = Snapshot {
            links: connected.len() as u64,
            uptime_s: shared.started.elapsed().as_secs_f64(),
            pending_approvals: lock(&shared.approvals).len() as u64,
            blob_requests: node.blobs.requests_in_flight() as u64,
            blob_quota: shared.quotas.0,
            dht_quota: shared.quotas.1,
            ..Snapshot::default()
        };
        if let Ok(s) = node.messenger.stats().await {
            snap.sent_direct = s.sent_direct;
            snap.sent_mesh = s.sent_mesh;
            snap.received = s.received;
            snap.duplicates = s.duplicates;
            snap.refused = s.refused;
            snap.events_dropped = s.events_dropped;
        }
        if let Ok(s) = node.dht.status().await {
            snap.dht_contacts = s.contacts as u64;
        }
        shared.metrics.update(snap);
        if let Some(p) = &pins {
            p.report_expiry(TokioRuntime::current().unix_time());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn health(shared: &Shared) -> Resp {
    let stopping = shared.stopping.load(Ordering::SeqCst);
    let links = shared.node.pool.connected().len();
    let body = serde_json::json!({
        "status": if stopping { "stopping" } else { "ok" },
        "peer": shared.node.peer_id().to_string(),
        "links": links,
        "uptime_s": shared.started.elapsed().as_secs(),
    });
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    http::json(status, &body)
}

async fn public_route(shared: &Shared, req: Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (_, SIGNAL_PATH) => match &shared.signal {
            Some(e) if !shared.stopping.load(Ordering::SeqCst) => e.handle(req).await,
            _ => http::text(StatusCode::SERVICE_UNAVAILABLE, "not accepting connections"),
        },
        (&Method::GET, http::ID_PATH) => {
            http::text(StatusCode::OK, &shared.node.peer_id().to_string())
        }
        (&Method::GET, "/health") => health(shared),
        (&Method::GET, "/metrics") if shared.serve_metrics => match shared.metrics.render() {
            Ok(text) => {
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        (&Method::GET, "/mesh/v1/pin-set") => match &shared.pin_set {
            Some(doc) => {
                let mut r = Response::new(Full::new(Bytes::from(doc.clone())));
                r.headers_mut().insert(
                    "access-control-allow-origin",
                    hyper::header::HeaderValue::from_static("*"),
                );
                r
            }
            None => http::text(StatusCode::NOT_FOUND, "no pin set"),
        },
        _ => http::text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The control listener's address and token, as a running node wrote them.
pub(crate) fn read_control(data_dir: &Path) -> Result<(SocketAddr, String), Error> {
    let path = data_dir.join(CONTROL_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (is `meshd run` running with this data dir?)",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    let addr = lines.next().ok_or("empty control file")?.parse()?;
    let token = lines.next().ok_or("no token in control file")?.to_string();
    Ok((addr, token))
}
