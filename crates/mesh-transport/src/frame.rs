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
