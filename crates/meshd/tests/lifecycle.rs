//! How an operator's service manager runs `meshd`: SIGTERM stops it gracefully (exit 0, control
//! socket removed, state kept), a sealed identity needs its passphrase, and a second node on
//! the same data directory is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, WAIT, free_port, meshd, ok, start};

#[test]
fn sigterm_stops_the_node_gracefully_and_it_restarts_as_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node = start(&dir, &listen, None);
    let id = node.peer();
    let file = tmp.path().join("kept.txt");
    std::fs::write(&file, "kept across a restart").unwrap();
    let out = ok(&dir, &["blob", "put", file.to_str().unwrap()]);
    let blob = out.split_whitespace().nth(1).unwrap().to_string();
    let mut child = node.child.take().unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "meshd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "meshd exited with {status} on SIGTERM");
    assert!(
        !dir.join("control.sock").exists(),
        "the control socket outlived the node"
    );
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("stopped"), "{log}");
    // Same identity and the blob it stored, from its files.
    let again = start(&dir, &listen, None);
    assert_eq!(again.peer(), id);
    let back = tmp.path().join("back.txt");
    ok(&dir, &["blob", "get", &blob, "-o", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "kept across a restart"
    );
    // One node per data directory.
    let second = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["run", "--listen", "off"])
        .env_remove("MESHD_CONFIG")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second node ran on the same data"
    );
    // ... and it left the running node's control socket alone.
    assert_eq!(again.peer(), id);
    again.stop();
}

/// `meshd id` with `MESHD_PASSPHRASE` set to `passphrase`.
fn id_with(dir: &std::path::Path, passphrase: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .arg("id")
        .env("MESHD_PASSPHRASE", passphrase)
        .env_remove("MESHD_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn a_sealed_identity_needs_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let made = id_with(dir, "correct horse");
    assert!(made.status.success(), "{made:?}");
    let id = String::from_utf8(made.stdout).unwrap();
    assert_ne!(
        std::fs::metadata(dir.join("identity.key")).unwrap().len(),
        32,
        "the seed was stored in the clear"
    );
    let without = meshd(dir, &["id"]);
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("set MESHD_PASSPHRASE"),
        "{without:?}"
    );
    let wrong = id_with(dir, "wrong horse");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{wrong:?}"
    );
    let right = id_with(dir, "correct horse");
    assert_eq!(String::from_utf8(right.stdout).unwrap(), id);
}

#[test]
fn pin_prints_each_files_pin_and_fails_on_a_file_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mesh.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k, junk) = (
        tmp.path().join("cert.pem"),
        tmp.path().join("key.pem"),
        tmp.path().join("junk"),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::write(&junk, "not a key").unwrap();
    let expected = mesh_platform::pinning::pin_to_string(
        &mesh_platform::pinning::pin_of_certificate(cert.der()).unwrap(),
    );
    let out = ok(
        tmp.path(),
        &["pin", c.to_str().unwrap(), k.to_str().unwrap()],
    );
    assert_eq!(
        out,
        format!(
            "{expected}  {} (certificate)\n{expected}  {} (private key)\n",
            c.display(),
            k.display()
        )
    );
    let bad = meshd(
        tmp.path(),
        &["pin", c.to_str().unwrap(), junk.to_str().unwrap()],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains(&expected));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("junk"), "{err}");
    assert!(err.contains("some files gave no pin"), "{err}");
}
