//! The 256-bit key space: keys, XOR distance, bucket indices.

use mesh_crypto::PeerId;

/// Bits in a key.
pub const KEY_BITS: usize = 256;

/// A point in the key space: BLAKE2b-256 of a `PeerId` for nodes, of the record name for
/// records.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// XOR distance between two keys; compares as a 256-bit big-endian number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Distance(pub [u8; 32]);

impl Key {
    /// The key of a node: BLAKE2b-256 of its `PeerId`.
    pub fn of_peer(peer: &PeerId) -> Self {
        Self(peer.dht_key().0)
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Self) -> Distance {
        Distance(std::array::from_fn(|i| self.0[i] ^ other.0[i]))
    }

    /// The bucket `other` falls in as seen from `self`: 255 for keys differing in the first
    /// bit, 0 for keys differing only in the last; `None` for `self` itself.
    pub fn bucket_index(&self, other: &Self) -> Option<usize> {
        self.distance(other).bucket_index()
    }

    /// A key at a distance from `self` that falls in bucket `index`, the remaining bits taken
    /// from `random` (for bucket refresh).
    #[must_use]
    pub fn in_bucket(&self, index: usize, random: [u8; 32]) -> Self {
        let index = index.min(KEY_BITS - 1);
        // The distance has its highest set bit at position `index` (counting from the least
        // significant bit), arbitrary bits below it and zeros above.
        let top = KEY_BITS - 1 - index; // bit position from the most significant end
        let mut d = [0u8; 32];
        for bit in top..KEY_BITS {
            let byte = bit / 8;
            let mask = 0x80u8 >> (bit % 8);
            let set = bit == top || random[byte] & mask != 0;
            if set {
                d[byte] |= mask;
            }
        }
        Self(std::array::from_fn(|i| self.0[i] ^ d[i]))
    }
}

impl Distance {
    /// Index of the highest set bit (255 = the first bit), `None` for zero.
    pub fn bucket_index(&self) -> Option<usize> {
        let (byte, b) = self.0.iter().enumerate().find(|(_, b)| **b != 0)?;
        let bit_from_top = byte * 8 + b.leading_zeros() as usize;
        Some(KEY_BITS - 1 - bit_from_top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_xor_and_orders_numerically() {
        let a = Key([0; 32]);
        let mut b = [0; 32];
        b[31] = 1;
        let mut c = [0; 32];
        c[0] = 0x80;
        assert_eq!(a.bucket_index(&Key(b)), Some(0));
        assert_eq!(a.bucket_index(&Key(c)), Some(255));
        assert_eq!(a.bucket_index(&a), None);
        assert!(a.distance(&Key(b)) < a.distance(&Key(c)));
        assert_eq!(Key(b).distance(&Key(c)), Key(c).distance(&Key(b)));
    }

    #[test]
    fn keys_made_for_a_bucket_fall_in_it() {
        let local = Key([0x5a; 32]);
        for index in [0, 1, 7, 8, 9, 100, 254, 255] {
            for seed in [[0u8; 32], [0xff; 32], [0x33; 32]] {
                let k = local.in_bucket(index, seed);
                assert_eq!(local.bucket_index(&k), Some(index), "bucket {index}");
            }
        }
    }
}
