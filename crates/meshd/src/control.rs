//! The control API the `meshd` sub-commands call, on the node's Unix socket in its data
//! directory (only the node's user can reach it). JSON in and out, except blob bodies.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/status` | peer id, address, links, DHT, messaging and blob counters |
//! | `POST /v1/send` `{to, text, wait_ms?, connect?}` | sends a message; waits for its receipt |
//! | `GET /v1/messages?after=N&wait_ms=M&limit=L` | messages received after sequence `N` (long poll) |
//! | `POST /v1/connect` `{peer, address?}` | finds the peer (DHT) and links to it |
//! | `POST /v1/dht/put` `{name, value, ttl_hours?}` | signs and stores a record in the DHT |
//! | `POST /v1/dht/get` `{author, name}` | looks a record up, verified |
//! | `PUT /v1/blobs` (body: the bytes) | stores a blob, held by this node |
//! | `GET /v1/blobs/ID?from=PEER,...` | a blob's bytes, fetched from the peers if not stored |
//! | `POST /v1/files?to=PEER&name=HEX` (body: the bytes) | sends a file (name in hex) |
//! | `GET /v1/files/MESSAGE_ID` | a received file's bytes, fetched from its sender if needed |
//! | `POST /v1/invites` `{name?, ttl_hours?}` | makes a signed invite link |
//! | `POST /v1/invites/accept` `{link}` | verifies an invite and links to the inviter |
//! | `POST /v1/recovery/setup` `{guardians, threshold}` | shares this node's key with guardians |
//! | `POST /v1/recovery/guard` `{owner, allow?}` | agrees to (or stops) guarding `owner`'s key |
//! | `GET /v1/recovery/requests` | requests waiting for approval, with their codes |
//! | `POST /v1/recovery/approve` / `deny` `{request_id}` | the user's decision |
//! | `POST /v1/recovery/start` `{owner, guardians}` | asks guardians for `owner`'s key |
//! | `GET /v1/recovery/status` | recovery events, keys recovered |
//! | `POST /v1/shutdown` | stops the node gracefully |

// Handlers answer with a response either way: an error is the response to send.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use mesh_blob::manifest::BlobId;
use mesh_blob::store::PutOptions;
use mesh_crypto::{Hash256, PeerId};
use mesh_node::files::FileOffer;
use mesh_platform::invite::{BootstrapHint, DEFAULT_INVITE_TTL_MS, Invite};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::daemon::{Shared, lock, prune_codes};
use crate::http::{self, Resp};

/// Largest JSON request.
const MAX_JSON: usize = 64 * 1024;

/// Longest wait a request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// How long `connect` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages one `/v1/messages` answer holds at most.
const MAX_LIST: usize = 1000;
/// Messages one `/v1/messages` answer holds by default.
const DEFAULT_LIST: usize = 100;

fn bad(msg: impl std::fmt::Display) -> Resp {
    http::json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": msg.to_string() }),
    )
}

fn failed(msg: impl std::fmt::Display) -> Resp {
    http::json(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({ "error": msg.to_string() }),
    )
}

fn ok(body: &Value) -> Resp {
    http::json(StatusCode::OK, body)
}

async fn body_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Resp> {
    let bytes = http::read_body(req.into_body(), MAX_JSON)
        .await
        .map_err(|r| *r)?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("request body: {e}")))
}

fn peer(text: &str) -> Result<PeerId, Resp> {
    text.trim()
        .parse()
        .map_err(|e| bad(format!("peer id {text:?}: {e}")))
}

fn hash(text: &str) -> Result<Hash256, Resp> {
    Hash256::from_hex(text).ok_or_else(|| bad(format!("{text:?} is not 64 hex digits")))
}

fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn wait_of(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(0)).min(MAX_WAIT)
}

/// Waits for `notified` until `deadline`; false when the time is up or the node stops.
async fn wait_until(
    shared: &Shared,
    notified: impl std::future::Future<Output = ()>,
    deadline: tokio::time::Instant,
) -> bool {
    let mut stopped = shared.stopped.clone();
    if *stopped.borrow() {
        return false;
    }
    tokio::select! {
        r = tokio::time::timeout_at(deadline, notified) => r.is_ok(),
        _ = stopped.changed() => false,
    }
}

/// Routes one control request.
pub(crate) async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let result = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/status") => status(shared).await,
        (Method::POST, "/v1/send") => send(shared, req).await,
        (Method::GET, "/v1/messages") => messages(shared, &req).await,
        (Method::POST, "/v1/connect") => connect_route(shared, req).await,
        (Method::POST, "/v1/dht/put") => dht_put(shared, req).await,
        (Method::POST, "/v1/dht/get") => dht_get(shared, req).await,
        (Method::PUT, "/v1/blobs") => blob_put(shared, req).await,
        (Method::GET, p) if p.starts_with("/v1/blobs/") => blob_get(shared, &req, p).await,
        (Method::POST, "/v1/files") => file_send(shared, req).await,
        (Method::GET, p) if p.starts_with("/v1/files/") => file_get(shared, p).await,
        (Method::POST, "/v1/invites") => invite_create(shared, req).await,
        (Method::POST, "/v1/invites/accept") => invite_accept(shared, req).await,
        (Method::POST, "/v1/recovery/setup") => recovery_setup(shared, req).await,
        (Method::POST, "/v1/recovery/guard") => recovery_guard(shared, req).await,
        (Method::GET, "/v1/recovery/requests") => Ok(recovery_requests(shared).await),
        (Method::POST, "/v1/recovery/approve") => recovery_decide(shared, req, true).await,
        (Method::POST, "/v1/recovery/deny") => recovery_decide(shared, req, false).await,
        (Method::POST, "/v1/recovery/start") => recovery_start(shared, req).await,
        (Method::GET, "/v1/recovery/status") => Ok(recovery_status(shared)),
        (Method::POST, "/v1/shutdown") => {
            shared.stopping.store(true, Ordering::SeqCst);
            shared.stop.notify_one();
            Ok(ok(&json!({ "stopping": true })))
        }
        _ => Ok(http::text(StatusCode::NOT_FOUND, "no such control call")),
    };
    result.unwrap_or_else(|r| r)
}

async fn status(shared: &Shared) -> Result<Resp, Resp> {
    let node = &shared.node;
    let links: Vec<String> = node
        .pool
        .connected()
        .iter()
        .map(ToString::to_string)
        .collect();
    let dht = node.dht.status().await.map_err(failed)?;
    let m = node.messenger.stats().await.map_err(failed)?;
    let usage = node.blobs.store().usage();
    Ok(ok(&json!({
        "peer": node.peer_id().to_string(),
        "fingerprint": node.peer_id().fingerprint(),
        "address": node.address,
        "uptime_s": shared.started.elapsed().as_secs(),
        "links": links,
        "dht": { "contacts": dht.contacts, "records": dht.records, "bytes": dht.bytes },
        "messaging": {
            "sent_direct": m.sent_direct, "sent_mesh": m.sent_mesh, "received": m.received,
            "duplicates": m.duplicates, "refused": m.refused,
        },
        "blobs": { "blobs": usage.blobs, "chunks": usage.chunks, "bytes": usage.stored_bytes },
    })))
}

/// Finds `peer` (open link, DHT) and links to it, within [`CONNECT_TIMEOUT`].
async fn connect(shared: &Shared, peer: PeerId, address: Option<String>) -> Result<String, String> {
    let node = &shared.node;
    let address = match address {
        Some(a) => a,
        None => tokio::time::timeout(CONNECT_TIMEOUT, node.locate(peer))
            .await
            .map_err(|_| "DHT lookup timed out".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no dialable address for {peer} in the DHT"))?,
    };
    tokio::time::timeout(CONNECT_TIMEOUT, node.pool.dial(peer, &address))
        .await
        .map_err(|_| format!("no link to {peer} at {address} within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("{peer} at {address}: {e}"))?;
    node.dht
        .add_contact(peer, &address)
        .await
        .map_err(|e| e.to_string())?;
    node.add_neighbour(peer, &address)
        .await
        .map_err(|e| e.to_string())?;
    Ok(address)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendReq {
    to: String,
    text: String,
    wait_ms: Option<u64>,
    #[serde(default)]
    connect: bool,
}

async fn send(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: SendReq = body_json(req).await?;
    let to = peer(&r.to)?;
    let mut connect_error = Value::Null;
    if r.connect
        && let Err(e) = connect(shared, to, None).await
    {
        // The mesh still carries it.
        connect_error = Value::from(e);
    }
    let direct = shared.node.pool.connected().contains(&to);
    let id = shared
        .node
        .messenger
        .send(to, r.text.as_bytes())
        .await
        .map_err(bad)?;
    let deadline = tokio::time::Instant::now() + wait_of(r.wait_ms);
    let delivered = loop {
        let notified = shared.receipt_came.notified();
        if lock(&shared.receipts).by_id.contains_key(&id) {
            break true;
        }
        if !wait_until(shared, notified, deadline).await {
            break lock(&shared.receipts).by_id.contains_key(&id);
        }
    };
    Ok(ok(&json!({
        "id": id.to_hex(),
        "link_open": direct,
        "delivered": delivered,
        "connect_error": connect_error,
    })))
}

async fn messages(shared: &Shared, req: &Request<Incoming>) -> Result<Resp, Resp> {
    let number = |key: &str| -> Result<Option<u64>, Resp> {
        query(req, key)
            .map(str::parse)
            .transpose()
            .map_err(|_| bad(format!("{key}: not a number")))
    };
    let after = number("after")?;
    let wait = wait_of(number("wait_ms")?);
    let limit = number("limit")?
        .map_or(DEFAULT_LIST, |l| usize::try_from(l).unwrap_or(MAX_LIST))
        .clamp(1, MAX_LIST);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = shared.inbox_changed.notified();
        let (list, oldest, more) = {
            let inbox = lock(&shared.inbox);
            let mut fresh = inbox
                .entries
                .iter()
                .filter(|e| after.is_none_or(|a| e.seq > a));
            let list: Vec<Value> = fresh
                .by_ref()
                .take(limit)
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "from": e.from.to_string(),
                        "id": e.id.to_hex(),
                        "text": String::from_utf8_lossy(&e.body),
                        "direct": e.direct,
                        "file": FileOffer::decode(&e.body).map(|f| json!({
                            "name": f.name,
                            "size": f.size,
                            "blob": f.blob.to_hex(),
                        })),
                    })
                })
                .collect();
            let more = fresh.next().is_some();
            (list, inbox.entries.front().map(|e| e.seq), more)
        };
        if !list.is_empty() || !wait_until(shared, notified, deadline).await {
            // `oldest`: what is still held (older ones were pushed out: a gap if it is above
            // the `after` asked for); `more`: call again with the last seq.
            return Ok(ok(
                &json!({ "messages": list, "oldest": oldest, "more": more }),
            ));
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectReq {
    peer: String,
    address: Option<String>,
}

async fn connect_route(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: ConnectReq = body_json(req).await?;
    let p = peer(&r.peer)?;
    let address = connect(shared, p, r.address).await.map_err(bad)?;
    Ok(ok(&json!({ "peer": p.to_string(), "address": address })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DhtPutReq {
    name: String,
    value: String,
    ttl_hours: Option<u64>,
}

async fn dht_put(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: DhtPutReq = body_json(req).await?;
    let now = TokioRuntime::current().unix_time();
    let ttl = r.ttl_hours.unwrap_or(24).clamp(1, 24 * 7) * 3_600_000;
    let payload = mesh_dht::RecordPayload {
        name: r.name.into_bytes(),
        // Later puts replace earlier ones: the time is a sequence that only grows.
        seq: now.0,
        value: r.value.into_bytes(),
    };
    let record =
        mesh_dht::Record::sign(&shared.node.identity, payload, now, now.saturating_add(ttl))
            .map_err(bad)?;
    let key = mesh_dht::record::key_of(&record);
    let put = shared
        .node
        .dht
        .put(record.into_bytes())
        .await
        .map_err(bad)?;
    Ok(ok(&json!({
        "key": data_encoding::HEXLOWER.encode(&key.0),
        "stored": put.stored,
        "offered": put.offered,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DhtGetReq {
    author: String,
    name: String,
}

async fn dht_get(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: DhtGetReq = body_json(req).await?;
    let author = peer(&r.author)?;
    let name = r.name.as_str();
    let key = mesh_dht::record::record_key(&author, name.as_bytes());
    let Some(bytes) = shared.node.dht.find_value(key).await.map_err(failed)? else {
        return Ok(http::text(StatusCode::NOT_FOUND, "no such record"));
    };
    let record =
        mesh_dht::Record::decode(&bytes, TokioRuntime::current().unix_time()).map_err(failed)?;
    Ok(ok(&json!({
        "author": author.to_string(),
        "name": name,
        "value": String::from_utf8_lossy(&record.payload().value),
        "seq": record.payload().seq,
        "expires_at_ms": record.expires_at().0,
    })))
}

async fn blob_put(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let store = shared.node.blobs.store();
    let hint = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut writer = store
        .writer(
            shared.node.peer_id(),
            PutOptions {
                expires_at: None,
                pinned: true,
            },
            hint,
        )
        .await
        .map_err(bad)?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let written = match frame {
            Ok(frame) => match frame.data_ref() {
                Some(data) => writer.write(data).await.map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Err(e) => Err(format!("upload: {e}")),
        };
        if let Err(e) = written {
            let _ = writer.abort().await;
            return Err(bad(e));
        }
    }
    let stored = match writer.finish(TokioRuntime::current().unix_time()).await {
        Ok(s) => s,
        Err(e) => return Err(bad(e)),
    };
    Ok(ok(&json!({
        "id": stored.id.to_hex(),
        "size": stored.size,
        "chunks": stored.chunks,
        "duplicate": stored.duplicate,
    })))
}

async fn file_send(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let to = peer(query(&req, "to").unwrap_or_default())?;
    let name = data_encoding::HEXLOWER_PERMISSIVE
        .decode(query(&req, "name").unwrap_or_default().as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("name: not hex of UTF-8"))?;
    if !mesh_node::files::valid_name(&name) {
        return Err(bad(format!("{name:?} is not a valid file name")));
    }
    // What the store keeps, encrypted; the body is read (at most that) before encrypting.
    let max = usize::try_from(mesh_node::files::max_file_len(
        shared.node.blobs.store().config(),
    ))
    .unwrap_or(usize::MAX);
    let data = http::read_body(req.into_body(), max).await.map_err(|_| {
        http::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({ "error": format!("files of at most {max} bytes (the blob store's limit)") }),
        )
    })?;
    let hold = mesh_node::files::sender_hold(TokioRuntime::current().unix_time());
    let (id, offer) = shared
        .node
        .send_file(to, &name, &data, hold)
        .await
        .map_err(|e| {
            let status = match &e {
                mesh_node::files::FileError::Private(_) => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::BAD_GATEWAY,
            };
            http::json(status, &json!({ "error": e.to_string() }))
        })?;
    Ok(ok(&json!({
        "id": id.to_hex(),
        "blob": offer.blob.to_hex(),
        "size": offer.size,
    })))
}

async fn file_get(shared: &Shared, path: &str) -> Result<Resp, Resp> {
    let id = hash(&path["/v1/files/".len()..])?;
    let (from, body) = lock(&shared.inbox)
        .entries
        .iter()
        .find(|e| e.id == id)
        .map(|e| (e.from, e.body.clone()))
        .ok_or_else(|| http::text(StatusCode::NOT_FOUND, "no such message in the inbox"))?;
    let offer = FileOffer::decode(&body).ok_or_else(|| bad("that message is not a file offer"))?;
    let hold = mesh_node::files::RECIPIENT_HOLD;
    let data = shared
        .node
        .receive_file(&offer, from, hold)
        .await
        .map_err(|e| http::text(StatusCode::BAD_GATEWAY, &e.to_string()))?;
    Ok(Response::new(http::full(data)))
}

async fn blob_get(shared: &Shared, req: &Request<Incoming>, path: &str) -> Result<Resp, Resp> {
    let id = BlobId(hash(&path["/v1/blobs/".len()..])?);
    let blobs = &shared.node.blobs;
    if !blobs.store().contains(&id).await.map_err(failed)? {
        let from = query(req, "from").unwrap_or_default();
        if from.is_empty() {
            return Err(http::text(
                StatusCode::NOT_FOUND,
                "blob not stored here; name providers with ?from=PEER,...",
            ));
        }
        let mut providers = Vec::new();
        for p in from.split(',') {
            let p = peer(p)?;
            let address = match shared.node.locate(p).await {
                Ok(Some(a)) => a,
                _ => shared.node.pool.address_of(&p).unwrap_or_default(),
            };
            providers.push((p, address));
        }
        blobs
            .fetch(
                id,
                &providers,
                shared.node.peer_id(),
                PutOptions {
                    expires_at: None,
                    pinned: true,
                },
            )
            .await
            .map_err(|e| http::text(StatusCode::BAD_GATEWAY, &e.to_string()))?;
    }
    let reader = blobs.store().reader(&id).await.map_err(failed)?;
    let size = reader.manifest().size();
    // Piece by piece (each verified against its hash as it is read), not the whole blob in
    // memory.
    let stream = futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match reader.next_piece().await {
            Ok(Some(piece)) => Some((Ok(Frame::data(Bytes::from(piece))), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert("content-length", hyper::header::HeaderValue::from(size));
    Ok(r)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InviteReq {
    name: Option<String>,
    ttl_hours: Option<u64>,
}

async fn invite_create(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: InviteReq = body_json(req).await?;
    let node = &shared.node;
    let mut hints = Vec::new();
    if node.address.starts_with("http://") || node.address.starts_with("https://") {
        hints.push(BootstrapHint::Signaling(node.address.clone()));
    }
    // Nodes this one is linked to, to join the mesh through (the inviter is then found by
    // its id, or reached through the mesh).
    for p in node.pool.connected() {
        if hints.len() >= mesh_platform::invite::MAX_HINTS {
            break;
        }
        if node
            .pool
            .address_of(&p)
            .is_some_and(|a| a.starts_with("http://"))
        {
            hints.push(BootstrapHint::Peer(p));
        }
    }
    if hints.is_empty() {
        return Err(bad(
            "this node has no public address and no linked peer with one: nobody could use the invite",
        ));
    }
    let ttl = r
        .ttl_hours
        .map_or(DEFAULT_INVITE_TTL_MS, |h| h.saturating_mul(3_600_000));
    let invite = Invite::create(
        &node.identity,
        r.name.as_deref().unwrap_or(""),
        hints,
        TokioRuntime::current().unix_time(),
        ttl,
    )
    .map_err(bad)?;
    Ok(ok(&json!({ "link": invite.to_link() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptReq {
    link: String,
}

async fn invite_accept(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: AcceptReq = body_json(req).await?;
    let invite =
        Invite::from_link(r.link.trim(), TokioRuntime::current().unix_time()).map_err(bad)?;
    let inviter = invite.inviter();
    if inviter == shared.node.peer_id() {
        return Err(bad("this is this node's own invite"));
    }
    let mut errors = Vec::new();
    let mut joined = false;
    for hint in &invite.payload().bootstrap {
        let result = match hint {
            // The inviter's own endpoint: the handshake proves it is the inviter.
            BootstrapHint::Signaling(url) => connect(shared, inviter, Some(url.clone())).await,
            // A node the inviter is linked to: join through it if this node can find it.
            BootstrapHint::Peer(p) => connect(shared, *p, None).await,
        };
        match result {
            Ok(_) => {
                joined = true;
                if shared.node.pool.connected().contains(&inviter) {
                    break;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let mut linked = shared.node.pool.connected().contains(&inviter);
    if joined && !linked {
        // In the mesh now: the inviter may be found by its id.
        match connect(shared, inviter, None).await {
            Ok(_) => linked = true,
            Err(e) => errors.push(e),
        }
    }
    Ok(ok(&json!({
        "inviter": inviter.to_string(),
        "fingerprint": inviter.fingerprint(),
        "name": invite.payload().display_name,
        "linked": linked,
        "in_mesh": joined || linked,
        "errors": errors,
    })))
}

/// Each peer with the address it is reachable at (link or DHT).
async fn addresses(shared: &Shared, peers: &[String]) -> Result<Vec<(PeerId, String)>, Resp> {
    let mut out = Vec::new();
    for p in peers {
        let p = peer(p)?;
        let address = shared
            .node
            .locate(p)
            .await
            .map_err(failed)?
            .or_else(|| shared.node.pool.address_of(&p))
            .ok_or_else(|| {
                bad(format!(
                    "{p} cannot be found: not linked and not in the DHT"
                ))
            })?;
        out.push((p, address));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupReq {
    guardians: Vec<String>,
    threshold: u8,
}

async fn recovery_setup(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: SetupReq = body_json(req).await?;
    let guardians = addresses(shared, &r.guardians).await?;
    let set = shared
        .node
        .recovery
        .protect(guardians, r.threshold)
        .await
        .map_err(bad)?;
    Ok(ok(
        &json!({ "set_id": data_encoding::HEXLOWER.encode(&set) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardReq {
    owner: String,
    allow: Option<bool>,
}

async fn recovery_guard(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: GuardReq = body_json(req).await?;
    let owner = peer(&r.owner)?;
    let allow = r.allow.unwrap_or(true);
    shared
        .node
        .recovery
        .allow_owner(owner, allow)
        .await
        .map_err(failed)?;
    Ok(ok(&json!({ "owner": owner.to_string(), "allowed": allow })))
}

async fn recovery_requests(shared: &Shared) -> Resp {
    let list: Vec<Value> = prune_codes(shared)
        .await
        .iter()
        .map(|(id, a)| {
            json!({
                "request_id": id.to_hex(),
                "owner": a.owner.to_string(),
                "requester": a.requester.to_string(),
                "code": a.code,
            })
        })
        .collect();
    ok(&json!({ "requests": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideReq {
    request_id: String,
}

async fn recovery_decide(
    shared: &Shared,
    req: Request<Incoming>,
    approve: bool,
) -> Result<Resp, Resp> {
    let r: DecideReq = body_json(req).await?;
    let id = hash(&r.request_id)?;
    let recovery = &shared.node.recovery;
    let decided = if approve {
        recovery.approve(id).await
    } else {
        recovery.deny(id).await
    };
    if let Err(e) = decided {
        if matches!(
            e,
            mesh_recovery::driver::DriverError::Recovery(mesh_recovery::RecoveryError::Unknown(_))
        ) {
            // Expired or replaced meanwhile: forget its code too.
            lock(&shared.approvals).remove(&id);
            return Err(http::json(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("{e}: expired or replaced; see `meshd recovery requests`") }),
            ));
        }
        return Err(bad(e));
    }
    lock(&shared.approvals).remove(&id);
    Ok(ok(
        &json!({ "request_id": id.to_hex(), "approved": approve }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartReq {
    owner: String,
    guardians: Vec<String>,
}

async fn recovery_start(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Resp> {
    let r: StartReq = body_json(req).await?;
    let owner = peer(&r.owner)?;
    let guardians = addresses(shared, &r.guardians).await?;
    let codes = shared
        .node
        .recovery
        .recover(owner, guardians, None)
        .await
        .map_err(bad)?;
    let codes: Vec<Value> = codes
        .into_iter()
        .map(|(g, c)| json!({ "guardian": g.to_string(), "code": c }))
        .collect();
    Ok(ok(&json!({ "owner": owner.to_string(), "codes": codes })))
}

fn recovery_status(shared: &Shared) -> Resp {
    let log: Vec<String> = lock(&shared.recovery_log).iter().cloned().collect();
    let recovered: Vec<Value> = lock(&shared.recovered)
        .iter()
        .map(|(o, p)| json!({ "owner": o.to_string(), "file": p.display().to_string() }))
        .collect();
    ok(&json!({ "log": log, "recovered": recovered }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wait_is_capped() {
        assert_eq!(super::wait_of(None), std::time::Duration::ZERO);
        assert_eq!(super::wait_of(Some(u64::MAX)), super::MAX_WAIT);
    }
}
