//! Helpers of the tests that run `meshd` processes: start, drive through sub-commands, wait.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_meshd");
/// Longest wait for anything the mesh does.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A running `meshd run`, killed if the test fails before stopping it.
pub(crate) struct Daemon {
    pub(crate) dir: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn meshd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("MESHD_CONFIG")
        .output()
        .unwrap()
}

/// Runs a sub-command that must succeed; returns its standard output.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let out = meshd(dir, args);
    assert!(
        out.status.success(),
        "meshd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn start(dir: &Path, listen: &str, bootstrap: Option<&str>) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["run", "--listen", listen])
        .env(
            "MESHD_LOG",
            std::env::var("MESHD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log.txt")).unwrap());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd.spawn().unwrap();
    let d = Daemon {
        dir: dir.to_path_buf(),
        child: Some(child),
    };
    wait_for(&format!("{} to start", dir.display()), || {
        meshd(dir, &["status"]).status.success()
    });
    d
}

impl Daemon {
    /// Stops the node through the control API; it must exit 0 (graceful shutdown).
    pub(crate) fn stop(mut self) {
        ok(&self.dir, &["stop"]);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "meshd exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "meshd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !self.dir.join("control.sock").exists(),
            "the control socket outlived the node"
        );
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(&self.dir, &["status"])).unwrap()
    }

    pub(crate) fn peer(&self) -> String {
        self.status()["peer"].as_str().unwrap().to_string()
    }

    pub(crate) fn linked_to(&self, peer: &str) -> bool {
        self.status()["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str() == Some(peer))
    }
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap();
    (status, body)
}
