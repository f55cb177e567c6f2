//! Fragmentation and reassembly of link messages over GATT writes (sans-IO).
//!
//! A message (a sealed mesh frame) is cut into fragments that each fit one ATT write of the
//! negotiated MTU (23 to 517; an ATT write carries `MTU - 3` bytes). Every fragment carries:
//!
//! ```text
//! version u8 = 1 | message id u16 LE | index u16 LE | count u16 LE | checksum [4] | data
//! ```
//!
//! `checksum` = the first 4 bytes of BLAKE2b-256 of the whole message, repeated in every
//! fragment so that fragments of different messages that reuse an id never mix. Fragments may
//! arrive in any order (whole writes reordered) and duplicated; a message is delivered once all
//! its fragments are in and its checksum matches. Limits, all named constants: message size,
//! concurrent reassemblies, buffered bytes, reassembly time.

use std::collections::HashMap;
use std::time::Duration;

/// Fragment format version.
pub const FRAGMENT_VERSION: u8 = 1;
/// Bytes of header in every fragment.
pub const FRAGMENT_HEADER_LEN: usize = 1 + 2 + 2 + 2 + 4;
/// Smallest ATT MTU (Bluetooth Core: 23).
pub const MIN_MTU: usize = 23;
/// Largest ATT MTU (517).
pub const MAX_MTU: usize = 517;
/// ATT write overhead (opcode and handle).
pub const ATT_OVERHEAD: usize = 3;
/// Largest message: a maximal sealed mesh frame.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024 + 4096 + 64;
/// Messages being reassembled at once; the oldest is dropped to make room.
pub const MAX_REASSEMBLIES: usize = 8;
/// Bytes buffered across all reassemblies.
pub const MAX_BUFFERED: usize = 2 * MAX_MESSAGE_LEN;
/// A message not completed within this time is dropped.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a fragment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// The MTU is outside 23..=517.
    #[error("MTU {0} outside 23..=517")]
    BadMtu(usize),
    /// A message over [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes is too large")]
    MessageTooLarge(usize),
    /// A fragment that does not parse or contradicts earlier fragments of its message.
    #[error("malformed fragment: {0}")]
    Malformed(&'static str),
    /// All fragments arrived but the checksum does not match: the message is dropped.
    #[error("checksum mismatch for message {0}")]
    Checksum(u16),
}

fn checksum(message: &[u8]) -> [u8; 4] {
    let h = mesh_crypto::hash::blake2b_256(message);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.as_bytes()[..4]);
    c
}

/// Data bytes per fragment at `mtu`.
///
/// # Errors
/// [`FragmentError::BadMtu`].
pub fn payload_per_fragment(mtu: usize) -> Result<usize, FragmentError> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(FragmentError::BadMtu(mtu));
    }
    Ok(mtu - ATT_OVERHEAD - FRAGMENT_HEADER_LEN)
}

/// Splits `message` into fragments for `mtu`.
///
/// # Errors
/// [`FragmentError::BadMtu`], [`FragmentError::MessageTooLarge`].
pub fn fragment(id: u16, message: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FragmentError> {
    let per = payload_per_fragment(mtu)?;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(FragmentError::MessageTooLarge(message.len()));
    }
    let count = message.len().div_ceil(per).max(1);
    let count16 =
        u16::try_from(count).map_err(|_| FragmentError::MessageTooLarge(message.len()))?;
    let sum = checksum(message);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let data = &message[(i * per).min(message.len())..((i + 1) * per).min(message.len())];
        let mut f = Vec::with_capacity(FRAGMENT_HEADER_LEN + data.len());
        f.push(FRAGMENT_VERSION);
        f.extend_from_slice(&id.to_le_bytes());
        // i < count <= u16::MAX.
        #[allow(clippy::cast_possible_truncation)]
        f.extend_from_slice(&(i as u16).to_le_bytes());
        f.extend_from_slice(&count16.to_le_bytes());
        f.extend_from_slice(&sum);
        f.extend_from_slice(data);
        out.push(f);
    }
    Ok(out)
}

struct Partial {
    count: u16,
    sum: [u8; 4],
    /// Fragments by index: memory grows with what arrived, never with what `count` claims.
    parts: std::collections::BTreeMap<u16, Vec<u8>>,
    bytes: usize,
    started: Duration,
}

/// Reassembles messages from fragments of one link.
#[derive(Default)]
pub struct Reassembler {
    partial: HashMap<u16, Partial>,
    buffered: usize,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("in_progress", &self.partial.len())
            .field("buffered", &self.buffered)
            .finish()
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages being reassembled.
    pub fn in_progress(&self) -> usize {
        self.partial.len()
    }

    /// Bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn drop_message(&mut self, id: u16) {
        if let Some(p) = self.partial.remove(&id) {
            self.buffered -= p.bytes;
        }
    }

    /// Drops reassemblies older than [`REASSEMBLY_TIMEOUT`] at `now`.
    pub fn expire(&mut self, now: Duration) {
        let old: Vec<u16> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.started) >= REASSEMBLY_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.drop_message(id);
        }
    }

    /// Takes one fragment received at `now`; returns a message once complete.
    ///
    /// # Errors
    /// [`FragmentError::Malformed`] or [`FragmentError::MessageTooLarge`] for a bad fragment
    /// (the caller should close the link), [`FragmentError::Checksum`] for a message that
    /// completed with the wrong checksum (dropped).
    pub fn push(
        &mut self,
        fragment: &[u8],
        now: Duration,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if fragment.len() < FRAGMENT_HEADER_LEN {
            return Err(FragmentError::Malformed("shorter than the header"));
        }
        if fragment[0] != FRAGMENT_VERSION {
            return Err(FragmentError::Malformed("unknown version"));
        }
        let id = u16::from_le_bytes([fragment[1], fragment[2]]);
        let index = u16::from_le_bytes([fragment[3], fragment[4]]);
        let count = u16::from_le_bytes([fragment[5], fragment[6]]);
        let mut sum = [0u8; 4];
        sum.copy_from_slice(&fragment[7..11]);
        let data = &fragment[FRAGMENT_HEADER_LEN..];
        if count == 0 || index >= count {
            return Err(FragmentError::Malformed("index outside count"));
        }
        if data.len() > MAX_MTU {
            return Err(FragmentError::Malformed("fragment larger than any MTU"));
        }
        self.expire(now);
        if count == 1 {
            // Single-fragment messages need no state.
            return if checksum(data) == sum {
                Ok(Some(data.to_vec()))
            } else {
                Err(FragmentError::Checksum(id))
            };
        }
        if let Some(p) = self.partial.get(&id)
            && (p.count != count || p.sum != sum)
        {
            // A new message reusing the id: the old one will never complete.
            self.drop_message(id);
        }
        if !self.partial.contains_key(&id) {
            if self.partial.len() >= MAX_REASSEMBLIES {
                let oldest = self
                    .partial
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(id, _)| *id);
                if let Some(o) = oldest {
                    self.drop_message(o);
                }
            }
            self.partial.insert(
                id,
                Partial {
                    count,
                    sum,
                    parts: std::collections::BTreeMap::new(),
                    bytes: 0,
                    started: now,
                },
            );
        }
        while self.buffered + data.len() > MAX_BUFFERED {
            let oldest = self
                .partial
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k);
            let Some(o) = oldest else {
                // The size it would have reached, taken before dropping it.
                let len = self.buffered + data.len();
                self.drop_message(id);
                return Err(FragmentError::MessageTooLarge(len));
            };
            self.drop_message(o);
        }
        let Some(p) = self.partial.get_mut(&id) else {
            return Ok(None);
        };
        if p.parts.contains_key(&index) {
            return Ok(None); // duplicate write
        }
        p.parts.insert(index, data.to_vec());
        p.bytes += data.len();
        self.buffered += data.len();
        if p.parts.len() < usize::from(p.count) {
            return Ok(None);
        }
        let Some(p) = self.partial.remove(&id) else {
            return Ok(None);
        };
        self.buffered -= p.bytes;
        if p.bytes > MAX_MESSAGE_LEN {
            return Err(FragmentError::MessageTooLarge(p.bytes));
        }
        let message: Vec<u8> = p.parts.into_values().flatten().collect();
        if checksum(&message) == p.sum {
            Ok(Some(message))
        } else {
            Err(FragmentError::Checksum(id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Vec<u8> {
        (0..n).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect()
    }

    /// xorshift: deterministic shuffles.
    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }

    #[test]
    fn round_trip_at_the_mtu_extremes_with_reordering() {
        for mtu in [MIN_MTU, 185, MAX_MTU] {
            for len in [0, 1, 9, 10, 1000, 70_000] {
                let m = msg(len);
                let mut frags = fragment(7, &m, mtu).unwrap();
                assert!(
                    frags.iter().all(|f| f.len() <= mtu - ATT_OVERHEAD),
                    "mtu {mtu}"
                );
                shuffle(&mut frags, 0x9e37_79b9_7f4a_7c15 ^ len as u64);
                let mut r = Reassembler::new();
                let mut out = None;
                for f in &frags {
                    if let Some(done) = r.push(f, Duration::ZERO).unwrap() {
                        out = Some(done);
                    }
                }
                assert_eq!(out.as_deref(), Some(m.as_slice()), "mtu {mtu} len {len}");
                assert_eq!(r.buffered(), 0);
            }
        }
    }

    #[test]
    fn duplicates_are_ignored_and_a_missing_fragment_expires() {
        let m = msg(100);
        let frags = fragment(1, &m, MIN_MTU).unwrap();
        let mut r = Reassembler::new();
        assert_eq!(r.push(&frags[0], Duration::ZERO).unwrap(), None);
        assert_eq!(r.push(&frags[0], Duration::ZERO).unwrap(), None);
        for f in &frags[1..frags.len() - 1] {
            assert_eq!(r.push(f, Duration::ZERO).unwrap(), None);
        }
        assert_eq!(r.in_progress(), 1);
        r.expire(REASSEMBLY_TIMEOUT);
        assert_eq!((r.in_progress(), r.buffered()), (0, 0));
        // The late last fragment alone does not make a message.
        assert_eq!(
            r.push(&frags[frags.len() - 1], REASSEMBLY_TIMEOUT).unwrap(),
            None
        );
    }

    #[test]
    fn corrupted_data_fails_the_checksum() {
        let m = msg(50);
        let mut frags = fragment(3, &m, MIN_MTU).unwrap();
        let last = frags.len() - 1;
        let n = frags[last].len() - 1;
        frags[last][n] ^= 1;
        let mut r = Reassembler::new();
        let mut res = Ok(None);
        for f in &frags {
            res = r.push(f, Duration::ZERO);
        }
        assert_eq!(res, Err(FragmentError::Checksum(3)));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn bad_fragments_and_limits() {
        let mut r = Reassembler::new();
        assert!(r.push(&[1, 0, 0], Duration::ZERO).is_err());
        assert!(
            r.push(&[2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0], Duration::ZERO)
                .is_err()
        );
        assert!(
            r.push(&[1, 0, 0, 2, 0, 2, 0, 0, 0, 0, 0], Duration::ZERO)
                .is_err(),
            "index == count"
        );
        assert!(
            r.push(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], Duration::ZERO)
                .is_err(),
            "count 0"
        );
        // A count of 65535 allocates nothing up front: state grows with what arrives.
        assert_eq!(
            r.push(&[1, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 1], Duration::ZERO),
            Ok(None)
        );
        assert_eq!(r.buffered(), 1);
        assert!(fragment(0, &vec![0; MAX_MESSAGE_LEN + 1], MAX_MTU).is_err());
        assert!(fragment(0, b"x", MIN_MTU - 1).is_err());
        assert!(fragment(0, b"x", MAX_MTU + 1).is_err());
        // At most MAX_REASSEMBLIES in flight: the oldest gives way.
        for id in 0..u16::try_from(MAX_REASSEMBLIES + 3).unwrap_or(0) {
            let f = fragment(id, &msg(100), MIN_MTU).unwrap();
            r.push(&f[0], Duration::from_millis(u64::from(id))).unwrap();
        }
        assert_eq!(r.in_progress(), MAX_REASSEMBLIES);
    }

    #[test]
    fn buffered_bytes_stay_under_the_limit() {
        // Three peers' worth of never-finished huge messages: the oldest give way.
        let mut r = Reassembler::new();
        let data = [0u8; MAX_MTU - ATT_OVERHEAD - FRAGMENT_HEADER_LEN];
        for id in 0u16..3 {
            for index in 0u16..2000 {
                let mut f = vec![FRAGMENT_VERSION];
                f.extend_from_slice(&id.to_le_bytes());
                f.extend_from_slice(&index.to_le_bytes());
                f.extend_from_slice(&u16::MAX.to_le_bytes());
                f.extend_from_slice(&[0; 4]);
                f.extend_from_slice(&data);
                let _ = r.push(&f, Duration::from_millis(u64::from(id)));
                assert!(r.buffered() <= MAX_BUFFERED);
            }
        }
        assert!(
            r.buffered() > MAX_BUFFERED / 2,
            "the limit is what bounds it, not an early refusal"
        );
    }

    #[test]
    fn a_reused_id_starts_a_new_message() {
        let a = msg(40);
        let b: Vec<u8> = msg(40).into_iter().map(|x| x ^ 0xff).collect();
        let fa = fragment(9, &a, MIN_MTU).unwrap();
        let fb = fragment(9, &b, MIN_MTU).unwrap();
        let mut r = Reassembler::new();
        r.push(&fa[0], Duration::ZERO).unwrap();
        let mut out = None;
        for f in &fb {
            if let Some(m) = r.push(f, Duration::ZERO).unwrap() {
                out = Some(m);
            }
        }
        assert_eq!(out, Some(b));
    }

    /// A fragment of message `id` claiming `count` parts, with `data` and a zero checksum.
    fn raw(id: u16, index: u16, count: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![FRAGMENT_VERSION];
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(&index.to_le_bytes());
        f.extend_from_slice(&count.to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn a_message_needing_more_than_65535_fragments_is_refused() {
        let per = payload_per_fragment(MIN_MTU).unwrap();
        assert_eq!(per, 9);
        // The fragment count is a u16: at the smallest MTU that caps a message well below
        // MAX_MESSAGE_LEN.
        let most = per * usize::from(u16::MAX);
        assert_eq!(fragment(1, &vec![7; most], MIN_MTU).unwrap().len(), 65_535);
        assert_eq!(
            fragment(1, &vec![7; most + 1], MIN_MTU),
            Err(FragmentError::MessageTooLarge(most + 1))
        );
        // The same message fits at the largest MTU.
        assert!(fragment(1, &vec![7; most + 1], MAX_MTU).is_ok());
        assert_eq!(payload_per_fragment(MAX_MTU), Ok(MAX_MTU - 14));
        assert_eq!(payload_per_fragment(0), Err(FragmentError::BadMtu(0)));
    }

    #[test]
    fn a_fragment_carrying_more_than_any_mtu_is_malformed() {
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(&raw(1, 0, 2, &[0; MAX_MTU + 1]), Duration::ZERO),
            Err(FragmentError::Malformed("fragment larger than any MTU"))
        );
        assert_eq!((r.in_progress(), r.buffered()), (0, 0));
        // MAX_MTU bytes of data is still taken.
        assert_eq!(
            r.push(&raw(1, 0, 2, &[0; MAX_MTU]), Duration::ZERO),
            Ok(None)
        );
        assert_eq!(r.buffered(), MAX_MTU);
    }

    #[test]
    fn a_damaged_single_fragment_message_fails_its_checksum_and_leaves_no_state() {
        let mut f = fragment(4, b"hello", MIN_MTU).unwrap();
        assert_eq!(f.len(), 1);
        let mut r = Reassembler::new();
        assert_eq!(r.push(&f[0], Duration::ZERO), Ok(Some(b"hello".to_vec())));
        let last = f[0].len() - 1;
        f[0][last] ^= 0x40;
        assert_eq!(
            r.push(&f[0], Duration::ZERO),
            Err(FragmentError::Checksum(4))
        );
        assert_eq!((r.in_progress(), r.buffered()), (0, 0));
        // An empty message is one fragment with no data.
        let empty = fragment(5, b"", MAX_MTU).unwrap();
        assert_eq!(empty, vec![raw_with_sum(5, 0, 1, checksum(b""), b"")]);
        assert_eq!(r.push(&empty[0], Duration::ZERO), Ok(Some(Vec::new())));
    }

    fn raw_with_sum(id: u16, index: u16, count: u16, sum: [u8; 4], data: &[u8]) -> Vec<u8> {
        let mut f = raw(id, index, count, data);
        f[7..11].copy_from_slice(&sum);
        f
    }

    #[test]
    fn one_message_alone_over_the_buffer_limit_is_dropped() {
        // Nothing else to evict: the message that grows past MAX_BUFFERED goes itself.
        let data = [1u8; MAX_MTU - ATT_OVERHEAD - FRAGMENT_HEADER_LEN];
        let mut r = Reassembler::new();
        let mut refused = None;
        for index in 0..u16::MAX {
            match r.push(&raw(3, index, u16::MAX, &data), Duration::ZERO) {
                Ok(None) => assert!(r.buffered() <= MAX_BUFFERED),
                other => {
                    refused = Some((index, other));
                    break;
                }
            }
        }
        let (index, result) = refused.expect("the buffer limit must stop the message");
        let taken = usize::from(index) * data.len();
        assert!(taken <= MAX_BUFFERED && taken + data.len() > MAX_BUFFERED);
        assert_eq!(
            result,
            Err(FragmentError::MessageTooLarge(taken + data.len()))
        );
        assert_eq!((r.in_progress(), r.buffered()), (0, 0));
    }

    #[test]
    fn a_completed_message_over_the_size_limit_is_refused() {
        // Each fragment is allowed, but together they exceed MAX_MESSAGE_LEN.
        let data = [2u8; MAX_MTU - ATT_OVERHEAD - FRAGMENT_HEADER_LEN];
        let count = u16::try_from(MAX_MESSAGE_LEN / data.len() + 1).unwrap();
        let mut r = Reassembler::new();
        for index in 0..count - 1 {
            assert_eq!(
                r.push(&raw(6, index, count, &data), Duration::ZERO),
                Ok(None)
            );
        }
        let total = usize::from(count) * data.len();
        assert!(total > MAX_MESSAGE_LEN);
        assert_eq!(
            r.push(&raw(6, count - 1, count, &data), Duration::ZERO),
            Err(FragmentError::MessageTooLarge(total))
        );
        assert_eq!((r.in_progress(), r.buffered()), (0, 0));
    }

    #[test]
    fn a_stale_reassembly_expires_when_a_later_fragment_arrives() {
        let a = fragment(1, &msg(30), MIN_MTU).unwrap();
        let b = fragment(2, &msg(30), MIN_MTU).unwrap();
        let mut r = Reassembler::new();
        assert_eq!(r.push(&a[0], Duration::ZERO), Ok(None));
        // Just before the timeout both are kept.
        let before = REASSEMBLY_TIMEOUT.saturating_sub(Duration::from_millis(1));
        assert_eq!(r.push(&b[0], before), Ok(None));
        assert_eq!(r.in_progress(), 2);
        // At the timeout, message 1 goes; message 2 (started later) stays and completes.
        assert_eq!(r.push(&b[1], REASSEMBLY_TIMEOUT), Ok(None));
        assert_eq!(r.in_progress(), 1);
        let mut out = None;
        for f in &b[2..] {
            out = r.push(f, REASSEMBLY_TIMEOUT).unwrap();
        }
        assert_eq!(out, Some(msg(30)));
        // Message 1's remaining fragments no longer make a message.
        for f in &a[1..] {
            assert_eq!(r.push(f, REASSEMBLY_TIMEOUT), Ok(None));
        }
        assert_eq!(
            format!("{r:?}"),
            "Reassembler { in_progress: 1, buffered: 21 }"
        );
    }

    #[test]
    fn the_oldest_reassembly_gives_way_when_all_slots_are_taken() {
        let mut r = Reassembler::new();
        let msgs: Vec<Vec<Vec<u8>>> = (0..=u16::try_from(MAX_REASSEMBLIES).unwrap())
            .map(|id| fragment(id, &msg(20 + usize::from(id)), MIN_MTU).unwrap())
            .collect();
        for (t, f) in msgs.iter().enumerate() {
            r.push(&f[0], Duration::from_millis(t as u64)).unwrap();
        }
        assert_eq!(r.in_progress(), MAX_REASSEMBLIES);
        let now = Duration::from_secs(1);
        // Message 0 was dropped: its other fragments restart it, it never completes.
        for f in &msgs[0][1..] {
            assert_eq!(r.push(f, now), Ok(None));
        }
        // Message 1 survived... until message 0's restart took the oldest slot (message 1's).
        // Message 2 is intact and completes.
        let mut out = None;
        for f in &msgs[2][1..] {
            out = r.push(f, now).unwrap();
        }
        assert_eq!(out, Some(msg(22)));
    }
}
