//! Streaming authenticated encryption: libsodium's `crypto_secretstream_xchacha20poly1305`
//! (through dryoc's classic API, byte for byte compatible with libsodium).
//!
//! A stream is a 24-byte header followed by messages, each encrypted with its own key and nonce
//! derived from the stream state, so that messages cannot be reordered, dropped or repeated
//! without [`Puller::pull`] failing, and a stream cut short is seen: the last message carries
//! the FINAL tag, and [`Puller::is_finished`] tells whether it came.

use dryoc::classic::crypto_secretstream_xchacha20poly1305::{
    Header, Key, State, crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push, crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
};
use dryoc::constants::{
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL,
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
};
use zeroize::Zeroizing;

use crate::Error;

/// Length of a stream key.
pub const KEY_LEN: usize = 32;
/// Length of the stream header.
pub const HEADER_LEN: usize = 24;
/// Bytes each message grows by (a tag byte and a 16-byte MAC).
pub const ABYTES: usize = CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES;
/// Longest message [`Pusher::push`] and [`Puller::pull`] take: 16 MiB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

/// A secret stream key (wiped on drop).
#[derive(Clone)]
pub struct StreamKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

impl StreamKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        crate::random_fill(k.as_mut());
        Self(k)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// The encrypting end of a stream.
pub struct Pusher {
    state: State,
    finished: bool,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// Starts a stream under `key`; returns it with the header the puller needs.
    pub fn new(key: &StreamKey) -> (Self, [u8; HEADER_LEN]) {
        let mut state = State::new();
        let mut header: Header = [0u8; HEADER_LEN];
        let k: &Key = key.as_bytes();
        crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, k);
        (
            Self {
                state,
                finished: false,
            },
            header,
        )
    }

    /// [`Pusher::new`] with a caller-chosen header, for reproducible test vectors (the
    /// state a header and key give is the same for both ends).
    ///
    /// Reusing a header with the same key destroys confidentiality: never use this outside
    /// tests.
    #[cfg(feature = "test-vectors")]
    pub fn with_header(key: &StreamKey, header: &[u8; HEADER_LEN]) -> Self {
        let mut state = State::new();
        crypto_secretstream_xchacha20poly1305_init_pull(&mut state, header, key.as_bytes());
        Self {
            state,
            finished: false,
        }
    }

    /// Encrypts the next message (`last`: the final one, after which the stream is closed).
    ///
    /// # Errors
    /// [`Error::TooLarge`] over [`MAX_MESSAGE_LEN`]; [`Error::Malformed`] after the final
    /// message.
    pub fn push(&mut self, message: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        if self.finished {
            return Err(Error::Malformed("stream already finished"));
        }
        if message.len() > MAX_MESSAGE_LEN {
            return Err(Error::TooLarge {
                what: "stream message",
                len: message.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let tag = if last {
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL
        } else {
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE
        };
        let mut out = vec![0u8; message.len() + ABYTES];
        crypto_secretstream_xchacha20poly1305_push(&mut self.state, &mut out, message, None, tag)
            .map_err(|_| Error::Malformed("stream message"))?;
        self.finished = last;
        Ok(out)
    }
}

/// The decrypting end of a stream.
pub struct Puller {
    state: State,
    finished: bool,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// Starts decrypting the stream whose header is `header`.
    pub fn new(key: &StreamKey, header: &[u8; HEADER_LEN]) -> Self {
        let mut state = State::new();
        crypto_secretstream_xchacha20poly1305_init_pull(&mut state, header, key.as_bytes());
        Self {
            state,
            finished: false,
        }
    }

    /// Decrypts the next message.
    ///
    /// # Errors
    /// [`Error::DecryptionFailed`] for a message that was changed, reordered, dropped or
    /// repeated, or pushed under another key; [`Error::Malformed`] for a message after the
    /// final one, or one with a tag this stream does not use; [`Error::TooLarge`] /
    /// [`Error::Truncated`] for lengths out of range.
    pub fn pull(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        if self.finished {
            return Err(Error::Malformed("data after the end of the stream"));
        }
        if ciphertext.len() < ABYTES {
            return Err(Error::Truncated {
                needed: ABYTES,
                remaining: ciphertext.len(),
            });
        }
        if ciphertext.len() > MAX_MESSAGE_LEN + ABYTES {
            return Err(Error::TooLarge {
                what: "stream message",
                len: ciphertext.len(),
                max: MAX_MESSAGE_LEN + ABYTES,
            });
        }
        let mut out = vec![0u8; ciphertext.len() - ABYTES];
        let mut tag = 0u8;
        // A failed pull leaves the state unchanged in libsodium; here the stream is unusable
        // after any failure anyway (the caller discards it).
        let n = crypto_secretstream_xchacha20poly1305_pull(
            &mut self.state,
            &mut out,
            &mut tag,
            ciphertext,
            None,
        )
        .map_err(|_| Error::DecryptionFailed)?;
        out.truncate(n);
        match tag {
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE => {}
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL => self.finished = true,
            _ => return Err(Error::Malformed("unexpected stream tag")),
        }
        Ok(out)
    }

    /// Whether the final message has been pulled (a stream that ends before is truncated).
    pub const fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let key = StreamKey::generate();
        let (mut p, header) = Pusher::new(&key);
        let c1 = p.push(b"first", false).unwrap();
        let c2 = p.push(b"", false).unwrap();
        let c3 = p.push(b"last", true).unwrap();
        assert!(p.push(b"more", false).is_err());
        assert_eq!(c1.len(), 5 + ABYTES);

        let mut q = Puller::new(&key, &header);
        assert_eq!(q.pull(&c1).unwrap(), b"first");
        assert_eq!(q.pull(&c2).unwrap(), b"");
        assert!(!q.is_finished());
        assert_eq!(q.pull(&c3).unwrap(), b"last");
        assert!(q.is_finished());
        assert!(q.pull(&c3).is_err(), "nothing after the end");

        // Reordered, dropped, changed, wrong key, wrong header: all refused.
        assert!(Puller::new(&key, &header).pull(&c2).is_err());
        let mut q = Puller::new(&key, &header);
        q.pull(&c1).unwrap();
        assert!(q.pull(&c3).is_err(), "a dropped message is seen");
        let mut bad = c1.clone();
        bad[3] ^= 1;
        assert!(Puller::new(&key, &header).pull(&bad).is_err());
        assert!(
            Puller::new(&StreamKey::generate(), &header)
                .pull(&c1)
                .is_err()
        );
        let mut h2 = header;
        h2[0] ^= 1;
        assert!(Puller::new(&key, &h2).pull(&c1).is_err());
        assert!(Puller::new(&key, &header).pull(&c1[..10]).is_err());
    }
}
