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

use crate::daemon::read_control;
use crate::http;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A connection to the running node's control API.
pub(crate) struct Control {
    base: String,
    token: String,
}

impl Control {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, Error> {
        let (addr, token) = read_control(data_dir)?;
        Ok(Self {
            base: format!("http://{addr}"),
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let (status, bytes) = http::request(
            &format!("{}{path}", self.base),
            method,
            Some(&self.token),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await?;
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
    let r = c
        .post(
            "/v1/send",
            json!({ "to": to, "text": text, "wait_ms": wait * 1000, "connect": connect }),
        )
        .await?;
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
        let q = match after {
            Some(a) => format!(
                "/v1/messages?after={a}&wait_ms={}",
                if follow { 60_000 } else { 0 }
            ),
            None => format!("/v1/messages?wait_ms={}", if follow { 60_000 } else { 0 }),
        };
        let r = c.get(&q).await?;
        for m in r["messages"].as_array().into_iter().flatten() {
            let path = if m["direct"].as_bool() == Some(true) {
                "direct"
            } else {
                "mesh"
            };
            println!(
                "#{} from {} ({path}): {}",
                m["seq"],
                m["from"].as_str().unwrap_or_default(),
                m["text"].as_str().unwrap_or_default()
            );
            after = m["seq"].as_u64().or(after);
        }
        if !follow {
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

pub(crate) async fn blob_put(c: &Control, file: &Path) -> Result<(), Error> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let len = f.metadata().await?.len();
    let pb = bar(len);
    pb.set_message("storing");
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
    let (status, bytes) = http::request_with(
        &format!("{}/v1/blobs", c.base),
        Method::PUT,
        Some(&c.token),
        StreamBody::new(stream),
        Some(len),
        http::MAX_RESPONSE,
    )
    .await?;
    pb.finish_and_clear();
    check(status, &bytes)?;
    let r: Value = serde_json::from_slice(&bytes)?;
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

pub(crate) async fn blob_get(
    c: &Control,
    id: &str,
    from: &[String],
    out: &Path,
) -> Result<(), Error> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(if from.is_empty() {
        "reading".to_string()
    } else {
        format!(
            "fetching from {} peer(s), chunk by verified chunk",
            from.len()
        )
    });
    spinner.enable_steady_tick(Duration::from_millis(120));
    let path = if from.is_empty() {
        format!("{}/v1/blobs/{id}", c.base)
    } else {
        format!("{}/v1/blobs/{id}?from={}", c.base, from.join(","))
    };
    let result = http::request(&path, Method::GET, Some(&c.token), None).await;
    spinner.finish_and_clear();
    let (status, bytes) = result?;
    check(status, &bytes)?;
    let pb = bar(bytes.len() as u64);
    pb.set_message("writing");
    let tmp = out.with_extension("part");
    let mut written = 0usize;
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    for piece in bytes.chunks(256 * 1024) {
        std::io::Write::write_all(&mut f, piece)?;
        written += piece.len();
        pb.set_position(written as u64);
    }
    f.sync_all()?;
    std::fs::rename(&tmp, out)?;
    pb.finish_and_clear();
    println!("{} bytes written to {}", bytes.len(), out.display());
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
        r["name"].as_str().unwrap_or_default(),
        r["inviter"].as_str().unwrap_or_default(),
        r["fingerprint"].as_str().unwrap_or_default()
    );
    if r["connected"].as_bool() == Some(true) {
        println!("linked");
        Ok(())
    } else {
        Err(format!(
            "could not reach the inviter: {}",
            r["error"].as_str().unwrap_or_default()
        )
        .into())
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
    println!("stopping");
    Ok(())
}
