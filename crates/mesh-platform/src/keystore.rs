//! The identity key at rest.
//!
//! [`SecureStorage`] is where secrets live; platforms plug in their own (Android Keystore, iOS
//! Keychain, through the FFI crate). [`PassphraseStorage`] is the portable one: each secret is
//! encrypted with a key derived from a passphrase by Argon2id (libsodium `crypto_pwhash`) and
//! sealed with XChaCha20-Poly1305, and stored through any [`KvStore`] (redb, SQLite,
//! IndexedDB). [`save_identity`] / [`load_identity`] put an [`Identity`] in either.
//!
//! Sealed-secret format v1 (all integers little-endian; byte layout in `docs/PROTOCOL.md`):
//!
//! ```text
//! version u8 = 1 | alg u8 = 2 (Argon2id v1.3) | opslimit u32 | memlimit u32 (bytes) |
//! salt [16] | nonce [24] | ct_len u32 | ciphertext [ct_len] | checksum [32]
//! ```
//!
//! `key = crypto_pwhash(32, passphrase, salt, opslimit, memlimit, Argon2id13)`; the AEAD's
//! associated data is every byte before the ciphertext; `checksum = BLAKE2b-256(everything
//! before it)`. The checksum tells a damaged file ([`KeystoreError::Corrupt`]) from a wrong
//! passphrase ([`KeystoreError::WrongPassphrase`]), which otherwise look alike.

use async_trait::async_trait;
use dryoc::classic::crypto_aead_xchacha20poly1305_ietf::{
    crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt,
};
use dryoc::classic::crypto_pwhash::{PasswordHashAlgorithm, crypto_pwhash};
use mesh_crypto::wire::Reader;
use mesh_crypto::{Identity, SEED_LEN};
use zeroize::Zeroizing;

use crate::kv::{KvError, KvStore};
use crate::{MaybeSend, MaybeSync};

/// Format version of a sealed secret.
pub const KEYSTORE_VERSION: u8 = 1;
/// Algorithm id of Argon2id v1.3 (libsodium's `crypto_pwhash_ALG_ARGON2ID13`).
pub const ALG_ARGON2ID13: u8 = 2;
/// Table a [`PassphraseStorage`] keeps its sealed secrets in; include it in the store's schema.
pub const KEYSTORE_TABLE: &str = "keystore";
/// Name under which [`save_identity`] stores the identity seed.
pub const IDENTITY_SECRET: &str = "identity";
/// Highest opslimit accepted when reading a file: a damaged or hostile file cannot make the
/// reader spin for minutes.
pub const MAX_OPSLIMIT: u32 = 16;
/// Highest memlimit accepted when reading a file (1 GiB): the same, for memory.
pub const MAX_MEMLIMIT: u32 = 1 << 30;
/// Largest secret accepted.
pub const MAX_SECRET_LEN: usize = 4096;
const HEADER_LEN: usize = 1 + 1 + 4 + 4 + 16 + 24 + 4;
const TAG_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Passes over memory (libsodium `opslimit`).
    pub opslimit: u32,
    /// Memory in bytes (libsodium `memlimit`).
    pub memlimit: u32,
}

impl KdfParams {
    /// The default: 3 passes over 64 MiB. About 0.2 s on a laptop core, comfortably inside
    /// a phone's or a browser tab's memory; libsodium's "interactive" level with one more pass.
    pub const DEFAULT: Self = Self {
        opslimit: 3,
        memlimit: 64 << 20,
    };
    /// libsodium's minimum (1 pass, 8 KiB): only for tests, where the cost would slow the suite.
    pub const INSECURE_FOR_TESTS: Self = Self {
        opslimit: 1,
        memlimit: 8 << 10,
    };
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a secret could not be stored or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The passphrase does not open this file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file is damaged (checksum or layout).
    #[error("keystore data is corrupted: {0}")]
    Corrupt(&'static str),
    /// The file was written by a format version this build does not read.
    #[error("keystore format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// Parameters or sizes out of range.
    #[error("invalid keystore parameters: {0}")]
    Invalid(&'static str),
    /// The underlying storage failed.
    #[error("storage: {0}")]
    Storage(#[from] KvError),
    /// A platform keystore failed.
    #[error("platform keystore: {0}")]
    Platform(String),
}

/// Where secrets are kept. Implemented by [`PassphraseStorage`] here, and by platform keystores
/// (Android Keystore, iOS Keychain) through the FFI crate.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait SecureStorage: MaybeSend + MaybeSync {
    /// Stores `secret` under `name`, replacing any previous one.
    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), KeystoreError>;
    /// The secret under `name`, if any.
    async fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError>;
    /// Deletes the secret under `name` (absent is not an error).
    async fn delete_secret(&self, name: &str) -> Result<(), KeystoreError>;
}

/// Seals `secret` under `passphrase` (format in the module docs).
///
/// # Errors
/// [`KeystoreError::Invalid`] for a secret over [`MAX_SECRET_LEN`] bytes or parameters outside
/// libsodium's range or above [`MAX_OPSLIMIT`] / [`MAX_MEMLIMIT`].
pub fn seal_secret(
    secret: &[u8],
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Vec<u8>, KeystoreError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    dryoc::rng::copy_randombytes(&mut salt);
    dryoc::rng::copy_randombytes(&mut nonce);
    seal_with(secret, passphrase, params, &salt, &nonce)
}

/// [`seal_secret`] with a given salt and nonce, for reproducible test vectors.
#[doc(hidden)]
pub fn seal_with(
    secret: &[u8],
    passphrase: &[u8],
    params: KdfParams,
    salt: &[u8; 16],
    nonce: &[u8; 24],
) -> Result<Vec<u8>, KeystoreError> {
    if secret.len() > MAX_SECRET_LEN {
        return Err(KeystoreError::Invalid("secret longer than 4096 bytes"));
    }
    check_params(params)?;
    let key = derive(passphrase, salt, params)?;
    let mut out = Vec::with_capacity(HEADER_LEN + secret.len() + TAG_LEN + CHECKSUM_LEN);
    out.extend_from_slice(&[KEYSTORE_VERSION, ALG_ARGON2ID13]);
    out.extend_from_slice(&params.opslimit.to_le_bytes());
    out.extend_from_slice(&params.memlimit.to_le_bytes());
    out.extend_from_slice(salt);
    out.extend_from_slice(nonce);
    // At most 4096 + 16 bytes.
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&((secret.len() + TAG_LEN) as u32).to_le_bytes());
    out.resize(HEADER_LEN + secret.len() + TAG_LEN, 0);
    let (header, ct) = out.split_at_mut(HEADER_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, secret, Some(header), nonce, &key)
        .map_err(|_| KeystoreError::Invalid("secret too large for the AEAD"))?;
    let checksum = mesh_crypto::hash::blake2b_256(&out);
    out.extend_from_slice(checksum.as_bytes());
    Ok(out)
}

/// Opens a sealed secret.
///
/// # Errors
/// [`KeystoreError::Corrupt`] for a damaged file, [`KeystoreError::UnsupportedVersion`],
/// [`KeystoreError::Invalid`] for out-of-range parameters, [`KeystoreError::WrongPassphrase`].
pub fn open_secret(sealed: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let corrupt = |_| KeystoreError::Corrupt("truncated");
    if sealed.len() < HEADER_LEN + TAG_LEN + CHECKSUM_LEN {
        return Err(KeystoreError::Corrupt(
            "shorter than the smallest sealed secret",
        ));
    }
    let (body, checksum) = sealed.split_at(sealed.len() - CHECKSUM_LEN);
    if mesh_crypto::hash::blake2b_256(body).as_bytes()[..] != *checksum {
        return Err(KeystoreError::Corrupt("checksum mismatch"));
    }
    let mut r = Reader::new(body);
    let version = r.u8().map_err(corrupt)?;
    if version != KEYSTORE_VERSION {
        return Err(KeystoreError::UnsupportedVersion {
            found: version,
            supported: KEYSTORE_VERSION,
        });
    }
    if r.u8().map_err(corrupt)? != ALG_ARGON2ID13 {
        return Err(KeystoreError::Corrupt("unknown key derivation algorithm"));
    }
    let params = KdfParams {
        opslimit: r.u32_le().map_err(corrupt)?,
        memlimit: r.u32_le().map_err(corrupt)?,
    };
    check_params(params)?;
    let salt: [u8; 16] = r.array().map_err(corrupt)?;
    let nonce: [u8; 24] = r.array().map_err(corrupt)?;
    let ct = r
        .len_prefixed("sealed secret", MAX_SECRET_LEN + TAG_LEN)
        .map_err(|_| KeystoreError::Corrupt("bad length"))?;
    r.finish()
        .map_err(|_| KeystoreError::Corrupt("trailing bytes"))?;
    if ct.len() < TAG_LEN {
        return Err(KeystoreError::Corrupt("ciphertext shorter than its tag"));
    }
    let key = derive(passphrase, &salt, params)?;
    let mut secret = Zeroizing::new(vec![0u8; ct.len() - TAG_LEN]);
    crypto_aead_xchacha20poly1305_ietf_decrypt(
        &mut secret,
        ct,
        Some(&body[..HEADER_LEN]),
        &nonce,
        &key,
    )
    .map_err(|_| KeystoreError::WrongPassphrase)?;
    Ok(secret)
}

fn check_params(p: KdfParams) -> Result<(), KeystoreError> {
    if p.opslimit < 1 || p.opslimit > MAX_OPSLIMIT {
        return Err(KeystoreError::Invalid("opslimit outside 1..=16"));
    }
    if p.memlimit < 8 << 10 || p.memlimit > MAX_MEMLIMIT {
        return Err(KeystoreError::Invalid("memlimit outside 8 KiB..=1 GiB"));
    }
    Ok(())
}

fn derive(
    passphrase: &[u8],
    salt: &[u8; 16],
    p: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    crypto_pwhash(
        key.as_mut(),
        passphrase,
        salt,
        u64::from(p.opslimit),
        p.memlimit as usize,
        PasswordHashAlgorithm::Argon2id13,
    )
    .map_err(|_| KeystoreError::Invalid("Argon2id refused the parameters"))?;
    Ok(key)
}

/// Secrets sealed under one passphrase, kept in a [`KvStore`] table ([`KEYSTORE_TABLE`]).
pub struct PassphraseStorage<S> {
    store: S,
    passphrase: Zeroizing<Vec<u8>>,
    params: KdfParams,
}

impl<S> std::fmt::Debug for PassphraseStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseStorage")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<S: KvStore> PassphraseStorage<S> {
    /// Storage over `store` (whose schema must include [`KEYSTORE_TABLE`]).
    pub fn new(store: S, passphrase: &[u8], params: KdfParams) -> Self {
        Self {
            store,
            passphrase: Zeroizing::new(passphrase.to_vec()),
            params,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<S: KvStore> SecureStorage for PassphraseStorage<S> {
    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), KeystoreError> {
        let sealed = seal_secret(secret, &self.passphrase, self.params)?;
        self.store
            .put(KEYSTORE_TABLE, name.as_bytes(), &sealed)
            .await?;
        Ok(())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        match self.store.get(KEYSTORE_TABLE, name.as_bytes()).await? {
            Some(sealed) => Ok(Some(open_secret(&sealed, &self.passphrase)?)),
            None => Ok(None),
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<(), KeystoreError> {
        self.store.delete(KEYSTORE_TABLE, name.as_bytes()).await?;
        Ok(())
    }
}

/// Stores the identity's seed in `storage`.
///
/// # Errors
/// Whatever the storage returns.
pub async fn save_identity(
    storage: &dyn SecureStorage,
    identity: &Identity,
) -> Result<(), KeystoreError> {
    storage
        .put_secret(IDENTITY_SECRET, identity.seed().as_ref())
        .await
}

/// The identity in `storage`, if one was saved.
///
/// # Errors
/// Whatever the storage returns; [`KeystoreError::Corrupt`] if the secret is not a seed.
pub async fn load_identity(storage: &dyn SecureStorage) -> Result<Option<Identity>, KeystoreError> {
    let Some(secret) = storage.get_secret(IDENTITY_SECRET).await? else {
        return Ok(None);
    };
    let seed: &[u8; SEED_LEN] = secret
        .as_slice()
        .try_into()
        .map_err(|_| KeystoreError::Corrupt("identity seed is not 32 bytes"))?;
    Ok(Some(Identity::from_seed(seed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: KdfParams = KdfParams::INSECURE_FOR_TESTS;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let sealed = seal_secret(b"seed bytes", b"correct horse", P).unwrap();
        assert_eq!(
            open_secret(&sealed, b"correct horse").unwrap().as_slice(),
            b"seed bytes"
        );
        assert_eq!(
            open_secret(&sealed, b"battery staple"),
            Err(KeystoreError::WrongPassphrase)
        );
        assert_ne!(
            sealed,
            seal_secret(b"seed bytes", b"correct horse", P).unwrap(),
            "fresh salt and nonce"
        );
    }

    #[test]
    fn every_damaged_byte_is_reported_as_corruption() {
        let sealed = seal_secret(b"0123456789abcdef0123456789abcdef", b"pw", P).unwrap();
        for pos in 0..sealed.len() {
            let mut t = sealed.clone();
            t[pos] ^= 0x10;
            assert!(
                matches!(open_secret(&t, b"pw"), Err(KeystoreError::Corrupt(_))),
                "flip at {pos}"
            );
        }
        for len in 0..sealed.len() {
            assert!(open_secret(&sealed[..len], b"pw").is_err());
        }
    }

    #[test]
    fn version_and_parameter_bounds() {
        let mut sealed = seal_secret(b"s", b"pw", P).unwrap();
        // A future version, with a valid checksum: refused by version, not misread.
        sealed[0] = 2;
        let n = sealed.len() - CHECKSUM_LEN;
        let sum = mesh_crypto::hash::blake2b_256(&sealed[..n]);
        sealed[n..].copy_from_slice(sum.as_bytes());
        assert_eq!(
            open_secret(&sealed, b"pw"),
            Err(KeystoreError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        // Hostile parameters are refused before any work.
        let mut hostile = seal_secret(b"s", b"pw", P).unwrap();
        hostile[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        let sum = mesh_crypto::hash::blake2b_256(&hostile[..n]);
        hostile[n..].copy_from_slice(sum.as_bytes());
        assert!(matches!(
            open_secret(&hostile, b"pw"),
            Err(KeystoreError::Invalid(_))
        ));
        assert!(
            seal_secret(
                b"s",
                b"pw",
                KdfParams {
                    opslimit: 0,
                    memlimit: 8192
                }
            )
            .is_err()
        );
        assert!(
            seal_secret(
                b"s",
                b"pw",
                KdfParams {
                    opslimit: 17,
                    memlimit: 8192
                }
            )
            .is_err()
        );
        assert!(seal_secret(&[0; MAX_SECRET_LEN + 1], b"pw", P).is_err());
        assert!(seal_secret(&[0; MAX_SECRET_LEN], b"pw", P).is_ok());
    }
}
