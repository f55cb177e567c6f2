//! DHT records: values signed by their author, with a sequence number and an expiry.
//!
//! A record lives at `record_key(author, name)`: only its author can write there, so nobody can
//! overwrite someone else's record, and a newer sequence number replaces an older one.

use mesh_crypto::hash::domain_hash;
use mesh_crypto::wire::Reader;
use mesh_crypto::{PeerId, Signed, SignedPayload};

use crate::key::Key;

/// Largest encoded record (signed envelope included) a node accepts: 1 MiB. Checked before
/// anything is parsed or verified.
pub const MAX_RECORD_LEN: usize = 1024 * 1024;
/// Longest record name.
pub const MAX_NAME_LEN: usize = 255;
/// Record payload format version.
pub const RECORD_VERSION: u8 = 1;

/// What a record says: its name (under its author), sequence number and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPayload {
    /// Name of the record in its author's namespace (at most [`MAX_NAME_LEN`] bytes).
    pub name: Vec<u8>,
    /// Higher replaces lower.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
}

impl SignedPayload for RecordPayload {
    const DOMAIN: &'static str = "mesh/dht-record/v1";
    const MAX_LEN: usize = MAX_RECORD_LEN;

    /// `version u8 = 1 | name_len u8 | name | seq u64 LE | value` (the value runs to the end).
    fn encode(&self, out: &mut Vec<u8>) {
        // `Record::new` checks the name length; a longer name is cut, and then fails to verify
        // against nothing since it was never signed that way.
        let name = &self.name[..self.name.len().min(MAX_NAME_LEN)];
        out.push(RECORD_VERSION);
        #[allow(clippy::cast_possible_truncation)] // at most 255
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.value);
    }

    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECORD_VERSION {
            return Err(mesh_crypto::Error::Malformed("unknown DHT record version"));
        }
        let len = usize::from(r.u8()?);
        let name = r.bytes(len)?.to_vec();
        let seq = r.u64_le()?;
        let value = r.bytes(r.remaining())?.to_vec();
        Ok(Self { name, seq, value })
    }
}

/// A verified record.
pub type Record = Signed<RecordPayload>;

/// Where the record `name` of `author` lives.
pub fn record_key(author: &PeerId, name: &[u8]) -> Key {
    record_key_of_bytes(author.as_bytes(), name)
}

/// [`record_key`] from the author's raw key bytes, without validating them as a point (for
/// cheap accounting before a record is verified).
pub(crate) fn record_key_of_bytes(author: &[u8; 32], name: &[u8]) -> Key {
    Key(domain_hash("mesh/dht-key/v1", &[author, name]).0)
}

/// The key of a verified record.
pub fn key_of(record: &Record) -> Key {
    record_key(record.author(), &record.payload().name)
}

#[cfg(test)]
mod tests {
    use mesh_crypto::{Identity, UnixMillis};

    use super::*;

    #[test]
    fn records_round_trip_and_live_in_their_authors_namespace() {
        let alice = Identity::from_seed(&[1; 32]);
        let bob = Identity::from_seed(&[2; 32]);
        let p = RecordPayload {
            name: b"profile".to_vec(),
            seq: 7,
            value: vec![1, 2, 3],
        };
        let r = Record::sign(&alice, p.clone(), UnixMillis(1000), UnixMillis(2000)).unwrap();
        let back = Record::decode(r.as_bytes(), UnixMillis(1500)).unwrap();
        assert_eq!(back.payload(), &p);
        assert_eq!(key_of(&back), record_key(&alice.peer_id(), b"profile"));
        assert_ne!(
            record_key(&alice.peer_id(), b"profile"),
            record_key(&bob.peer_id(), b"profile")
        );
        // Expired records do not decode.
        assert!(Record::decode(r.as_bytes(), UnixMillis(2000)).is_err());
    }
}
