//! The radio seam: what a BLE link needs from the platform's Bluetooth stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mesh_platform::runtime::Runtime;
use mesh_platform::{MaybeSend, MaybeSync};
use tokio::sync::{Mutex, mpsc};

/// Radio failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RadioError {
    /// The BLE connection dropped.
    #[error("disconnected")]
    Disconnected,
    /// A write larger than the MTU allows.
    #[error("write of {len} bytes exceeds MTU payload {max}")]
    TooLarge {
        /// Write length.
        len: usize,
        /// `MTU - 3`.
        max: usize,
    },
}

/// One BLE connection's GATT data path. Writes are write-without-response (or notifications):
/// `write` waits while the stack has no buffer credit (flow control).
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Radio: MaybeSend + MaybeSync {
    /// The negotiated ATT MTU (23 to 517).
    fn mtu(&self) -> usize;
    /// Sends one write of at most `mtu() - 3` bytes.
    async fn write(&self, data: &[u8]) -> Result<(), RadioError>;
    /// The next write received from the remote.
    async fn read(&self) -> Result<Vec<u8>, RadioError>;
    /// The link is done with the connection: disconnect, and fail pending and later reads and
    /// writes with [`RadioError::Disconnected`]. Default: nothing (the connection goes when
    /// the radio is dropped).
    fn close(&self) {}
}

/// Properties of a simulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Negotiated MTU (23 to 517).
    pub mtu: usize,
    /// One-way delay per write.
    pub latency: Duration,
    /// Writes in flight before `write` waits (the stack's buffer credits).
    pub credits: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            mtu: 23,
            latency: Duration::ZERO,
            credits: 16,
        }
    }
}

struct Shared {
    connected: AtomicBool,
    /// Wakes blocked readers on disconnect.
    gone: tokio::sync::Notify,
    /// Loss probability as a fraction of 2^32, applied to writes.
    loss: AtomicU64,
    /// Probability (fraction of 2^32) that a write is held back and sent after the next one.
    reorder: AtomicU64,
}

/// One end of a simulated BLE link.
pub struct SimRadio<R: Runtime> {
    config: SimConfig,
    runtime: R,
    tx: mpsc::Sender<(Duration, Vec<u8>)>,
    rx: Mutex<mpsc::Receiver<(Duration, Vec<u8>)>>,
    held: std::sync::Mutex<Option<Vec<u8>>>,
    shared: Arc<Shared>,
}

impl<R: Runtime> std::fmt::Debug for SimRadio<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRadio")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn chance(p: u64) -> bool {
    if p == 0 {
        return false;
    }
    let mut b = [0u8; 4];
    dryoc::rng::copy_randombytes(&mut b);
    u64::from(u32::from_le_bytes(b)) < p
}

fn fraction(p: f64) -> u64 {
    // Clamped to 0..=1, so the product fits in 33 bits. Scaled by 2^32, not u32::MAX: `chance`
    // draws a u32, and only 2^32 makes p = 1 certain (every draw below it).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    v
}

impl<R: Runtime> SimRadio<R> {
    /// A connected pair.
    pub fn pair(runtime: &R, config: SimConfig) -> (Self, Self) {
        let credits = config.credits.max(1);
        let (a_tx, b_rx) = mpsc::channel(credits);
        let (b_tx, a_rx) = mpsc::channel(credits);
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(true),
            gone: tokio::sync::Notify::new(),
            loss: AtomicU64::new(0),
            reorder: AtomicU64::new(0),
        });
        let make = |tx, rx| Self {
            config,
            runtime: runtime.clone(),
            tx,
            rx: Mutex::new(rx),
            held: std::sync::Mutex::new(None),
            shared: Arc::clone(&shared),
        };
        (make(a_tx, a_rx), make(b_tx, b_rx))
    }

    /// From now on, loses each write with probability `p` (both directions).
    pub fn set_loss(&self, p: f64) {
        self.shared.loss.store(fraction(p), Ordering::Relaxed);
    }

    /// From now on, swaps a write with the next one with probability `p` (both directions).
    pub fn set_reorder(&self, p: f64) {
        self.shared.reorder.store(fraction(p), Ordering::Relaxed);
    }

    /// Drops the link: both ends fail from now on.
    pub fn disconnect(&self) {
        self.shared.connected.store(false, Ordering::Release);
        self.shared.gone.notify_waiters();
    }

    async fn deliver(&self, data: Vec<u8>) -> Result<(), RadioError> {
        let at = self.runtime.monotonic() + self.config.latency;
        self.tx
            .send((at, data))
            .await
            .map_err(|_| RadioError::Disconnected)
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<R: Runtime> Radio for SimRadio<R> {
    fn mtu(&self) -> usize {
        self.config.mtu
    }

    async fn write(&self, data: &[u8]) -> Result<(), RadioError> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        let max = self.config.mtu.saturating_sub(3);
        if data.len() > max {
            return Err(RadioError::TooLarge {
                len: data.len(),
                max,
            });
        }
        if chance(self.shared.loss.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let held = self
            .held
            .lock()
            .map_err(|_| RadioError::Disconnected)?
            .take();
        if held.is_none() && chance(self.shared.reorder.load(Ordering::Relaxed)) {
            *self.held.lock().map_err(|_| RadioError::Disconnected)? = Some(data.to_vec());
            return Ok(());
        }
        self.deliver(data.to_vec()).await?;
        if let Some(h) = held {
            self.deliver(h).await?;
        }
        Ok(())
    }

    async fn read(&self) -> Result<Vec<u8>, RadioError> {
        let mut rx = self.rx.lock().await;
        let gone = self.shared.gone.notified();
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        let (at, data) = tokio::select! {
            m = rx.recv() => m.ok_or(RadioError::Disconnected)?,
            () = gone => return Err(RadioError::Disconnected),
        };
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        let now = self.runtime.monotonic();
        if at > now {
            self.runtime.sleep(at.saturating_sub(now)).await;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_span_the_whole_draw_so_one_is_certain_and_zero_never() {
        assert_eq!(fraction(1.0), 1 << 32, "p = 1 must exceed every u32 draw");
        assert_eq!(fraction(7.5), 1 << 32, "clamped to 1");
        assert_eq!(fraction(0.5), 1 << 31);
        assert_eq!(fraction(0.0), 0);
        assert_eq!(fraction(-3.0), 0, "clamped to 0");
        assert!(chance(u64::from(u32::MAX) + 1));
        assert!(!chance(0));
        for _ in 0..1000 {
            assert!(chance(fraction(1.0)));
        }
    }
}
