//! The transfer messages, carried in frames of `ProtocolId::BLOB` (`docs/PROTOCOL.md` §13):
//!
//! ```text
//! message      = version u8 = 1 | kind u8 | request id u64 LE | body
//! GET_MANIFEST   kind 1: blob id [32]
//! MANIFEST       kind 2: blob id [32] | manifest (see `manifest`)
//! GET_CHUNK      kind 3: blob id [32] | index u32 LE
//! CHUNK          kind 4: blob id [32] | index u32 LE | chunk bytes
//! NOT_FOUND      kind 5: blob id [32]
//! BUSY           kind 6: (empty): too many requests from this peer now; ask again later
//! ```
//!
//! A response carries the request id of its request. Every length is checked before anything
//! is allocated; the receiver checks a manifest against the id it asked for and a chunk
//! against the manifest, so nothing in a response is trusted.

use crate::manifest::{BlobId, MANIFEST_HEADER_LEN, MAX_CHUNK_SIZE, MAX_CHUNKS};

/// Version byte of the transfer messages.
pub const WIRE_VERSION: u8 = 1;
/// Bytes before the body.
pub const WIRE_HEADER_LEN: usize = 1 + 1 + 8;
/// Largest encoded message: a MANIFEST of [`MAX_CHUNKS`] chunks. Fits a transport frame.
pub const MAX_MESSAGE_LEN: usize =
    WIRE_HEADER_LEN + 32 + MANIFEST_HEADER_LEN + MAX_CHUNKS as usize * 32;

const GET_MANIFEST: u8 = 1;
const MANIFEST: u8 = 2;
const GET_CHUNK: u8 = 3;
const CHUNK: u8 = 4;
const NOT_FOUND: u8 = 5;
const BUSY: u8 = 6;

/// A request from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The manifest of a blob.
    GetManifest(BlobId),
    /// One chunk of a blob.
    GetChunk(BlobId, u32),
}

/// An answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A manifest, as encoded (checked by the receiver against the id).
    Manifest(BlobId, Vec<u8>),
    /// A chunk (checked by the receiver against the manifest).
    Chunk(BlobId, u32, Vec<u8>),
    /// The peer does not have the blob (or that chunk).
    NotFound(BlobId),
    /// The peer is busy or limits this requester: ask again later.
    Busy,
}

/// One transfer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request, with its id.
    Request(u64, Request),
    /// A response to request `id`.
    Response(u64, Response),
}

/// Why a message did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than its fields.
    #[error("truncated")]
    Truncated,
    /// Unknown version byte.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Unknown kind.
    #[error("unknown kind {0}")]
    Kind(u8),
    /// A field over its limit, or bytes after the last field.
    #[error("bad length")]
    Length,
}

fn header(kind: u8, id: u64, body: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(WIRE_HEADER_LEN + body);
    v.push(WIRE_VERSION);
    v.push(kind);
    v.extend_from_slice(&id.to_le_bytes());
    v
}

impl Message {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Request(id, Request::GetManifest(b)) => {
                let mut v = header(GET_MANIFEST, *id, 32);
                v.extend_from_slice(b.as_bytes());
                v
            }
            Self::Request(id, Request::GetChunk(b, i)) => {
                let mut v = header(GET_CHUNK, *id, 36);
                v.extend_from_slice(b.as_bytes());
                v.extend_from_slice(&i.to_le_bytes());
                v
            }
            Self::Response(id, Response::Manifest(b, m)) => {
                let mut v = header(MANIFEST, *id, 32 + m.len());
                v.extend_from_slice(b.as_bytes());
                v.extend_from_slice(m);
                v
            }
            Self::Response(id, Response::Chunk(b, i, c)) => {
                let mut v = header(CHUNK, *id, 36 + c.len());
                v.extend_from_slice(b.as_bytes());
                v.extend_from_slice(&i.to_le_bytes());
                v.extend_from_slice(c);
                v
            }
            Self::Response(id, Response::NotFound(b)) => {
                let mut v = header(NOT_FOUND, *id, 32);
                v.extend_from_slice(b.as_bytes());
                v
            }
            Self::Response(id, Response::Busy) => header(BUSY, *id, 0),
        }
    }

    /// Decodes a message, checking lengths before allocating.
    ///
    /// # Errors
    /// [`WireError`] for anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < WIRE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(WireError::Length);
        }
        if bytes[0] != WIRE_VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        let kind = bytes[1];
        let id = u64::from_le_bytes(bytes[2..10].try_into().map_err(|_| WireError::Truncated)?);
        let body = &bytes[WIRE_HEADER_LEN..];
        let blob = || {
            body.get(..32)
                .and_then(BlobId::from_slice)
                .ok_or(WireError::Truncated)
        };
        let index = || {
            body.get(32..36)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or(WireError::Truncated)
        };
        let exact = |n: usize| match body.len().cmp(&n) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(WireError::Truncated),
            std::cmp::Ordering::Greater => Err(WireError::Length),
        };
        Ok(match kind {
            GET_MANIFEST => {
                exact(32)?;
                Self::Request(id, Request::GetManifest(blob()?))
            }
            GET_CHUNK => {
                exact(36)?;
                Self::Request(id, Request::GetChunk(blob()?, index()?))
            }
            MANIFEST => {
                let b = blob()?;
                let m = &body[32..];
                if m.len() < MANIFEST_HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                Self::Response(id, Response::Manifest(b, m.to_vec()))
            }
            CHUNK => {
                let (b, i) = (blob()?, index()?);
                let c = &body[36..];
                if c.is_empty() || c.len() > MAX_CHUNK_SIZE as usize {
                    return Err(WireError::Length);
                }
                Self::Response(id, Response::Chunk(b, i, c.to_vec()))
            }
            NOT_FOUND => {
                exact(32)?;
                Self::Response(id, Response::NotFound(blob()?))
            }
            BUSY => {
                exact(0)?;
                Self::Response(id, Response::Busy)
            }
            k => return Err(WireError::Kind(k)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_message_round_trips_and_truncations_fail() {
        let b = BlobId::from_bytes([7; 32]);
        let msgs = [
            Message::Request(1, Request::GetManifest(b)),
            Message::Request(2, Request::GetChunk(b, 9)),
            Message::Response(3, Response::Manifest(b, vec![1; MANIFEST_HEADER_LEN + 32])),
            Message::Response(4, Response::Chunk(b, 5, vec![9; 100])),
            Message::Response(5, Response::NotFound(b)),
            Message::Response(u64::MAX, Response::Busy),
        ];
        for m in msgs {
            let e = m.encode();
            assert_eq!(Message::decode(&e).unwrap(), m);
            // Manifests and chunks have a body of any length past a fixed part (the receiver
            // checks it against the blob id and the manifest); every other cut fails.
            let fixed = match m {
                Message::Response(_, Response::Manifest(..)) => {
                    WIRE_HEADER_LEN + 32 + MANIFEST_HEADER_LEN
                }
                Message::Response(_, Response::Chunk(..)) => WIRE_HEADER_LEN + 36 + 1,
                _ => e.len(),
            };
            for cut in 0..fixed {
                assert!(Message::decode(&e[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = e.clone();
            long.push(0);
            if !matches!(
                m,
                Message::Response(_, Response::Manifest(..) | Response::Chunk(..))
            ) {
                assert_eq!(Message::decode(&long), Err(WireError::Length), "{m:?}");
            }
            let mut v = e.clone();
            v[0] = 2;
            assert_eq!(Message::decode(&v), Err(WireError::Version(2)));
        }
        let mut bad = Message::Response(1, Response::Busy).encode();
        bad[1] = 99;
        assert_eq!(Message::decode(&bad), Err(WireError::Kind(99)));
        // An empty chunk and one over the limit are refused.
        let mut e = Message::Response(4, Response::Chunk(b, 5, vec![9; 1])).encode();
        e.pop();
        assert!(Message::decode(&e).is_err());
        let big = Message::Response(
            4,
            Response::Chunk(b, 5, vec![0; MAX_CHUNK_SIZE as usize + 1]),
        );
        assert_eq!(Message::decode(&big.encode()), Err(WireError::Length));
        // The largest manifest fits a transport frame.
        const { assert!(MAX_MESSAGE_LEN <= mesh_transport::frame::MAX_FRAME_PAYLOAD) };
    }
}
