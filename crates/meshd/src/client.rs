//! The sub-commands for people: each asks the node running on the same data directory
//! through its control API (see [`crate::control`]).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::daemon::control_socket;
use crate::http::{self, Target};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The longest wait a control call may ask for (the node caps it there too).
pub(crate) const MAX_WAIT_S: u64 = 120;

/// A connection to the running node's control API.
pub(crate) struct Control {
    socket: std::path::PathBuf,
}

impl Control {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, Error> {
        let socket = control_socket(data_dir);
        if !socket.exists() {
            return Err(format!(
                "no control socket at {} (is `meshd run` running with this data dir?)",
                socket.display()
            )
            .into());
        }
        Ok(Self { socket })
    }

    fn target(&self, path: &str) -> Target {
        Target::control(&self.socket, path)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let res = http::send(
            &self.target(path),
            method,
            http_body_util::Full::new(Bytes::from(body)),
            None,
        )
        .await?;
        let (status, bytes) = http::collect(res, http::MAX_RESPONSE).await?;
        check(status, &bytes)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// Peer-controlled text, safe for a terminal: control characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn check(status: StatusCode, body: &[u8]) -> Result<(), Error> {
    if status.is_success() {
        return Ok(());
    }
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    Err(format!("{status}: {text}").into())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

pub(crate) async fn status(c: &Control) -> Result<(), Error> {
    println!("{}", pretty(&c.get("/v1/status").await?));
    Ok(())
}

pub(crate) async fn send(
    c: &Control,
    to: &str,
    text: &str,
    wait: u64,
    connect: bool,
) -> Result<(), Error> {
    if wait > MAX_WAIT_S {
        eprintln!("waiting {MAX_WAIT_S} s at most");
    }
    let wait = wait.min(MAX_WAIT_S);
    let r = c
        .post(
            "/v1/send",
            json!({ "to": to, "text": text, "wait_ms": wait * 1000, "connect": connect }),
        )
        .await?;
    if let Some(e) = r["connect_error"].as_str() {
        eprintln!("could not link to {to} ({e}): sent through the mesh instead");
    }
    let id = r["id"].as_str().unwrap_or_default();
    let how = if r["link_open"].as_bool() == Some(true) {
        "over the open link"
    } else {
        "through the mesh"
    };
    if r["delivered"].as_bool() == Some(true) {
        println!("delivered {how}: {id}");
    } else if wait > 0 {
        println!("sent {how}, no receipt within {wait} s (it stays in the mesh for 24 h): {id}");
    } else {
        println!("sent {how}: {id}");
    }
    Ok(())
}

pub(crate) async fn inbox(c: &Control, after: Option<u64>, follow: bool) -> Result<(), Error> {
    let mut after = after;
    loop {
        let wait = if follow { 60_000 } else { 0 };
        let q = match after {
            Some(a) => format!("/v1/messages?after={a}&wait_ms={wait}"),
            None => format!("/v1/messages?wait_ms={wait}"),
        };
        let r = c.get(&q).await?;
        if let (Some(a), Some(oldest)) = (after, r["oldest"].as_u64())
            && oldest > a + 1
        {
            eprintln!("({} older messages are no longer held)", oldest - a - 1);
        }
        for m in r["messages"].as_array().into_iter().flatten() {
            let path = if m["direct"].as_bool() == Some(true) {
                "direct"
            } else {
                "mesh"
            };
            let from = m["from"].as_str().unwrap_or_default();
            if let Some(f) = m["file"].as_object() {
                println!(
                    "#{} from {from} ({path}): file {:?}, {} bytes (meshd file get {})",
                    m["seq"],
                    printable(f.get("name").and_then(Value::as_str).unwrap_or_default()),
                    f.get("size").and_then(Value::as_u64).unwrap_or(0),
                    m["id"].as_str().unwrap_or_default(),
                );
            } else {
                println!(
                    "#{} from {from} ({path}): {}",
                    m["seq"],
                    printable(m["text"].as_str().unwrap_or_default())
                );
            }
            after = m["seq"].as_u64().or(after);
        }
        if !follow && r["more"].as_bool() != Some(true) {
            return Ok(());
        }
    }
}

pub(crate) async fn connect(c: &Control, peer: &str, address: Option<&str>) -> Result<(), Error> {
    let r = c
        .post("/v1/connect", json!({ "peer": peer, "address": address }))
        .await?;
    println!(
        "linked to {} at {}",
        r["peer"].as_str().unwrap_or_default(),
        r["address"].as_str().unwrap_or_default()
    );
    Ok(())
}

pub(crate) async fn dht_put(
    c: &Control,
    name: &str,
    value: &str,
    ttl_hours: Option<u64>,
) -> Result<(), Error> {
    let r = c
        .post(
            "/v1/dht/put",
            json!({ "name": name, "value": value, "ttl_hours": ttl_hours }),
        )
        .await?;
    let stored = r["stored"].as_u64().unwrap_or(0);
    println!(
        "record {} stored by {stored} of {} nodes offered",
        r["key"].as_str().unwrap_or_default(),
        r["offered"]
    );
    if stored == 0 {
        return Err("no node stored the record".into());
    }
    Ok(())
}

pub(crate) async fn dht_get(c: &Control, author: &str, name: &str) -> Result<(), Error> {
    let r = c
        .post("/v1/dht/get", json!({ "author": author, "name": name }))
        .await?;
    println!("{}", r["value"].as_str().unwrap_or_default());
    Ok(())
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Streams `file` to `path` on the control socket (`method`), with a progress bar labelled
/// `what`; returns the response's JSON.
async fn upload(
    c: &Control,
    method: Method,
    path: &str,
    file: &Path,
    what: &str,
) -> Result<Value, Error> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let len = f.metadata().await?.len();
    let pb = bar(len);
    pb.set_message(what.to_string());
    let progress = pb.clone();
    let stream = futures_util::stream::unfold(Some(f), move |f| {
        let progress = progress.clone();
        async move {
            let mut f = f?;
            let mut buf = vec![0u8; 64 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    progress.inc(n as u64);
                    Some((Ok(Frame::data(Bytes::from(buf))), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let res = http::send(&c.target(path), method, StreamBody::new(stream), Some(len)).await;
    pb.finish_and_clear();
    let (status, bytes) = http::collect(res?, http::MAX_RESPONSE).await?;
    check(status, &bytes)?;
    Ok(serde_json::from_slice(&bytes)?)
}

pub(crate) async fn blob_put(c: &Control, file: &Path) -> Result<(), Error> {
    let r = upload(c, Method::PUT, "/v1/blobs", file, "storing").await?;
    println!(
        "stored {} ({} bytes, {} chunks{})",
        r["id"].as_str().unwrap_or_default(),
        r["size"],
        r["chunks"],
        if r["duplicate"].as_bool() == Some(true) {
            ", already here"
        } else {
            ""
        }
    );
    Ok(())
}

/// GETs `path` with a spinner saying `fetching`, then streams the body into `out` with a
/// progress bar: written beside it under a fresh name, synced, then renamed over it, so that a
/// failed download leaves no partial file and touches no other. Returns the bytes written.
async fn download(c: &Control, path: &str, fetching: String, out: &Path) -> Result<u64, Error> {
    use http_body_util::BodyExt as _;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(fetching);
    spinner.enable_steady_tick(Duration::from_millis(120));
    let res = http::send(
        &c.target(path),
        Method::GET,
        http_body_util::Empty::<Bytes>::new(),
        None,
    )
    .await;
    spinner.finish_and_clear();
    let res = res?;
    if !res.status().is_success() {
        let (status, bytes) = http::collect(res, http::MAX_RESPONSE).await?;
        check(status, &bytes)?;
        return Err(format!("{status}").into());
    }
    let len: Option<u64> = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let pb = bar(len.unwrap_or(0));
    pb.set_message("writing");
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp =
        tempfile::NamedTempFile::new_in(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut f = tokio::fs::File::from_std(tmp.reopen()?);
    let mut body = res.into_body();
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the response: {e}"))?;
        if let Some(data) = frame.data_ref() {
            tokio::io::AsyncWriteExt::write_all(&mut f, data).await?;
            written += data.len() as u64;
            pb.set_position(written);
        }
    }
    if let Some(len) = len
        && written != len
    {
        return Err(format!("the response ended after {written} of {len} bytes").into());
    }
    f.sync_all().await?;
    drop(f);
    tmp.persist(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    pb.finish_and_clear();
    Ok(written)
}

pub(crate) async fn blob_get(
    c: &Control,
    id: &str,
    from: &[String],
    out: &Path,
) -> Result<(), Error> {
    let (path, fetching) = if from.is_empty() {
        (format!("/v1/blobs/{id}"), "reading".to_string())
    } else {
        (
            format!("/v1/blobs/{id}?from={}", from.join(",")),
            format!(
                "fetching from {} peer(s), chunk by verified chunk",
                from.len()
            ),
        )
    };
    let written = download(c, &path, fetching, out).await?;
    println!("{written} bytes written to {}", out.display());
    Ok(())
}

pub(crate) async fn file_send(c: &Control, to: &str, file: &Path) -> Result<(), Error> {
    let to: mesh_crypto::PeerId = to.parse().map_err(|e| format!("peer id {to:?}: {e}"))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no file name in UTF-8", file.display()))?;
    let path = format!(
        "/v1/files?to={to}&name={}",
        data_encoding::HEXLOWER.encode(name.as_bytes())
    );
    let r = upload(c, Method::POST, &path, file, "encrypting and offering").await?;
    println!(
        "offered {name:?} ({} bytes, encrypted to {to}) in message {}; blob {}",
        r["size"],
        r["id"].as_str().unwrap_or_default(),
        r["blob"].as_str().unwrap_or_default()
    );
    Ok(())
}

pub(crate) async fn file_get(c: &Control, id: &str, out: &Path) -> Result<(), Error> {
    let written = download(
        c,
        &format!("/v1/files/{id}"),
        "fetching from the sender, chunk by verified chunk".to_string(),
        out,
    )
    .await?;
    println!("{written} bytes decrypted to {}", out.display());
    Ok(())
}

pub(crate) async fn invite_create(
    c: &Control,
    name: Option<&str>,
    ttl_hours: Option<u64>,
) -> Result<(), Error> {
    let r = c
        .post(
            "/v1/invites",
            json!({ "name": name, "ttl_hours": ttl_hours }),
        )
        .await?;
    println!("{}", r["link"].as_str().unwrap_or_default());
    Ok(())
}

pub(crate) async fn invite_accept(c: &Control, link: &str) -> Result<(), Error> {
    let r = c
        .post("/v1/invites/accept", json!({ "link": link }))
        .await?;
    println!(
        "invite from {:?}, peer {} (fingerprint {}): verify the fingerprint with them",
        printable(r["name"].as_str().unwrap_or_default()),
        r["inviter"].as_str().unwrap_or_default(),
        r["fingerprint"].as_str().unwrap_or_default()
    );
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if r["linked"].as_bool() == Some(true) {
        println!("linked to the inviter");
        Ok(())
    } else if r["in_mesh"].as_bool() == Some(true) {
        println!(
            "joined the mesh through the invite's hints; the inviter is reachable through it (no direct link: {})",
            errors.join("; ")
        );
        Ok(())
    } else {
        Err(format!("could not reach the mesh: {}", errors.join("; ")).into())
    }
}

pub(crate) async fn recovery_setup(
    c: &Control,
    threshold: u8,
    guardians: &[String],
) -> Result<(), Error> {
    let r = c
        .post(
            "/v1/recovery/setup",
            json!({ "guardians": guardians, "threshold": threshold }),
        )
        .await?;
    println!(
        "key shared with {} guardians, any {threshold} recover it (set {}); `meshd recovery status` shows their acknowledgements",
        guardians.len(),
        r["set_id"].as_str().unwrap_or_default()
    );
    Ok(())
}

pub(crate) async fn recovery_guard(c: &Control, owner: &str, stop: bool) -> Result<(), Error> {
    c.post(
        "/v1/recovery/guard",
        json!({ "owner": owner, "allow": !stop }),
    )
    .await?;
    if stop {
        println!("no longer guarding {owner}'s key");
    } else {
        println!("will keep a share of {owner}'s key when it sends one");
    }
    Ok(())
}

pub(crate) async fn recovery_requests(c: &Control) -> Result<(), Error> {
    let r = c.get("/v1/recovery/requests").await?;
    let list = r["requests"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no requests waiting");
    }
    for q in list {
        println!(
            "request {}\n  for the key of {}\n  from new device {}\n  code {}: approve only if the owner's new device shows the same code",
            q["request_id"].as_str().unwrap_or_default(),
            q["owner"].as_str().unwrap_or_default(),
            q["requester"].as_str().unwrap_or_default(),
            q["code"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) async fn recovery_decide(c: &Control, id: &str, approve: bool) -> Result<(), Error> {
    let path = if approve {
        "/v1/recovery/approve"
    } else {
        "/v1/recovery/deny"
    };
    c.post(path, json!({ "request_id": id })).await?;
    println!("{}", if approve { "approved" } else { "denied" });
    Ok(())
}

pub(crate) async fn recovery_start(
    c: &Control,
    owner: &str,
    guardians: &[String],
    wait: u64,
) -> Result<(), Error> {
    let r = c
        .post(
            "/v1/recovery/start",
            json!({ "owner": owner, "guardians": guardians }),
        )
        .await?;
    println!("asked the guardians; tell each one the code shown for them:");
    for g in r["codes"].as_array().into_iter().flatten() {
        println!(
            "  {}  code {}",
            g["guardian"].as_str().unwrap_or_default(),
            g["code"].as_str().unwrap_or_default()
        );
    }
    if wait == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let s = c.get("/v1/recovery/status").await?;
        if let Some(done) = s["recovered"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["owner"].as_str() == Some(owner))
        {
            println!(
                "recovered: the key is in {} (stop the node and use it as identity.key)",
                done["file"].as_str().unwrap_or_default()
            );
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "not recovered within {wait} s; `meshd recovery status` shows why"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn recovery_status(c: &Control) -> Result<(), Error> {
    let r = c.get("/v1/recovery/status").await?;
    for line in r["log"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or_default());
    }
    for done in r["recovered"].as_array().into_iter().flatten() {
        println!(
            "recovered {} into {}",
            done["owner"].as_str().unwrap_or_default(),
            done["file"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) async fn stop(c: &Control) -> Result<(), Error> {
    c.post("/v1/shutdown", json!({})).await?;
    // The node removes its socket once it has stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while c.socket.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err("the node is still stopping after 40 s; see its log".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("stopped");
    Ok(())
}
