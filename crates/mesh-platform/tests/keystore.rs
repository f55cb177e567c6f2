//! The identity keystore through a real `KvStore` (memory backend here; the same code runs on
//! redb, SQLite and IndexedDB): save, reload after reopen, wrong passphrase, damaged data.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use mesh_crypto::Identity;
use mesh_platform::keystore::{
    IDENTITY_SECRET, KEYSTORE_TABLE, KdfParams, KeystoreError, PassphraseStorage, SecureStorage,
    load_identity, save_identity,
};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_store_memory::MemoryBackend;

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &[KEYSTORE_TABLE],
    migrations: &[],
};

#[tokio::test]
async fn identity_survives_reopen_and_needs_the_passphrase() {
    let backend = MemoryBackend::new();
    let map = backend.map();
    let id = Identity::generate();
    {
        let store = Store::open(backend, &SCHEMA).await.unwrap();
        let ks = PassphraseStorage::new(store, b"correct horse", KdfParams::INSECURE_FOR_TESTS);
        assert!(load_identity(&ks).await.unwrap().is_none());
        save_identity(&ks, &id).await.unwrap();
        ks.store().close().await.unwrap();
    }
    let store = Store::open(MemoryBackend::with_map(map.clone()), &SCHEMA)
        .await
        .unwrap();
    // The seed is not stored in the clear.
    let raw = store
        .get(KEYSTORE_TABLE, IDENTITY_SECRET.as_bytes())
        .await
        .unwrap()
        .unwrap();
    assert!(!raw.windows(32).any(|w| w == id.seed().as_slice()));
    let ks = PassphraseStorage::new(store, b"correct horse", KdfParams::INSECURE_FOR_TESTS);
    assert_eq!(
        load_identity(&ks).await.unwrap().unwrap().peer_id(),
        id.peer_id()
    );

    let wrong = PassphraseStorage::new(
        Store::open(MemoryBackend::with_map(map.clone()), &SCHEMA)
            .await
            .unwrap(),
        b"nope",
        KdfParams::INSECURE_FOR_TESTS,
    );
    assert_eq!(
        load_identity(&wrong).await.err(),
        Some(KeystoreError::WrongPassphrase)
    );

    // Damage the stored bytes: reported as corruption, not as a wrong passphrase.
    let mut damaged = raw.clone();
    damaged[40] ^= 1;
    ks.store()
        .put(KEYSTORE_TABLE, IDENTITY_SECRET.as_bytes(), &damaged)
        .await
        .unwrap();
    assert!(matches!(
        load_identity(&ks).await,
        Err(KeystoreError::Corrupt(_))
    ));

    ks.delete_secret(IDENTITY_SECRET).await.unwrap();
    assert!(load_identity(&ks).await.unwrap().is_none());
}

#[test]
fn default_parameters_are_real_argon2id() {
    // The default is not the test shortcut, and sealing with it works (64 MiB, 3 passes).
    assert_ne!(KdfParams::default(), KdfParams::INSECURE_FOR_TESTS);
    assert_eq!(KdfParams::default().memlimit, 64 << 20);
    let sealed = mesh_platform::keystore::seal_secret(b"s", b"pw", KdfParams::default()).unwrap();
    assert_eq!(
        mesh_platform::keystore::open_secret(&sealed, b"pw")
            .unwrap()
            .as_slice(),
        b"s"
    );
}
