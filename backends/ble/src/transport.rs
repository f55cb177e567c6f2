//! [`BleTransport`]: a [`Transport`] over radios the platform connects.
//!
//! On phones the operating system, not the library, scans, advertises and connects: the app
//! learns of a BLE connection in a callback, in either role. It hands the connected radio to a
//! [`BleAttacher`], which runs the mesh handshake over it and gives the authenticated link to
//! the transport's [`Transport::accept`], so the node's pool takes it like any other incoming
//! link. [`Transport::dial`] cannot make a BLE connection itself and says so.

use std::sync::Arc;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::Runtime;
use mesh_transport::{Connection, Transport, TransportError, TransportKind};
use tokio::sync::{Mutex, mpsc};

use crate::link::BleConnection;
use crate::radio::Radio;

/// Authenticated links waiting for [`Transport::accept`].
const ACCEPT_QUEUE: usize = 8;

/// The address prefix of BLE peers (`ble:` followed by whatever the platform names a device).
pub const ADDRESS_PREFIX: &str = "ble:";

/// Which side of the BLE connection this device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It connected (GATT client): it starts the mesh handshake.
    Central,
    /// It was connected to (GATT server): it answers the handshake.
    Peripheral,
}

/// BLE links made from radios handed to its [`BleAttacher`].
pub struct BleTransport<Ra: Radio, R: Runtime> {
    accepted: Mutex<mpsc::Receiver<BleConnection<Ra, R>>>,
}

impl<Ra: Radio, R: Runtime> std::fmt::Debug for BleTransport<Ra, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleTransport").finish_non_exhaustive()
    }
}

/// Hands connected radios to a [`BleTransport`]. Cheap to clone.
pub struct BleAttacher<Ra: Radio, R: Runtime> {
    identity: Arc<Identity>,
    runtime: R,
    tx: mpsc::Sender<BleConnection<Ra, R>>,
}

impl<Ra: Radio, R: Runtime> Clone for BleAttacher<Ra, R> {
    fn clone(&self) -> Self {
        Self {
            identity: Arc::clone(&self.identity),
            runtime: self.runtime.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl<Ra: Radio, R: Runtime> std::fmt::Debug for BleAttacher<Ra, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleAttacher")
            .field("peer", &self.identity.peer_id())
            .finish_non_exhaustive()
    }
}

impl<Ra: Radio, R: Runtime> BleTransport<Ra, R> {
    /// A transport for `identity`, and the attacher that feeds it. The transport's `accept`
    /// fails with [`TransportError::Closed`] once every attacher is dropped.
    pub fn new(identity: Arc<Identity>, runtime: R) -> (Self, BleAttacher<Ra, R>) {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        (
            Self {
                accepted: Mutex::new(rx),
            },
            BleAttacher {
                identity,
                runtime,
                tx,
            },
        )
    }
}

impl<Ra: Radio + 'static, R: Runtime> BleAttacher<Ra, R> {
    /// Runs the mesh handshake over `radio` in `role` (as the central: refused unless the
    /// remote proves it is `expected`, when given) and hands the link to the transport.
    /// Returns the remote's proven identity.
    ///
    /// # Errors
    /// The handshake's, the radio's or a timeout ([`crate::link::HANDSHAKE_TIMEOUT`]);
    /// [`TransportError::Closed`] when the transport is gone.
    pub async fn attach(
        &self,
        radio: Ra,
        role: Role,
        expected: Option<PeerId>,
    ) -> Result<PeerId, TransportError> {
        let rt = self.runtime.clone();
        let link = match (role, expected) {
            (Role::Central, Some(peer)) => {
                BleConnection::connect(radio, rt, &self.identity, peer).await?
            }
            (Role::Central, None) => BleConnection::connect_any(radio, rt, &self.identity).await?,
            (Role::Peripheral, _) => BleConnection::accept(radio, rt, &self.identity).await?,
        };
        let remote = link.remote();
        if let Some(expected) = expected.filter(|p| *p != remote) {
            let _ = link.close().await;
            return Err(TransportError::Handshake(
                mesh_transport::handshake::HandshakeError::UnexpectedPeer {
                    expected,
                    actual: remote,
                },
            ));
        }
        self.tx
            .send(link)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(remote)
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<Ra: Radio + 'static, R: Runtime> Transport for BleTransport<Ra, R> {
    type Connection = BleConnection<Ra, R>;

    fn kind(&self) -> TransportKind {
        TransportKind::Ble
    }

    async fn dial(&self, _peer: PeerId, address: &str) -> Result<Self::Connection, TransportError> {
        Err(TransportError::Unreachable(format!(
            "{address}: BLE connections are made by the platform; attach the connected radio"
        )))
    }

    async fn accept(&self) -> Result<Self::Connection, TransportError> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }
}
