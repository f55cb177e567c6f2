//! The recovery formats (`docs/PROTOCOL.md` §14): the owner's signed guardian set, the sealed
//! share a guardian holds, acknowledgements, recovery requests, released shares, status
//! answers and revocations, and the frames that carry them.

use mesh_crypto::hash::domain_hash;
use mesh_crypto::wire::Reader;
use mesh_crypto::{Error as CryptoError, Hash256, PeerId, Signed, SignedPayload};

use crate::shamir::{SECRET_LEN, Share};

/// Version byte of every recovery format.
pub const RECOVERY_VERSION: u8 = 1;
/// Envelope context of a share sealed from the owner to a guardian.
pub const GRANT_CONTEXT: &[u8] = b"mesh/recovery/grant/v1";
/// Envelope context of a share sealed from a guardian to a recovering device.
pub const RELEASE_CONTEXT: &[u8] = b"mesh/recovery/release/v1";
/// Domain of a share commitment.
pub const COMMITMENT_DOMAIN: &str = "mesh/recovery-share/v1";
/// Domain of the verification code of a request.
pub const CODE_DOMAIN: &str = "mesh/recovery-code/v1";
/// Most guardians in a set.
pub const MAX_GUARDIANS: usize = 255;
/// Largest guardian set payload.
pub const MAX_SET_LEN: usize = 1 + 32 + 2 + MAX_GUARDIANS * (32 + 1 + 32);
/// Largest sealed share plaintext (grant or release).
pub const MAX_SHARE_PLAINTEXT: usize = 1 + 32 + 1 + SECRET_LEN + 32 + MAX_SIGNED_SET;
/// Largest signed guardian set.
pub const MAX_SIGNED_SET: usize = mesh_crypto::SIGNED_HEADER_LEN + MAX_SET_LEN + 64;
/// Largest frame.
pub const MAX_FRAME_LEN: usize = 2 + MAX_SHARE_PLAINTEXT + mesh_crypto::envelope::ENVELOPE_OVERHEAD;

/// A recovery set's id (random, chosen by the owner).
pub type SetId = [u8; 32];

/// One guardian of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardianEntry {
    /// The guardian.
    pub guardian: PeerId,
    /// The index of its share.
    pub x: u8,
    /// `domain_hash("mesh/recovery-share/v1", set_id || x || y || salt)`.
    pub commitment: Hash256,
}

/// The owner's list of guardians (signed by the owner as a [`Signed<GuardianSet>`]):
/// `version u8 = 1 | set_id [32] | k u8 | n u8 | n × (guardian [32] | x u8 | commitment [32])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardianSet {
    /// The set's id.
    pub set_id: SetId,
    /// Shares needed.
    pub k: u8,
    /// The guardians, one share each.
    pub guardians: Vec<GuardianEntry>,
}

impl GuardianSet {
    /// The entry of `guardian`.
    pub fn entry(&self, guardian: &PeerId) -> Option<&GuardianEntry> {
        self.guardians.iter().find(|g| g.guardian == *guardian)
    }
}

impl SignedPayload for GuardianSet {
    const DOMAIN: &'static str = "mesh/recovery-set/v1";
    const MAX_LEN: usize = MAX_SET_LEN;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECOVERY_VERSION);
        out.extend_from_slice(&self.set_id);
        out.push(self.k);
        #[allow(clippy::cast_possible_truncation)] // at most 255, checked when made
        out.push(self.guardians.len() as u8);
        for g in &self.guardians {
            out.extend_from_slice(g.guardian.as_bytes());
            out.push(g.x);
            out.extend_from_slice(g.commitment.as_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown guardian set version"));
        }
        let set_id = r.array::<32>()?;
        let k = r.u8()?;
        let n = r.u8()?;
        if k == 0 || k > n {
            return Err(CryptoError::Malformed("threshold out of range"));
        }
        let mut guardians: Vec<GuardianEntry> = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let guardian = PeerId::from_bytes(r.array::<32>()?)?;
            let x = r.u8()?;
            let commitment = Hash256(r.array::<32>()?);
            if x == 0 || guardians.iter().any(|g| g.x == x || g.guardian == guardian) {
                return Err(CryptoError::Malformed("repeated guardian or share index"));
            }
            guardians.push(GuardianEntry {
                guardian,
                x,
                commitment,
            });
        }
        r.finish()?;
        Ok(Self {
            set_id,
            k,
            guardians,
        })
    }
}

/// The commitment to share `share` of set `set_id` with `salt`.
pub fn commitment(set_id: &SetId, share: &Share, salt: &[u8; 32]) -> Hash256 {
    domain_hash(COMMITMENT_DOMAIN, &[set_id, &[share.x], &share.y, salt])
}

/// A share as sealed to its holder (plaintext of a GRANT or RELEASE envelope):
/// `version u8 = 1 | request_id [32] (zeros in a grant) | x u8 | y [32] | salt [32] |
/// signed guardian set (to the end)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedShare {
    /// The request a release answers (zeros in a grant).
    pub request_id: Hash256,
    /// The share.
    pub share: Share,
    /// Its commitment salt.
    pub salt: [u8; 32],
    /// The owner's signed guardian set, as signed.
    pub set: Vec<u8>,
}

impl std::fmt::Debug for SealedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedShare")
            .field("x", &self.share.x)
            .finish_non_exhaustive()
    }
}

impl SealedShare {
    /// The encoding (wipe it after sealing).
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(98 + self.set.len()));
        v.push(RECOVERY_VERSION);
        v.extend_from_slice(self.request_id.as_bytes());
        v.push(self.share.x);
        v.extend_from_slice(&self.share.y);
        v.extend_from_slice(&self.salt);
        v.extend_from_slice(&self.set);
        v
    }

    /// Decodes the plaintext of a grant or release.
    ///
    /// # Errors
    /// [`CryptoError`] for anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown sealed share version"));
        }
        let request_id = Hash256(r.array::<32>()?);
        let x = r.u8()?;
        let y = r.array::<SECRET_LEN>()?;
        let salt = r.array::<32>()?;
        let rest = r.remaining();
        if rest > MAX_SIGNED_SET {
            return Err(CryptoError::TooLarge {
                what: "guardian set",
                len: rest,
                max: MAX_SIGNED_SET,
            });
        }
        let set = r.bytes(rest)?.to_vec();
        Ok(Self {
            request_id,
            share: Share { x, y },
            salt,
            set,
        })
    }
}

/// What an acknowledgement confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// The share is stored.
    Stored = 1,
    /// The set is revoked and its share deleted.
    Revoked = 2,
    /// The guardian will not keep this share (it does not know the owner, is full, or the set
    /// was revoked): the owner stops sending it.
    Refused = 3,
}

/// A guardian's signed acknowledgement: `version u8 = 1 | kind u8 (1 stored, 2 revoked, 3
/// refused) | owner [32] | set_id [32]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// What it confirms.
    pub kind: AckKind,
    /// The owner.
    pub owner: PeerId,
    /// The set.
    pub set_id: SetId,
}

impl SignedPayload for Ack {
    const DOMAIN: &'static str = "mesh/recovery-ack/v1";
    const MAX_LEN: usize = 66;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECOVERY_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&self.set_id);
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown ack version"));
        }
        let kind = match r.u8()? {
            1 => AckKind::Stored,
            2 => AckKind::Revoked,
            3 => AckKind::Refused,
            _ => return Err(CryptoError::Malformed("unknown ack kind")),
        };
        let owner = PeerId::from_bytes(r.array::<32>()?)?;
        let set_id = r.array::<32>()?;
        r.finish()?;
        Ok(Self {
            kind,
            owner,
            set_id,
        })
    }
}

/// A recovering device's signed request to one guardian: `version u8 = 1 | owner [32] |
/// set_id [32] (zeros: the newest set the guardian holds for the owner) | nonce [16]`. Its
/// author is the new device; its id (the signed digest) names it in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The identity being recovered.
    pub owner: PeerId,
    /// The set asked about (zeros: the newest).
    pub set_id: SetId,
    /// Makes every request distinct.
    pub nonce: [u8; 16],
}

impl SignedPayload for RecoveryRequest {
    const DOMAIN: &'static str = "mesh/recovery-request/v1";
    const MAX_LEN: usize = 81;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECOVERY_VERSION);
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&self.set_id);
        out.extend_from_slice(&self.nonce);
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown request version"));
        }
        let owner = PeerId::from_bytes(r.array::<32>()?)?;
        let set_id = r.array::<32>()?;
        let nonce = r.array::<16>()?;
        r.finish()?;
        Ok(Self {
            owner,
            set_id,
            nonce,
        })
    }
}

/// Where a request stands at a guardian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    /// Waiting for the guardian's approval or waiting period.
    Pending = 1,
    /// The guardian said no.
    Denied = 2,
    /// The guardian holds no share for that owner and set.
    NoShare = 3,
    /// Too many releases for that owner lately.
    RateLimited = 4,
    /// The guardian holds too many requests now: ask again later.
    Busy = 5,
}

/// A guardian's signed answer about a request: `version u8 = 1 | request_id [32] | status u8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The request.
    pub request_id: Hash256,
    /// Where it stands.
    pub status: RequestStatus,
}

impl SignedPayload for StatusReport {
    const DOMAIN: &'static str = "mesh/recovery-status/v1";
    const MAX_LEN: usize = 34;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECOVERY_VERSION);
        out.extend_from_slice(self.request_id.as_bytes());
        out.push(self.status as u8);
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown status version"));
        }
        let request_id = Hash256(r.array::<32>()?);
        let status = match r.u8()? {
            1 => RequestStatus::Pending,
            2 => RequestStatus::Denied,
            3 => RequestStatus::NoShare,
            4 => RequestStatus::RateLimited,
            5 => RequestStatus::Busy,
            _ => return Err(CryptoError::Malformed("unknown request status")),
        };
        r.finish()?;
        Ok(Self { request_id, status })
    }
}

/// The owner's signed revocation of a set: `version u8 = 1 | set_id [32]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The set revoked.
    pub set_id: SetId,
}

impl SignedPayload for Revocation {
    const DOMAIN: &'static str = "mesh/recovery-revoke/v1";
    const MAX_LEN: usize = 33;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECOVERY_VERSION);
        out.extend_from_slice(&self.set_id);
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECOVERY_VERSION {
            return Err(CryptoError::Malformed("unknown revocation version"));
        }
        let set_id = r.array::<32>()?;
        r.finish()?;
        Ok(Self { set_id })
    }
}

/// A recovery frame (in frames of `ProtocolId::RECOVERY`): `version u8 = 1 | kind u8 | body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// 1: an envelope from the owner sealing a share to the guardian.
    Grant(Vec<u8>),
    /// 2: a `Signed<Ack>`.
    Ack(Vec<u8>),
    /// 3: a `Signed<RecoveryRequest>`.
    Request(Vec<u8>),
    /// 4: an envelope from a guardian sealing a share to the recovering device.
    Release(Vec<u8>),
    /// 5: a `Signed<StatusReport>`.
    Status(Vec<u8>),
    /// 6: a `Signed<Revocation>`.
    Revoke(Vec<u8>),
}

impl Frame {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Self::Grant(b) => (1, b),
            Self::Ack(b) => (2, b),
            Self::Request(b) => (3, b),
            Self::Release(b) => (4, b),
            Self::Status(b) => (5, b),
            Self::Revoke(b) => (6, b),
        };
        let mut v = Vec::with_capacity(2 + body.len());
        v.push(RECOVERY_VERSION);
        v.push(kind);
        v.extend_from_slice(body);
        v
    }

    /// Decodes a frame (its body is checked by whoever reads it).
    ///
    /// # Errors
    /// [`CryptoError`] for an unknown version or kind, or a frame over [`MAX_FRAME_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(CryptoError::TooLarge {
                what: "recovery frame",
                len: bytes.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let (&version, rest) = bytes.split_first().ok_or(CryptoError::Truncated {
            needed: 2,
            remaining: 0,
        })?;
        if version != RECOVERY_VERSION {
            return Err(CryptoError::UnsupportedVersion {
                found: version,
                supported: RECOVERY_VERSION,
            });
        }
        let (&kind, body) = rest.split_first().ok_or(CryptoError::Truncated {
            needed: 1,
            remaining: 0,
        })?;
        let body = body.to_vec();
        Ok(match kind {
            1 => Self::Grant(body),
            2 => Self::Ack(body),
            3 => Self::Request(body),
            4 => Self::Release(body),
            5 => Self::Status(body),
            6 => Self::Revoke(body),
            _ => return Err(CryptoError::Malformed("unknown recovery frame kind")),
        })
    }
}

/// The six-digit code both the recovering device and the guardian show for a request, to be
/// compared out of band (a phone call) before the guardian approves.
pub fn verification_code(request_id: &Hash256) -> String {
    let h = domain_hash(CODE_DOMAIN, &[request_id.as_bytes()]);
    let n = u32::from_le_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]) % 1_000_000;
    format!("{n:06}")
}

/// A decoded, verified guardian set.
pub type SignedSet = Signed<GuardianSet>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use mesh_crypto::{Identity, UnixMillis};

    use super::*;

    fn set_bytes(k: u8, entries: &[(u8, u8)]) -> Vec<u8> {
        let mut v = vec![RECOVERY_VERSION];
        v.extend_from_slice(&[9; 32]);
        v.push(k);
        v.push(u8::try_from(entries.len()).unwrap());
        for (seed, x) in entries {
            v.extend_from_slice(Identity::from_seed(&[*seed; 32]).peer_id().as_bytes());
            v.push(*x);
            v.extend_from_slice(&[0; 32]);
        }
        v
    }

    #[test]
    fn guardian_sets_are_checked_when_decoded() {
        let good = GuardianSet::decode(&set_bytes(2, &[(1, 1), (2, 2), (3, 7)])).unwrap();
        assert_eq!(good.k, 2);
        assert_eq!(good.guardians.len(), 3);
        let mut again = Vec::new();
        good.encode(&mut again);
        assert_eq!(again, set_bytes(2, &[(1, 1), (2, 2), (3, 7)]));
        for bad in [
            set_bytes(0, &[(1, 1)]),         // k = 0
            set_bytes(3, &[(1, 1), (2, 2)]), // k > n
            set_bytes(1, &[(1, 1), (2, 1)]), // repeated index
            set_bytes(1, &[(1, 1), (1, 2)]), // repeated guardian
            set_bytes(1, &[(1, 0)]),         // index 0
        ] {
            assert!(GuardianSet::decode(&bad).is_err());
        }
        let mut long = set_bytes(1, &[(1, 1)]);
        long.push(0);
        assert!(GuardianSet::decode(&long).is_err(), "trailing bytes");
        let short = set_bytes(1, &[(1, 1)]);
        assert!(GuardianSet::decode(&short[..short.len() - 1]).is_err());
    }

    #[test]
    fn every_message_round_trips_and_frames_are_bounded() {
        let id = Identity::from_seed(&[5; 32]);
        let t = UnixMillis(1_700_000_000_000);
        let ack = Ack {
            kind: AckKind::Revoked,
            owner: id.peer_id(),
            set_id: [3; 32],
        };
        let s = Signed::sign(&id, ack.clone(), t, UnixMillis::NEVER).unwrap();
        assert_eq!(
            Signed::<Ack>::decode(s.as_bytes(), t).unwrap().payload(),
            &ack
        );
        let req = RecoveryRequest {
            owner: id.peer_id(),
            set_id: [0; 32],
            nonce: [1; 16],
        };
        let s = Signed::sign(&id, req.clone(), t, t.saturating_add(1000)).unwrap();
        assert_eq!(
            Signed::<RecoveryRequest>::decode(s.as_bytes(), t)
                .unwrap()
                .payload(),
            &req
        );
        assert!(
            Signed::<RecoveryRequest>::decode(s.as_bytes(), t.saturating_add(1000)).is_err(),
            "expired"
        );
        let st = StatusReport {
            request_id: Hash256([4; 32]),
            status: RequestStatus::RateLimited,
        };
        let s = Signed::sign(&id, st.clone(), t, UnixMillis::NEVER).unwrap();
        assert_eq!(
            Signed::<StatusReport>::decode(s.as_bytes(), t)
                .unwrap()
                .payload(),
            &st
        );
        // A signature of one kind is not accepted as another.
        assert!(Signed::<Revocation>::decode(s.as_bytes(), t).is_err());

        let sealed = SealedShare {
            request_id: Hash256([6; 32]),
            share: Share { x: 3, y: [7; 32] },
            salt: [8; 32],
            set: vec![1, 2, 3],
        };
        let bytes = sealed.encode();
        assert_eq!(SealedShare::decode(&bytes).unwrap(), sealed);
        assert!(SealedShare::decode(&bytes[..60]).is_err());

        for f in [
            Frame::Grant(vec![1]),
            Frame::Ack(vec![]),
            Frame::Request(vec![2; 10]),
            Frame::Release(vec![3]),
            Frame::Status(vec![4]),
            Frame::Revoke(vec![5]),
        ] {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[1]).is_err());
        assert!(Frame::decode(&[2, 1]).is_err(), "unknown version");
        assert!(Frame::decode(&[1, 9]).is_err(), "unknown kind");
        assert!(
            Frame::decode(&vec![1; MAX_FRAME_LEN + 1]).is_err(),
            "over the limit"
        );
        assert_eq!(verification_code(&Hash256([0; 32])).len(), 6);
    }

    #[test]
    fn each_payload_names_an_unknown_version_or_kind() {
        let owner = Identity::from_seed(&[5; 32]).peer_id();
        let ack = |version: u8, kind: u8| {
            let mut v = vec![version, kind];
            v.extend_from_slice(owner.as_bytes());
            v.extend_from_slice(&[3; 32]);
            v
        };
        assert_eq!(Ack::decode(&ack(1, 3)).unwrap().kind, AckKind::Refused);
        assert_eq!(
            Ack::decode(&ack(2, 1)),
            Err(CryptoError::Malformed("unknown ack version"))
        );
        assert_eq!(
            Ack::decode(&ack(1, 4)),
            Err(CryptoError::Malformed("unknown ack kind"))
        );
        let status = |version: u8, status: u8| {
            let mut v = vec![version];
            v.extend_from_slice(&[4; 32]);
            v.push(status);
            v
        };
        for (byte, want) in [
            (1, RequestStatus::Pending),
            (2, RequestStatus::Denied),
            (3, RequestStatus::NoShare),
            (4, RequestStatus::RateLimited),
            (5, RequestStatus::Busy),
        ] {
            assert_eq!(StatusReport::decode(&status(1, byte)).unwrap().status, want);
        }
        assert_eq!(
            StatusReport::decode(&status(1, 6)),
            Err(CryptoError::Malformed("unknown request status"))
        );
        assert_eq!(
            StatusReport::decode(&status(0, 1)),
            Err(CryptoError::Malformed("unknown status version"))
        );
        let mut request = vec![2];
        request.extend_from_slice(owner.as_bytes());
        request.extend_from_slice(&[0; 48]);
        assert_eq!(
            RecoveryRequest::decode(&request),
            Err(CryptoError::Malformed("unknown request version"))
        );
        request[0] = RECOVERY_VERSION;
        assert_eq!(RecoveryRequest::decode(&request).unwrap().owner, owner);
        let mut revocation = vec![RECOVERY_VERSION];
        revocation.extend_from_slice(&[7; 32]);
        assert_eq!(Revocation::decode(&revocation).unwrap().set_id, [7; 32]);
        revocation[0] = 9;
        assert_eq!(
            Revocation::decode(&revocation),
            Err(CryptoError::Malformed("unknown revocation version"))
        );
        let mut set = set_bytes(1, &[(1, 1)]);
        set[0] = 2;
        assert_eq!(
            GuardianSet::decode(&set),
            Err(CryptoError::Malformed("unknown guardian set version"))
        );
        assert_eq!(
            GuardianSet::decode(&set_bytes(0, &[(1, 1)])),
            Err(CryptoError::Malformed("threshold out of range"))
        );
        assert_eq!(
            GuardianSet::decode(&set_bytes(1, &[(1, 1), (2, 1)])),
            Err(CryptoError::Malformed("repeated guardian or share index"))
        );
    }

    #[test]
    fn a_sealed_share_refuses_an_unknown_version_and_a_set_over_the_limit() {
        let sealed = SealedShare {
            request_id: Hash256::default(),
            share: Share { x: 1, y: [2; 32] },
            salt: [3; 32],
            set: vec![0; MAX_SIGNED_SET],
        };
        let mut bytes = sealed.encode().to_vec();
        assert_eq!(bytes.len(), MAX_SHARE_PLAINTEXT, "the largest fits");
        assert_eq!(SealedShare::decode(&bytes).unwrap(), sealed);
        bytes.push(0);
        assert_eq!(
            SealedShare::decode(&bytes),
            Err(CryptoError::TooLarge {
                what: "guardian set",
                len: MAX_SIGNED_SET + 1,
                max: MAX_SIGNED_SET
            })
        );
        bytes[0] = 2;
        assert_eq!(
            SealedShare::decode(&bytes),
            Err(CryptoError::Malformed("unknown sealed share version"))
        );
        assert_eq!(
            format!("{sealed:?}"),
            "SealedShare { x: 1, .. }",
            "no share bytes in logs"
        );
    }

    #[test]
    fn frames_name_why_they_are_refused() {
        assert_eq!(
            Frame::decode(&[]),
            Err(CryptoError::Truncated {
                needed: 2,
                remaining: 0
            })
        );
        assert_eq!(
            Frame::decode(&[RECOVERY_VERSION]),
            Err(CryptoError::Truncated {
                needed: 1,
                remaining: 0
            })
        );
        assert_eq!(
            Frame::decode(&[7, 1]),
            Err(CryptoError::UnsupportedVersion {
                found: 7,
                supported: RECOVERY_VERSION
            })
        );
        assert_eq!(
            Frame::decode(&[RECOVERY_VERSION, 0]),
            Err(CryptoError::Malformed("unknown recovery frame kind"))
        );
        let mut largest = vec![RECOVERY_VERSION, 1];
        largest.resize(MAX_FRAME_LEN, 0);
        assert_eq!(
            Frame::decode(&largest),
            Ok(Frame::Grant(vec![0; MAX_FRAME_LEN - 2]))
        );
        largest.push(0);
        assert_eq!(
            Frame::decode(&largest),
            Err(CryptoError::TooLarge {
                what: "recovery frame",
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn a_verification_code_is_six_digits_and_names_its_request() {
        let codes: Vec<String> = (0..50u8)
            .map(|i| verification_code(&Hash256([i; 32])))
            .collect();
        for c in &codes {
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
        assert_eq!(codes[0], verification_code(&Hash256([0; 32])), "stable");
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 45, "requests are told apart: {codes:?}");
    }
}
