//! Envelopes: a message sealed to one recipient and signed by its sender.
//!
//! Construction (byte layout in `docs/PROTOCOL.md`, "Envelope v1"):
//!
//! 1. An ephemeral X25519 key pair; `shared = X25519(ephemeral_secret, recipient_x25519)`, where
//!    the recipient's X25519 key is derived from its [`PeerId`]. An all-zero `shared` is refused.
//! 2. `key = BLAKE2b-256(key = shared, "mesh/envelope/v1/key" || u8(len(context)) || context ||
//!    ephemeral_public || recipient_x25519)`: binds both public keys and the caller's context.
//! 3. XChaCha20-Poly1305-IETF with a random 24-byte nonce; the associated data is the whole
//!    header, so sender, recipient, ephemeral key, nonce and length are all authenticated.
//! 4. `id = BLAKE2b-256(u8(16) || "mesh/envelope/v1" || header || ciphertext)`, and the sender
//!    signs `id` with Ed25519. Anyone (a relay) can check who sent an envelope and to whom
//!    without being able to read it; only the recipient can open it.
//!
//! Because the sender's key is in the authenticated header, stripping the signature and
//! re-signing with another key makes decryption fail: the recipient never attributes a message
//! to the wrong sender.

use dryoc::classic::crypto_aead_xchacha20poly1305_ietf::{
    crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt,
};
use dryoc::classic::crypto_core::{crypto_scalarmult, crypto_scalarmult_base};
use zeroize::Zeroizing;

use crate::Error;
use crate::hash::{Blake2b256, Hash256, domain_hash};
use crate::identity::{Identity, PUBLIC_KEY_LEN, PeerId, SIGNATURE_LEN, Signature};
use crate::wire::Reader;

/// Format version written by this build, and the only one it reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of the nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the header: version, sender, recipient, ephemeral key, nonce, ciphertext length.
pub const HEADER_LEN: usize = 1 + 3 * PUBLIC_KEY_LEN + NONCE_LEN + 4;
/// Bytes an envelope adds to its plaintext: header, tag and signature (205).
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN + SIGNATURE_LEN;
/// Default and highest plaintext length: 16 MiB. Larger data goes through the blob store,
/// which encrypts it chunk by chunk.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024 * 1024;
/// Longest context string (its length travels in one byte of the key derivation).
pub const MAX_CONTEXT_LEN: usize = 255;

/// Domain of the envelope id and signature.
pub const ENVELOPE_DOMAIN: &str = "mesh/envelope/v1";
const KEY_LABEL: &[u8] = b"mesh/envelope/v1/key";

/// Identifies an envelope: the digest its sender signed. Stable for a given envelope (so a
/// replayed envelope has the same id); two seals of the same plaintext have different ids.
pub type EnvelopeId = Hash256;

/// A successfully opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who sealed it (signature verified, and bound to the ciphertext).
    pub sender: PeerId,
    /// Its id, for replay detection and receipts.
    pub id: EnvelopeId,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// What anyone can learn from an envelope without opening it, after its signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Who sealed it.
    pub sender: PeerId,
    /// To whom.
    pub recipient: PeerId,
    /// Its id.
    pub id: EnvelopeId,
    /// Length of the plaintext inside.
    pub plaintext_len: usize,
}

/// Seals `plaintext` from `sender` to `recipient` under `context` (for example
/// `b"mesh/message"`; the recipient must open with the same context).
///
/// # Errors
/// [`Error::TooLarge`] for a plaintext over [`MAX_PLAINTEXT_LEN`] or a context over
/// [`MAX_CONTEXT_LEN`] bytes.
pub fn seal(
    sender: &Identity,
    recipient: &PeerId,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    dryoc::rng::copy_randombytes(ephemeral.as_mut());
    let mut nonce = [0u8; NONCE_LEN];
    dryoc::rng::copy_randombytes(&mut nonce);
    seal_inner(sender, recipient, context, plaintext, &ephemeral, &nonce)
}

/// [`seal`] with a caller-chosen ephemeral secret and nonce, for reproducible test vectors.
///
/// Reusing an ephemeral secret or nonce destroys confidentiality: never use this outside tests.
///
/// # Errors
/// As [`seal`].
#[cfg(feature = "test-vectors")]
pub fn seal_deterministic(
    sender: &Identity,
    recipient: &PeerId,
    context: &[u8],
    plaintext: &[u8],
    ephemeral_secret: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    seal_inner(
        sender,
        recipient,
        context,
        plaintext,
        ephemeral_secret,
        nonce,
    )
}

fn seal_inner(
    sender: &Identity,
    recipient: &PeerId,
    context: &[u8],
    plaintext: &[u8],
    ephemeral_secret: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    check_context(context)?;
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(Error::TooLarge {
            what: "envelope plaintext",
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let mut ephemeral_public = [0u8; 32];
    crypto_scalarmult_base(&mut ephemeral_public, ephemeral_secret);
    let recipient_x = recipient.encryption_key().0;
    let shared = x25519(ephemeral_secret, &recipient_x)?;
    let key = derive_key(&shared, &ephemeral_public, &recipient_x, context);

    let ct_len = plaintext.len() + TAG_LEN;
    let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + plaintext.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(sender.peer_id().as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(nonce);
    // ct_len <= 16 MiB + 16, far below u32::MAX.
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&(ct_len as u32).to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.resize(HEADER_LEN + ct_len, 0);
    let (header, ciphertext) = out.split_at_mut(HEADER_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(ciphertext, plaintext, Some(header), nonce, &key)
        .map_err(|_| Error::Malformed("the AEAD refused the plaintext"))?;
    let id = envelope_id(&out);
    let signature = sender.sign_digest(&id);
    out.extend_from_slice(&signature.0);
    Ok(out)
}

/// Opens an envelope addressed to `recipient`, accepting plaintexts up to [`MAX_PLAINTEXT_LEN`].
///
/// Checks run cheapest first: lengths and version, recipient, signature, then decryption.
///
/// # Errors
/// [`Error::UnsupportedVersion`], [`Error::Truncated`], [`Error::TooLarge`],
/// [`Error::TrailingBytes`], [`Error::Malformed`] for a bad layout; [`Error::WrongRecipient`];
/// [`Error::InvalidPublicKey`] or [`Error::BadSignature`] if the sender's signature fails;
/// [`Error::WeakKeyExchange`] or [`Error::DecryptionFailed`] if the content does not decrypt
/// (including a wrong `context`).
pub fn open(recipient: &Identity, envelope: &[u8], context: &[u8]) -> Result<Opened, Error> {
    open_with_limit(recipient, envelope, context, MAX_PLAINTEXT_LEN)
}

/// [`open`] with a lower plaintext limit, checked before any work is done.
///
/// # Errors
/// As [`open`].
pub fn open_with_limit(
    recipient: &Identity,
    envelope: &[u8],
    context: &[u8],
    max_plaintext: usize,
) -> Result<Opened, Error> {
    check_context(context)?;
    let parsed = parse(envelope, max_plaintext)?;
    if parsed.recipient != *recipient.peer_id().as_bytes() {
        return Err(Error::WrongRecipient);
    }
    // The recipient field equals our own (valid) id, so only the sender needs validating.
    let verified = parsed.verify_sender()?;
    let shared = x25519(recipient.x25519_secret(), &parsed.ephemeral)?;
    let key = derive_key(
        &shared,
        &parsed.ephemeral,
        &recipient.encryption_key().0,
        context,
    );
    let mut plaintext = vec![0u8; verified.plaintext_len];
    crypto_aead_xchacha20poly1305_ietf_decrypt(
        &mut plaintext,
        parsed.ciphertext,
        Some(parsed.header),
        &parsed.nonce,
        &key,
    )
    .map_err(|_| Error::DecryptionFailed)?;
    Ok(Opened {
        sender: verified.sender,
        id: verified.id,
        plaintext,
    })
}

/// Checks an envelope's layout and its sender's signature without decrypting it: what a relay
/// does before storing or forwarding.
///
/// # Errors
/// The layout and signature errors of [`open`].
pub fn verify(envelope: &[u8], max_plaintext: usize) -> Result<Verified, Error> {
    parse(envelope, max_plaintext)?.verify()
}

/// The id of an envelope (the digest its sender signed), from its layout alone: no signature
/// check. For a sender naming what it just sealed; a receiver learns the id from [`open`] or
/// [`verify`], which check the signature.
///
/// # Errors
/// The layout errors of [`open`].
pub fn id(envelope: &[u8]) -> Result<EnvelopeId, Error> {
    Ok(envelope_id(parse(envelope, MAX_PLAINTEXT_LEN)?.signed))
}

struct Parsed<'a> {
    header: &'a [u8],
    sender: [u8; 32],
    recipient: [u8; 32],
    ephemeral: [u8; 32],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

impl Parsed<'_> {
    /// Validates the sender's key and signature; the recipient field is taken as it is.
    fn verify_sender(&self) -> Result<Verified, Error> {
        let sender = PeerId::from_bytes(self.sender)?;
        let id = envelope_id(self.signed);
        sender.verify_digest(&id, &Signature(self.signature))?;
        Ok(Verified {
            sender,
            recipient: PeerId::from_bytes_unchecked(self.recipient),
            id,
            plaintext_len: self.ciphertext.len() - TAG_LEN,
        })
    }

    /// Also validates the recipient's key (what a relay needs before forwarding).
    fn verify(&self) -> Result<Verified, Error> {
        PeerId::from_bytes(self.recipient)?;
        self.verify_sender()
    }
}

fn parse(envelope: &[u8], max_plaintext: usize) -> Result<Parsed<'_>, Error> {
    let max_plaintext = max_plaintext.min(MAX_PLAINTEXT_LEN);
    let mut r = Reader::new(envelope);
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: ENVELOPE_VERSION,
        });
    }
    let sender = r.array()?;
    let recipient = r.array()?;
    let ephemeral = r.array()?;
    let nonce = r.array()?;
    let ct_len = usize::try_from(r.u32_le()?).unwrap_or(usize::MAX);
    if ct_len < TAG_LEN {
        return Err(Error::Malformed("envelope ciphertext shorter than its tag"));
    }
    if ct_len - TAG_LEN > max_plaintext {
        return Err(Error::TooLarge {
            what: "envelope plaintext",
            len: ct_len - TAG_LEN,
            max: max_plaintext,
        });
    }
    let ciphertext = r.bytes(ct_len)?;
    let signed_len = r.position();
    let signature = r.array()?;
    r.finish()?;
    Ok(Parsed {
        header: &envelope[..HEADER_LEN],
        sender,
        recipient,
        ephemeral,
        nonce,
        ciphertext,
        signed: &envelope[..signed_len],
        signature,
    })
}

fn check_context(context: &[u8]) -> Result<(), Error> {
    if context.len() > MAX_CONTEXT_LEN {
        return Err(Error::TooLarge {
            what: "envelope context",
            len: context.len(),
            max: MAX_CONTEXT_LEN,
        });
    }
    Ok(())
}

/// `BLAKE2b-256(u8(16) || "mesh/envelope/v1" || header || ciphertext)`.
fn envelope_id(header_and_ciphertext: &[u8]) -> EnvelopeId {
    domain_hash(ENVELOPE_DOMAIN, &[header_and_ciphertext])
}

/// X25519, refusing the all-zero shared secret that a low-order public key produces.
fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut shared = Zeroizing::new([0u8; 32]);
    crypto_scalarmult(&mut shared, secret, public).map_err(|_| Error::WeakKeyExchange)?;
    Ok(shared)
}

/// `BLAKE2b-256(key = shared, label || u8(len(context)) || context || ephemeral || recipient)`.
fn derive_key(
    shared: &[u8; 32],
    ephemeral_public: &[u8; 32],
    recipient_x: &[u8; 32],
    context: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut kdf = Blake2b256::new_keyed(shared);
    #[allow(clippy::cast_possible_truncation)] // checked against MAX_CONTEXT_LEN (255)
    kdf.update(KEY_LABEL)
        .update(&[context.len() as u8])
        .update(context)
        .update(ephemeral_public)
        .update(recipient_x);
    Zeroizing::new(kdf.finalize().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    #[test]
    fn round_trip() {
        let (alice, bob) = pair();
        let env = seal(&alice, &bob.peer_id(), b"ctx", b"hello bob").unwrap();
        assert_eq!(env.len(), ENVELOPE_OVERHEAD + 9);
        let opened = open(&bob, &env, b"ctx").unwrap();
        assert_eq!(opened.plaintext, b"hello bob");
        assert_eq!(opened.sender, alice.peer_id());
        let v = verify(&env, MAX_PLAINTEXT_LEN).unwrap();
        assert_eq!(
            (v.sender, v.recipient, v.id),
            (alice.peer_id(), bob.peer_id(), opened.id)
        );
        assert_eq!(
            id(&env).unwrap(),
            opened.id,
            "the id without a signature check"
        );
        assert!(id(&env[..env.len() - 1]).is_err());
    }

    #[test]
    fn wrong_recipient_context_and_limit() {
        let (alice, bob) = pair();
        let env = seal(&alice, &bob.peer_id(), b"ctx", b"x").unwrap();
        assert_eq!(open(&alice, &env, b"ctx"), Err(Error::WrongRecipient));
        assert_eq!(open(&bob, &env, b"other"), Err(Error::DecryptionFailed));
        assert!(matches!(
            open_with_limit(&bob, &env, b"ctx", 0),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            seal(&alice, &bob.peer_id(), &[0; 256], b"x"),
            Err(Error::TooLarge { .. })
        ));
    }
}
