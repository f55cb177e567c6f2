//! The authenticated handshake every link runs before it carries frames (sans-IO).
//!
//! Three messages; both sides prove their Ed25519 identity by signing a transcript that covers
//! both ephemeral X25519 keys, both fresh nonces and the **channel binding**: bytes the link
//! itself supplies that an intermediary cannot make equal on both sides (for WebRTC the DTLS
//! certificate fingerprints of both ends, in a fixed order; empty for links without their own
//! security, where the fresh nonces and ephemeral keys bind the handshake to this session).
//! A relay or signaling server that splices itself in sees its own fingerprints on each side,
//! so the transcripts differ and the signatures fail.
//!
//! ```text
//! M1  I -> R : 0x01 | 0x01 | e_I [32] | n_I [32]
//! M2  R -> I : 0x01 | 0x02 | e_R [32] | n_R [32] | id_R [32] | sig_R [64]
//! M3  I -> R : 0x01 | 0x03 | id_I [32] | sig_I [64]
//!
//! th2   = domain_hash("mesh/handshake/v1/m2", u32le(len(binding)) || binding || M1 || M2[..98])
//! sig_R = Ed25519(id_R, th2)
//! th3   = domain_hash("mesh/handshake/v1/m3", th2 || sig_R || M3[..34])
//! sig_I = Ed25519(id_I, th3)
//! k     = X25519(e_I, e_R)          (all-zero refused)
//! key_i2r = BLAKE2b-256(key = k, "mesh/handshake/v1/i2r" || th3)
//! key_r2i = BLAKE2b-256(key = k, "mesh/handshake/v1/r2i" || th3)
//! ```
//!
//! The session keys encrypt frames on links without their own encryption ([`crate::secure`]).

use dryoc::classic::crypto_core::{crypto_scalarmult, crypto_scalarmult_base};
use mesh_crypto::hash::{Blake2b256, Hash256, domain_hash};
use mesh_crypto::{Identity, PeerId, Signature};
use zeroize::Zeroizing;

/// Handshake format version.
pub const HANDSHAKE_VERSION: u8 = 1;
/// Length of M1.
pub const M1_LEN: usize = 2 + 32 + 32;
/// Length of M2.
pub const M2_LEN: usize = 2 + 32 + 32 + 32 + 64;
/// Length of M3.
pub const M3_LEN: usize = 2 + 32 + 64;
/// Longest channel binding accepted.
pub const MAX_BINDING_LEN: usize = 1024;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message has the wrong length, type or version.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A public key is invalid.
    #[error("invalid key in handshake")]
    InvalidKey,
    /// A signature over the transcript does not verify: someone is in the middle, or the two
    /// sides see different channels.
    #[error("handshake signature does not verify (man in the middle or mismatched channel)")]
    BadSignature,
    /// The remote proved an identity, but not the one dialled.
    #[error("expected peer {expected}, but {actual} answered")]
    UnexpectedPeer {
        /// Who was dialled.
        expected: PeerId,
        /// Who answered.
        actual: PeerId,
    },
    /// The channel binding is longer than [`MAX_BINDING_LEN`].
    #[error("channel binding too long")]
    BindingTooLong,
}

/// The outcome: who is on the other end, and the keys for each direction.
pub struct Session {
    /// The authenticated remote identity.
    pub remote: PeerId,
    /// Key for frames this side sends.
    pub send_key: Zeroizing<[u8; 32]>,
    /// Key for frames this side receives.
    pub recv_key: Zeroizing<[u8; 32]>,
    /// Transcript hash: equal on both sides of an honest handshake.
    pub transcript: Hash256,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("remote", &self.remote)
            .field("transcript", &self.transcript)
            .finish_non_exhaustive()
    }
}

/// `(initiator-to-responder key, responder-to-initiator key)`.
type DirectionKeys = (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>);

fn ephemeral() -> (Zeroizing<[u8; 32]>, [u8; 32]) {
    let mut secret = Zeroizing::new([0u8; 32]);
    dryoc::rng::copy_randombytes(secret.as_mut());
    let mut public = [0u8; 32];
    crypto_scalarmult_base(&mut public, &secret);
    (secret, public)
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    dryoc::rng::copy_randombytes(&mut n);
    n
}

fn th2(binding: &[u8], m1: &[u8], m2_body: &[u8]) -> Hash256 {
    // Binding length is at most MAX_BINDING_LEN.
    #[allow(clippy::cast_possible_truncation)]
    let len = (binding.len() as u32).to_le_bytes();
    domain_hash("mesh/handshake/v1/m2", &[&len, binding, m1, m2_body])
}

fn th3(th2: &Hash256, sig_r: &[u8], m3_body: &[u8]) -> Hash256 {
    domain_hash("mesh/handshake/v1/m3", &[th2.as_bytes(), sig_r, m3_body])
}

fn keys(
    secret: &[u8; 32],
    public: &[u8; 32],
    th3: &Hash256,
) -> Result<DirectionKeys, HandshakeError> {
    let mut shared = Zeroizing::new([0u8; 32]);
    crypto_scalarmult(&mut shared, secret, public).map_err(|_| HandshakeError::InvalidKey)?;
    let derive = |label: &[u8]| {
        let mut h = Blake2b256::new_keyed(&shared);
        h.update(label).update(th3.as_bytes());
        Zeroizing::new(h.finalize().0)
    };
    Ok((
        derive(b"mesh/handshake/v1/i2r"),
        derive(b"mesh/handshake/v1/r2i"),
    ))
}

fn check_header(msg: &[u8], len: usize, kind: u8) -> Result<(), HandshakeError> {
    if msg.len() != len {
        return Err(HandshakeError::Malformed("wrong length"));
    }
    if msg[0] != HANDSHAKE_VERSION {
        return Err(HandshakeError::Malformed("unknown version"));
    }
    if msg[1] != kind {
        return Err(HandshakeError::Malformed("unexpected message type"));
    }
    Ok(())
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

/// The dialling side.
pub struct Initiator {
    secret: Zeroizing<[u8; 32]>,
    m1: Vec<u8>,
    binding: Vec<u8>,
    expected: Option<PeerId>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake; returns the state and M1 to send. `expected` is the peer dialled, if
    /// known: anyone else answering is refused.
    ///
    /// # Errors
    /// [`HandshakeError::BindingTooLong`].
    pub fn start(
        binding: &[u8],
        expected: Option<PeerId>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        if binding.len() > MAX_BINDING_LEN {
            return Err(HandshakeError::BindingTooLong);
        }
        let (secret, public) = ephemeral();
        let mut m1 = Vec::with_capacity(M1_LEN);
        m1.extend_from_slice(&[HANDSHAKE_VERSION, 1]);
        m1.extend_from_slice(&public);
        m1.extend_from_slice(&nonce());
        Ok((
            Self {
                secret,
                m1: m1.clone(),
                binding: binding.to_vec(),
                expected,
            },
            m1,
        ))
    }

    /// Processes M2; returns M3 to send and the session.
    ///
    /// # Errors
    /// Any [`HandshakeError`]: the link must be closed.
    pub fn on_m2(
        self,
        identity: &Identity,
        m2: &[u8],
    ) -> Result<(Vec<u8>, Session), HandshakeError> {
        check_header(m2, M2_LEN, 2)?;
        let e_r: [u8; 32] = arr(&m2[2..34]);
        let id_r = PeerId::from_bytes(arr(&m2[66..98])).map_err(|_| HandshakeError::InvalidKey)?;
        if let Some(expected) = self.expected
            && expected != id_r
        {
            return Err(HandshakeError::UnexpectedPeer {
                expected,
                actual: id_r,
            });
        }
        let sig_r = Signature(arr(&m2[98..162]));
        let t2 = th2(&self.binding, &self.m1, &m2[..98]);
        id_r.verify_digest(&t2, &sig_r)
            .map_err(|_| HandshakeError::BadSignature)?;
        let mut m3 = Vec::with_capacity(M3_LEN);
        m3.extend_from_slice(&[HANDSHAKE_VERSION, 3]);
        m3.extend_from_slice(identity.peer_id().as_bytes());
        let t3 = th3(&t2, &sig_r.0, &m3);
        m3.extend_from_slice(&identity.sign_digest(&t3).0);
        let (i2r, r2i) = keys(&self.secret, &e_r, &t3)?;
        Ok((
            m3,
            Session {
                remote: id_r,
                send_key: i2r,
                recv_key: r2i,
                transcript: t3,
            },
        ))
    }
}

/// The answering side, between M2 and M3.
pub struct Responder {
    secret: Zeroizing<[u8; 32]>,
    e_i: [u8; 32],
    th2: Hash256,
    sig_r: [u8; 64],
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl Responder {
    /// Processes M1; returns the state and M2 to send.
    ///
    /// # Errors
    /// [`HandshakeError::Malformed`], [`HandshakeError::BindingTooLong`].
    pub fn on_m1(
        identity: &Identity,
        binding: &[u8],
        m1: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        if binding.len() > MAX_BINDING_LEN {
            return Err(HandshakeError::BindingTooLong);
        }
        check_header(m1, M1_LEN, 1)?;
        let (secret, public) = ephemeral();
        let mut m2 = Vec::with_capacity(M2_LEN);
        m2.extend_from_slice(&[HANDSHAKE_VERSION, 2]);
        m2.extend_from_slice(&public);
        m2.extend_from_slice(&nonce());
        m2.extend_from_slice(identity.peer_id().as_bytes());
        let t2 = th2(binding, m1, &m2);
        let sig_r = identity.sign_digest(&t2).0;
        m2.extend_from_slice(&sig_r);
        Ok((
            Self {
                secret,
                e_i: arr(&m1[2..34]),
                th2: t2,
                sig_r,
            },
            m2,
        ))
    }

    /// Processes M3; returns the session.
    ///
    /// # Errors
    /// Any [`HandshakeError`]: the link must be closed.
    pub fn on_m3(self, m3: &[u8]) -> Result<Session, HandshakeError> {
        check_header(m3, M3_LEN, 3)?;
        let id_i = PeerId::from_bytes(arr(&m3[2..34])).map_err(|_| HandshakeError::InvalidKey)?;
        let t3 = th3(&self.th2, &self.sig_r, &m3[..34]);
        id_i.verify_digest(&t3, &Signature(arr(&m3[34..98])))
            .map_err(|_| HandshakeError::BadSignature)?;
        let (i2r, r2i) = keys(&self.secret, &self.e_i, &t3)?;
        Ok(Session {
            remote: id_i,
            send_key: r2i,
            recv_key: i2r,
            transcript: t3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    fn run(binding_i: &[u8], binding_r: &[u8]) -> Result<(Session, Session), HandshakeError> {
        let (a, b) = ids();
        let (init, m1) = Initiator::start(binding_i, Some(b.peer_id()))?;
        let (resp, m2) = Responder::on_m1(&b, binding_r, &m1)?;
        let (m3, si) = init.on_m2(&a, &m2)?;
        let sr = resp.on_m3(&m3)?;
        Ok((si, sr))
    }

    #[test]
    fn honest_handshake_agrees_on_keys() {
        let (si, sr) = run(b"fp-a|fp-b", b"fp-a|fp-b").unwrap();
        assert_eq!(si.remote, ids().1.peer_id());
        assert_eq!(sr.remote, ids().0.peer_id());
        assert_eq!(si.transcript, sr.transcript);
        assert_eq!(*si.send_key, *sr.recv_key);
        assert_eq!(*si.recv_key, *sr.send_key);
        assert_ne!(*si.send_key, *si.recv_key);
    }

    #[test]
    fn mismatched_channel_bindings_fail() {
        // What a signaling server in the middle causes: each side sees different fingerprints.
        assert_eq!(
            run(b"fp-a|fp-mallory", b"fp-mallory|fp-b").err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn every_tampered_byte_of_m2_and_m3_is_refused() {
        let (a, b) = ids();
        let (_, m1) = Initiator::start(b"", Some(b.peer_id())).unwrap();
        let (_, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
        for pos in 0..m2.len() {
            let (init, m1) = Initiator::start(b"", Some(b.peer_id())).unwrap();
            let (_, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
            let mut t = m2.clone();
            t[pos] ^= 1;
            assert!(init.on_m2(&a, &t).is_err(), "M2 flip at {pos} accepted");
        }
        for pos in 0..M3_LEN {
            let (init, m1) = Initiator::start(b"", Some(b.peer_id())).unwrap();
            let (resp, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
            let (mut m3, _) = init.on_m2(&a, &m2).unwrap();
            m3[pos] ^= 1;
            assert!(resp.on_m3(&m3).is_err(), "M3 flip at {pos} accepted");
        }
        assert_eq!(m2.len(), M2_LEN);
    }

    #[test]
    fn wrong_peer_and_bad_lengths_are_refused() {
        let (a, b) = ids();
        let c = Identity::from_seed(&[3; 32]);
        let (init, m1) = Initiator::start(b"", Some(c.peer_id())).unwrap();
        let (_, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
        assert_eq!(
            init.on_m2(&a, &m2).err(),
            Some(HandshakeError::UnexpectedPeer {
                expected: c.peer_id(),
                actual: b.peer_id()
            })
        );
        assert!(Responder::on_m1(&b, b"", &m1[..M1_LEN - 1]).is_err());
        assert!(Responder::on_m1(&b, &[0; MAX_BINDING_LEN + 1], &m1).is_err());
        let (init, _) = Initiator::start(b"", None).unwrap();
        assert!(init.on_m2(&a, &[1, 2]).is_err());
    }

    #[test]
    fn relayed_handshake_with_swapped_ephemeral_fails() {
        // Mallory forwards Alice's M1 to Bob but swaps in her own ephemeral key, hoping to learn
        // the session key: Bob's signature covers the M1 he saw, so Alice refuses M2.
        let (a, b) = ids();
        let (init, m1) = Initiator::start(b"", Some(b.peer_id())).unwrap();
        let mut forged = m1.clone();
        forged[2..34].copy_from_slice(&ephemeral().1);
        let (_, m2) = Responder::on_m1(&b, b"", &forged).unwrap();
        assert_eq!(
            init.on_m2(&a, &m2).err(),
            Some(HandshakeError::BadSignature)
        );
    }

    /// The first of `[i; 32]` that is not a valid Ed25519 public key.
    fn invalid_key() -> [u8; 32] {
        (0u8..=255)
            .map(|i| [i; 32])
            .find(|b| PeerId::from_bytes(*b).is_err())
            .expect("some byte pattern is not a curve point")
    }

    /// An M2 from `identity` answering `m1`, with `e_r` as its ephemeral key and `id` as the
    /// claimed identity, signed by `identity` (a malicious responder signs what it likes).
    fn forged_m2(identity: &Identity, m1: &[u8], e_r: [u8; 32], id: [u8; 32]) -> Vec<u8> {
        let mut m2 = vec![HANDSHAKE_VERSION, 2];
        m2.extend_from_slice(&e_r);
        m2.extend_from_slice(&[7; 32]);
        m2.extend_from_slice(&id);
        let sig = identity.sign_digest(&th2(b"", m1, &m2)).0;
        m2.extend_from_slice(&sig);
        m2
    }

    #[test]
    fn an_all_zero_ephemeral_key_is_refused_on_both_sides() {
        let (a, b) = ids();
        // A responder answering with the zero point would make the shared secret all zeros.
        let (init, m1) = Initiator::start(b"", Some(b.peer_id())).unwrap();
        let m2 = forged_m2(&b, &m1, [0; 32], *b.peer_id().as_bytes());
        assert_eq!(init.on_m2(&a, &m2).err(), Some(HandshakeError::InvalidKey));
        // Likewise an initiator sending it in M1: refused once M3 is verified.
        let mut m1 = vec![HANDSHAKE_VERSION, 1];
        m1.extend_from_slice(&[0; 32]);
        m1.extend_from_slice(&[9; 32]);
        let (resp, _) = Responder::on_m1(&b, b"", &m1).unwrap();
        let mut m3 = vec![HANDSHAKE_VERSION, 3];
        m3.extend_from_slice(a.peer_id().as_bytes());
        let sig = a.sign_digest(&th3(&resp.th2, &resp.sig_r, &m3)).0;
        m3.extend_from_slice(&sig);
        assert_eq!(resp.on_m3(&m3).err(), Some(HandshakeError::InvalidKey));
    }

    #[test]
    fn an_identity_that_is_not_a_curve_point_is_refused() {
        let (a, b) = ids();
        let bad = invalid_key();
        let (init, m1) = Initiator::start(b"", None).unwrap();
        let m2 = forged_m2(&b, &m1, ephemeral().1, bad);
        assert_eq!(init.on_m2(&a, &m2).err(), Some(HandshakeError::InvalidKey));
        let (_, m1) = Initiator::start(b"", None).unwrap();
        let (resp, _) = Responder::on_m1(&b, b"", &m1).unwrap();
        let mut m3 = vec![HANDSHAKE_VERSION, 3];
        m3.extend_from_slice(&bad);
        m3.extend_from_slice(&[0; 64]);
        assert_eq!(resp.on_m3(&m3).err(), Some(HandshakeError::InvalidKey));
    }

    #[test]
    fn other_versions_types_and_bindings_too_long_are_refused() {
        let (a, b) = ids();
        let (_, m1) = Initiator::start(b"", None).unwrap();
        let mut v2 = m1.clone();
        v2[0] = 2;
        assert_eq!(
            Responder::on_m1(&b, b"", &v2).err(),
            Some(HandshakeError::Malformed("unknown version"))
        );
        let mut t3 = m1.clone();
        t3[1] = 3;
        assert_eq!(
            Responder::on_m1(&b, b"", &t3).err(),
            Some(HandshakeError::Malformed("unexpected message type"))
        );
        // M2 handed back where M3 is expected: wrong length.
        let (resp, m2) = Responder::on_m1(&b, b"", &m1).unwrap();
        assert_eq!(
            resp.on_m3(&m2).err(),
            Some(HandshakeError::Malformed("wrong length"))
        );
        assert_eq!(
            Initiator::start(&[0; MAX_BINDING_LEN + 1], None).err(),
            Some(HandshakeError::BindingTooLong)
        );
        // The longest binding is accepted, and must match on both sides.
        let binding = [5u8; MAX_BINDING_LEN];
        let (init, m1) = Initiator::start(&binding, None).unwrap();
        let (resp, m2) = Responder::on_m1(&b, &binding, &m1).unwrap();
        let (m3, si) = init.on_m2(&a, &m2).unwrap();
        assert_eq!(resp.on_m3(&m3).unwrap().transcript, si.transcript);
    }

    #[test]
    fn debug_output_shows_who_but_no_secrets() {
        let (si, _) = run(b"", b"").unwrap();
        let shown = format!("{si:?}");
        assert!(shown.starts_with("Session { remote: PeerId("), "{shown}");
        assert!(shown.ends_with(", .. }"), "{shown}");
        assert!(!shown.contains("send_key") && !shown.contains("recv_key"));
        let (init, m1) = Initiator::start(b"", None).unwrap();
        assert_eq!(format!("{init:?}"), "Initiator { expected: None, .. }");
        let (resp, _) = Responder::on_m1(&ids().1, b"", &m1).unwrap();
        assert_eq!(format!("{resp:?}"), "Responder { .. }");
    }
}
