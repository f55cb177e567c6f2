//! The composed mesh node. So far: [`messaging`], encrypted messages between peers, sent
//! directly over an open link or through the gossip mesh (so that a peer that was offline gets
//! them later by pull gossip), with delivery receipts, dedup and per-peer limits.

#![forbid(unsafe_code)]

pub mod messaging;

pub use messaging::{Message, MessagingError, MessagingEvent, MessagingStats, Messenger};
