//! The Bloom filter of gossip digests, specified byte for byte in `docs/PROTOCOL.md` §12 so that
//! another implementation builds the same filters:
//!
//! ```text
//! h      = BLAKE2b-256 domain hash "mesh/gossip-bloom/v1" of (seed u64 LE || id [32])
//! h1     = u64 LE of h[0..8];  h2 = (u64 LE of h[8..16]) | 1
//! bit_i  = (h1 + i * h2) mod m      for i in 0..k   (u64 wrapping arithmetic)
//! bit b of the filter is bit (b mod 8), least significant first, of byte b / 8
//! ```
//!
//! Sizing for `n` items at false-positive rate `p`: `m = ceil(-n ln p / (ln 2)^2)` rounded up to
//! a whole byte (at least 64 bits), `k = round(m / n * ln 2)` clamped to 1..=16. The defaults
//! ([`FILTER_ITEMS`] = 1000 at [`FALSE_POSITIVE_RATE`] = 1%) give m = 9,592 bits (1,199 bytes)
//! and k = 7.
//!
//! Why not a crate: fastbloom (maintained) derives bit positions with its own internal scheme
//! that has changed between its releases, and probabilistic-collections (unmaintained since
//! 2020) likewise keeps its layout private; a wire format needs a layout fixed by a spec, and
//! the whole filter is the few lines below (see `docs/ARCHITECTURE.md`).

use mesh_crypto::hash::domain_hash;

use crate::message::MessageId;

/// Items a digest filter is sized for by default.
pub const FILTER_ITEMS: usize = 1000;
/// False-positive rate a digest filter is sized for by default.
pub const FALSE_POSITIVE_RATE: f64 = 0.01;
/// Largest filter accepted: 2^20 bits (128 KiB).
pub const MAX_FILTER_BITS: usize = 1 << 20;
/// Most hash functions accepted.
pub const MAX_HASHES: u8 = 16;

/// A Bloom filter over message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    hashes: u8,
    data: Vec<u8>,
}

impl Bloom {
    /// An empty filter sized for `items` at false-positive rate `rate` (within the limits).
    #[allow(clippy::cast_precision_loss)] // item counts far below 2^52
    pub fn for_items(items: usize, rate: f64) -> Self {
        let n = items.max(1) as f64;
        let rate = rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let m = (-n * rate.ln() / (ln2 * ln2)).ceil();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped below
        let m_bits = (m as usize).clamp(64, MAX_FILTER_BITS).div_ceil(8) * 8;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let k = ((m_bits as f64 / n) * ln2)
            .round()
            .clamp(1.0, f64::from(MAX_HASHES)) as u8;
        Self {
            hashes: k,
            data: vec![0; m_bits / 8],
        }
    }

    /// A filter from its parts, if they are within the limits.
    pub fn from_parts(hashes: u8, data: Vec<u8>) -> Option<Self> {
        let ok = (1..=MAX_HASHES).contains(&hashes)
            && !data.is_empty()
            && data.len() * 8 <= MAX_FILTER_BITS;
        ok.then_some(Self { hashes, data })
    }

    /// Number of hash functions (k).
    pub fn hashes(&self) -> u8 {
        self.hashes
    }

    /// Number of bits (m).
    pub fn bits(&self) -> u32 {
        u32::try_from(self.data.len() * 8).unwrap_or(u32::MAX)
    }

    /// The bit array.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn positions(&self, id: &MessageId, seed: u64) -> impl Iterator<Item = usize> {
        let h = domain_hash("mesh/gossip-bloom/v1", &[&seed.to_le_bytes(), &id.0]).0;
        let h1 = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let h2 = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]) | 1;
        let m = self.data.len() as u64 * 8;
        #[allow(clippy::cast_possible_truncation)] // below m, a usize
        (0..u64::from(self.hashes)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    /// Adds `id` under `seed`.
    pub fn insert(&mut self, id: &MessageId, seed: u64) {
        let positions: Vec<usize> = self.positions(id, seed).collect();
        for b in positions {
            self.data[b / 8] |= 1 << (b % 8);
        }
    }

    /// Whether `id` may have been added under `seed` (no false negatives).
    pub fn contains(&self, id: &MessageId, seed: u64) -> bool {
        self.positions(id, seed)
            .all(|b| self.data[b / 8] & (1 << (b % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> MessageId {
        MessageId(domain_hash("test", &[&i.to_le_bytes()]).0)
    }

    #[test]
    fn default_sizing_is_the_documented_one() {
        let b = Bloom::for_items(FILTER_ITEMS, FALSE_POSITIVE_RATE);
        assert_eq!((b.bits(), b.hashes()), (9592, 7));
        assert_eq!(b.as_bytes().len(), 1199);
        // Limits hold for silly requests.
        assert_eq!(Bloom::for_items(0, 0.01).bits() % 8, 0);
        assert!(Bloom::for_items(100_000_000, 1e-12).bits() as usize <= MAX_FILTER_BITS);
        assert!(Bloom::from_parts(0, vec![0; 8]).is_none());
        assert!(Bloom::from_parts(17, vec![0; 8]).is_none());
        assert!(Bloom::from_parts(3, vec![]).is_none());
        assert!(Bloom::from_parts(3, vec![0; MAX_FILTER_BITS / 8 + 1]).is_none());
    }

    #[test]
    fn no_false_negatives_and_the_false_positive_rate_is_as_sized() {
        let mut b = Bloom::for_items(1000, 0.01);
        for i in 0..1000 {
            b.insert(&id(i), 42);
        }
        assert!((0..1000).all(|i| b.contains(&id(i), 42)));
        let fp = (1000..101_000).filter(|&i| b.contains(&id(i), 42)).count();
        // 1% of 100,000 expected; allow for chance.
        assert!((700..1300).contains(&fp), "{fp} false positives in 100,000");
        // Another seed gives other positions: the same id is rarely a false positive twice.
        let mut other = Bloom::for_items(1000, 0.01);
        for i in 0..1000 {
            other.insert(&id(i), 43);
        }
        let both = (1000..101_000)
            .filter(|&i| b.contains(&id(i), 42) && other.contains(&id(i), 43))
            .count();
        assert!(both < 30, "{both} false positives under both seeds");
    }

    #[test]
    fn the_bit_layout_matches_the_specification() {
        // One id in a 64-bit filter with 3 hashes: the bits follow the formula in the module
        // docs, computed here independently of `positions`.
        let mut b = Bloom::from_parts(3, vec![0; 8]).unwrap();
        let id = MessageId([0xab; 32]);
        b.insert(&id, 7);
        let h = domain_hash("mesh/gossip-bloom/v1", &[&7u64.to_le_bytes(), &[0xab; 32]]).0;
        let h1 = u64::from_le_bytes(h[0..8].try_into().unwrap());
        let h2 = u64::from_le_bytes(h[8..16].try_into().unwrap()) | 1;
        let mut expected = [0u8; 8];
        for i in 0..3u64 {
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) % 64) as usize;
            expected[bit / 8] |= 1 << (bit % 8);
        }
        assert_eq!(b.as_bytes(), expected);
    }
}
