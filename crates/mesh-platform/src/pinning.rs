//! Certificate pinning for the HTTPS endpoints the apps talk to (bootstrap and signaling).
//!
//! [`PinningVerifier`] is a rustls `ServerCertVerifier` that first runs ordinary WebPKI
//! validation and then, for hosts the active pin set covers, requires the SHA-256 of the
//! server certificate's SubjectPublicKeyInfo to be one of the set's pins.
//!
//! Pin sets are [`Signed`] documents (domain `mesh/pin-set/v1`) signed by a configured key, so
//! they rotate without an app release: [`PinPolicy::update`] accepts a document only if its
//! signature verifies under that key, its sequence number is higher than the active one's, and
//! it has not expired. Rules, in order:
//!
//! | situation | result |
//! |---|---|
//! | WebPKI validation fails | refused (pins never make an invalid certificate acceptable) |
//! | no pin set configured | accepted: plain WebPKI, never "accept anything" |
//! | host not covered by the pin set | accepted: plain WebPKI |
//! | pin set expired | accepted on WebPKI alone, with a warning and `pinning.expired` metric (as Android's `<pin-set expiration>`: an expired set must not brick the app) |
//! | no pin matches | refused (fails closed), `mesh.pinning.failures` counted by host |
//! | a pin matches | accepted |
//!
//! A pin set must hold at least two pins (a primary and a backup) and no all-zero pin.
//! `docs/runbooks/pin-rotation.md` explains how to make and rotate pins. Native targets only:
//! in the browser, the browser validates TLS.

use std::sync::{Arc, RwLock};

use mesh_crypto::wire::Reader;
use mesh_crypto::{Identity, PeerId, Signed, SignedPayload, UnixMillis};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Signature domain of pin-set documents.
pub const PIN_SET_DOMAIN: &str = "mesh/pin-set/v1";
/// Fewest pins in a set: a primary and a backup.
pub const MIN_PINS: usize = 2;
/// Most pins in a set.
pub const MAX_PINS: usize = 16;
/// Most hosts one set covers.
pub const MAX_HOSTS: usize = 32;
/// Longest host name.
pub const MAX_HOST_LEN: usize = 253;
/// Days before expiry from which every check logs a warning.
pub const EXPIRY_WARNING_DAYS: u64 = 30;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const PAYLOAD_VERSION: u8 = 1;

/// A SHA-256 pin of a SubjectPublicKeyInfo.
pub type Pin = [u8; 32];

/// Errors of pin sets and pin checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The document is malformed, badly signed or expired.
    #[error("invalid pin set: {0}")]
    Invalid(#[from] mesh_crypto::Error),
    /// The document is signed by another key than the configured pin-set signer.
    #[error("pin set signed by {0}, not by the configured signer")]
    WrongSigner(PeerId),
    /// The document is not newer than the active pin set.
    #[error("pin set sequence {offered} is not newer than the active {active}")]
    NotNewer {
        /// Sequence number offered.
        offered: u64,
        /// Sequence number in force.
        active: u64,
    },
    /// A pin set that breaks the rules (too few pins, all-zero pin, bad host name, ...).
    #[error("pin set refused: {0}")]
    Rules(&'static str),
    /// The pin policy's lock was poisoned by a panic elsewhere; nothing was changed.
    #[error("pin policy unavailable: a thread panicked while holding it")]
    Poisoned,
    /// The certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    Certificate(String),
}

/// The signed contents of a pin set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSetPayload {
    /// Increases with every new pin set; older ones are refused.
    pub sequence: u64,
    /// Hosts covered: exact names, or `*.example.org` for one label under it.
    pub hosts: Vec<String>,
    /// Accepted SPKI SHA-256 pins.
    pub pins: Vec<Pin>,
}

impl PinSetPayload {
    fn check_rules(&self) -> Result<(), PinError> {
        if self.pins.len() < MIN_PINS {
            return Err(PinError::Rules(
                "a pin set needs at least a primary and a backup pin",
            ));
        }
        if self.pins.len() > MAX_PINS {
            return Err(PinError::Rules("more than 16 pins"));
        }
        if self.pins.iter().any(|p| p.iter().all(|b| *b == 0)) {
            return Err(PinError::Rules("all-zero (placeholder) pin"));
        }
        let mut sorted = self.pins.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.pins.len() {
            return Err(PinError::Rules(
                "duplicate pin: the backup must be a different key",
            ));
        }
        if self.hosts.is_empty() || self.hosts.len() > MAX_HOSTS {
            return Err(PinError::Rules("a pin set covers 1 to 32 hosts"));
        }
        for h in &self.hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ok = !name.is_empty()
                && h.len() <= MAX_HOST_LEN
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(PinError::Rules(
                    "host names are lowercase DNS names, optionally starting with *.",
                ));
            }
        }
        Ok(())
    }

    fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => *h == host,
        })
    }
}

impl SignedPayload for PinSetPayload {
    const DOMAIN: &'static str = PIN_SET_DOMAIN;
    const MAX_LEN: usize = 1 + 8 + 1 + MAX_HOSTS * (1 + MAX_HOST_LEN) + 1 + MAX_PINS * 32;

    fn encode(&self, out: &mut Vec<u8>) {
        // Counts and lengths are bounded by `check_rules` before signing.
        #[allow(clippy::cast_possible_truncation)]
        {
            out.push(PAYLOAD_VERSION);
            out.extend_from_slice(&self.sequence.to_le_bytes());
            out.push(self.hosts.len() as u8);
            for h in &self.hosts {
                out.push(h.len() as u8);
                out.extend_from_slice(h.as_bytes());
            }
            out.push(self.pins.len() as u8);
            for p in &self.pins {
                out.extend_from_slice(p);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        use mesh_crypto::Error::{Malformed, UnsupportedVersion};
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != PAYLOAD_VERSION {
            return Err(UnsupportedVersion {
                found: v,
                supported: PAYLOAD_VERSION,
            });
        }
        let sequence = r.u64_le()?;
        let n_hosts = usize::from(r.u8()?);
        if n_hosts > MAX_HOSTS {
            return Err(Malformed("too many hosts in pin set"));
        }
        let mut hosts = Vec::with_capacity(n_hosts);
        for _ in 0..n_hosts {
            let len = usize::from(r.u8()?);
            let h =
                std::str::from_utf8(r.bytes(len)?).map_err(|_| Malformed("host is not UTF-8"))?;
            hosts.push(h.to_string());
        }
        let n_pins = usize::from(r.u8()?);
        if n_pins > MAX_PINS {
            return Err(Malformed("too many pins in pin set"));
        }
        let mut pins = Vec::with_capacity(n_pins);
        for _ in 0..n_pins {
            pins.push(r.array()?);
        }
        r.finish()?;
        Ok(Self {
            sequence,
            hosts,
            pins,
        })
    }
}

/// Signs a pin-set document (for the operator's tooling and tests).
///
/// # Errors
/// [`PinError::Rules`] if the set breaks the rules (see [`MIN_PINS`] and the module docs).
pub fn sign_pin_set(
    signer: &Identity,
    payload: PinSetPayload,
    created_at: UnixMillis,
    expires_at: UnixMillis,
) -> Result<Vec<u8>, PinError> {
    payload.check_rules()?;
    Ok(Signed::sign(signer, payload, created_at, expires_at)?.into_bytes())
}

/// SHA-256 of a DER SubjectPublicKeyInfo.
pub fn pin_of_spki(spki_der: &[u8]) -> Pin {
    dryoc::sha256::Sha256::compute(spki_der)
}

/// The pin of a DER certificate's public key.
///
/// # Errors
/// [`PinError::Certificate`] if the certificate does not parse.
pub fn pin_of_certificate(cert_der: &[u8]) -> Result<Pin, PinError> {
    let der = CertificateDer::from(cert_der);
    let parsed =
        ParsedCertificate::try_from(&der).map_err(|e| PinError::Certificate(e.to_string()))?;
    Ok(pin_of_spki(&parsed.subject_public_key_info()))
}

/// The usual text form of a pin: `sha256/` followed by standard base64.
pub fn pin_to_string(pin: &Pin) -> String {
    format!("sha256/{}", data_encoding::BASE64.encode(pin))
}

struct Metrics {
    failures: Counter<u64>,
    expired_checks: Counter<u64>,
    days_left: Gauge<f64>,
}

impl Metrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("mesh-platform");
        let m = Self {
            failures: meter
                .u64_counter("mesh.pinning.failures")
                .with_description("TLS connections refused because no pin matched, by host")
                .build(),
            expired_checks: meter
                .u64_counter("mesh.pinning.expired")
                .with_description(
                    "Connections checked on WebPKI alone because the pin set has expired",
                )
                .build(),
            days_left: meter
                .f64_gauge("mesh.pinning.days_until_expiry")
                .with_description("Days until the active pin set expires (negative: expired)")
                .build(),
        };
        // The counters exist from the start, at zero: for an alert, absent is not zero.
        m.failures.add(0, &[]);
        m.expired_checks.add(0, &[]);
        m
    }
}

/// What the policy decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinDecision {
    /// No pin set, or the host is not covered: WebPKI alone decides.
    NotPinned,
    /// A pin matched.
    Matched,
    /// The pin set has expired: WebPKI alone decides (and a warning was logged).
    Expired,
    /// No pin matched: the connection must be refused.
    Mismatch,
}

/// The active pin set and who may replace it.
pub struct PinPolicy {
    signer: PeerId,
    active: RwLock<Option<Signed<PinSetPayload>>>,
    metrics: Metrics,
}

impl std::fmt::Debug for PinPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinPolicy")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl PinPolicy {
    /// A policy with no pin set yet (plain WebPKI) that accepts pin sets signed by `signer`.
    pub fn new(signer: PeerId) -> Self {
        Self {
            signer,
            active: RwLock::new(None),
            metrics: Metrics::new(),
        }
    }

    /// Installs a signed pin-set document.
    ///
    /// # Errors
    /// [`PinError::Invalid`] (layout, signature, expired), [`PinError::WrongSigner`],
    /// [`PinError::NotNewer`], [`PinError::Rules`].
    pub fn update(&self, document: &[u8], now: UnixMillis) -> Result<u64, PinError> {
        let set = Signed::<PinSetPayload>::decode(document, now)?;
        if *set.author() != self.signer {
            return Err(PinError::WrongSigner(*set.author()));
        }
        set.payload().check_rules()?;
        let mut active = self.active.write().map_err(|_| PinError::Poisoned)?;
        if let Some(current) = active.as_ref()
            && set.payload().sequence <= current.payload().sequence
        {
            return Err(PinError::NotNewer {
                offered: set.payload().sequence,
                active: current.payload().sequence,
            });
        }
        let sequence = set.payload().sequence;
        self.record_expiry(set.expires_at(), now);
        *active = Some(set);
        Ok(sequence)
    }

    /// Sequence number of the active pin set.
    pub fn active_sequence(&self) -> Option<u64> {
        self.active
            .read()
            .ok()?
            .as_ref()
            .map(|s| s.payload().sequence)
    }

    /// Days until the active pin set expires (negative once expired).
    pub fn days_until_expiry(&self, now: UnixMillis) -> Option<f64> {
        let expires = self.active.read().ok()?.as_ref()?.expires_at();
        #[allow(clippy::cast_precision_loss)]
        Some((expires.0 as f64 - now.0 as f64) / DAY_MS as f64)
    }

    /// Records the `mesh.pinning.days_until_expiry` gauge for the active set at `now` (and
    /// warns when it is close), as every check does: for a node that distributes the set
    /// rather than connecting through it, so its dashboards see the expiry coming.
    pub fn report_expiry(&self, now: UnixMillis) {
        let expires = self
            .active
            .read()
            .ok()
            .and_then(|a| a.as_ref().map(Signed::expires_at));
        if let Some(expires) = expires {
            self.record_expiry(expires, now);
        }
    }

    fn record_expiry(&self, expires_at: UnixMillis, now: UnixMillis) {
        #[allow(clippy::cast_precision_loss)]
        let days = (expires_at.0 as f64 - now.0 as f64) / DAY_MS as f64;
        self.metrics.days_left.record(days, &[]);
        if expires_at.0.saturating_sub(now.0) < EXPIRY_WARNING_DAYS * DAY_MS {
            tracing::warn!(
                days_left = days,
                "certificate pin set expires soon: publish a new one (docs/runbooks/pin-rotation.md)"
            );
        }
    }

    /// Decides for a certificate of `host` whose SPKI hash is `pin`, at `now`.
    pub fn check(&self, host: &str, pin: &Pin, now: UnixMillis) -> PinDecision {
        let Ok(guard) = self.active.read() else {
            return PinDecision::Mismatch; // fail closed
        };
        let Some(set) = guard.as_ref() else {
            return PinDecision::NotPinned;
        };
        if !set.payload().covers(host) {
            return PinDecision::NotPinned;
        }
        self.record_expiry(set.expires_at(), now);
        if set.is_expired(now) {
            self.metrics.expired_checks.add(1, &[]);
            tracing::warn!(
                host,
                "certificate pin set has expired: checking on WebPKI alone"
            );
            return PinDecision::Expired;
        }
        if set.payload().pins.contains(pin) {
            PinDecision::Matched
        } else {
            self.metrics
                .failures
                .add(1, &[KeyValue::new("host", host.to_string())]);
            tracing::error!(host, pin = %pin_to_string(pin), "certificate pin mismatch: connection refused");
            PinDecision::Mismatch
        }
    }
}

/// rustls verifier: WebPKI first, then the [`PinPolicy`].
#[derive(Debug)]
pub struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    policy: Arc<PinPolicy>,
}

impl PinningVerifier {
    /// Wraps a WebPKI verifier (built with the app's roots and crypto provider).
    pub fn new(webpki: Arc<WebPkiServerVerifier>, policy: Arc<PinPolicy>) -> Self {
        Self { webpki, policy }
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let spki = ParsedCertificate::try_from(end_entity)?.subject_public_key_info();
        let pin = pin_of_spki(&spki);
        let host = server_name.to_str();
        let now_ms = UnixMillis(now.as_secs().saturating_mul(1000));
        match self.policy.check(&host, &pin, now_ms) {
            PinDecision::NotPinned | PinDecision::Matched | PinDecision::Expired => Ok(verified),
            PinDecision::Mismatch => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn payload(seq: u64) -> PinSetPayload {
        PinSetPayload {
            sequence: seq,
            hosts: vec!["api.example.org".into(), "*.mesh.example.org".into()],
            pins: vec![[1; 32], [2; 32]],
        }
    }

    #[test]
    fn host_matching() {
        let p = payload(1);
        assert!(p.covers("api.example.org"));
        assert!(p.covers("API.example.org."));
        assert!(p.covers("boot.mesh.example.org"));
        assert!(!p.covers("mesh.example.org"));
        assert!(!p.covers("a.b.mesh.example.org"));
        assert!(!p.covers("evilapi.example.org"));
        assert!(!p.covers("xmesh.example.org"));
    }

    #[test]
    fn rules_are_enforced_when_signing_and_updating() {
        let signer = Identity::from_seed(&[7; 32]);
        let far = NOW.saturating_add(365 * DAY_MS);
        let mut one_pin = payload(1);
        one_pin.pins.truncate(1);
        assert!(sign_pin_set(&signer, one_pin.clone(), NOW, far).is_err());
        let mut zero = payload(1);
        zero.pins[1] = [0; 32];
        assert!(sign_pin_set(&signer, zero, NOW, far).is_err());
        let mut dup = payload(1);
        dup.pins[1] = dup.pins[0];
        assert!(sign_pin_set(&signer, dup, NOW, far).is_err());
        let mut bad_host = payload(1);
        bad_host.hosts = vec!["Bad Host".into()];
        assert!(sign_pin_set(&signer, bad_host, NOW, far).is_err());
        // A rule-breaking set signed by other means is refused by update too.
        let policy = PinPolicy::new(signer.peer_id());
        let raw = Signed::sign(&signer, one_pin, NOW, far)
            .unwrap()
            .into_bytes();
        assert!(matches!(policy.update(&raw, NOW), Err(PinError::Rules(_))));
    }

    #[test]
    fn updates_need_the_signer_and_a_newer_sequence() {
        let signer = Identity::from_seed(&[7; 32]);
        let other = Identity::from_seed(&[8; 32]);
        let far = NOW.saturating_add(365 * DAY_MS);
        let policy = PinPolicy::new(signer.peer_id());
        assert_eq!(
            policy.check("api.example.org", &[9; 32], NOW),
            PinDecision::NotPinned
        );
        let v2 = sign_pin_set(&signer, payload(2), NOW, far).unwrap();
        assert_eq!(policy.update(&v2, NOW), Ok(2));
        let v1 = sign_pin_set(&signer, payload(1), NOW, far).unwrap();
        assert_eq!(
            policy.update(&v1, NOW),
            Err(PinError::NotNewer {
                offered: 1,
                active: 2
            })
        );
        assert_eq!(
            policy.update(&v2, NOW),
            Err(PinError::NotNewer {
                offered: 2,
                active: 2
            }),
            "replay"
        );
        let forged = sign_pin_set(&other, payload(3), NOW, far).unwrap();
        assert_eq!(
            policy.update(&forged, NOW),
            Err(PinError::WrongSigner(other.peer_id()))
        );
        let mut tampered = sign_pin_set(&signer, payload(3), NOW, far).unwrap();
        let last = tampered.len() - 70;
        tampered[last] ^= 1;
        assert!(matches!(
            policy.update(&tampered, NOW),
            Err(PinError::Invalid(_))
        ));
        assert_eq!(policy.active_sequence(), Some(2));
        assert_eq!(
            policy.check("api.example.org", &[2; 32], NOW),
            PinDecision::Matched
        );
        assert_eq!(
            policy.check("api.example.org", &[9; 32], NOW),
            PinDecision::Mismatch
        );
        assert_eq!(
            policy.check("other.org", &[9; 32], NOW),
            PinDecision::NotPinned
        );
        assert_eq!(
            policy.check("api.example.org", &[9; 32], far),
            PinDecision::Expired
        );
        assert!(
            policy
                .days_until_expiry(NOW)
                .is_some_and(|d| (d - 365.0).abs() < 1e-9)
        );
    }

    #[test]
    fn pin_text_form() {
        assert_eq!(
            pin_to_string(&[0; 32]),
            "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
    }
}
