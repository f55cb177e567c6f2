//! [`Node`]: every protocol of mesh on one connection pool and one store. The DHT, gossip, the
//! blob service, social recovery and messaging each run their driver over the same [`Pool`]
//! (one link per peer carries them all) and keep their state in the same [`KvStore`], whose
//! schema must list [`TABLES`] (or be [`SCHEMA`]).

use std::sync::Arc;

use mesh_blob::store::{BlobConfig, BlobStore};
use mesh_blob::transfer::{BlobService, TransferConfig};
use mesh_crypto::{Identity, PeerId};
use mesh_dht::driver::{DhtHandle, DriverOptions as DhtOptions};
use mesh_gossip::driver::{Delivered, DriverOptions as GossipOptions, GossipHandle};
use mesh_platform::kv::{KvStore, Schema};
use mesh_platform::runtime::Runtime;
use mesh_recovery::driver::{DriverOptions as RecoveryOptions, RecoveryHandle};
use mesh_recovery::node::RecoveryConfig;
use mesh_transport::Transport;
use mesh_transport::pool::Pool;
use tokio::sync::mpsc::Receiver;

use crate::messaging::{MessagingEvent, Messenger};

/// Makes every link a gossip neighbour as it comes up (and again when the peer's address
/// becomes known, which also pulls from it at once), so that what the mesh carries reaches a
/// new peer by push at once rather than at its next pull. Ends with the pool or gossip.
fn spawn_link_neighbours<T: Transport + 'static, R: Runtime>(
    pool: &Pool<T, R>,
    runtime: &R,
    gossip: GossipHandle,
) {
    let weak = pool.downgrade();
    let mut changes = pool.watch_links();
    runtime.spawn(Box::pin(async move {
        let mut known: std::collections::HashMap<PeerId, String> = std::collections::HashMap::new();
        loop {
            let Some(pool) = weak.upgrade() else {
                return;
            };
            let linked = pool.connected();
            known.retain(|p, _| linked.contains(p));
            for peer in linked {
                let address = pool.address_of(&peer).unwrap_or_default();
                if known.get(&peer) != Some(&address) {
                    if gossip.add_neighbour(peer, &address).await.is_err() {
                        return;
                    }
                    known.insert(peer, address);
                }
            }
            drop(pool);
            if changes.changed().await.is_err() {
                return;
            }
        }
    }));
}

/// Every table a node writes: the DHT's, gossip's, the blob store's and recovery's.
pub const TABLES: [&str; 12] = [
    mesh_dht::persist::RECORDS_TABLE,
    mesh_dht::persist::CONTACTS_TABLE,
    mesh_gossip::driver::MESSAGES_TABLE,
    mesh_blob::store::TABLES[0],
    mesh_blob::store::TABLES[1],
    mesh_blob::store::TABLES[2],
    mesh_blob::store::TABLES[3],
    mesh_blob::store::TABLES[4],
    mesh_blob::store::TABLES[5],
    mesh_blob::store::TABLES[6],
    mesh_blob::store::TABLES[7],
    mesh_recovery::driver::SHARES_TABLE,
];

/// The schema of a node's store (version 1: [`TABLES`]).
pub static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The DHT driver.
    #[error("dht: {0}")]
    Dht(#[from] mesh_dht::driver::DriverError),
    /// The gossip driver.
    #[error("gossip: {0}")]
    Gossip(#[from] mesh_gossip::driver::DriverError),
    /// The blob store.
    #[error("blobs: {0}")]
    Blob(#[from] mesh_blob::BlobError),
    /// The recovery driver.
    #[error("recovery: {0}")]
    Recovery(#[from] mesh_recovery::driver::DriverError),
    /// The store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] mesh_platform::kv::KvError),
    /// The builder lacks a part.
    #[error("{0}")]
    Incomplete(&'static str),
}

/// How to start a node. Every part has its defaults.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Peers to join the DHT through.
    pub bootstrap: Vec<(PeerId, String)>,
    /// The DHT's settings.
    pub dht: mesh_dht::node::DhtConfig,
    /// Gossip's settings.
    pub gossip: mesh_gossip::GossipConfig,
    /// The blob store's limits.
    pub blobs: BlobConfig,
    /// Blob transfers' limits.
    pub transfer: TransferConfig,
    /// Social recovery's policy.
    pub recovery: RecoveryConfig,
    /// Messaging's per-peer limits.
    pub messaging: crate::messaging::MessagingConfig,
}

/// What a node reports, one channel per kind.
///
/// Metrics: the DHT and gossip record theirs on the global OpenTelemetry meter provider
/// (meters `mesh-dht`, `mesh-gossip`; the blob store's is `mesh-blob`): a no-op until the
/// application installs one, as `meshd` does for its `/metrics` endpoint.
#[derive(Debug)]
pub struct NodeEvents {
    /// Messages for this node, and receipts of its own.
    pub messages: Receiver<MessagingEvent>,
    /// Social recovery.
    pub recovery: Receiver<mesh_recovery::Event>,
    /// Gossip messages of topics other than messaging's.
    pub gossip: Receiver<Delivered>,
}

/// A running node: handles to each protocol's driver. Cheap to clone.
pub struct Node<T: Transport, R: Runtime> {
    /// The node's identity.
    pub identity: Arc<Identity>,
    /// Where peers dial it.
    pub address: String,
    /// The connection pool every protocol shares.
    pub pool: Pool<T, R>,
    /// The DHT.
    pub dht: DhtHandle,
    /// Gossip.
    pub gossip: GossipHandle,
    /// The blob store and transfers.
    pub blobs: BlobService,
    /// Social recovery.
    pub recovery: RecoveryHandle,
    /// Messaging.
    pub messenger: Messenger,
    /// The store every protocol keeps its state in (close it after [`Node::shutdown`]).
    pub store: Arc<dyn KvStore>,
}

impl<T: Transport, R: Runtime> Clone for Node<T, R> {
    fn clone(&self) -> Self {
        Self {
            identity: Arc::clone(&self.identity),
            address: self.address.clone(),
            pool: self.pool.clone(),
            dht: self.dht.clone(),
            gossip: self.gossip.clone(),
            blobs: self.blobs.clone(),
            recovery: self.recovery.clone(),
            messenger: self.messenger.clone(),
            store: Arc::clone(&self.store),
        }
    }
}

impl<T: Transport + 'static, R: Runtime> std::fmt::Debug for Node<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.identity.peer_id())
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl<T: Transport + 'static, R: Runtime> Node<T, R> {
    /// Starts a node for `identity` over `transport`, dialable at `address`, with its state in
    /// `store` (opened with [`SCHEMA`], or a schema listing [`TABLES`]): what the store holds
    /// from an earlier run (DHT records and contacts, gossip messages, blobs, guardians'
    /// shares) is restored.
    ///
    /// # Errors
    /// A driver's error while restoring its state.
    pub async fn start(
        identity: Arc<Identity>,
        transport: T,
        runtime: R,
        address: &str,
        store: Arc<dyn KvStore>,
        config: NodeConfig,
    ) -> Result<(Self, NodeEvents), NodeError> {
        let me = identity.peer_id();
        let pool = Pool::new(transport, runtime.clone(), me, address);
        let dht = mesh_dht::driver::start(
            me,
            pool.clone(),
            runtime.clone(),
            DhtOptions {
                config: config.dht,
                store: Some(Arc::clone(&store)),
                metrics: Some(mesh_dht::metrics::DhtMetrics::new(
                    &opentelemetry::global::meter("mesh-dht"),
                )),
                bootstrap: config.bootstrap,
            },
        )
        .await?;
        let (gossip, deliveries) = mesh_gossip::driver::start(
            me,
            pool.clone(),
            runtime.clone(),
            GossipOptions {
                config: config.gossip,
                store: Some(Arc::clone(&store)),
                metrics: Some(mesh_gossip::driver::GossipMetrics::new(
                    &opentelemetry::global::meter("mesh-gossip"),
                )),
                ..GossipOptions::default()
            },
        )
        .await?;
        let blob_store = BlobStore::open(Arc::clone(&store), config.blobs).await?;
        let blobs = mesh_blob::transfer::start(&pool, &runtime, blob_store, config.transfer);
        let (recovery, recovery_events) = mesh_recovery::driver::start(
            Arc::clone(&identity),
            pool.clone(),
            runtime.clone(),
            RecoveryOptions {
                config: config.recovery,
                store: Some(Arc::clone(&store)),
            },
        )
        .await?;
        spawn_link_neighbours(&pool, &runtime, gossip.clone());
        // Last: a start that failed above leaves no accept loop holding the pool (and its
        // listener), and a link accepted now finds every protocol subscribed.
        pool.start_accepting();
        let (messenger, messages, gossip_other) = crate::messaging::start(
            Arc::clone(&identity),
            &pool,
            &runtime,
            gossip.clone(),
            deliveries,
            config.messaging,
        );
        Ok((
            Self {
                identity,
                address: address.to_string(),
                pool,
                dht,
                gossip,
                blobs,
                recovery,
                messenger,
                store,
            },
            NodeEvents {
                messages,
                recovery: recovery_events,
                gossip: gossip_other,
            },
        ))
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Where `peer` can be dialed: the address of an open link, or else what a DHT lookup of
    /// the peer's own key finds in the routing tables of the nodes closest to it (peers add
    /// each other's contacts as they talk, so a peer that joined the DHT can be found by
    /// anyone in it). `None` when nobody knows a dialable address (a peer only reachable
    /// through others, such as a browser: reach it through the mesh).
    ///
    /// # Errors
    /// The DHT driver has stopped.
    pub async fn locate(&self, peer: PeerId) -> Result<Option<String>, NodeError> {
        if let Some(address) = self.pool.address_of(&peer).filter(|a| !a.is_empty()) {
            return Ok(Some(address));
        }
        let contacts = self
            .dht
            .find_node(mesh_dht::key::Key::of_peer(&peer))
            .await?;
        Ok(contacts
            .into_iter()
            .find(|c| c.peer == peer && !c.address.is_empty())
            .map(|c| c.address))
    }

    /// Makes `peer` (at `address`) a gossip neighbour: messages through the mesh reach this
    /// node through its neighbours, and a new neighbour is pulled from at once.
    ///
    /// # Errors
    /// The gossip driver has stopped.
    pub async fn add_neighbour(&self, peer: PeerId, address: &str) -> Result<(), NodeError> {
        Ok(self.gossip.add_neighbour(peer, address).await?)
    }

    /// Stops every driver (after each wrote what it must), stops accepting links and closes
    /// every link. The store can be reopened once the node's handles are dropped and the
    /// drivers' tasks have ended (a moment later: they end asynchronously); the transport (and
    /// any listener it has) goes with the last handle.
    pub async fn shutdown(&self) {
        // What does not wait first, so that a shutdown cut short by the caller's timeout
        // still leaves no accept loop or blob receiver holding the pool.
        self.pool.stop_accepting();
        self.blobs.shutdown();
        // Messaging first: it publishes through gossip.
        let _ = self.messenger.shutdown().await;
        let _ = self.gossip.shutdown().await;
        let _ = self.dht.shutdown().await;
        let _ = self.recovery.shutdown().await;
        self.pool.shutdown().await;
    }
}
