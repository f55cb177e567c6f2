//! Kademlia DHT for mesh. The core is sans-IO (nothing in it does I/O or reads a clock; time
//! and peers' bytes are passed in, decisions come out); a thin async driver runs it over real
//! links.
//!
//! - [`key`]: the 256-bit key space (BLAKE2b-256 of a `PeerId`), XOR distance, buckets.
//! - [`routing`]: 256 k-buckets (k = 20) with replacement caches and liveness checks.
//! - [`record`]: records signed by their author, with sequence number and expiry, stored at a
//!   key in the author's namespace.
//! - [`lookup`]: the iterative FIND_NODE / FIND_VALUE as a state machine (alpha = 3 in flight,
//!   bounded candidates, timeouts).
//! - [`message`]: the versioned wire messages (PING, FIND_NODE, FIND_VALUE, STORE and their
//!   answers), bounded before allocation.
//! - [`node`]: the node core joining them: answers PING, `FIND_NODE`, `FIND_VALUE` and STORE,
//!   runs lookups and puts, bounds requests in flight (in all and per peer), times them out,
//!   refreshes stale buckets, republishes records hourly.
//! - [`store`]: the record store and its defences: size first, then the per-peer STORE rate
//!   (governor), then the per-peer quota, signature last; fair LRU eviction at the node's
//!   budget.
//! - [`driver`]: the async driver: runs a core over a `mesh_transport::pool::Pool` on any
//!   `Runtime`, keeps its state in a `KvStore` ([`persist`]), answers [`driver::DhtHandle`]s.
//! - [`metrics`]: opentelemetry instruments the core reports to when given them.
//!
//! The deterministic simulator that runs these cores by the thousand (and `cargo xtask sim dht`)
//! is the `mesh-sim` crate.

#![forbid(unsafe_code)]

pub mod driver;
pub mod key;
pub mod lookup;
pub mod message;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod record;
pub mod routing;
pub mod store;

pub use key::{Distance, Key};
pub use record::{Record, RecordPayload};
pub use routing::{Contact, RoutingTable};
pub use store::{RecordStore, Rejected, StoreConfig};
