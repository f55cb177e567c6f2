//! Transport benchmark: frames through our WebRTC `Connection` against a raw webrtc-rs data
//! channel carrying the same bytes, both over loopback in this process, in the same run.
//!
//! - round trip of a 1 KiB frame (echoed by the other side): median and 99th percentile;
//! - one-way throughput with 1 KiB and 64 KiB frames (the receiver counts them all).
//!
//! The raw baseline sends each frame as the same data-channel messages ours would (a 64 KiB
//! frame is four 16 KiB messages plus one), so the ratio is the cost of our link layer:
//! chunk headers, reassembly, frame parsing, the reader task and queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_crypto::Identity;
use mesh_transport::{Connection, Frame, ProtocolId, Transport};
use mesh_transport_webrtc::raw::RawChannel;
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::wire;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcConnection, WebRtcTransport};

use crate::timing::{Measurement, percentile, throughput_row};

/// How much to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Round trips timed.
    pub(crate) round_trips: usize,
    /// 1 KiB frames sent one way.
    pub(crate) small_frames: usize,
    /// 64 KiB frames sent one way.
    pub(crate) large_frames: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                round_trips: 50,
                small_frames: 500,
                large_frames: 20,
            }
        } else {
            Self {
                round_trips: 2000,
                small_frames: 20_000,
                large_frames: 1000,
            }
        }
    }
}

/// Both sides' results.
pub(crate) struct Report {
    pub(crate) ours: Vec<Measurement>,
    pub(crate) baseline: Vec<Measurement>,
}

const SMALL: usize = 1024;
const LARGE: usize = 64 * 1024;

fn rtt_rows(mut samples: Vec<Duration>) -> Vec<Measurement> {
    samples.sort();
    let n = samples.len() as u64;
    vec![
        Measurement {
            name: "1 KiB round trip, p50".into(),
            ns_per_op: percentile(&samples, 0.50),
            iterations: n,
            bytes_per_op: 0,
        },
        Measurement {
            name: "1 KiB round trip, p99".into(),
            ns_per_op: percentile(&samples, 0.99),
            iterations: n,
            bytes_per_op: 0,
        },
    ]
}

async fn ours_pair() -> Result<(WebRtcConnection, WebRtcConnection), String> {
    let a_id = Arc::new(Identity::generate());
    let b_id = Arc::new(Identity::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let b_sig = Arc::new(HttpSignaling::serve(listener).map_err(|e| e.to_string())?);
    let url = b_sig.url().ok_or("no URL")?;
    let ta = WebRtcTransport::new(
        a_id,
        Arc::new(HttpSignaling::client()),
        WebRtcConfig::loopback(),
    );
    let tb = WebRtcTransport::new(b_id.clone(), b_sig, WebRtcConfig::loopback());
    let (a, b) = tokio::join!(ta.dial(b_id.peer_id(), &url), tb.accept());
    // The transports only accept; the connections live on without them.
    Ok((a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?))
}

async fn run_ours(sizes: Sizes) -> Result<Vec<Measurement>, String> {
    let err = |e: mesh_transport::TransportError| e.to_string();
    let (a, b) = ours_pair().await?;
    let b = Arc::new(b);
    // Echo side.
    let echo = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut seen = 0usize;
            while let Ok(f) = b.recv().await {
                if f.protocol == ProtocolId::MESSAGING {
                    if b.send(f).await.is_err() {
                        break;
                    }
                } else {
                    seen += 1;
                    if f.protocol == ProtocolId::DHT
                        && b.send(Frame {
                            protocol: ProtocolId::DHT,
                            payload: seen.to_le_bytes().to_vec(),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        })
    };
    let mut samples = Vec::with_capacity(sizes.round_trips);
    let frame = Frame::new(ProtocolId::MESSAGING, vec![7; SMALL]).map_err(err)?;
    for i in 0..sizes.round_trips + 10 {
        let t = Instant::now();
        a.send(frame.clone()).await.map_err(err)?;
        a.recv().await.map_err(err)?;
        if i >= 10 {
            samples.push(t.elapsed());
        }
    }
    let mut rows = rtt_rows(samples);
    for (name, len, count) in [
        ("1 KiB frames one way", SMALL, sizes.small_frames),
        ("64 KiB frames one way", LARGE, sizes.large_frames),
    ] {
        let bulk = Frame::new(ProtocolId::BLOB, vec![1; len]).map_err(err)?;
        let t = Instant::now();
        for _ in 0..count - 1 {
            a.send(bulk.clone()).await.map_err(err)?;
        }
        // The last one asks for a receipt: the receiver has taken every frame before it.
        a.send(Frame::new(ProtocolId::DHT, vec![1; len]).map_err(err)?)
            .await
            .map_err(err)?;
        a.recv().await.map_err(err)?;
        rows.push(throughput_row(name, count, len, t.elapsed()));
    }
    a.close().await.map_err(err)?;
    echo.abort();
    Ok(rows)
}

async fn run_raw(sizes: Sizes) -> Result<Vec<Measurement>, String> {
    let err = |e: mesh_transport::TransportError| e.to_string();
    let (a, b) = RawChannel::pair(&WebRtcConfig::loopback())
        .await
        .map_err(err)?;
    let mut a = a;
    // Echo side: messages starting with 0 are echoed, 1 are counted, 2 ask for a receipt.
    let echo = tokio::spawn(async move {
        let mut b = b;
        while let Ok(m) = b.recv().await {
            if matches!(m.first(), Some(0 | 2)) && b.send(&m[..1]).await.is_err() {
                break;
            }
        }
    });
    let small: Vec<u8> = [&[0u8][..], &[7; SMALL]].concat();
    let mut samples = Vec::with_capacity(sizes.round_trips);
    for i in 0..sizes.round_trips + 10 {
        let t = Instant::now();
        a.send(&small).await.map_err(err)?;
        a.recv().await.map_err(err)?;
        if i >= 10 {
            samples.push(t.elapsed());
        }
    }
    let mut rows = rtt_rows(samples);
    for (name, len, count) in [
        ("1 KiB frames one way", SMALL, sizes.small_frames),
        ("64 KiB frames one way", LARGE, sizes.large_frames),
    ] {
        // The same messages ours sends: 16 KiB pieces, the last one shorter.
        let pieces: Vec<Vec<u8>> = (0..len.div_ceil(wire::CHUNK_DATA_LEN))
            .map(|i| {
                let n = wire::CHUNK_DATA_LEN.min(len - i * wire::CHUNK_DATA_LEN);
                [&[1u8][..], &vec![1; n]].concat()
            })
            .collect();
        let t = Instant::now();
        for k in 0..count {
            for (j, p) in pieces.iter().enumerate() {
                if k + 1 == count && j + 1 == pieces.len() {
                    let mut last = p.clone();
                    last[0] = 2;
                    a.send(&last).await.map_err(err)?;
                } else {
                    a.send(p).await.map_err(err)?;
                }
            }
        }
        a.recv().await.map_err(err)?;
        rows.push(throughput_row(name, count, len, t.elapsed()));
    }
    a.close().await;
    echo.abort();
    Ok(rows)
}

/// Runs both, ours first.
pub(crate) async fn run(sizes: Sizes) -> Result<Report, String> {
    let ours = run_ours(sizes).await?;
    let baseline = run_raw(sizes).await?;
    Ok(Report { ours, baseline })
}
