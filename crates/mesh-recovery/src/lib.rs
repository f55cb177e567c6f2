//! Social key recovery for mesh: a user who loses their device gets their identity key back
//! from `k` of `n` friends ("guardians"), and nobody, guardians and relays included, ever sees
//! a share or the key in plain text.
//!
//! - [`shamir`]: k-of-n Shamir sharing of the 32-byte identity seed over GF(256) (`blahaj`).
//! - [`message`]: the formats: the owner's signed guardian set (with a salted commitment to
//!   each share), shares sealed in mesh-crypto envelopes, signed acknowledgements, requests,
//!   status answers and revocations (`docs/PROTOCOL.md` §14).
//! - [`node`]: the sans-IO core every peer runs: as owner it deals, seals and resends shares
//!   until acknowledged, and refreshes or revokes a set; as guardian it verifies and keeps
//!   shares and releases one only to a verified, fresh request that the application's policy
//!   approves (user approval with a verification code, a waiting period, a rate limit); as a
//!   recovering device it asks, verifies every share against the owner's signed set, names the
//!   guardians whose shares do not match, and combines once `k` good shares are in.
//! - [`driver`]: the async driver over a connection pool, with guardians' shares kept (still
//!   sealed) in a `KvStore`.

#![forbid(unsafe_code)]

pub mod driver;
pub mod message;
pub mod node;
pub mod shamir;

pub use message::{GuardianSet, RequestStatus, SetId, verification_code};
pub use node::{Event, Output, RecoveryConfig, RecoveryError, RecoveryNode};
