//! Crash consistency of the SQLite and redb stores: a child process applies batches in a loop
//! and is killed with SIGKILL at pseudo-random points, 50 times per backend. After each kill the
//! store is reopened: every acknowledged batch must be present in full, and no batch partly.

#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // test code

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const KILLS: u32 = 50;

/// xorshift64*: deterministic "random" kill points, reproducible from the seed in the output.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

async fn crash_loop(backend: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("crash.{backend}"));
    let mut rng = Rng(seed);
    let mut next_batch = 0u64;
    let mut total_acked = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kv-crash-writer"))
            .args([backend, path.to_str().unwrap(), &next_batch.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a random moment: sometimes while opening, mostly while writing. Every
        // fifth round counts its delay from the first acknowledged batch rather than from the
        // start, so that kills in the middle of writing happen however slow the machine is to
        // start the writer and open its store.
        let delay = Duration::from_millis(rng.next() % 150);
        let after_first_ack = round % 5 == 4;
        let mut last_ack: Option<u64> = None;
        let deadline = tokio::time::sleep(if after_first_ack {
            // Waiting for the first batch: bounded, a writer that never acknowledges fails.
            Duration::from_secs(60)
        } else {
            delay
        });
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    assert!(
                        !after_first_ack || last_ack.is_some(),
                        "{backend} round {round}: no batch acknowledged in 60 s"
                    );
                    break;
                }
                line = lines.next_line() => match line.unwrap() {
                    Some(l) if l.starts_with("ack ") => {
                        if after_first_ack && last_ack.is_none() {
                            deadline.as_mut().reset(tokio::time::Instant::now() + delay);
                        }
                        last_ack = Some(l[4..].parse().unwrap());
                    }
                    Some(_) => {}
                    None => panic!("{backend}: writer exited early in round {round}: {:?}", child.wait().await),
                },
            }
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        // Acks printed before the kill but not read yet still count as acknowledged.
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(n) = l.strip_prefix("ack ") {
                last_ack = Some(n.parse().unwrap());
            }
        }
        let store = mesh_tests::crash::open(backend, &path).await.unwrap();
        let present = mesh_tests::crash::complete_batches(store.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{backend} round {round}: {e}"));
        store.close().await.unwrap();
        drop(store);
        if let Some(acked) = last_ack {
            total_acked += acked + 1 - next_batch;
            for n in 0..=acked {
                assert!(
                    present.binary_search(&n).is_ok(),
                    "{backend} round {round} (seed {seed}): acknowledged batch {n} lost"
                );
            }
        }
        // Batches are written in order, so what is present is a prefix 0..k.
        assert!(
            present.iter().enumerate().all(|(i, n)| *n == i as u64),
            "{backend} round {round}: gap in {present:?}"
        );
        next_batch = present.len() as u64;
    }
    println!(
        "{backend}: {KILLS} kills, {total_acked} acknowledged batches, all present and whole (seed {seed})"
    );
    assert!(
        total_acked > 0,
        "{backend}: the writer never got a batch in; the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    crash_loop("sqlite", 0x5eed_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_survives_sigkill() {
    crash_loop("redb", 0x5eed_0002).await;
}
