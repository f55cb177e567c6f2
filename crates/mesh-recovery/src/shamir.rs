//! Shamir secret sharing over GF(256) of a 32-byte secret, through the `blahaj` crate (the
//! maintained fork of `sharks`, without RUSTSEC-2024-0398), with the checks around it that a
//! recovery needs: `1 <= k <= n <= 255`, distinct share indices, and a refusal, never garbage,
//! when fewer than `k` distinct shares are given.

use blahaj::{Share as RawShare, Sharks};
use zeroize::{Zeroize, Zeroizing};

/// Length of the shared secret (an identity seed).
pub const SECRET_LEN: usize = 32;

/// One share: its index `x` (1..=255) and the 32 evaluations `y`. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The index (the point the polynomials are evaluated at); never 0.
    pub x: u8,
    /// The value of each byte's polynomial at `x`.
    pub y: [u8; SECRET_LEN],
}

impl Drop for Share {
    fn drop(&mut self) {
        self.y.zeroize();
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share {{ x: {}, .. }}", self.x)
    }
}

/// A threshold given as a wider integer (by an application, or through a language binding),
/// checked against the number of guardians: from 1 to `guardians`, and at most 255.
///
/// # Errors
/// [`ThresholdOutOfRange`], which names the allowed range.
pub fn threshold(threshold: u32, guardians: usize) -> Result<u8, ThresholdOutOfRange> {
    u8::try_from(threshold)
        .ok()
        .filter(|k| *k >= 1 && usize::from(*k) <= guardians)
        .ok_or(ThresholdOutOfRange {
            threshold,
            guardians,
        })
}

/// A threshold outside 1 to the number of guardians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("threshold {threshold}: 1 to the number of guardians ({guardians}), at most 255")]
pub struct ThresholdOutOfRange {
    /// The threshold asked for.
    pub threshold: u32,
    /// The number of guardians.
    pub guardians: usize,
}

/// Errors of splitting and combining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// `k` or `n` out of range.
    #[error("threshold {k} of {n}: need 1 <= k <= n <= 255")]
    BadThreshold {
        /// Threshold.
        k: u8,
        /// Shares.
        n: u8,
    },
    /// Fewer distinct shares than the threshold.
    #[error("{have} distinct shares, {need} needed")]
    NotEnoughShares {
        /// Distinct shares given.
        have: usize,
        /// The threshold.
        need: u8,
    },
    /// A share with index 0 (which would be the secret itself) or two different shares with
    /// the same index.
    #[error("invalid or conflicting share index {0}")]
    BadIndex(u8),
}

/// Splits `secret` into `n` shares with indices 1..=n, any `k` of which rebuild it.
///
/// # Errors
/// [`ShamirError::BadThreshold`].
pub fn split(secret: &[u8; SECRET_LEN], k: u8, n: u8) -> Result<Vec<Share>, ShamirError> {
    if k == 0 || n == 0 || k > n {
        return Err(ShamirError::BadThreshold { k, n });
    }
    Ok(Sharks(k)
        .dealer(secret)
        .take(usize::from(n))
        .map(|raw| {
            let mut bytes = Zeroizing::new(Vec::from(&raw));
            let mut y = [0u8; SECRET_LEN];
            y.copy_from_slice(&bytes[1..=SECRET_LEN]);
            let x = bytes[0];
            bytes.zeroize();
            Share { x, y }
        })
        .collect())
}

/// Rebuilds the secret from at least `k` shares with distinct indices (extra shares are used
/// too: with consistent shares the result is the same).
///
/// # Errors
/// [`ShamirError::NotEnoughShares`] with fewer than `k` distinct indices;
/// [`ShamirError::BadIndex`] for index 0 or two different shares at one index.
pub fn combine(shares: &[Share], k: u8) -> Result<Zeroizing<[u8; SECRET_LEN]>, ShamirError> {
    if k == 0 {
        return Err(ShamirError::BadThreshold { k, n: 0 });
    }
    let mut distinct: Vec<&Share> = Vec::new();
    for s in shares {
        if s.x == 0 {
            return Err(ShamirError::BadIndex(0));
        }
        match distinct.iter().find(|d| d.x == s.x) {
            Some(d) if d.y != s.y => return Err(ShamirError::BadIndex(s.x)),
            Some(_) => {}
            None => distinct.push(s),
        }
    }
    if distinct.len() < usize::from(k) {
        return Err(ShamirError::NotEnoughShares {
            have: distinct.len(),
            need: k,
        });
    }
    let raw: Vec<RawShare> = distinct
        .iter()
        .filter_map(|s| {
            let mut bytes = Zeroizing::new(Vec::with_capacity(1 + SECRET_LEN));
            bytes.push(s.x);
            bytes.extend_from_slice(&s.y);
            RawShare::try_from(bytes.as_slice()).ok()
        })
        .collect();
    let out = Sharks(k)
        .recover(raw.iter())
        .map_err(|_| ShamirError::NotEnoughShares {
            have: distinct.len(),
            need: k,
        })?;
    let out = Zeroizing::new(out);
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    if out.len() != SECRET_LEN {
        return Err(ShamirError::NotEnoughShares {
            have: distinct.len(),
            need: k,
        });
    }
    secret.copy_from_slice(&out);
    Ok(secret)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_threshold_is_one_to_the_number_of_guardians() {
        assert_eq!(threshold(1, 1), Ok(1));
        assert_eq!(threshold(3, 5), Ok(3));
        assert_eq!(threshold(255, 300), Ok(255));
        for (k, n) in [(0, 3), (4, 3), (256, 300), (u32::MAX, 5), (1, 0)] {
            let e = threshold(k, n).unwrap_err();
            assert_eq!((e.threshold, e.guardians), (k, n));
        }
        assert_eq!(
            threshold(4, 3).unwrap_err().to_string(),
            "threshold 4: 1 to the number of guardians (3), at most 255"
        );
    }

    #[test]
    fn limits() {
        let s = [7u8; 32];
        assert!(split(&s, 0, 3).is_err());
        assert!(split(&s, 4, 3).is_err());
        assert!(split(&s, 1, 0).is_err());
        assert_eq!(split(&s, 255, 255).unwrap().len(), 255);
        let one = split(&s, 1, 1).unwrap();
        assert_eq!(*combine(&one, 1).unwrap(), s);
        let shares = split(&s, 3, 5).unwrap();
        assert!((1..=5).eq(shares.iter().map(|s| s.x)), "indices 1..=n");
        assert_eq!(
            combine(&shares[..2], 3).unwrap_err(),
            ShamirError::NotEnoughShares { have: 2, need: 3 }
        );
        // A repeated share does not count twice.
        let repeated = [shares[0].clone(), shares[0].clone(), shares[1].clone()];
        assert_eq!(
            combine(&repeated, 3).unwrap_err(),
            ShamirError::NotEnoughShares { have: 2, need: 3 }
        );
        let mut conflicting = shares[1].clone();
        conflicting.x = shares[0].x;
        assert_eq!(
            combine(&[shares[0].clone(), conflicting, shares[2].clone()], 3).unwrap_err(),
            ShamirError::BadIndex(1)
        );
        let zero = Share { x: 0, y: [0; 32] };
        assert_eq!(combine(&[zero], 1).unwrap_err(), ShamirError::BadIndex(0));
        // Every k-subset of a 2-of-255 split works (exhaustive over pairs with the first).
        let many = split(&s, 2, 255).unwrap();
        for other in &many[1..] {
            assert_eq!(*combine(&[many[0].clone(), other.clone()], 2).unwrap(), s);
        }
    }

    fn subset(n: u8, pick: &[prop::sample::Index], k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..usize::from(n)).collect();
        let mut out = Vec::new();
        for ix in pick.iter().take(k) {
            let i = ix.index(all.len());
            out.push(all.remove(i));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any k of n shares rebuild the secret; any k-1 are refused.
        #[test]
        fn any_k_rebuild_and_k_minus_1_do_not(
            secret in prop::array::uniform32(any::<u8>()),
            (n, k) in (1u8..=40).prop_flat_map(|n| (Just(n), 1..=n)),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 40),
        ) {
            let shares = split(&secret, k, n).unwrap();
            let chosen: Vec<Share> = subset(n, &pick, usize::from(k)).into_iter().map(|i| shares[i].clone()).collect();
            prop_assert_eq!(*combine(&chosen, k).unwrap(), secret);
            let fewer = &chosen[..chosen.len() - 1];
            let refused = matches!(combine(fewer, k), Err(ShamirError::NotEnoughShares { .. }));
            prop_assert!(refused);
            // And interpolating them anyway (as if the threshold were k - 1) gives something
            // else: k - 1 shares carry no information about the secret.
            if k >= 2 {
                prop_assert_ne!(*combine(fewer, k - 1).unwrap(), secret);
            }
        }
    }
}
