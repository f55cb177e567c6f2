//! Test vectors for the DHT and gossip formats (docs/PROTOCOL.md §11, §12): DHT record keys and
//! messages, gossip messages with their ids, Bloom digest filters, partitions and frames, all
//! from fixed seeds. `interop/python/crypto_interop.py check-protocol` rebuilds every one with
//! libsodium (PyNaCl) and plain Python.
//!
//! After an intentional format change: `cargo xtask vectors`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)] // test code: one vector file, built in one place

use mesh_crypto::{Identity, UnixMillis};
use mesh_dht::Key;
use mesh_dht::message::{Body, Message, StoreStatus, WireContact};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::bloom::Bloom;
use mesh_gossip::message::{Digest, Frame, message_id, partition_of};
use mesh_gossip::{GossipMessage, GossipPayload, MessageId};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/mesh-gossip/vectors/protocol-v1.json"
);
const T0: UnixMillis = UnixMillis(1_700_000_000_000);

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn generate() -> Value {
    let author = Identity::from_seed(&[0x51; 32]);
    let dht_records: Vec<Value> = [
        (b"profile".as_slice(), 1u64, b"hello".as_slice()),
        (b"", 7, b""),
    ]
    .iter()
    .map(|(name, seq, value)| {
        let r = Record::sign(
            &author,
            RecordPayload {
                name: name.to_vec(),
                seq: *seq,
                value: value.to_vec(),
            },
            T0,
            UnixMillis(T0.0 + 3_600_000),
        )
        .unwrap();
        json!({
            "author_seed": hex(&[0x51; 32]), "name": hex(name), "seq": seq, "value": hex(value),
            "created_at": T0.0, "expires_at": T0.0 + 3_600_000,
            "record": hex(r.as_bytes()), "key": hex(&record_key(&author.peer_id(), name).0),
        })
    })
    .collect();
    let contact = Identity::from_seed(&[0x52; 32]).peer_id();
    let dht_messages: Vec<Value> = [
        Message {
            request: 1,
            body: Body::Ping,
        },
        Message {
            request: 2,
            body: Body::FindNode(Key([0xab; 32])),
        },
        Message {
            request: 3,
            body: Body::Nodes(vec![WireContact {
                peer: contact,
                address: "127.0.0.1:4000".into(),
            }]),
        },
        Message {
            request: 4,
            body: Body::StoreResult(StoreStatus::Quota),
        },
    ]
    .iter()
    .map(|m| json!({ "request": m.request, "bytes": hex(&m.encode()) }))
    .collect();

    let gossip_messages: Vec<Value> = [(b"chat".as_slice(), b"hi".as_slice()), (b"", b"")]
        .iter()
        .map(|(topic, body)| {
            let m = GossipMessage::sign(
                &author,
                GossipPayload {
                    topic: topic.to_vec(),
                    body: body.to_vec(),
                },
                T0,
                UnixMillis(T0.0 + 86_400_000),
            )
            .unwrap();
            json!({
                "author_seed": hex(&[0x51; 32]), "topic": hex(topic), "body": hex(body),
                "created_at": T0.0, "expires_at": T0.0 + 86_400_000,
                "message": hex(m.as_bytes()), "id": hex(&message_id(m.as_bytes()).unwrap().0),
            })
        })
        .collect();
    let ids: Vec<MessageId> = (0u8..20)
        .map(|i| MessageId(mesh_crypto::hash::blake2b_256(&[i]).0))
        .collect();
    let blooms: Vec<Value> = [
        (0u64, 5usize, 0.01),
        (0xdead_beef, 20, 0.01),
        (7, 20, 0.0001),
    ]
    .iter()
    .map(|(seed, n, rate)| {
        let mut f = Bloom::for_items(*n, *rate);
        for id in &ids[..*n] {
            f.insert(id, *seed);
        }
        json!({
            "seed": seed, "items": n, "rate": rate, "m": f.bits(), "k": f.hashes(),
            "ids": ids[..*n].iter().map(|i| hex(&i.0)).collect::<Vec<_>>(),
            "filter": hex(f.as_bytes()),
        })
    })
    .collect();
    let partitions: Vec<Value> = ids[..6]
        .iter()
        .flat_map(|id| {
            [0u8, 1, 3, 6].map(|bits| json!({ "id": hex(&id.0), "bits": bits, "partition": partition_of(id, bits) }))
        })
        .collect();
    let mut small = Bloom::for_items(2, 0.01);
    small.insert(&ids[0], 9);
    let frames = vec![
        json!({ "kind": "push", "bytes": hex(&Frame::Push { ttl: 6, hops: 0, message: vec![1, 2, 3] }.encode()) }),
        json!({ "kind": "digest", "bytes": hex(&Frame::Digest(Digest { seed: 9, partition_bits: 2, partition: 1, filter: small }).encode()) }),
        json!({ "kind": "messages", "bytes": hex(&Frame::Messages(vec![vec![7; 3], vec![]]).encode()) }),
    ];
    json!({
        "version": 1,
        "description": "mesh DHT and gossip v1 vectors; see docs/PROTOCOL.md sections 11 and 12",
        "dht_records": dht_records,
        "dht_messages": dht_messages,
        "gossip_messages": gossip_messages,
        "blooms": blooms,
        "partitions": partitions,
        "gossip_frames": frames,
    })
}

#[test]
fn committed_protocol_vectors_are_current() {
    let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("MESH_BLESS_VECTORS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
        std::fs::write(PATH, &text).unwrap();
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        committed == text,
        "protocol vectors differ from the code; run `cargo xtask vectors`"
    );
}
