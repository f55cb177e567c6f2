//! Several `meshd run` processes on loopback, driven through the `meshd` sub-commands as an
//! operator would: messages end to end over WebRTC through a relay, a node that was down
//! catching up by pull, restarts without data loss, `/health`, and `/metrics` holding every
//! metric the dashboards and alert rules in `monitoring/` use.
//!
//! Topology: `relay` has a public endpoint; `alice` and `carol` have none and refuse offers
//! relayed to them (`accept_relayed = false`, like phones that keep their address from
//! strangers): each links to the relay only, so whatever goes between them crosses the relay.
//! `dave` has no public endpoint either but takes relayed offers: alice links to him with
//! WebRTC signaled through the relay, after finding him in the DHT.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;

use common::{free_port, http_get, meshd, ok, start, wait_for};

/// The metric names a dashboard or alert rule uses.
fn used_metrics(root: &Path) -> BTreeSet<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("monitoring/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(root.join("monitoring/prometheus/alerts.yml"));
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(at) = text[i..].find("mesh_") {
            let start = i + at;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| start + n);
            if boundary {
                names.insert(text[start..end].to_string());
            }
            i = end;
        }
    }
    names
}

/// The names a scrape exposes (histograms with their series' suffixes).
fn exposed_metrics(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

fn write_pin_set(dir: &Path) -> String {
    use mesh_platform::pinning::{PinSetPayload, sign_pin_set};
    let signer = mesh_crypto::Identity::generate();
    let now = mesh_crypto::UnixMillis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let doc = sign_pin_set(
        &signer,
        PinSetPayload {
            sequence: 1,
            hosts: vec!["mesh.example.org".into()],
            pins: vec![[1; 32], [2; 32]],
        },
        now,
        now.saturating_add(90 * 24 * 3_600_000),
    )
    .unwrap();
    std::fs::write(dir.join("pins.bin"), doc).unwrap();
    format!(
        "pin_set = \"{}\"\npin_signer = \"{}\"\n",
        dir.join("pins.bin").display(),
        signer.peer_id()
    )
}

#[test]
fn a_mesh_of_meshd_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let (r_dir, a_dir, c_dir, d_dir) = (
        tmp.path().join("relay"),
        tmp.path().join("alice"),
        tmp.path().join("carol"),
        tmp.path().join("dave"),
    );
    for d in [&r_dir, &a_dir, &c_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    for d in [&a_dir, &c_dir] {
        std::fs::write(d.join("meshd.toml"), "[webrtc]\naccept_relayed = false\n").unwrap();
    }
    std::fs::write(r_dir.join("meshd.toml"), write_pin_set(tmp.path())).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let relay = start(&r_dir, &listen, None);
    let relay_id = relay.peer();
    let boot = format!("{relay_id}@http://{listen}/mesh/v1/signal");
    // Alice bootstraps by URL alone (the id is fetched), Carol with the pinned id.
    let alice = start(&a_dir, "off", Some(&format!("http://{listen}")));
    let carol = start(&c_dir, "off", Some(&boot));
    let (a_id, c_id) = (alice.peer(), carol.peer());
    wait_for("alice and carol to link to the relay", || {
        alice.linked_to(&relay_id) && carol.linked_to(&relay_id)
    });
    assert_eq!(alice.status()["address"], "", "alice advertised an address");

    // /health answers with the node's id.
    let (status, body) = http_get(port, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["peer"], relay_id.as_str());
    assert_eq!(http_get(port, "/mesh/v1/id").1.trim(), relay_id);
    assert_eq!(http_get(port, "/nothing").0, 404);

    // Alice to Carol: neither can dial the other, so it crosses the relay (gossip), and the
    // receipt comes back the same way.
    let out = ok(&a_dir, &["send", &c_id, "hello carol", "--wait", "60"]);
    assert!(out.starts_with("delivered through the mesh"), "{out}");
    let inbox = ok(&c_dir, &["inbox"]);
    assert!(
        inbox.contains(&format!("from {a_id} (mesh): hello carol")),
        "{inbox}"
    );
    assert!(!carol.linked_to(&a_id), "carol linked to alice directly");

    // Dave takes relayed offers: he advertises the relay as the way to him, Alice finds
    // that in the DHT and links to him with WebRTC signaled through the relay.
    let dave = start(&d_dir, "off", Some(&boot));
    let d_id = dave.peer();
    assert_eq!(
        dave.status()["address"].as_str().unwrap(),
        format!("relay:{relay_id}")
    );
    wait_for("dave to link to the relay", || dave.linked_to(&relay_id));
    // Dave's address record may not be in the DHT yet when his link is up: Alice tries until
    // her lookup finds it.
    let mut out = String::new();
    wait_for("alice to find and link to dave", || {
        let o = meshd(&a_dir, &["connect", &d_id]);
        out = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    });
    assert!(out.contains(&format!("relay:{relay_id}")), "{out}");
    assert!(alice.linked_to(&d_id));
    wait_for("dave to see the link", || dave.linked_to(&a_id));
    let out_hi = ok(&a_dir, &["send", &d_id, "hi dave", "--wait", "30"]);
    assert!(
        out_hi.starts_with("delivered over the open link"),
        "{out_hi}"
    );
    // A file: encrypted to Dave, kept by Alice, offered in a message; Dave fetches it from
    // her and decrypts it into a file.
    let notes = tmp.path().join("notes.txt");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&notes, &content).unwrap();
    let out = ok(&a_dir, &["file", "send", &d_id, notes.to_str().unwrap()]);
    assert!(
        out.starts_with("offered \"notes.txt\" (200000 bytes"),
        "{out}"
    );
    let mut offer = String::new();
    wait_for("dave to get the file offer", || {
        offer = ok(&d_dir, &["inbox"]);
        offer.contains("file \"notes.txt\", 200000 bytes")
    });
    let offer_line = offer.lines().find(|l| l.contains("notes.txt")).unwrap();
    let msg = offer_line
        .rsplit("meshd file get ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    let got = tmp.path().join("got.txt");
    ok(&d_dir, &["file", "get", msg, "-o", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), content);
    // A message that is not a file offer, or no such message, fetches nothing.
    let hi_dave = out_hi.trim().rsplit(' ').next().unwrap();
    let not_offer = meshd(&d_dir, &["file", "get", hi_dave, "-o", "x"]);
    assert!(
        String::from_utf8_lossy(&not_offer.stderr).contains("not a file offer"),
        "{not_offer:?}"
    );
    assert!(
        !meshd(&d_dir, &["file", "get", &"0".repeat(64), "-o", "x"])
            .status
            .success()
    );
    // Relayed offers to Carol are refused: nobody links to her but through her own dials.
    let bad = meshd(
        &d_dir,
        &["connect", &c_id, "--address", &format!("relay:{relay_id}")],
    );
    assert!(!bad.status.success());
    dave.stop();

    // Invites: the relay's names its endpoint, so Carol links to it; Alice has no public
    // address, so hers names the relay to join through, and Alice stays reachable through the
    // mesh only.
    let link = ok(&r_dir, &["invite", "create", "--name", "relay"]);
    let out = ok(&c_dir, &["invite", "accept", link.trim()]);
    assert!(out.contains("linked to the inviter"), "{out}");
    let link = ok(&a_dir, &["invite", "create", "--name", "alice"]);
    let out = ok(&c_dir, &["invite", "accept", link.trim()]);
    assert!(out.contains(&format!("peer {a_id}")), "{out}");
    assert!(out.contains("joined the mesh"), "{out}");
    let bad = meshd(&c_dir, &["invite", "accept", "mesh://invite/AAAA"]);
    assert!(!bad.status.success());

    // DHT: a record Alice signs is stored at the relay and Carol finds it, verified.
    let out = ok(&a_dir, &["dht", "put", "profile", "alice in wonderland"]);
    assert!(out.contains("stored by"), "{out}");
    assert_eq!(
        ok(&c_dir, &["dht", "get", &a_id, "profile"]).trim(),
        "alice in wonderland"
    );
    ok(&r_dir, &["dht", "get", &a_id, "profile"]);

    // A blob Carol stores, and bad input to the control API.
    let file = tmp.path().join("file.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = ok(&c_dir, &["blob", "put", file.to_str().unwrap()]);
    let blob_id = out.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(blob_id.len(), 64, "{out}");
    let bad = meshd(&a_dir, &["send", "not-a-peer", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("peer id"));
    let bad = meshd(&a_dir, &["blob", "get", "00", "-o", "x"]);
    assert!(!bad.status.success());

    // Carol goes down; Alice writes to her meanwhile; Carol comes back from her data dir,
    // catches up by pull through the relay, still has her blob, and is still Carol.
    carol.stop();
    let out = ok(
        &a_dir,
        &["send", &c_id, "while you were away", "--wait", "0"],
    );
    assert!(out.starts_with("sent through the mesh"), "{out}");
    let carol = start(&c_dir, "off", Some(&boot));
    assert_eq!(carol.peer(), c_id);
    wait_for("carol to pull the message she missed", || {
        ok(&c_dir, &["inbox"]).contains("while you were away")
    });
    let back = tmp.path().join("back.bin");
    ok(
        &c_dir,
        &["blob", "get", &blob_id, "-o", back.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // Only messages after a sequence number, when asked.
    let inbox = ok(&c_dir, &["inbox"]);
    let seqs: Vec<u64> = inbox
        .lines()
        .filter_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(seqs.len(), inbox.lines().count(), "{inbox}");
    let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
    assert_eq!(ok(&c_dir, &["inbox", "--after", &last.to_string()]), "");
    let later = ok(&c_dir, &["inbox", "--after", &first.to_string()]);
    let (_, rest) = inbox.split_once('\n').unwrap();
    assert_eq!(
        later, rest,
        "everything after the first message, and only that"
    );
    // The relay does not hold Carol's blob: it must be told where to fetch it, then fetches
    // it from her chunk by verified chunk.
    let fetched = tmp.path().join("fetched.bin");
    let fetched_s = fetched.to_str().unwrap();
    let bad = meshd(&r_dir, &["blob", "get", &blob_id, "-o", fetched_s]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("?from=PEER"),
        "{bad:?}"
    );
    ok(
        &r_dir,
        &["blob", "get", &blob_id, "--from", &c_id, "-o", fetched_s],
    );
    assert_eq!(std::fs::read(&fetched).unwrap(), data);

    // The relay restarts on the same port: its DHT records survive, and the others find
    // their way back to it.
    relay.stop();
    let relay = start(&r_dir, &listen, None);
    assert_eq!(relay.peer(), relay_id);
    assert!(relay.status()["dht"]["records"].as_u64().unwrap() >= 1);
    wait_for("alice and carol to link to the relay again", || {
        alice.linked_to(&relay_id) && carol.linked_to(&relay_id)
    });
    let out = ok(&c_dir, &["send", &a_id, "welcome back", "--wait", "60"]);
    assert!(out.starts_with("delivered"), "{out}");

    // Activity the histograms need, then every metric of the dashboards and rules exists.
    ok(&r_dir, &["dht", "get", &a_id, "profile"]);
    ok(&a_dir, &["dht", "put", "status", "here"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let used = used_metrics(&root);
    assert!(used.len() > 30, "{used:?}");
    let mut missing = used.clone();
    wait_for("every metric to be exported", || {
        let (status, scrape) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        let exposed = exposed_metrics(&scrape);
        missing = used.difference(&exposed).cloned().collect();
        missing.is_empty()
    });
    assert!(missing.is_empty(), "not exported: {missing:?}");
    let (_, scrape) = http_get(port, "/metrics");
    assert!(scrape.contains("mesh_pinning_days_until_expiry "));

    alice.stop();
    carol.stop();
    relay.stop();
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("meshd.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = meshd(dir, &["run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
    std::fs::write(dir.join("meshd.toml"), "").unwrap();
    let out = meshd(dir, &["run", "--metrics", "everywhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public, off or host:port"));
    let out = meshd(dir, &["run", "--bootstrap", "https://example.org"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain http://"));
    let out = meshd(dir, &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `meshd run` running"));
    // `meshd id` makes the identity once and keeps it.
    let first = ok(dir, &["id"]);
    assert_eq!(ok(dir, &["id"]), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "identity.key is readable by others");
    }
}
