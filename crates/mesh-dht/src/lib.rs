//! Kademlia DHT for mesh, as a sans-IO core: nothing here does I/O or reads a clock; time and
//! peers' bytes are passed in, decisions come out.
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
//!   refreshes stale buckets.
//! - [`store`]: the record store and its defences: size first, then the per-peer STORE rate
//!   (governor), then the per-peer quota, signature last; fair LRU eviction at the node's
//!   budget.
//!
//! Status: these parts are built and tested (a 1,000-node virtual-time network among the
//! tests); the async driver over `mesh-transport`, persistence through `KvStore`, republishing,
//! metrics and the `cargo xtask sim` scale runs follow (see the DHT issue).

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
