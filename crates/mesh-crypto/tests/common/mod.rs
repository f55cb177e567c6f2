//! Checks the committed test vectors (`vectors/crypto-v1.json`) against this implementation.
//! Shared by the native test (`vectors.rs`) and the browser test (`web.rs`).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use mesh_crypto::hash::{blake2b_256, domain_hash};
use mesh_crypto::{
    Error, Identity, PeerId, Signed, SignedPayload, UnixMillis, envelope, safety_number,
};
use serde::Deserialize;

pub const VECTORS: &str = include_str!("../../vectors/crypto-v1.json");

/// The payload type the signed-record vectors use: raw bytes under a test domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorNote(pub Vec<u8>);

impl SignedPayload for VectorNote {
    const DOMAIN: &'static str = "mesh/test-vector/v1";
    const MAX_LEN: usize = 4096;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Self(bytes.to_vec()))
    }
}

#[derive(Deserialize)]
pub struct Vectors {
    pub version: u32,
    pub identities: Vec<IdentityVector>,
    pub hashes: Vec<HashVector>,
    pub domain_hashes: Vec<DomainHashVector>,
    pub signatures: Vec<SignatureVector>,
    pub safety_numbers: Vec<SafetyVector>,
    pub envelopes: Vec<EnvelopeVector>,
    pub signed_records: Vec<SignedVector>,
    pub invalid_envelopes: Vec<InvalidEnvelopeVector>,
}

#[derive(Deserialize)]
pub struct IdentityVector {
    pub seed: String,
    pub ed25519_public: String,
    pub x25519_public: String,
    pub peer_id: String,
    pub dht_key: String,
    pub fingerprint: String,
}

#[derive(Deserialize)]
pub struct HashVector {
    pub input: String,
    pub blake2b_256: String,
}

#[derive(Deserialize)]
pub struct DomainHashVector {
    pub domain: String,
    pub message: String,
    pub digest: String,
}

#[derive(Deserialize)]
pub struct SignatureVector {
    pub signer: usize,
    pub domain: String,
    pub message: String,
    pub signature: String,
}

#[derive(Deserialize)]
pub struct SafetyVector {
    pub a: usize,
    pub b: usize,
    pub digits: String,
}

#[derive(Deserialize)]
pub struct EnvelopeVector {
    pub sender: usize,
    pub recipient: usize,
    pub context: String,
    pub plaintext: String,
    pub ephemeral_secret: String,
    pub nonce: String,
    pub id: String,
    pub envelope: String,
}

#[derive(Deserialize)]
pub struct SignedVector {
    pub author: usize,
    pub domain: String,
    pub payload: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub id: String,
    pub bytes: String,
}

#[derive(Deserialize)]
pub struct InvalidEnvelopeVector {
    pub description: String,
    pub recipient: usize,
    pub context: String,
    pub envelope: String,
    pub error: String,
}

pub fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .expect("vector hex")
}

pub fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().expect("32 bytes")
}

pub fn parse() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors parse")
}

/// Short name of an error variant, as the vectors spell it.
pub fn error_name(e: &Error) -> String {
    let dbg = format!("{e:?}");
    dbg.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Checks every vector; returns how many were checked.
pub fn check_all() -> usize {
    let v = parse();
    assert_eq!(v.version, 1);
    let mut checked = 0;
    let ids: Vec<Identity> = v
        .identities
        .iter()
        .map(|i| Identity::from_seed(&hex32(&i.seed)))
        .collect();
    for (iv, id) in v.identities.iter().zip(&ids) {
        let pid = id.peer_id();
        assert_eq!(pid.as_bytes().to_vec(), hex(&iv.ed25519_public));
        assert_eq!(pid.encryption_key().0.to_vec(), hex(&iv.x25519_public));
        assert_eq!(pid.to_string(), iv.peer_id);
        assert_eq!(iv.peer_id.parse::<PeerId>().unwrap(), pid);
        assert_eq!(pid.dht_key().to_hex(), iv.dht_key);
        assert_eq!(pid.fingerprint(), iv.fingerprint);
        checked += 1;
    }
    for h in &v.hashes {
        assert_eq!(blake2b_256(&hex(&h.input)).to_hex(), h.blake2b_256);
        checked += 1;
    }
    for d in &v.domain_hashes {
        assert_eq!(
            domain_hash(&d.domain, &[&hex(&d.message)]).to_hex(),
            d.digest
        );
        checked += 1;
    }
    for s in &v.signatures {
        let id = &ids[s.signer];
        let msg = hex(&s.message);
        let sig = id.sign(&s.domain, &msg);
        assert_eq!(
            sig.0.to_vec(),
            hex(&s.signature),
            "Ed25519 is deterministic"
        );
        id.peer_id().verify(&s.domain, &msg, &sig).unwrap();
        checked += 1;
    }
    for s in &v.safety_numbers {
        let n = safety_number(&ids[s.a].peer_id(), &ids[s.b].peer_id());
        assert_eq!(n.digits(), s.digits);
        checked += 1;
    }
    for e in &v.envelopes {
        let bytes = hex(&e.envelope);
        let opened = envelope::open(&ids[e.recipient], &bytes, &hex(&e.context)).unwrap();
        assert_eq!(opened.plaintext, hex(&e.plaintext));
        assert_eq!(opened.sender, ids[e.sender].peer_id());
        assert_eq!(opened.id.to_hex(), e.id);
        checked += 1;
    }
    for s in &v.signed_records {
        assert_eq!(s.domain, VectorNote::DOMAIN);
        let rec = Signed::<VectorNote>::decode(&hex(&s.bytes), UnixMillis(s.created_at)).unwrap();
        assert_eq!(rec.author(), &ids[s.author].peer_id());
        assert_eq!(rec.payload().0, hex(&s.payload));
        assert_eq!(rec.created_at(), UnixMillis(s.created_at));
        assert_eq!(rec.expires_at(), UnixMillis(s.expires_at));
        assert_eq!(rec.id().to_hex(), s.id);
        checked += 1;
    }
    for bad in &v.invalid_envelopes {
        let err = envelope::open(&ids[bad.recipient], &hex(&bad.envelope), &hex(&bad.context))
            .expect_err(&bad.description);
        assert_eq!(error_name(&err), bad.error, "{}", bad.description);
        checked += 1;
    }
    checked
}
