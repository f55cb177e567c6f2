//! [`RoutedSignaling`]: HTTP for `http(s)://` addresses, relayed through a neighbour for
//! `relay:PEER_ID` addresses. What a node uses so that peers reach it through its public
//! endpoint when it has one, and through a node it is linked to when it has none.

use std::sync::Arc;

use async_trait::async_trait;
use mesh_crypto::PeerId;

use super::http::HttpSignaling;
use super::mesh::MeshSignaling;
use super::{IncomingOffer, Signaling, SignalingError};

/// Prefix of an address that names a relay: `relay:` followed by the relay's `PeerId` text.
pub const RELAY_PREFIX: &str = "relay:";

/// The address at which a node linked to `relay` can be dialed through it.
pub fn relay_address(relay: &PeerId) -> String {
    format!("{RELAY_PREFIX}{relay}")
}

/// HTTP signaling and mesh-relayed signaling behind one [`Signaling`].
pub struct RoutedSignaling {
    http: HttpSignaling,
    mesh: Arc<MeshSignaling>,
}

impl std::fmt::Debug for RoutedSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedSignaling")
            .field("http", &self.http)
            .field("mesh", &self.mesh)
            .finish()
    }
}

impl RoutedSignaling {
    /// Routes between `http` (which may also receive offers) and `mesh` (attach it to the
    /// node's pool with [`MeshSignaling::attach`] once the pool exists).
    pub fn new(http: HttpSignaling, mesh: Arc<MeshSignaling>) -> Self {
        Self { http, mesh }
    }

    /// The mesh side.
    pub fn mesh(&self) -> &Arc<MeshSignaling> {
        &self.mesh
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl Signaling for RoutedSignaling {
    /// `relay:PEER_ID` goes through that neighbour; anything else is an HTTP endpoint's URL.
    async fn exchange(
        &self,
        to: PeerId,
        address: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<u8>, SignalingError> {
        match address.strip_prefix(RELAY_PREFIX) {
            Some(relay) => self.mesh.exchange(to, relay, offer).await,
            None => self.http.exchange(to, address, offer).await,
        }
    }

    /// The next offer from either side.
    async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
        if !self.http.receives() {
            return self.mesh.incoming().await;
        }
        // Either side failing (its endpoint gone) must not end the other's offers.
        tokio::select! {
            offer = self.http.incoming() => match offer {
                Ok(o) => Ok(o),
                Err(_) => self.mesh.incoming().await,
            },
            offer = self.mesh.incoming() => match offer {
                Ok(o) => Ok(o),
                Err(_) => self.http.incoming().await,
            },
        }
    }
}
