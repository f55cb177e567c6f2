//! BLE: the app's Bluetooth stack as a [`BleRadio`], and [`BleLink`], the handle through which
//! the app feeds it what the stack received.
//!
//! The OS connects (the app scans, advertises, connects, negotiates the MTU: GATT layout in
//! `mesh-transport-ble`); then the app calls [`crate::node::MeshNode::attach_ble`] with the
//! connected radio and its role, and pushes every GATT write or notification it receives into
//! the returned [`BleLink`] with [`BleLink::received`]. The library runs the mesh handshake
//! over it (so the link is authenticated and encrypted whatever BLE pairing did) and the node
//! uses it like any other link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use mesh_transport_ble::radio::{Radio, RadioError};
use tokio::sync::{Mutex, Notify, mpsc};

use crate::MeshError;

/// GATT writes received and not yet read by the link, at most; more are dropped (BLE writes
/// without response are unacknowledged anyway: the link's reassembly drops the damaged
/// message and the protocols above retry).
pub const RECEIVE_QUEUE: usize = 1024;

/// One connected BLE peer, as the app's Bluetooth stack sees it.
///
/// Implemented by the app: Android's `BluetoothGatt` / `BluetoothGattServer`, iOS's
/// `CBPeripheral` / `CBPeripheralManager`.
#[uniffi::export(with_foreign)]
#[async_trait]
pub trait BleRadio: Send + Sync {
    /// The negotiated ATT MTU (23 to 517): each write carries at most `mtu - 3` bytes. Read
    /// once, when the radio is attached: attach after the MTU exchange.
    fn mtu(&self) -> u32;
    /// Sends one GATT write without response (central) or notification (peripheral) of at
    /// most `mtu - 3` bytes. Resolve once the stack has taken it; wait while it has no buffer
    /// (Android: `onCharacteristicWrite`, iOS: `peripheralIsReady(toSendWriteWithoutResponse:)`).
    ///
    /// # Errors
    /// Throw when the connection is gone: the link closes.
    async fn write(&self, data: Vec<u8>) -> Result<(), MeshError>;
    /// The library is done with this connection (the link closed, or the node stopped):
    /// disconnect. Called once.
    fn disconnect(&self);
}

/// What the app tells a link: data received, and disconnection.
#[derive(uniffi::Object)]
pub struct BleLink {
    tx: std::sync::Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    dropped: Arc<AtomicU64>,
    handshake: crate::node::Handshake,
}

impl std::fmt::Debug for BleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleLink").finish_non_exhaustive()
    }
}

impl BleLink {
    pub(crate) fn handshake_sender(&self) -> crate::node::Handshake {
        self.handshake.clone()
    }
}

#[uniffi::export]
impl BleLink {
    /// One GATT write or notification the stack received from the peer, as it came. Returns
    /// false once the link is closed (stop feeding it).
    pub fn received(&self, data: Vec<u8>) -> bool {
        let Ok(guard) = self.tx.lock() else {
            return false;
        };
        let Some(tx) = guard.as_ref() else {
            return false;
        };
        match tx.try_send(data) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The stack reports the connection gone: the link closes.
    pub fn disconnected(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// Waits for the mesh handshake over this link: the remote's peer id, proven.
    ///
    /// # Errors
    /// [`MeshError::Unreachable`] when the handshake failed (a wrong peer, a disconnect, no
    /// answer within 15 s).
    pub async fn wait_connected(&self) -> Result<String, MeshError> {
        let mut rx = self.handshake.subscribe();
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| MeshError::Closed)?;
        outcome.clone().unwrap_or(Err(MeshError::Closed))
    }

    /// Writes dropped because the library did not keep up (see [`RECEIVE_QUEUE`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The app's radio as `mesh-transport-ble`'s [`Radio`].
pub(crate) struct AppRadio {
    radio: Arc<dyn BleRadio>,
    /// Read once at attach: `Radio::mtu` is asked for every message.
    mtu: usize,
    rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    closed: AtomicBool,
    /// Wakes reads and writes blocked when the link closes the radio.
    closing: Notify,
}

impl Drop for AppRadio {
    fn drop(&mut self) {
        self.close();
    }
}

impl AppRadio {
    /// The radio and the link the app feeds it through.
    pub(crate) fn new(radio: Arc<dyn BleRadio>) -> (Self, Arc<BleLink>) {
        let (tx, rx) = mpsc::channel(RECEIVE_QUEUE);
        // The ATT range; an app reporting nonsense gets the nearest legal value.
        let mtu = usize::try_from(radio.mtu()).map_or(517, |m| m.clamp(23, 517));
        (
            Self {
                radio,
                mtu,
                rx: Mutex::new(rx),
                closed: AtomicBool::new(false),
                closing: Notify::new(),
            },
            Arc::new(BleLink {
                tx: std::sync::Mutex::new(Some(tx)),
                dropped: Arc::new(AtomicU64::new(0)),
                handshake: tokio::sync::watch::Sender::new(None),
            }),
        )
    }
}

#[async_trait]
impl Radio for AppRadio {
    fn mtu(&self) -> usize {
        self.mtu
    }

    async fn write(&self, data: &[u8]) -> Result<(), RadioError> {
        let max = self.mtu - 3;
        if data.len() > max {
            return Err(RadioError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let closing = self.closing.notified();
        if self.closed.load(Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        // A write the app never completes must not outlive the link.
        tokio::select! {
            r = self.radio.write(data.to_vec()) => r.map_err(|_| RadioError::Disconnected),
            () = closing => Err(RadioError::Disconnected),
        }
    }

    async fn read(&self) -> Result<Vec<u8>, RadioError> {
        let closing = self.closing.notified();
        if self.closed.load(Ordering::Acquire) {
            return Err(RadioError::Disconnected);
        }
        let mut rx = self.rx.lock().await;
        tokio::select! {
            m = rx.recv() => m.ok_or(RadioError::Disconnected),
            () = closing => Err(RadioError::Disconnected),
        }
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.closing.notify_waiters();
            self.radio.disconnect();
        }
    }
}
