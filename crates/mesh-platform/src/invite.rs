//! Signed invites, for NFC tags, QR codes and links.
//!
//! An invite is a [`Signed`] record (domain `mesh/invite/v1`): the author is the inviter's
//! public key, the validity window is the creation time and expiry (7 days by default), and the
//! payload holds a display name, a random nonce and bootstrap hints. Receiving one always
//! verifies it: there is no way to read an invite's contents without checking its signature and
//! expiry first. Byte layouts and the two text/NFC encodings are in `docs/PROTOCOL.md`.

use mesh_crypto::wire::Reader;
use mesh_crypto::{Identity, PeerId, Signed, SignedPayload, UnixMillis};

/// Signature domain of invites.
pub const INVITE_DOMAIN: &str = "mesh/invite/v1";
/// Default lifetime of an invite: 7 days.
pub const DEFAULT_INVITE_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Longest display name, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// Most bootstrap hints in one invite.
pub const MAX_HINTS: usize = 8;
/// Longest bootstrap URL, in bytes.
pub const MAX_HINT_LEN: usize = 255;
/// Length of the invite nonce.
pub const INVITE_NONCE_LEN: usize = 16;
/// Longest encoded invite payload: version, name length, name, nonce, hint count, hints.
pub const MAX_INVITE_PAYLOAD_LEN: usize =
    1 + 1 + MAX_DISPLAY_NAME_LEN + INVITE_NONCE_LEN + 1 + MAX_HINTS * (2 + MAX_HINT_LEN);
/// MIME type of the NFC NDEF record that carries an invite.
pub const NFC_MIME_TYPE: &str = "application/vnd.mesh.invite";
/// Prefix of the link / QR form.
pub const LINK_PREFIX: &str = "mesh://invite/";
/// Longest link accepted, checked before decoding.
pub const MAX_LINK_LEN: usize = LINK_PREFIX.len() + 4 * (MAX_INVITE_PAYLOAD_LEN + 200) / 3 + 4;

/// Why an invite was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The signature, key, validity or layout check failed (see the inner error).
    #[error("invalid invite: {0}")]
    Invalid(#[from] mesh_crypto::Error),
    /// The NFC record or link is not an invite encoding.
    #[error("not a mesh invite encoding: {0}")]
    Encoding(&'static str),
    /// A field is over its limit or otherwise unacceptable when creating an invite.
    #[error("cannot create invite: {0}")]
    Field(&'static str),
}

impl InviteError {
    /// Whether the invite failed because it expired (so the UI can ask for a fresh one).
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Invalid(mesh_crypto::Error::Expired { .. }))
    }
}

/// Where a new peer can reach the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapHint {
    /// An HTTP(S) signaling endpoint, such as a `meshd` node's.
    Signaling(String),
    /// A peer to look up through the DHT.
    Peer(PeerId),
}

/// The signed contents of an invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitePayload {
    /// The inviter's name as they chose it (unverified: show it with the fingerprint).
    pub display_name: String,
    /// Random, so two invites never collide and a single-use invite can be tracked.
    pub nonce: [u8; INVITE_NONCE_LEN],
    /// Bootstrap hints.
    pub bootstrap: Vec<BootstrapHint>,
}

const HINT_SIGNALING: u8 = 1;
const HINT_PEER: u8 = 2;
const PAYLOAD_VERSION: u8 = 1;

impl SignedPayload for InvitePayload {
    const DOMAIN: &'static str = INVITE_DOMAIN;
    const MAX_LEN: usize = MAX_INVITE_PAYLOAD_LEN;

    fn encode(&self, out: &mut Vec<u8>) {
        // Lengths are validated by `Invite::create` before encoding.
        #[allow(clippy::cast_possible_truncation)]
        {
            out.push(PAYLOAD_VERSION);
            out.push(self.display_name.len() as u8);
            out.extend_from_slice(self.display_name.as_bytes());
            out.extend_from_slice(&self.nonce);
            out.push(self.bootstrap.len() as u8);
            for hint in &self.bootstrap {
                match hint {
                    BootstrapHint::Signaling(url) => {
                        out.extend_from_slice(&[HINT_SIGNALING, url.len() as u8]);
                        out.extend_from_slice(url.as_bytes());
                    }
                    BootstrapHint::Peer(peer) => {
                        out.extend_from_slice(&[HINT_PEER, 32]);
                        out.extend_from_slice(peer.as_bytes());
                    }
                }
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        use mesh_crypto::Error::{Malformed, UnsupportedVersion};
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PAYLOAD_VERSION {
            return Err(UnsupportedVersion {
                found: version,
                supported: PAYLOAD_VERSION,
            });
        }
        let name_len = usize::from(r.u8()?);
        if name_len > MAX_DISPLAY_NAME_LEN {
            return Err(Malformed("invite display name too long"));
        }
        let display_name = String::from_utf8(r.bytes(name_len)?.to_vec())
            .map_err(|_| Malformed("invite display name is not UTF-8"))?;
        let nonce = r.array()?;
        let count = usize::from(r.u8()?);
        if count > MAX_HINTS {
            return Err(Malformed("too many bootstrap hints"));
        }
        let mut bootstrap = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.u8()?;
            let len = usize::from(r.u8()?);
            let data = r.bytes(len)?;
            bootstrap.push(match kind {
                HINT_SIGNALING => {
                    let url = std::str::from_utf8(data)
                        .map_err(|_| Malformed("bootstrap URL is not UTF-8"))?;
                    check_url(url).map_err(|_| Malformed("bootstrap URL is not http(s)"))?;
                    BootstrapHint::Signaling(url.to_string())
                }
                HINT_PEER => BootstrapHint::Peer(PeerId::from_slice(data)?),
                _ => return Err(Malformed("unknown bootstrap hint kind")),
            });
        }
        r.finish()?;
        Ok(Self {
            display_name,
            nonce,
            bootstrap,
        })
    }
}

fn check_url(url: &str) -> Result<(), InviteError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= MAX_HINT_LEN
        && url.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(InviteError::Field(
            "bootstrap URL must be a printable http(s) URL of at most 255 bytes",
        ))
    }
}

/// A verified invite. Made by [`Invite::create`] or by one of the `verify`/`from_*` functions,
/// which check signature, key and validity window: there is no unverified `Invite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite(Signed<InvitePayload>);

impl Invite {
    /// Creates and signs an invite valid from `now` for `ttl_ms` (see [`DEFAULT_INVITE_TTL_MS`]).
    ///
    /// # Errors
    /// [`InviteError::Field`] for a display name over [`MAX_DISPLAY_NAME_LEN`] bytes, more
    /// than [`MAX_HINTS`] hints, a hint that is not an http(s) URL, or a zero lifetime.
    pub fn create(
        inviter: &Identity,
        display_name: &str,
        bootstrap: Vec<BootstrapHint>,
        now: UnixMillis,
        ttl_ms: u64,
    ) -> Result<Self, InviteError> {
        if display_name.len() > MAX_DISPLAY_NAME_LEN {
            return Err(InviteError::Field("display name longer than 64 bytes"));
        }
        if bootstrap.len() > MAX_HINTS {
            return Err(InviteError::Field("more than 8 bootstrap hints"));
        }
        for hint in &bootstrap {
            if let BootstrapHint::Signaling(url) = hint {
                check_url(url)?;
            }
        }
        if ttl_ms == 0 {
            return Err(InviteError::Field("an invite must be valid for some time"));
        }
        let mut nonce = [0u8; INVITE_NONCE_LEN];
        dryoc::rng::copy_randombytes(&mut nonce);
        let payload = InvitePayload {
            display_name: display_name.to_string(),
            nonce,
            bootstrap,
        };
        Ok(Self(Signed::sign(
            inviter,
            payload,
            now,
            now.saturating_add(ttl_ms),
        )?))
    }

    /// Verifies an invite's raw bytes at time `now`.
    ///
    /// # Errors
    /// [`InviteError::Invalid`] for a bad layout, invalid key, bad signature, or an invite that
    /// is expired or not yet valid.
    pub fn verify(bytes: &[u8], now: UnixMillis) -> Result<Self, InviteError> {
        Ok(Self(Signed::decode(bytes, now)?))
    }

    /// The inviter's identity (their signature verified).
    pub fn inviter(&self) -> PeerId {
        *self.0.author()
    }

    /// The signed contents.
    pub fn payload(&self) -> &InvitePayload {
        self.0.payload()
    }

    /// When the invite was made.
    pub fn created_at(&self) -> UnixMillis {
        self.0.created_at()
    }

    /// When it expires.
    pub fn expires_at(&self) -> UnixMillis {
        self.0.expires_at()
    }

    /// Stable id, for tracking single use.
    pub fn id(&self) -> mesh_crypto::Hash256 {
        *self.0.id()
    }

    /// The raw signed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The link / QR form: `mesh://invite/` followed by the bytes in unpadded base64url.
    pub fn to_link(&self) -> String {
        format!(
            "{LINK_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(self.as_bytes())
        )
    }

    /// Parses and verifies the link / QR form.
    ///
    /// # Errors
    /// [`InviteError::Encoding`] if it is not an invite link, else as [`Invite::verify`].
    pub fn from_link(link: &str, now: UnixMillis) -> Result<Self, InviteError> {
        let link = link.trim();
        if link.len() > MAX_LINK_LEN {
            return Err(InviteError::Encoding("link too long"));
        }
        let body = link.strip_prefix(LINK_PREFIX).ok_or(InviteError::Encoding(
            "link does not start with mesh://invite/",
        ))?;
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| InviteError::Encoding("link body is not unpadded base64url"))?;
        Self::verify(&bytes, now)
    }

    /// The NFC form: one NDEF record (TNF 2, MIME type [`NFC_MIME_TYPE`]) whose payload is the
    /// invite bytes, as a complete single-record NDEF message.
    pub fn to_ndef(&self) -> Vec<u8> {
        ndef_record(NFC_MIME_TYPE.as_bytes(), self.as_bytes())
    }

    /// Parses and verifies the NFC form.
    ///
    /// # Errors
    /// [`InviteError::Encoding`] if it is not a single MIME record of type [`NFC_MIME_TYPE`],
    /// else as [`Invite::verify`].
    pub fn from_ndef(message: &[u8], now: UnixMillis) -> Result<Self, InviteError> {
        let (mime, payload) = parse_ndef_record(message)?;
        if !mime.eq_ignore_ascii_case(NFC_MIME_TYPE.as_bytes()) {
            return Err(InviteError::Encoding(
                "NDEF record is not of type application/vnd.mesh.invite",
            ));
        }
        Self::verify(payload, now)
    }
}

const NDEF_MB: u8 = 0x80;
const NDEF_ME: u8 = 0x40;
const NDEF_CF: u8 = 0x20;
const NDEF_SR: u8 = 0x10;
const NDEF_IL: u8 = 0x08;
const NDEF_TNF_MIME: u8 = 0x02;

fn ndef_record(mime: &[u8], payload: &[u8]) -> Vec<u8> {
    let short = payload.len() < 256;
    let mut out = Vec::with_capacity(6 + mime.len() + payload.len());
    out.push(NDEF_MB | NDEF_ME | if short { NDEF_SR } else { 0 } | NDEF_TNF_MIME);
    // The MIME type is a short constant; payloads are at most a few KiB.
    #[allow(clippy::cast_possible_truncation)]
    {
        out.push(mime.len() as u8);
        if short {
            out.push(payload.len() as u8);
        } else {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(mime);
    out.extend_from_slice(payload);
    out
}

fn parse_ndef_record(message: &[u8]) -> Result<(&[u8], &[u8]), InviteError> {
    let bad = |_| InviteError::Encoding("truncated NDEF record");
    let mut r = Reader::new(message);
    let header = r.u8().map_err(bad)?;
    if header & (NDEF_MB | NDEF_ME) != (NDEF_MB | NDEF_ME) {
        return Err(InviteError::Encoding(
            "NDEF message must be exactly one record",
        ));
    }
    if header & NDEF_CF != 0 {
        return Err(InviteError::Encoding(
            "chunked NDEF records are not supported",
        ));
    }
    if header & 0x07 != NDEF_TNF_MIME {
        return Err(InviteError::Encoding("NDEF record is not a MIME record"));
    }
    let type_len = usize::from(r.u8().map_err(bad)?);
    let payload_len = if header & NDEF_SR != 0 {
        usize::from(r.u8().map_err(bad)?)
    } else {
        let n = u32::from_be_bytes(r.array().map_err(bad)?);
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    if payload_len
        > mesh_crypto::SIGNED_HEADER_LEN + MAX_INVITE_PAYLOAD_LEN + mesh_crypto::SIGNATURE_LEN
    {
        return Err(InviteError::Encoding(
            "NDEF payload too large for an invite",
        ));
    }
    let id_len = if header & NDEF_IL != 0 {
        usize::from(r.u8().map_err(bad)?)
    } else {
        0
    };
    let mime = r.bytes(type_len).map_err(bad)?;
    r.bytes(id_len).map_err(bad)?;
    let payload = r.bytes(payload_len).map_err(bad)?;
    r.finish()
        .map_err(|_| InviteError::Encoding("bytes after the NDEF record"))?;
    Ok((mime, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn sample() -> (Identity, Invite) {
        let alice = Identity::from_seed(&[0xa1; 32]);
        let hints = vec![
            BootstrapHint::Signaling("https://meshd.example.org/signal".into()),
            BootstrapHint::Peer(Identity::from_seed(&[2; 32]).peer_id()),
        ];
        let invite = Invite::create(&alice, "Alice", hints, NOW, DEFAULT_INVITE_TTL_MS).unwrap();
        (alice, invite)
    }

    #[test]
    fn round_trips_through_every_encoding() {
        let (alice, invite) = sample();
        assert_eq!(invite.inviter(), alice.peer_id());
        assert_eq!(
            invite.expires_at(),
            NOW.saturating_add(DEFAULT_INVITE_TTL_MS)
        );
        let back = Invite::verify(invite.as_bytes(), NOW).unwrap();
        assert_eq!(back, invite);
        assert_eq!(Invite::from_link(&invite.to_link(), NOW).unwrap(), invite);
        assert_eq!(Invite::from_ndef(&invite.to_ndef(), NOW).unwrap(), invite);
        assert_eq!(back.payload().display_name, "Alice");
        assert_eq!(back.payload().bootstrap.len(), 2);
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let (_, invite) = sample();
        let bytes = invite.as_bytes();
        for pos in 0..bytes.len() {
            let mut t = bytes.to_vec();
            t[pos] ^= 0x01;
            assert!(Invite::verify(&t, NOW).is_err(), "flip at {pos} accepted");
        }
        for len in 0..bytes.len() {
            assert!(
                Invite::verify(&bytes[..len], NOW).is_err(),
                "truncated to {len} accepted"
            );
        }
    }

    #[test]
    fn expiry_is_enforced_at_the_boundary() {
        let (_, invite) = sample();
        let last_ms = UnixMillis(NOW.0 + DEFAULT_INVITE_TTL_MS - 1);
        assert!(Invite::verify(invite.as_bytes(), last_ms).is_ok());
        let err = Invite::verify(invite.as_bytes(), NOW.saturating_add(DEFAULT_INVITE_TTL_MS))
            .unwrap_err();
        assert!(err.is_expired(), "{err}");
    }

    #[test]
    fn a_forged_inviter_key_is_refused() {
        // Mallory swaps her key in for Alice's (keeping Alice's signature): refused.
        let (_, invite) = sample();
        let mut t = invite.as_bytes().to_vec();
        t[1..33].copy_from_slice(Identity::from_seed(&[0x66; 32]).peer_id().as_bytes());
        assert_eq!(
            Invite::verify(&t, NOW),
            Err(InviteError::Invalid(mesh_crypto::Error::BadSignature))
        );
        // An all-zero key is not a valid key at all.
        t[1..33].copy_from_slice(&[0; 32]);
        assert_eq!(
            Invite::verify(&t, NOW),
            Err(InviteError::Invalid(mesh_crypto::Error::InvalidPublicKey))
        );
    }

    #[test]
    fn bad_fields_are_refused_on_creation() {
        let alice = Identity::from_seed(&[1; 32]);
        let long = "x".repeat(MAX_DISPLAY_NAME_LEN + 1);
        assert!(Invite::create(&alice, &long, vec![], NOW, 1).is_err());
        assert!(Invite::create(&alice, &"x".repeat(MAX_DISPLAY_NAME_LEN), vec![], NOW, 1).is_ok());
        let many = vec![BootstrapHint::Signaling("https://a".into()); MAX_HINTS + 1];
        assert!(Invite::create(&alice, "a", many, NOW, 1).is_err());
        let ftp = vec![BootstrapHint::Signaling("ftp://a".into())];
        assert!(Invite::create(&alice, "a", ftp, NOW, 1).is_err());
        assert!(Invite::create(&alice, "a", vec![], NOW, 0).is_err());
    }

    #[test]
    fn bad_encodings_are_refused() {
        let (_, invite) = sample();
        assert!(matches!(
            Invite::from_link("https://evil/", NOW),
            Err(InviteError::Encoding(_))
        ));
        assert!(matches!(
            Invite::from_link("mesh://invite/***", NOW),
            Err(InviteError::Encoding(_))
        ));
        assert!(matches!(
            Invite::from_link(&"a".repeat(MAX_LINK_LEN + 1), NOW),
            Err(InviteError::Encoding(_))
        ));
        let ndef = invite.to_ndef();
        let mut wrong_type = ndef.clone();
        wrong_type[3] = b'x'; // first byte of the MIME type
        assert!(matches!(
            Invite::from_ndef(&wrong_type, NOW),
            Err(InviteError::Encoding(_))
        ));
        let mut chunked = ndef.clone();
        chunked[0] |= NDEF_CF;
        assert!(matches!(
            Invite::from_ndef(&chunked, NOW),
            Err(InviteError::Encoding(_))
        ));
        assert!(matches!(
            Invite::from_ndef(&ndef[..ndef.len() - 1], NOW),
            Err(InviteError::Encoding(_))
        ));
        let mut trailing = ndef.clone();
        trailing.push(0);
        assert!(matches!(
            Invite::from_ndef(&trailing, NOW),
            Err(InviteError::Encoding(_))
        ));
        // A declared payload far over the limit is refused before reading it.
        let huge = [
            NDEF_MB | NDEF_ME | NDEF_TNF_MIME,
            1,
            0xff,
            0xff,
            0xff,
            0xff,
            b'a',
        ];
        assert!(matches!(
            Invite::from_ndef(&huge, NOW),
            Err(InviteError::Encoding(_))
        ));
    }

    #[test]
    fn the_largest_invite_the_format_allows_round_trips() {
        let alice = Identity::from_seed(&[1; 32]);
        let url = format!("https://{}", "a".repeat(MAX_HINT_LEN - 8));
        let hints = vec![BootstrapHint::Signaling(url); MAX_HINTS];
        let name = "n".repeat(MAX_DISPLAY_NAME_LEN);
        let invite = Invite::create(&alice, &name, hints, NOW, 1000).unwrap();
        assert_eq!(
            invite.as_bytes().len(),
            mesh_crypto::SIGNED_HEADER_LEN + MAX_INVITE_PAYLOAD_LEN + 64
        );
        assert_eq!(Invite::from_ndef(&invite.to_ndef(), NOW).unwrap(), invite);
        assert_eq!(Invite::from_link(&invite.to_link(), NOW).unwrap(), invite);
    }

    #[test]
    fn long_payloads_use_the_long_ndef_form() {
        let alice = Identity::from_seed(&[1; 32]);
        let hints = vec![BootstrapHint::Signaling(format!("https://{}", "a".repeat(200))); 2];
        let invite = Invite::create(&alice, "a", hints, NOW, 1000).unwrap();
        let ndef = invite.to_ndef();
        assert_eq!(
            ndef[0] & NDEF_SR,
            0,
            "payload over 255 bytes needs the 4-byte length"
        );
        assert_eq!(Invite::from_ndef(&ndef, NOW).unwrap(), invite);
    }
}
