//! The composed mesh node.
//!
//! - [`node`]: [`Node`], every protocol (DHT, gossip, blobs, social recovery, messaging) on one
//!   connection pool and one store.
//! - [`messaging`]: encrypted messages between peers, sent directly over an open link or
//!   through the gossip mesh (so that a peer that was offline gets them later by pull gossip),
//!   with delivery receipts, dedup and per-peer limits.

#![forbid(unsafe_code)]

pub mod messaging;
pub mod node;

pub use messaging::{
    Message, MessagingConfig, MessagingError, MessagingEvent, MessagingStats, Messenger,
};
pub use node::{Node, NodeConfig, NodeError, NodeEvents};
