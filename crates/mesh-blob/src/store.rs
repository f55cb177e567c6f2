//! The blob store over any [`KvStore`].
//!
//! - **Put** streams: [`BlobStore::writer`] takes bytes in pieces of any size, cuts chunks,
//!   and writes them [`WRITE_BATCH_CHUNKS`] at a time; at most one batch of chunks is in memory.
//!   A chunk already stored (by any blob) is not written again. The blob becomes visible only
//!   when [`BlobWriter::finish`] commits it, in one atomic batch (manifest, chunk reference
//!   counts, hold, usage). Until then its chunks are listed under the writer's session in the
//!   pending table; a writer that is dropped, or a process that dies, leaves only those rows,
//!   and the next [`BlobStore::gc`] removes them and every chunk nothing else references.
//! - **Import** ([`BlobStore::importer`]) is the same with the manifest known in advance (a
//!   transfer): chunks arrive by index in any order, each checked against its hash before it is
//!   kept; chunks already stored locally are never fetched.
//! - **Get** streams too: [`BlobReader`] yields one chunk (or the part of it a range asks for)
//!   at a time, each checked against its hash when read.
//! - **Holds**: a blob is kept while some owner holds it. A hold has an optional expiry and a
//!   pin (a pinned hold never expires). Quotas count, per owner, the size of every blob the
//!   owner holds; the total quota counts the bytes of distinct chunks stored.
//! - **GC** ([`BlobStore::gc`]) removes expired holds, the blobs no hold keeps, the chunks no
//!   blob references, and what interrupted puts left, in steps bounded by a work budget.
//!
//! Every table and value layout is in `docs/PROTOCOL.md` §13.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_crypto::hash::HASH_LEN;
use mesh_crypto::{Hash256, PeerId, UnixMillis};
use mesh_platform::kv::{Batch, Direction, KeyRange, KvError, KvStore};

use crate::manifest::{
    BlobId, MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE, Manifest, chunk_count, chunk_hash,
};
use crate::metrics::BlobMetrics;

/// Chunk bytes: `chunk hash [32] -> bytes`.
pub const CHUNKS_TABLE: &str = "blob/chunks";
/// Chunk reference counts: `chunk hash [32] -> count u64 LE` (one per occurrence in a stored
/// manifest; a chunk without a row is referenced by no stored blob).
pub const REFS_TABLE: &str = "blob/refs";
/// Manifests of stored blobs: `blob id [32] -> manifest`.
pub const MANIFESTS_TABLE: &str = "blob/manifests";
/// Holds: `blob id [32] || owner [32] -> version u8 = 1 | expires_at u64 LE (u64::MAX: never)
/// | pinned u8 | created_at u64 LE`.
pub const HOLDS_TABLE: &str = "blob/holds";
/// Expiry index of unpinned holds that expire: `expires_at u64 BE || blob id || owner -> ""`.
pub const EXPIRY_TABLE: &str = "blob/expiry";
/// Usage per owner: `owner [32] -> version u8 = 1 | bytes u64 LE | blobs u64 LE`.
pub const OWNERS_TABLE: &str = "blob/owners";
/// Store totals: `"totals" -> version u8 = 1 | stored bytes u64 LE | chunks u64 LE | blobs u64
/// LE`.
pub const TOTALS_TABLE: &str = "blob/totals";
/// Chunks of puts not yet committed: `session [16] || index u32 BE -> chunk hash [32]`.
pub const PENDING_TABLE: &str = "blob/pending";
/// The tables the blob store writes, for the node's `Schema`.
pub const TABLES: [&str; 8] = [
    CHUNKS_TABLE,
    REFS_TABLE,
    MANIFESTS_TABLE,
    HOLDS_TABLE,
    EXPIRY_TABLE,
    OWNERS_TABLE,
    TOTALS_TABLE,
    PENDING_TABLE,
];
/// Version byte of the value layouts.
pub const LAYOUT_VERSION: u8 = 1;

/// Default chunk size: 65,408 bytes (64 KiB − 128). A chunk and its key then fill one 64 KiB
/// redb leaf, the cheapest size measured for redb and about 1.0x on SQLite (`docs/STORAGE.md`,
/// "Storage amplification and the blob chunk size").
pub const DEFAULT_CHUNK_SIZE: u32 = 65_408;
/// Default largest blob: 10 MiB.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 10 * 1024 * 1024;
/// Default quota of one owner: 256 MiB of blobs held.
pub const DEFAULT_OWNER_QUOTA: u64 = 256 * 1024 * 1024;
/// Default quota of the store: 1 GiB of distinct chunk bytes.
pub const DEFAULT_TOTAL_QUOTA: u64 = 1024 * 1024 * 1024;
/// Chunks a writer buffers before it writes them in one batch (about 1 MiB at the default
/// chunk size): what bounds a put's memory.
pub const WRITE_BATCH_CHUNKS: usize = 16;
/// Manifests kept in memory for reads and serving.
pub const MANIFEST_CACHE: usize = 16;
/// Holds listed by [`BlobStore::info`] at most.
pub const MAX_HOLDS_LISTED: usize = 1024;
/// Bytes of a put session id.
pub const SESSION_LEN: usize = 16;
const TOTALS_KEY: &[u8] = b"totals";
/// The session of pending rows that keep a chunk a live writer registered after its last
/// reference went: `[0; 16] || chunk hash -> chunk hash`. Never a writer's session.
const ORPHAN_SESSION: [u8; SESSION_LEN] = [0; SESSION_LEN];
const PAGE: usize = 256;

/// Errors of the blob store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No such blob.
    #[error("blob {0} not found")]
    NotFound(BlobId),
    /// The blob is over the largest size allowed.
    #[error("blob of {size} bytes or more, over the limit of {max}")]
    TooLarge {
        /// Bytes seen so far (or announced).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The owner's quota would be exceeded.
    #[error("owner quota exceeded: {used} bytes held + {size} > {quota}")]
    OwnerQuota {
        /// Bytes the owner holds.
        used: u64,
        /// Size of the blob.
        size: u64,
        /// The quota.
        quota: u64,
    },
    /// The store's total quota would be exceeded.
    #[error("store quota exceeded: {used} bytes stored + {needed} new > {quota}")]
    TotalQuota {
        /// Bytes of chunks stored.
        used: u64,
        /// New chunk bytes the blob needs.
        needed: u64,
        /// The quota.
        quota: u64,
    },
    /// A stored chunk does not match its hash (storage corruption).
    #[error("chunk {index} of blob {id} is corrupt")]
    Corrupt {
        /// The blob.
        id: BlobId,
        /// The chunk's index.
        index: u32,
    },
    /// A chunk of a stored blob is missing (the blob was removed while being read).
    #[error("chunk {index} of blob {id} is missing")]
    MissingChunk {
        /// The blob.
        id: BlobId,
        /// The chunk's index.
        index: u32,
    },
    /// A manifest is malformed or not the one its id names.
    #[error("bad manifest: {0}")]
    BadManifest(&'static str),
    /// A chunk offered to an import does not match the manifest.
    #[error("chunk {index} does not match the manifest")]
    ChunkMismatch {
        /// The chunk's index.
        index: u32,
    },
    /// A range outside the blob.
    #[error("range {start}..{end} outside a blob of {size} bytes")]
    OutOfRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// Size of the blob.
        size: u64,
    },
    /// An import was finished with chunks still missing.
    #[error("{missing} chunks still missing")]
    Incomplete {
        /// How many.
        missing: u32,
    },
    /// The writer was already finished or aborted.
    #[error("the writer is finished")]
    Finished,
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// Stored metadata could not be decoded.
    #[error("corrupt blob metadata in {0}")]
    CorruptMetadata(&'static str),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(#[from] KvError),
}

/// Limits of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobConfig {
    /// Chunk size of blobs put locally ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Largest blob accepted, put or imported (at most `chunk_size` × [`MAX_CHUNKS`]).
    pub max_blob_size: u64,
    /// Bytes of blobs one owner may hold.
    pub owner_quota: u64,
    /// Bytes of distinct chunks the store may hold.
    pub total_quota: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            owner_quota: DEFAULT_OWNER_QUOTA,
            total_quota: DEFAULT_TOTAL_QUOTA,
        }
    }
}

impl BlobConfig {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`BlobError::InvalidConfig`] naming the first inconsistency.
    pub fn validate(&self) -> Result<(), BlobError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(BlobError::InvalidConfig("chunk_size out of range"));
        }
        if self.max_blob_size > u64::from(self.chunk_size) * u64::from(MAX_CHUNKS) {
            return Err(BlobError::InvalidConfig(
                "max_blob_size over chunk_size × MAX_CHUNKS",
            ));
        }
        Ok(())
    }
}

/// How an owner holds a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutOptions {
    /// When the hold ends (`None`: never).
    pub expires_at: Option<UnixMillis>,
    /// A pinned hold never expires, whatever `expires_at` says, until it is unpinned.
    pub pinned: bool,
}

/// One owner's hold on a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Who holds it.
    pub owner: PeerId,
    /// When the hold ends, unless pinned.
    pub expires_at: Option<UnixMillis>,
    /// Whether it is pinned.
    pub pinned: bool,
    /// When the hold was made.
    pub created_at: UnixMillis,
}

/// What a committed put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The blob's id.
    pub id: BlobId,
    /// Its size.
    pub size: u64,
    /// Its chunks.
    pub chunks: u32,
    /// Bytes of chunks the store did not have before.
    pub new_bytes: u64,
    /// Whether the blob was already stored (only a hold was added or changed).
    pub duplicate: bool,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its id.
    pub id: BlobId,
    /// Its size.
    pub size: u64,
    /// Its chunks.
    pub chunks: u32,
    /// Who holds it (the first [`MAX_HOLDS_LISTED`], in owner order).
    pub holds: Vec<Hold>,
}

/// What the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of distinct chunks stored (what the total quota counts).
    pub stored_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Blobs stored.
    pub blobs: u64,
}

/// What one owner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerUsage {
    /// Sum of the sizes of the blobs the owner holds (what the owner quota counts).
    pub bytes: u64,
    /// Blobs the owner holds.
    pub blobs: u64,
}

/// What one [`BlobStore::gc`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Holds removed at expiry.
    pub holds_expired: u64,
    /// Blobs removed (no hold left).
    pub blobs_removed: u64,
    /// Chunks deleted.
    pub chunks_removed: u64,
    /// Bytes of stored chunks freed.
    pub bytes_freed: u64,
    /// Rows of interrupted puts removed.
    pub pending_removed: u64,
    /// Whether the call ran out of work before its budget (nothing due is left).
    pub done: bool,
}

struct State {
    /// Sessions of writers alive in this process.
    sessions: HashSet<[u8; SESSION_LEN]>,
    /// Chunks registered by live writers, with the number of writers that registered each:
    /// GC never deletes them.
    pending_chunks: HashMap<Hash256, u32>,
    totals: Usage,
    manifests: VecDeque<Arc<Manifest>>,
    /// Where the next scan of the pending table starts.
    gc_cursor: Option<Vec<u8>>,
    /// Bumped whenever a blob is removed, so that a manifest read before the removal is not
    /// put back in the cache after it.
    epoch: u64,
}

struct Shared {
    kv: Arc<dyn KvStore>,
    config: BlobConfig,
    /// Serialises every read-modify-write of reference counts, holds and usage, and the
    /// "is this chunk stored?" checks of writers against GC's deletions.
    meta: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    metrics: BlobMetrics,
}

/// The blob store. Cheap to clone (a handle).
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("config", &self.inner.config)
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn hash_from(b: &[u8]) -> Option<Hash256> {
    <[u8; HASH_LEN]>::try_from(b).ok().map(Hash256)
}

fn encode_usage(u: &Usage) -> Vec<u8> {
    let mut v = vec![LAYOUT_VERSION];
    v.extend_from_slice(&u.stored_bytes.to_le_bytes());
    v.extend_from_slice(&u.chunks.to_le_bytes());
    v.extend_from_slice(&u.blobs.to_le_bytes());
    v
}

fn decode_usage(b: &[u8]) -> Option<Usage> {
    (b.len() == 25 && b[0] == LAYOUT_VERSION).then_some(())?;
    Some(Usage {
        stored_bytes: read_u64(b, 1)?,
        chunks: read_u64(b, 9)?,
        blobs: read_u64(b, 17)?,
    })
}

fn encode_owner(u: &OwnerUsage) -> Vec<u8> {
    let mut v = vec![LAYOUT_VERSION];
    v.extend_from_slice(&u.bytes.to_le_bytes());
    v.extend_from_slice(&u.blobs.to_le_bytes());
    v
}

fn decode_owner(b: &[u8]) -> Option<OwnerUsage> {
    (b.len() == 17 && b[0] == LAYOUT_VERSION).then_some(())?;
    Some(OwnerUsage {
        bytes: read_u64(b, 1)?,
        blobs: read_u64(b, 9)?,
    })
}

fn encode_hold(h: &Hold) -> Vec<u8> {
    let mut v = vec![LAYOUT_VERSION];
    v.extend_from_slice(&h.expires_at.unwrap_or(UnixMillis::NEVER).0.to_le_bytes());
    v.push(u8::from(h.pinned));
    v.extend_from_slice(&h.created_at.0.to_le_bytes());
    v
}

fn decode_hold(owner: PeerId, b: &[u8]) -> Option<Hold> {
    (b.len() == 18 && b[0] == LAYOUT_VERSION && b[9] <= 1).then_some(())?;
    let expires = read_u64(b, 1)?;
    Some(Hold {
        owner,
        expires_at: (expires != u64::MAX).then_some(UnixMillis(expires)),
        pinned: b[9] == 1,
        created_at: UnixMillis(read_u64(b, 10)?),
    })
}

fn hold_key(id: &BlobId, owner: &PeerId) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(owner.as_bytes());
    k
}

fn expiry_key(at: UnixMillis, id: &BlobId, owner: &PeerId) -> Vec<u8> {
    let mut k = at.0.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(owner.as_bytes());
    k
}

/// The expiry row a hold needs, if any.
fn expiry_row(h: &Hold, id: &BlobId) -> Option<Vec<u8>> {
    match (h.pinned, h.expires_at) {
        (false, Some(at)) => Some(expiry_key(at, id, &h.owner)),
        _ => None,
    }
}

fn orphan_key(hash: &Hash256) -> Vec<u8> {
    let mut k = ORPHAN_SESSION.to_vec();
    k.extend_from_slice(hash.as_bytes());
    k
}

fn pending_key(session: &[u8; SESSION_LEN], index: u32) -> Vec<u8> {
    let mut k = session.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The error for chunk `index` past the end of `m`.
fn out_of_range(m: &Manifest, index: u32) -> BlobError {
    let cs = u64::from(m.chunk_size());
    BlobError::OutOfRange {
        start: u64::from(index) * cs,
        end: (u64::from(index) + 1) * cs,
        size: m.size(),
    }
}

/// Occurrences and length of each distinct chunk of a manifest.
fn distinct_chunks(m: &Manifest) -> BTreeMap<Hash256, (u64, usize)> {
    let mut map = BTreeMap::new();
    for (i, h) in (0u32..).zip(m.hashes()) {
        map.entry(*h).or_insert((0, m.chunk_len(i))).0 += 1;
    }
    map
}

impl BlobStore {
    /// Opens the blob store kept in `kv` (whose schema lists [`TABLES`]), reporting metrics
    /// to the global opentelemetry meter provider.
    ///
    /// # Errors
    /// [`BlobError::InvalidConfig`], or the store's error reading the totals.
    pub async fn open(kv: Arc<dyn KvStore>, config: BlobConfig) -> Result<Self, BlobError> {
        Self::open_with_meter(kv, config, &opentelemetry::global::meter("mesh-blob")).await
    }

    /// [`BlobStore::open`] with the metrics on `meter`.
    ///
    /// # Errors
    /// As [`BlobStore::open`].
    pub async fn open_with_meter(
        kv: Arc<dyn KvStore>,
        config: BlobConfig,
        meter: &opentelemetry::metrics::Meter,
    ) -> Result<Self, BlobError> {
        config.validate()?;
        let totals = match kv.get(TOTALS_TABLE, TOTALS_KEY).await? {
            Some(v) => decode_usage(&v).ok_or(BlobError::CorruptMetadata(TOTALS_TABLE))?,
            None => Usage::default(),
        };
        let metrics = BlobMetrics::new(meter);
        metrics.usage_changed(&Usage::default(), &totals);
        // On wasm32 the store is `?Send` (one thread): the Arc only shares it between tasks.
        #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
        Ok(Self {
            inner: Arc::new(Shared {
                kv,
                config,
                meta: tokio::sync::Mutex::new(()),
                state: Mutex::new(State {
                    sessions: HashSet::new(),
                    pending_chunks: HashMap::new(),
                    totals,
                    manifests: VecDeque::new(),
                    gc_cursor: None,
                    epoch: 0,
                }),
                metrics,
            }),
        })
    }

    /// The limits.
    pub fn config(&self) -> &BlobConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &BlobMetrics {
        &self.inner.metrics
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.inner.state)
    }

    /// What the store holds.
    pub fn usage(&self) -> Usage {
        self.state().totals
    }

    /// What `owner` holds.
    ///
    /// # Errors
    /// The storage's error, or corrupt metadata.
    pub async fn owner_usage(&self, owner: &PeerId) -> Result<OwnerUsage, BlobError> {
        match self.inner.kv.get(OWNERS_TABLE, owner.as_bytes()).await? {
            Some(v) => decode_owner(&v).ok_or(BlobError::CorruptMetadata(OWNERS_TABLE)),
            None => Ok(OwnerUsage::default()),
        }
    }

    /// Up to `limit` owners after `after` (in id order), with what each holds: a page of
    /// the per-owner usage report.
    ///
    /// # Errors
    /// The storage's error, or corrupt metadata.
    pub async fn owners(
        &self,
        after: Option<&PeerId>,
        limit: usize,
    ) -> Result<Vec<(PeerId, OwnerUsage)>, BlobError> {
        let range = KeyRange {
            start: after.map_or(Bound::Unbounded, |p| Bound::Excluded(p.as_bytes().to_vec())),
            end: Bound::Unbounded,
        };
        let rows = self
            .inner
            .kv
            .range(OWNERS_TABLE, range, Direction::Forward, limit)
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let owner = <[u8; 32]>::try_from(k.as_slice())
                    .ok()
                    .map(PeerId::from_bytes_unvalidated);
                match (owner, decode_owner(&v)) {
                    (Some(o), Some(u)) => Ok((o, u)),
                    _ => Err(BlobError::CorruptMetadata(OWNERS_TABLE)),
                }
            })
            .collect()
    }

    /// The manifest of a stored blob.
    ///
    /// # Errors
    /// The storage's error, or corrupt metadata.
    pub async fn manifest(&self, id: &BlobId) -> Result<Option<Arc<Manifest>>, BlobError> {
        let epoch = {
            let st = self.state();
            if let Some(m) = st.manifests.iter().find(|m| m.id() == *id) {
                return Ok(Some(Arc::clone(m)));
            }
            st.epoch
        };
        let Some(bytes) = self.inner.kv.get(MANIFESTS_TABLE, id.as_bytes()).await? else {
            return Ok(None);
        };
        let m = Arc::new(
            Manifest::decode_for(id, &bytes)
                .map_err(|_| BlobError::CorruptMetadata(MANIFESTS_TABLE))?,
        );
        let mut st = self.state();
        if st.epoch == epoch && !st.manifests.iter().any(|c| c.id() == *id) {
            if st.manifests.len() >= MANIFEST_CACHE {
                st.manifests.pop_front();
            }
            st.manifests.push_back(Arc::clone(&m));
        }
        Ok(Some(m))
    }

    /// Whether the blob is stored.
    ///
    /// # Errors
    /// The storage's error.
    pub async fn contains(&self, id: &BlobId) -> Result<bool, BlobError> {
        Ok(self.manifest(id).await?.is_some())
    }

    async fn holds(&self, id: &BlobId) -> Result<Vec<Hold>, BlobError> {
        let rows = self
            .inner
            .kv
            .range(
                HOLDS_TABLE,
                KeyRange::prefix(id.as_bytes()),
                Direction::Forward,
                MAX_HOLDS_LISTED,
            )
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                k.get(32..64)
                    .and_then(|o| <[u8; 32]>::try_from(o).ok())
                    .map(PeerId::from_bytes_unvalidated)
                    .and_then(|o| decode_hold(o, &v))
                    .ok_or(BlobError::CorruptMetadata(HOLDS_TABLE))
            })
            .collect()
    }

    /// A stored blob's size, chunks and holds.
    ///
    /// # Errors
    /// The storage's error, or corrupt metadata.
    pub async fn info(&self, id: &BlobId) -> Result<Option<BlobInfo>, BlobError> {
        let Some(m) = self.manifest(id).await? else {
            return Ok(None);
        };
        Ok(Some(BlobInfo {
            id: *id,
            size: m.size(),
            chunks: m.count(),
            holds: self.holds(id).await?,
        }))
    }

    /// Chunk `index` of a stored blob, checked against its hash.
    ///
    /// # Errors
    /// [`BlobError::NotFound`], [`BlobError::OutOfRange`] for an index past the end,
    /// [`BlobError::Corrupt`], [`BlobError::MissingChunk`], or the storage's error.
    pub async fn chunk(&self, id: &BlobId, index: u32) -> Result<Vec<u8>, BlobError> {
        let m = self.manifest(id).await?.ok_or(BlobError::NotFound(*id))?;
        self.read_chunk(&m, index).await
    }

    async fn read_chunk(&self, m: &Manifest, index: u32) -> Result<Vec<u8>, BlobError> {
        let hash = m
            .hashes()
            .get(index as usize)
            .ok_or_else(|| out_of_range(m, index))?;
        let bytes = self
            .inner
            .kv
            .get(CHUNKS_TABLE, hash.as_bytes())
            .await?
            .ok_or(BlobError::MissingChunk { id: m.id(), index })?;
        if bytes.len() != m.chunk_len(index) || chunk_hash(&bytes) != *hash {
            self.inner.metrics.corrupt_chunk();
            tracing::warn!(blob = %m.id(), index, "stored chunk does not match its hash");
            return Err(BlobError::Corrupt { id: m.id(), index });
        }
        Ok(bytes)
    }

    /// A reader of the whole blob.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] or the storage's error.
    pub async fn reader(&self, id: &BlobId) -> Result<BlobReader, BlobError> {
        let m = self.manifest(id).await?.ok_or(BlobError::NotFound(*id))?;
        let size = m.size();
        Ok(BlobReader::new(self.clone(), m, 0..size))
    }

    /// A reader of bytes `range` of the blob.
    ///
    /// # Errors
    /// [`BlobError::NotFound`], [`BlobError::OutOfRange`] for a range not within the blob,
    /// or the storage's error.
    pub async fn read_range(
        &self,
        id: &BlobId,
        range: Range<u64>,
    ) -> Result<BlobReader, BlobError> {
        let m = self.manifest(id).await?.ok_or(BlobError::NotFound(*id))?;
        if range.start > range.end || range.end > m.size() {
            return Err(BlobError::OutOfRange {
                start: range.start,
                end: range.end,
                size: m.size(),
            });
        }
        Ok(BlobReader::new(self.clone(), m, range))
    }

    /// The whole blob in memory (for small blobs; stream big ones with [`BlobStore::reader`]).
    ///
    /// # Errors
    /// As [`BlobStore::reader`] and [`BlobReader::next_piece`].
    pub async fn get(&self, id: &BlobId) -> Result<Vec<u8>, BlobError> {
        self.reader(id).await?.read_to_end().await
    }

    fn new_session(&self) -> [u8; SESSION_LEN] {
        let mut s = ORPHAN_SESSION;
        while s == ORPHAN_SESSION {
            mesh_crypto::random_fill(&mut s);
        }
        self.state().sessions.insert(s);
        s
    }

    /// A writer for a new blob of `owner`. `size_hint`, when known, lets a blob over the
    /// limits be refused before anything is written.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`] or [`BlobError::OwnerQuota`] for a hint over the limits, or the
    /// storage's error.
    pub async fn writer(
        &self,
        owner: PeerId,
        options: PutOptions,
        size_hint: Option<u64>,
    ) -> Result<BlobWriter, BlobError> {
        let owner_used = self.owner_usage(&owner).await?.bytes;
        let w = BlobWriter {
            store: self.clone(),
            session: self.new_session(),
            owner,
            options,
            owner_used,
            mode: Mode::Stream {
                buf: Vec::new(),
                hashes: Vec::new(),
                size: 0,
            },
            batch: Vec::new(),
            registered: HashSet::new(),
            written: HashSet::new(),
            already_held: false,
            finished: false,
            live: true,
        };
        if let Some(size) = size_hint {
            w.check_size(size)?;
        }
        Ok(w)
    }

    /// Puts `data` for `owner` (for small, in-memory content; stream big content through
    /// [`BlobStore::writer`]).
    ///
    /// # Errors
    /// As [`BlobStore::writer`] and [`BlobWriter::finish`].
    pub async fn put(
        &self,
        owner: PeerId,
        data: &[u8],
        options: PutOptions,
        now: UnixMillis,
    ) -> Result<Stored, BlobError> {
        let mut w = self.writer(owner, options, Some(data.len() as u64)).await?;
        w.write(data).await?;
        w.finish(now).await
    }

    /// An importer of the blob `manifest` describes, for `owner` (a transfer from a peer).
    /// Chunks the store already has are counted as received at once.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`] or [`BlobError::OwnerQuota`], or the storage's error.
    pub async fn importer(
        &self,
        manifest: Manifest,
        owner: PeerId,
        options: PutOptions,
    ) -> Result<BlobWriter, BlobError> {
        let owner_used = self.owner_usage(&owner).await?.bytes;
        let already_held = self
            .inner
            .kv
            .get(HOLDS_TABLE, &hold_key(&manifest.id(), &owner))
            .await?
            .is_some();
        let count = manifest.count() as usize;
        let mut by_hash: HashMap<Hash256, Vec<u32>> = HashMap::new();
        for (i, h) in (0u32..).zip(manifest.hashes()) {
            by_hash.entry(*h).or_default().push(i);
        }
        let mut w = BlobWriter {
            store: self.clone(),
            session: self.new_session(),
            owner,
            options,
            owner_used,
            mode: Mode::Import {
                manifest: Arc::new(manifest),
                have: vec![false; count],
                missing: u32::try_from(count).unwrap_or(u32::MAX),
                by_hash,
            },
            batch: Vec::new(),
            registered: HashSet::new(),
            written: HashSet::new(),
            already_held,
            finished: false,
            live: true,
        };
        if let Mode::Import { manifest, .. } = &w.mode {
            let size = manifest.size();
            w.check_size(size)?;
        }
        w.mark_stored_chunks().await?;
        Ok(w)
    }

    /// Changes `owner`'s hold on a blob (expiry and pin).
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when `owner` holds no such blob, or the storage's error.
    pub async fn set_hold(
        &self,
        id: &BlobId,
        owner: &PeerId,
        options: PutOptions,
    ) -> Result<(), BlobError> {
        let _meta = self.inner.meta.lock().await;
        let key = hold_key(id, owner);
        let old = self
            .inner
            .kv
            .get(HOLDS_TABLE, &key)
            .await?
            .ok_or(BlobError::NotFound(*id))?;
        let old = decode_hold(*owner, &old).ok_or(BlobError::CorruptMetadata(HOLDS_TABLE))?;
        let new = Hold {
            expires_at: options.expires_at,
            pinned: options.pinned,
            ..old
        };
        let mut batch = Batch::new();
        if let Some(k) = expiry_row(&old, id) {
            batch.delete(EXPIRY_TABLE, k);
        }
        if let Some(k) = expiry_row(&new, id) {
            batch.put(EXPIRY_TABLE, k, Vec::new());
        }
        batch.put(HOLDS_TABLE, key, encode_hold(&new));
        self.inner.kv.apply(batch).await?;
        Ok(())
    }

    /// Removes `owner`'s hold; the blob goes with its last hold. Returns whether there was a
    /// hold.
    ///
    /// # Errors
    /// The storage's error.
    pub async fn delete(&self, id: &BlobId, owner: &PeerId) -> Result<bool, BlobError> {
        let _meta = self.inner.meta.lock().await;
        let mut report = GcReport::default();
        let removed = self.remove_hold_locked(id, owner, &mut report).await?;
        self.inner.metrics.gc(&report);
        Ok(removed)
    }

    /// Removes a hold (and the blob with its last hold) in one batch. Under the meta lock.
    async fn remove_hold_locked(
        &self,
        id: &BlobId,
        owner: &PeerId,
        report: &mut GcReport,
    ) -> Result<bool, BlobError> {
        let kv = &self.inner.kv;
        let key = hold_key(id, owner);
        let Some(old) = kv.get(HOLDS_TABLE, &key).await? else {
            return Ok(false);
        };
        let old = decode_hold(*owner, &old).ok_or(BlobError::CorruptMetadata(HOLDS_TABLE))?;
        let m = self.manifest(id).await?;
        let size = m.as_ref().map_or(0, |m| m.size());
        let mut batch = Batch::new();
        batch.delete(HOLDS_TABLE, key);
        if let Some(k) = expiry_row(&old, id) {
            batch.delete(EXPIRY_TABLE, k);
        }
        let mut ou = self.owner_usage(owner).await?;
        ou.bytes = ou.bytes.saturating_sub(size);
        ou.blobs = ou.blobs.saturating_sub(1);
        if ou.blobs == 0 {
            batch.delete(OWNERS_TABLE, owner.as_bytes().to_vec());
        } else {
            batch.put(OWNERS_TABLE, owner.as_bytes().to_vec(), encode_owner(&ou));
        }
        let others = kv
            .range(
                HOLDS_TABLE,
                KeyRange::prefix(id.as_bytes()),
                Direction::Forward,
                2,
            )
            .await?
            .into_iter()
            .filter(|(k, _)| k.get(32..) != Some(owner.as_bytes().as_slice()))
            .count();
        let mut totals = self.usage();
        let before = totals;
        let mut freed = (0, 0);
        if others == 0
            && let Some(m) = &m
        {
            freed = self.release_chunks(m, &mut batch, &mut totals).await?;
            batch.delete(MANIFESTS_TABLE, id.as_bytes().to_vec());
            totals.blobs = totals.blobs.saturating_sub(1);
            batch.put(TOTALS_TABLE, TOTALS_KEY, encode_usage(&totals));
        }
        kv.apply(batch).await?;
        if others == 0 && m.is_some() {
            let mut st = self.state();
            st.totals = totals;
            st.epoch += 1;
            st.manifests.retain(|c| c.id() != *id);
            drop(st);
            self.inner.metrics.usage_changed(&before, &totals);
            report.blobs_removed += 1;
            report.chunks_removed += freed.0;
            report.bytes_freed += freed.1;
        }
        Ok(true)
    }

    /// Drops one reference per occurrence of each chunk of `m`; chunks left without a
    /// reference are deleted unless a live writer registered them. Returns (chunks deleted,
    /// bytes no longer counted as stored).
    async fn release_chunks(
        &self,
        m: &Manifest,
        batch: &mut Batch,
        totals: &mut Usage,
    ) -> Result<(u64, u64), BlobError> {
        let mut freed = (0, 0);
        for (hash, (occurrences, len)) in distinct_chunks(m) {
            let refs = self.refs(&hash).await?;
            if refs > occurrences {
                batch.put(
                    REFS_TABLE,
                    hash.as_bytes().to_vec(),
                    (refs - occurrences).to_le_bytes().to_vec(),
                );
                continue;
            }
            batch.delete(REFS_TABLE, hash.as_bytes().to_vec());
            totals.stored_bytes = totals.stored_bytes.saturating_sub(len as u64);
            totals.chunks = totals.chunks.saturating_sub(1);
            freed.1 += len as u64;
            if self.state().pending_chunks.contains_key(&hash) {
                // A live writer needs it: keep it, listed where GC looks again.
                batch.put(PENDING_TABLE, orphan_key(&hash), hash.as_bytes().to_vec());
            } else {
                batch.delete(CHUNKS_TABLE, hash.as_bytes().to_vec());
                freed.0 += 1;
            }
        }
        Ok(freed)
    }

    async fn refs(&self, hash: &Hash256) -> Result<u64, BlobError> {
        match self.inner.kv.get(REFS_TABLE, hash.as_bytes()).await? {
            Some(v) => <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| BlobError::CorruptMetadata(REFS_TABLE)),
            None => Ok(0),
        }
    }

    /// One step of garbage collection: removes holds expired at `now` (and the blobs and
    /// chunks they kept), then what interrupted puts left, doing at most about `budget`
    /// units of work (a hold, a chunk reference or a pending row each count one; one blob is
    /// always removed whole, so a step may go over by one blob's chunks). Call it again while
    /// [`GcReport::done`] is false.
    ///
    /// # Errors
    /// The storage's error; what was done before it stays done.
    pub async fn gc(&self, now: UnixMillis, budget: usize) -> Result<GcReport, BlobError> {
        let _meta = self.inner.meta.lock().await;
        let mut report = GcReport::default();
        let budget = budget.max(1);
        let mut work = 0usize;
        let result = self.gc_locked(now, budget, &mut work, &mut report).await;
        self.inner.metrics.gc(&report);
        result?;
        report.done = work < budget;
        Ok(report)
    }

    async fn gc_locked(
        &self,
        now: UnixMillis,
        budget: usize,
        work: &mut usize,
        report: &mut GcReport,
    ) -> Result<(), BlobError> {
        let kv = &self.inner.kv;
        // Expired holds, earliest first.
        let due = KeyRange {
            start: Bound::Unbounded,
            end: Bound::Excluded(now.0.saturating_add(1).to_be_bytes().to_vec()),
        };
        while *work < budget {
            let rows = kv
                .range(
                    EXPIRY_TABLE,
                    due.clone(),
                    Direction::Forward,
                    (budget - *work).min(PAGE),
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for (k, _) in rows {
                *work += 1;
                let parsed = (k.len() == 8 + 32 + 32).then(|| {
                    (
                        BlobId::from_slice(&k[8..40]),
                        <[u8; 32]>::try_from(&k[40..72]),
                    )
                });
                let Some((Some(id), Ok(owner))) = parsed else {
                    kv.delete(EXPIRY_TABLE, &k).await?;
                    continue;
                };
                let owner = PeerId::from_bytes_unvalidated(owner);
                let chunks = self.manifest(&id).await?.map_or(0, |m| m.count() as usize);
                let before = report.blobs_removed;
                if self.remove_hold_locked(&id, &owner, report).await? {
                    report.holds_expired += 1;
                } else {
                    // An index row without its hold: drop it.
                    kv.delete(EXPIRY_TABLE, &k).await?;
                }
                if report.blobs_removed > before {
                    *work += chunks;
                }
                if *work >= budget {
                    return Ok(());
                }
            }
        }
        // Rows of puts no live writer owns (interrupted, or from before a restart).
        while *work < budget {
            let cursor = self.state().gc_cursor.clone();
            let range = KeyRange {
                start: cursor.map_or(Bound::Unbounded, Bound::Excluded),
                end: Bound::Unbounded,
            };
            let limit = (budget - *work).min(PAGE);
            let rows = kv
                .range(PENDING_TABLE, range, Direction::Forward, limit)
                .await?;
            let exhausted = rows.len() < limit;
            let mut batch = Batch::new();
            let mut dead_chunks = Vec::new();
            for (k, v) in &rows {
                *work += 1;
                let session = k
                    .get(..SESSION_LEN)
                    .and_then(|s| <[u8; SESSION_LEN]>::try_from(s).ok());
                if session.is_some_and(|s| self.state().sessions.contains(&s)) {
                    continue;
                }
                let hash = hash_from(v);
                if hash.is_some_and(|h| self.state().pending_chunks.contains_key(&h)) {
                    // A live writer registered this chunk too: the row stays, so that the
                    // chunk is looked at again once that writer is gone.
                    continue;
                }
                batch.delete(PENDING_TABLE, k.clone());
                report.pending_removed += 1;
                if let Some(h) = hash {
                    dead_chunks.push(h);
                }
            }
            for h in dead_chunks {
                if self.refs(&h).await? == 0 {
                    batch.delete(CHUNKS_TABLE, h.as_bytes().to_vec());
                    report.chunks_removed += 1;
                }
            }
            if !batch.is_empty() {
                kv.apply(batch).await?;
            }
            self.state().gc_cursor = if exhausted {
                None
            } else {
                rows.last().map(|(k, _)| k.clone())
            };
            if exhausted {
                break;
            }
        }
        Ok(())
    }

    /// Forgets a writer: its session and the chunks it registered.
    fn unregister(&self, session: &[u8; SESSION_LEN], registered: &HashSet<Hash256>) {
        let mut st = self.state();
        st.sessions.remove(session);
        for h in registered {
            if let Some(n) = st.pending_chunks.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    st.pending_chunks.remove(h);
                }
            }
        }
    }

    /// Removes a writer's pending rows and the chunks only it kept. Under the meta lock, after
    /// [`BlobStore::unregister`].
    async fn discard_locked(&self, session: &[u8; SESSION_LEN]) -> Result<(), BlobError> {
        let kv = &self.inner.kv;
        let mut range = KeyRange::prefix(session);
        loop {
            let rows = kv
                .range(PENDING_TABLE, range.clone(), Direction::Forward, PAGE)
                .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            range.start = Bound::Excluded(last.clone());
            let full = rows.len() == PAGE;
            let mut batch = Batch::new();
            for (k, v) in rows {
                if let Some(h) = hash_from(&v)
                    && self.refs(&h).await? == 0
                {
                    if self.state().pending_chunks.contains_key(&h) {
                        // Another live writer registered it: keep it, listed for GC.
                        batch.put(PENDING_TABLE, orphan_key(&h), h.as_bytes().to_vec());
                    } else {
                        batch.delete(CHUNKS_TABLE, h.as_bytes().to_vec());
                    }
                }
                batch.delete(PENDING_TABLE, k);
            }
            kv.apply(batch).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Commits a finished writer's blob. Under no lock; takes the meta lock.
    async fn commit(
        &self,
        manifest: &Manifest,
        w: &mut BlobWriter,
        now: UnixMillis,
    ) -> Result<Stored, BlobError> {
        let _meta = self.inner.meta.lock().await;
        match self.commit_locked(manifest, w, now).await {
            Ok(s) => {
                w.release();
                self.inner
                    .metrics
                    .put(if s.duplicate { "duplicate" } else { "stored" });
                Ok(s)
            }
            Err(e) => {
                w.release();
                self.inner.metrics.put(match e {
                    BlobError::OwnerQuota { .. } | BlobError::TotalQuota { .. } => "quota",
                    _ => "failed",
                });
                // Best effort: what is left is removed by the next GC.
                if let Err(d) = self.discard_locked(&w.session).await {
                    tracing::debug!(error = %d, "discarding a refused put failed");
                }
                Err(e)
            }
        }
    }

    async fn commit_locked(
        &self,
        m: &Manifest,
        w: &BlobWriter,
        now: UnixMillis,
    ) -> Result<Stored, BlobError> {
        let kv = &self.inner.kv;
        let cfg = &self.inner.config;
        let id = m.id();
        let key = hold_key(&id, &w.owner);
        let old_hold = match kv.get(HOLDS_TABLE, &key).await? {
            Some(v) => {
                Some(decode_hold(w.owner, &v).ok_or(BlobError::CorruptMetadata(HOLDS_TABLE))?)
            }
            None => None,
        };
        let mut batch = Batch::new();
        let mut ou = self.owner_usage(&w.owner).await?;
        if old_hold.is_none() {
            if ou.bytes.saturating_add(m.size()) > cfg.owner_quota {
                return Err(BlobError::OwnerQuota {
                    used: ou.bytes,
                    size: m.size(),
                    quota: cfg.owner_quota,
                });
            }
            ou.bytes += m.size();
            ou.blobs += 1;
            batch.put(OWNERS_TABLE, w.owner.as_bytes().to_vec(), encode_owner(&ou));
        }
        let hold = Hold {
            owner: w.owner,
            expires_at: w.options.expires_at,
            pinned: w.options.pinned,
            created_at: old_hold.map_or(now, |h| h.created_at),
        };
        if let Some(k) = old_hold.as_ref().and_then(|h| expiry_row(h, &id)) {
            batch.delete(EXPIRY_TABLE, k);
        }
        if let Some(k) = expiry_row(&hold, &id) {
            batch.put(EXPIRY_TABLE, k, Vec::new());
        }
        batch.put(HOLDS_TABLE, key, encode_hold(&hold));
        let before = self.usage();
        let mut totals = before;
        let duplicate = kv.get(MANIFESTS_TABLE, id.as_bytes()).await?.is_some();
        let mut new_bytes = 0u64;
        if !duplicate {
            let mut new_chunks = 0u64;
            for (hash, (occurrences, len)) in distinct_chunks(m) {
                let refs = self.refs(&hash).await?;
                if refs == 0 {
                    new_bytes += len as u64;
                    new_chunks += 1;
                }
                batch.put(
                    REFS_TABLE,
                    hash.as_bytes().to_vec(),
                    (refs + occurrences).to_le_bytes().to_vec(),
                );
            }
            if totals.stored_bytes.saturating_add(new_bytes) > cfg.total_quota {
                return Err(BlobError::TotalQuota {
                    used: totals.stored_bytes,
                    needed: new_bytes,
                    quota: cfg.total_quota,
                });
            }
            totals.stored_bytes += new_bytes;
            totals.chunks += new_chunks;
            totals.blobs += 1;
            batch.put(MANIFESTS_TABLE, id.as_bytes().to_vec(), m.encode());
            batch.put(TOTALS_TABLE, TOTALS_KEY, encode_usage(&totals));
        }
        for index in 0..m.count() {
            batch.delete(PENDING_TABLE, pending_key(&w.session, index));
        }
        kv.apply(batch).await?;
        self.state().totals = totals;
        self.inner.metrics.usage_changed(&before, &totals);
        Ok(Stored {
            id,
            size: m.size(),
            chunks: m.count(),
            new_bytes,
            duplicate,
        })
    }
}

enum Mode {
    Stream {
        /// The chunk being filled.
        buf: Vec<u8>,
        hashes: Vec<Hash256>,
        size: u64,
    },
    Import {
        manifest: Arc<Manifest>,
        have: Vec<bool>,
        missing: u32,
        by_hash: HashMap<Hash256, Vec<u32>>,
    },
}

/// A put in progress (from [`BlobStore::writer`] or [`BlobStore::importer`]). Nothing of it is
/// visible until [`BlobWriter::finish`]; dropped unfinished, it leaves rows the next GC
/// removes ([`BlobWriter::abort`] removes them at once).
pub struct BlobWriter {
    store: BlobStore,
    session: [u8; SESSION_LEN],
    owner: PeerId,
    options: PutOptions,
    owner_used: u64,
    mode: Mode,
    /// Chunks waiting to be written: (index, hash, bytes).
    batch: Vec<(u32, Hash256, Vec<u8>)>,
    /// Distinct chunks this writer registered with the store.
    registered: HashSet<Hash256>,
    /// Distinct chunks this writer has written (or found stored).
    written: HashSet<Hash256>,
    /// An import of a blob the owner already holds.
    already_held: bool,
    /// No more writes (committed, aborted, or refused).
    finished: bool,
    /// Its session and chunks are still registered with the store (until the commit or the
    /// abort is complete, or the writer is dropped, whichever comes first: a cancelled
    /// `finish` or `abort` is covered by the drop).
    live: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("owner", &self.owner)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    fn check_size(&self, size: u64) -> Result<(), BlobError> {
        let cfg = &self.store.inner.config;
        if size > cfg.max_blob_size {
            return Err(BlobError::TooLarge {
                size,
                max: cfg.max_blob_size,
            });
        }
        // An import of a blob the owner already holds costs the owner nothing more (the
        // commit checks again, exactly).
        if !self.already_held && self.owner_used.saturating_add(size) > cfg.owner_quota {
            return Err(BlobError::OwnerQuota {
                used: self.owner_used,
                size,
                quota: cfg.owner_quota,
            });
        }
        Ok(())
    }

    /// Bytes written so far (a stream) or the blob's size (an import).
    pub fn size(&self) -> u64 {
        match &self.mode {
            Mode::Stream { size, .. } => *size,
            Mode::Import { manifest, .. } => manifest.size(),
        }
    }

    /// Appends `data` to a streaming put.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`] or [`BlobError::OwnerQuota`] once the blob grows over the
    /// limits (the put is then abandoned, and what it wrote removed); [`BlobError::Finished`]
    /// on an importer or a finished writer; the storage's error.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        if self.finished {
            return Err(BlobError::Finished);
        }
        let chunk_size = self.store.inner.config.chunk_size as usize;
        let Mode::Stream { size, .. } = &mut self.mode else {
            return Err(BlobError::Finished);
        };
        *size += data.len() as u64;
        let new_size = *size;
        if let Err(e) = self.check_size(new_size) {
            self.store.inner.metrics.put(match e {
                BlobError::TooLarge { .. } => "too_large",
                _ => "quota",
            });
            self.abort_inner().await;
            return Err(e);
        }
        while !data.is_empty() {
            let Mode::Stream { buf, hashes, .. } = &mut self.mode else {
                return Err(BlobError::Finished);
            };
            if buf.capacity() == 0 {
                buf.reserve_exact(chunk_size);
            }
            let take = (chunk_size - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == chunk_size {
                let chunk = std::mem::take(buf);
                let hash = chunk_hash(&chunk);
                let index = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
                hashes.push(hash);
                self.batch.push((index, hash, chunk));
                if self.batch.len() >= WRITE_BATCH_CHUNKS {
                    self.flush_or_abort().await?;
                }
            }
        }
        Ok(())
    }

    /// For an import: whether chunk `index` is in.
    pub fn has_chunk(&self, index: u32) -> bool {
        match &self.mode {
            Mode::Import { have, .. } => have.get(index as usize).copied().unwrap_or(false),
            Mode::Stream { .. } => false,
        }
    }

    /// For an import: the first chunk at or after `from` still missing.
    pub fn next_missing(&self, from: u32) -> Option<u32> {
        match &self.mode {
            Mode::Import { have, .. } => (from as usize..have.len())
                .find(|&i| !have[i])
                .and_then(|i| u32::try_from(i).ok()),
            Mode::Stream { .. } => None,
        }
    }

    /// For an import: chunks still missing.
    pub fn missing(&self) -> u32 {
        match &self.mode {
            Mode::Import { missing, .. } => *missing,
            Mode::Stream { .. } => 0,
        }
    }

    /// For an import: the manifest.
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.mode {
            Mode::Import { manifest, .. } => Some(manifest),
            Mode::Stream { .. } => None,
        }
    }

    /// Marks the chunks the store already has as received (an import's dedup).
    async fn mark_stored_chunks(&mut self) -> Result<(), BlobError> {
        let Mode::Import { by_hash, .. } = &self.mode else {
            return Ok(());
        };
        let hashes: Vec<Hash256> = by_hash.keys().copied().collect();
        let store = self.store.clone();
        let meta = store.inner.meta.lock().await;
        for h in hashes {
            if store.refs(&h).await? > 0 {
                self.register(h);
                self.written.insert(h);
                self.mark_have(h, None);
            }
        }
        drop(meta);
        // Their pending rows now, not with the first chunk: GC must be able to find them
        // even if no chunk ever arrives.
        self.flush_or_abort().await
    }

    fn register(&mut self, h: Hash256) {
        if self.registered.insert(h) {
            *self.store.state().pending_chunks.entry(h).or_insert(0) += 1;
        }
    }

    /// Marks every index of `h` as in; queues a pending row for each (with the bytes on the
    /// first, if given).
    fn mark_have(&mut self, h: Hash256, mut bytes: Option<Vec<u8>>) {
        let Mode::Import {
            have,
            missing,
            by_hash,
            ..
        } = &mut self.mode
        else {
            return;
        };
        for &i in by_hash.get(&h).map(Vec::as_slice).unwrap_or_default() {
            if !have[i as usize] {
                have[i as usize] = true;
                *missing -= 1;
                self.batch.push((i, h, bytes.take().unwrap_or_default()));
            }
        }
    }

    /// For an import: chunk `index`, checked against the manifest before it is kept. Returns
    /// whether it was new.
    ///
    /// # Errors
    /// [`BlobError::ChunkMismatch`] for a chunk that is not the manifest's (nothing is kept),
    /// [`BlobError::OutOfRange`] for an index past the end, [`BlobError::Finished`] on a
    /// streaming writer or a finished one, the storage's error.
    pub async fn write_chunk(&mut self, index: u32, bytes: Vec<u8>) -> Result<bool, BlobError> {
        if self.finished {
            return Err(BlobError::Finished);
        }
        let Mode::Import { manifest, have, .. } = &self.mode else {
            return Err(BlobError::Finished);
        };
        let Some(&expected) = manifest.hashes().get(index as usize) else {
            return Err(out_of_range(manifest, index));
        };
        if have[index as usize] {
            return Ok(false);
        }
        if bytes.len() != manifest.chunk_len(index) || chunk_hash(&bytes) != expected {
            return Err(BlobError::ChunkMismatch { index });
        }
        self.mark_have(expected, Some(bytes));
        if self.batch.len() >= WRITE_BATCH_CHUNKS {
            self.flush_or_abort().await?;
        }
        Ok(true)
    }

    /// [`BlobWriter::flush`], abandoning the put if it fails: what was queued is gone, so the
    /// writer could only commit a blob with chunks missing.
    async fn flush_or_abort(&mut self) -> Result<(), BlobError> {
        if let Err(e) = self.flush().await {
            self.abort_inner().await;
            return Err(e);
        }
        Ok(())
    }

    /// Writes the queued chunks and their pending rows now, so that only they hold what
    /// this writer has (a transfer keeping an unfinished import calls it).
    ///
    /// # Errors
    /// The storage's error; the put is then abandoned.
    pub async fn sync(&mut self) -> Result<(), BlobError> {
        if self.finished {
            return Err(BlobError::Finished);
        }
        self.flush_or_abort().await
    }

    /// Changes how the owner will hold the blob once committed.
    pub fn set_options(&mut self, options: PutOptions) {
        self.options = options;
    }

    /// Writes the queued chunks and their pending rows. Chunks already stored are not
    /// written again.
    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.batch);
        let store = self.store.clone();
        let mut batch = Batch::new();
        {
            // Registering and checking under the meta lock: GC then either finished deleting
            // a chunk before (and we write it) or sees it registered (and keeps it).
            let _meta = store.inner.meta.lock().await;
            for (index, hash, bytes) in entries {
                self.register(hash);
                if !bytes.is_empty()
                    && !self.written.contains(&hash)
                    && store.refs(&hash).await? == 0
                {
                    batch.put(CHUNKS_TABLE, hash.as_bytes().to_vec(), bytes);
                }
                self.written.insert(hash);
                batch.put(
                    PENDING_TABLE,
                    pending_key(&self.session, index),
                    hash.as_bytes().to_vec(),
                );
            }
        }
        store.inner.kv.apply(batch).await?;
        Ok(())
    }

    /// Writes what is left and commits the blob: from here on it is visible, in one atomic
    /// step. A streaming writer's blob is what was written; an import must have every chunk.
    ///
    /// # Errors
    /// [`BlobError::Incomplete`] for an import with chunks missing (the writer stays usable);
    /// [`BlobError::OwnerQuota`] or [`BlobError::TotalQuota`] (the put is abandoned and what
    /// it wrote removed); [`BlobError::Finished`]; the storage's error.
    pub async fn finish(&mut self, now: UnixMillis) -> Result<Stored, BlobError> {
        if self.finished {
            return Err(BlobError::Finished);
        }
        let chunk_size = self.store.inner.config.chunk_size;
        let manifest = match &mut self.mode {
            Mode::Stream { buf, hashes, size } => {
                if !buf.is_empty() {
                    let chunk = std::mem::take(buf);
                    let hash = chunk_hash(&chunk);
                    let index = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
                    hashes.push(hash);
                    self.batch.push((index, hash, chunk));
                }
                debug_assert_eq!(chunk_count(*size, chunk_size), hashes.len() as u64);
                Manifest::new(*size, chunk_size, std::mem::take(hashes))?
            }
            Mode::Import {
                manifest, missing, ..
            } => {
                if *missing > 0 {
                    return Err(BlobError::Incomplete { missing: *missing });
                }
                Manifest::clone(manifest)
            }
        };
        self.flush_or_abort().await?;
        self.finished = true;
        self.store.clone().commit(&manifest, self, now).await
    }

    /// Abandons the put and removes what it wrote.
    ///
    /// # Errors
    /// The storage's error (what is left is then removed by the next GC).
    pub async fn abort(mut self) -> Result<(), BlobError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let store = self.store.clone();
        let _meta = store.inner.meta.lock().await;
        self.release();
        store.inner.metrics.put("aborted");
        store.discard_locked(&self.session).await
    }

    /// Unregisters the session and its chunks from the store, once.
    fn release(&mut self) {
        if self.live {
            self.live = false;
            self.store.unregister(&self.session, &self.registered);
        }
    }

    async fn abort_inner(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.batch.clear();
        let store = self.store.clone();
        let _meta = store.inner.meta.lock().await;
        self.release();
        if let Err(e) = store.discard_locked(&self.session).await {
            tracing::debug!(error = %e, "discarding an abandoned put failed");
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished, its rows stay until the next GC, which no longer sees this session as
        // live.
        self.release();
    }
}

/// Reads a blob (or a range of it) one chunk at a time, each checked against its hash.
#[derive(Debug)]
pub struct BlobReader {
    store: BlobStore,
    manifest: Arc<Manifest>,
    /// Next byte to return.
    pos: u64,
    end: u64,
}

impl BlobReader {
    fn new(store: BlobStore, manifest: Arc<Manifest>, range: Range<u64>) -> Self {
        Self {
            store,
            manifest,
            pos: range.start,
            end: range.end,
        }
    }

    /// The blob's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes left to read.
    pub const fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// The next piece (at most one chunk), or `None` at the end of the range.
    ///
    /// # Errors
    /// [`BlobError::Corrupt`] for a chunk that fails its hash, [`BlobError::MissingChunk`]
    /// for one removed meanwhile, or the storage's error.
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, BlobError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let cs = u64::from(self.manifest.chunk_size());
        let index = u32::try_from(self.pos / cs).map_err(|_| BlobError::BadManifest("index"))?;
        let start = u64::from(index) * cs;
        let mut chunk = self.store.read_chunk(&self.manifest, index).await?;
        #[allow(clippy::cast_possible_truncation)] // within one chunk
        let (from, to) = (
            (self.pos - start) as usize,
            (self.end.min(start + cs) - start) as usize,
        );
        if from > 0 || to < chunk.len() {
            chunk = chunk[from..to].to_vec();
        }
        self.pos = start + to as u64;
        Ok(Some(chunk))
    }

    /// Everything left, in memory.
    ///
    /// # Errors
    /// As [`BlobReader::next_piece`].
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, BlobError> {
        let mut out = Vec::with_capacity(usize::try_from(self.remaining()).unwrap_or(0));
        while let Some(piece) = self.next_piece().await? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }
}
