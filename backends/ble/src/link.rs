//! An authenticated, encrypted mesh [`Connection`] over a [`Radio`]: the mesh handshake (empty
//! channel binding: BLE pairing is not relied on), then frames sealed with the session keys,
//! each message fragmented into GATT writes.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::Runtime;
use mesh_transport::handshake::{Initiator, Responder, Session};
use mesh_transport::link::{Incoming, Link};
use mesh_transport::quality::ConnectionQuality;
use mesh_transport::{Connection, Frame, TransportError, TransportKind};

use crate::fragment::{FragmentError, Reassembler, fragment};
use crate::radio::{Radio, RadioError};

/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long closing waits for the close message to be written before it disconnects.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn radio_err(e: RadioError) -> TransportError {
    match e {
        RadioError::Disconnected => TransportError::Closed,
        RadioError::TooLarge { .. } => TransportError::Malformed("radio refused a write"),
    }
}

fn frag_err(e: FragmentError) -> TransportError {
    match e {
        FragmentError::MessageTooLarge(len) => TransportError::FrameTooLarge {
            len,
            max: crate::fragment::MAX_MESSAGE_LEN,
        },
        _ => TransportError::Malformed("bad GATT fragment"),
    }
}

struct Io<'a, Ra: Radio, R: Runtime> {
    radio: &'a Ra,
    runtime: &'a R,
    reasm: &'a tokio::sync::Mutex<Reassembler>,
    next_id: &'a AtomicU16,
}

impl<Ra: Radio, R: Runtime> Io<'_, Ra, R> {
    async fn send(&self, message: &[u8]) -> Result<(), TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for f in fragment(id, message, self.radio.mtu()).map_err(frag_err)? {
            self.radio.write(&f).await.map_err(radio_err)?;
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Vec<u8>, TransportError> {
        let mut reasm = self.reasm.lock().await;
        loop {
            let data = self.radio.read().await.map_err(radio_err)?;
            match reasm.push(&data, self.runtime.monotonic()) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                // A damaged message is dropped; the link goes on.
                Err(FragmentError::Checksum(id)) => {
                    tracing::debug!(id, "BLE message failed its checksum");
                }
                Err(e) => return Err(frag_err(e)),
            }
        }
    }
}

/// A mesh link over BLE.
pub struct BleConnection<Ra: Radio, R: Runtime> {
    radio: Ra,
    runtime: R,
    remote: PeerId,
    reasm: tokio::sync::Mutex<Reassembler>,
    next_id: AtomicU16,
    /// Radio links reorder whole writes: stale messages are dropped, not fatal.
    link: Link,
    /// Whether this side is the central (it started the handshake).
    central: bool,
    /// Set once closing has finished: the first `close` does the work, every later or
    /// concurrent one waits for it (a second caller must not cut the radio while the first
    /// is still writing the close message).
    closing: tokio::sync::OnceCell<()>,
}

impl<Ra: Radio, R: Runtime> std::fmt::Debug for BleConnection<Ra, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleConnection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

async fn with_timeout<T, R: Runtime>(
    runtime: &R,
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let timeout = runtime.sleep(HANDSHAKE_TIMEOUT);
    tokio::select! {
        r = fut => r,
        () = timeout => Err(TransportError::Timeout),
    }
}

impl<Ra: Radio, R: Runtime> BleConnection<Ra, R> {
    fn new(
        radio: Ra,
        runtime: R,
        reasm: Reassembler,
        next_id: u16,
        session: Session,
        central: bool,
    ) -> Self {
        Self {
            central,
            radio,
            runtime,
            remote: session.remote,
            reasm: tokio::sync::Mutex::new(reasm),
            next_id: AtomicU16::new(next_id),
            link: Link::sealed(session, true),
            closing: tokio::sync::OnceCell::new(),
        }
    }

    fn io(&self) -> Io<'_, Ra, R> {
        Io {
            radio: &self.radio,
            runtime: &self.runtime,
            reasm: &self.reasm,
            next_id: &self.next_id,
        }
    }

    /// Runs the handshake as the side that connected (the central), expecting `peer`.
    ///
    /// # Errors
    /// Handshake, radio or timeout errors.
    pub async fn connect(
        radio: Ra,
        runtime: R,
        identity: &Identity,
        peer: PeerId,
    ) -> Result<Self, TransportError> {
        Self::initiate(radio, runtime, identity, Some(peer)).await
    }

    /// Runs the handshake as the central with whoever answers (BLE advertisements do not say
    /// who a device is): the remote still proves its identity, read it with
    /// [`Connection::remote`].
    ///
    /// # Errors
    /// Handshake, radio or timeout errors.
    pub async fn connect_any(
        radio: Ra,
        runtime: R,
        identity: &Identity,
    ) -> Result<Self, TransportError> {
        Self::initiate(radio, runtime, identity, None).await
    }

    async fn initiate(
        radio: Ra,
        runtime: R,
        identity: &Identity,
        peer: Option<PeerId>,
    ) -> Result<Self, TransportError> {
        let reasm = tokio::sync::Mutex::new(Reassembler::new());
        let next_id = AtomicU16::new(0);
        let session = {
            let io = Io {
                radio: &radio,
                runtime: &runtime,
                reasm: &reasm,
                next_id: &next_id,
            };
            with_timeout(&runtime, async {
                let (init, m1) = Initiator::start(b"", peer)?;
                io.send(&m1).await?;
                let m2 = io.recv().await?;
                let (m3, session) = init.on_m2(identity, &m2)?;
                io.send(&m3).await?;
                Ok(session)
            })
            .await?
        };
        let id = next_id.load(Ordering::Relaxed);
        Ok(Self::new(
            radio,
            runtime,
            reasm.into_inner(),
            id,
            session,
            true,
        ))
    }

    /// Runs the handshake as the side that was connected to (the peripheral).
    ///
    /// # Errors
    /// Handshake, radio or timeout errors.
    pub async fn accept(
        radio: Ra,
        runtime: R,
        identity: &Identity,
    ) -> Result<Self, TransportError> {
        let reasm = tokio::sync::Mutex::new(Reassembler::new());
        let next_id = AtomicU16::new(0);
        let session = {
            let io = Io {
                radio: &radio,
                runtime: &runtime,
                reasm: &reasm,
                next_id: &next_id,
            };
            with_timeout(&runtime, async {
                let m1 = io.recv().await?;
                let (resp, m2) = Responder::on_m1(identity, b"", &m1)?;
                io.send(&m2).await?;
                let m3 = io.recv().await?;
                Ok(resp.on_m3(&m3)?)
            })
            .await?
        };
        let id = next_id.load(Ordering::Relaxed);
        Ok(Self::new(
            radio,
            runtime,
            reasm.into_inner(),
            id,
            session,
            false,
        ))
    }

    /// The radio (e.g. to simulate a disconnect in tests).
    pub fn radio(&self) -> &Ra {
        &self.radio
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<Ra: Radio, R: Runtime> Connection for BleConnection<Ra, R> {
    fn remote(&self) -> PeerId {
        self.remote
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Ble
    }

    fn quality(&self) -> ConnectionQuality {
        self.link.quality()
    }

    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let sealed = self.link.seal_frame(&frame)?;
        self.io().send(&sealed).await
    }

    async fn recv(&self) -> Result<Frame, TransportError> {
        loop {
            if self.link.is_closed() {
                return Err(TransportError::Closed);
            }
            let sealed = self.io().recv().await.map_err(|e| self.link.fail(e))?;
            match self.link.receive(&sealed, self.runtime.monotonic())? {
                Incoming::Frame(f) => return Ok(f),
                Incoming::Reply(pong) => self.io().send(&pong).await?,
                Incoming::Nothing => {}
                Incoming::Closed => return Err(TransportError::Closed),
            }
        }
    }

    async fn ping(&self) -> Result<(), TransportError> {
        let sealed = self.link.ping(self.runtime.monotonic())?;
        self.io().send(&sealed).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.closing
            .get_or_init(|| async {
                if let Ok(sealed) = self.link.close() {
                    // Bounded: a radio whose writes never complete must not keep the link open.
                    let io = self.io();
                    tokio::select! {
                        _ = io.send(&sealed) => {}
                        () = self.runtime.sleep(CLOSE_TIMEOUT) => {}
                    }
                }
                // The BLE connection itself goes too (and a reader blocked on the radio wakes).
                self.radio.close();
            })
            .await;
        Ok(())
    }

    fn initiated_here(&self) -> bool {
        self.central
    }
}
