//! Frame encryption for links without their own (BLE, memory): XChaCha20-Poly1305 with the
//! handshake's per-direction keys and a 64-bit message counter.
//!
//! ```text
//! sealed = counter u64 LE | ciphertext + tag      nonce = counter LE || 16 zero bytes
//! associated data = the 8 counter bytes
//! ```
//!
//! The receiver accepts only counters above the last one it accepted: replays and reordering
//! are refused; a lost message (a gap) is tolerated, as on a lossy radio link.

use dryoc::classic::crypto_aead_xchacha20poly1305_ietf::{
    crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt,
};
use zeroize::Zeroizing;

use crate::TransportError;
use crate::frame::MAX_FRAME_PAYLOAD;

/// Bytes a sealed message adds: counter and tag.
pub const SEAL_OVERHEAD: usize = 8 + 16;

fn nonce(counter: u64) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Encrypts outgoing messages.
pub struct Sealer {
    key: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with the handshake's send key.
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key, counter: 0 }
    }

    /// Seals one message.
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`], or [`TransportError::Closed`] once the counter is
    /// exhausted (never in practice: 2^64 messages).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        if plaintext.len() > MAX_FRAME_PAYLOAD + crate::frame::FRAME_HEADER_LEN {
            return Err(TransportError::FrameTooLarge {
                len: plaintext.len(),
                max: MAX_FRAME_PAYLOAD,
            });
        }
        let counter = self.counter;
        self.counter = counter.checked_add(1).ok_or(TransportError::Closed)?;
        let mut out = vec![0u8; SEAL_OVERHEAD + plaintext.len()];
        out[..8].copy_from_slice(&counter.to_le_bytes());
        let (ad, ct) = out.split_at_mut(8);
        crypto_aead_xchacha20poly1305_ietf_encrypt(
            ct,
            plaintext,
            Some(ad),
            &nonce(counter),
            &self.key,
        )
        .map_err(|_| TransportError::Malformed("AEAD refused the message"))?;
        Ok(out)
    }
}

/// Decrypts incoming messages.
pub struct Opener {
    key: Zeroizing<[u8; 32]>,
    next: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener with the handshake's receive key.
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key, next: 0 }
    }

    /// Opens one message.
    ///
    /// # Errors
    /// [`TransportError::Malformed`] (short, oversized), [`TransportError::Replay`] (counter not
    /// above the last accepted), [`TransportError::Decryption`] (forged or damaged).
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, TransportError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(TransportError::Malformed(
                "sealed message shorter than its overhead",
            ));
        }
        if sealed.len() - SEAL_OVERHEAD > MAX_FRAME_PAYLOAD + crate::frame::FRAME_HEADER_LEN {
            return Err(TransportError::FrameTooLarge {
                len: sealed.len() - SEAL_OVERHEAD,
                max: MAX_FRAME_PAYLOAD,
            });
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&sealed[..8]);
        let counter = u64::from_le_bytes(c);
        if counter < self.next {
            return Err(TransportError::Replay);
        }
        let mut plain = vec![0u8; sealed.len() - SEAL_OVERHEAD];
        crypto_aead_xchacha20poly1305_ietf_decrypt(
            &mut plain,
            &sealed[8..],
            Some(&sealed[..8]),
            &nonce(counter),
            &self.key,
        )
        .map_err(|_| TransportError::Decryption)?;
        self.next = counter.saturating_add(1);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        (
            Sealer::new(Zeroizing::new([5; 32])),
            Opener::new(Zeroizing::new([5; 32])),
        )
    }

    #[test]
    fn round_trip_replay_gap_and_tamper() {
        let (mut s, mut o) = pair();
        let m0 = s.seal(b"zero").unwrap();
        let m1 = s.seal(b"one").unwrap();
        let m2 = s.seal(b"two").unwrap();
        assert_eq!(o.open(&m0).unwrap(), b"zero");
        assert_eq!(o.open(&m0), Err(TransportError::Replay));
        // m1 lost: a gap is fine, going back is not.
        assert_eq!(o.open(&m2).unwrap(), b"two");
        assert_eq!(o.open(&m1), Err(TransportError::Replay));
        let mut t = s.seal(b"three").unwrap();
        for pos in 0..t.len() {
            t[pos] ^= 1;
            assert!(o.open(&t).is_err(), "flip at {pos} accepted");
            t[pos] ^= 1;
        }
        assert_eq!(o.open(&t).unwrap(), b"three");
        assert!(o.open(&[0; 10]).is_err());
    }

    #[test]
    fn wrong_key_fails() {
        let mut s = Sealer::new(Zeroizing::new([1; 32]));
        let mut o = Opener::new(Zeroizing::new([2; 32]));
        assert_eq!(
            o.open(&s.seal(b"x").unwrap()),
            Err(TransportError::Decryption)
        );
    }

    #[test]
    fn oversized_and_short_messages_are_refused_both_ways() {
        let (mut s, mut o) = pair();
        let largest = MAX_FRAME_PAYLOAD + crate::frame::FRAME_HEADER_LEN;
        assert_eq!(
            s.seal(&vec![0; largest + 1]),
            Err(TransportError::FrameTooLarge {
                len: largest + 1,
                max: MAX_FRAME_PAYLOAD
            })
        );
        // A refused message uses no counter: the next one is still number 0.
        let m = s.seal(&vec![1; largest]).unwrap();
        assert_eq!(m[..8], 0u64.to_le_bytes());
        assert_eq!(o.open(&m).unwrap().len(), largest);
        assert_eq!(
            o.open(&vec![0; SEAL_OVERHEAD + largest + 1]),
            Err(TransportError::FrameTooLarge {
                len: largest + 1,
                max: MAX_FRAME_PAYLOAD
            })
        );
        assert_eq!(
            o.open(&[0; SEAL_OVERHEAD - 1]),
            Err(TransportError::Malformed(
                "sealed message shorter than its overhead"
            ))
        );
        // An empty plaintext is just the overhead.
        let empty = s.seal(b"").unwrap();
        assert_eq!(empty.len(), SEAL_OVERHEAD);
        assert_eq!(o.open(&empty).unwrap(), b"");
    }

    #[test]
    fn an_exhausted_counter_refuses_to_seal_rather_than_reuse_a_nonce() {
        let (mut s, mut o) = pair();
        s.counter = u64::MAX - 1;
        let last = s.seal(b"last").unwrap();
        assert_eq!(s.seal(b"more"), Err(TransportError::Closed));
        assert_eq!(s.seal(b"more"), Err(TransportError::Closed));
        assert_eq!(o.open(&last).unwrap(), b"last");
        assert_eq!(o.next, u64::MAX);
        assert_eq!(o.open(&last), Err(TransportError::Replay));
    }

    #[test]
    fn debug_output_shows_counters_not_keys() {
        let (mut s, o) = pair();
        s.seal(b"x").unwrap();
        assert_eq!(format!("{s:?}"), "Sealer { counter: 1, .. }");
        assert_eq!(format!("{o:?}"), "Opener { next: 0, .. }");
    }
}
