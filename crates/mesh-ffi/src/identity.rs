//! Identities: kept in the platform's keystore ([`SecureStorage`], implemented by the app) or
//! sealed under a passphrase in a file.

use std::sync::Arc;

use async_trait::async_trait;
use mesh_crypto::Identity;
use mesh_platform::keystore::{
    self, IDENTITY_SECRET, KEYSTORE_TABLE, KdfParams, KeystoreError, PassphraseStorage,
};
use mesh_platform::kv::{Schema, Store};
use mesh_store_sqlite::SqliteBackend;
use zeroize::Zeroizing;

use crate::{MeshError, on_runtime, parse_peer, storage};

/// Where the app keeps secrets: Android Keystore (or `EncryptedSharedPreferences`), the iOS
/// Keychain. The library stores the identity's 32-byte seed under the name `identity`.
///
/// Methods are called from a background thread of the library, never the app's main thread;
/// they may block briefly (a keychain call). Throwing [`MeshError::Platform`] (or any
/// exception) fails the operation that needed the secret.
#[uniffi::export(with_foreign)]
pub trait SecureStorage: Send + Sync {
    /// Stores `secret` under `name`, replacing any previous one.
    ///
    /// # Errors
    /// The platform's failure.
    fn put_secret(&self, name: String, secret: Vec<u8>) -> Result<(), MeshError>;
    /// The secret under `name`, or nothing.
    ///
    /// # Errors
    /// The platform's failure.
    fn get_secret(&self, name: String) -> Result<Option<Vec<u8>>, MeshError>;
    /// Deletes the secret under `name` (absent is not an error).
    ///
    /// # Errors
    /// The platform's failure.
    fn delete_secret(&self, name: String) -> Result<(), MeshError>;
}

/// The app's [`SecureStorage`] as the keystore seam of `mesh-platform`: each call on a
/// blocking thread, so a slow keychain never stalls the node's workers.
struct Foreign(Arc<dyn SecureStorage>);

fn platform(e: &MeshError) -> KeystoreError {
    KeystoreError::Platform(match e {
        // The app's own reason, not "platform: ..." twice.
        MeshError::Platform { reason } => reason.clone(),
        other => other.to_string(),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MeshError> + Send + 'static,
) -> Result<T, KeystoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KeystoreError::Platform(e.to_string()))?
        .map_err(|e| platform(&e))
}

#[async_trait]
impl keystore::SecureStorage for Foreign {
    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), KeystoreError> {
        let (s, name, secret) = (Arc::clone(&self.0), name.to_string(), secret.to_vec());
        blocking(move || s.put_secret(name, secret)).await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let (s, name) = (Arc::clone(&self.0), name.to_string());
        Ok(blocking(move || s.get_secret(name))
            .await?
            .map(Zeroizing::new))
    }

    async fn delete_secret(&self, name: &str) -> Result<(), KeystoreError> {
        let (s, name) = (Arc::clone(&self.0), name.to_string());
        blocking(move || s.delete_secret(name)).await
    }
}

/// Saves `identity` in the app's `storage`.
pub(crate) async fn save_to(
    storage: &Arc<dyn SecureStorage>,
    identity: &Identity,
) -> Result<(), MeshError> {
    keystore::save_identity(&Foreign(Arc::clone(storage)), identity)
        .await
        .map_err(keystore_error)
}

pub(crate) fn keystore_error(e: KeystoreError) -> MeshError {
    match e {
        KeystoreError::WrongPassphrase => MeshError::WrongPassphrase,
        KeystoreError::Platform(reason) => MeshError::Platform { reason },
        KeystoreError::Invalid(reason) => crate::invalid(reason),
        other => storage(other),
    }
}

/// The schema of a passphrase-sealed identity file: the keystore table alone.
static KEY_FILE_SCHEMA: Schema = Schema {
    version: 1,
    tables: &[KEYSTORE_TABLE],
    migrations: &[],
};

/// Opens the passphrase file at `path` (created if missing, unless `must_exist`), runs `f` on
/// it, closes it. Runs on a blocking thread: Argon2id takes a CPU for a good part of a second,
/// which the node's two worker threads must not lose.
async fn with_key_file<T: Send + 'static>(
    path: String,
    passphrase: String,
    must_exist: bool,
    f: impl AsyncFnOnce(&PassphraseStorage<Store<SqliteBackend>>) -> Result<T, MeshError>
    + Send
    + 'static,
) -> Result<T, MeshError> {
    let passphrase = Zeroizing::new(passphrase);
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(crate::invalid(format!(
            "a passphrase of at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    if must_exist && !std::path::Path::new(&path).exists() {
        return Err(MeshError::NoIdentity);
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(open_key_file(&path, &passphrase, f)))
        .await
        .map_err(|e| MeshError::Internal {
            reason: e.to_string(),
        })?
}

async fn open_key_file<T>(
    path: &str,
    passphrase: &str,
    f: impl AsyncFnOnce(&PassphraseStorage<Store<SqliteBackend>>) -> Result<T, MeshError>,
) -> Result<T, MeshError> {
    let backend = SqliteBackend::open(path).await.map_err(storage)?;
    let store = Store::open(backend, &KEY_FILE_SCHEMA)
        .await
        .map_err(storage)?;
    let sealed = PassphraseStorage::new(store, passphrase.as_bytes(), KdfParams::DEFAULT);
    let result = f(&sealed).await;
    let closed = mesh_platform::kv::KvStore::close(sealed.store()).await;
    let value = result?;
    closed.map_err(storage)?;
    Ok(value)
}

/// Passphrases shorter than this are refused.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// A peer's identity: its Ed25519 key pair (the peer id is the public key).
#[derive(uniffi::Object)]
pub struct MeshIdentity {
    pub(crate) inner: Arc<Identity>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("peer", &self.inner.peer_id())
            .finish_non_exhaustive()
    }
}

impl MeshIdentity {
    pub(crate) fn wrap(identity: Identity) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(identity),
        })
    }
}

#[uniffi::export]
impl MeshIdentity {
    /// A new identity, kept in `storage`. Refuses to replace one already there (recover it, or
    /// delete it through the platform first): replacing a key loses the peer id for good.
    ///
    /// # Errors
    /// [`MeshError::Refused`] when `storage` already holds an identity; the storage's failure.
    #[uniffi::constructor]
    pub async fn create(storage: Arc<dyn SecureStorage>) -> Result<Arc<Self>, MeshError> {
        on_runtime(async move {
            let keys = Foreign(storage);
            if keystore::load_identity(&keys)
                .await
                .map_err(keystore_error)?
                .is_some()
            {
                return Err(MeshError::Refused {
                    reason: "an identity is already stored".into(),
                });
            }
            let identity = Identity::generate();
            keystore::save_identity(&keys, &identity)
                .await
                .map_err(keystore_error)?;
            Ok(Self::wrap(identity))
        })
        .await
    }

    /// The identity kept in `storage`.
    ///
    /// # Errors
    /// [`MeshError::NoIdentity`]; [`MeshError::Storage`] when the stored secret is not a key;
    /// the storage's failure.
    #[uniffi::constructor]
    pub async fn load(storage: Arc<dyn SecureStorage>) -> Result<Arc<Self>, MeshError> {
        on_runtime(async move {
            keystore::load_identity(&Foreign(storage))
                .await
                .map_err(keystore_error)?
                .map(Self::wrap)
                .ok_or(MeshError::NoIdentity)
        })
        .await
    }

    /// A new identity sealed under `passphrase` (Argon2id, XChaCha20-Poly1305) in the SQLite
    /// file at `path`, for apps without a platform keystore. Refuses to replace one.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a passphrase under [`MIN_PASSPHRASE_CHARS`]
    /// characters; [`MeshError::Refused`] when the file already holds an identity;
    /// [`MeshError::Storage`].
    #[uniffi::constructor]
    pub async fn create_sealed(path: String, passphrase: String) -> Result<Arc<Self>, MeshError> {
        on_runtime(async move {
            let shown = path.clone();
            with_key_file(path, passphrase, false, async move |sealed| {
                let raw = mesh_platform::kv::KvStore::get(
                    sealed.store(),
                    KEYSTORE_TABLE,
                    IDENTITY_SECRET.as_bytes(),
                )
                .await
                .map_err(storage)?;
                if raw.is_some() {
                    return Err(MeshError::Refused {
                        reason: format!("{shown} already holds an identity"),
                    });
                }
                let identity = Identity::generate();
                keystore::save_identity(sealed, &identity)
                    .await
                    .map_err(keystore_error)?;
                Ok(Self::wrap(identity))
            })
            .await
        })
        .await
    }

    /// The identity sealed under `passphrase` in the file at `path`.
    ///
    /// # Errors
    /// [`MeshError::WrongPassphrase`]; [`MeshError::NoIdentity`] when the file holds none;
    /// [`MeshError::Storage`].
    #[uniffi::constructor]
    pub async fn unlock_sealed(path: String, passphrase: String) -> Result<Arc<Self>, MeshError> {
        on_runtime(async move {
            with_key_file(path, passphrase, true, async |sealed| {
                keystore::load_identity(sealed)
                    .await
                    .map_err(|e| match e {
                        // Parameters out of range in a file we wrote: damaged or forged.
                        KeystoreError::Invalid(r) => storage(format!("damaged key file: {r}")),
                        e => keystore_error(e),
                    })?
                    .map(Self::wrap)
                    .ok_or(MeshError::NoIdentity)
            })
            .await
        })
        .await
    }

    /// Keeps this identity in `storage` too (say, moving it into the platform keystore, or
    /// saving a recovered key). Replaces what `storage` held.
    ///
    /// # Errors
    /// The storage's failure.
    pub async fn save(&self, storage: Arc<dyn SecureStorage>) -> Result<(), MeshError> {
        let identity = Arc::clone(&self.inner);
        on_runtime(async move { save_to(&storage, &identity).await }).await
    }

    /// The peer id (what others address this peer by), as text.
    pub fn peer_id(&self) -> String {
        self.inner.peer_id().to_string()
    }

    /// A short fingerprint to recognise this peer in a list (`k3rm-4dqa-x7pe-2vno`).
    pub fn fingerprint(&self) -> String {
        self.inner.peer_id().fingerprint()
    }

    /// The safety number this peer and `other` compare (read aloud, or as a QR code) to
    /// authenticate each other: the same on both sides.
    ///
    /// # Errors
    /// [`MeshError::InvalidInput`] for a malformed peer id.
    pub fn safety_number(&self, other: String) -> Result<String, MeshError> {
        let other = parse_peer(&other)?;
        Ok(mesh_crypto::safety_number(&self.inner.peer_id(), &other).to_string())
    }
}
