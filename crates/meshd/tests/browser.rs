//! The browser node end to end: headless Chromium (driven through chromedriver by
//! fantoccini) opens the page a `meshd` serves, and the wasm node in it talks to native
//! `meshd` processes and to another browser, through the page's own controls.
//!
//! - browser ↔ native: encrypted messages both ways, each across the relay (neither side has
//!   a link to the other), with receipts;
//! - two browser pages (two browser profiles) talking through the mesh;
//! - a file sent from a native node to the browser, fetched, stored in IndexedDB, and still
//!   there (and readable) after the page reloads with the sender gone;
//! - the browser identity survives a reload (sealed in IndexedDB; a wrong passphrase is
//!   refused);
//! - screenshots of the pages saved as test artifacts (`target/tmp/e2e/`).
//!
//! Needs Chromium, chromedriver, and `meshd` built with the browser package (`MESH_WEB_PKG`):
//! `cargo xtask ci` (step "e2e") and `cargo xtask e2e` build it and run this test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_possible_truncation
)] // test code: it reports artifacts and logs

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, free_port, http_get, ok, start};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::Digest as _;

/// Longest wait for anything in the page.
const WAIT: Duration = Duration::from_secs(60);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// A running chromedriver, killed at the end.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(env_or("CHROMEDRIVER", "/usr/bin/chromedriver"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian: apt-get install chromium-driver)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// A new browser session: its own fresh profile (IndexedDB included).
async fn browser(driver_port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": env_or("CHROMIUM", "/usr/bin/chromium"),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1100,1500",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session")
}

/// Waits for an element; on timeout the page's state line and a screenshot
/// (`e2e/failure.png`) say what the page showed.
async fn wait_xpath(c: &Client, xpath: &str) -> Element {
    match c
        .wait()
        .at_most(WAIT)
        .every(Duration::from_millis(100))
        .for_element(Locator::XPath(xpath))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let state = format!(
                "{:?}; links: {:?}",
                text_of(c, "state").await,
                text_of(c, "links").await
            );
            let shot = screenshot(c, "failure.png").await;
            panic!(
                "no {xpath} within {WAIT:?}: {e}; the page says {state} (see {})",
                shot.display()
            )
        }
    }
}

async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

async fn fill(c: &Client, id: &str, text: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Opens or creates the page's identity with `passphrase` and waits until the node is linked
/// to the meshd that served the page; returns its peer id.
async fn unlock(c: &Client, passphrase: &str, create: bool) -> String {
    wait_xpath(c, "//form[@id='unlock-form' and not(@hidden)]").await;
    let button = c.find(Locator::Id("unlock")).await.unwrap();
    assert_eq!(
        button.text().await.unwrap(),
        if create { "Create identity" } else { "Unlock" }
    );
    fill(c, "passphrase", passphrase).await;
    if create {
        fill(c, "passphrase2", passphrase).await;
    }
    button.click().await.unwrap();
    wait_xpath(c, "//body[@data-online='true']").await;
    text_of(c, "peer-id").await
}

async fn send_from_page(c: &Client, to: &str, text: &str) {
    fill(c, "to", to).await;
    fill(c, "text", text).await;
    c.find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// An incoming message in the page's list.
async fn wait_message(c: &Client, text: &str) {
    wait_xpath(
        c,
        &format!("//ol[@id='messages']/li[contains(@class,'in')][contains(., '{text}')]"),
    )
    .await;
}

/// The page's outgoing message, once its receipt came.
async fn wait_delivered(c: &Client, text: &str) {
    wait_xpath(
        c,
        &format!(
            "//ol[@id='messages']/li[contains(@class,'out')][contains(., '{text}')]\
             /span[contains(@class,'delivery')][text()='delivered']"
        ),
    )
    .await;
}

fn wait_native(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status line of `GET path` (the body may be binary).
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Prints the end of each node's log if the test fails (before the directories go).
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for dir in &self.0 {
            let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("---- {} (last 150 lines)", dir.display());
            for l in &lines[lines.len().saturating_sub(150)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// A `meshd run` on loopback (WebRTC on 127.0.0.1 only) listening on `listen` (or `off`),
/// taking relayed offers or not.
fn node(dir: &Path, listen: &str, bootstrap: Option<&str>, accept_relayed: bool) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("meshd.toml"),
        format!("[webrtc]\nudp = [\"127.0.0.1:0\"]\naccept_relayed = {accept_relayed}\n"),
    )
    .unwrap();
    start(dir, listen, bootstrap)
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// Prints how long the phase that ends now took.
fn phase(since: &mut Instant, name: &str) {
    println!("phase {name}: {:.1} s", since.elapsed().as_secs_f64());
    *since = Instant::now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, chromedriver and meshd built with MESH_WEB_PKG: `cargo xtask ci` (step e2e) runs it"]
async fn the_browser_node_talks_to_native_nodes_and_other_browsers() {
    let mut t = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(
        ["relay", "carol", "dave"]
            .iter()
            .map(|n| tmp.path().join(n))
            .collect(),
    );
    let relay_port = free_port();
    let relay = node(
        &tmp.path().join("relay"),
        &format!("127.0.0.1:{relay_port}"),
        None,
        true,
    );
    let relay_url = format!("http://127.0.0.1:{relay_port}/mesh/v1/signal");
    // Carol has no public endpoint and takes no relayed offers (like a phone): nobody can
    // dial her, so the browser and she only ever meet through the relay.
    let carol = node(&tmp.path().join("carol"), "off", Some(&relay_url), false);
    let carol_id = carol.peer();
    // Dave has a public endpoint: the browser can link to him, and fetches his file from him.
    let dave = node(
        &tmp.path().join("dave"),
        &format!("127.0.0.1:{}", free_port()),
        Some(&relay_url),
        true,
    );
    assert_eq!(
        http_status(relay_port, "/pkg/mesh_web_bg.wasm"),
        200,
        "this meshd was built without the browser package: build it with MESH_WEB_PKG (cargo xtask e2e)"
    );
    let (page_status, page) = http_get(relay_port, "/");
    assert_eq!(page_status, 200);
    assert!(page.contains("<title>mesh</title>"));

    let (_driver, driver_port) = chromedriver();
    let a = browser(driver_port).await;
    let origin = format!("http://127.0.0.1:{relay_port}/");
    a.goto(&origin).await.unwrap();
    let passphrase = "correct horse battery staple";
    let a_id = unlock(&a, passphrase, true).await;
    assert_eq!(text_of(&a, "bootstrap").await, relay.peer());
    // Carol cannot be dialed and the browser cannot take links: whatever goes between them
    // crosses the relay (carol's inbox says the message came through the mesh).

    phase(&mut t, "started");
    // Native → browser, through the mesh, with a receipt.
    let sent = ok(
        &carol.dir,
        &["send", &a_id, "hello from carol", "--wait", "60"],
    );
    assert!(sent.contains("delivered through the mesh"), "{sent}");
    wait_message(&a, "hello from carol").await;

    phase(&mut t, "native to browser");
    // Browser → native.
    send_from_page(&a, &carol_id, "hello from the browser").await;
    wait_native("carol to get the browser's message", || {
        ok(&carol.dir, &["inbox"]).contains("hello from the browser")
    });
    let inbox = ok(&carol.dir, &["inbox"]);
    let line = inbox
        .lines()
        .find(|l| l.contains("hello from the browser"))
        .unwrap();
    assert!(
        line.contains(&format!("from {a_id} (mesh)")),
        "through the mesh, from the browser's identity: {line}"
    );
    wait_delivered(&a, "hello from the browser").await;

    phase(&mut t, "browser to native");
    // A second browser (its own profile) and the first talk through the mesh.
    let b = browser(driver_port).await;
    b.goto(&origin).await.unwrap();
    let b_id = unlock(&b, "another passphrase", true).await;
    assert_ne!(a_id, b_id);
    send_from_page(&a, &b_id, "hello browser b").await;
    wait_message(&b, "hello browser b").await;
    send_from_page(&b, &a_id, "hello browser a").await;
    wait_message(&a, "hello browser a").await;
    wait_delivered(&b, "hello browser a").await;
    // A message to a malformed peer id is refused in the page.
    send_from_page(&b, "not-a-peer", "lost").await;
    wait_xpath(
        &b,
        "//p[@id='state'][contains(@class,'error')][starts-with(., 'Not sent')]",
    )
    .await;
    screenshot(&b, "second-browser.png").await;

    phase(&mut t, "two browsers");
    // A file from dave to the browser: fetched from dave, kept in IndexedDB.
    let content: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&content));
    let file = tmp.path().join("notes.bin");
    std::fs::write(&file, &content).unwrap();
    let offered = ok(&dave.dir, &["file", "send", &a_id, file.to_str().unwrap()]);
    assert!(offered.contains("offered \"notes.bin\""), "{offered}");
    let row = "//tbody[@id='files']/tr[@data-name='notes.bin']";
    wait_xpath(&a, &format!("{row}//button[contains(@class,'fetch')]"))
        .await
        .click()
        .await
        .unwrap();
    wait_xpath(&a, &format!("{row}[@data-sha256='{digest}']")).await;
    wait_xpath(
        &a,
        &format!("{row}/td[@class='file-state'][text()='stored here']"),
    )
    .await;
    screenshot(&a, "browser-node.png").await;

    phase(&mut t, "file");
    // The sender goes away; the browser reloads: same identity (a wrong passphrase first is
    // refused), the file still there and readable from IndexedDB.
    dave.stop();
    a.refresh().await.unwrap();
    wait_xpath(&a, "//form[@id='unlock-form' and not(@hidden)]").await;
    assert_eq!(text_of(&a, "unlock").await, "Unlock");
    fill(&a, "passphrase", "not the passphrase").await;
    a.find(Locator::Id("unlock"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_xpath(&a, "//p[@id='state'][text()='Wrong passphrase.']").await;
    let again = unlock(&a, passphrase, false).await;
    assert_eq!(again, a_id, "the identity survived the reload");
    wait_xpath(&a, &format!("{row}//button[contains(@class,'open')]"))
        .await
        .click()
        .await
        .unwrap();
    wait_xpath(&a, &format!("{row}[@data-sha256='{digest}']")).await;
    screenshot(&a, "browser-node-after-reload.png").await;

    phase(&mut t, "reload");
    a.close().await.unwrap();
    b.close().await.unwrap();
    carol.stop();
    relay.stop();
}
