//! `meshd run`: a long-running node.
//!
//! State lives in the data directory: `identity.key` (the node's seed, mode 0600; sealed with
//! Argon2id + XChaCha20-Poly1305 when `MESHD_PASSPHRASE` is set), `node.redb` (DHT records
//! and contacts, gossip messages, blobs, guardians' shares), `control.sock` (the control
//! socket, mode 0600, while the node runs) and `recovered/` (keys recovered for others'
//! identities, mode 0600, sealed like `identity.key`).
//!
//! Listeners:
//!
//! - public (`listen`): `POST /mesh/v1/signal` (WebRTC signaling for browsers and first
//!   contact), `GET /mesh/v1/id` (the node's peer id, for bootstrapping by URL),
//!   `GET /health`, `GET /metrics` (Prometheus, unless `metrics` puts it elsewhere or off),
//!   `GET /mesh/v1/pin-set` (the signed pin set, if configured). At most 512 connections,
//!   30 s per request;
//! - control: a Unix socket in the data directory (which is 0700), so only the node's user
//!   reaches it, and nobody can stand in for a node that is down; what the `meshd`
//!   sub-commands call (`/v1/...`, see [`crate::control`]);
//! - metrics, when `metrics = "host:port"`.
//!
//! SIGINT, SIGTERM or `POST /v1/shutdown` stop it gracefully: `/health` turns 503, waiting
//! requests end, the listeners stop taking connections (5 s for those in progress), every
//! driver writes what it must and links close (15 s), the store is closed (5 s), and the
//! process exits 0 (1 if any of that ran out of time). A second signal exits at once.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::{Method, Request, Response, StatusCode};
use mesh_crypto::{Hash256, Identity, PeerId};
use mesh_node::{MessagingEvent, Node, NodeBuilder, NodeConfig, NodeEvents};
use mesh_platform::pinning::PinPolicy;
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_recovery::Event as RecoveryEvent;
use mesh_transport_webrtc::signaling::http::{HttpSignaling, SIGNAL_PATH, SignalEndpoint};
use mesh_transport_webrtc::signaling::mesh::MeshSignaling;
use mesh_transport_webrtc::signaling::routed::{RoutedSignaling, relay_address};
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::{Notify, watch};

use crate::config::{Bootstrap, MetricsAt, Settings};
use crate::http::{self, Resp};
use crate::metrics::{Metrics, Snapshot};

pub(crate) type MeshNode = Node<WebRtcTransport<RoutedSignaling>, TokioRuntime>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// The identity file in the data directory.
pub(crate) const IDENTITY_FILE: &str = "identity.key";
/// The store file in the data directory.
pub(crate) const STORE_FILE: &str = "node.redb";
/// The control socket in the data directory.
pub(crate) const CONTROL_SOCKET: &str = "control.sock";
/// Messages kept for `meshd inbox`.
pub(crate) const INBOX_LIMIT: usize = 1000;
/// Receipts remembered for `meshd send --wait`.
const RECEIPT_LIMIT: usize = 4096;
/// Recovery events kept for `meshd recovery status`.
const RECOVERY_LOG_LIMIT: usize = 200;
/// How often the node's counters are polled for `/metrics` and bootstrap links checked.
const POLL: Duration = Duration::from_secs(2);
/// How long requests in progress may take to finish once a shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);
/// How long the drivers may take to write what they must and close their links.
const NODE_SHUTDOWN: Duration = Duration::from_secs(15);
/// How long the store may take to close.
const STORE_CLOSE: Duration = Duration::from_secs(5);
/// How long resolving a bootstrap URL may take; failures are retried this often.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);
/// How often the pin set's expiry is reported (the gauge moves by the day).
const PIN_REPORT: Duration = Duration::from_secs(3600);
/// First wait before a lost bootstrap peer is dialed again; it doubles up to [`REDIAL_MAX`].
const REDIAL_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between dials of a bootstrap peer that stays away.
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// Recovery codes remembered at most (requests the core still holds are kept).
const MAX_CODES: usize = 256;

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
    /// Turns true when the node starts stopping: waits in handlers end on it.
    pub stopped: watch::Receiver<bool>,
    /// Seals keys written to disk (as `identity.key`), if set.
    pub passphrase: Option<String>,
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
    /// Whether `/metrics` is on the public listener.
    pub metrics_public: bool,
    /// Whether the public listener serves the web page.
    pub web: bool,
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
    // A leftover temporary file would keep its old permissions.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
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

/// Creates `path` (which must not exist) readable by the owner only, with `bytes`.
fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `seed` as it is written to disk: sealed under `passphrase` if there is one.
pub(crate) fn seal_seed(seed: &[u8], passphrase: Option<&str>) -> Result<Vec<u8>, Error> {
    Ok(match passphrase {
        Some(p) => mesh_platform::keystore::seal_secret(
            seed,
            p.as_bytes(),
            mesh_platform::keystore::KdfParams::DEFAULT,
        )?,
        None => seed.to_vec(),
    })
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
            let bytes = seal_seed(identity.seed().as_slice(), passphrase)?;
            // Exclusive: of two processes making the identity at once, one wins and the
            // other reads what it wrote.
            match create_private(path, &bytes) {
                Ok(()) => Ok((identity, true)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(Duration::from_millis(100));
                    load_or_create_identity(path, passphrase)
                }
                Err(e) => Err(format!("{}: {e}", path.display()).into()),
            }
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
            let (status, body) = tokio::time::timeout(
                Duration::from_secs(15),
                http::request(&id_url, Method::GET, None),
            )
            .await
            .map_err(|_| format!("{id_url}: no answer within 15 s"))??;
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

/// Keeps trying a bootstrap URL that could not be resolved at start; joins through it once it
/// answers.
async fn retry_bootstrap(node: MeshNode, b: Bootstrap, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
            _ = stopped.changed() => return,
        }
        match resolve_bootstrap(&b).await {
            Ok((peer, url)) => {
                if node.dht.add_contact(peer, &url).await.is_err()
                    || node.add_neighbour(peer, &url).await.is_err()
                {
                    return;
                }
                tracing::info!(%peer, %url, "bootstrap peer reached");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "bootstrap peer still unreachable"),
        }
    }
}

/// Runs the node until it is told to stop.
#[allow(clippy::too_many_lines)] // the start-up sequence, read top to bottom
pub(crate) async fn run(settings: Settings) -> Result<(), Error> {
    if !settings.data_dir.exists() {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| format!("data dir {}: {e}", settings.data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
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
    let metrics_listener = match settings.metrics {
        MetricsAt::Own(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("metrics {addr}: {e}"))?,
        ),
        _ => None,
    };
    let (signaling, endpoint) = if public.is_some() {
        let (s, e) = HttpSignaling::endpoint();
        (s, Some(e))
    } else {
        (HttpSignaling::client(), None)
    };
    let resolved =
        futures_util::future::join_all(settings.bootstrap.iter().map(resolve_bootstrap)).await;
    let mut bootstrap = Vec::new();
    let mut unresolved = Vec::new();
    for (b, r) in settings.bootstrap.iter().zip(resolved) {
        match r {
            Ok(p) => bootstrap.push(p),
            Err(e) => {
                tracing::warn!(error = %e, "bootstrap peer unreachable: retrying every {BOOTSTRAP_RETRY:?}");
                unresolved.push(b.clone());
            }
        }
    }
    let address = match (&settings.public_url, &public) {
        (Some(url), _) => url.clone(),
        (None, Some(l)) => {
            let mut a = l.local_addr()?;
            if a.ip().is_unspecified() {
                tracing::warn!(
                    "listening on {a} without public_url: advertising 127.0.0.1, which only this machine can dial (set public_url)"
                );
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{a}{SIGNAL_PATH}")
        }
        // No endpoint of its own: dialed through its first bootstrap peer, which relays
        // the offer over its link (unless relayed offers are refused).
        (None, None) => match bootstrap.first() {
            Some((relay, _)) if settings.accept_relayed => relay_address(relay),
            _ => String::new(),
        },
    };
    let mesh_signaling = Arc::new(MeshSignaling::new(identity.peer_id()));
    mesh_signaling.set_accepting(settings.accept_relayed);
    let signaling = RoutedSignaling::new(signaling, Arc::clone(&mesh_signaling));
    let webrtc = WebRtcConfig {
        udp_addrs: settings.udp.clone(),
        ice_servers: settings.ice_servers.clone(),
        ..WebRtcConfig::default()
    };
    // The store's lock (taken in start) tells a second node on the same data dir to go away
    // before it touches the control socket.
    let (node, events) = NodeBuilder::new(Arc::clone(&identity))
        .redb(settings.data_dir.join(STORE_FILE))
        .webrtc(webrtc, Arc::new(signaling), &address)
        .config(NodeConfig {
            bootstrap: bootstrap.clone(),
            dht: settings.dht,
            blobs: settings.blobs,
            ..NodeConfig::default()
        })
        .start(TokioRuntime::current())
        .await?;
    let store = Arc::clone(&node.store);
    mesh_signaling.attach(&node.pool, &TokioRuntime::current());
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
    let (pin_doc, pin_policy) = match pin_set {
        Some((d, p)) => (Some(d), Some(p)),
        None => (None, None),
    };

    let socket = settings.data_dir.join(CONTROL_SOCKET);
    // A socket left by a node that crashed: the store's lock says none runs now.
    let _ = std::fs::remove_file(&socket);
    let control = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        node: node.clone(),
        data_dir: settings.data_dir.clone(),
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        stop: Notify::new(),
        stopped: stop_rx.clone(),
        passphrase,
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
        metrics_public: settings.metrics == MetricsAt::Public,
        web: settings.web,
        quotas: (
            settings.blobs.total_quota,
            settings.dht.store.total_bytes as u64,
        ),
    });
    for b in unresolved {
        tokio::spawn(retry_bootstrap(node.clone(), b, stop_rx.clone()));
    }
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
    tokio::spawn(poll_loop(
        Arc::clone(&shared),
        pin_policy,
        bootstrap.clone(),
    ));

    let mut servers = Vec::new();
    let route = |f: fn(Arc<Shared>, Request<hyper::body::Incoming>) -> BoxedResp| -> http::Handler {
        let s = Arc::clone(&shared);
        Arc::new(move |req| f(Arc::clone(&s), req))
    };
    if let Some(listener) = public {
        tracing::info!(address = %address, listen = %listener.local_addr()?, "public endpoint");
        if settings.web
            && !listener.local_addr()?.ip().is_loopback()
            && !settings
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            tracing::warn!(
                "the web page is served over plain HTTP beyond loopback: anyone on the path can change it and take the passphrases typed into it; put a TLS terminator in front (and public_url = \"https://...\") or set web = false"
            );
        }
        match (settings.web, crate::web::BUNDLED) {
            (true, true) => {
                tracing::info!(url = %format!("http://{}/", listener.local_addr()?), "web page (a browser node)");
            }
            (true, false) => tracing::info!(
                "web page served without the browser node: this meshd was built without MESH_WEB_PKG (cargo xtask web, then MESH_WEB_PKG=$PWD/target/web/pkg cargo build -p meshd)"
            ),
            (false, _) => {}
        }
        servers.push(tokio::spawn(http::serve(
            listener,
            route(|s, req| Box::pin(async move { public_route(&s, req).await })),
            http::ServeLimits {
                connections: 512,
                request_timeout: Some(Duration::from_secs(30)),
            },
            stop_rx.clone(),
        )));
    } else {
        tracing::info!("no public listener: reachable through other peers only");
    }
    if let Some(listener) = metrics_listener {
        tracing::info!(listen = %listener.local_addr()?, "metrics endpoint");
        servers.push(tokio::spawn(http::serve(
            listener,
            route(|s, req| Box::pin(async move { metrics_route(&s, &req) })),
            http::ServeLimits {
                connections: 16,
                request_timeout: Some(Duration::from_secs(30)),
            },
            stop_rx.clone(),
        )));
    }
    tracing::info!(socket = %socket.display(), "control socket");
    servers.push(tokio::spawn(http::serve(
        control,
        route(|s, req| Box::pin(async move { crate::control::route(&s, req).await })),
        http::ServeLimits {
            connections: 64,
            request_timeout: None,
        },
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
    tokio::spawn(async {
        // A second signal: the operator does not want to wait.
        let _ = tokio::signal::ctrl_c().await;
        tracing::warn!("second interrupt: exiting now");
        std::process::exit(130);
    });
    tracing::info!("stopping");
    shared.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let mut clean = true;
    for s in servers {
        let abort = s.abort_handle();
        if tokio::time::timeout(DRAIN, s).await.is_err() {
            abort.abort();
            tracing::warn!("requests still open after {DRAIN:?}: cut");
        }
    }
    if tokio::time::timeout(NODE_SHUTDOWN, node.shutdown())
        .await
        .is_err()
    {
        tracing::error!("the node's drivers did not stop within {NODE_SHUTDOWN:?}");
        clean = false;
    }
    shared.metrics.shutdown();
    let _ = std::fs::remove_file(&socket);
    match tokio::time::timeout(STORE_CLOSE, store.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "closing the store");
            clean = false;
        }
        Err(_) => {
            tracing::error!("the store did not close within {STORE_CLOSE:?}");
            clean = false;
        }
    }
    if clean {
        tracing::info!("stopped");
        Ok(())
    } else {
        Err("stopped, but not cleanly (see the log)".into())
    }
}

type BoxedResp = std::pin::Pin<Box<dyn std::future::Future<Output = Resp> + Send>>;

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

/// Keeps the codes of approvals waiting for the user, the recovery log, and saves recovered
/// keys.
async fn recovery_loop(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<RecoveryEvent>) {
    while let Some(event) = rx.recv().await {
        match &event {
            RecoveryEvent::ApprovalNeeded {
                request_id,
                owner,
                requester,
                code,
            } => {
                let crowded = {
                    let mut codes = lock(&shared.approvals);
                    codes.insert(
                        *request_id,
                        Approval {
                            owner: *owner,
                            requester: *requester,
                            code: code.clone(),
                        },
                    );
                    codes.len() > MAX_CODES
                };
                if crowded {
                    prune_codes(&shared).await;
                }
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

/// Forgets the codes of requests the recovery core no longer holds (answered, expired,
/// replaced by a newer request of the same device), and returns those it holds.
pub(crate) async fn prune_codes(shared: &Shared) -> Vec<(Hash256, Approval)> {
    let Ok(pending) = shared.node.recovery.pending_requests().await else {
        return Vec::new();
    };
    let mut codes = lock(&shared.approvals);
    let held: HashMap<Hash256, Approval> = pending
        .iter()
        .filter_map(|(id, _, _)| codes.get(id).map(|a| (*id, a.clone())))
        .collect();
    codes.clone_from(&held);
    held.into_iter().collect()
}

async fn save_recovered(shared: &Shared, owner: PeerId) -> Result<PathBuf, Error> {
    let key = shared.node.recovery.take_recovered(owner).await?;
    let dir = shared.data_dir.join("recovered");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{owner}.key"));
    write_private(
        &path,
        &seal_seed(key.seed().as_slice(), shared.passphrase.as_deref())?,
    )?;
    lock(&shared.recovered).push((owner, path.clone()));
    Ok(path)
}

/// Polls counters for `/metrics`, keeps bootstrap peers linked, reports pin expiry. (Links
/// become gossip neighbours as they come up: `mesh_node::Node` does that.)
async fn poll_loop(shared: Arc<Shared>, pins: Option<PinPolicy>, bootstrap: Vec<(PeerId, String)>) {
    let mut pins_reported = Instant::now();
    // Per bootstrap peer: when to dial it again if it is not linked, and the backoff.
    let mut redial: HashMap<PeerId, (Instant, Duration)> = HashMap::new();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let node = &shared.node;
        let connected = node.pool.connected();
        // Bootstrap peers are kept linked: one that restarted is dialed again within
        // seconds (backing off to a minute while it stays away), not at the next pull.
        for (peer, url) in &bootstrap {
            if connected.contains(peer) {
                redial.remove(peer);
                continue;
            }
            let (at, backoff) = redial
                .entry(*peer)
                .or_insert((Instant::now(), REDIAL_FIRST));
            if Instant::now() >= *at {
                *at = Instant::now() + *backoff;
                *backoff = (*backoff * 2).min(REDIAL_MAX);
                let (node, peer, url) = (node.clone(), *peer, url.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(15), node.pool.dial(peer, &url))
                        .await
                    {
                        Ok(Ok(())) => tracing::info!(%peer, "bootstrap peer linked again"),
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "bootstrap redial"),
                        Err(_) => tracing::debug!(%peer, "bootstrap redial timed out"),
                    }
                });
            }
        }
        let mut snap = Snapshot {
            links: connected.len() as u64,
            uptime_s: shared.started.elapsed().as_secs_f64(),
            blob_requests: node.blobs.requests_in_flight() as u64,
            blob_quota: shared.quotas.0,
            dht_quota: shared.quotas.1,
            ..Snapshot::default()
        };
        if let Ok(p) = node.recovery.pending_requests().await {
            snap.pending_approvals = p.len() as u64;
        }
        if let Ok(s) = node.messenger.stats().await {
            snap.messaging = s;
        }
        if let Ok(s) = node.dht.status().await {
            snap.dht_contacts = s.contacts as u64;
        }
        shared.metrics.update(snap);
        if let Some(p) = &pins
            && pins_reported.elapsed() >= PIN_REPORT
        {
            p.report_expiry(TokioRuntime::current().unix_time());
            pins_reported = Instant::now();
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

fn metrics_route(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Resp {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return http::text(StatusCode::NOT_FOUND, "not found");
    }
    match shared.metrics.render() {
        Ok(text) => {
            let mut r = Response::new(http::full(text));
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn public_route(shared: &Shared, req: Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (_, SIGNAL_PATH) => match &shared.signal {
            Some(e) if !shared.stopping.load(Ordering::SeqCst) => e
                .handle(req)
                .await
                .map(|b| b.map_err(|never| match never {}).boxed_unsync()),
            _ => http::text(StatusCode::SERVICE_UNAVAILABLE, "not accepting connections"),
        },
        (&Method::GET, http::ID_PATH) => {
            let mut r = http::text(StatusCode::OK, &shared.node.peer_id().to_string());
            // Pages of other origins may bootstrap from this node too.
            r.headers_mut().insert(
                "access-control-allow-origin",
                hyper::header::HeaderValue::from_static("*"),
            );
            r
        }
        (&Method::GET, "/health") => health(shared),
        (&Method::GET, "/metrics") if shared.metrics_public => metrics_route(shared, &req),
        (&Method::GET, "/mesh/v1/pin-set") => match &shared.pin_set {
            Some(doc) => {
                let mut r = Response::new(http::full(doc.clone()));
                r.headers_mut().insert(
                    "access-control-allow-origin",
                    hyper::header::HeaderValue::from_static("*"),
                );
                r
            }
            None => http::text(StatusCode::NOT_FOUND, "no pin set"),
        },
        (&Method::GET, p) if shared.web => {
            crate::web::file(p).unwrap_or_else(|| http::text(StatusCode::NOT_FOUND, "not found"))
        }
        _ => http::text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The running node's control socket in `data_dir`.
pub(crate) fn control_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let (made, new) = load_or_create_identity(&path, None).unwrap();
        assert!(new);
        assert_eq!(std::fs::read(&path).unwrap(), made.seed().as_slice());
        let (again, new) = load_or_create_identity(&path, None).unwrap();
        assert!(!new);
        assert_eq!(again.peer_id(), made.peer_id());
        // A raw seed still opens when a passphrase is set (it is only warned about).
        let (same, _) = load_or_create_identity(&path, Some("late")).unwrap();
        assert_eq!(same.peer_id(), made.peer_id());
    }

    #[test]
    fn a_sealed_identity_opens_with_its_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let (made, new) = load_or_create_identity(&path, Some("correct horse")).unwrap();
        assert!(new);
        let on_disk = std::fs::read(&path).unwrap();
        assert_ne!(on_disk.len(), 32, "the seed was written in the clear");
        assert!(
            !on_disk.windows(32).any(|w| w == made.seed().as_slice()),
            "the seed is readable in the sealed file"
        );
        let (opened, new) = load_or_create_identity(&path, Some("correct horse")).unwrap();
        assert!(!new);
        assert_eq!(opened.peer_id(), made.peer_id());
        let e = load_or_create_identity(&path, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is sealed: set MESHD_PASSPHRASE"), "{e}");
        let e = load_or_create_identity(&path, Some("wrong horse"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong passphrase"), "{e}");
        // Nothing was overwritten by the failed attempts.
        assert_eq!(std::fs::read(&path).unwrap(), on_disk);
    }

    #[test]
    fn a_damaged_identity_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, [7u8; 5]).unwrap();
        let e = load_or_create_identity(&path, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is sealed"), "{e}");
        assert!(load_or_create_identity(&path, Some("x")).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 5]);
        // A directory in its place is an error naming the path, not a new identity.
        let dir_path = dir.path().join("as-dir");
        std::fs::create_dir(&dir_path).unwrap();
        let e = load_or_create_identity(&dir_path, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("as-dir"), "{e}");
    }

    #[test]
    fn keys_written_to_disk_are_private_and_sealed_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        assert_eq!(seal_seed(&[1; 32], None).unwrap(), [1; 32]);
        let sealed = seal_seed(&[1; 32], Some("p")).unwrap();
        assert_eq!(
            mesh_platform::keystore::open_secret(&sealed, b"p")
                .unwrap()
                .as_slice(),
            [1; 32]
        );
    }
}
