//! Invites (signed contact cards, shared as a link, QR code or NFC tag) and certificate pin
//! verification against a signed pin set.

use std::sync::Arc;

use mesh_crypto::UnixMillis;
use mesh_platform::invite::{BootstrapHint, DEFAULT_INVITE_TTL_MS, Invite};
use mesh_platform::pinning::{PinDecision, PinPolicy, pin_of_certificate};

use crate::identity::MeshIdentity;
use crate::{MeshError, invalid, parse_peer};

fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixMillis(ms)
}

/// A verified invite's contents.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InviteInfo {
    /// Who invites (their peer id, proven by the signature).
    pub inviter: String,
    /// The inviter's fingerprint, to show beside the name.
    pub fingerprint: String,
    /// The name the inviter chose (unverified: show it with the fingerprint).
    pub display_name: String,
    /// Signaling endpoints (meshd URLs) to join the mesh through.
    pub signaling: Vec<String>,
    /// Peers to look up through the DHT.
    pub peers: Vec<String>,
    /// When the invite expires, in Unix milliseconds.
    pub expires_at_ms: u64,
    /// The invite's id (hex), to track single-use invites.
    pub id: String,
}

/// Creates an invite from `identity` named `display_name`, with signaling endpoints
/// (`https://...` meshd URLs) and peers as bootstrap hints, valid for `ttl_seconds` (0: the
/// default, 7 days). Returns it as a `mesh:` link (what a QR code shows).
///
/// # Errors
/// [`MeshError::InvalidInput`]: a name over 64 bytes, over 8 hints, a hint that is not an
/// http(s) URL or a peer id.
#[uniffi::export]
pub fn invite_create(
    identity: &Arc<MeshIdentity>,
    display_name: String,
    signaling: Vec<String>,
    peers: Vec<String>,
    ttl_seconds: u64,
) -> Result<String, MeshError> {
    let mut hints: Vec<BootstrapHint> = signaling
        .into_iter()
        .map(BootstrapHint::Signaling)
        .collect();
    for p in &peers {
        hints.push(BootstrapHint::Peer(parse_peer(p)?));
    }
    let ttl = if ttl_seconds == 0 {
        DEFAULT_INVITE_TTL_MS
    } else {
        ttl_seconds.saturating_mul(1000)
    };
    let invite =
        Invite::create(&identity.inner, &display_name, hints, now(), ttl).map_err(invalid)?;
    Ok(invite.to_link())
}

/// Verifies an invite link (signature, layout, validity period) now.
///
/// # Errors
/// [`MeshError::InvalidInput`] for a link that does not verify or has expired.
#[uniffi::export]
pub fn invite_verify(link: String) -> Result<InviteInfo, MeshError> {
    let invite = Invite::from_link(link.trim(), now()).map_err(invalid)?;
    let payload = invite.payload();
    let mut signaling = Vec::new();
    let mut peers = Vec::new();
    for hint in &payload.bootstrap {
        match hint {
            BootstrapHint::Signaling(url) => signaling.push(url.clone()),
            BootstrapHint::Peer(p) => peers.push(p.to_string()),
        }
    }
    Ok(InviteInfo {
        inviter: invite.inviter().to_string(),
        fingerprint: invite.inviter().fingerprint(),
        display_name: payload.display_name.clone(),
        signaling,
        peers,
        expires_at_ms: invite.expires_at().0,
        id: invite.id().to_hex(),
    })
}

/// What a pin check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PinCheck {
    /// No pin set, or the host is not covered: the platform's certificate checks alone decide.
    NotPinned,
    /// A pin matched: accept (after the platform's own checks).
    Matched,
    /// The pin set has expired: the platform's checks alone decide.
    Expired,
    /// No pin matched: refuse the connection.
    Mismatch,
}

/// Certificate pinning for the app's own TLS connections (to its meshd or push endpoints):
/// pins come in pin sets signed by `signer`, so they can be rotated without an app update.
#[derive(uniffi::Object)]
pub struct PinVerifier {
    signer: mesh_crypto::PeerId,
    policy: PinPolicy,
    min_sequence: u64,
}

impl std::fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinVerifier").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl PinVerifier {
    /// A verifier accepting pin sets signed by peer `signer`, with none active yet, refusing
    /// any with a sequence number below `min_sequence`: give it the sequence of the last pin
    /// set this app accepted (kept across restarts; 0 the first time), so that an older pin
    /// set, still within its validity, cannot be replayed after a restart.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a malformed peer id.
    #[uniffi::constructor]
    pub fn new(signer: String, min_sequence: u64) -> Result<Arc<Self>, MeshError> {
        let signer = parse_peer(&signer)?;
        Ok(Arc::new(Self {
            signer,
            policy: PinPolicy::new(signer),
            min_sequence,
        }))
    }

    /// Makes the signed pin set `document` active. Returns its sequence number (keep it, for
    /// `min_sequence` at the next start).
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`]: not signed by the signer, expired, malformed, below
    /// `min_sequence`, or not newer than the active one (a rollback).
    pub fn update(&self, document: Vec<u8>) -> Result<u64, MeshError> {
        let now = now();
        // Verified on its own first, to read its sequence before it can become active.
        let sequence = PinPolicy::new(self.signer)
            .update(&document, now)
            .map_err(invalid)?;
        if sequence < self.min_sequence {
            return Err(invalid(format!(
                "pin set {sequence} is older than the last one accepted ({})",
                self.min_sequence
            )));
        }
        self.policy.update(&document, now).map_err(invalid)
    }

    /// The active pin set's sequence number, if one is active.
    pub fn active_sequence(&self) -> Option<u64> {
        self.policy.active_sequence()
    }

    /// Checks the leaf certificate (`certificate_der`, DER) that `host` presented.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a certificate that does not parse.
    pub fn check_certificate(
        &self,
        host: String,
        certificate_der: Vec<u8>,
    ) -> Result<PinCheck, MeshError> {
        let pin = pin_of_certificate(&certificate_der).map_err(invalid)?;
        Ok(match self.policy.check(&host, &pin, now()) {
            PinDecision::NotPinned => PinCheck::NotPinned,
            PinDecision::Matched => PinCheck::Matched,
            PinDecision::Expired => PinCheck::Expired,
            PinDecision::Mismatch => PinCheck::Mismatch,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failure

    use mesh_crypto::Identity;
    use mesh_platform::pinning::{PinSetPayload, sign_pin_set};

    use super::*;

    fn certificate() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mesh.example.org".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn pin_set(signer: &Identity, sequence: u64, pins: Vec<[u8; 32]>) -> Vec<u8> {
        let now = now();
        sign_pin_set(
            signer,
            PinSetPayload {
                sequence,
                hosts: vec!["mesh.example.org".into()],
                pins,
            },
            now,
            UnixMillis(now.0 + 86_400_000),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_pin_set_decides_and_only_its_signer_can_replace_it() {
        let signer = Identity::generate();
        let (good, backup, other) = (certificate(), certificate(), certificate());
        let pin = |c: &[u8]| pin_of_certificate(c).unwrap();
        let verifier = PinVerifier::new(signer.peer_id().to_string(), 0).unwrap();
        let host = || "mesh.example.org".to_string();
        // No pin set yet: the platform's checks alone decide.
        assert_eq!(
            verifier.check_certificate(host(), good.clone()).unwrap(),
            PinCheck::NotPinned
        );
        let document = pin_set(&signer, 1, vec![pin(&good), pin(&backup)]);
        assert_eq!(verifier.update(document.clone()).unwrap(), 1);
        assert_eq!(verifier.active_sequence(), Some(1));
        assert_eq!(
            verifier.check_certificate(host(), good.clone()).unwrap(),
            PinCheck::Matched
        );
        assert_eq!(
            verifier.check_certificate(host(), backup).unwrap(),
            PinCheck::Matched
        );
        assert_eq!(
            verifier.check_certificate(host(), other.clone()).unwrap(),
            PinCheck::Mismatch
        );
        assert_eq!(
            verifier
                .check_certificate("elsewhere.example.org".into(), other.clone())
                .unwrap(),
            PinCheck::NotPinned
        );
        // Someone else's pin set, and a replay of the active one, are refused.
        let forged = pin_set(&Identity::generate(), 2, vec![pin(&other), pin(&good)]);
        assert!(matches!(
            verifier.update(forged),
            Err(MeshError::InvalidInput { .. })
        ));
        assert!(matches!(
            verifier.update(document),
            Err(MeshError::InvalidInput { .. })
        ));
        assert_eq!(
            verifier.check_certificate(host(), other.clone()).unwrap(),
            PinCheck::Mismatch
        );
        assert!(matches!(
            verifier.check_certificate(host(), b"not DER".to_vec()),
            Err(MeshError::InvalidInput { .. })
        ));

        // After a restart, with the last accepted sequence remembered: the old pin set (still
        // valid) is refused, a newer one is taken.
        let restarted = PinVerifier::new(signer.peer_id().to_string(), 2).unwrap();
        let old = pin_set(&signer, 1, vec![pin(&other), pin(&good)]);
        assert!(matches!(
            restarted.update(old),
            Err(MeshError::InvalidInput { .. })
        ));
        assert_eq!(restarted.active_sequence(), None);
        let newer = pin_set(&signer, 2, vec![pin(&good), pin(&other)]);
        assert_eq!(restarted.update(newer).unwrap(), 2);
    }
}
