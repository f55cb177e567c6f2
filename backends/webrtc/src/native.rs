//! The native WebRTC transport over webrtc-rs 0.21 (its sans-IO `rtc` core driven by tokio).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::link::{Incoming, Link};
use mesh_transport::{
    Connection, ConnectionQuality, Frame, Transport, TransportError, TransportKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    RTCStatsReportEntry, StatsSelector,
};

use crate::session::{self, RtcPeer, Seen};
use crate::signaling::{IncomingOffer, Signaling};
use crate::wire::{
    self, RELIABLE_CHANNEL_ID, RELIABLE_CHANNEL_LABEL, Reassembler, UNRELIABLE_CHANNEL_ID,
    UNRELIABLE_CHANNEL_LABEL,
};

/// Settings of the native WebRTC transport.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// ICE server URLs (`stun:` / `turn:`). None by default: host candidates only, and no
    /// lookups that stall gathering when a server is unreachable.
    pub ice_servers: Vec<String>,
    /// Local UDP addresses to gather on. Default `0.0.0.0:0` (every interface, any port).
    pub udp_addrs: Vec<String>,
    /// Time for signaling, ICE, DTLS, SCTP and the mesh handshake together.
    pub connect_timeout: Duration,
    /// Bytes a data channel may have in flight before `send` waits (backpressure).
    pub send_buffer_limit: usize,
    /// Received frames buffered before the reader stops taking more (backpressure to SCTP).
    pub recv_queue: usize,
    /// Incoming offers answered at once; more wait in the signaling queue.
    pub max_concurrent_accepts: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            udp_addrs: vec!["0.0.0.0:0".into()],
            connect_timeout: Duration::from_secs(15),
            send_buffer_limit: 4 * 1024 * 1024,
            recv_queue: 64,
            max_concurrent_accepts: 16,
        }
    }
}

impl WebRtcConfig {
    /// Loopback only (`127.0.0.1`): tests, local demos.
    pub fn loopback() -> Self {
        Self {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..Self::default()
        }
    }
}

fn rtc_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unreachable(format!("webrtc: {e}"))
}

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

/// A peer connection with our two negotiated channels, before the handshake.
pub(crate) struct Peer {
    pub(crate) pc: Arc<dyn PeerConnection>,
    pub(crate) reliable: Arc<dyn DataChannel>,
    unreliable: Arc<dyn DataChannel>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Reliable-channel messages that arrived while waiting for something else.
    pub(crate) early: VecDeque<BytesMut>,
}

impl Peer {
    pub(crate) async fn open(config: &WebRtcConfig) -> Result<Self, TransportError> {
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let ice_servers = if config.ice_servers.is_empty() {
            Vec::new()
        } else {
            vec![RTCIceServer {
                urls: config.ice_servers.clone(),
                ..Default::default()
            }]
        };
        // The builder's future is ~20 KB: keep it off every caller's stack frame.
        let pc = Box::pin(
            PeerConnectionBuilder::new()
                .with_configuration(
                    RTCConfigurationBuilder::default()
                        .with_ice_servers(ice_servers)
                        .build(),
                )
                .with_handler(Arc::new(Handler {
                    gathered: gathered_tx,
                    state: state_tx,
                }))
                .with_udp_addrs(config.udp_addrs.clone())
                .with_data_channel_send_buffer_limit(config.send_buffer_limit)
                .build(),
        )
        .await
        .map_err(rtc_err)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let reliable = pc
            .create_data_channel(
                RELIABLE_CHANNEL_LABEL,
                Some(RTCDataChannelInit {
                    ordered: true,
                    negotiated: Some(RELIABLE_CHANNEL_ID),
                    ..Default::default()
                }),
            )
            .await
            .map_err(rtc_err)?;
        let unreliable = pc
            .create_data_channel(
                UNRELIABLE_CHANNEL_LABEL,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    negotiated: Some(UNRELIABLE_CHANNEL_ID),
                    ..Default::default()
                }),
            )
            .await
            .map_err(rtc_err)?;
        Ok(Self {
            pc,
            reliable,
            unreliable,
            gathered,
            state,
            early: VecDeque::new(),
        })
    }

    /// Sets `desc` as local description and returns the SDP once ICE gathering completed
    /// (no trickle: one message each way).
    pub(crate) async fn local_sdp(
        &mut self,
        desc: RTCSessionDescription,
    ) -> Result<String, TransportError> {
        self.pc.set_local_description(desc).await.map_err(rtc_err)?;
        self.gathered
            .wait_for(|done| *done)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or(TransportError::Closed)?
            .sdp)
    }

    pub(crate) async fn wait_open(&mut self) -> Result<(), TransportError> {
        for (dc, keep) in [
            (self.reliable.clone(), true),
            (self.unreliable.clone(), false),
        ] {
            loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnOpen) => break,
                    // Messages may overtake the open event on the answering side.
                    Some(DataChannelEvent::OnMessage(m)) if keep => self.early.push_back(m.data),
                    Some(DataChannelEvent::OnClose) | None => return Err(TransportError::Closed),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The SHA-256 fingerprints of the DTLS certificates both ends presented (local,
    /// remote), from the connection's statistics.
    async fn stats_fingerprints(&self) -> Result<([u8; 32], [u8; 32]), TransportError> {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let (local_id, remote_id) = report
            .iter()
            .find_map(|e| match e {
                RTCStatsReportEntry::Transport(t)
                    if !t.local_certificate_id.is_empty()
                        && !t.remote_certificate_id.is_empty() =>
                {
                    Some((
                        t.local_certificate_id.clone(),
                        t.remote_certificate_id.clone(),
                    ))
                }
                _ => None,
            })
            .ok_or(TransportError::Malformed(
                "no DTLS certificates in the statistics",
            ))?;
        let find = |id: &str| {
            report.iter().find_map(|e| match e {
                RTCStatsReportEntry::Certificate(c) if c.stats.id == id => {
                    wire::parse_fingerprint(&c.fingerprint)
                }
                _ => None,
            })
        };
        match (find(&local_id), find(&remote_id)) {
            (Some(l), Some(r)) => Ok((l, r)),
            _ => Err(TransportError::Malformed(
                "DTLS certificate without a SHA-256 fingerprint",
            )),
        }
    }
}

#[async_trait]
impl RtcPeer for Peer {
    async fn create_offer(&mut self) -> Result<String, TransportError> {
        let offer = self.pc.create_offer(None).await.map_err(rtc_err)?;
        self.local_sdp(offer).await
    }

    async fn create_answer(&mut self, offer: &str) -> Result<String, TransportError> {
        self.pc
            .set_remote_description(
                RTCSessionDescription::offer(offer.to_string()).map_err(rtc_err)?,
            )
            .await
            .map_err(rtc_err)?;
        let answer = self.pc.create_answer(None).await.map_err(rtc_err)?;
        self.local_sdp(answer).await
    }

    async fn accept_answer(&mut self, answer: &str) -> Result<(), TransportError> {
        self.pc
            .set_remote_description(
                RTCSessionDescription::answer(answer.to_string()).map_err(rtc_err)?,
            )
            .await
            .map_err(rtc_err)
    }

    async fn wait_open(&mut self) -> Result<(), TransportError> {
        Peer::wait_open(self).await
    }

    async fn fingerprints(&self) -> Result<([u8; 32], [u8; 32]), TransportError> {
        self.stats_fingerprints().await
    }

    async fn send_message(&self, message: &[u8]) -> Result<(), TransportError> {
        self.reliable
            .send(BytesMut::from(message))
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv_message(&mut self) -> Result<Vec<u8>, TransportError> {
        if let Some(m) = self.early.pop_front() {
            return Ok(m.to_vec());
        }
        loop {
            match self.reliable.poll().await {
                Some(DataChannelEvent::OnMessage(m)) => return Ok(m.data.to_vec()),
                Some(DataChannelEvent::OnClose) | None => return Err(TransportError::Closed),
                Some(_) => {}
            }
        }
    }
}

/// Dials `peer` through `signaling` and runs the handshake as initiator; returns the open
/// peer connection and the proven remote identity.
pub(crate) async fn dial_peer<S: Signaling + ?Sized>(
    identity: &Identity,
    signaling: &S,
    config: &WebRtcConfig,
    peer: PeerId,
    address: &str,
) -> Result<(Peer, PeerId), TransportError> {
    let mut p = Peer::open(config).await?;
    let remote = session::dial(
        &mut p,
        &TokioRuntime::current(),
        identity,
        signaling,
        peer,
        address,
    )
    .await?;
    Ok((p, remote))
}

struct Inner<S> {
    identity: Arc<Identity>,
    signaling: Arc<S>,
    config: WebRtcConfig,
    seen: Mutex<Seen>,
}

impl<S: Signaling> Inner<S> {
    async fn dial(&self, peer: PeerId, address: &str) -> Result<WebRtcConnection, TransportError> {
        let (p, remote) = dial_peer(
            &self.identity,
            self.signaling.as_ref(),
            &self.config,
            peer,
            address,
        )
        .await?;
        Ok(WebRtcConnection::start(p, remote, &self.config))
    }

    async fn answer(&self, incoming: IncomingOffer) -> Result<WebRtcConnection, TransportError> {
        let offer = session::check_offer(&self.identity, &self.seen, &incoming)?;
        let mut p = Peer::open(&self.config).await?;
        let remote = session::answer(&mut p, &self.identity, offer, incoming.responder).await?;
        Ok(WebRtcConnection::start(p, remote, &self.config))
    }
}

/// WebRTC links: dial through a [`Signaling`], accept the offers it delivers.
pub struct WebRtcTransport<S> {
    inner: Arc<Inner<S>>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<WebRtcConnection>>,
    task: tokio::task::JoinHandle<()>,
}

impl<S> Drop for WebRtcTransport<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S> std::fmt::Debug for WebRtcTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcTransport")
            .field("peer", &self.inner.identity.peer_id())
            .finish_non_exhaustive()
    }
}

impl<S: Signaling> WebRtcTransport<S> {
    /// A transport for `identity`, signaling through `signaling`. Starts answering the offers
    /// `signaling` receives at once; needs a tokio runtime.
    pub fn new(identity: Arc<Identity>, signaling: Arc<S>, config: WebRtcConfig) -> Self {
        let inner = Arc::new(Inner {
            identity,
            signaling,
            config,
            seen: Mutex::new(Seen::default()),
        });
        let (tx, rx) = mpsc::channel(inner.config.max_concurrent_accepts.max(1));
        let task = tokio::spawn(accept_loop(inner.clone(), tx));
        Self {
            inner,
            accepted: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    /// The signaling this transport uses.
    pub fn signaling(&self) -> &Arc<S> {
        &self.inner.signaling
    }

    /// This transport's identity.
    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }
}

async fn accept_loop<S: Signaling>(inner: Arc<Inner<S>>, out: mpsc::Sender<WebRtcConnection>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        inner.config.max_concurrent_accepts.max(1),
    ));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let incoming = match inner.signaling.incoming().await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, "webrtc: signaling stopped delivering offers");
                return;
            }
        };
        let inner = inner.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(inner.config.connect_timeout, inner.answer(incoming))
                .await
                .unwrap_or(Err(TransportError::Timeout));
            drop(permit);
            match result {
                Ok(conn) => {
                    let _ = out.send(conn).await;
                }
                Err(e) => tracing::debug!(error = %e, "webrtc: inbound connection refused"),
            }
        });
    }
}

#[async_trait]
impl<S: Signaling> Transport for WebRtcTransport<S> {
    type Connection = WebRtcConnection;

    fn kind(&self) -> TransportKind {
        TransportKind::WebRtc
    }

    async fn dial(&self, peer: PeerId, address: &str) -> Result<WebRtcConnection, TransportError> {
        tokio::time::timeout(
            self.inner.config.connect_timeout,
            self.inner.dial(peer, address),
        )
        .await
        .unwrap_or(Err(TransportError::Timeout))
    }

    async fn accept(&self) -> Result<WebRtcConnection, TransportError> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }
}

struct Shared {
    pc: Arc<dyn PeerConnection>,
    reliable: Arc<dyn DataChannel>,
    unreliable: Arc<dyn DataChannel>,
    link: Link,
    /// One frame's chunks at a time on the reliable channel.
    send_lock: tokio::sync::Mutex<()>,
    epoch: Instant,
}

impl Shared {
    async fn send_reliable(&self, encoded: &[u8]) -> Result<(), TransportError> {
        let _one_at_a_time = self.send_lock.lock().await;
        for chunk in wire::chunks(encoded) {
            self.reliable
                .send(BytesMut::from(&chunk[..]))
                .await
                .map_err(|_| self.link.fail(TransportError::Closed))?;
        }
        Ok(())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Handles one received encoded frame; `Some` for the caller's queue.
    async fn on_frame(&self, encoded: &[u8]) -> Option<Result<Frame, TransportError>> {
        match self.link.receive(encoded, self.now()) {
            Ok(Incoming::Frame(f)) => Some(Ok(f)),
            Ok(Incoming::Reply(pong)) => self.send_reliable(&pong).await.err().map(Err),
            Ok(Incoming::Nothing) => None,
            Ok(Incoming::Closed) => Some(Err(TransportError::Closed)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// An authenticated WebRTC link.
pub struct WebRtcConnection {
    remote: PeerId,
    shared: Arc<Shared>,
    frames: tokio::sync::Mutex<mpsc::Receiver<Result<Frame, TransportError>>>,
    readers: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for WebRtcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcConnection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for WebRtcConnection {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        let pc = self.shared.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

impl WebRtcConnection {
    fn start(p: Peer, remote: PeerId, config: &WebRtcConfig) -> Self {
        let shared = Arc::new(Shared {
            pc: p.pc,
            reliable: p.reliable,
            unreliable: p.unreliable,
            link: Link::plain(),
            send_lock: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
        });
        let (tx, rx) = mpsc::channel(config.recv_queue.max(1));
        let reliable = tokio::spawn(read_reliable(shared.clone(), p.early, p.state, tx.clone()));
        let unreliable = tokio::spawn(read_unreliable(shared.clone(), tx));
        Self {
            remote,
            shared,
            frames: tokio::sync::Mutex::new(rx),
            readers: [reliable, unreliable],
        }
    }
}

async fn read_reliable(
    shared: Arc<Shared>,
    mut early: VecDeque<BytesMut>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    tx: mpsc::Sender<Result<Frame, TransportError>>,
) {
    let mut reassembler = Reassembler::default();
    loop {
        let message = if let Some(m) = early.pop_front() {
            m
        } else {
            tokio::select! {
                event = shared.reliable.poll() => match event {
                    Some(DataChannelEvent::OnMessage(m)) => m.data,
                    Some(DataChannelEvent::OnClose) | None => break,
                    Some(_) => continue,
                },
                changed = state.changed() => {
                    let gone = changed.is_err() || matches!(
                        *state.borrow(),
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                            | RTCPeerConnectionState::Disconnected
                    );
                    if gone { break; }
                    continue;
                }
            }
        };
        let item = match reassembler.push(&message) {
            Ok(Some(encoded)) => shared.on_frame(&encoded).await,
            Ok(None) => None,
            Err(e) => Some(Err(shared.link.fail(e))),
        };
        if let Some(item) = item {
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    }
    shared.link.fail(TransportError::Closed);
    let _ = tx.send(Err(TransportError::Closed)).await;
    let _ = shared.pc.close().await;
}

async fn read_unreliable(shared: Arc<Shared>, tx: mpsc::Sender<Result<Frame, TransportError>>) {
    while let Some(event) = shared.unreliable.poll().await {
        let DataChannelEvent::OnMessage(m) = event else {
            continue;
        };
        let item = match wire::unreliable_frame(&m.data) {
            Ok(encoded) => shared.on_frame(encoded).await,
            Err(e) => Some(Err(shared.link.fail(e))),
        };
        match item {
            // Lossy traffic: dropped rather than waited for when the queue is full.
            Some(Ok(f)) => {
                let _ = tx.try_send(Ok(f));
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                let _ = shared.pc.close().await;
                return;
            }
            None => {}
        }
    }
}

#[async_trait]
impl Connection for WebRtcConnection {
    fn remote(&self) -> PeerId {
        self.remote
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebRtc
    }

    fn quality(&self) -> ConnectionQuality {
        self.shared.link.quality()
    }

    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let encoded = self.shared.link.seal_frame(&frame)?;
        self.shared.send_reliable(&encoded).await
    }

    async fn send_unreliable(&self, frame: Frame) -> Result<(), TransportError> {
        let message = wire::single_message(&self.shared.link.seal_frame(&frame)?)?;
        self.shared
            .unreliable
            .send(BytesMut::from(&message[..]))
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&self) -> Result<Frame, TransportError> {
        // Frames received before a close are still delivered; the readers end the queue with
        // the reason the link closed.
        self.frames
            .lock()
            .await
            .recv()
            .await
            .unwrap_or(Err(TransportError::Closed))
    }

    async fn ping(&self) -> Result<(), TransportError> {
        let ping = self.shared.link.ping(self.shared.now())?;
        self.shared.send_reliable(&ping).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        if let Ok(bye) = self.shared.link.close() {
            let _ = self.shared.send_reliable(&bye).await;
            // Let SCTP deliver the close message before tearing the association down.
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline
                && self.shared.reliable.outstanding_bytes().await.unwrap_or(0) > 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let _ = self.shared.pc.close().await;
        Ok(())
    }
}
