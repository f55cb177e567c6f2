//! What the WebRTC transport puts on the wire, on every target (sans-IO): session descriptions
//! for signaling, the channel binding made from the DTLS fingerprints, and frames cut into
//! data-channel messages. Byte layouts are in `docs/PROTOCOL.md`, "WebRTC transport".

use mesh_crypto::wire::Reader;
use mesh_crypto::{PeerId, SignedPayload};
use mesh_transport::TransportError;
use mesh_transport::frame::{FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};

/// Description format version.
pub const DESCRIPTION_VERSION: u8 = 1;
/// Longest SDP accepted in a description (a data-channel-only SDP with host candidates is
/// under 1 KiB; many candidates stay well under this).
pub const MAX_SDP_LEN: usize = 16 * 1024;
/// Longest encoded description.
pub const MAX_DESCRIPTION_LEN: usize = 2 + 16 + 32 + 32 + 2 + MAX_SDP_LEN;
/// Largest data-channel message we send: 16 KiB, what every WebRTC implementation delivers.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Data bytes per message after the one-byte chunk header.
pub const CHUNK_DATA_LEN: usize = MAX_MESSAGE_LEN - 1;
/// Largest frame on the unreliable channel: one message, never chunked.
pub const MAX_UNRELIABLE_FRAME: usize = CHUNK_DATA_LEN - FRAME_HEADER_LEN;
/// Stream id of the reliable, ordered data channel (negotiated out of band on both sides).
pub const RELIABLE_CHANNEL_ID: u16 = 0;
/// Stream id of the unordered channel without retransmissions.
pub const UNRELIABLE_CHANNEL_ID: u16 = 1;
/// Label of the reliable channel.
pub const RELIABLE_CHANNEL_LABEL: &str = "mesh";
/// Label of the unreliable channel.
pub const UNRELIABLE_CHANNEL_LABEL: &str = "mesh-unreliable";

const CHUNK_LAST: u8 = 0x01;
const CHUNK_MORE: u8 = 0x00;

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionKind {
    /// The dialling side's SDP offer.
    Offer = 1,
    /// The answering side's SDP answer.
    Answer = 2,
}

/// One side's session description, as signaling carries it.
///
/// Signaling is untrusted: nothing here is believed until the mesh handshake, bound to the
/// DTLS fingerprints the SDP announced, proves both identities over the connected channel.
/// `from` and `to` only route and let a peer drop offers that are not for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Offer or answer.
    pub kind: DescriptionKind,
    /// Random id of this attempt; the answer repeats the offer's.
    pub session: [u8; 16],
    /// Who sends it.
    pub from: PeerId,
    /// Who it is for.
    pub to: PeerId,
    /// The SDP.
    pub sdp: String,
}

impl Description {
    /// The wire bytes: `version u8 | kind u8 | session [16] | from [32] | to [32] |
    /// sdp_len u16 LE | sdp`.
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`] if the SDP is over [`MAX_SDP_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        let mut out = Vec::with_capacity(MAX_DESCRIPTION_LEN.min(84 + self.sdp.len()));
        self.encode_into(&mut out)?;
        Ok(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), TransportError> {
        let len = u16::try_from(self.sdp.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_SDP_LEN)
            .ok_or(TransportError::FrameTooLarge {
                len: self.sdp.len(),
                max: MAX_SDP_LEN,
            })?;
        out.push(DESCRIPTION_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.session);
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.sdp.as_bytes());
        Ok(())
    }

    /// Parses wire bytes; the length is checked before anything is copied.
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`], [`TransportError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        if bytes.len() > MAX_DESCRIPTION_LEN {
            return Err(TransportError::FrameTooLarge {
                len: bytes.len(),
                max: MAX_DESCRIPTION_LEN,
            });
        }
        Self::parse(bytes).map_err(|e| match e {
            mesh_crypto::Error::Malformed(m) => TransportError::Malformed(m),
            _ => TransportError::Malformed("session description"),
        })
    }

    fn parse(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        use mesh_crypto::Error::Malformed;
        let mut r = Reader::new(bytes);
        if r.u8()? != DESCRIPTION_VERSION {
            return Err(Malformed("unknown session description version"));
        }
        let kind = match r.u8()? {
            1 => DescriptionKind::Offer,
            2 => DescriptionKind::Answer,
            _ => return Err(Malformed("unknown session description kind")),
        };
        let session = r.array()?;
        let from = PeerId::from_bytes(r.array()?)?;
        let to = PeerId::from_bytes(r.array()?)?;
        let len = usize::from(r.u16_le()?);
        if len > MAX_SDP_LEN {
            return Err(Malformed("SDP too long"));
        }
        let sdp = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| Malformed("SDP is not UTF-8"))?
            .to_string();
        r.finish()?;
        Ok(Self {
            kind,
            session,
            from,
            to,
            sdp,
        })
    }
}

/// Signed descriptions are what manual pairing (copy-paste, QR) shows: the reader sees who
/// made the offer before accepting it.
impl SignedPayload for Description {
    const DOMAIN: &'static str = "mesh/webrtc-description/v1";
    const MAX_LEN: usize = MAX_DESCRIPTION_LEN;

    fn encode(&self, out: &mut Vec<u8>) {
        // Only ever called on descriptions the transport built, whose SDP length it checked;
        // an oversized one encodes as an empty description that `decode` rejects.
        let mark = out.len();
        if self.encode_into(out).is_err() {
            out.truncate(mark);
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        Self::parse(bytes)
    }
}

/// Parses a DTLS certificate fingerprint as SDP (`a=fingerprint:sha-256 AB:CD:...`) and
/// `getStats()` (`AB:CD:...`) write it. Only SHA-256 is accepted.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let hex = match text.split_once(' ') {
        Some((algorithm, hex)) if algorithm.eq_ignore_ascii_case("sha-256") => hex.trim(),
        Some(_) => return None,
        None => text,
    };
    let mut out = [0u8; 32];
    let mut parts = hex.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The SHA-256 fingerprint announced in an SDP (`a=fingerprint:sha-256 ...`), session or
/// media level. Lines of other hash functions are skipped (RFC 8122 allows several; aiortc
/// sends SHA-256, SHA-384 and SHA-512); two SHA-256 lines that differ are refused, as no
/// single certificate matches both.
pub fn sdp_fingerprint(sdp: &str) -> Option<[u8; 32]> {
    let mut found = None;
    for fp in sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .filter_map(parse_fingerprint)
    {
        if found.is_some_and(|f| f != fp) {
            return None;
        }
        found = Some(fp);
    }
    found
}

/// The channel binding of a WebRTC link: the DTLS certificate fingerprints of the offering
/// and the answering side, in that order. A party that terminates DTLS on either side (a
/// splicing signaling server) makes the two ends see different pairs.
pub fn channel_binding(offerer: &[u8; 32], answerer: &[u8; 32]) -> Vec<u8> {
    const LABEL: &[u8] = b"mesh/webrtc-dtls/v1";
    let mut b = Vec::with_capacity(LABEL.len() + 64);
    b.extend_from_slice(LABEL);
    b.extend_from_slice(offerer);
    b.extend_from_slice(answerer);
    b
}

/// Cuts an encoded frame into data-channel messages: `flags u8 | data`, flags `1` on the last.
pub fn chunks(frame: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let count = frame.len().div_ceil(CHUNK_DATA_LEN).max(1);
    (0..count).map(move |i| {
        let data = &frame[i * CHUNK_DATA_LEN..frame.len().min((i + 1) * CHUNK_DATA_LEN)];
        let mut m = Vec::with_capacity(1 + data.len());
        m.push(if i + 1 == count {
            CHUNK_LAST
        } else {
            CHUNK_MORE
        });
        m.extend_from_slice(data);
        m
    })
}

/// A frame sent on the unreliable channel: a single message.
///
/// # Errors
/// [`TransportError::FrameTooLarge`] over [`MAX_UNRELIABLE_FRAME`] payload bytes.
pub fn single_message(frame: &[u8]) -> Result<Vec<u8>, TransportError> {
    if frame.len() > CHUNK_DATA_LEN {
        return Err(TransportError::FrameTooLarge {
            len: frame.len().saturating_sub(FRAME_HEADER_LEN),
            max: MAX_UNRELIABLE_FRAME,
        });
    }
    let mut m = Vec::with_capacity(1 + frame.len());
    m.push(CHUNK_LAST);
    m.extend_from_slice(frame);
    Ok(m)
}

/// Reassembles frames from the reliable channel's messages. Memory is bounded by the largest
/// frame: a message that would take a frame past it fails before it is copied.
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    /// Largest encoded frame.
    pub const MAX: usize = FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD;

    /// Takes one message; returns a whole encoded frame when its last chunk arrived.
    ///
    /// # Errors
    /// [`TransportError::Malformed`] for an empty message or unknown flags,
    /// [`TransportError::FrameTooLarge`] past [`Self::MAX`]. The link must be closed.
    pub fn push(&mut self, message: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        let (&flags, data) = message
            .split_first()
            .ok_or(TransportError::Malformed("empty data-channel message"))?;
        if flags & !CHUNK_LAST != 0 {
            return Err(TransportError::Malformed("unknown chunk flags"));
        }
        let len = self.buf.len() + data.len();
        if len > Self::MAX {
            self.buf = Vec::new();
            return Err(TransportError::FrameTooLarge {
                len: len.saturating_sub(FRAME_HEADER_LEN),
                max: MAX_FRAME_PAYLOAD,
            });
        }
        if flags == CHUNK_LAST && self.buf.is_empty() {
            return Ok(Some(data.to_vec()));
        }
        if self.buf.capacity() < len {
            // Grow geometrically, but never past the largest frame.
            let target = (len * 2).min(Self::MAX);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok((flags == CHUNK_LAST).then(|| std::mem::take(&mut self.buf)))
    }
}

/// One message of the unreliable channel: the encoded frame it carries.
///
/// # Errors
/// [`TransportError::Malformed`] unless it is a single, whole chunk;
/// [`TransportError::FrameTooLarge`] for a message over [`MAX_MESSAGE_LEN`], which no sender
/// makes ([`single_message`] refuses it).
pub fn unreliable_frame(message: &[u8]) -> Result<&[u8], TransportError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(TransportError::FrameTooLarge {
            len: message.len().saturating_sub(1 + FRAME_HEADER_LEN),
            max: MAX_UNRELIABLE_FRAME,
        });
    }
    match message.split_first() {
        Some((&CHUNK_LAST, data)) => Ok(data),
        _ => Err(TransportError::Malformed(
            "unreliable message must be one whole chunk",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data
mod tests {
    use mesh_crypto::Identity;

    use super::*;

    fn peer(n: u8) -> PeerId {
        Identity::from_seed(&[n; 32]).peer_id()
    }

    #[test]
    fn descriptions_round_trip_and_bad_input_is_refused() {
        let d = Description {
            kind: DescriptionKind::Offer,
            session: [7; 16],
            from: peer(1),
            to: peer(2),
            sdp: "v=0\r\n".into(),
        };
        let bytes = d.encode().unwrap();
        assert_eq!(Description::decode(&bytes).unwrap(), d);
        for cut in 0..bytes.len() {
            assert!(Description::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[1] = 9;
        assert_eq!(
            Description::decode(&bad),
            Err(TransportError::Malformed(
                "unknown session description kind"
            ))
        );
        let mut trailing = bytes;
        trailing.push(0);
        assert!(Description::decode(&trailing).is_err());
        let huge = Description {
            sdp: "a".repeat(MAX_SDP_LEN + 1),
            ..d
        };
        assert!(matches!(
            huge.encode(),
            Err(TransportError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            Description::decode(&vec![1; MAX_DESCRIPTION_LEN + 1]),
            Err(TransportError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn fingerprints_parse_from_sdp_and_stats() {
        let hex = (0..32u8)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(parse_fingerprint(&hex), Some(want));
        assert_eq!(parse_fingerprint(&format!("sha-256 {hex}")), Some(want));
        assert_eq!(
            parse_fingerprint(&format!("SHA-256 {}", hex.to_lowercase())),
            Some(want)
        );
        assert_eq!(parse_fingerprint(&format!("sha-1 {hex}")), None);
        assert_eq!(parse_fingerprint(&hex[..hex.len() - 3]), None);
        assert_eq!(parse_fingerprint(&format!("{hex}:00")), None);
        assert_eq!(parse_fingerprint("zz"), None);
        let sdp = format!(
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:sha-256 {hex}\r\n"
        );
        assert_eq!(sdp_fingerprint(&sdp), Some(want));
        assert_eq!(sdp_fingerprint("v=0\r\n"), None);
        // Other hash functions first, as RFC 8122 allows: the SHA-256 line is the one.
        let sha384 = vec!["AB"; 48].join(":");
        let several = format!(
            "v=0\r\na=fingerprint:sha-384 {sha384}\r\na=fingerprint:sha-256 {hex}\r\na=fingerprint:sha-256 {hex}\r\n"
        );
        assert_eq!(sdp_fingerprint(&several), Some(want));
        // Only other hash functions, or two different SHA-256 values: nothing to bind.
        assert_eq!(
            sdp_fingerprint(&format!("a=fingerprint:sha-384 {sha384}\r\n")),
            None
        );
        let other = vec!["01"; 32].join(":");
        assert_eq!(
            sdp_fingerprint(&format!(
                "a=fingerprint:sha-256 {hex}\r\na=fingerprint:sha-256 {other}\r\n"
            )),
            None
        );
    }

    #[test]
    fn bindings_depend_on_both_fingerprints_and_their_order() {
        let (a, b) = ([1; 32], [2; 32]);
        assert_ne!(channel_binding(&a, &b), channel_binding(&b, &a));
        assert_ne!(channel_binding(&a, &b), channel_binding(&a, &a));
    }

    #[test]
    fn frames_of_every_size_survive_chunking() {
        for len in [
            0,
            1,
            CHUNK_DATA_LEN - 1,
            CHUNK_DATA_LEN,
            CHUNK_DATA_LEN + 1,
            3 * CHUNK_DATA_LEN,
            Reassembler::MAX,
        ] {
            let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut r = Reassembler::default();
            let mut out = None;
            let messages: Vec<_> = chunks(&frame).collect();
            assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE_LEN));
            for (i, m) in messages.iter().enumerate() {
                let got = r.push(m).unwrap();
                assert_eq!(got.is_some(), i + 1 == messages.len());
                out = got.or(out);
            }
            assert_eq!(out.unwrap(), frame, "len {len}");
        }
    }

    #[test]
    fn oversized_and_malformed_messages_fail() {
        let mut r = Reassembler::default();
        let more = [&[CHUNK_MORE][..], &[0; CHUNK_DATA_LEN]].concat();
        let mut failed = None;
        for _ in 0..=(Reassembler::MAX / CHUNK_DATA_LEN) {
            if let Err(e) = r.push(&more) {
                failed = Some(e);
                break;
            }
        }
        assert!(matches!(failed, Some(TransportError::FrameTooLarge { .. })));
        assert!(r.buf.capacity() <= Reassembler::MAX);
        assert!(r.push(&[]).is_err());
        assert_eq!(
            r.push(&[0x80, 1]),
            Err(TransportError::Malformed("unknown chunk flags"))
        );
        assert!(single_message(&vec![0; CHUNK_DATA_LEN + 1]).is_err());
        let m = single_message(&[1, 2]).unwrap();
        assert_eq!(unreliable_frame(&m).unwrap(), &[1, 2]);
        assert!(unreliable_frame(&[CHUNK_MORE, 1]).is_err());
        // The largest message a sender makes is read back; one byte more is refused (found
        // by fuzzing: the receiver took any size the sender would never send).
        let largest = single_message(&vec![7; CHUNK_DATA_LEN]).unwrap();
        assert_eq!(largest.len(), MAX_MESSAGE_LEN);
        assert_eq!(unreliable_frame(&largest).unwrap().len(), CHUNK_DATA_LEN);
        let mut over = largest;
        over.push(7);
        assert!(matches!(
            unreliable_frame(&over),
            Err(TransportError::FrameTooLarge { .. })
        ));
    }
}
