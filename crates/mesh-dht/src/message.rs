//! DHT wire messages, version 1 (layout in `docs/PROTOCOL.md` §11). Every length is checked
//! before anything is allocated; a contact list longer than [`MAX_CONTACTS`] is refused whole.

use mesh_crypto::PeerId;
use mesh_crypto::wire::Reader;

use crate::key::Key;
use crate::record::MAX_RECORD_LEN;
use crate::routing::{K, MAX_ADDRESS_LEN};

/// Message format version.
pub const MESSAGE_VERSION: u8 = 1;
/// Bytes before the body: version, kind, request id.
pub const MESSAGE_HEADER_LEN: usize = 1 + 1 + 8;
/// Contacts in one NODES answer at most (k).
pub const MAX_CONTACTS: usize = K;
/// Largest message: a STORE or VALUE carrying the largest record.
pub const MAX_MESSAGE_LEN: usize = MESSAGE_HEADER_LEN + 4 + MAX_RECORD_LEN;

/// A contact as messages carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireContact {
    /// Its identity.
    pub peer: PeerId,
    /// How to reach it (at most [`MAX_ADDRESS_LEN`] bytes, UTF-8).
    pub address: String,
}

/// Outcome of a STORE, as the answering node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    /// Stored (or already held).
    Stored = 0,
    /// Refused: too large.
    TooLarge = 1,
    /// Refused: rate limited.
    RateLimited = 2,
    /// Refused: quota.
    Quota = 3,
    /// Refused: invalid record.
    Invalid = 4,
    /// Refused: a newer record is held.
    Stale = 5,
}

/// What a message asks or answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Are you there?
    Ping,
    /// Yes.
    Pong,
    /// The contacts you know closest to `target`.
    FindNode(Key),
    /// The record at `key`, or contacts closer to it.
    FindValue(Key),
    /// Contacts (answer to either FIND).
    Nodes(Vec<WireContact>),
    /// A record, as stored (answer to FIND_VALUE).
    Value(Vec<u8>),
    /// Store this record.
    Store(Vec<u8>),
    /// How a STORE went.
    StoreResult(StoreStatus),
}

/// One DHT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chosen by the requester, repeated in the answer.
    pub request: u64,
    /// What it says.
    pub body: Body,
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Anything else wrong with it.
    #[error("malformed DHT message: {0}")]
    Malformed(&'static str),
}

const PING: u8 = 1;
const PONG: u8 = 2;
const FIND_NODE: u8 = 3;
const FIND_VALUE: u8 = 4;
const NODES: u8 = 5;
const VALUE: u8 = 6;
const STORE: u8 = 7;
const STORE_RESULT: u8 = 8;

impl Message {
    /// The wire bytes. Contacts beyond [`MAX_CONTACTS`] and addresses over
    /// [`MAX_ADDRESS_LEN`] are not encoded (an address that long is sent empty).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_HEADER_LEN + 64);
        out.push(MESSAGE_VERSION);
        let kind = match &self.body {
            Body::Ping => PING,
            Body::Pong => PONG,
            Body::FindNode(_) => FIND_NODE,
            Body::FindValue(_) => FIND_VALUE,
            Body::Nodes(_) => NODES,
            Body::Value(_) => VALUE,
            Body::Store(_) => STORE,
            Body::StoreResult(_) => STORE_RESULT,
        };
        out.push(kind);
        out.extend_from_slice(&self.request.to_le_bytes());
        match &self.body {
            Body::Ping | Body::Pong => {}
            Body::FindNode(k) | Body::FindValue(k) => out.extend_from_slice(&k.0),
            Body::Nodes(contacts) => {
                let contacts = &contacts[..contacts.len().min(MAX_CONTACTS)];
                #[allow(clippy::cast_possible_truncation)] // at most 20
                out.push(contacts.len() as u8);
                for c in contacts {
                    out.extend_from_slice(c.peer.as_bytes());
                    let address = if c.address.len() <= MAX_ADDRESS_LEN.min(255) {
                        c.address.as_bytes()
                    } else {
                        &[]
                    };
                    #[allow(clippy::cast_possible_truncation)] // at most 255
                    out.push(address.len() as u8);
                    out.extend_from_slice(address);
                }
            }
            Body::Value(record) | Body::Store(record) => {
                #[allow(clippy::cast_possible_truncation)] // records are at most 1 MiB
                out.extend_from_slice(&(record.len() as u32).to_le_bytes());
                out.extend_from_slice(record);
            }
            Body::StoreResult(status) => out.push(*status as u8),
        }
        out
    }

    /// Parses wire bytes.
    ///
    /// # Errors
    /// [`DecodeError`]; the length is checked first.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let m = |e: mesh_crypto::Error| match e {
            mesh_crypto::Error::Malformed(m) => DecodeError::Malformed(m),
            _ => DecodeError::Malformed("truncated or invalid field"),
        };
        let mut r = Reader::new(bytes);
        if r.u8().map_err(m)? != MESSAGE_VERSION {
            return Err(DecodeError::Malformed("unknown DHT message version"));
        }
        let kind = r.u8().map_err(m)?;
        let request = r.u64_le().map_err(m)?;
        let body = match kind {
            PING => Body::Ping,
            PONG => Body::Pong,
            FIND_NODE => Body::FindNode(Key(r.array().map_err(m)?)),
            FIND_VALUE => Body::FindValue(Key(r.array().map_err(m)?)),
            NODES => {
                let count = usize::from(r.u8().map_err(m)?);
                if count > MAX_CONTACTS {
                    return Err(DecodeError::Malformed("too many contacts"));
                }
                let mut contacts = Vec::with_capacity(count);
                for _ in 0..count {
                    // Not validated as a point: a contact is a claim, proven only by the
                    // handshake of a link to it; validating 20 keys would cost the receiver
                    // 20 signature checks' worth per answer.
                    let peer = PeerId::from_bytes_unvalidated(r.array().map_err(m)?);
                    let len = usize::from(r.u8().map_err(m)?);
                    if len > MAX_ADDRESS_LEN {
                        return Err(DecodeError::Malformed("contact address too long"));
                    }
                    let address = std::str::from_utf8(r.bytes(len).map_err(m)?)
                        .map_err(|_| DecodeError::Malformed("contact address is not UTF-8"))?
                        .to_string();
                    contacts.push(WireContact { peer, address });
                }
                Body::Nodes(contacts)
            }
            VALUE | STORE => {
                let len = r.u32_le().map_err(m)? as usize;
                if len > MAX_RECORD_LEN {
                    return Err(DecodeError::Malformed("record too long"));
                }
                let record = r.bytes(len).map_err(m)?.to_vec();
                if kind == VALUE {
                    Body::Value(record)
                } else {
                    Body::Store(record)
                }
            }
            STORE_RESULT => Body::StoreResult(match r.u8().map_err(m)? {
                0 => StoreStatus::Stored,
                1 => StoreStatus::TooLarge,
                2 => StoreStatus::RateLimited,
                3 => StoreStatus::Quota,
                4 => StoreStatus::Invalid,
                5 => StoreStatus::Stale,
                _ => return Err(DecodeError::Malformed("unknown store status")),
            }),
            _ => return Err(DecodeError::Malformed("unknown DHT message kind")),
        };
        r.finish().map_err(m)?;
        Ok(Self { request, body })
    }
}

#[cfg(test)]
mod tests {
    use mesh_crypto::Identity;

    use super::*;

    fn peer(n: u8) -> PeerId {
        Identity::from_seed(&[n; 32]).peer_id()
    }

    fn samples() -> Vec<Message> {
        let contacts = (0..20)
            .map(|i| WireContact {
                peer: peer(i),
                address: format!("127.0.0.1:{}", 4000 + u16::from(i)),
            })
            .collect();
        [
            Body::Ping,
            Body::Pong,
            Body::FindNode(Key([7; 32])),
            Body::FindValue(Key([8; 32])),
            Body::Nodes(contacts),
            Body::Nodes(Vec::new()),
            Body::Value(vec![1; 1000]),
            Body::Store(vec![2; 10]),
            Body::StoreResult(StoreStatus::Quota),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            request: i as u64 * 0x0101_0101,
            body,
        })
        .collect()
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_fails() {
        for msg in samples() {
            let bytes = msg.encode();
            assert_eq!(Message::decode(&bytes).unwrap(), msg);
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{msg:?} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Message::decode(&long).is_err(), "trailing byte accepted");
        }
    }

    #[test]
    fn limits_are_enforced_at_their_boundaries() {
        // 21 contacts: refused whole (encode never makes it; a hostile peer might).
        let mut msg = Message {
            request: 1,
            body: Body::Nodes(Vec::new()),
        }
        .encode();
        msg[MESSAGE_HEADER_LEN] = 21;
        assert_eq!(
            Message::decode(&msg),
            Err(DecodeError::Malformed("too many contacts"))
        );
        // Encoding caps the list at 20.
        let many = (0..30)
            .map(|i| WireContact {
                peer: peer(i),
                address: String::new(),
            })
            .collect();
        let m = Message {
            request: 2,
            body: Body::Nodes(many),
        };
        let Body::Nodes(back) = Message::decode(&m.encode()).unwrap().body else {
            panic!("not nodes")
        };
        assert_eq!(back.len(), MAX_CONTACTS);
        // The largest record fits; a message one byte longer than the largest is refused
        // before parsing.
        let largest = Message {
            request: 3,
            body: Body::Store(vec![0; MAX_RECORD_LEN]),
        }
        .encode();
        assert_eq!(largest.len(), MAX_MESSAGE_LEN);
        assert!(Message::decode(&largest).is_ok());
        let mut over = largest;
        over.push(0);
        assert!(matches!(
            Message::decode(&over),
            Err(DecodeError::TooLarge { .. })
        ));
        // A record length field larger than allowed is refused without allocating it.
        let mut lying = Message {
            request: 4,
            body: Body::Value(vec![]),
        }
        .encode();
        lying[MESSAGE_HEADER_LEN..MESSAGE_HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Message::decode(&lying),
            Err(DecodeError::Malformed("record too long"))
        );
        // Unknown kinds, versions and statuses.
        let mut bad = Message {
            request: 5,
            body: Body::Ping,
        }
        .encode();
        bad[1] = 99;
        assert!(Message::decode(&bad).is_err());
        bad[0] = 2;
        assert!(Message::decode(&bad).is_err());
        let mut status = Message {
            request: 6,
            body: Body::StoreResult(StoreStatus::Stored),
        }
        .encode();
        *status.last_mut().unwrap() = 9;
        assert!(Message::decode(&status).is_err());
    }
}
