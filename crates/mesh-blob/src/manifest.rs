//! Blob ids and manifests.
//!
//! A blob is cut into chunks of `chunk_size` bytes (the last one shorter). Each chunk is named
//! by its BLAKE2b-256 digest; the manifest lists them in order. The blob's id is the digest of
//! the manifest under the domain [`BLOB_DOMAIN`]:
//!
//! ```text
//! chunk_hash = BLAKE2b-256(chunk)
//! blob_id    = BLAKE2b-256(u8(12) || "mesh/blob/v1" || size u64 LE || chunk_size u32 LE
//!                          || chunk_hash_0 || chunk_hash_1 || ...)
//! ```
//!
//! So the id is a function of the content (and the chunk size), and a manifest received from
//! an untrusted peer is checked against the id before any chunk is fetched; each chunk is then
//! checked against its entry. Encoding (`docs/PROTOCOL.md` §13):
//! `version u8 = 1 | size u64 LE | chunk_size u32 LE | count u32 LE | count × hash [32]`.

use std::fmt;

use mesh_crypto::Hash256;
use mesh_crypto::hash::{HASH_LEN, blake2b_256, domain_hash};

use crate::BlobError;

/// Domain of the blob id digest.
pub const BLOB_DOMAIN: &str = "mesh/blob/v1";
/// Version byte of the manifest encoding.
pub const MANIFEST_VERSION: u8 = 1;
/// Bytes before the chunk hashes.
pub const MANIFEST_HEADER_LEN: usize = 1 + 8 + 4 + 4;
/// Smallest chunk size a manifest may name.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size a manifest may name (a chunk travels in one frame).
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
/// Most chunks in one blob: the manifest (32 bytes a chunk) then fits in one transport frame,
/// and committing or removing a blob fits in one storage batch. With the default chunk size
/// this allows blobs of up to 2 GiB.
pub const MAX_CHUNKS: u32 = 32_768;

/// A blob's id: the digest of its manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub Hash256);

impl BlobId {
    /// The id's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        self.0.as_bytes()
    }

    /// The id from 32 bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(Hash256(bytes))
    }

    /// The id from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(Self::from_bytes)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The digest naming one chunk.
pub fn chunk_hash(chunk: &[u8]) -> Hash256 {
    blake2b_256(chunk)
}

/// The list of chunks a blob is made of.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    size: u64,
    chunk_size: u32,
    hashes: Vec<Hash256>,
    id: BlobId,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.id)
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.hashes.len())
            .finish()
    }
}

/// Chunks needed for `size` bytes at `chunk_size`.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

impl Manifest {
    /// A manifest from its parts, checked for consistency.
    ///
    /// # Errors
    /// [`BlobError::BadManifest`] when the chunk size is out of range or the number of hashes
    /// does not match the size.
    pub fn new(size: u64, chunk_size: u32, hashes: Vec<Hash256>) -> Result<Self, BlobError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(BlobError::BadManifest("chunk size out of range"));
        }
        if hashes.len() > MAX_CHUNKS as usize {
            return Err(BlobError::BadManifest("too many chunks"));
        }
        if chunk_count(size, chunk_size) != hashes.len() as u64 {
            return Err(BlobError::BadManifest(
                "number of chunks does not match the size",
            ));
        }
        let id = Self::compute_id(size, chunk_size, &hashes);
        Ok(Self {
            size,
            chunk_size,
            hashes,
            id,
        })
    }

    fn compute_id(size: u64, chunk_size: u32, hashes: &[Hash256]) -> BlobId {
        let mut flat = Vec::with_capacity(hashes.len() * HASH_LEN);
        for h in hashes {
            flat.extend_from_slice(h.as_bytes());
        }
        BlobId(domain_hash(
            BLOB_DOMAIN,
            &[&size.to_le_bytes(), &chunk_size.to_le_bytes(), &flat],
        ))
    }

    /// The blob's id.
    pub const fn id(&self) -> BlobId {
        self.id
    }

    /// The blob's length in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size (every chunk but the last has this length).
    pub const fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The chunk hashes, in order.
    pub fn hashes(&self) -> &[Hash256] {
        &self.hashes
    }

    /// Number of chunks.
    #[allow(clippy::cast_possible_truncation)] // at most MAX_CHUNKS
    pub fn count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The length of chunk `index` (0 past the end).
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = u64::from(index) * u64::from(self.chunk_size);
        if start >= self.size {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation)] // at most chunk_size, a u32
        let len = (self.size - start).min(u64::from(self.chunk_size)) as usize;
        len
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_HEADER_LEN + self.hashes.len() * HASH_LEN);
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.count().to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h.as_bytes());
        }
        out
    }

    /// Decodes a manifest, checking every length before allocating and the consistency of the
    /// fields.
    ///
    /// # Errors
    /// [`BlobError::BadManifest`] for anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, BlobError> {
        if bytes.len() < MANIFEST_HEADER_LEN {
            return Err(BlobError::BadManifest("truncated"));
        }
        if bytes[0] != MANIFEST_VERSION {
            return Err(BlobError::BadManifest("unknown version"));
        }
        let size = u64::from_le_bytes(bytes[1..9].try_into().unwrap_or_default());
        let chunk_size = u32::from_le_bytes(bytes[9..13].try_into().unwrap_or_default());
        let count = u32::from_le_bytes(bytes[13..17].try_into().unwrap_or_default());
        if count > MAX_CHUNKS {
            return Err(BlobError::BadManifest("too many chunks"));
        }
        let body = &bytes[MANIFEST_HEADER_LEN..];
        if body.len() != count as usize * HASH_LEN {
            return Err(BlobError::BadManifest("length does not match the count"));
        }
        let hashes = body
            .chunks_exact(HASH_LEN)
            .map(|c| Hash256(c.try_into().unwrap_or_default()))
            .collect();
        Self::new(size, chunk_size, hashes)
    }

    /// Decodes a manifest and checks that it is the one `id` names.
    ///
    /// # Errors
    /// [`BlobError::BadManifest`] for a malformed manifest or one of another blob.
    pub fn decode_for(id: &BlobId, bytes: &[u8]) -> Result<Self, BlobError> {
        let m = Self::decode(bytes)?;
        if m.id != *id {
            return Err(BlobError::BadManifest("does not match the blob id"));
        }
        Ok(m)
    }

    /// The manifest of `data` cut at `chunk_size` (for small, in-memory content).
    ///
    /// # Errors
    /// As [`Manifest::new`].
    pub fn of(data: &[u8], chunk_size: u32) -> Result<Self, BlobError> {
        let hashes = data
            .chunks(chunk_size.max(1) as usize)
            .map(chunk_hash)
            .collect();
        Self::new(data.len() as u64, chunk_size, hashes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_id() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let m = Manifest::of(&data, 1024).unwrap();
        assert_eq!(m.count(), 5);
        assert_eq!(m.chunk_len(4), 5000 - 4096);
        assert_eq!(m.chunk_len(5), 0);
        let bytes = m.encode();
        assert_eq!(bytes.len(), MANIFEST_HEADER_LEN + 5 * 32);
        let back = Manifest::decode_for(&m.id(), &bytes).unwrap();
        assert_eq!(back, m);
        // The id depends on the chunk size and on every byte.
        assert_ne!(Manifest::of(&data, 2048).unwrap().id(), m.id());
        let mut other = data.clone();
        other[4999] ^= 1;
        assert_ne!(Manifest::of(&other, 1024).unwrap().id(), m.id());
    }

    #[test]
    fn empty_blob() {
        let m = Manifest::of(&[], 4096).unwrap();
        assert_eq!(m.count(), 0);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let m = Manifest::of(&[7u8; 3000], 1024).unwrap();
        let good = m.encode();
        // Truncated, unknown version, trailing bytes, count/size mismatch, wrong id.
        assert!(Manifest::decode(&good[..good.len() - 1]).is_err());
        assert!(Manifest::decode(&good[..10]).is_err());
        let mut v = good.clone();
        v[0] = 2;
        assert!(Manifest::decode(&v).is_err());
        let mut v = good.clone();
        v.push(0);
        assert!(Manifest::decode(&v).is_err());
        let mut v = good.clone();
        v[2] = 0xff; // size no longer matches 3 chunks
        assert!(Manifest::decode(&v).is_err());
        let mut v = good.clone();
        v[9..13].copy_from_slice(&16u32.to_le_bytes()); // chunk size too small
        assert!(Manifest::decode(&v).is_err());
        let mut v = good.clone();
        v[13..17].copy_from_slice(&u32::MAX.to_le_bytes()); // huge count: refused before allocating
        assert!(Manifest::decode(&v).is_err());
        let mut v = good;
        v[20] ^= 1; // a hash changed: a valid manifest of another blob
        let other = Manifest::decode(&v).unwrap();
        assert!(Manifest::decode_for(&m.id(), &v).is_err());
        assert_ne!(other.id(), m.id());
    }
}
