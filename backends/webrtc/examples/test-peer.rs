//! A native peer for cross-platform tests: serves HTTP signaling on loopback, prints
//! `READY <signaling url> <peer id>`, accepts WebRTC links and echoes every frame back, until
//! stdin closes or 5 minutes pass. The echo's channel is chosen by the payload's first byte,
//! not by the channel the frame came on: `0xff` goes back on the unreliable channel, anything
//! else (and an empty payload) on the reliable one.
//!
//! `cargo xtask ci` starts it before the browser tests (`tests/browser.rs`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::Identity;
use mesh_transport::{Connection, Transport};
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::io::AsyncReadExt as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let identity = Arc::new(Identity::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let signaling = Arc::new(HttpSignaling::serve(listener)?);
    let url = signaling.url().unwrap_or_default();
    let transport = WebRtcTransport::new(identity.clone(), signaling, WebRtcConfig::loopback());
    println!("READY {url} {}", identity.peer_id());
    std::io::stdout().flush()?;
    let serve = async {
        loop {
            let conn = match transport.accept().await {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    eprintln!("test-peer: accept: {e}");
                    return;
                }
            };
            eprintln!("test-peer: link from {}", conn.remote());
            tokio::spawn(async move {
                while let Ok(frame) = conn.recv().await {
                    // A payload starting with 0xff comes back on the unreliable channel,
                    // any other on the reliable one, whichever channel it came on. A 0xff
                    // frame larger than one unreliable message (payload over 16,381 bytes)
                    // cannot be echoed: the send fails, which ends that link.
                    let result = if frame.payload.first() == Some(&0xff) {
                        conn.send_unreliable(frame).await
                    } else {
                        conn.send(frame).await
                    };
                    if result.is_err() {
                        break;
                    }
                }
                eprintln!("test-peer: link from {} ended", conn.remote());
            });
        }
    };
    let stdin_closed = async {
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = serve => {}
        () = stdin_closed => {}
        () = tokio::time::sleep(Duration::from_secs(300)) => eprintln!("test-peer: time limit"),
    }
    Ok(())
}
