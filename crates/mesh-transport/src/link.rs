//! What every link does the same way: answer pings, count pongs into the quality, handle close,
//! and, on links without their own encryption (memory, BLE), seal and open frames with the
//! handshake's keys. On a channel that encrypts and authenticates by itself (WebRTC's DTLS, once
//! the handshake has bound it to both identities) frames travel as they are: [`Link::plain`].
//! Transports only move the bytes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::frame::Control;
use crate::handshake::Session;
use crate::quality::{ConnectionQuality, QualityTracker};
use crate::secure::{Opener, Sealer};
use crate::{Frame, ProtocolId, TransportError};

/// What a received message turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An application frame for the caller.
    Frame(Frame),
    /// A sealed reply (a pong) the transport must send back.
    Reply(Vec<u8>),
    /// Nothing for the caller (a pong, or a stale message dropped on a reordering link).
    Nothing,
    /// The remote closed the link.
    Closed,
}

/// Frame protection, control frames and quality for one link.
pub struct Link {
    /// `None` on a channel with its own encryption.
    keys: Option<(Mutex<Sealer>, Mutex<Opener>)>,
    tracker: Mutex<QualityTracker>,
    closed: AtomicBool,
    tolerate_reorder: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("sealed", &self.keys.is_some())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link whose frames are sealed with the keys of `session`. With `tolerate_reorder`, a
    /// message older than one already accepted is dropped (radio links reorder whole writes);
    /// otherwise it closes the link.
    pub fn sealed(session: Session, tolerate_reorder: bool) -> Self {
        Self {
            keys: Some((
                Mutex::new(Sealer::new(session.send_key)),
                Mutex::new(Opener::new(session.recv_key)),
            )),
            tracker: Mutex::new(QualityTracker::new()),
            closed: AtomicBool::new(false),
            tolerate_reorder,
        }
    }

    /// A link over a channel that encrypts, authenticates and orders by itself, and that the
    /// handshake bound to both identities (its channel binding): frames are sent as encoded.
    pub fn plain() -> Self {
        Self {
            keys: None,
            tracker: Mutex::new(QualityTracker::new()),
            closed: AtomicBool::new(false),
            tolerate_reorder: false,
        }
    }

    /// Whether the link is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the link closed and returns `e` (for transport failures).
    pub fn fail(&self, e: TransportError) -> TransportError {
        self.closed.store(true, Ordering::Release);
        e
    }

    fn seal(&self, frame: &Frame) -> Result<Vec<u8>, TransportError> {
        self.seal_checked(frame, false)
    }

    /// Seals `frame` unless the link is closed; with `closing`, marks it closed in the same
    /// step. The check is made under the sealer's lock, so nothing is sealed after the close
    /// message and only one caller gets a close message.
    fn seal_checked(&self, frame: &Frame, closing: bool) -> Result<Vec<u8>, TransportError> {
        let mut sealer = match &self.keys {
            Some((sealer, _)) => match sealer.lock() {
                Ok(s) => Some(s),
                Err(_) => return Err(self.fail(TransportError::Closed)),
            },
            None => None,
        };
        let was_closed = if closing {
            self.closed.swap(true, Ordering::AcqRel)
        } else {
            self.is_closed()
        };
        if was_closed {
            return Err(TransportError::Closed);
        }
        match sealer.as_mut() {
            Some(s) => s.seal(&frame.encode()),
            None => Ok(frame.encode()),
        }
    }

    /// Seals an application frame (protocol 0 is refused: it belongs to the link).
    ///
    /// # Errors
    /// [`TransportError::Closed`], [`TransportError::Malformed`] for protocol 0.
    pub fn seal_frame(&self, frame: &Frame) -> Result<Vec<u8>, TransportError> {
        if frame.protocol == ProtocolId::CONTROL {
            return Err(TransportError::Malformed(
                "protocol 0 is reserved for link control",
            ));
        }
        self.seal(frame)
    }

    /// A sealed ping, recorded as sent at `now`.
    ///
    /// # Errors
    /// [`TransportError::Closed`].
    pub fn ping(&self, now: Duration) -> Result<Vec<u8>, TransportError> {
        let seq = self
            .tracker
            .lock()
            .map_err(|_| TransportError::Closed)?
            .ping_sent(now);
        self.seal(&Control::Ping(seq).encode())
    }

    /// A sealed close message; the link is closed afterwards.
    ///
    /// # Errors
    /// [`TransportError::Closed`] if it already was.
    pub fn close(&self) -> Result<Vec<u8>, TransportError> {
        self.seal_checked(&Control::Close.encode(), true)
    }

    /// Measured quality.
    pub fn quality(&self) -> ConnectionQuality {
        self.tracker.lock().map(|t| t.quality()).unwrap_or_default()
    }

    /// Opens a received message at `now`. Bad input closes the link and returns its error.
    ///
    /// # Errors
    /// [`TransportError::Decryption`], [`TransportError::Replay`] (unless tolerated),
    /// [`TransportError::Malformed`], [`TransportError::FrameTooLarge`], [`TransportError::Closed`].
    pub fn receive(&self, sealed: &[u8], now: Duration) -> Result<Incoming, TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let decrypted;
        let plain = match &self.keys {
            None => sealed,
            Some((_, opener)) => {
                match opener
                    .lock()
                    .map_err(|_| TransportError::Closed)?
                    .open(sealed)
                {
                    Ok(p) => {
                        decrypted = p;
                        &decrypted
                    }
                    Err(TransportError::Replay) if self.tolerate_reorder => {
                        return Ok(Incoming::Nothing);
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            }
        };
        let frame = Frame::decode(plain).map_err(|e| self.fail(e))?;
        if frame.protocol != ProtocolId::CONTROL {
            return Ok(Incoming::Frame(frame));
        }
        match Control::decode(&frame.payload).map_err(|e| self.fail(e))? {
            Control::Ping(n) => Ok(Incoming::Reply(self.seal(&Control::Pong(n).encode())?)),
            Control::Pong(n) => {
                if let Ok(mut t) = self.tracker.lock() {
                    t.pong_received(n, now);
                }
                Ok(Incoming::Nothing)
            }
            Control::Close => {
                self.closed.store(true, Ordering::Release);
                Ok(Incoming::Closed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    fn pair(tolerate: bool) -> (Link, Link) {
        let s = |a: u8, b: u8| Session {
            remote: mesh_crypto::Identity::from_seed(&[a; 32]).peer_id(),
            send_key: Zeroizing::new([a; 32]),
            recv_key: Zeroizing::new([b; 32]),
            transcript: mesh_crypto::Hash256::default(),
        };
        (
            Link::sealed(s(1, 2), tolerate),
            Link::sealed(s(2, 1), tolerate),
        )
    }

    #[test]
    fn frames_pings_and_close() {
        let (a, b) = pair(false);
        frames_pings_and_close_on(&a, &b);
        let (a, b) = (Link::plain(), Link::plain());
        frames_pings_and_close_on(&a, &b);
    }

    #[test]
    fn a_plain_link_sends_frames_as_encoded_and_refuses_garbage() {
        let (a, b) = (Link::plain(), Link::plain());
        let f = Frame::new(ProtocolId::GOSSIP, vec![1, 2, 3]).unwrap();
        assert_eq!(a.seal_frame(&f).unwrap(), f.encode());
        assert_eq!(
            b.receive(&[9, 9, 9], Duration::ZERO),
            Err(TransportError::Malformed("unknown frame version"))
        );
        assert!(b.is_closed());
    }

    fn frames_pings_and_close_on(a: &Link, b: &Link) {
        let f = Frame::new(ProtocolId::BLOB, vec![9; 10]).unwrap();
        assert_eq!(
            b.receive(&a.seal_frame(&f).unwrap(), Duration::ZERO)
                .unwrap(),
            Incoming::Frame(f)
        );
        let Incoming::Reply(pong) = b
            .receive(&a.ping(Duration::ZERO).unwrap(), Duration::ZERO)
            .unwrap()
        else {
            panic!("a ping must be answered")
        };
        assert_eq!(
            a.receive(&pong, Duration::from_millis(8)).unwrap(),
            Incoming::Nothing
        );
        assert_eq!(a.quality().rtt, Some(Duration::from_millis(8)));
        assert!(
            a.seal_frame(&Frame {
                protocol: ProtocolId::CONTROL,
                payload: vec![3]
            })
            .is_err()
        );
        assert_eq!(
            b.receive(&a.close().unwrap(), Duration::ZERO).unwrap(),
            Incoming::Closed
        );
        assert!(a.is_closed() && b.is_closed());
    }

    #[test]
    fn replays_close_a_link_unless_reordering_is_tolerated() {
        for tolerate in [false, true] {
            let (a, b) = pair(tolerate);
            let f = Frame::new(ProtocolId::DHT, vec![1]).unwrap();
            let m0 = a.seal_frame(&f).unwrap();
            let m1 = a.seal_frame(&f).unwrap();
            b.receive(&m1, Duration::ZERO).unwrap();
            let r = b.receive(&m0, Duration::ZERO);
            if tolerate {
                assert_eq!(r, Ok(Incoming::Nothing));
                assert!(!b.is_closed());
            } else {
                assert_eq!(r, Err(TransportError::Replay));
                assert!(b.is_closed());
            }
        }
        // Garbage closes the link.
        let (_, b) = pair(true);
        assert_eq!(
            b.receive(&[0; 40], Duration::ZERO),
            Err(TransportError::Decryption)
        );
        assert!(b.is_closed());
    }

    /// Seals raw bytes with `a`'s send key, whatever they are.
    fn seal_raw(a: &Link, bytes: &[u8]) -> Vec<u8> {
        a.keys
            .as_ref()
            .unwrap()
            .0
            .lock()
            .unwrap()
            .seal(bytes)
            .unwrap()
    }

    #[test]
    fn a_closed_link_refuses_to_seal_ping_or_receive() {
        let (a, b) = pair(false);
        let f = Frame::new(ProtocolId::DHT, vec![1]).unwrap();
        let m = a.seal_frame(&f).unwrap();
        assert_eq!(format!("{a:?}"), "Link { sealed: true, closed: false, .. }");
        a.close().unwrap();
        assert_eq!(format!("{a:?}"), "Link { sealed: true, closed: true, .. }");
        assert_eq!(a.close(), Err(TransportError::Closed));
        assert_eq!(a.seal_frame(&f), Err(TransportError::Closed));
        assert_eq!(a.ping(Duration::ZERO), Err(TransportError::Closed));
        assert_eq!(a.receive(&m, Duration::ZERO), Err(TransportError::Closed));
        // A transport failure closes a link too, and is handed back unchanged.
        assert_eq!(b.fail(TransportError::Timeout), TransportError::Timeout);
        assert!(b.is_closed());
        assert_eq!(b.receive(&m, Duration::ZERO), Err(TransportError::Closed));
    }

    #[test]
    fn of_closes_racing_on_threads_exactly_one_gets_the_close_message() {
        for (a, b) in [pair(false), (Link::plain(), Link::plain())] {
            let got: Vec<Result<Vec<u8>, TransportError>> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..8).map(|_| s.spawn(|| a.close())).collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let sealed: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(sealed.len(), 1, "{got:?}");
            assert_eq!(
                got.iter()
                    .filter(|r| **r == Err(TransportError::Closed))
                    .count(),
                7
            );
            assert_eq!(b.receive(sealed[0], Duration::ZERO), Ok(Incoming::Closed));
        }
    }

    #[test]
    fn sealed_input_that_is_not_a_frame_closes_the_link() {
        let cases: [(&[u8], TransportError); 4] = [
            (
                &[1],
                TransportError::Malformed("frame shorter than its header"),
            ),
            (
                &[7, 0, 1],
                TransportError::Malformed("unknown frame version"),
            ),
            // A control frame of an unknown kind, and a ping without its number.
            (
                &[1, 0, 9],
                TransportError::Malformed("unknown control frame"),
            ),
            (
                &[1, 0, 1, 0],
                TransportError::Malformed("short control frame"),
            ),
        ];
        for (plain, want) in cases {
            let (a, b) = pair(true);
            assert_eq!(
                b.receive(&seal_raw(&a, plain), Duration::ZERO),
                Err(want),
                "{plain:?}"
            );
            assert!(b.is_closed(), "{plain:?}");
        }
    }

    #[test]
    fn a_pong_nobody_asked_for_is_ignored() {
        let (a, b) = pair(false);
        let unasked = a.seal(&Control::Pong(99).encode()).unwrap();
        assert_eq!(b.receive(&unasked, Duration::ZERO), Ok(Incoming::Nothing));
        assert_eq!(b.quality(), ConnectionQuality::default());
        assert!(!b.is_closed());
        // On a plain link the same control frames travel unsealed.
        let (p, q) = (Link::plain(), Link::plain());
        assert_eq!(
            format!("{p:?}"),
            "Link { sealed: false, closed: false, .. }"
        );
        let ping = p.ping(Duration::ZERO).unwrap();
        assert_eq!(ping, Control::Ping(0).encode().encode());
        assert_eq!(
            q.receive(&ping, Duration::ZERO),
            Ok(Incoming::Reply(Control::Pong(0).encode().encode()))
        );
    }
}
