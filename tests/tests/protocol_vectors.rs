//! Test vectors for the DHT, gossip and blob formats (docs/PROTOCOL.md §11, §12, §13): DHT
//! record keys and messages, gossip messages with their ids, Bloom digest filters, partitions
//! and frames, blob manifests and ids, blob transfer messages and private blobs, all from fixed
//! seeds. `interop/python/crypto_interop.py check-protocol` rebuilds every one with
//! libsodium (PyNaCl) and plain Python.
//!
//! After an intentional format change: `cargo xtask vectors`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)] // test code: one vector file, built in one place

use std::sync::Arc;

use mesh_blob::BlobId;
use mesh_blob::manifest::Manifest;
use mesh_blob::private::{KEY_CONTEXT, PRIVATE_VERSION, SEGMENT_LEN, get_private};
use mesh_blob::store::{BlobConfig, BlobStore, PutOptions, TABLES};
use mesh_blob::wire::{Message as BlobMessage, Request, Response};
use mesh_crypto::stream::{Pusher, StreamKey};
use mesh_crypto::{Identity, UnixMillis};
use mesh_dht::Key;
use mesh_dht::message::{Body, Message, StoreStatus, WireContact};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::bloom::Bloom;
use mesh_gossip::message::{Digest, Frame, message_id, partition_of};
use mesh_gossip::{GossipMessage, GossipPayload, MessageId};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_recovery::message::{
    Ack, AckKind, Frame as RecoveryFrame, GRANT_CONTEXT, GuardianEntry, GuardianSet,
    RecoveryRequest, RequestStatus, Revocation, SealedShare, StatusReport, commitment,
};
use mesh_recovery::shamir::Share;
use mesh_recovery::verification_code;
use mesh_store_memory::MemoryBackend;
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
    let (blobs, blob_messages, private_blobs) = blob_vectors();
    let recovery = recovery_vectors();
    let messages = message_vectors();
    json!({
        "version": 1,
        "description": "mesh DHT, gossip, blob, recovery and message v1 vectors; see docs/PROTOCOL.md sections 11 to 15",
        "dht_records": dht_records,
        "dht_messages": dht_messages,
        "gossip_messages": gossip_messages,
        "blooms": blooms,
        "partitions": partitions,
        "gossip_frames": frames,
        "blobs": blobs,
        "blob_messages": blob_messages,
        "private_blobs": private_blobs,
        "recovery": recovery,
        "messages": messages,
    })
}

/// A message and its receipt (fixed ephemeral secrets and nonces), and the direct frame.
fn message_vectors() -> Value {
    use mesh_node::messaging::{MESSAGE_CONTEXT, MESSAGE_VERSION};
    let sender = Identity::from_seed(&[0x81; 32]);
    let recipient = Identity::from_seed(&[0x82; 32]);
    let body = b"hello, encrypted";
    let mut plain = vec![MESSAGE_VERSION, 1];
    plain.extend_from_slice(body);
    let message = mesh_crypto::envelope::seal_deterministic(
        &sender,
        &recipient.peer_id(),
        MESSAGE_CONTEXT,
        &plain,
        &[0x83; 32],
        &[0x84; 24],
    )
    .unwrap();
    let id = mesh_crypto::envelope::verify(&message, 1024).unwrap().id;
    let mut receipt_plain = vec![MESSAGE_VERSION, 2];
    receipt_plain.extend_from_slice(id.as_bytes());
    let receipt = mesh_crypto::envelope::seal_deterministic(
        &recipient,
        &sender.peer_id(),
        MESSAGE_CONTEXT,
        &receipt_plain,
        &[0x85; 32],
        &[0x86; 24],
    )
    .unwrap();
    let mut frame = vec![MESSAGE_VERSION];
    frame.extend_from_slice(&message);
    json!({
        "sender_seed": hex(&[0x81; 32]), "recipient_seed": hex(&[0x82; 32]), "body": hex(body),
        "message_ephemeral": hex(&[0x83; 32]), "message_nonce": hex(&[0x84; 24]),
        "message": hex(&message), "message_id": hex(id.as_bytes()), "direct_frame": hex(&frame),
        "receipt_ephemeral": hex(&[0x85; 32]), "receipt_nonce": hex(&[0x86; 24]),
        "receipt": hex(&receipt),
    })
}

/// The recovery formats: a guardian set with its commitments, a sealed grant (fixed ephemeral
/// secret and nonce), an acknowledgement, a request with its verification code, a status, a
/// revocation, and a frame.
fn recovery_vectors() -> Value {
    let owner = Identity::from_seed(&[0x71; 32]);
    let guardian = Identity::from_seed(&[0x73; 32]);
    let other = Identity::from_seed(&[0x74; 32]);
    let device = Identity::from_seed(&[0x79; 32]);
    let set_id = [0x72u8; 32];
    let shares = [
        (
            Share {
                x: 1,
                y: [0x75; 32],
            },
            [0x77u8; 32],
        ),
        (
            Share {
                x: 2,
                y: [0x76; 32],
            },
            [0x78u8; 32],
        ),
    ];
    let guardians = [guardian.peer_id(), other.peer_id()]
        .iter()
        .zip(&shares)
        .map(|(g, (share, salt))| GuardianEntry {
            guardian: *g,
            x: share.x,
            commitment: commitment(&set_id, share, salt),
        })
        .collect();
    let set = mesh_crypto::Signed::sign(
        &owner,
        GuardianSet {
            set_id,
            k: 2,
            guardians,
        },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap();
    let sealed = SealedShare {
        request_id: mesh_crypto::Hash256::default(),
        share: shares[0].0.clone(),
        salt: shares[0].1,
        set: set.as_bytes().to_vec(),
    };
    let grant = mesh_crypto::envelope::seal_deterministic(
        &owner,
        &guardian.peer_id(),
        GRANT_CONTEXT,
        &sealed.encode(),
        &[0x7b; 32],
        &[0x7c; 24],
    )
    .unwrap();
    let sign = |who: &Identity| who.peer_id();
    let ack = mesh_crypto::Signed::sign(
        &guardian,
        Ack {
            kind: AckKind::Stored,
            owner: sign(&owner),
            set_id,
        },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap();
    let request = mesh_crypto::Signed::sign(
        &device,
        RecoveryRequest {
            owner: sign(&owner),
            set_id: [0; 32],
            nonce: [0x7a; 16],
        },
        T0,
        UnixMillis(T0.0 + 86_400_000),
    )
    .unwrap();
    let status = mesh_crypto::Signed::sign(
        &guardian,
        StatusReport {
            request_id: *request.id(),
            status: RequestStatus::Pending,
        },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap();
    let revocation =
        mesh_crypto::Signed::sign(&owner, Revocation { set_id }, T0, UnixMillis::NEVER).unwrap();
    json!({
        "owner_seed": hex(&[0x71; 32]), "guardian_seeds": [hex(&[0x73; 32]), hex(&[0x74; 32])],
        "device_seed": hex(&[0x79; 32]), "set_id": hex(&set_id), "k": 2, "created_at": T0.0,
        "shares": shares.iter().map(|(s, salt)| json!({ "x": s.x, "y": hex(&s.y), "salt": hex(salt) })).collect::<Vec<_>>(),
        "guardian_set": hex(set.as_bytes()),
        "grant": hex(&grant), "grant_ephemeral": hex(&[0x7b; 32]), "grant_nonce": hex(&[0x7c; 24]),
        "ack": hex(ack.as_bytes()),
        "request": hex(request.as_bytes()), "request_nonce": hex(&[0x7a; 16]),
        "request_expires_at": T0.0 + 86_400_000, "request_id": hex(request.id().as_bytes()),
        "verification_code": verification_code(request.id()),
        "status": hex(status.as_bytes()),
        "revocation": hex(revocation.as_bytes()),
        "request_frame": hex(&RecoveryFrame::Request(request.as_bytes().to_vec()).encode()),
    })
}

/// Content for the blob vectors: `len` bytes, byte i = i mod 251.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

static BLOB_SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

/// Manifests and ids; every transfer message; private blobs built with a fixed key, header,
/// ephemeral secret and nonce, and checked to open with `mesh_blob::private`.
fn blob_vectors() -> (Value, Value, Value) {
    let blobs: Vec<Value> = [(0usize, 1024u32), (5, 1024), (2500, 1024), (3000, 65_408)]
        .iter()
        .map(|(len, cs)| {
            let content = pattern(*len);
            let m = Manifest::of(&content, *cs).unwrap();
            json!({
                "content": hex(&content), "chunk_size": cs,
                "manifest": hex(&m.encode()), "id": hex(m.id().as_bytes()),
            })
        })
        .collect();
    let b = BlobId::from_bytes([0xb1; 32]);
    let small = Manifest::of(b"hello", 1024).unwrap();
    let messages = [
        BlobMessage::Request(1, Request::GetManifest(b)),
        BlobMessage::Response(2, Response::Manifest(small.id(), small.encode())),
        BlobMessage::Request(3, Request::GetChunk(b, 7)),
        BlobMessage::Response(4, Response::Chunk(b, 7, vec![1, 2, 3])),
        BlobMessage::Response(5, Response::NotFound(b)),
        BlobMessage::Response(u64::MAX, Response::Busy),
    ];
    let blob_messages: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "bytes": hex(&m.encode()) }))
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sender = Identity::from_seed(&[0x63; 32]);
    let recipient = Identity::from_seed(&[0x64; 32]);
    let private_blobs: Vec<Value> = [100usize, SEGMENT_LEN + 64]
        .iter()
        .map(|len| {
            let plaintext = pattern(*len);
            let key = StreamKey::from_bytes([0x61; 32]);
            let header = [0x62u8; 24];
            let mut pusher = Pusher::with_header(&key, &header);
            let mut content = vec![PRIVATE_VERSION];
            content.extend_from_slice(&header);
            let segments: Vec<&[u8]> = plaintext.chunks(SEGMENT_LEN).collect();
            for (i, seg) in segments.iter().enumerate() {
                content.extend(pusher.push(seg, i + 1 == segments.len()).unwrap());
            }
            let id = Manifest::of(&content, BlobConfig::default().chunk_size)
                .unwrap()
                .id();
            let mut key_plain = vec![PRIVATE_VERSION];
            key_plain.extend_from_slice(id.as_bytes());
            key_plain.extend_from_slice(key.as_bytes());
            let envelope = mesh_crypto::envelope::seal_deterministic(
                &sender,
                &recipient.peer_id(),
                KEY_CONTEXT,
                &key_plain,
                &[0x65; 32],
                &[0x66; 24],
            )
            .unwrap();
            // The reader of the format opens it.
            let opened = rt.block_on(async {
                let kv: Arc<dyn KvStore> = Arc::new(
                    Store::open(MemoryBackend::new(), &BLOB_SCHEMA)
                        .await
                        .unwrap(),
                );
                let store = BlobStore::open(kv, BlobConfig::default()).await.unwrap();
                let stored = store
                    .put(sender.peer_id(), &content, PutOptions::default(), T0)
                    .await
                    .unwrap();
                assert_eq!(stored.id, id);
                get_private(&store, &id, &recipient, &envelope)
                    .await
                    .unwrap()
            });
            assert_eq!(opened, plaintext);
            json!({
                "sender_seed": hex(&[0x63; 32]), "recipient_seed": hex(&[0x64; 32]),
                "plaintext_len": len, "content": hex(&content), "blob_id": hex(id.as_bytes()),
                "key_envelope": hex(&envelope),
            })
        })
        .collect();
    (json!(blobs), json!(blob_messages), json!(private_blobs))
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
