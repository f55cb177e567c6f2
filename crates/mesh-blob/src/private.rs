//! Private blobs: content encrypted to one recipient before it is stored, so that the store,
//! the peers that serve it and the links it travels over only ever hold ciphertext.
//!
//! The content is encrypted with a fresh random key as a libsodium secret stream
//! (`mesh_crypto::stream`), in segments of [`SEGMENT_LEN`] bytes, and stored as an ordinary
//! blob (so it is chunked, deduplicated among identical ciphertexts, verified and transferred
//! like any other). The key travels in a mesh-crypto envelope from the sender to the
//! recipient, bound to the blob's id (`docs/PROTOCOL.md` §13, "Private blobs"):
//!
//! ```text
//! stored blob  = version u8 = 1 | stream header [24] | segment_0 | segment_1 | ...
//! segment_i    = secretstream push(plaintext[i*SEGMENT_LEN ..][..SEGMENT_LEN], tag)
//!                (tag MESSAGE, FINAL on the last segment, which may be empty)
//! key envelope = envelope::seal(sender, recipient, context "mesh/blob/key/v1",
//!                               version u8 = 1 | blob id [32] | stream key [32])
//! ```
//!
//! A segment is `SEGMENT_LEN + 17` bytes except the last, which is shorter, so a reader cuts
//! the stream without lengths on the wire; a stream that stops before its FINAL segment, or
//! goes on after it, is refused.

use mesh_crypto::envelope;
use mesh_crypto::stream::{ABYTES, HEADER_LEN, KEY_LEN, Puller, Pusher, StreamKey};
use mesh_crypto::{Identity, PeerId, UnixMillis};

use crate::manifest::BlobId;
use crate::store::{BlobError, BlobReader, BlobStore, BlobWriter, PutOptions, Stored};

/// Version byte of the stored format and of the key envelope's plaintext.
pub const PRIVATE_VERSION: u8 = 1;
/// Plaintext bytes per segment.
pub const SEGMENT_LEN: usize = 64 * 1024;
/// The envelope context of blob keys.
pub const KEY_CONTEXT: &[u8] = b"mesh/blob/key/v1";
/// Bytes before the first segment.
pub const PREFIX_LEN: usize = 1 + HEADER_LEN;
const KEY_PLAINTEXT_LEN: usize = 1 + 32 + KEY_LEN;

/// Errors of private blobs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] BlobError),
    /// The key envelope did not open (not for us, or altered), or a segment did not decrypt.
    #[error("decryption: {0}")]
    Crypto(#[from] mesh_crypto::Error),
    /// The key envelope is for another blob.
    #[error("the key is for blob {0}, not this one")]
    WrongBlob(BlobId),
    /// The stored content is not a private blob of a version this build reads.
    #[error("not a private blob: {0}")]
    Malformed(&'static str),
    /// The stream ended before its final segment.
    #[error("the encrypted content is truncated")]
    Truncated,
}

/// Size of the stored (encrypted) blob for `plaintext_len` bytes of content.
pub const fn encrypted_len(plaintext_len: u64) -> u64 {
    let segments = plaintext_len / SEGMENT_LEN as u64 + 1;
    PREFIX_LEN as u64 + plaintext_len + segments * ABYTES as u64
}

/// Encrypts content as it is written into a [`BlobWriter`].
#[derive(Debug)]
pub struct PrivateWriter {
    inner: BlobWriter,
    pusher: Pusher,
    key: StreamKey,
    buf: Vec<u8>,
}

impl PrivateWriter {
    /// Starts a private blob in `writer` (a streaming writer from [`BlobStore::writer`];
    /// give it [`encrypted_len`] as the size hint when the size is known).
    ///
    /// # Errors
    /// The writer's errors.
    pub async fn new(mut writer: BlobWriter) -> Result<Self, PrivateError> {
        let key = StreamKey::generate();
        let (pusher, header) = Pusher::new(&key);
        let mut prefix = Vec::with_capacity(PREFIX_LEN);
        prefix.push(PRIVATE_VERSION);
        prefix.extend_from_slice(&header);
        writer.write(&prefix).await?;
        Ok(Self {
            inner: writer,
            pusher,
            key,
            buf: Vec::with_capacity(SEGMENT_LEN),
        })
    }

    /// Appends content.
    ///
    /// # Errors
    /// The writer's errors (limits, storage).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), PrivateError> {
        while !data.is_empty() {
            let take = (SEGMENT_LEN - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == SEGMENT_LEN {
                let segment = self.pusher.push(&self.buf, false)?;
                self.buf.clear();
                self.inner.write(&segment).await?;
            }
        }
        Ok(())
    }

    /// Writes the final segment, commits the blob, and seals its key from `sender` to
    /// `recipient`. Returns the commit and the key envelope (to send to the recipient, by
    /// message or alongside the blob id).
    ///
    /// # Errors
    /// The writer's errors; the envelope's for an unusable recipient key.
    pub async fn finish(
        mut self,
        now: UnixMillis,
        sender: &Identity,
        recipient: &PeerId,
    ) -> Result<(Stored, Vec<u8>), PrivateError> {
        let last = self.pusher.push(&self.buf, true)?;
        self.inner.write(&last).await?;
        let stored = self.inner.finish(now).await?;
        let envelope = seal_key(sender, recipient, &stored.id, &self.key)?;
        Ok((stored, envelope))
    }
}

fn seal_key(
    sender: &Identity,
    recipient: &PeerId,
    id: &BlobId,
    key: &StreamKey,
) -> Result<Vec<u8>, PrivateError> {
    let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(KEY_PLAINTEXT_LEN));
    plaintext.push(PRIVATE_VERSION);
    plaintext.extend_from_slice(id.as_bytes());
    plaintext.extend_from_slice(key.as_bytes());
    Ok(envelope::seal(sender, recipient, KEY_CONTEXT, &plaintext)?)
}

/// Opens a key envelope addressed to `recipient`: the blob it is for, its key, and who sent
/// it.
fn open_key(
    recipient: &Identity,
    sealed: &[u8],
) -> Result<(BlobId, StreamKey, PeerId), PrivateError> {
    let opened = envelope::open_with_limit(recipient, sealed, KEY_CONTEXT, KEY_PLAINTEXT_LEN)?;
    let p = zeroize::Zeroizing::new(opened.plaintext);
    if p.len() != KEY_PLAINTEXT_LEN || p[0] != PRIVATE_VERSION {
        return Err(PrivateError::Malformed("key envelope"));
    }
    let id = BlobId::from_slice(&p[1..33]).ok_or(PrivateError::Malformed("key envelope"))?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&p[33..]);
    let key = StreamKey::from_bytes(key);
    Ok((id, key, opened.sender))
}

/// Decrypts a private blob as it is read.
#[derive(Debug)]
pub struct PrivateReader {
    inner: BlobReader,
    puller: Puller,
    /// Ciphertext read but not yet decrypted.
    buf: Vec<u8>,
    sender: PeerId,
    eof: bool,
}

impl PrivateReader {
    /// Opens private blob `id` with the key envelope `sealed` addressed to `recipient`.
    ///
    /// # Errors
    /// [`PrivateError::Crypto`] when the envelope is not for `recipient` or was altered;
    /// [`PrivateError::WrongBlob`] when it is for another blob; the store's errors.
    pub async fn open(
        store: &BlobStore,
        id: &BlobId,
        recipient: &Identity,
        sealed: &[u8],
    ) -> Result<Self, PrivateError> {
        let (for_id, key, sender) = open_key(recipient, sealed)?;
        if for_id != *id {
            return Err(PrivateError::WrongBlob(for_id));
        }
        let mut inner = store.reader(id).await?;
        let mut buf = Vec::new();
        while buf.len() < PREFIX_LEN {
            match inner.next_piece().await? {
                Some(p) => buf.extend_from_slice(&p),
                None => return Err(PrivateError::Truncated),
            }
        }
        if buf[0] != PRIVATE_VERSION {
            return Err(PrivateError::Malformed("unknown version"));
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&buf[1..PREFIX_LEN]);
        buf.drain(..PREFIX_LEN);
        Ok(Self {
            inner,
            puller: Puller::new(&key, &header),
            buf,
            sender,
            eof: false,
        })
    }

    /// Who sealed the key (the envelope's verified sender).
    pub const fn sender(&self) -> PeerId {
        self.sender
    }

    /// The next piece of plaintext (one segment), or `None` at the end.
    ///
    /// # Errors
    /// [`PrivateError::Crypto`] for a segment that does not decrypt, [`PrivateError::Truncated`]
    /// for a stream without its final segment, [`PrivateError::Malformed`] for data after it;
    /// the store's errors.
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, PrivateError> {
        const FULL: usize = SEGMENT_LEN + ABYTES;
        if self.puller.is_finished() {
            if !self.buf.is_empty() || self.inner.next_piece().await?.is_some() {
                return Err(PrivateError::Malformed("data after the final segment"));
            }
            return Ok(None);
        }
        // A full segment is not the last only if more follows it: read one byte past it.
        while !self.eof && self.buf.len() <= FULL {
            match self.inner.next_piece().await? {
                Some(p) => self.buf.extend_from_slice(&p),
                None => self.eof = true,
            }
        }
        if self.buf.is_empty() {
            return Err(PrivateError::Truncated);
        }
        let take = self.buf.len().min(FULL);
        let segment: Vec<u8> = self.buf.drain(..take).collect();
        let plain = self.puller.pull(&segment)?;
        if !self.puller.is_finished() && self.eof && self.buf.is_empty() {
            return Err(PrivateError::Truncated);
        }
        Ok(Some(plain))
    }

    /// Everything left, in memory.
    ///
    /// # Errors
    /// As [`PrivateReader::next_piece`].
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, PrivateError> {
        let mut out = Vec::new();
        while let Some(p) = self.next_piece().await? {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }
}

/// Encrypts `data` to `recipient` and stores it for `owner`; returns the commit and the key
/// envelope for the recipient.
///
/// # Errors
/// As [`PrivateWriter`].
pub async fn put_private(
    store: &BlobStore,
    sender: &Identity,
    recipient: &PeerId,
    data: &[u8],
    owner: PeerId,
    options: PutOptions,
    now: UnixMillis,
) -> Result<(Stored, Vec<u8>), PrivateError> {
    let writer = store
        .writer(owner, options, Some(encrypted_len(data.len() as u64)))
        .await?;
    let mut w = PrivateWriter::new(writer).await?;
    w.write(data).await?;
    w.finish(now, sender, recipient).await
}

/// Reads and decrypts private blob `id` with the key envelope `sealed`.
///
/// # Errors
/// As [`PrivateReader`].
pub async fn get_private(
    store: &BlobStore,
    id: &BlobId,
    recipient: &Identity,
    sealed: &[u8],
) -> Result<Vec<u8>, PrivateError> {
    PrivateReader::open(store, id, recipient, sealed)
        .await?
        .read_to_end()
        .await
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use std::sync::Arc;

    use mesh_platform::kv::{KvStore, Schema, Store};
    use mesh_store_memory::{MemoryBackend, SharedMap};

    use super::*;
    use crate::store::{BlobConfig, TABLES};

    static SCHEMA: Schema = Schema {
        version: 1,
        tables: &TABLES,
        migrations: &[],
    };
    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    async fn store() -> (BlobStore, SharedMap) {
        let map = SharedMap::default();
        let kv: Arc<dyn KvStore> = Arc::new(
            Store::open(MemoryBackend::with_map(Arc::clone(&map)), &SCHEMA)
                .await
                .unwrap(),
        );
        let cfg = BlobConfig {
            chunk_size: 4096,
            ..BlobConfig::default()
        };
        (BlobStore::open(kv, cfg).await.unwrap(), map)
    }

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[tokio::test]
    async fn round_trip_at_every_segment_boundary() {
        let (s, _) = store().await;
        let (alice, bob) = (Identity::generate(), Identity::generate());
        for len in [
            0,
            1,
            SEGMENT_LEN - 1,
            SEGMENT_LEN,
            SEGMENT_LEN + 1,
            3 * SEGMENT_LEN + 5,
        ] {
            let data = text(len);
            let (stored, key) = put_private(
                &s,
                &alice,
                &bob.peer_id(),
                &data,
                alice.peer_id(),
                PutOptions::default(),
                T0,
            )
            .await
            .unwrap();
            assert_eq!(stored.size, encrypted_len(len as u64), "len {len}");
            let mut r = PrivateReader::open(&s, &stored.id, &bob, &key)
                .await
                .unwrap();
            assert_eq!(r.sender(), alice.peer_id());
            assert_eq!(r.read_to_end().await.unwrap(), data, "len {len}");
        }
    }

    #[tokio::test]
    async fn no_plaintext_is_stored_and_only_the_recipient_reads() {
        let (s, map) = store().await;
        let (alice, bob, eve) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let data = text(100_000);
        let (stored, key) = put_private(
            &s,
            &alice,
            &bob.peer_id(),
            &data,
            alice.peer_id(),
            PutOptions::default(),
            T0,
        )
        .await
        .unwrap();
        // Not one 16-byte window of the plaintext anywhere in the backend, nor the key.
        let (_, k, _) = open_key(&bob, &key).unwrap();
        let everything: Vec<u8> = map
            .read()
            .unwrap()
            .iter()
            .flat_map(|(k, v)| k.iter().chain(v.iter()).copied())
            .collect();
        for w in data.windows(16).step_by(997).take(50) {
            assert!(!everything.windows(16).any(|x| x == w), "plaintext stored");
        }
        assert!(
            !everything.windows(32).any(|x| x == k.as_bytes()),
            "key stored"
        );

        assert!(matches!(
            get_private(&s, &stored.id, &eve, &key).await,
            Err(PrivateError::Crypto(mesh_crypto::Error::WrongRecipient))
        ));
        let mut altered = key.clone();
        let n = altered.len();
        altered[n - 100] ^= 1;
        assert!(matches!(
            get_private(&s, &stored.id, &bob, &altered).await,
            Err(PrivateError::Crypto(_))
        ));
        // A key for another blob is refused.
        let (other, other_key) = put_private(
            &s,
            &alice,
            &bob.peer_id(),
            b"other",
            alice.peer_id(),
            PutOptions::default(),
            T0,
        )
        .await
        .unwrap();
        assert_eq!(
            get_private(&s, &stored.id, &bob, &other_key)
                .await
                .unwrap_err(),
            PrivateError::WrongBlob(other.id)
        );
    }

    /// Stores `content` as a blob with an envelope for its own id under `key`.
    async fn raw(
        s: &BlobStore,
        content: &[u8],
        key: &StreamKey,
        bob: &Identity,
    ) -> (BlobId, Vec<u8>) {
        let alice = Identity::generate();
        let stored = s
            .put(alice.peer_id(), content, PutOptions::default(), T0)
            .await
            .unwrap();
        let env = seal_key(&alice, &bob.peer_id(), &stored.id, key).unwrap();
        (stored.id, env)
    }

    #[tokio::test]
    async fn truncated_extended_or_altered_streams_are_refused() {
        let (s, _) = store().await;
        let bob = Identity::generate();
        let key = StreamKey::generate();
        let (mut p, header) = Pusher::new(&key);
        let mut prefix = vec![PRIVATE_VERSION];
        prefix.extend_from_slice(&header);
        let seg1 = p.push(&text(SEGMENT_LEN), false).unwrap();
        let seg2 = p.push(&text(10), true).unwrap();
        let whole = [prefix.clone(), seg1.clone(), seg2.clone()].concat();
        let (id, env) = raw(&s, &whole, &key, &bob).await;
        assert_eq!(
            get_private(&s, &id, &bob, &env).await.unwrap().len(),
            SEGMENT_LEN + 10
        );

        // Cut after the first segment: no FINAL.
        let cut = [prefix.clone(), seg1.clone()].concat();
        let (id, env) = raw(&s, &cut, &key, &bob).await;
        assert_eq!(
            get_private(&s, &id, &bob, &env).await,
            Err(PrivateError::Truncated)
        );
        // Cut inside the last segment.
        let (id, env) = raw(&s, &whole[..whole.len() - 3], &key, &bob).await;
        assert!(get_private(&s, &id, &bob, &env).await.is_err());
        // Only the prefix, or less.
        let (id, env) = raw(&s, &prefix, &key, &bob).await;
        assert_eq!(
            get_private(&s, &id, &bob, &env).await,
            Err(PrivateError::Truncated)
        );
        let (id, env) = raw(&s, &prefix[..5], &key, &bob).await;
        assert_eq!(
            PrivateReader::open(&s, &id, &bob, &env).await.unwrap_err(),
            PrivateError::Truncated
        );
        // Bytes after the FINAL segment.
        let (id, env) = raw(&s, &[whole.clone(), vec![0; 3]].concat(), &key, &bob).await;
        assert!(get_private(&s, &id, &bob, &env).await.is_err());
        // Segments swapped, a flipped bit, an unknown version.
        let swapped = [prefix.clone(), seg2.clone(), seg1.clone()].concat();
        let (id, env) = raw(&s, &swapped, &key, &bob).await;
        assert!(matches!(
            get_private(&s, &id, &bob, &env).await,
            Err(PrivateError::Crypto(_))
        ));
        let mut flipped = whole.clone();
        flipped[PREFIX_LEN + 1000] ^= 1;
        let (id, env) = raw(&s, &flipped, &key, &bob).await;
        assert!(matches!(
            get_private(&s, &id, &bob, &env).await,
            Err(PrivateError::Crypto(_))
        ));
        let mut v2 = whole;
        v2[0] = 2;
        let (id, env) = raw(&s, &v2, &key, &bob).await;
        assert_eq!(
            PrivateReader::open(&s, &id, &bob, &env).await.unwrap_err(),
            PrivateError::Malformed("unknown version")
        );
    }
}
