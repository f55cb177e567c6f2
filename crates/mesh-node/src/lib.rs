//! The composed mesh node.
//!
//! - [`node`]: [`Node`], every protocol (DHT, gossip, blobs, social recovery, messaging) on one
//!   connection pool and one store.
//! - [`builder`]: [`NodeBuilder`], a node from a store and a transport chosen by Cargo
//!   features (`redb`, `webrtc`, both default) or passed in.
//! - [`files`]: files between peers, encrypted to the recipient, offered in a message and
//!   fetched from the sender's blob store.
//! - [`messaging`]: encrypted messages between peers, sent directly over an open link or
//!   through the gossip mesh (so that a peer that was offline gets them later by pull gossip),
//!   with delivery receipts, dedup and per-peer limits.

#![forbid(unsafe_code)]

pub mod builder;
pub mod files;
pub mod messaging;
pub mod node;

pub use builder::NodeBuilder;
pub use messaging::{
    Message, MessagingConfig, MessagingError, MessagingEvent, MessagingStats, Messenger,
};
pub use node::{Node, NodeConfig, NodeError, NodeEvents};
