//! Social recovery between `meshd` processes, driven through `meshd recovery ...` as users
//! would: two guardians agree to guard the owner's key, the owner shares it (any 2 of 2), the
//! owner's device is "lost", a new device asks the guardians, each guardian compares the code
//! its request shows with the one the new device printed for it and approves, and the new
//! device ends up with exactly the owner's identity key. On the way: refusals of bad input
//! (threshold above the guardians, unknown peers, decisions on requests that do not exist).
//!
//! Topology: a relay with a public endpoint; everyone else bootstraps from it and is reached
//! through it (found in the DHT, WebRTC signaled through the relay).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use common::{free_port, meshd, ok, start, wait_for};

/// The code the new device printed for `guardian` (`  <guardian>  code <code>` lines).
fn code_for(started: &str, guardian: &str) -> String {
    started
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix(guardian)
                .and_then(|rest| rest.trim().strip_prefix("code "))
        })
        .unwrap_or_else(|| panic!("no code for {guardian} in:\n{started}"))
        .trim()
        .to_string()
}

/// The (request id, owner, code) of each request `meshd recovery requests` lists.
fn requests(listing: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = listing.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(id) = l.strip_prefix("request ") {
            let owner = lines[i + 1].trim().strip_prefix("for the key of ").unwrap();
            let code = lines[i + 3]
                .trim()
                .strip_prefix("code ")
                .and_then(|c| c.split(':').next())
                .unwrap();
            out.push((id.to_string(), owner.to_string(), code.to_string()));
        }
    }
    out
}

fn fails_with(dir: &std::path::Path, args: &[&str], reason: &str) {
    let out = meshd(dir, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "meshd {args:?} succeeded");
    assert!(err.contains(reason), "meshd {args:?}: {err}");
}

#[test]
fn a_lost_key_comes_back_from_two_guardians_through_meshd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let listen = format!("127.0.0.1:{}", free_port());
    let relay = start(&dir("relay"), &listen, None);
    let boot = format!("{}@http://{listen}/mesh/v1/signal", relay.peer());
    let owner = start(&dir("owner"), "off", Some(&boot));
    let g1 = start(&dir("g1"), "off", Some(&boot));
    let g2 = start(&dir("g2"), "off", Some(&boot));
    let (o_id, g1_id, g2_id) = (owner.peer(), g1.peer(), g2.peer());
    let owner_key = std::fs::read(dir("owner").join("identity.key")).unwrap();

    // The guardians agree first; a guardian can also take it back.
    for g in [&g1, &g2] {
        let out = ok(&g.dir, &["recovery", "guard", &o_id]);
        assert_eq!(
            out.trim(),
            format!("will keep a share of {o_id}'s key when it sends one")
        );
    }
    let out = ok(&g2.dir, &["recovery", "guard", &relay.peer(), "--stop"]);
    assert_eq!(
        out.trim(),
        format!("no longer guarding {}'s key", relay.peer())
    );
    fails_with(&g1.dir, &["recovery", "guard", "nobody"], "");
    // Nothing waits yet.
    assert_eq!(
        ok(&g1.dir, &["recovery", "requests"]).trim(),
        "no requests waiting"
    );

    // Bad setups are refused before anything is sent.
    fails_with(
        &owner.dir,
        &["recovery", "setup", "--threshold", "1", "not-a-peer"],
        "",
    );
    wait_for("the guardians to be in the DHT", || {
        meshd(
            &owner.dir,
            &["recovery", "setup", "--threshold", "2", &g1_id, &g2_id],
        )
        .status
        .success()
    });
    fails_with(
        &owner.dir,
        &["recovery", "setup", "--threshold", "3", &g1_id, &g2_id],
        "threshold 3 of 2",
    );
    wait_for("both guardians to acknowledge", || {
        ok(&owner.dir, &["recovery", "status"]).contains("Protected")
    });
    for g in [&g1, &g2] {
        wait_for("the guardian to log its share", || {
            ok(&g.dir, &["recovery", "status"]).contains("ShareStored")
        });
    }

    // The owner's device is lost; a new device (a new identity) asks for the key.
    owner.stop();
    let new = start(&dir("new"), "off", Some(&boot));
    assert_ne!(new.peer(), o_id);
    fails_with(
        &new.dir,
        &["recovery", "start", "--owner", "not-a-peer", &g1_id],
        "",
    );
    let started = ok(
        &new.dir,
        &[
            "recovery", "start", "--owner", &o_id, &g1_id, &g2_id, "--wait", "0",
        ],
    );
    assert!(
        started.starts_with("asked the guardians; tell each one the code shown for them:"),
        "{started}"
    );

    // Each guardian sees the request with the code the new device shows for it, and approves.
    for (g, g_id) in [(&g1, &g1_id), (&g2, &g2_id)] {
        let mut waiting = Vec::new();
        wait_for("the request to reach the guardian", || {
            waiting = requests(&ok(&g.dir, &["recovery", "requests"]));
            !waiting.is_empty()
        });
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        let (request, for_owner, code) = &waiting[0];
        assert_eq!(for_owner, &o_id);
        assert_eq!(code, &code_for(&started, g_id), "codes differ");
        assert_eq!(
            ok(&g.dir, &["recovery", "approve", request]).trim(),
            "approved"
        );
        // Answered: it is gone, and deciding on it again is refused as unknown.
        assert_eq!(
            ok(&g.dir, &["recovery", "requests"]).trim(),
            "no requests waiting"
        );
        fails_with(
            &g.dir,
            &["recovery", "deny", request],
            "expired or replaced",
        );
    }
    fails_with(&g1.dir, &["recovery", "approve", "zz"], "");

    // The new device holds exactly the owner's key.
    let mut status = String::new();
    wait_for("the key to be recovered", || {
        status = ok(&new.dir, &["recovery", "status"]);
        status.contains(&format!("recovered {o_id} into "))
    });
    let file = dir("new").join("recovered").join(format!("{o_id}.key"));
    assert!(status.contains(&file.display().to_string()), "{status}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        owner_key,
        "the recovered key is not the owner's"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the recovered key is readable by others");
    }
    // Starting again for the same owner waits and reports it recovered.
    let again = ok(
        &new.dir,
        &[
            "recovery", "start", "--owner", &o_id, &g1_id, &g2_id, "--wait", "30",
        ],
    );
    assert!(
        again.contains(&format!("recovered: the key is in {}", file.display())),
        "{again}"
    );
    for g in [&g1, &g2] {
        assert!(
            ok(&g.dir, &["recovery", "status"]).contains("Released"),
            "the guardian did not log the release"
        );
    }

    new.stop();
    g1.stop();
    g2.stop();
    relay.stop();
}
