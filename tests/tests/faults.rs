//! Fault injection on real `meshd` processes (issue #12).
//!
//! - `blob_writes_survive_sigkill`: three clients write blobs (up to 1.1 MiB, so several store
//!   batches each) through the control API at once, and the node is killed with SIGKILL at a
//!   seeded random moment, four times. After each restart on the same data directory (redb,
//!   the default store) the node starts without an error, every acknowledged blob reads back
//!   byte for byte (each chunk verified against its hash on the way), every write the kill
//!   cut short is absent or whole, never partial, and the store's counters (blobs, bytes)
//!   are exactly what is there: no trace of a partial write.
//! - `dht_stores_survive_sigkill`: a holder node answers the STOREs of an author node's
//!   records (two clients putting at once) and is killed with SIGKILL right after a seeded
//!   random number of them were answered "stored", or, every other round, a random moment
//!   later, six times; answers it sent before dying still count (the author stays up 300 ms
//!   to take them), then the author is killed too. After each restart the holder serves every
//!   acknowledged record so far to a reader node that keeps no records itself. (Before the
//!   fix in `mesh-dht`'s driver, which answered before writing, this lost a record in the
//!   first round or so.)
//! - `loss_and_partition_between_meshd_processes`: a relay and two nodes that link to it only,
//!   each in a network namespace of its own, joined by veth pairs to a bridge. First 30% of the
//!   packets each one sends are dropped at random (a classic BPF filter on its veth: the kernel
//!   here has no netem), and messages both ways still arrive with their receipts; then one node
//!   is cut off entirely for 10 s while messages are sent to it, the cut heals, and it gets
//!   them. This test needs root (network namespaces, `ip` and `tc` from iproute2); without
//!   them it says it did not run, or fails where `MESH_REQUIRE_NETNS` is set (`cargo xtask ci`
//!   sets it).
//!
//! The `meshd` binary is the one Cargo built into this target directory (`cargo test
//! --workspace` builds it; on its own: `cargo build -p meshd`), or the one `MESHD_BIN` names.
//! A binary older than any source file it was built from (per the dep-info file Cargo writes
//! next to it) is refused rather than tested. Kill points come from a seed, printed, which
//! `MESH_FAULTS_SEED` replaces.

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::too_many_lines
)] // test code

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesh_sim::Rng; // seeded: the kill points and contents, reproducible from the printed seed
use serde_json::{Value, json};

/// Longest wait for a node to start, to link, or for a message to arrive.
const WAIT: Duration = Duration::from_secs(60);
/// Longest one control call may take (a send waits up to [`LOSSY_WAIT`] for its receipt).
const CALL_TIMEOUT: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------------------------
// Helpers: the binary, seeded choices, the control API, processes.

fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("MESH_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("{test}: seed {seed} (MESH_FAULTS_SEED={seed} repeats its choices)");
    seed | 1
}

/// The `meshd` to run: `MESHD_BIN`, or the one in this target directory if it is current.
fn meshd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MESHD_BIN") {
            return PathBuf::from(p);
        }
        // This test runs from target/<profile>/deps/; Cargo puts binaries one level up.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        let bin = dir.join("meshd");
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| {
                panic!(
                    "no meshd binary at {} ({e}): build it first with `cargo build -p meshd` \
                     (`cargo test --workspace` builds it too), or set MESHD_BIN",
                    bin.display()
                )
            });
        // The dep-info file lists every source file the binary was built from.
        let deps = std::fs::read_to_string(dir.join("meshd.d")).unwrap_or_default();
        let sources = deps.split_once(": ").map_or("", |(_, s)| s);
        for src in sources.split_whitespace() {
            if let Ok(changed) = std::fs::metadata(src).and_then(|m| m.modified()) {
                assert!(
                    changed <= built,
                    "{} is older than {src}: rebuild it (`cargo build -p meshd`) so that these \
                     tests run the current code",
                    bin.display()
                );
            }
        }
        bin
    })
}

/// One HTTP/1.1 call on a node's control socket: the status and the whole body. An error
/// when the node is not there, or the answer is cut (shorter than its length says).
fn call(dir: &Path, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(dir.join("control.sock"))?;
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    s.set_write_timeout(Some(CALL_TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: meshd\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    for piece in body.chunks(64 * 1024) {
        s.write_all(piece)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!("a cut or malformed answer ({} bytes)", raw.len()))
    })
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?.to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let body = &raw[end + 4..];
    if header("transfer-encoding:") == Some("chunked") {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[..nl]).ok()?.split(';').next()?;
            let len = usize::from_str_radix(size.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if len == 0 {
                return Some((status, out));
            }
            out.extend_from_slice(rest.get(..len)?);
            rest = rest.get(len + 2..)?;
        }
    }
    match header("content-length:") {
        Some(n) if n.parse::<usize>().ok()? != body.len() => None,
        _ => Some((status, body.to_vec())),
    }
}

/// A control call with a JSON answer.
fn call_json(dir: &Path, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, answer) = call(dir, method, path, &body)
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", dir.display()));
    let value = serde_json::from_slice(&answer)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()));
    (status, value)
}

/// Writes `meshd.toml`: no web page, no metrics listener, WebRTC on `ip` only, and `more`
/// (TOML tables).
fn write_config(dir: &Path, ip: &str, accept_relayed: bool, more: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("meshd.toml"),
        format!(
            "web = false\nmetrics = \"off\"\n[webrtc]\nudp = [\"{ip}:0\"]\naccept_relayed = {accept_relayed}\n{more}"
        ),
    )
    .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The last lines each node logged, for a failure's message.
fn logs(nodes: &[&Meshd]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} ({}):\n{}", n.name(), n.log.display(), n.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100));
    }
}

/// A `meshd run` process (in a network namespace, or not); killed if dropped running.
struct Meshd {
    dir: PathBuf,
    child: Option<Child>,
    /// This start's log.
    log: PathBuf,
}

impl Drop for Meshd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Meshd {
    /// Starts `meshd run ARGS` on `dir` and waits until its control API answers.
    fn start(dir: &Path, netns: Option<&str>, args: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut n = 0;
        while dir.join(format!("log{n}.txt")).exists() {
            n += 1;
        }
        let log = dir.join(format!("log{n}.txt"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(meshd_bin());
                c
            }
            None => Command::new(meshd_bin()),
        };
        cmd.arg("--data-dir")
            .arg(dir)
            .arg("run")
            .args(args)
            .env_remove("MESHD_CONFIG")
            .env(
                "MESHD_LOG",
                std::env::var("MESHD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        let mut node = Self {
            dir: dir.to_path_buf(),
            child: Some(cmd.spawn().unwrap()),
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if matches!(call(dir, "GET", "/v1/status", b""), Ok((200, _))) {
                return node;
            }
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "meshd on {} exited while starting ({status}):\n{}",
                    dir.display(),
                    node.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "meshd on {} did not start:\n{}",
                dir.display(),
                node.log_tail()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// SIGKILL. It must still have been running: a node that died before is a failure.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("already stopped");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "meshd on {} had exited ({status}) before the kill:\n{}",
                self.dir.display(),
                self.log_tail()
            );
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    /// Graceful stop through the control API; it must exit 0.
    fn stop(mut self) {
        let (status, _) = call_json(&self.dir, "POST", "/v1/shutdown", &Value::Null);
        assert_eq!(status, 200);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "meshd exited with {status}:\n{}",
                    self.log_tail()
                );
                return;
            }
            assert!(Instant::now() < deadline, "meshd did not stop");
            sleep(Duration::from_millis(50));
        }
    }

    /// Fails if this start logged an error (a store that opened with trouble, for one).
    fn assert_no_errors(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "meshd on {} logged errors:\n{}",
            self.dir.display(),
            errors.join("\n")
        );
    }

    fn status(&self) -> Value {
        let (status, v) = call_json(&self.dir, "GET", "/v1/status", &Value::Null);
        assert_eq!(status, 200, "{v}");
        v
    }

    fn peer(&self) -> String {
        self.status()["peer"].as_str().unwrap().to_string()
    }

    fn linked_to(&self, peer: &str) -> bool {
        self.status()["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str() == Some(peer))
    }

    /// Sends `text` to `to`, waiting up to `wait` for the receipt; whether it came.
    fn send(&self, to: &str, text: &str, wait: Duration) -> bool {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap();
        let (status, v) = call_json(
            &self.dir,
            "POST",
            "/v1/send",
            &json!({ "to": to, "text": text, "wait_ms": wait_ms }),
        );
        assert_eq!(status, 200, "send: {v}");
        v["delivered"].as_bool().unwrap()
    }

    /// The texts of every message received.
    fn inbox(&self) -> Vec<String> {
        let (status, v) = call_json(&self.dir, "GET", "/v1/messages?limit=1000", &Value::Null);
        assert_eq!(status, 200, "{v}");
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL during blob writes.

const BLOB_ROUNDS: u32 = 4;
/// Clients writing at once.
const BLOB_WRITERS: u64 = 3;
/// Writes per client and round at most: only a bound, the kill comes first.
const BLOBS_PER_WRITER: usize = 60;
/// Largest blob written: 18 chunks, which the store writes in two batches before the one
/// that commits the blob.
const MAX_BLOB: u64 = 1100 * 1024;
/// The node's blob quotas: room for every write the bounds allow (the default owner quota,
/// 256 MiB, is not).
const BLOB_QUOTAS: &str = "[blobs]\nowner_quota = 1073741824\ntotal_quota = 1073741824\n";

/// One write: its content (from a seed) and, once acknowledged, the id the node gave.
#[derive(Debug, Clone)]
struct BlobWrite {
    seed: u64,
    len: usize,
    acked: Option<String>,
}

fn blob_content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The id a blob of `data` gets (content-addressed: the manifest of its chunk hashes).
fn blob_id(data: &[u8]) -> String {
    use mesh_blob::manifest::{Manifest, chunk_hash};
    use mesh_blob::store::DEFAULT_CHUNK_SIZE;
    let hashes = data
        .chunks(DEFAULT_CHUNK_SIZE as usize)
        .map(chunk_hash)
        .collect();
    Manifest::new(data.len() as u64, DEFAULT_CHUNK_SIZE, hashes)
        .unwrap()
        .id()
        .to_hex()
}

/// Writes blobs until the node goes away (`killing` set first) or the bound is reached.
fn write_blobs(dir: &Path, seed: u64, killing: &AtomicBool, log: &Mutex<Vec<BlobWrite>>) {
    let mut rng = Rng::new(seed | 1);
    for _ in 0..BLOBS_PER_WRITER {
        if killing.load(Ordering::SeqCst) {
            return;
        }
        let write = BlobWrite {
            seed: rng.next_u64(),
            len: usize::try_from(1 + rng.below(MAX_BLOB)).unwrap(),
            acked: None,
        };
        let data = blob_content(write.seed, write.len);
        let index = {
            let mut log = log.lock().unwrap();
            log.push(write);
            log.len() - 1
        };
        match call(dir, "PUT", "/v1/blobs", &data) {
            Ok((200, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                assert_eq!(v["size"].as_u64(), Some(data.len() as u64), "{v}");
                log.lock().unwrap()[index].acked = Some(id);
            }
            // Cut by the kill: in flight, not acknowledged.
            Err(_) if killing.load(Ordering::SeqCst) => return,
            Ok((status, body)) => panic!(
                "blob write refused ({status}): {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => panic!("blob write failed while the node was up: {e}"),
        }
    }
}

/// Every acknowledged blob reads back whole; every other write is absent or whole; the
/// store's counters are exactly what is there. Returns how many blobs are there.
fn check_blobs(node: &Meshd, writes: &[BlobWrite]) -> usize {
    let (mut present, mut bytes) = (0u64, 0u64);
    for w in writes {
        let data = blob_content(w.seed, w.len);
        let id = blob_id(&data);
        if let Some(acked) = &w.acked {
            assert_eq!(acked, &id, "the node named a blob other than its content");
        }
        let (status, body) = call(&node.dir, "GET", &format!("/v1/blobs/{id}"), b"")
            .unwrap_or_else(|e| panic!("reading blob {id}: {e}"));
        match status {
            200 => {
                assert!(
                    body == data,
                    "blob {id} ({} bytes, acknowledged: {}) reads back as {} different bytes",
                    data.len(),
                    w.acked.is_some(),
                    body.len()
                );
                present += 1;
                bytes += data.len() as u64;
            }
            404 => assert!(
                w.acked.is_none(),
                "acknowledged blob {id} ({} bytes) was lost",
                data.len()
            ),
            other => panic!(
                "reading blob {id}: {other} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    // Nothing else is counted: no partial blob, no chunk of one.
    let blobs = &node.status()["blobs"];
    assert_eq!(blobs["blobs"].as_u64(), Some(present), "{blobs}");
    assert_eq!(blobs["bytes"].as_u64(), Some(bytes), "{blobs}");
    usize::try_from(present).unwrap()
}

#[test]
fn blob_writes_survive_sigkill() {
    let started = Instant::now();
    let mut rng = Rng::new(seed("blob_writes_survive_sigkill", 0xb10b_5eed));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    write_config(&dir, "127.0.0.1", true, BLOB_QUOTAS);
    let mut node = Meshd::start(&dir, None, &["--listen", "off"]);
    let mut writes: Vec<BlobWrite> = Vec::new();
    let mut cut_short = 0;
    for round in 0..BLOB_ROUNDS {
        let killing = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..BLOB_WRITERS)
            .map(|_| {
                let (dir, killing, log, seed) = (
                    dir.clone(),
                    Arc::clone(&killing),
                    Arc::clone(&log),
                    rng.next_u64(),
                );
                std::thread::spawn(move || write_blobs(&dir, seed, &killing, &log))
            })
            .collect();
        // Kill at a random moment; every other round, a random moment after the first
        // acknowledged write, so that some kills land among writes however slow the machine
        // is to start the clients.
        if round % 2 == 1 {
            wait_for("a blob write to be acknowledged", WAIT, || {
                log.lock().unwrap().iter().any(|w| w.acked.is_some())
            });
        }
        sleep(Duration::from_millis(150 + rng.below(1350)));
        killing.store(true, Ordering::SeqCst);
        node.kill9();
        for c in clients {
            c.join().unwrap();
        }
        let log = std::mem::take(&mut *log.lock().unwrap());
        let acked = log.iter().filter(|w| w.acked.is_some()).count();
        let cut = log.len() - acked;
        cut_short += cut;
        writes.extend(log);

        node = Meshd::start(&dir, None, &["--listen", "off"]);
        node.assert_no_errors();
        let present = check_blobs(&node, &writes);
        println!(
            "blob round {round}: {acked} writes acknowledged before the kill, {cut} cut short; \
             after the restart {present} blobs in all, each whole"
        );
    }
    let acked = writes.iter().filter(|w| w.acked.is_some()).count();
    assert!(
        acked > 0,
        "no write was ever acknowledged: the test proved nothing"
    );
    assert!(
        cut_short > 0,
        "no kill ever cut a write short: the test proved little"
    );
    node.stop();
    println!(
        "blobs: {BLOB_ROUNDS} kills, {acked} acknowledged writes all intact, {cut_short} cut \
         short (absent or whole), in {:.1?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL of a node answering DHT STOREs.

const DHT_ROUNDS: u32 = 6;
/// Clients putting records at once (on the author node).
const DHT_WRITERS: u64 = 2;
/// Puts per client and round at most: with [`DHT_WRITERS`], below the holder's rate limit of
/// 100 STOREs per peer and minute (it restarts every round).
const PUTS_PER_WRITER: u64 = 40;
/// How long the author stays up after the holder's kill, to take the answers in flight.
const ANSWERS_IN_FLIGHT: Duration = Duration::from_millis(300);

/// Puts records through `dir`'s node until it goes away (`killing` set first) or the bound;
/// each put answered as stored by a remote node is sent on `acks` as (name, value).
fn put_records(
    dir: &Path,
    prefix: &str,
    seed: u64,
    killing: &AtomicBool,
    acks: &mpsc::Sender<(String, String)>,
) {
    for i in 0..PUTS_PER_WRITER {
        if killing.load(Ordering::SeqCst) {
            return;
        }
        let (name, value) = (format!("{prefix}-{i}"), format!("value {seed:x} {i}"));
        let body = json!({ "name": name, "value": value }).to_string();
        match call(dir, "POST", "/v1/dht/put", body.as_bytes()) {
            Ok((200, answer)) => {
                let v: Value = serde_json::from_slice(&answer).unwrap();
                if v["stored"].as_u64().unwrap() >= 1 {
                    let _ = acks.send((name, value));
                }
            }
            Err(_) if killing.load(Ordering::SeqCst) => return,
            Ok((status, answer)) => panic!(
                "dht put refused ({status}): {}",
                String::from_utf8_lossy(&answer)
            ),
            Err(e) => panic!("dht put failed while the nodes were up: {e}"),
        }
    }
}

#[test]
fn dht_stores_survive_sigkill() {
    let started = Instant::now();
    let mut rng = Rng::new(seed("dht_stores_survive_sigkill", 0xd475_5eed));
    let tmp = tempfile::tempdir().unwrap();
    let (h_dir, a_dir, r_dir) = (
        tmp.path().join("holder"),
        tmp.path().join("author"),
        tmp.path().join("reader"),
    );
    write_config(&h_dir, "127.0.0.1", true, "");
    write_config(&a_dir, "127.0.0.1", true, "");
    // The reader takes no records (1 byte per peer): what it finds, it finds at the holder.
    write_config(&r_dir, "127.0.0.1", true, "[dht]\nper_peer_bytes = 1\n");
    let listen = format!("127.0.0.1:{}", free_port());
    let holder_args = ["--listen", listen.as_str()];
    let mut holder = Meshd::start(&h_dir, None, &holder_args);
    let h_id = holder.peer();
    let boot = format!("{h_id}@http://{listen}/mesh/v1/signal");
    let client_args = ["--listen", "off", "--bootstrap", boot.as_str()];
    // Up whenever the author puts, so that its lookups never wait on a node that is gone.
    let mut reader = Meshd::start(&r_dir, None, &client_args);
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut a_id = String::new();
    for round in 0..DHT_ROUNDS {
        // The author puts records; the holder is the only node that takes them, so
        // "stored: 1" is the holder's STORE answer.
        let mut author = Meshd::start(&a_dir, None, &client_args);
        a_id = author.peer();
        wait_for("the author to link to the holder", WAIT, || {
            author.linked_to(&h_id)
        });
        let killing = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let writers: Vec<_> = (0..DHT_WRITERS)
            .map(|w| {
                let (dir, killing, tx, seed) = (
                    a_dir.clone(),
                    Arc::clone(&killing),
                    tx.clone(),
                    rng.next_u64(),
                );
                let prefix = format!("r{round}w{w}");
                std::thread::spawn(move || put_records(&dir, &prefix, seed, &killing, &tx))
            })
            .collect();
        drop(tx);
        // Kill the holder right after its K-th acknowledgement, or, every other round, a
        // random moment later, while puts go on.
        let k = 1 + rng.below(25);
        let mut round_acks = Vec::new();
        while round_acks.len() < usize::try_from(k).unwrap() {
            match rx.recv_timeout(WAIT) {
                Ok(ack) => round_acks.push(ack),
                Err(e) => panic!(
                    "round {round}: {} of {k} puts acknowledged ({e}):\n{}",
                    round_acks.len(),
                    author.log_tail()
                ),
            }
        }
        if round % 2 == 1 {
            sleep(Duration::from_millis(rng.below(400)));
        }
        killing.store(true, Ordering::SeqCst);
        holder.kill9();
        // Answers the holder sent before it died still count: they reach the author within
        // this time (an answer sent ahead of its record's write is what would be lost).
        sleep(ANSWERS_IN_FLIGHT);
        // The author goes too: nobody but the holder may answer for the records now. And the
        // reader, which would otherwise first try its link to the holder that is gone.
        author.kill9();
        reader.kill9();
        for w in writers {
            w.join().unwrap();
        }
        round_acks.extend(rx.try_iter());
        let this_round = round_acks.len();
        acked.extend(round_acks);

        // The holder restarts, then the reader, which looks every acknowledged record up
        // (earlier rounds' too).
        holder = Meshd::start(&h_dir, None, &holder_args);
        holder.assert_no_errors();
        reader = Meshd::start(&r_dir, None, &client_args);
        wait_for("the reader to link to the holder", WAIT, || {
            reader.linked_to(&h_id)
        });
        let mut lost = Vec::new();
        for (name, value) in &acked {
            let (status, v) = call_json(
                &reader.dir,
                "POST",
                "/v1/dht/get",
                &json!({ "author": a_id, "name": name }),
            );
            if status != 200 || v["value"].as_str() != Some(value.as_str()) {
                lost.push(format!("{name}: {status} {v}"));
            }
        }
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged records not served after the restart:\n{}",
            lost.len(),
            acked.len(),
            lost.join("\n")
        );
        let records = holder.status()["dht"]["records"].as_u64().unwrap();
        println!(
            "dht round {round}: killed after {k} acknowledged STOREs ({this_round} in all), \
             holder back with {records} records, all {} acknowledged ones served",
            acked.len()
        );
    }
    assert_eq!(
        reader.status()["dht"]["records"].as_u64(),
        Some(0),
        "the reader kept records: what it found may not have come from the holder"
    );
    holder.stop();
    println!(
        "dht: {DHT_ROUNDS} kills, {} acknowledged records (author {a_id}) all served after \
         the restarts, in {:.1?}",
        acked.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Loss and a partition between meshd processes, each in a network namespace.

/// The namespaces' subnet (on their own bridge: nothing of the host's is reachable from it).
const SUBNET: &str = "10.213.0";
/// Packets dropped, in percent, at each node's veth while the network is lossy.
const LOSS_PERCENT: u64 = 30;
/// Messages sent each way while the network is lossy (all at once).
const LOSSY_MESSAGES: usize = 2;
/// Longest wait for a receipt under loss (the most a node waits). Most take a few seconds,
/// but SCTP's retransmission timer doubles with each loss of a packet or of its
/// acknowledgement, and links drop and are dialed again under loss: the slowest of a dozen
/// runs here took 50 s (the test prints the slowest of each run).
const LOSSY_WAIT: Duration = Duration::from_secs(120);
/// Messages sent to the node while it is cut off.
const PARTITION_MESSAGES: usize = 3;
/// How long it stays cut off.
const PARTITION: Duration = Duration::from_secs(10);
/// Longest wait for the messages sent during the partition once it heals: usually about a
/// second, but a redial of the relay started during the cut must time out (15 s) and the
/// redials back off (2 s doubling): 42 s in one of a dozen runs here.
const HEAL_WAIT: Duration = Duration::from_secs(90);

/// A classic BPF program for `tc ... bpf da bytecode` that drops `percent` of the packets at
/// random (the kernel here has no netem; classic BPF's random load does it):
///
/// ```text
/// ld rand               ; SKF_AD_OFF + SKF_AD_RANDOM: a random u32
/// jge #threshold, 1, 0  ; at or above the threshold: pass
/// ret #2                ; TC_ACT_SHOT: drop
/// ret #0                ; TC_ACT_OK: pass
/// ```
fn loss_program(percent: u64) -> String {
    let threshold = (1u64 << 32) * percent / 100;
    format!("4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 2,6 0 0 0")
}

/// Drops every packet: `ret #2`.
const DROP_ALL: &str = "1,6 0 0 2";

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Network namespaces: a hub with a bridge, and one namespace per node joined to it by a veth
/// pair (`eth0` on the node's side, with a clsact qdisc for the fault filters). Removed when
/// dropped (stop the processes in them first).
struct Lab {
    prefix: String,
    nodes: usize,
}

impl Lab {
    /// `None`, saying why, where namespaces cannot be made (not root, no iproute2, ...); with
    /// `MESH_REQUIRE_NETNS` set (as `cargo xtask ci` sets it), a failure instead.
    fn new(nodes: usize) -> Option<Self> {
        let lab = Self {
            prefix: format!("meshf{}", std::process::id()),
            nodes: 0,
        };
        remove_stale_namespaces();
        if let Err(e) = run("ip", &["netns", "add", &lab.hub()]) {
            let why = format!(
                "this test runs meshd processes in network namespaces of their own, which needs \
                 root and iproute2 (`ip netns`, `tc`); they are not available here: {e}"
            );
            assert!(std::env::var_os("MESH_REQUIRE_NETNS").is_none(), "{why}");
            eprintln!("NOT RUN: {why} (set MESH_REQUIRE_NETNS=1 to make this a failure)");
            return None;
        }
        let mut lab = lab;
        let hub = lab.hub();
        let setup = |lab: &mut Self| -> Result<(), String> {
            run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
            run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
            for i in 0..nodes {
                let (ns, port) = (lab.ns(i), format!("v{i}"));
                run("ip", &["netns", "add", &ns])?;
                lab.nodes = i + 1;
                run(
                    "ip",
                    &[
                        "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                        "netns", &ns,
                    ],
                )?;
                run(
                    "ip",
                    &["-n", &hub, "link", "set", &port, "master", "br0", "up"],
                )?;
                run(
                    "ip",
                    &[
                        "-n",
                        &ns,
                        "addr",
                        "add",
                        &format!("{}/24", Self::ip(i)),
                        "dev",
                        "eth0",
                    ],
                )?;
                run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
                run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
                // webrtc-rs opens an mDNS socket for every peer connection; joining its group
                // fails (ENODEV) on a host with no route to 224.0.0.0/4, such as one without a
                // default route, and then no link forms at all.
                run(
                    "ip",
                    &["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"],
                )?;
                run("tc", &["-n", &ns, "qdisc", "add", "dev", "eth0", "clsact"])?;
            }
            Ok(())
        };
        if let Err(e) = setup(&mut lab) {
            panic!("setting up the network namespaces failed: {e}");
        }
        Some(lab)
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn ip(i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Puts `program` (classic BPF) on node `i`'s `eth0` at `hook` ("egress" or "ingress"),
    /// replacing what was there; `None` takes it off.
    fn filter(&self, i: usize, hook: &str, program: Option<&str>) {
        let ns = self.ns(i);
        // Nothing there is fine.
        let _ = run("tc", &["-n", &ns, "filter", "del", "dev", "eth0", hook]);
        if let Some(p) = program {
            run(
                "tc",
                &[
                    "-n", &ns, "filter", "add", "dev", "eth0", hook, "bpf", "da", "bytecode", p,
                ],
            )
            .unwrap_or_else(|e| panic!("the kernel refused the fault filter: {e}"));
        }
    }

    /// Packets node `i`'s filters saw and dropped so far.
    fn counters(&self, i: usize) -> (u64, u64) {
        let text = run(
            "tc",
            &["-n", &self.ns(i), "-s", "qdisc", "show", "dev", "eth0"],
        )
        .unwrap();
        // qdisc clsact ffff: parent ffff:fff1
        //  Sent 86000 bytes 2000 pkt (dropped 655, overlimits 0 requeues 0)
        let stats = text
            .split("qdisc clsact")
            .nth(1)
            .and_then(|t| t.split("Sent ").nth(1))
            .unwrap_or_else(|| panic!("no clsact statistics in {text:?}"));
        let words: Vec<&str> = stats.split_whitespace().collect();
        let number = |w: &str| {
            w.trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap()
        };
        (number(words[2]), number(words[5]))
    }
}

/// Removes namespaces left by a test process that was killed before it could (its pid is
/// gone).
fn remove_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("meshf") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = run("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = run("ip", &["netns", "del", &self.hub()]);
    }
}

#[test]
fn loss_and_partition_between_meshd_processes() {
    let started = Instant::now();
    let Some(lab) = Lab::new(3) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (r_dir, a_dir, c_dir) = (
        tmp.path().join("relay"),
        tmp.path().join("alice"),
        tmp.path().join("carol"),
    );
    // Alice and Carol take no relayed offers: each links to the relay only, so everything
    // between them crosses the relay (gossip, with receipts back the same way).
    write_config(&r_dir, &Lab::ip(0), true, "");
    write_config(&a_dir, &Lab::ip(1), false, "");
    write_config(&c_dir, &Lab::ip(2), false, "");
    let listen = format!("{}:7700", Lab::ip(0));
    let relay = Meshd::start(&r_dir, Some(&lab.ns(0)), &["--listen", &listen]);
    let r_id = relay.peer();
    let boot = format!("{r_id}@http://{listen}/mesh/v1/signal");
    let client = ["--listen", "off", "--bootstrap", boot.as_str()];
    let alice = Meshd::start(&a_dir, Some(&lab.ns(1)), &client);
    let carol = Meshd::start(&c_dir, Some(&lab.ns(2)), &client);
    let (a_id, c_id) = (alice.peer(), carol.peer());
    wait_for("alice and carol to link to the relay", WAIT, || {
        alice.linked_to(&r_id) && carol.linked_to(&r_id)
    });
    assert!(
        alice.send(&c_id, "hello carol", WAIT),
        "no receipt without faults"
    );
    println!(
        "net: three nodes linked, a first message delivered ({:.1?})",
        started.elapsed()
    );

    // 30% of every node's packets dropped: messages and receipts still get through.
    let before: Vec<(u64, u64)> = (0..3).map(|i| lab.counters(i)).collect();
    let program = loss_program(LOSS_PERCENT);
    for i in 0..3 {
        lab.filter(i, "egress", Some(&program));
    }
    let lossy = Instant::now();
    let results: Vec<(String, bool, Duration)> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..LOSSY_MESSAGES)
            .flat_map(|n| {
                [
                    (&alice, &c_id, "alice to carol", n),
                    (&carol, &a_id, "carol to alice", n),
                ]
            })
            .map(|(from, to, way, n)| {
                scope.spawn(move || {
                    let text = format!("lossy {way} {n}");
                    let t = Instant::now();
                    let delivered = from.send(to, &text, LOSSY_WAIT);
                    (text, delivered, t.elapsed())
                })
            })
            .collect();
        sends.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let late: Vec<&String> = results.iter().filter(|r| !r.1).map(|r| &r.0).collect();
    assert!(
        late.is_empty(),
        "no receipt within {LOSSY_WAIT:?} under loss for {late:?}\n{}",
        logs(&[&relay, &alice, &carol])
    );
    let slowest = results.iter().map(|r| r.2).max().unwrap();
    let (mut sent, mut dropped) = (0, 0);
    for (i, (s0, d0)) in before.iter().enumerate() {
        let (s, d) = lab.counters(i);
        sent += s - s0;
        dropped += d - d0;
    }
    for i in 0..3 {
        lab.filter(i, "egress", None);
    }
    let (to_carol, to_alice) = (carol.inbox(), alice.inbox());
    for n in 0..LOSSY_MESSAGES {
        assert!(
            to_carol.contains(&format!("lossy alice to carol {n}")),
            "{to_carol:?}"
        );
        assert!(
            to_alice.contains(&format!("lossy carol to alice {n}")),
            "{to_alice:?}"
        );
    }
    println!(
        "net: {} messages with receipts under loss in {:.1?} (the slowest {slowest:.1?}): \
         {dropped} of {sent} packets dropped",
        2 * LOSSY_MESSAGES,
        lossy.elapsed()
    );
    // Some dropped, not all, and within 4.5 standard deviations of the binomial mean (a
    // false alarm about once in 150,000 runs): 100 (d - pn) against 100² n p (1 - p).
    let (n, d) = (i128::from(sent), i128::from(dropped));
    let deviation = 100 * d - i128::from(LOSS_PERCENT) * n;
    let variance = i128::from(LOSS_PERCENT * (100 - LOSS_PERCENT)) * n;
    assert!(
        d > 0 && d < n && 4 * deviation * deviation <= 81 * variance,
        "the loss was not about {LOSS_PERCENT}%: {dropped} of {sent} packets dropped"
    );

    // Carol is cut off entirely; Alice writes to her meanwhile; the cut heals and Carol gets
    // every message.
    lab.filter(2, "egress", Some(DROP_ALL));
    lab.filter(2, "ingress", Some(DROP_ALL));
    let cut = Instant::now();
    let texts: Vec<String> = (0..PARTITION_MESSAGES)
        .map(|n| format!("while carol was cut off {n}"))
        .collect();
    for text in &texts {
        alice.send(&c_id, text, Duration::ZERO);
    }
    sleep(PARTITION.saturating_sub(cut.elapsed()));
    let during = carol.inbox();
    assert!(
        !texts.iter().any(|t| during.contains(t)),
        "carol got a message while cut off: the partition was not one"
    );
    let linked_during = carol.linked_to(&r_id);
    lab.filter(2, "egress", None);
    lab.filter(2, "ingress", None);
    let healed = Instant::now();
    let deadline = healed + HEAL_WAIT;
    while !texts.iter().all(|t| carol.inbox().contains(t)) {
        assert!(
            Instant::now() < deadline,
            "carol did not get the messages sent while she was cut off within {HEAL_WAIT:?} \
             of the healing\n{}",
            logs(&[&relay, &alice, &carol])
        );
        sleep(Duration::from_millis(100));
    }
    println!(
        "net: carol cut off for {:.1?} (link still listed at the end: {linked_during}); the \
         {PARTITION_MESSAGES} messages sent meanwhile arrived {:.1?} after the cut healed",
        healed.duration_since(cut),
        healed.elapsed()
    );
    assert!(
        alice.send(&c_id, "after the partition", WAIT),
        "no receipt after healing"
    );
    drop((alice, carol, relay));
    drop(lab);
    println!("net: done in {:.1?}", started.elapsed());
}
