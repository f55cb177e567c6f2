//! Push gossip and Bloom-digest pull gossip for mesh, as a sans-IO core.
//!
//! - [`message`]: signed gossip messages (their id is the digest the author signed, the same at
//!   every hop) and the wire frames: PUSH (TTL and hop count outside the signature), DIGEST,
//!   MESSAGES.
//! - [`bloom`]: the digest's Bloom filter, specified byte for byte in `docs/PROTOCOL.md` §12.
//! - [`cache`]: the message cache, bounded by count, bytes and age, with a bounded memory of
//!   ids seen.
//! - [`node`]: the core: verifies before it keeps or forwards, pushes to a random sample of
//!   neighbours, pulls from a random neighbour every minute and whenever a link comes up, and
//!   answers digests within a per-digest budget and a per-peer byte rate.
//! - [`driver`]: the async driver over a `mesh_transport::pool::Pool`, with the cache kept in a
//!   `KvStore` and opentelemetry metrics.

#![forbid(unsafe_code)]

pub mod bloom;
pub mod cache;
pub mod driver;
pub mod message;
pub mod node;

pub use message::{GossipMessage, GossipPayload, MessageId};
pub use node::{Event, Gossip, GossipConfig, Output};
