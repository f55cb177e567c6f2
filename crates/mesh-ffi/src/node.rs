//! The node: [`start_node`] and [`MeshNode`].

use std::collections::HashMap;
use std::sync::Arc;

use mesh_blob::store::PutOptions;
use mesh_crypto::{Hash256, PeerId};
use mesh_node::{MessagingEvent, Node, NodeBuilder, NodeConfig};
use mesh_platform::kv::{KvStore, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_store_sqlite::SqliteBackend;
use mesh_transport::multi::Transports;
use mesh_transport::pool::WeakPool;
use mesh_transport::{Connection, TransportKind};
use mesh_transport_ble::transport::{ADDRESS_PREFIX, BleAttacher, BleTransport, Role};
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::signaling::mesh::MeshSignaling;
use mesh_transport_webrtc::signaling::routed::{RoutedSignaling, relay_address};
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::{Mutex, mpsc, watch};

use crate::ble::{AppRadio, BleLink, BleRadio};
use crate::identity::MeshIdentity;
use crate::{MeshError, invalid, on_runtime, parse_hash, parse_peer, runtime, storage};

type Ble = BleTransport<AppRadio, TokioRuntime>;
type Inner = Node<Transports<WebRtcTransport<RoutedSignaling>, Ble>, TokioRuntime>;

/// Events waiting for [`MeshNode::next_event`] at most; when the app does not read them,
/// the messenger's own queue fills next, and past that new messages are dropped without a
/// receipt (their senders send them again). A receipt says the message reached this node's
/// queue, not that the app stored it: an app that must not lose messages across a crash
/// persists each one as it reads it.
pub const EVENT_QUEUE: usize = 256;

/// How long [`MeshNode::stop`] waits for the protocols to write their state and the links to
/// close (a radio whose writes never complete, say) before it closes the database anyway.
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Recovery verification codes remembered, at most (the newest).
const MAX_CODES: usize = 256;

/// How to start a node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NodeSettings {
    /// The SQLite database file of the node's state (created if missing). One node per file.
    pub database: String,
    /// A TCP address to serve WebRTC signaling on (`127.0.0.1:0`, `0.0.0.0:7000`), for a node
    /// others dial directly; none on a phone, which others reach through its first bootstrap
    /// peer (see `accept_relayed`).
    pub listen: Option<String>,
    /// The URL others dial this node's signaling at, when `listen` is behind a proxy or NAT
    /// mapping (default: the listener's own address).
    pub public_url: Option<String>,
    /// Peers to join through, as `PEER_ID@URL` (a meshd's signaling URL, which its invite or
    /// `meshd status` gives): the peer id pins who answers there.
    pub bootstrap: Vec<String>,
    /// Local UDP addresses for WebRTC to gather candidates on (empty: `0.0.0.0:0`, every
    /// interface).
    pub udp: Vec<String>,
    /// Whether peers may reach this node through its first bootstrap peer, which relays their
    /// WebRTC offers over its link (how a phone without a public address is dialed).
    pub accept_relayed: bool,
}

/// What a node reports, in order, through [`MeshNode::next_event`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum NodeEvent {
    /// A message for this node, decrypted and verified (each once, however many ways it came).
    Message {
        /// Its id (as the sender's `send` returned it).
        id: String,
        /// Its sender, proven by the signature.
        sender: String,
        /// Its bytes.
        body: Vec<u8>,
        /// Whether it came over a direct link (otherwise through the mesh).
        direct: bool,
    },
    /// The recipient of message `id` confirmed it.
    Delivered {
        /// The message.
        id: String,
        /// Its recipient.
        by: String,
    },
    /// Guardian: someone asks for `owner`'s key share; compare `code` with the one the
    /// requesting device shows, out of band, then approve or deny.
    RecoveryApprovalNeeded {
        /// For [`MeshNode::recovery_approve`] / [`MeshNode::recovery_deny`].
        request_id: String,
        /// Whose key.
        owner: String,
        /// The device asking.
        requester: String,
        /// The code to compare.
        code: String,
    },
    /// Guardian: this node now keeps a share of `owner`'s key.
    RecoveryShareStored {
        /// Whose.
        owner: String,
    },
    /// Owner: every guardian of set `set_id` confirmed its share.
    RecoveryProtected {
        /// The guardian set.
        set_id: String,
    },
    /// Recovering: `owner`'s key is back: take it with [`MeshNode::recovery_take`].
    Recovered {
        /// Whose key.
        owner: String,
    },
    /// A link to `peer` came up (or the same peer is now linked over another kind).
    LinkUp {
        /// The peer.
        peer: String,
        /// What carries the link.
        kind: LinkKind,
    },
    /// The link to `peer` went down (messages to it now go through the mesh).
    LinkDown {
        /// The peer.
        peer: String,
    },
    /// Any other recovery progress (a share accepted or refused, a guardian's answer), as
    /// text for a log.
    RecoveryProgress {
        /// What happened.
        detail: String,
    },
}

/// What carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LinkKind {
    /// WebRTC data channels (over any IP network).
    WebRtc,
    /// Bluetooth Low Energy (GATT).
    Ble,
    /// In-process (tests).
    Memory,
}

/// One open link.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LinkInfo {
    /// The peer.
    pub peer: String,
    /// Where it can be dialed (empty: only through others).
    pub address: String,
    /// What carries it.
    pub kind: LinkKind,
    /// Smoothed round-trip time, in milliseconds, once measured.
    pub rtt_ms: Option<u64>,
}

/// A recovery request waiting for this guardian's decision.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecoveryRequest {
    /// For approve / deny.
    pub request_id: String,
    /// Whose key.
    pub owner: String,
    /// The device asking.
    pub requester: String,
    /// The code the device shows (when this node saw the request come in).
    pub code: Option<String>,
}

/// A guardian asked to help recover, and the code the new device shows that guardian.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GuardianCode {
    /// The guardian.
    pub guardian: String,
    /// The code: the guardian's user compares it before approving.
    pub code: String,
}

/// A running node. Every method may be called from any thread; async ones run on the
/// library's runtime.
#[derive(uniffi::Object)]
pub struct MeshNode {
    /// Taken by [`MeshNode::stop`]: once stopped, nothing here holds the node's pool (its
    /// transport and listeners go with it).
    node: std::sync::Mutex<Option<Inner>>,
    peer: PeerId,
    address: String,
    events: Mutex<mpsc::Receiver<NodeEvent>>,
    ble: BleAttacher<AppRadio, TokioRuntime>,
    bootstrap: Vec<(PeerId, String)>,
    codes: Arc<std::sync::Mutex<Vec<(Hash256, String)>>>,
    /// Released once the store is closed.
    claim: std::sync::Mutex<Option<Claim>>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("peer", &self.peer)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Database files open by a node of this process (one node per file: two would write the
/// same tables behind each other's back).
static OPEN_DATABASES: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

/// A database file claimed by one node until dropped.
struct Claim(std::path::PathBuf);

impl Claim {
    fn take(database: &str) -> Result<Self, MeshError> {
        let path = std::path::Path::new(database);
        let name = path
            .file_name()
            .ok_or_else(|| invalid(format!("database {database:?}: a file path")))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        let dir = parent
            .canonicalize()
            .map_err(|e| storage(format!("{database}: {e}")))?;
        let key = dir.join(name);
        let mut open = OPEN_DATABASES
            .lock()
            .map_err(|_| storage("database registry poisoned"))?;
        if open.contains(&key) {
            return Err(storage(format!(
                "{database} is in use by another node of this process"
            )));
        }
        open.push(key.clone());
        Ok(Self(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut open) = OPEN_DATABASES.lock() {
            open.retain(|p| *p != self.0);
        }
    }
}

fn parse_bootstrap(entry: &str) -> Result<(PeerId, String), MeshError> {
    let (peer, url) = entry
        .trim()
        .split_once('@')
        .ok_or_else(|| invalid(format!("bootstrap {entry:?}: PEER_ID@URL")))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(format!(
            "bootstrap {entry:?}: the URL must be http(s)"
        )));
    }
    Ok((parse_peer(peer)?, url.to_string()))
}

fn node_error(e: mesh_node::NodeError) -> MeshError {
    match e {
        mesh_node::NodeError::Storage(e) => storage(e),
        other => storage(other),
    }
}

fn recovery_error(e: mesh_recovery::driver::DriverError) -> MeshError {
    match e {
        mesh_recovery::driver::DriverError::Stopped => MeshError::Closed,
        mesh_recovery::driver::DriverError::Storage(e) => storage(e),
        other => MeshError::Refused {
            reason: other.to_string(),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Starts a node for `identity` with `settings`: opens (or creates) its database, restores
/// what an earlier run stored, starts serving signaling if asked to, and joins through the
/// bootstrap peers. Events queue up for [`MeshNode::next_event`] from the start.
///
/// # Errors
/// [`MeshError::InvalidInput`] for malformed settings; [`MeshError::Storage`] when the
/// database cannot be opened (or another node has it open); [`MeshError::Unreachable`] when
/// `listen` cannot be bound.
#[uniffi::export]
pub async fn start_node(
    identity: Arc<MeshIdentity>,
    settings: NodeSettings,
) -> Result<Arc<MeshNode>, MeshError> {
    // Not `on_runtime`: a start the caller stops waiting for completes (and the node is then
    // dropped, which stops it), rather than leaving a half-built node without an owner.
    runtime()
        .spawn(start(identity, settings))
        .await
        .map_err(|e| MeshError::Internal {
            reason: e.to_string(),
        })?
}

async fn start(
    identity: Arc<MeshIdentity>,
    settings: NodeSettings,
) -> Result<Arc<MeshNode>, MeshError> {
    let identity = Arc::clone(&identity.inner);
    let bootstrap = settings
        .bootstrap
        .iter()
        .map(|b| parse_bootstrap(b))
        .collect::<Result<Vec<_>, _>>()?;
    for u in &settings.udp {
        u.parse::<std::net::SocketAddr>()
            .map_err(|_| invalid(format!("udp {u:?}: an IP:port address")))?;
    }
    let http = match &settings.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| MeshError::Unreachable {
                    reason: format!("listen {addr}: {e}"),
                })?;
            HttpSignaling::serve(listener).map_err(|e| MeshError::Unreachable {
                reason: format!("listen {addr}: {e}"),
            })?
        }
        None => HttpSignaling::client(),
    };
    let address = match (&settings.public_url, http.url()) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url,
        (None, None) => match bootstrap.first() {
            Some((relay, _)) if settings.accept_relayed => relay_address(relay),
            _ => String::new(),
        },
    };
    let claim = Claim::take(&settings.database)?;
    let backend = SqliteBackend::open(&settings.database)
        .await
        .map_err(storage)?;
    let store: Arc<dyn KvStore> = Arc::new(
        Store::open(backend, &mesh_node::node::SCHEMA)
            .await
            .map_err(storage)?,
    );
    let rt = TokioRuntime::current();
    let mesh_signaling = Arc::new(MeshSignaling::new(identity.peer_id()));
    mesh_signaling.set_accepting(settings.accept_relayed);
    let webrtc = WebRtcTransport::new(
        Arc::clone(&identity),
        Arc::new(RoutedSignaling::new(http, Arc::clone(&mesh_signaling))),
        WebRtcConfig {
            udp_addrs: if settings.udp.is_empty() {
                WebRtcConfig::default().udp_addrs
            } else {
                settings.udp.clone()
            },
            ..WebRtcConfig::default()
        },
    );
    let (ble, attacher) = BleTransport::new(Arc::clone(&identity), rt.clone());
    let transport = Transports::new(webrtc, ble, &[ADDRESS_PREFIX], &rt);
    let started = NodeBuilder::new(identity)
        .store(Arc::clone(&store))
        .transport(transport, &address)
        .config(NodeConfig {
            bootstrap: bootstrap.clone(),
            ..NodeConfig::default()
        })
        .start(rt.clone())
        .await;
    let (node, events) = match started {
        Ok(n) => n,
        Err(e) => {
            let _ = store.close().await;
            return Err(node_error(e));
        }
    };
    mesh_signaling.attach(&node.pool, &rt);
    for (peer, url) in &bootstrap {
        if let Err(e) = node.add_neighbour(*peer, url).await {
            tracing::warn!(%peer, error = %e, "bootstrap neighbour");
        }
    }
    let codes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    rt.spawn(Box::pin(pump(
        events,
        node.pool.downgrade(),
        node.pool.watch_links(),
        tx,
        Arc::clone(&codes),
    )));
    Ok(Arc::new(MeshNode {
        peer: node.peer_id(),
        address: node.address.clone(),
        node: std::sync::Mutex::new(Some(node)),
        events: Mutex::new(rx),
        ble: attacher,
        bootstrap,
        codes,
        claim: std::sync::Mutex::new(Some(claim)),
    }))
}

/// Moves the node's messaging and recovery events, and link changes, converted, into one
/// queue; ends when messaging and recovery end (the node stopped) or the app's side is gone.
async fn pump(
    events: mesh_node::NodeEvents,
    pool: WeakPool<Transports<WebRtcTransport<RoutedSignaling>, Ble>, TokioRuntime>,
    mut changes: watch::Receiver<u64>,
    tx: mpsc::Sender<NodeEvent>,
    codes: Arc<std::sync::Mutex<Vec<(Hash256, String)>>>,
) {
    let mesh_node::NodeEvents {
        mut messages,
        mut recovery,
        gossip,
    } = events;
    // Gossip of other topics is not part of this API: drop it at the source rather than let
    // a full queue of it sit in memory.
    drop(gossip);
    let (mut messages_open, mut recovery_open, mut links_open) = (true, true, true);
    let mut linked: HashMap<PeerId, LinkKind> = HashMap::new();
    // Links made before this task started (to the bootstrap peers) are reported too.
    changes.mark_changed();
    while messages_open || recovery_open {
        let mut out = Vec::new();
        tokio::select! {
            m = messages.recv(), if messages_open => match m {
                Some(MessagingEvent::Message(m)) => out.push(NodeEvent::Message {
                    id: m.id.to_hex(),
                    sender: m.from.to_string(),
                    body: m.body,
                    direct: m.direct,
                }),
                Some(MessagingEvent::Delivered { id, by }) => out.push(NodeEvent::Delivered {
                    id: id.to_hex(),
                    by: by.to_string(),
                }),
                Some(_) => {}
                None => messages_open = false,
            },
            r = recovery.recv(), if recovery_open => match r {
                Some(e) => out.push(recovery_event(e, &codes)),
                None => recovery_open = false,
            },
            c = changes.changed(), if links_open => {
                // The pool holds no handle of ours: gone means stopped.
                match (c, pool.upgrade()) {
                    (Ok(()), Some(pool)) => link_changes(&pool, &mut linked, &mut out),
                    _ => links_open = false,
                }
            }
        }
        for event in out {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// The links that came up or went down since `linked` was taken (which it is again).
fn link_changes(
    pool: &mesh_transport::pool::Pool<
        Transports<WebRtcTransport<RoutedSignaling>, Ble>,
        TokioRuntime,
    >,
    linked: &mut HashMap<PeerId, LinkKind>,
    out: &mut Vec<NodeEvent>,
) {
    let now: HashMap<PeerId, LinkKind> = pool
        .connected()
        .into_iter()
        .filter_map(|p| pool.connection(&p).map(|c| (p, link_kind(c.kind()))))
        .collect();
    for peer in linked.keys().filter(|p| !now.contains_key(*p)) {
        out.push(NodeEvent::LinkDown {
            peer: peer.to_string(),
        });
    }
    for (peer, kind) in &now {
        if linked.get(peer) != Some(kind) {
            out.push(NodeEvent::LinkUp {
                peer: peer.to_string(),
                kind: *kind,
            });
        }
    }
    *linked = now;
}

fn link_kind(kind: TransportKind) -> LinkKind {
    match kind {
        TransportKind::WebRtc => LinkKind::WebRtc,
        TransportKind::Ble => LinkKind::Ble,
        _ => LinkKind::Memory,
    }
}

fn recovery_event(
    event: mesh_recovery::Event,
    codes: &std::sync::Mutex<Vec<(Hash256, String)>>,
) -> NodeEvent {
    use mesh_recovery::Event;
    match event {
        Event::ApprovalNeeded {
            request_id,
            owner,
            requester,
            code,
        } => {
            if let Ok(mut codes) = codes.lock() {
                codes.retain(|(id, _)| *id != request_id);
                if codes.len() >= MAX_CODES {
                    codes.remove(0);
                }
                codes.push((request_id, code.clone()));
            }
            NodeEvent::RecoveryApprovalNeeded {
                request_id: request_id.to_hex(),
                owner: owner.to_string(),
                requester: requester.to_string(),
                code,
            }
        }
        Event::ShareStored { owner, .. } => NodeEvent::RecoveryShareStored {
            owner: owner.to_string(),
        },
        Event::Protected { set_id } => NodeEvent::RecoveryProtected {
            set_id: hex(&set_id),
        },
        Event::Recovered { owner } => NodeEvent::Recovered {
            owner: owner.to_string(),
        },
        other => NodeEvent::RecoveryProgress {
            detail: format!("{other:?}"),
        },
    }
}

impl MeshNode {
    /// The running node, or [`MeshError::Closed`].
    fn node(&self) -> Result<Inner, MeshError> {
        self.node
            .lock()
            .ok()
            .and_then(|n| n.clone())
            .ok_or(MeshError::Closed)
    }

    /// Takes the node out (once): stop and drop shut it down.
    fn take(&self) -> Option<(Inner, Option<Claim>)> {
        let node = self.node.lock().ok()?.take()?;
        let claim = self.claim.lock().ok().and_then(|mut c| c.take());
        Some((node, claim))
    }

    /// Each of `guardians` (peer ids) with where to dial it (an open link's address, or what
    /// the DHT knows; empty: over a link only).
    async fn locate_all(
        node: &Inner,
        guardians: &[String],
    ) -> Result<Vec<(PeerId, String)>, MeshError> {
        let mut list = Vec::with_capacity(guardians.len());
        for g in guardians {
            let g = parse_peer(g)?;
            let address = node.locate(g).await.ok().flatten().unwrap_or_default();
            list.push((g, address));
        }
        Ok(list)
    }
}

#[uniffi::export]
impl MeshNode {
    /// This node's peer id.
    pub fn peer_id(&self) -> String {
        self.peer.to_string()
    }

    /// Where peers dial this node (its signaling URL, `relay:PEER_ID`, or empty).
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Sends `body` (at most [`crate::max_message_len`] bytes, about 63 KiB) to `to`,
    /// encrypted to it and signed: over an open link when there is one, else through the mesh
    /// (which also holds it for a peer that is offline, until it pulls). Returns the message id
    /// its [`NodeEvent::Delivered`] names.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a malformed peer id, this node itself, or a body over
    /// the limit; [`MeshError::Closed`].
    pub async fn send(&self, to: String, body: Vec<u8>) -> Result<String, MeshError> {
        let to = parse_peer(&to)?;
        let messenger = self.node()?.messenger.clone();
        on_runtime(async move {
            use mesh_gossip::driver::DriverError as Gossip;
            use mesh_node::MessagingError as E;
            match messenger.send(to, &body).await {
                Ok(id) => Ok(id.to_hex()),
                Err(E::Stopped | E::Gossip(Gossip::Stopped)) => Err(MeshError::Closed),
                Err(E::Gossip(Gossip::Storage(e))) => Err(storage(e)),
                Err(e @ E::Gossip(_)) => Err(MeshError::Refused {
                    reason: e.to_string(),
                }),
                Err(e @ (E::TooLarge(_) | E::ToSelf)) => Err(invalid(e)),
                Err(e) => Err(MeshError::Internal {
                    reason: e.to_string(),
                }),
            }
        })
        .await
    }

    /// The next event, waiting for one; nothing once the node is stopped. Call it in a loop
    /// (a Kotlin `Flow`, a Swift `AsyncStream`).
    pub async fn next_event(&self) -> Option<NodeEvent> {
        self.events.lock().await.recv().await
    }

    /// Links to `peer` at `address` (a signaling URL) now and makes it a gossip neighbour.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::Unreachable`] when the link cannot be made.
    pub async fn connect(&self, peer: String, address: String) -> Result<(), MeshError> {
        let peer = parse_peer(&peer)?;
        let node = self.node()?;
        on_runtime(async move {
            node.pool
                .dial(peer, &address)
                .await
                .map_err(|e| MeshError::Unreachable {
                    reason: e.to_string(),
                })?;
            node.add_neighbour(peer, &address)
                .await
                .map_err(|_| MeshError::Closed)
        })
        .await
    }

    /// The open links.
    pub fn links(&self) -> Vec<LinkInfo> {
        let Ok(node) = self.node() else {
            return Vec::new();
        };
        let pool = &node.pool;
        pool.connected()
            .into_iter()
            .filter_map(|peer| {
                let c = pool.connection(&peer)?;
                Some(LinkInfo {
                    peer: peer.to_string(),
                    address: pool.address_of(&peer).unwrap_or_default(),
                    kind: link_kind(c.kind()),
                    rtt_ms: c
                        .quality()
                        .rtt
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                })
            })
            .collect()
    }

    /// Makes a BLE connection the OS made (in `role` central or not) a link of this node: the
    /// mesh handshake runs over `radio` (as the central, refused unless the remote proves it is
    /// `expected_peer`, when given). Feed the returned link what the stack receives;
    /// [`BleLink::wait_connected`] tells who is on the other end once the handshake is done.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a malformed `expected_peer`; [`MeshError::Closed`].
    pub fn attach_ble(
        &self,
        radio: Arc<dyn BleRadio>,
        central: bool,
        expected_peer: Option<String>,
    ) -> Result<Arc<BleLink>, MeshError> {
        self.node()?;
        let expected = expected_peer.as_deref().map(parse_peer).transpose()?;
        let (radio, link) = AppRadio::new(radio);
        let attacher = self.ble.clone();
        let done = link.handshake_sender();
        let role = if central {
            Role::Central
        } else {
            Role::Peripheral
        };
        runtime().spawn(async move {
            let result = attacher
                .attach(radio, role, expected)
                .await
                .map(|p| p.to_string())
                .map_err(|e| MeshError::Unreachable {
                    reason: format!("BLE handshake: {e}"),
                });
            done.send_replace(Some(result));
        });
        Ok(link)
    }

    /// Stores `data` as a public blob this node keeps (pinned) and serves to peers. Returns its
    /// id (hex).
    ///
    /// # Errors
    /// [`MeshError::Refused`] when over the store's limits; [`MeshError::Storage`].
    pub async fn blob_put(&self, data: Vec<u8>) -> Result<String, MeshError> {
        let node = self.node()?;
        on_runtime(async move {
            let now = node.pool.runtime().unix_time();
            let stored = node
                .blobs
                .store()
                .put(
                    node.peer_id(),
                    &data,
                    PutOptions {
                        expires_at: None,
                        pinned: true,
                    },
                    now,
                )
                .await
                .map_err(blob_error)?;
            Ok(stored.id.0.to_hex())
        })
        .await
    }

    /// The blob `id`: from this node's store, or else fetched from `provider` (a peer id: over
    /// an open link, or where the DHT says it is), verified chunk by chunk, and kept.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::NotFound`] when it is not here and no
    /// provider was given; [`MeshError::Unreachable`] when the provider does not deliver it.
    pub async fn blob_get(
        &self,
        id: String,
        provider: Option<String>,
    ) -> Result<Vec<u8>, MeshError> {
        let id = mesh_blob::manifest::BlobId(parse_hash(&id, "blob id")?);
        let provider = provider.as_deref().map(parse_peer).transpose()?;
        let node = self.node()?;
        on_runtime(async move {
            let store = node.blobs.store();
            if !store.contains(&id).await.map_err(blob_error)? {
                let Some(from) = provider else {
                    return Err(MeshError::NotFound {
                        reason: format!("blob {} is not stored here", id.0.to_hex()),
                    });
                };
                let address = match node.pool.address_of(&from) {
                    Some(a) => a,
                    None => node.locate(from).await.ok().flatten().unwrap_or_default(),
                };
                node.blobs
                    .fetch(
                        id,
                        &[(from, address)],
                        node.peer_id(),
                        PutOptions {
                            expires_at: None,
                            pinned: true,
                        },
                    )
                    .await
                    .map_err(fetch_error)?;
            }
            store.get(&id).await.map_err(blob_error)
        })
        .await
    }

    /// Shares this node's key among `guardians` (peer ids), any `threshold` of whom can give
    /// it back to a new device. Returns the guardian set's id; [`NodeEvent::RecoveryProtected`]
    /// follows once every guardian has confirmed.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a threshold outside 1 to the number of guardians;
    /// [`MeshError::Refused`] by the recovery policy.
    pub async fn recovery_protect(
        &self,
        guardians: Vec<String>,
        threshold: u32,
    ) -> Result<String, MeshError> {
        let k = mesh_recovery::shamir::threshold(threshold, guardians.len()).map_err(invalid)?;
        let node = self.node()?;
        on_runtime(async move {
            let list = Self::locate_all(&node, &guardians).await?;
            let set = node
                .recovery
                .protect(list, k)
                .await
                .map_err(recovery_error)?;
            Ok(hex(&set))
        })
        .await
    }

    /// Agrees (or, with `allow` false, stops agreeing) to keep a share of `owner`'s key.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::Closed`].
    pub async fn recovery_guard(&self, owner: String, allow: bool) -> Result<(), MeshError> {
        let owner = parse_peer(&owner)?;
        let node = self.node()?;
        on_runtime(async move {
            node.recovery
                .allow_owner(owner, allow)
                .await
                .map_err(recovery_error)
        })
        .await
    }

    /// Recovery requests waiting for this guardian's decision.
    ///
    /// # Errors
    /// [`MeshError::Closed`].
    pub async fn recovery_requests(&self) -> Result<Vec<RecoveryRequest>, MeshError> {
        let node = self.node()?;
        let codes = Arc::clone(&self.codes);
        on_runtime(async move {
            let pending = node
                .recovery
                .pending_requests()
                .await
                .map_err(recovery_error)?;
            let codes: HashMap<Hash256, String> = codes
                .lock()
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default();
            Ok(pending
                .into_iter()
                .map(|(id, owner, requester)| RecoveryRequest {
                    request_id: id.to_hex(),
                    owner: owner.to_string(),
                    requester: requester.to_string(),
                    code: codes.get(&id).cloned(),
                })
                .collect())
        })
        .await
    }

    /// Approves recovery request `request_id`: this guardian's share goes to the requester.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::Refused`] for an unknown or expired request.
    pub async fn recovery_approve(&self, request_id: String) -> Result<(), MeshError> {
        let id = parse_hash(&request_id, "request id")?;
        let node = self.node()?;
        on_runtime(async move { node.recovery.approve(id).await.map_err(recovery_error) }).await
    }

    /// Denies recovery request `request_id`.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::Refused`] for an unknown request.
    pub async fn recovery_deny(&self, request_id: String) -> Result<(), MeshError> {
        let id = parse_hash(&request_id, "request id")?;
        let node = self.node()?;
        on_runtime(async move { node.recovery.deny(id).await.map_err(recovery_error) }).await
    }

    /// On a new device (this node, with a fresh identity): asks `guardians` for their shares
    /// of lost identity `owner`. Returns the code each guardian's user will be shown, to
    /// compare; [`NodeEvent::Recovered`] follows once enough approved.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]; [`MeshError::Refused`] by the recovery core.
    pub async fn recovery_start(
        &self,
        owner: String,
        guardians: Vec<String>,
    ) -> Result<Vec<GuardianCode>, MeshError> {
        let owner = parse_peer(&owner)?;
        if guardians.is_empty() {
            return Err(invalid("at least one guardian"));
        }
        let node = self.node()?;
        on_runtime(async move {
            let list = Self::locate_all(&node, &guardians).await?;
            let codes = node
                .recovery
                .recover(owner, list, None)
                .await
                .map_err(recovery_error)?;
            Ok(codes
                .into_iter()
                .map(|(g, code)| GuardianCode {
                    guardian: g.to_string(),
                    code,
                })
                .collect())
        })
        .await
    }

    /// The recovered identity of `owner` (after [`NodeEvent::Recovered`]), saved into
    /// `storage` (replacing what it held) before it is handed over (the node gives it out once: a call cancelled half
    /// way must not lose it). Restart the app's node with it.
    ///
    /// # Errors
    /// [`MeshError::Refused`] when it was not (or no longer is) recovered here; the storage's
    /// failure (the key then stays here for another try).
    pub async fn recovery_take(
        &self,
        owner: String,
        storage: Arc<dyn crate::identity::SecureStorage>,
    ) -> Result<Arc<MeshIdentity>, MeshError> {
        let owner = parse_peer(&owner)?;
        // The recovery handle only: waiting on the app's keystore must not hold the pool.
        let recovery = self.node()?.recovery;
        // Not `on_runtime`: this must finish even if the caller stops waiting.
        let task = runtime().spawn(async move {
            let held = recovery.recovered(owner).await.map_err(recovery_error)?;
            let Some(identity) = held else {
                return Err(MeshError::Refused {
                    reason: format!("{owner}'s key is not recovered here"),
                });
            };
            crate::identity::save_to(&storage, &identity).await?;
            // Saved: the key is the app's now, whatever happens to the copy here.
            if let Err(e) = recovery.take_recovered(owner).await {
                tracing::warn!(%owner, error = %e, "recovered key saved, but not released here");
            }
            Ok(MeshIdentity::wrap(identity))
        });
        task.await.map_err(|e| MeshError::Internal {
            reason: e.to_string(),
        })?
    }

    /// The device's network changed (Wi-Fi to cellular, a new address, back online): the
    /// WebRTC links over the old network are closed (their paths are gone; waiting for them
    /// to time out would take seconds per link) and the node links to its bootstrap peers
    /// again, which pulls what it missed. BLE links are not touched. Returns how many bootstrap
    /// peers it linked to.
    ///
    /// # Errors
    /// [`MeshError::Closed`].
    pub async fn network_changed(&self) -> Result<u32, MeshError> {
        let node = self.node()?;
        let bootstrap = self.bootstrap.clone();
        on_runtime(async move {
            // Forgotten first (so the dials below make new links), closed all at once (each
            // close may wait for its data channel to drain).
            let webrtc: Vec<PeerId> = node
                .pool
                .connected()
                .into_iter()
                .filter(|p| {
                    node.pool
                        .connection(p)
                        .is_some_and(|c| c.kind() == TransportKind::WebRtc)
                })
                .collect();
            let pool = &node.pool;
            futures_util::future::join_all(webrtc.iter().map(|p| pool.close_link(p))).await;
            let mut linked = 0u32;
            for (peer, url) in &bootstrap {
                match node.pool.dial(*peer, url).await {
                    Ok(()) => {
                        linked += 1;
                        // Re-adding pulls from it at once.
                        let _ = node.add_neighbour(*peer, url).await;
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "bootstrap after a network change"),
                }
            }
            Ok(linked)
        })
        .await
    }

    /// Stops the node: every protocol writes what it must, links close, the database is
    /// closed (another node may open it a moment later). [`MeshNode::next_event`] returns
    /// nothing once the queued events are read; other calls fail with [`MeshError::Closed`].
    /// Stopping twice does nothing.
    pub async fn stop(&self) {
        let Some((node, claim)) = self.take() else {
            return;
        };
        // Not `on_runtime`: a stop the caller stops waiting for still completes.
        let _ = runtime()
            .spawn(async move {
                shut_down(&node).await;
                drop(claim);
            })
            .await;
    }
}

impl Drop for MeshNode {
    /// A node the app let go of without [`MeshNode::stop`] is stopped in the background, so
    /// its tasks, links and database do not outlive every handle to it.
    fn drop(&mut self) {
        if let Some((node, claim)) = self.take() {
            runtime().spawn(async move {
                shut_down(&node).await;
                drop(claim);
            });
        }
    }
}

/// Stops the node's protocols and links (within [`STOP_TIMEOUT`]) and closes its database.
async fn shut_down(node: &Inner) {
    if tokio::time::timeout(STOP_TIMEOUT, node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "the node did not stop within {STOP_TIMEOUT:?}: closing its links and database anyway"
        );
        let _ = tokio::time::timeout(
            mesh_transport_ble::link::CLOSE_TIMEOUT * 2,
            node.pool.close_all(),
        )
        .await;
    }
    let _ = node.store.close().await;
}

fn fetch_error(e: mesh_blob::transfer::FetchError) -> MeshError {
    use mesh_blob::transfer::FetchError;
    match e {
        FetchError::Stopped => MeshError::Closed,
        FetchError::Store(e) => blob_error(e),
        other => MeshError::Unreachable {
            reason: other.to_string(),
        },
    }
}

fn blob_error(e: mesh_blob::BlobError) -> MeshError {
    match e {
        mesh_blob::BlobError::NotFound(id) => MeshError::NotFound {
            reason: format!("blob {}", id.0.to_hex()),
        },
        mesh_blob::BlobError::Storage(e) => storage(e),
        e @ mesh_blob::BlobError::Corrupt { .. } => storage(e),
        other => MeshError::Refused {
            reason: other.to_string(),
        },
    }
}

/// The handshake outcome a [`BleLink`] waits on.
pub(crate) type Handshake = watch::Sender<Option<Result<String, MeshError>>>;
