//! Frames: what every link carries. `version u8 = 1 | protocol u8 | payload`.
//!
//! The protocol id lets DHT, gossip, blob, recovery, messaging and signaling share one link.
//! Sizes are checked before anything is allocated.

use crate::TransportError;

/// Frame format version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest payload: a 1 MiB DHT value with its record around it.
pub const MAX_FRAME_PAYLOAD: usize = 1024 * 1024 + 4096;

/// Which protocol a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolId(pub u8);

impl ProtocolId {
    /// Link control (ping, pong, close); handled by the connection itself.
    pub const CONTROL: Self = Self(0);
    /// Kademlia DHT.
    pub const DHT: Self = Self(1);
    /// Push and pull gossip.
    pub const GOSSIP: Self = Self(2);
    /// Blob transfer.
    pub const BLOB: Self = Self(3);
    /// Social recovery.
    pub const RECOVERY: Self = Self(4);
    /// Direct messages.
    pub const MESSAGING: Self = Self(5);
    /// WebRTC signaling relayed through the mesh.
    pub const SIGNALING: Self = Self(6);
    /// Peer information a [`crate::pool::Pool`] sends first on every link: the address its
    /// sender can be dialed at ([`encode_peer_address`]).
    pub const PEER: Self = Self(7);
}

/// Version of the [`ProtocolId::PEER`] payload.
pub const PEER_INFO_VERSION: u8 = 1;
/// Longest address a [`ProtocolId::PEER`] frame carries.
pub const MAX_PEER_ADDRESS_LEN: usize = 256;

/// The [`ProtocolId::PEER`] payload: `version u8 = 1 | len u16 LE | address (UTF-8)`. An
/// address over [`MAX_PEER_ADDRESS_LEN`] is sent as empty (not dialable).
pub fn encode_peer_address(address: &str) -> Vec<u8> {
    let address = if address.len() <= MAX_PEER_ADDRESS_LEN {
        address
    } else {
        ""
    };
    let mut out = Vec::with_capacity(3 + address.len());
    out.push(PEER_INFO_VERSION);
    #[allow(clippy::cast_possible_truncation)] // at most 256
    out.extend_from_slice(&(address.len() as u16).to_le_bytes());
    out.extend_from_slice(address.as_bytes());
    out
}

/// Reads a [`ProtocolId::PEER`] payload.
///
/// # Errors
/// [`TransportError::Malformed`] for an unknown version, a wrong length, an address over
/// [`MAX_PEER_ADDRESS_LEN`] or one that is not UTF-8.
pub fn decode_peer_address(payload: &[u8]) -> Result<String, TransportError> {
    if payload.first() != Some(&PEER_INFO_VERSION) {
        return Err(TransportError::Malformed("unknown peer info version"));
    }
    let len: [u8; 2] = payload
        .get(1..3)
        .and_then(|s| s.try_into().ok())
        .ok_or(TransportError::Malformed("short peer info"))?;
    let len = usize::from(u16::from_le_bytes(len));
    if len > MAX_PEER_ADDRESS_LEN || payload.len() != 3 + len {
        return Err(TransportError::Malformed("peer info length"));
    }
    String::from_utf8(payload[3..].to_vec())
        .map_err(|_| TransportError::Malformed("peer address is not UTF-8"))
}

/// One message on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol the payload belongs to.
    pub protocol: ProtocolId,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame, refused if the payload is over [`MAX_FRAME_PAYLOAD`].
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`].
    pub fn new(protocol: ProtocolId, payload: Vec<u8>) -> Result<Self, TransportError> {
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(TransportError::FrameTooLarge {
                len: payload.len(),
                max: MAX_FRAME_PAYLOAD,
            });
        }
        Ok(Self { protocol, payload })
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + self.payload.len());
        out.push(FRAME_VERSION);
        out.push(self.protocol.0);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses wire bytes.
    ///
    /// # Errors
    /// [`TransportError::Malformed`] for a short frame or another version,
    /// [`TransportError::FrameTooLarge`] over the limit.
    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        if bytes.len() < FRAME_HEADER_LEN {
            return Err(TransportError::Malformed("frame shorter than its header"));
        }
        if bytes[0] != FRAME_VERSION {
            return Err(TransportError::Malformed("unknown frame version"));
        }
        let len = bytes.len() - FRAME_HEADER_LEN;
        if len > MAX_FRAME_PAYLOAD {
            return Err(TransportError::FrameTooLarge {
                len,
                max: MAX_FRAME_PAYLOAD,
            });
        }
        Ok(Self {
            protocol: ProtocolId(bytes[1]),
            payload: bytes[FRAME_HEADER_LEN..].to_vec(),
        })
    }
}

/// Link-control messages (protocol 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Ping(u64),
    Pong(u64),
    Close,
}

impl Control {
    pub(crate) fn encode(self) -> Frame {
        let mut p = Vec::with_capacity(9);
        match self {
            Self::Ping(n) => {
                p.push(1);
                p.extend_from_slice(&n.to_le_bytes());
            }
            Self::Pong(n) => {
                p.push(2);
                p.extend_from_slice(&n.to_le_bytes());
            }
            Self::Close => p.push(3),
        }
        Frame {
            protocol: ProtocolId::CONTROL,
            payload: p,
        }
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, TransportError> {
        let seq = || -> Result<u64, TransportError> {
            let b: [u8; 8] = payload
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .ok_or(TransportError::Malformed("short control frame"))?;
            if payload.len() != 9 {
                return Err(TransportError::Malformed("control frame length"));
            }
            Ok(u64::from_le_bytes(b))
        };
        match payload.first() {
            Some(1) => Ok(Self::Ping(seq()?)),
            Some(2) => Ok(Self::Pong(seq()?)),
            Some(3) if payload.len() == 1 => Ok(Self::Close),
            _ => Err(TransportError::Malformed("unknown control frame")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_round_trip_and_bad_ones_are_refused() {
        for a in ["", "127.0.0.1:4000", &"x".repeat(MAX_PEER_ADDRESS_LEN)] {
            assert_eq!(decode_peer_address(&encode_peer_address(a)).unwrap(), a);
        }
        // Too long to advertise: sent as "not dialable".
        let long = "x".repeat(MAX_PEER_ADDRESS_LEN + 1);
        assert_eq!(
            decode_peer_address(&encode_peer_address(&long)).unwrap(),
            ""
        );
        assert_eq!(encode_peer_address("ab"), [1, 2, 0, b'a', b'b']);
        for bad in [
            &[][..],
            &[2, 0, 0],
            &[1, 0],
            &[1, 3, 0, b'a', b'b'],
            &[1, 1, 0, b'a', b'b'],
            &[1, 1, 0, 0xff],
        ] {
            assert!(decode_peer_address(bad).is_err(), "{bad:?}");
        }
        let mut over = vec![1];
        over.extend_from_slice(&257u16.to_le_bytes());
        over.extend_from_slice(&[b'a'; 257]);
        assert!(decode_peer_address(&over).is_err());
    }

    #[test]
    fn round_trip_and_limits() {
        let f = Frame::new(ProtocolId::DHT, vec![1, 2, 3]).unwrap();
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        assert!(Frame::new(ProtocolId::DHT, vec![0; MAX_FRAME_PAYLOAD]).is_ok());
        assert!(matches!(
            Frame::new(ProtocolId::DHT, vec![0; MAX_FRAME_PAYLOAD + 1]),
            Err(TransportError::FrameTooLarge { .. })
        ));
        let mut big = vec![FRAME_VERSION, 1];
        big.resize(FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD + 1, 0);
        assert!(matches!(
            Frame::decode(&big),
            Err(TransportError::FrameTooLarge { .. })
        ));
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[1]).is_err());
        assert!(Frame::decode(&[2, 1, 0]).is_err());
        assert_eq!(Frame::decode(&[1, 9]).unwrap().payload, Vec::<u8>::new());
    }

    #[test]
    fn control_frames() {
        for c in [Control::Ping(7), Control::Pong(u64::MAX), Control::Close] {
            assert_eq!(Control::decode(&c.encode().payload).unwrap(), c);
        }
        assert!(Control::decode(&[]).is_err());
        assert!(Control::decode(&[1, 0]).is_err());
        assert!(Control::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Control::decode(&[9]).is_err());
    }
}
