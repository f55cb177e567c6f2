//! The browser WebRTC transport: the browser's `RTCPeerConnection` through web-sys, behind the
//! same traits and running the same session steps as the native one.
//!
//! The channel binding comes from the SDP fingerprints: the browser itself refuses a DTLS peer
//! whose certificate does not match the remote description's fingerprint, so the two SDP
//! fingerprints are the certificates in use.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use js_sys::{Array, Object, Reflect, Uint8Array};
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::{Runtime, WasmRuntime};
use mesh_transport::link::{Incoming, Link};
use mesh_transport::{
    Connection, ConnectionQuality, Frame, Transport, TransportError, TransportKind,
};
use tokio::sync::mpsc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelInit, RtcDataChannelState,
    RtcDataChannelType, RtcIceGatheringState, RtcPeerConnection, RtcSdpType,
    RtcSessionDescriptionInit,
};

use crate::session::{self, RtcPeer, Seen};
use crate::signaling::{IncomingOffer, Signaling, SignalingError};
use crate::wire::{
    self, RELIABLE_CHANNEL_ID, RELIABLE_CHANNEL_LABEL, Reassembler, UNRELIABLE_CHANNEL_ID,
    UNRELIABLE_CHANNEL_LABEL,
};

/// Settings of the browser transport.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// ICE server URLs; none by default.
    pub ice_servers: Vec<String>,
    /// Time for signaling, ICE, DTLS, SCTP and the handshake together.
    pub connect_timeout: Duration,
    /// Bytes a channel may have buffered before `send` waits (the browser's `bufferedAmount`).
    pub send_buffer_limit: u32,
    /// Messages received but not yet read before the link is closed as overrun (the browser
    /// delivers messages whether or not anyone reads them).
    pub max_queued_messages: usize,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            send_buffer_limit: 4 * 1024 * 1024,
            max_queued_messages: 4096,
        }
    }
}

fn js_err(what: &str, e: &JsValue) -> TransportError {
    TransportError::Unreachable(format!("{what}: {e:?}"))
}

const POLL: Duration = Duration::from_millis(5);

/// One data channel and the messages it delivered.
struct Channel {
    dc: RtcDataChannel,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    overrun: Rc<Cell<bool>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.dc.set_onmessage(None);
        self.dc.set_onclose(None);
    }
}

impl Channel {
    fn new(pc: &RtcPeerConnection, label: &str, init: &RtcDataChannelInit, cap: usize) -> Self {
        let dc = pc.create_data_channel_with_data_channel_dict(label, init);
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);
        let (tx, rx) = mpsc::unbounded_channel();
        let tx = Rc::new(RefCell::new(Some(tx)));
        let queued = Rc::new(Cell::new(0usize));
        let overrun = Rc::new(Cell::new(false));
        let on_message = {
            let (tx, overrun) = (tx.clone(), overrun.clone());
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                let data = Uint8Array::new(&e.data()).to_vec();
                let mut slot = tx.borrow_mut();
                if let Some(t) = slot.as_ref() {
                    queued.set(queued.get() + 1);
                    if queued.get() > cap {
                        // Nobody reads: end the link rather than buffer without bound.
                        overrun.set(true);
                        slot.take();
                    } else if t.send(data).is_err() {
                        slot.take();
                    }
                }
            })
        };
        let on_close = {
            let tx = tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                tx.borrow_mut().take();
            })
        };
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Self {
            dc,
            rx: tokio::sync::Mutex::new(rx),
            overrun,
            _on_message: on_message,
            _on_close: on_close,
        }
    }

    async fn recv(&self) -> Result<Vec<u8>, TransportError> {
        let m = self.rx.lock().await.recv().await;
        m.ok_or(if self.overrun.get() {
            TransportError::Malformed("receive queue overrun")
        } else {
            TransportError::Closed
        })
    }

    fn send(&self, message: &[u8]) -> Result<(), TransportError> {
        self.dc
            .send_with_u8_array(message)
            .map_err(|_| TransportError::Closed)
    }

    async fn writable(&self, limit: u32) -> Result<(), TransportError> {
        let rt = WasmRuntime::new();
        while self.dc.buffered_amount() > limit {
            if self.dc.ready_state() != RtcDataChannelState::Open {
                return Err(TransportError::Closed);
            }
            rt.sleep(POLL).await;
        }
        Ok(())
    }

    async fn wait_open(&self) -> Result<(), TransportError> {
        let rt = WasmRuntime::new();
        loop {
            match self.dc.ready_state() {
                RtcDataChannelState::Open => return Ok(()),
                RtcDataChannelState::Connecting => rt.sleep(POLL).await,
                _ => return Err(TransportError::Closed),
            }
        }
    }
}

fn init(id: u16, reliable: bool) -> RtcDataChannelInit {
    let init = RtcDataChannelInit::new();
    init.set_negotiated(true);
    init.set_id(id);
    init.set_ordered(reliable);
    if !reliable {
        init.set_max_retransmits(0);
    }
    init
}

/// A browser peer connection with our two channels.
struct Peer {
    pc: RtcPeerConnection,
    reliable: Channel,
    unreliable: Channel,
    config: BrowserConfig,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.close();
    }
}

impl Peer {
    fn open(config: &BrowserConfig) -> Result<Self, TransportError> {
        let rtc = RtcConfiguration::new();
        if !config.ice_servers.is_empty() {
            let server = Object::new();
            let urls: Array = config
                .ice_servers
                .iter()
                .map(|u| JsValue::from_str(u))
                .collect();
            Reflect::set(&server, &"urls".into(), &urls).map_err(|e| js_err("ICE servers", &e))?;
            rtc.set_ice_servers(&Array::of1(&server));
        }
        let pc = RtcPeerConnection::new_with_configuration(&rtc)
            .map_err(|e| js_err("RTCPeerConnection", &e))?;
        let cap = config.max_queued_messages.max(1);
        let reliable = Channel::new(
            &pc,
            RELIABLE_CHANNEL_LABEL,
            &init(RELIABLE_CHANNEL_ID, true),
            cap,
        );
        let unreliable = Channel::new(
            &pc,
            UNRELIABLE_CHANNEL_LABEL,
            &init(UNRELIABLE_CHANNEL_ID, false),
            cap,
        );
        Ok(Self {
            pc,
            reliable,
            unreliable,
            config: config.clone(),
        })
    }

    async fn set_local(&self, kind: RtcSdpType, made: JsValue) -> Result<String, TransportError> {
        let sdp = Reflect::get(&made, &"sdp".into())
            .ok()
            .and_then(|v| v.as_string())
            .ok_or(TransportError::Malformed("description without SDP"))?;
        let desc = RtcSessionDescriptionInit::new(kind);
        desc.set_sdp(&sdp);
        JsFuture::from(self.pc.set_local_description(&desc))
            .await
            .map_err(|e| js_err("setLocalDescription", &e))?;
        let rt = WasmRuntime::new();
        while self.pc.ice_gathering_state() != RtcIceGatheringState::Complete {
            rt.sleep(POLL).await;
        }
        self.pc
            .local_description()
            .map(|d| d.sdp())
            .ok_or(TransportError::Closed)
    }

    async fn set_remote(&self, kind: RtcSdpType, sdp: &str) -> Result<(), TransportError> {
        let desc = RtcSessionDescriptionInit::new(kind);
        desc.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&desc))
            .await
            .map(|_| ())
            .map_err(|e| js_err("setRemoteDescription", &e))
    }
}

#[async_trait(?Send)]
impl RtcPeer for Peer {
    async fn create_offer(&mut self) -> Result<String, TransportError> {
        let offer = JsFuture::from(self.pc.create_offer())
            .await
            .map_err(|e| js_err("createOffer", &e))?;
        self.set_local(RtcSdpType::Offer, offer).await
    }

    async fn create_answer(&mut self, offer: &str) -> Result<String, TransportError> {
        self.set_remote(RtcSdpType::Offer, offer).await?;
        let answer = JsFuture::from(self.pc.create_answer())
            .await
            .map_err(|e| js_err("createAnswer", &e))?;
        self.set_local(RtcSdpType::Answer, answer).await
    }

    async fn accept_answer(&mut self, answer: &str) -> Result<(), TransportError> {
        self.set_remote(RtcSdpType::Answer, answer).await
    }

    async fn wait_open(&mut self) -> Result<(), TransportError> {
        self.reliable.wait_open().await?;
        self.unreliable.wait_open().await
    }

    async fn fingerprints(&self) -> Result<([u8; 32], [u8; 32]), TransportError> {
        let sdp = |d: Option<web_sys::RtcSessionDescription>| {
            d.and_then(|d| wire::sdp_fingerprint(&d.sdp()))
                .ok_or(TransportError::Malformed(
                    "SDP without a SHA-256 fingerprint",
                ))
        };
        Ok((
            sdp(self.pc.local_description())?,
            sdp(self.pc.remote_description())?,
        ))
    }

    async fn send_message(&self, message: &[u8]) -> Result<(), TransportError> {
        self.reliable
            .writable(self.config.send_buffer_limit)
            .await?;
        self.reliable.send(message)
    }

    async fn recv_message(&mut self) -> Result<Vec<u8>, TransportError> {
        self.reliable.recv().await
    }
}

struct Inner<S> {
    identity: Rc<Identity>,
    signaling: Rc<S>,
    config: BrowserConfig,
    seen: Mutex<Seen>,
}

async fn with_timeout<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let rt = WasmRuntime::new();
    tokio::select! {
        r = f => r,
        () = rt.sleep(limit) => Err(TransportError::Timeout),
    }
}

impl<S: Signaling> Inner<S> {
    async fn dial(&self, peer: PeerId, address: &str) -> Result<BrowserConnection, TransportError> {
        let mut p = Peer::open(&self.config)?;
        let remote = session::dial(
            &mut p,
            &WasmRuntime::new(),
            &self.identity,
            self.signaling.as_ref(),
            peer,
            address,
        )
        .await?;
        Ok(BrowserConnection::new(p, remote))
    }

    async fn answer(&self, incoming: IncomingOffer) -> Result<BrowserConnection, TransportError> {
        let offer = session::check_offer(&self.identity, &self.seen, &incoming)?;
        let mut p = Peer::open(&self.config)?;
        let remote = session::answer(&mut p, &self.identity, offer, incoming.responder).await?;
        Ok(BrowserConnection::new(p, remote))
    }
}

/// WebRTC links in the browser: dial through a [`Signaling`], accept what it delivers.
pub struct BrowserTransport<S> {
    inner: Rc<Inner<S>>,
    accepted: tokio::sync::Mutex<mpsc::UnboundedReceiver<BrowserConnection>>,
    stop: Rc<Cell<bool>>,
}

impl<S> Drop for BrowserTransport<S> {
    fn drop(&mut self) {
        self.stop.set(true);
    }
}

impl<S> std::fmt::Debug for BrowserTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTransport")
            .field("peer", &self.inner.identity.peer_id())
            .finish_non_exhaustive()
    }
}

impl<S: Signaling> BrowserTransport<S> {
    /// A transport for `identity` over `signaling`; starts answering the offers it receives.
    pub fn new(identity: Rc<Identity>, signaling: Rc<S>, config: BrowserConfig) -> Self {
        let inner = Rc::new(Inner {
            identity,
            signaling,
            config,
            seen: Mutex::new(Seen::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Rc::new(Cell::new(false));
        {
            let (inner, stop) = (inner.clone(), stop.clone());
            wasm_bindgen_futures::spawn_local(async move {
                while !stop.get() {
                    let Ok(incoming) = inner.signaling.incoming().await else {
                        return;
                    };
                    let (inner, tx) = (inner.clone(), tx.clone());
                    wasm_bindgen_futures::spawn_local(async move {
                        let limit = inner.config.connect_timeout;
                        match with_timeout(limit, inner.answer(incoming)).await {
                            Ok(c) => {
                                let _ = tx.send(c);
                            }
                            Err(e) => tracing::debug!(error = %e, "webrtc: inbound refused"),
                        }
                    });
                }
            });
        }
        Self {
            inner,
            accepted: tokio::sync::Mutex::new(rx),
            stop,
        }
    }
}

#[async_trait(?Send)]
impl<S: Signaling> Transport for BrowserTransport<S> {
    type Connection = BrowserConnection;

    fn kind(&self) -> TransportKind {
        TransportKind::WebRtc
    }

    async fn dial(&self, peer: PeerId, address: &str) -> Result<BrowserConnection, TransportError> {
        with_timeout(
            self.inner.config.connect_timeout,
            self.inner.dial(peer, address),
        )
        .await
    }

    async fn accept(&self) -> Result<BrowserConnection, TransportError> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }
}

/// An authenticated WebRTC link in the browser.
pub struct BrowserConnection {
    remote: PeerId,
    peer: Peer,
    link: Link,
    reassembler: RefCell<Reassembler>,
    runtime: WasmRuntime,
}

impl std::fmt::Debug for BrowserConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserConnection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl BrowserConnection {
    fn new(peer: Peer, remote: PeerId) -> Self {
        Self {
            remote,
            peer,
            link: Link::plain(),
            reassembler: RefCell::new(Reassembler::default()),
            runtime: WasmRuntime::new(),
        }
    }

    async fn send_encoded(&self, encoded: &[u8]) -> Result<(), TransportError> {
        // One frame's chunks go out back to back: the browser's send is synchronous.
        self.peer
            .reliable
            .writable(self.peer.config.send_buffer_limit)
            .await?;
        for chunk in wire::chunks(encoded) {
            self.peer
                .reliable
                .send(&chunk)
                .map_err(|e| self.link.fail(e))?;
        }
        Ok(())
    }

    /// Handles one encoded frame; `Some` for the caller.
    async fn on_frame(&self, encoded: &[u8]) -> Option<Result<Frame, TransportError>> {
        match self.link.receive(encoded, self.runtime.monotonic()) {
            Ok(Incoming::Frame(f)) => Some(Ok(f)),
            Ok(Incoming::Reply(pong)) => self.send_encoded(&pong).await.err().map(Err),
            Ok(Incoming::Nothing) => None,
            Ok(Incoming::Closed) => Some(Err(TransportError::Closed)),
            Err(e) => Some(Err(e)),
        }
    }

    fn hang_up(&self, e: TransportError) -> TransportError {
        self.link.fail(TransportError::Closed);
        self.peer.pc.close();
        e
    }
}

#[async_trait(?Send)]
impl Connection for BrowserConnection {
    fn remote(&self) -> PeerId {
        self.remote
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebRtc
    }

    fn quality(&self) -> ConnectionQuality {
        self.link.quality()
    }

    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let encoded = self.link.seal_frame(&frame)?;
        self.send_encoded(&encoded).await
    }

    async fn send_unreliable(&self, frame: Frame) -> Result<(), TransportError> {
        let message = wire::single_message(&self.link.seal_frame(&frame)?)?;
        self.peer.unreliable.send(&message)
    }

    async fn recv(&self) -> Result<Frame, TransportError> {
        loop {
            if self.link.is_closed() {
                return Err(TransportError::Closed);
            }
            let item = tokio::select! {
                m = self.peer.reliable.recv() => match m {
                    Ok(m) => {
                        let pushed = self.reassembler.borrow_mut().push(&m);
                        match pushed {
                            Ok(Some(encoded)) => self.on_frame(&encoded).await,
                            Ok(None) => None,
                            Err(e) => Some(Err(e)),
                        }
                    }
                    Err(e) => Some(Err(e)),
                },
                m = self.peer.unreliable.recv() => match m {
                    Ok(m) => match wire::unreliable_frame(&m) {
                        Ok(encoded) => self.on_frame(encoded).await,
                        Err(e) => Some(Err(e)),
                    },
                    Err(e) => Some(Err(e)),
                },
            };
            match item {
                Some(Ok(f)) => return Ok(f),
                Some(Err(e)) => return Err(self.hang_up(e)),
                None => {}
            }
        }
    }

    async fn ping(&self) -> Result<(), TransportError> {
        let ping = self.link.ping(self.runtime.monotonic())?;
        self.send_encoded(&ping).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        if let Ok(bye) = self.link.close() {
            let _ = self.send_encoded(&bye).await;
            // Let SCTP deliver the close message before the connection goes.
            for _ in 0..200 {
                if self.peer.reliable.dc.buffered_amount() == 0 {
                    break;
                }
                self.runtime.sleep(POLL).await;
            }
        }
        self.peer.pc.close();
        Ok(())
    }
}

/// `fetch` POST for [`crate::signaling::http::HttpSignaling`] in the browser.
pub(crate) async fn fetch_post(url: &str, body: &[u8]) -> Result<Vec<u8>, SignalingError> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let body = Uint8Array::from(body);
    init.set_body(&body);
    let request = web_sys::Request::new_with_str_and_init(url, &init)
        .map_err(|e| SignalingError::Unreachable(format!("{url}: {e:?}")))?;
    request
        .headers()
        .set("content-type", "application/octet-stream")
        .map_err(|e| SignalingError::Malformed(format!("{e:?}")))?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let fetched = match web_sys::window() {
        Some(w) => w.fetch_with_request(&request),
        None => global.fetch_with_request(&request),
    };
    let response: web_sys::Response = JsFuture::from(fetched)
        .await
        .map_err(|e| SignalingError::Unreachable(format!("{url}: {e:?}")))?
        .unchecked_into();
    let buf = JsFuture::from(
        response
            .array_buffer()
            .map_err(|e| SignalingError::Malformed(format!("{e:?}")))?,
    )
    .await
    .map_err(|e| SignalingError::Unreachable(format!("{url}: {e:?}")))?;
    let bytes = Uint8Array::new(&buf);
    if bytes.length() as usize > crate::signaling::MAX_SIGNALING_MESSAGE {
        return Err(SignalingError::TooLarge {
            len: bytes.length() as usize,
            max: crate::signaling::MAX_SIGNALING_MESSAGE,
        });
    }
    let bytes = bytes.to_vec();
    crate::signaling::http::response_result(response.status(), bytes)
}
