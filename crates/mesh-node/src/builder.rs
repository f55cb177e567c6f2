//! [`NodeBuilder`]: a [`Node`] from its parts, chosen by Cargo features and settings.
//!
//! ```no_run
//! # #[cfg(all(feature = "redb", feature = "webrtc", not(target_arch = "wasm32")))]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mesh_crypto::Identity;
//! use mesh_node::NodeBuilder;
//! use mesh_platform::runtime::TokioRuntime;
//! use mesh_transport_webrtc::WebRtcConfig;
//! use mesh_transport_webrtc::signaling::http::HttpSignaling;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let signaling = Arc::new(HttpSignaling::serve(listener)?);
//! let address = signaling.url().unwrap_or_default();
//! let (node, mut events) = NodeBuilder::new(Arc::new(Identity::generate()))
//!     .redb("node.redb")
//!     .webrtc(WebRtcConfig::default(), signaling, &address)
//!     .start(TokioRuntime::current())
//!     .await?;
//! # let _ = (&node, &mut events);
//! # Ok(()) }
//! ```
//!
//! Features: `redb` (default) adds [`NodeBuilder::redb`], a store in a redb file; `webrtc`
//! (default) adds [`NodeBuilder::webrtc`], the native WebRTC transport. Any other
//! [`KvStore`] and [`Transport`] plug in with [`NodeBuilder::store`] and
//! [`NodeBuilder::transport`] (the memory transport in tests, BLE, a browser's); several at
//! once as one with [`mesh_transport::multi::Transports`] (dialed by address prefix, accepting
//! from all).

use std::sync::Arc;

use mesh_crypto::{Identity, PeerId};
use mesh_platform::kv::KvStore;
use mesh_platform::runtime::Runtime;
use mesh_transport::Transport;

use crate::node::{Node, NodeConfig, NodeError, NodeEvents};

enum StoreChoice {
    Given(Arc<dyn KvStore>),
    #[cfg(all(feature = "redb", not(target_arch = "wasm32")))]
    Redb(std::path::PathBuf),
}

/// Builds a [`Node`]: an identity, a store, a transport and the address peers dial it at, and
/// the protocols' settings. `T` is the transport chosen so far (`()` before one is).
pub struct NodeBuilder<T> {
    identity: Arc<Identity>,
    config: NodeConfig,
    store: Option<StoreChoice>,
    transport: Option<(T, String)>,
}

impl<T> std::fmt::Debug for NodeBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("peer", &self.identity.peer_id())
            .field("has_store", &self.store.is_some())
            .field("has_transport", &self.transport.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeBuilder<()> {
    /// A node for `identity`, with default settings and no store or transport yet.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self {
            identity,
            config: NodeConfig::default(),
            store: None,
            transport: None,
        }
    }
}

impl<T> NodeBuilder<T> {
    /// The protocols' settings, replacing all of them, bootstrap peers included (call
    /// [`NodeBuilder::bootstrap`] after this, not before).
    #[must_use]
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Peers to join the DHT through.
    #[must_use]
    pub fn bootstrap(mut self, peers: Vec<(PeerId, String)>) -> Self {
        self.config.bootstrap = peers;
        self
    }

    /// State in `store`, which must have been opened with [`crate::node::SCHEMA`] (or a
    /// schema listing [`crate::node::TABLES`]).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn KvStore>) -> Self {
        self.store = Some(StoreChoice::Given(store));
        self
    }

    /// State in the redb file at `path` (created if missing), opened with
    /// [`crate::node::SCHEMA`].
    #[cfg(all(feature = "redb", not(target_arch = "wasm32")))]
    #[must_use]
    pub fn redb(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store = Some(StoreChoice::Redb(path.into()));
        self
    }

    /// Links over `transport`; peers dial this node at `address` (empty: only through
    /// others).
    pub fn transport<U: Transport>(self, transport: U, address: &str) -> NodeBuilder<U> {
        NodeBuilder {
            identity: self.identity,
            config: self.config,
            store: self.store,
            transport: Some((transport, address.to_string())),
        }
    }

    /// Links over native WebRTC with `config`, swapping session descriptions through
    /// `signaling`; peers dial this node at `address` (what `signaling` understands: its
    /// HTTP endpoint's URL, `relay:PEER_ID`, ...). Call it within a Tokio runtime: the
    /// transport starts taking offers at once.
    #[cfg(all(feature = "webrtc", not(target_arch = "wasm32")))]
    pub fn webrtc<S: mesh_transport_webrtc::signaling::Signaling>(
        self,
        config: mesh_transport_webrtc::WebRtcConfig,
        signaling: Arc<S>,
        address: &str,
    ) -> NodeBuilder<mesh_transport_webrtc::WebRtcTransport<S>> {
        let transport = mesh_transport_webrtc::WebRtcTransport::new(
            Arc::clone(&self.identity),
            signaling,
            config,
        );
        self.transport(transport, address)
    }
}

impl<T: Transport + 'static> NodeBuilder<T> {
    /// Opens the store and starts the node on `runtime` (see [`Node::start`]).
    ///
    /// # Errors
    /// [`NodeError::Incomplete`] without a store (without a transport there is no `start`),
    /// [`NodeError::Storage`] if the store cannot be opened, or a driver's error while
    /// restoring its state.
    pub async fn start<R: Runtime>(
        self,
        runtime: R,
    ) -> Result<(Node<T, R>, NodeEvents), NodeError> {
        let (transport, address) = self.transport.ok_or(NodeError::Incomplete(
            "no transport: call transport() or webrtc()",
        ))?;
        let choice = self
            .store
            .ok_or(NodeError::Incomplete("no store: call store() or redb()"))?;
        // Only one variant without the redb feature (and on wasm32).
        #[allow(clippy::infallible_destructuring_match)]
        let (store, opened_here): (Arc<dyn KvStore>, bool) = match choice {
            StoreChoice::Given(s) => (s, false),
            #[cfg(all(feature = "redb", not(target_arch = "wasm32")))]
            StoreChoice::Redb(path) => {
                let backend = mesh_store_redb::RedbBackend::open(&path).await?;
                let store = mesh_platform::kv::Store::open(backend, &crate::node::SCHEMA).await?;
                (Arc::new(store), true)
            }
        };
        let started = Node::start(
            self.identity,
            transport,
            runtime,
            &address,
            Arc::clone(&store),
            self.config,
        )
        .await;
        if started.is_err() && opened_here {
            // The caller never saw this store: release its file for a retry.
            let _ = store.close().await;
        }
        started
    }
}
