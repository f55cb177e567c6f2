//! Gossip messages and the wire format of the gossip protocol (frames of protocol 2).
//!
//! A gossip message is a `Signed<GossipPayload>` (domain `mesh/gossip/v1`): its author signs
//! the topic and body with a validity window. Its id is the digest the signature covers, so it
//! is the same at every hop and is computed without verifying ([`message_id`]): a duplicate
//! costs one hash. The hop count and TTL travel outside the signed bytes, in the PUSH frame.

use mesh_crypto::hash::{HASH_LEN, domain_hash};
use mesh_crypto::wire::Reader;
use mesh_crypto::{SIGNATURE_LEN, SIGNED_HEADER_LEN, Signed, SignedPayload};

use crate::bloom::{Bloom, MAX_FILTER_BITS, MAX_HASHES};

/// Version of the payload and of every frame.
pub const GOSSIP_VERSION: u8 = 1;
/// Largest signed message (envelope included): 64 KiB. Gossip carries small messages; files
/// go through the blob store.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest topic.
pub const MAX_TOPIC_LEN: usize = 64;
/// Highest TTL accepted; a larger one is lowered to it.
pub const MAX_TTL: u8 = 16;
/// Most partition bits a digest may use (so at most 64 filters per round).
pub const MAX_PARTITION_BITS: u8 = 6;
/// Messages in one MESSAGES frame at most.
pub const MAX_MESSAGES_PER_FRAME: usize = 1024;
/// Largest frame payload produced or accepted: the link's 1 MiB frame limit, minus room.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// What an author says: a topic and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipPayload {
    /// What the message is about (at most [`MAX_TOPIC_LEN`] bytes).
    pub topic: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
}

impl SignedPayload for GossipPayload {
    const DOMAIN: &'static str = "mesh/gossip/v1";
    // The whole signed message is at most MAX_MESSAGE_LEN: the payload gets what the
    // envelope leaves.
    const MAX_LEN: usize = MAX_MESSAGE_LEN - SIGNED_HEADER_LEN - SIGNATURE_LEN;

    /// `version u8 = 1 | topic_len u8 | topic | body` (the body runs to the end).
    fn encode(&self, out: &mut Vec<u8>) {
        let topic = &self.topic[..self.topic.len().min(MAX_TOPIC_LEN)];
        out.push(GOSSIP_VERSION);
        #[allow(clippy::cast_possible_truncation)] // at most 64
        out.push(topic.len() as u8);
        out.extend_from_slice(topic);
        out.extend_from_slice(&self.body);
    }

    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        let mut r = Reader::new(bytes);
        if r.u8()? != GOSSIP_VERSION {
            return Err(mesh_crypto::Error::Malformed(
                "unknown gossip payload version",
            ));
        }
        let len = usize::from(r.u8()?);
        if len > MAX_TOPIC_LEN {
            return Err(mesh_crypto::Error::Malformed("gossip topic too long"));
        }
        let topic = r.bytes(len)?.to_vec();
        let body = r.bytes(r.remaining())?.to_vec();
        Ok(Self { topic, body })
    }
}

/// A verified gossip message.
pub type GossipMessage = Signed<GossipPayload>;

/// A message id: the digest its author signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; HASH_LEN]);

/// The id of an encoded message, computed without verifying it (dedup before verification).
/// `None` if it is too short to be a signed record.
pub fn message_id(bytes: &[u8]) -> Option<MessageId> {
    let signed = bytes.len().checked_sub(SIGNATURE_LEN)?;
    if signed < SIGNED_HEADER_LEN {
        return None;
    }
    Some(MessageId(
        domain_hash(GossipPayload::DOMAIN, &[&bytes[..signed]]).0,
    ))
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Bad layout, unknown version or kind, trailing bytes.
    #[error("malformed gossip frame: {0}")]
    Malformed(&'static str),
    /// Over a size limit.
    #[error("{what} of {len} bytes or items, over the limit of {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Digest parameters out of range.
    #[error("digest parameters out of range: {0}")]
    BadDigest(&'static str),
}

impl From<mesh_crypto::Error> for FrameError {
    fn from(e: mesh_crypto::Error) -> Self {
        match e {
            mesh_crypto::Error::TooLarge { what, len, max } => Self::TooLarge { what, len, max },
            _ => Self::Malformed("truncated or inconsistent"),
        }
    }
}

/// A digest: a Bloom filter of the ids a peer holds in one partition of the id space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Seed of the filter's hashing, fresh every round.
    pub seed: u64,
    /// How many leading bits of an id select its partition (0: one partition).
    pub partition_bits: u8,
    /// Which partition this filter covers.
    pub partition: u16,
    /// The filter.
    pub filter: Bloom,
}

impl Digest {
    /// Whether `id` falls in this digest's partition.
    pub fn covers(&self, id: &MessageId) -> bool {
        partition_of(id, self.partition_bits) == self.partition
    }
}

/// The partition `id` falls in with `bits` partition bits: its first `bits` bits.
pub fn partition_of(id: &MessageId, bits: u8) -> u16 {
    if bits == 0 {
        return 0;
    }
    let top = u16::from_be_bytes([id.0[0], id.0[1]]);
    top >> (16 - u16::from(bits.min(16)))
}

/// A gossip frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message pushed on: `ttl` hops left, `hops` taken so far.
    Push {
        /// Hops it may still travel.
        ttl: u8,
        /// Hops it travelled to reach the receiver.
        hops: u8,
        /// The signed message.
        message: Vec<u8>,
    },
    /// "I hold these": asks for what the filter does not contain.
    Digest(Digest),
    /// Messages answering a digest.
    Messages(Vec<Vec<u8>>),
}

const PUSH: u8 = 1;
const DIGEST: u8 = 2;
const MESSAGES: u8 = 3;

impl Frame {
    /// The wire bytes: `version u8 = 1 | kind u8 | body`; see `docs/PROTOCOL.md` §12.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![GOSSIP_VERSION];
        match self {
            Self::Push { ttl, hops, message } => {
                out.extend_from_slice(&[PUSH, *ttl, *hops]);
                out.extend_from_slice(message);
            }
            Self::Digest(d) => {
                out.push(DIGEST);
                out.extend_from_slice(&d.seed.to_le_bytes());
                out.push(d.partition_bits);
                out.extend_from_slice(&d.partition.to_le_bytes());
                out.push(d.filter.hashes());
                out.extend_from_slice(&d.filter.bits().to_le_bytes());
                out.extend_from_slice(d.filter.as_bytes());
            }
            Self::Messages(list) => {
                out.push(MESSAGES);
                #[allow(clippy::cast_possible_truncation)] // callers keep it to 1024
                out.extend_from_slice(
                    &(list.len().min(MAX_MESSAGES_PER_FRAME) as u16).to_le_bytes(),
                );
                for m in list.iter().take(MAX_MESSAGES_PER_FRAME) {
                    #[allow(clippy::cast_possible_truncation)] // at most 64 KiB
                    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                    out.extend_from_slice(m);
                }
            }
        }
        out
    }

    /// Reads a frame, checking every length and parameter before allocating.
    ///
    /// # Errors
    /// [`FrameError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                what: "gossip frame",
                len: bytes.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        if r.u8()? != GOSSIP_VERSION {
            return Err(FrameError::Malformed("unknown version"));
        }
        let frame = match r.u8()? {
            PUSH => {
                let ttl = r.u8()?;
                let hops = r.u8()?;
                let message = r.bytes(r.remaining())?;
                if message.len() > MAX_MESSAGE_LEN {
                    return Err(FrameError::TooLarge {
                        what: "gossip message",
                        len: message.len(),
                        max: MAX_MESSAGE_LEN,
                    });
                }
                Self::Push {
                    ttl: ttl.min(MAX_TTL),
                    hops,
                    message: message.to_vec(),
                }
            }
            DIGEST => {
                let seed = r.u64_le()?;
                let partition_bits = r.u8()?;
                let partition = r.u16_le()?;
                let hashes = r.u8()?;
                let bits = r.u32_le()?;
                if partition_bits > MAX_PARTITION_BITS {
                    return Err(FrameError::BadDigest("too many partition bits"));
                }
                if u32::from(partition) >> partition_bits != 0 {
                    return Err(FrameError::BadDigest("partition out of range"));
                }
                if hashes == 0 || hashes > MAX_HASHES {
                    return Err(FrameError::BadDigest("hash count"));
                }
                let bits_usize = usize::try_from(bits).unwrap_or(usize::MAX);
                if bits == 0 || bits % 8 != 0 || bits_usize > MAX_FILTER_BITS {
                    return Err(FrameError::BadDigest("filter size"));
                }
                let data = r.bytes(bits_usize / 8)?;
                let filter = Bloom::from_parts(hashes, data.to_vec())
                    .ok_or(FrameError::BadDigest("filter"))?;
                r.finish()?;
                Self::Digest(Digest {
                    seed,
                    partition_bits,
                    partition,
                    filter,
                })
            }
            MESSAGES => {
                let count = usize::from(r.u16_le()?);
                if count > MAX_MESSAGES_PER_FRAME {
                    return Err(FrameError::TooLarge {
                        what: "messages in a frame",
                        len: count,
                        max: MAX_MESSAGES_PER_FRAME,
                    });
                }
                // Each entry takes at least its 4-byte length: a count the bytes cannot hold
                // is refused before anything is allocated for it.
                if count * 4 > r.remaining() {
                    return Err(FrameError::Malformed("count larger than the frame"));
                }
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    list.push(r.len_prefixed("gossip message", MAX_MESSAGE_LEN)?.to_vec());
                }
                r.finish()?;
                Self::Messages(list)
            }
            _ => return Err(FrameError::Malformed("unknown kind")),
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use mesh_crypto::{Identity, UnixMillis};

    use super::*;

    fn message(body: &[u8]) -> Vec<u8> {
        GossipMessage::sign(
            &Identity::from_seed(&[3; 32]),
            GossipPayload {
                topic: b"chat".to_vec(),
                body: body.to_vec(),
            },
            UnixMillis(1000),
            UnixMillis(10_000),
        )
        .unwrap()
        .into_bytes()
    }

    #[test]
    fn ids_are_the_signed_digest_and_need_no_verification() {
        let m = message(b"hi");
        let verified = GossipMessage::decode(&m, UnixMillis(2000)).unwrap();
        assert_eq!(message_id(&m), Some(MessageId(verified.id().0)));
        // Anything too short to be a signed record has no id.
        assert_eq!(message_id(&[0; 100]), None);
        assert_ne!(message_id(&m), message_id(&message(b"ho")));
    }

    #[test]
    fn frames_round_trip() {
        let mut filter = Bloom::for_items(100, 0.01);
        filter.insert(&MessageId([7; 32]), 5);
        let frames = [
            Frame::Push {
                ttl: 5,
                hops: 1,
                message: message(b"x"),
            },
            Frame::Digest(Digest {
                seed: 5,
                partition_bits: 2,
                partition: 3,
                filter,
            }),
            Frame::Messages(vec![message(b"a"), message(b"b")]),
            Frame::Messages(vec![]),
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn hostile_frames_are_refused_with_a_typed_error() {
        let digest = |bits: u8, partition: u16, k: u8, m: u32, data: usize| {
            let mut out = vec![GOSSIP_VERSION, DIGEST];
            out.extend_from_slice(&1u64.to_le_bytes());
            out.push(bits);
            out.extend_from_slice(&partition.to_le_bytes());
            out.push(k);
            out.extend_from_slice(&m.to_le_bytes());
            out.extend(std::iter::repeat_n(0u8, data));
            out
        };
        assert!(Frame::decode(&digest(0, 0, 7, 64, 8)).is_ok());
        for (bad, what) in [
            (digest(7, 0, 7, 64, 8), "partition bits"),
            (digest(2, 4, 7, 64, 8), "partition"),
            (digest(0, 0, 0, 64, 8), "no hashes"),
            (digest(0, 0, 17, 64, 8), "too many hashes"),
            (digest(0, 0, 7, 60, 8), "bits not bytes"),
            (digest(0, 0, 7, 0, 0), "empty filter"),
            (digest(0, 0, 7, 64, 7), "short filter"),
            (digest(0, 0, 7, 64, 9), "trailing"),
        ] {
            assert!(
                matches!(
                    Frame::decode(&bad),
                    Err(FrameError::BadDigest(_) | FrameError::Malformed(_))
                ),
                "{what}"
            );
        }
        // A filter over the limit is refused from its header, before its bytes are read.
        let huge = u32::try_from(MAX_FILTER_BITS).unwrap() + 8;
        assert!(matches!(
            Frame::decode(&digest(0, 0, 7, huge, 0)),
            Err(FrameError::BadDigest(_))
        ));
        // A message count the frame cannot hold.
        let mut lying = vec![GOSSIP_VERSION, MESSAGES];
        lying.extend_from_slice(&1000u16.to_le_bytes());
        assert!(Frame::decode(&lying).is_err());
        let mut over = vec![GOSSIP_VERSION, MESSAGES];
        over.extend_from_slice(&1025u16.to_le_bytes());
        assert!(matches!(
            Frame::decode(&over),
            Err(FrameError::TooLarge { .. })
        ));
        // An oversized push, an unknown kind, a wrong version, an oversized frame.
        let mut big = vec![GOSSIP_VERSION, PUSH, 3, 0];
        big.extend(std::iter::repeat_n(0u8, MAX_MESSAGE_LEN + 1));
        assert!(matches!(
            Frame::decode(&big),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(Frame::decode(&[GOSSIP_VERSION, 9]).is_err());
        assert!(Frame::decode(&[2, PUSH, 1, 0]).is_err());
        assert!(Frame::decode(&vec![1; MAX_FRAME_LEN + 1]).is_err());
        // A TTL over the limit is lowered, not trusted.
        let f = Frame::Push {
            ttl: 200,
            hops: 0,
            message: message(b"t"),
        };
        assert!(matches!(
            Frame::decode(&f.encode()),
            Ok(Frame::Push { ttl: MAX_TTL, .. })
        ));
    }

    #[test]
    fn partitions_take_the_leading_bits() {
        let id = MessageId([0b1011_0000; 32]);
        assert_eq!(partition_of(&id, 0), 0);
        assert_eq!(partition_of(&id, 1), 1);
        assert_eq!(partition_of(&id, 4), 0b1011);
        assert_eq!(partition_of(&id, 6), 0b10_1100);
    }
}
