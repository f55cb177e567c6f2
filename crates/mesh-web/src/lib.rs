//! The mesh node in the browser, for JavaScript.
//!
//! A full peer, not a client of a server: the same DHT, gossip, blob, recovery and messaging
//! drivers as `meshd`, with its state in IndexedDB and its links over the browser's
//! `RTCPeerConnection`. Built with `wasm-bindgen` into an ES module with TypeScript types
//! (`cargo xtask web` builds it; `meshd run` serves it with its web page):
//!
//! ```js
//! import init, { MeshNode } from "./pkg/mesh_web.js";
//! await init();
//! const node = await MeshNode.open("a long passphrase", !(await MeshNode.hasIdentity()));
//! await node.connect(location.origin);        // a meshd: bootstrap and relay
//! await node.send(friendPeerId, "hello");     // end-to-end encrypted
//! for (;;) { const event = await node.nextEvent(); if (!event) break; console.log(event); }
//! ```
//!
//! The identity's seed is kept in the same IndexedDB database, sealed with the passphrase
//! (Argon2id, XChaCha20-Poly1305: `mesh_platform::keystore`). Files are kept encrypted to this
//! node; the list of files (names, peers, sizes, times) and the node's protocol state are not
//! encrypted at rest.
//!
//! A browser cannot take incoming offers, so it links to peers it can dial (nodes with an
//! HTTP signaling endpoint, such as `meshd`) and reaches everyone else through the mesh.
//! Files it sends are fetched over the links it has: it links to the recipient first when
//! the recipient can be dialed. (So two browsers can message each other but not send each
//! other files, and a browser fetches files only from senders it can dial.)
//!
//! Recovery: the guardian's side (agree to guard, see requests with their codes, approve,
//! deny) and protecting this node's key. Recovering a lost key on a new device is not in the
//! browser API (`meshd recovery start` does it).

//!
//! Errors: every method that fails rejects with a JavaScript `Error` whose `name` says what
//! went wrong: `InvalidInput` (a bad peer id, name, size or passphrase), `WrongPassphrase`,
//! `NoIdentity`, `Unreachable` (a peer or signaling endpoint that cannot be reached),
//! `NotStored`, `Storage` (IndexedDB), `Closed` (the node is closed), `Unsupported` (no
//! `window`).

#![cfg(target_arch = "wasm32")]
// The errors of every method are the named ones of the module documentation.
#![allow(clippy::missing_errors_doc)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use js_sys::{Array, Object, Reflect, Uint8Array};
use mesh_crypto::{Hash256, Identity, PeerId, UnixMillis};
use mesh_node::files::{
    FileError, FileOffer, RECIPIENT_HOLD, max_file_len, sender_hold, valid_name,
};
use mesh_node::node::TABLES;
use mesh_node::{MessagingEvent, Node, NodeBuilder, NodeEvents};
use mesh_platform::keystore::{
    KEYSTORE_TABLE, KdfParams, KeystoreError, PassphraseStorage, load_identity, save_identity,
};
use mesh_platform::kv::{Batch, Direction, KeyRange, KvStore, Schema, Store};
use mesh_platform::runtime::{Runtime, WasmRuntime};
use mesh_store_indexeddb::IndexedDbBackend;
use mesh_transport::Connection;
use mesh_transport_webrtc::signaling::http::{HttpSignaling, ID_PATH, SIGNAL_PATH};
use mesh_transport_webrtc::{BrowserConfig, BrowserTransport};
use tokio::sync::Mutex;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The IndexedDB database used when none is named.
pub const DEFAULT_DATABASE: &str = "mesh";
/// Table of the files this node sent and was offered, newest last: key `at u64 BE | message
/// id [32]`, value a [`FileRecord`].
pub const FILES_TABLE: &str = "web/files";
/// Index of [`FILES_TABLE`]: message id → its `at u64 BE`.
pub const FILE_IDS_TABLE: &str = "web/file-ids";
/// Files recorded at most; past it, the oldest offer not fetched makes room (or a new offer
/// is reported but not recorded).
pub const MAX_FILES: u64 = 1000;
/// Longest text message, in bytes (what one message carries).
pub const MAX_TEXT_LEN: usize = mesh_node::messaging::MAX_BODY_LEN;
/// Files listed at most.
const MAX_FILES_LISTED: usize = 1000;
/// How long `status` waits for each link's ping.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Verification codes of recovery requests remembered at most.
const MAX_CODES: usize = 256;

const fn web_tables() -> [&'static str; TABLES.len() + 3] {
    let mut t = [""; TABLES.len() + 3];
    let mut i = 0;
    while i < TABLES.len() {
        t[i] = TABLES[i];
        i += 1;
    }
    t[TABLES.len()] = KEYSTORE_TABLE;
    t[TABLES.len() + 1] = FILES_TABLE;
    t[TABLES.len() + 2] = FILE_IDS_TABLE;
    t
}

static WEB_TABLES: [&str; TABLES.len() + 3] = web_tables();

/// The browser node's IndexedDB schema: the node's tables, the keystore's, and the files list.
pub static WEB_SCHEMA: Schema = Schema {
    version: 1,
    tables: &WEB_TABLES,
    migrations: &[],
};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** What `nextEvent` reports. */
export type MeshEvent =
  | { type: "message"; id: string; from: string; text: string; direct: boolean }
  | { type: "file"; id: string; from: string; name: string; size: number; direct: boolean }
  | { type: "delivered"; id: string; by: string }
  | { type: "recovery"; event: string; owner?: string; requester?: string; requestId?: string; code?: string; detail: string }
  | { type: "other"; detail: string };

/** A file this node sent or was offered. */
export interface FileEntry {
  /** The id of the message that offered it. */
  id: string;
  /** Who sent it, or to whom it was sent. */
  peer: string;
  direction: "received" | "sent";
  name: string;
  size: number;
  /** Unix milliseconds. */
  at: number;
  /** Whether its (encrypted) content is in this browser's store. */
  stored: boolean;
}

/** One link. */
export interface LinkStatus {
  peer: string;
  /** Smoothed round-trip time in milliseconds, as last measured (status() sends a ping to refresh it). */
  rttMs?: number;
  /** Fraction of pings lost, 0 to 1. */
  loss: number;
  /** 0 (unusable) to 100 (excellent). */
  score: number;
}

export interface NodeStatus {
  peerId: string;
  links: LinkStatus[];
  dht: { contacts: number; records: number };
  storage: { blobs: number; chunks: number; bytes: number; quotaBytes: number };
  messaging: { sentDirect: number; sentMesh: number; received: number; duplicates: number; refused: number };
}

export interface RecoveryRequest {
  requestId: string;
  owner: string;
  requester: string;
  /** The code the new device shows: compare them before approving. */
  code?: string;
}
"#;

type WebNode = Node<BrowserTransport<HttpSignaling>, WasmRuntime>;

/// An error for JavaScript: an `Error` whose `name` says what kind it is
/// (`WrongPassphrase`, `NoIdentity`, `InvalidInput`, `Unreachable`, `Storage`, `Closed`, ...).
fn error(name: &str, message: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&message.to_string());
    e.set_name(name);
    e.into()
}

fn invalid(message: impl std::fmt::Display) -> JsValue {
    error("InvalidInput", message)
}

/// A sent file's key was sealed to its recipient: the sender cannot decrypt it.
fn sent_file() -> JsValue {
    invalid("a sent file is encrypted to its recipient: only they can open it")
}

fn storage(e: impl std::fmt::Display) -> JsValue {
    error("Storage", e)
}

fn keystore(e: KeystoreError) -> JsValue {
    match e {
        KeystoreError::WrongPassphrase => error("WrongPassphrase", "wrong passphrase"),
        e => error("Storage", e),
    }
}

/// A file operation's error under its name: `InvalidInput` (too large, bad name), `Storage`
/// (quota, IndexedDB), `Undecryptable` (not for this node, altered, or not what was offered),
/// `Unreachable` (the sender could not be reached or does not have it), `Closed`.
fn file_error(e: FileError) -> JsValue {
    use mesh_blob::BlobError;
    use mesh_blob::private::PrivateError;
    use mesh_blob::transfer::FetchError;
    let store = |e: &BlobError| match e {
        BlobError::TooLarge { .. } => "InvalidInput",
        BlobError::OwnerQuota { .. } | BlobError::TotalQuota { .. } | BlobError::Storage(_) => {
            "Storage"
        }
        _ => "Undecryptable",
    };
    let name = match &e {
        FileError::InvalidName => "InvalidInput",
        FileError::Private(PrivateError::Store(b)) | FileError::Fetch(FetchError::Store(b)) => {
            store(b)
        }
        FileError::Private(_) | FileError::SizeMismatch { .. } => "Undecryptable",
        FileError::Fetch(FetchError::Stopped)
        | FileError::Messaging(mesh_node::MessagingError::Stopped) => "Closed",
        _ => "Unreachable",
    };
    error(name, e)
}

fn messaging_error(e: mesh_node::MessagingError) -> JsValue {
    use mesh_node::MessagingError as E;
    let name = match &e {
        E::TooLarge(_) | E::ToSelf => "InvalidInput",
        E::Stopped => "Closed",
        _ => "Unreachable",
    };
    error(name, e)
}

fn recovery_error(e: mesh_recovery::driver::DriverError) -> JsValue {
    use mesh_recovery::driver::DriverError as E;
    let name = match &e {
        E::Stopped => "Closed",
        E::Storage(_) => "Storage",
        _ => "InvalidInput",
    };
    error(name, e)
}

fn peer(text: &str) -> Result<PeerId, JsValue> {
    text.trim()
        .parse()
        .map_err(|e| invalid(format!("peer id {text:?}: {e}")))
}

fn hash(text: &str) -> Result<Hash256, JsValue> {
    Hash256::from_hex(text).ok_or_else(|| invalid(format!("{text:?} is not 64 hex digits")))
}

/// A plain JavaScript object from key/value pairs.
fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

/// A byte count or counter as a JavaScript number (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn num(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

/// GET `url` and its body as text.
async fn fetch_text(url: &str) -> Result<String, JsValue> {
    let window = web_sys::window().ok_or_else(|| error("Unsupported", "no window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| error("Unreachable", format!("{url}: {e:?}")))?
        .unchecked_into();
    if !response.ok() {
        return Err(error(
            "Unreachable",
            format!("{url}: HTTP {}", response.status()),
        ));
    }
    let text = JsFuture::from(response.text()?)
        .await
        .map_err(|e| error("Unreachable", format!("{url}: {e:?}")))?;
    Ok(text.as_string().unwrap_or_default())
}

/// A file sent or offered, as kept in [`FILES_TABLE`] under the offer message's id:
/// `version u8 = 1 | direction u8 (0 received, 1 sent) | peer [32] | at u64 | offer body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Whether this node sent it.
    pub sent: bool,
    /// The other side.
    pub peer: PeerId,
    /// When it was sent or offered.
    pub at: UnixMillis,
    /// The offer.
    pub offer: FileOffer,
}

impl FileRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![1, u8::from(self.sent)];
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&self.at.0.to_le_bytes());
        out.extend_from_slice(&self.offer.encode());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[1, dir @ (0 | 1)], rest) = bytes.split_first_chunk::<2>()? else {
            return None;
        };
        let (peer, rest) = rest.split_first_chunk::<32>()?;
        let (at, rest) = rest.split_first_chunk::<8>()?;
        Some(Self {
            sent: dir == 1,
            peer: PeerId::from_bytes(*peer).ok()?,
            at: UnixMillis(u64::from_le_bytes(*at)),
            offer: FileOffer::decode(rest)?,
        })
    }
}

struct Inner {
    node: WebNode,
    events: Mutex<NodeEvents>,
    /// Verification codes of recovery requests, from their `ApprovalNeeded` events.
    codes: RefCell<std::collections::VecDeque<(Hash256, String)>>,
    closed: std::cell::Cell<bool>,
    /// Wakes a pending `nextEvent` when the node closes.
    closing: tokio::sync::Notify,
}

/// A mesh node running in this page.
#[wasm_bindgen]
pub struct MeshNode {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl MeshNode {
    /// Whether IndexedDB database `database` (default `"mesh"`) holds an identity.
    #[wasm_bindgen(js_name = hasIdentity)]
    pub async fn has_identity(database: Option<String>) -> Result<bool, JsValue> {
        let store = open_store(database.as_deref()).await?;
        let found = store
            .get(
                KEYSTORE_TABLE,
                mesh_platform::keystore::IDENTITY_SECRET.as_bytes(),
            )
            .await
            .map_err(storage);
        let _ = store.close().await;
        Ok(found?.is_some())
    }

    /// Deletes database `database` (default `"mesh"`): the identity, messages' state and
    /// files. Close every node using it first.
    pub async fn forget(database: Option<String>) -> Result<(), JsValue> {
        IndexedDbBackend::delete(database.as_deref().unwrap_or(DEFAULT_DATABASE))
            .await
            .map_err(storage)
    }

    /// Unlocks the identity in `database` (default `"mesh"`) with `passphrase` and starts
    /// the node; with `create`, makes a new identity if there is none. Fails with
    /// `WrongPassphrase`, or `NoIdentity` when there is none and `create` is false.
    pub async fn open(
        passphrase: String,
        create: bool,
        database: Option<String>,
    ) -> Result<MeshNode, JsValue> {
        if passphrase.chars().count() < 8 {
            return Err(invalid("the passphrase must have at least 8 characters"));
        }
        // The node shares its store as `Arc<dyn KvStore>` (on wasm32 nothing is sent across
        // threads: there is one).
        #[allow(clippy::arc_with_non_send_sync)]
        let store: Arc<dyn KvStore> = Arc::new(open_store(database.as_deref()).await?);
        match Self::start(Arc::clone(&store), &passphrase, create).await {
            Ok(node) => Ok(node),
            Err(e) => {
                let _ = store.close().await;
                Err(e)
            }
        }
    }

    async fn start(
        store: Arc<dyn KvStore>,
        passphrase: &str,
        create: bool,
    ) -> Result<MeshNode, JsValue> {
        let keys = PassphraseStorage::new(
            Arc::clone(&store),
            passphrase.as_bytes(),
            KdfParams::DEFAULT,
        );
        let identity = match load_identity(&keys).await.map_err(keystore)? {
            Some(id) => id,
            None if create => {
                let id = Identity::generate();
                save_identity(&keys, &id).await.map_err(keystore)?;
                id
            }
            None => return Err(error("NoIdentity", "no identity in this browser yet")),
        };
        let transport = BrowserTransport::new(
            Rc::new(Identity::from_seed(&identity.seed())),
            Rc::new(HttpSignaling::client()),
            BrowserConfig::default(),
        );
        let (node, events) = NodeBuilder::new(Arc::new(identity))
            .store(store)
            // Browsers cannot be dialed: peers reach this node through the mesh.
            .transport(transport, "")
            .start(WasmRuntime::new())
            .await
            .map_err(|e| error("Storage", e))?;
        Ok(MeshNode {
            inner: Rc::new(Inner {
                node,
                events: Mutex::new(events),
                codes: RefCell::new(std::collections::VecDeque::new()),
                closed: std::cell::Cell::new(false),
                closing: tokio::sync::Notify::new(),
            }),
        })
    }

    /// This node's peer id (what others send to).
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.inner.node.peer_id().to_string()
    }

    /// The fingerprint users compare to check they have the right peer id.
    #[wasm_bindgen(getter)]
    pub fn fingerprint(&self) -> String {
        self.inner.node.peer_id().fingerprint()
    }

    /// Links to the node serving signaling at `url` (its origin, e.g.
    /// `http://127.0.0.1:7400`, or its signaling URL), joins the DHT and the mesh through
    /// it, and returns its peer id (asked from it: trust on first use).
    pub async fn connect(&self, url: String) -> Result<String, JsValue> {
        let node = self.node()?;
        let base = url.trim().trim_end_matches('/');
        let base = base.strip_suffix(SIGNAL_PATH).unwrap_or(base);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(invalid(format!("{url:?} is not an http(s) URL")));
        }
        let id = peer(&fetch_text(&format!("{base}{ID_PATH}")).await?)?;
        let address = format!("{base}{SIGNAL_PATH}");
        node.pool
            .dial(id, &address)
            .await
            .map_err(|e| error("Unreachable", e))?;
        node.add_neighbour(id, &address)
            .await
            .map_err(|e| error("Closed", e))?;
        node.dht
            .add_contact(id, &address)
            .await
            .map_err(|e| error("Closed", e))?;
        Ok(id.to_string())
    }

    /// Sends `text` to peer `to`, end-to-end encrypted: over a link if there is one, else
    /// through the mesh. Returns the message id its `delivered` event will name.
    pub async fn send(&self, to: String, text: String) -> Result<String, JsValue> {
        let to = peer(&to)?;
        if text.len() > MAX_TEXT_LEN {
            return Err(invalid(format!(
                "the message has {} bytes, at most {MAX_TEXT_LEN}",
                text.len()
            )));
        }
        let id = self
            .node()?
            .messenger
            .send(to, text.as_bytes())
            .await
            .map_err(messaging_error)?;
        Ok(id.to_hex())
    }

    /// Sends `data` as file `name` to `to`: encrypted to `to` and kept here (for a week) for
    /// `to` to fetch; `to` gets a `file` event. Returns the offer message's id.
    #[wasm_bindgen(js_name = sendFile)]
    pub async fn send_file(
        &self,
        to: String,
        name: String,
        data: Uint8Array,
    ) -> Result<String, JsValue> {
        let node = self.node()?;
        let to = peer(&to)?;
        if !valid_name(&name) {
            return Err(invalid(format!("{name:?} is not a valid file name")));
        }
        // Checked before the bytes are copied into this module's memory.
        let max = self.max_file_size();
        if u64::from(data.length()) > max {
            return Err(invalid(format!(
                "the file has {} bytes; this node keeps files of at most {max}",
                data.length()
            )));
        }
        let data = data.to_vec();
        // The recipient fetches over a link: make one when the recipient can be dialed
        // (a browser cannot take a link it did not make).
        if !node.pool.connected().contains(&to)
            && let Ok(Some(address)) = node.locate(to).await
        {
            let _ = node.pool.dial(to, &address).await;
        }
        let now = node.pool.runtime().unix_time();
        let hold = sender_hold(now);
        let (id, offer) = node
            .send_file(to, &name, &data, hold)
            .await
            .map_err(file_error)?;
        let record = FileRecord {
            sent: true,
            peer: to,
            at: now,
            offer,
        };
        self.remember(&id, &record).await?;
        Ok(id.to_hex())
    }

    /// The largest file this node sends or keeps, in bytes (its blob store's limit, less the
    /// encryption's overhead).
    #[wasm_bindgen(getter, js_name = maxFileSize)]
    pub fn max_file_size(&self) -> u64 {
        max_file_len(self.inner.node.blobs.store().config())
    }

    /// Records a file under message `id`, making room if [`MAX_FILES`] are recorded: the
    /// oldest offer received and not fetched goes. False when there is no room (every file
    /// recorded was sent or fetched).
    async fn remember(&self, id: &Hash256, record: &FileRecord) -> Result<bool, JsValue> {
        let store = &self.node()?.store;
        if store.stats(FILES_TABLE).await.map_err(storage)?.entries >= MAX_FILES {
            let oldest = store
                .range(FILES_TABLE, KeyRange::all(), Direction::Forward, 256)
                .await
                .map_err(storage)?;
            let mut evicted = false;
            for (key, value) in oldest {
                let Some(r) = FileRecord::decode(&value) else {
                    continue;
                };
                let stored = self
                    .inner
                    .node
                    .blobs
                    .store()
                    .contains(&r.offer.blob)
                    .await
                    .map_err(storage)?;
                if !r.sent && !stored {
                    let mut b = Batch::new();
                    b.delete(FILES_TABLE, key.as_slice());
                    b.delete(FILE_IDS_TABLE, &key[8..]);
                    store.apply(b).await.map_err(storage)?;
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                return Ok(false);
            }
        }
        let at = record.at.0.to_be_bytes();
        let mut key = at.to_vec();
        key.extend_from_slice(id.as_bytes());
        let mut b = Batch::new();
        b.put(FILES_TABLE, key, record.encode());
        b.put(FILE_IDS_TABLE, id.as_bytes(), at);
        store.apply(b).await.map_err(storage)?;
        Ok(true)
    }

    /// The next event: a message, a file offered, a receipt, or a recovery event; `undefined`
    /// once the node is closed. Call it in a loop (events wait, up to a limit, until read).
    #[wasm_bindgen(js_name = nextEvent, unchecked_return_type = "MeshEvent | undefined")]
    pub async fn next_event(&self) -> Result<JsValue, JsValue> {
        if self.inner.closed.get() {
            return Ok(JsValue::UNDEFINED);
        }
        let mut events = self.inner.events.lock().await;
        let events = &mut *events;
        // Either channel may end on its own (a driver that stopped): the other still reports.
        tokio::select! {
            Some(m) = events.messages.recv() => {
                if self.inner.closed.get() {
                    return Ok(JsValue::UNDEFINED);
                }
                self.message_event(m).await
            }
            Some(r) = events.recovery.recv() => Ok(self.recovery_event(&r)),
            () = self.inner.closing.notified() => Ok(JsValue::UNDEFINED),
            else => Ok(JsValue::UNDEFINED),
        }
    }

    async fn message_event(&self, event: MessagingEvent) -> Result<JsValue, JsValue> {
        Ok(match event {
            MessagingEvent::Message(m) => match FileOffer::decode(&m.body) {
                Some(offer) => {
                    let node = self.node()?;
                    let record = FileRecord {
                        sent: false,
                        peer: m.from,
                        at: node.pool.runtime().unix_time(),
                        offer,
                    };
                    let recorded = self.remember(&m.id, &record).await?;
                    object(&[
                        ("recorded", recorded.into()),
                        ("type", "file".into()),
                        ("id", m.id.to_hex().into()),
                        ("from", m.from.to_string().into()),
                        ("name", record.offer.name.into()),
                        ("size", num(record.offer.size)),
                        ("direct", m.direct.into()),
                    ])
                }
                None => object(&[
                    ("type", "message".into()),
                    ("id", m.id.to_hex().into()),
                    ("from", m.from.to_string().into()),
                    ("text", String::from_utf8_lossy(&m.body).into_owned().into()),
                    ("direct", m.direct.into()),
                ]),
            },
            MessagingEvent::Delivered { id, by } => object(&[
                ("type", "delivered".into()),
                ("id", id.to_hex().into()),
                ("by", by.to_string().into()),
            ]),
            other => object(&[
                ("type", "other".into()),
                ("detail", format!("{other:?}").into()),
            ]),
        })
    }

    fn recovery_event(&self, event: &mesh_recovery::Event) -> JsValue {
        use mesh_recovery::Event;
        let detail = format!("{event:?}");
        let name: String = detail
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut fields: Vec<(&str, JsValue)> = vec![
            ("type", "recovery".into()),
            ("event", name.into()),
            ("detail", detail.clone().into()),
        ];
        match event {
            Event::ApprovalNeeded {
                request_id,
                owner,
                requester,
                code,
            } => {
                let mut codes = self.inner.codes.borrow_mut();
                if codes.len() >= MAX_CODES {
                    // The oldest goes (a request that old has likely been decided).
                    codes.pop_front();
                }
                codes.retain(|(id, _)| id != request_id);
                codes.push_back((*request_id, code.clone()));
                fields.extend([
                    ("requestId", request_id.to_hex().into()),
                    ("owner", owner.to_string().into()),
                    ("requester", requester.to_string().into()),
                    ("code", code.clone().into()),
                ]);
            }
            Event::ShareStored { owner, .. } | Event::ShareRevoked { owner, .. } => {
                fields.push(("owner", owner.to_string().into()));
            }
            Event::Released {
                request_id,
                owner,
                requester,
            } => fields.extend([
                ("requestId", request_id.to_hex().into()),
                ("owner", owner.to_string().into()),
                ("requester", requester.to_string().into()),
            ]),
            _ => {}
        }
        object(&fields)
    }

    /// Files this node sent or was offered, newest first.
    #[wasm_bindgen(unchecked_return_type = "FileEntry[]")]
    pub async fn files(&self) -> Result<JsValue, JsValue> {
        let node = self.node()?;
        let rows = node
            .store
            .range(
                FILES_TABLE,
                KeyRange::all(),
                Direction::Reverse,
                MAX_FILES_LISTED,
            )
            .await
            .map_err(storage)?;
        let records = rows
            .into_iter()
            .filter_map(|(k, v)| Some((k, FileRecord::decode(&v)?)));
        let list = Array::new();
        for (key, r) in records {
            let stored = node
                .blobs
                .store()
                .contains(&r.offer.blob)
                .await
                .map_err(storage)?;
            list.push(&object(&[
                ("id", data_encoding::HEXLOWER.encode(&key[8..]).into()),
                ("peer", r.peer.to_string().into()),
                ("direction", if r.sent { "sent" } else { "received" }.into()),
                ("name", r.offer.name.into()),
                ("size", num(r.offer.size)),
                ("at", num(r.at.0)),
                ("stored", stored.into()),
            ]));
        }
        Ok(list.into())
    }

    async fn record(&self, id: &str) -> Result<FileRecord, JsValue> {
        let id = hash(id)?;
        let store = &self.node()?.store;
        let at = store
            .get(FILE_IDS_TABLE, id.as_bytes())
            .await
            .map_err(storage)?
            .ok_or_else(|| invalid("no file with that id"))?;
        let mut key = at;
        key.extend_from_slice(id.as_bytes());
        let bytes = store
            .get(FILES_TABLE, &key)
            .await
            .map_err(storage)?
            .ok_or_else(|| storage("the file index names a missing record"))?;
        FileRecord::decode(&bytes).ok_or_else(|| storage("a stored file record is corrupt"))
    }

    /// Fetches the file offered in message `id` from its sender (chunk by verified chunk),
    /// keeps it in this browser (IndexedDB) and returns its decrypted content.
    #[wasm_bindgen(js_name = fetchFile)]
    pub async fn fetch_file(&self, id: String) -> Result<Uint8Array, JsValue> {
        let r = self.record(&id).await?;
        if r.sent {
            return Err(sent_file());
        }
        let hold = RECIPIENT_HOLD;
        let data = self
            .node()?
            .receive_file(&r.offer, r.peer, hold)
            .await
            .map_err(file_error)?;
        Ok(Uint8Array::from(data.as_slice()))
    }

    /// The decrypted content of file `id` from this browser's store (no network).
    #[wasm_bindgen(js_name = openFile)]
    pub async fn open_file(&self, id: String) -> Result<Uint8Array, JsValue> {
        let r = self.record(&id).await?;
        if r.sent {
            return Err(sent_file());
        }
        let data = self
            .node()?
            .open_file(&r.offer)
            .await
            .map_err(|e| match e {
                FileError::Private(mesh_blob::private::PrivateError::Store(
                    mesh_blob::BlobError::NotFound(_),
                )) => error("NotStored", "not stored here: fetch it first"),
                e => file_error(e),
            })?;
        Ok(Uint8Array::from(data.as_slice()))
    }

    /// Links (with their round-trip time as last measured; a ping goes out on each link to
    /// refresh it, bounded by 2 s), DHT, storage and messaging figures.
    #[wasm_bindgen(unchecked_return_type = "NodeStatus")]
    pub async fn status(&self) -> Result<JsValue, JsValue> {
        let node = self.node()?;
        let runtime = node.pool.runtime().clone();
        let peers = node.pool.connected();
        let pings = peers
            .iter()
            .filter_map(|p| node.pool.connection(p))
            .map(|c| {
                let runtime = runtime.clone();
                async move {
                    let ping = std::pin::pin!(c.ping());
                    let timeout = runtime.sleep(PING_TIMEOUT);
                    let _ = futures_util::future::select(ping, timeout).await;
                    (c.remote(), c.quality())
                }
            });
        let links = Array::new();
        for (peer, q) in futures_util::future::join_all(pings).await {
            links.push(&object(&[
                ("peer", peer.to_string().into()),
                (
                    "rttMs",
                    q.rtt
                        .map_or(JsValue::UNDEFINED, |r| (r.as_secs_f64() * 1000.0).into()),
                ),
                ("loss", q.loss.into()),
                ("score", q.score().into()),
            ]));
        }
        let dht = node.dht.status().await.map_err(|e| error("Closed", e))?;
        let usage = node.blobs.store().usage();
        let quota = node.blobs.store().config().total_quota;
        let m = node
            .messenger
            .stats()
            .await
            .map_err(|e| error("Closed", e))?;
        Ok(object(&[
            ("peerId", node.peer_id().to_string().into()),
            ("links", links.into()),
            (
                "dht",
                object(&[
                    ("contacts", num(dht.contacts as u64)),
                    ("records", num(dht.records as u64)),
                ]),
            ),
            (
                "storage",
                object(&[
                    ("blobs", num(usage.blobs)),
                    ("chunks", num(usage.chunks)),
                    ("bytes", num(usage.stored_bytes)),
                    ("quotaBytes", num(quota)),
                ]),
            ),
            (
                "messaging",
                object(&[
                    ("sentDirect", num(m.sent_direct)),
                    ("sentMesh", num(m.sent_mesh)),
                    ("received", num(m.received)),
                    ("duplicates", num(m.duplicates)),
                    ("refused", num(m.refused)),
                ]),
            ),
        ]))
    }

    /// Shares this node's key among `guardians` (peer ids), any `threshold` of whom can give
    /// it back to a new device. Returns the guardian set's id.
    #[wasm_bindgen(js_name = recoveryProtect)]
    pub async fn recovery_protect(
        &self,
        guardians: Vec<String>,
        threshold: u32,
    ) -> Result<String, JsValue> {
        let node = self.node()?;
        let threshold =
            mesh_recovery::shamir::threshold(threshold, guardians.len()).map_err(invalid)?;
        let mut list = Vec::with_capacity(guardians.len());
        for g in &guardians {
            let g = peer(g)?;
            let address = node.locate(g).await.ok().flatten().unwrap_or_default();
            list.push((g, address));
        }
        let set = node
            .recovery
            .protect(list, threshold)
            .await
            .map_err(recovery_error)?;
        Ok(data_encoding::HEXLOWER.encode(&set))
    }

    /// Agrees (or, with `allow` false, stops agreeing) to keep a share of `owner`'s key.
    #[wasm_bindgen(js_name = recoveryGuard)]
    pub async fn recovery_guard(&self, owner: String, allow: bool) -> Result<(), JsValue> {
        self.node()?
            .recovery
            .allow_owner(peer(&owner)?, allow)
            .await
            .map_err(recovery_error)
    }

    /// Recovery requests waiting for this guardian's user, with the code the new device
    /// shows (compare them out of band before approving).
    #[wasm_bindgen(js_name = recoveryRequests, unchecked_return_type = "RecoveryRequest[]")]
    pub async fn recovery_requests(&self) -> Result<JsValue, JsValue> {
        let pending = self
            .node()?
            .recovery
            .pending_requests()
            .await
            .map_err(|e| error("Closed", e))?;
        let codes = self.inner.codes.borrow();
        let list = Array::new();
        for (id, owner, requester) in pending {
            list.push(&object(&[
                ("requestId", id.to_hex().into()),
                ("owner", owner.to_string().into()),
                ("requester", requester.to_string().into()),
                (
                    "code",
                    codes
                        .iter()
                        .find(|(r, _)| *r == id)
                        .map_or(JsValue::UNDEFINED, |(_, c)| c.clone().into()),
                ),
            ]));
        }
        Ok(list.into())
    }

    /// Approves (releases this guardian's share for) recovery request `requestId`.
    #[wasm_bindgen(js_name = recoveryApprove)]
    pub async fn recovery_approve(&self, request_id: String) -> Result<(), JsValue> {
        self.node()?
            .recovery
            .approve(hash(&request_id)?)
            .await
            .map_err(recovery_error)
    }

    /// Denies recovery request `requestId`.
    #[wasm_bindgen(js_name = recoveryDeny)]
    pub async fn recovery_deny(&self, request_id: String) -> Result<(), JsValue> {
        self.node()?
            .recovery
            .deny(hash(&request_id)?)
            .await
            .map_err(recovery_error)
    }

    /// What this browser's origin may store and has stored (`navigator.storage.estimate()`),
    /// in bytes: `{ usage, quota }`.
    #[wasm_bindgen(js_name = storageEstimate, unchecked_return_type = "{ usage: number; quota: number }")]
    pub async fn storage_estimate() -> Result<JsValue, JsValue> {
        let window = web_sys::window().ok_or_else(|| error("Unsupported", "no window"))?;
        let estimate = JsFuture::from(window.navigator().storage().estimate()?).await?;
        let get = |k: &str| Reflect::get(&estimate, &k.into()).unwrap_or(JsValue::UNDEFINED);
        Ok(object(&[("usage", get("usage")), ("quota", get("quota"))]))
    }

    /// Stops the node (every link closed, state written) and closes its database. Later
    /// calls fail with `Closed`; `nextEvent` returns `undefined`.
    pub async fn close(&self) -> Result<(), JsValue> {
        if self.inner.closed.replace(true) {
            return Ok(());
        }
        self.inner.closing.notify_waiters();
        let node = &self.inner.node;
        node.shutdown().await;
        node.store.close().await.map_err(storage)
    }

    fn node(&self) -> Result<&WebNode, JsValue> {
        if self.inner.closed.get() {
            Err(error("Closed", "the node is closed"))
        } else {
            Ok(&self.inner.node)
        }
    }
}

async fn open_store(database: Option<&str>) -> Result<Store<IndexedDbBackend>, JsValue> {
    let backend = IndexedDbBackend::open(database.unwrap_or(DEFAULT_DATABASE))
        .await
        .map_err(storage)?;
    Store::open(backend, &WEB_SCHEMA).await.map_err(storage)
}
