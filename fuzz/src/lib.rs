//! Fuzz harnesses for every decoder of untrusted bytes in mesh.
//!
//! Each [`Target`] takes arbitrary bytes, runs them through a decoder (or a stateful parser fed
//! a sequence of messages), and checks what must hold of whatever decodes: it encodes back to
//! something that decodes to the same value, bounded buffers stay bounded, a value that opens
//! also verifies. A harness panics only on a broken invariant; an input the decoder refuses is
//! the expected outcome for almost every input.
//!
//! The same functions serve three callers:
//! - the libFuzzer binaries in `fuzz/libfuzzer` (`cargo xtask fuzz --time S`, `cargo fuzz run`),
//! - the regression test `tests/corpus.rs`, which replays every committed corpus input and
//!   crash reproducer (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) on every
//!   `cargo test`,
//! - [`Target::seeds`]: valid encodings made by the real encoders, so the fuzzer starts from
//!   inputs that reach past the first length check.

#![allow(clippy::expect_used, clippy::panic)] // a harness exists to panic on a broken invariant

use std::fmt::Debug;
use std::sync::LazyLock;
use std::time::Duration;

use mesh_crypto::{Identity, Signed, SignedPayload, UnixMillis};
use zeroize::Zeroizing;

/// The time every harness runs at (signed seeds are valid from here for a day).
pub const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
const DAY_MS: u64 = 24 * 3_600_000;
const BINDING: &[u8] = b"mesh-fuzz channel binding";
const ENVELOPE_CONTEXT: &[u8] = b"mesh-fuzz/v1";
const PASSPHRASE: &[u8] = b"mesh-fuzz passphrase";
const LINK_KEY: [u8; 32] = [7; 32];

static ALICE: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[1; 32]));
static BOB: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed(&[2; 32]));

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the libFuzzer binary and the corpus directory are named after it.
    pub name: &'static str,
    /// What it decodes.
    pub what: &'static str,
    /// Runs one input; `true` if (some of) it decoded as valid.
    pub run: fn(&[u8]) -> bool,
    /// Valid inputs made by the real encoders.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "transport_frame",
        what: "link frames (protocol id, payload) and peer-address payloads",
        run: transport_frame,
        seeds: transport_frame_seeds,
    },
    Target {
        name: "transport_link",
        what: "a plain link's incoming messages (frames, pings, close)",
        run: transport_link,
        seeds: transport_link_seeds,
    },
    Target {
        name: "transport_sealed",
        what: "sealed link messages (counter, XChaCha20-Poly1305) in sequence",
        run: transport_sealed,
        seeds: transport_sealed_seeds,
    },
    Target {
        name: "handshake",
        what: "the three handshake messages, each at its step",
        run: handshake,
        seeds: handshake_seeds,
    },
    Target {
        name: "envelope",
        what: "end-to-end envelopes: open, verify and id",
        run: envelope,
        seeds: envelope_seeds,
    },
    Target {
        name: "signed",
        what: "signed-record headers, as each payload type",
        run: signed,
        seeds: signed_seeds,
    },
    Target {
        name: "dht_message",
        what: "DHT messages and the records they carry",
        run: dht_message,
        seeds: dht_message_seeds,
    },
    Target {
        name: "dht_record",
        what: "DHT record payloads (name, sequence, value)",
        run: dht_record,
        seeds: dht_record_seeds,
    },
    Target {
        name: "gossip_frame",
        what: "gossip frames: pushes, Bloom digests, message batches",
        run: gossip_frame,
        seeds: gossip_frame_seeds,
    },
    Target {
        name: "gossip_payload",
        what: "gossip message payloads (topic, body)",
        run: gossip_payload,
        seeds: gossip_payload_seeds,
    },
    Target {
        name: "blob_wire",
        what: "blob transfer requests and responses",
        run: blob_wire,
        seeds: blob_wire_seeds,
    },
    Target {
        name: "blob_manifest",
        what: "blob manifests (size, chunk size, chunk hashes)",
        run: blob_manifest,
        seeds: blob_manifest_seeds,
    },
    Target {
        name: "recovery_frame",
        what: "recovery frames and the signed messages and envelopes inside",
        run: recovery_frame,
        seeds: recovery_frame_seeds,
    },
    Target {
        name: "recovery_payload",
        what: "guardian sets, acks, requests, status reports, revocations, sealed shares",
        run: recovery_payload,
        seeds: recovery_payload_seeds,
    },
    Target {
        name: "invite",
        what: "invites as bytes, links and NFC NDEF messages; invite payloads",
        run: invite,
        seeds: invite_seeds,
    },
    Target {
        name: "pin_set",
        what: "pin-set payloads and signed pin-set documents",
        run: pin_set,
        seeds: pin_set_seeds,
    },
    Target {
        name: "ble_fragments",
        what: "BLE GATT fragments through the reassembler",
        run: ble_fragments,
        seeds: ble_fragments_seeds,
    },
    Target {
        name: "webrtc_signaling",
        what: "signaling descriptions, their payloads and SDP fingerprints",
        run: webrtc_signaling,
        seeds: webrtc_signaling_seeds,
    },
    Target {
        name: "webrtc_channel",
        what: "data-channel chunks through the reassembler; unreliable messages",
        run: webrtc_channel,
        seeds: webrtc_channel_seeds,
    },
    Target {
        name: "file_offer",
        what: "file offers inside messages",
        run: file_offer,
        seeds: file_offer_seeds,
    },
    Target {
        name: "keystore",
        what: "passphrase-sealed secrets (checksum fixed up, key derivation cost capped)",
        run: keystore,
        seeds: keystore_seeds,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Splits `data` into messages: each is a little-endian `u16` length and that many bytes (cut
/// short at the end). Lets one input be a sequence for the stateful parsers.
pub fn messages(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        let (m, r) = rest.split_at(end);
        rest = r;
        Some(&m[2..])
    })
}

/// Joins messages as [`messages`] splits them.
///
/// # Panics
/// If a part is 64 KiB or longer.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let len = u16::try_from(p.len()).expect("a message under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// `decode(encode(x)) == x` for a value `x` that decoded.
fn round_trip<T, E: Debug>(value: &T, encoded: &[u8], decode: impl Fn(&[u8]) -> Result<T, E>)
where
    T: PartialEq + Debug,
{
    match decode(encoded) {
        Ok(again) => assert_eq!(&again, value, "decode(encode(x)) != x"),
        Err(e) => panic!("{value:?} encodes to bytes that do not decode: {e:?}"),
    }
}

fn payload_round_trip<T: SignedPayload + PartialEq + Debug>(data: &[u8]) -> bool {
    let Ok(value) = T::decode(data) else {
        return false;
    };
    let mut out = Vec::new();
    value.encode(&mut out);
    round_trip(&value, &out, T::decode);
    true
}

fn sign<T: SignedPayload>(author: &Identity, payload: T) -> Vec<u8> {
    Signed::sign(author, payload, NOW, NOW.saturating_add(DAY_MS))
        .expect("signs")
        .into_bytes()
}

// --- transport ---------------------------------------------------------------------------

fn transport_frame(data: &[u8]) -> bool {
    use mesh_transport::frame::{Frame, decode_peer_address, encode_peer_address};
    let Ok(frame) = Frame::decode(data) else {
        return false;
    };
    round_trip(&frame, &frame.encode(), Frame::decode);
    if let Ok(address) = decode_peer_address(&frame.payload) {
        round_trip(
            &address,
            &encode_peer_address(&address),
            decode_peer_address,
        );
    }
    true
}

fn transport_frame_seeds() -> Vec<Vec<u8>> {
    use mesh_transport::ProtocolId;
    use mesh_transport::frame::{Frame, encode_peer_address};
    vec![
        Frame::new(ProtocolId::DHT, b"hello".to_vec())
            .expect("frame")
            .encode(),
        Frame::new(ProtocolId(0), encode_peer_address("webrtc:127.0.0.1:4000"))
            .expect("frame")
            .encode(),
    ]
}

fn transport_link(data: &[u8]) -> bool {
    use mesh_transport::link::Link;
    let link = Link::plain();
    let mut any = false;
    for (i, m) in messages(data).enumerate() {
        let now = Duration::from_millis(10 * i as u64);
        any |= link.receive(m, now).is_ok();
    }
    any
}

fn transport_link_seeds() -> Vec<Vec<u8>> {
    use mesh_transport::ProtocolId;
    use mesh_transport::frame::Frame;
    use mesh_transport::link::Link;
    let link = Link::plain();
    let frame = link
        .seal_frame(&Frame::new(ProtocolId::GOSSIP, b"gossip".to_vec()).expect("frame"))
        .expect("encodes");
    let ping = link.ping(Duration::from_millis(5)).expect("ping");
    let close = link.close().expect("close");
    vec![join(&[&frame, &ping, &frame]), join(&[&ping, &close])]
}

fn transport_sealed(data: &[u8]) -> bool {
    use mesh_transport::secure::Opener;
    let mut opener = Opener::new(Zeroizing::new(LINK_KEY));
    let mut any = false;
    for m in messages(data) {
        any |= opener.open(m).is_ok();
    }
    any
}

fn transport_sealed_seeds() -> Vec<Vec<u8>> {
    use mesh_transport::secure::Sealer;
    let mut sealer = Sealer::new(Zeroizing::new(LINK_KEY));
    let a = sealer.seal(b"first").expect("seals");
    let b = sealer.seal(&[0u8; 300]).expect("seals");
    let c = sealer.seal(b"").expect("seals");
    vec![join(&[&a, &b, &c]), join(&[&b, &a])]
}

fn handshake(data: &[u8]) -> bool {
    use mesh_transport::handshake::{Initiator, Responder};
    let Some((&step, message)) = data.split_first() else {
        return false;
    };
    match step % 3 {
        0 => Responder::on_m1(&BOB, BINDING, message).is_ok(),
        1 => {
            let (initiator, _) = Initiator::start(BINDING, None).expect("starts");
            initiator.on_m2(&ALICE, message).is_ok()
        }
        _ => {
            let (_, m1) = Initiator::start(BINDING, None).expect("starts");
            let (responder, _) = Responder::on_m1(&BOB, BINDING, &m1).expect("answers");
            responder.on_m3(message).is_ok()
        }
    }
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    use mesh_transport::handshake::{Initiator, Responder};
    let (initiator, m1) = Initiator::start(BINDING, None).expect("starts");
    let (_, m2) = Responder::on_m1(&BOB, BINDING, &m1).expect("answers");
    let (m3, _) = initiator.on_m2(&ALICE, &m2).expect("finishes");
    vec![
        [&[0][..], &m1].concat(),
        [&[1][..], &m2].concat(),
        [&[2][..], &m3].concat(),
    ]
}

// --- crypto ------------------------------------------------------------------------------

fn envelope(data: &[u8]) -> bool {
    use mesh_crypto::envelope::{MAX_PLAINTEXT_LEN, id, open, verify};
    let verified = verify(data, MAX_PLAINTEXT_LEN);
    let _ = id(data);
    let Ok(opened) = open(&BOB, data, ENVELOPE_CONTEXT) else {
        return false;
    };
    assert!(verified.is_ok(), "an envelope that opens must verify");
    assert!(id(data).is_ok(), "an envelope that opens has an id");
    assert_eq!(opened.sender, ALICE.peer_id(), "only Alice's seeds open");
    true
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    use mesh_crypto::envelope::seal_deterministic;
    [&b"hello"[..], &[0u8; 1000], b""]
        .iter()
        .enumerate()
        .map(|(i, plaintext)| {
            let n = u8::try_from(i).expect("small");
            seal_deterministic(
                &ALICE,
                &BOB.peer_id(),
                ENVELOPE_CONTEXT,
                plaintext,
                &[n + 3; 32],
                &[n + 4; 24],
            )
            .expect("seals")
        })
        .collect()
}

fn signed(data: &[u8]) -> bool {
    use mesh_dht::RecordPayload;
    use mesh_gossip::GossipPayload;
    use mesh_platform::invite::InvitePayload;
    use mesh_platform::pinning::PinSetPayload;
    use mesh_recovery::GuardianSet;
    use mesh_recovery::message::{Ack, RecoveryRequest, Revocation, StatusReport};
    use mesh_transport_webrtc::wire::Description;
    fn one<T: SignedPayload>(data: &[u8]) -> bool {
        let Ok(s) = Signed::<T>::decode(data, NOW) else {
            return false;
        };
        assert_eq!(s.as_bytes(), data, "a signed value keeps its bytes");
        assert!(s.expires_at() > NOW && s.created_at() < s.expires_at());
        true
    }
    one::<RecordPayload>(data)
        | one::<GossipPayload>(data)
        | one::<InvitePayload>(data)
        | one::<PinSetPayload>(data)
        | one::<GuardianSet>(data)
        | one::<Ack>(data)
        | one::<RecoveryRequest>(data)
        | one::<StatusReport>(data)
        | one::<Revocation>(data)
        | one::<Description>(data)
}

fn signed_seeds() -> Vec<Vec<u8>> {
    vec![
        sign(&ALICE, record_payload()),
        sign(&ALICE, gossip_payload_value()),
    ]
}

// --- DHT ---------------------------------------------------------------------------------

fn record_payload() -> mesh_dht::RecordPayload {
    mesh_dht::RecordPayload {
        name: b"profile".to_vec(),
        seq: 3,
        value: b"value".to_vec(),
    }
}

fn dht_message(data: &[u8]) -> bool {
    use mesh_dht::Record;
    use mesh_dht::message::{Body, Message};
    let Ok(message) = Message::decode(data) else {
        return false;
    };
    round_trip(&message, &message.encode(), Message::decode);
    if let Body::Value(bytes) | Body::Store(bytes) = &message.body {
        let _ = Record::decode(bytes, NOW);
    }
    true
}

fn dht_message_seeds() -> Vec<Vec<u8>> {
    use mesh_dht::Key;
    use mesh_dht::message::{Body, Message, StoreStatus, WireContact};
    let key = Key([9; 32]);
    let bodies = vec![
        Body::Ping,
        Body::FindNode(key),
        Body::FindValue(key),
        Body::Nodes(vec![
            WireContact {
                peer: ALICE.peer_id(),
                address: "webrtc:127.0.0.1:4000".into(),
            },
            WireContact {
                peer: BOB.peer_id(),
                address: String::new(),
            },
        ]),
        Body::Store(sign(&ALICE, record_payload())),
        Body::StoreResult(StoreStatus::Stale),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            Message {
                request: i as u64,
                body,
            }
            .encode()
        })
        .collect()
}

fn dht_record(data: &[u8]) -> bool {
    payload_round_trip::<mesh_dht::RecordPayload>(data)
}

fn dht_record_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    record_payload().encode(&mut out);
    vec![out]
}

// --- gossip ------------------------------------------------------------------------------

fn gossip_payload_value() -> mesh_gossip::GossipPayload {
    mesh_gossip::GossipPayload {
        topic: b"chat".to_vec(),
        body: b"hello, mesh".to_vec(),
    }
}

fn gossip_frame(data: &[u8]) -> bool {
    use mesh_gossip::GossipMessage;
    use mesh_gossip::message::{Frame, message_id};
    let Ok(frame) = Frame::decode(data) else {
        return false;
    };
    round_trip(&frame, &frame.encode(), Frame::decode);
    let carried: Vec<&Vec<u8>> = match &frame {
        Frame::Push { message, .. } => vec![message],
        Frame::Messages(list) => list.iter().collect(),
        Frame::Digest(digest) => {
            let id = mesh_gossip::MessageId([0x5a; 32]);
            let _ = digest.covers(&id) && digest.filter.contains(&id, digest.seed);
            Vec::new()
        }
    };
    for m in carried {
        if let Ok(decoded) = GossipMessage::decode(m, NOW) {
            // The id used to drop duplicates before verifying is the verified id.
            assert_eq!(
                message_id(m).map(|id| id.0),
                Some(decoded.id().0),
                "pre-verification id differs from the signed id"
            );
            assert_eq!(decoded.as_bytes(), &m[..]);
        }
    }
    true
}

fn gossip_frame_seeds() -> Vec<Vec<u8>> {
    use mesh_gossip::bloom::Bloom;
    use mesh_gossip::message::{Digest, Frame};
    let message = sign(&ALICE, gossip_payload_value());
    let mut filter = Bloom::for_items(100, 0.01);
    filter.insert(&mesh_gossip::MessageId([1; 32]), 42);
    vec![
        Frame::Push {
            ttl: 6,
            hops: 1,
            message: message.clone(),
        }
        .encode(),
        Frame::Digest(Digest {
            seed: 42,
            partition_bits: 2,
            partition: 1,
            filter,
        })
        .encode(),
        Frame::Messages(vec![message.clone(), message]).encode(),
    ]
}

fn gossip_payload(data: &[u8]) -> bool {
    payload_round_trip::<mesh_gossip::GossipPayload>(data)
}

fn gossip_payload_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    gossip_payload_value().encode(&mut out);
    vec![out]
}

// --- blobs -------------------------------------------------------------------------------

fn blob_wire(data: &[u8]) -> bool {
    use mesh_blob::Manifest;
    use mesh_blob::wire::{Message, Response};
    let Ok(message) = Message::decode(data) else {
        return false;
    };
    round_trip(&message, &message.encode(), Message::decode);
    if let Message::Response(_, Response::Manifest(id, bytes)) = &message
        && let Ok(manifest) = Manifest::decode_for(id, bytes)
    {
        assert_eq!(&manifest.id(), id, "decode_for checks the id");
    }
    true
}

fn blob_wire_seeds() -> Vec<Vec<u8>> {
    use mesh_blob::Manifest;
    use mesh_blob::wire::{Message, Request, Response};
    let manifest = Manifest::of(&[7u8; 5000], 1024).expect("manifest");
    let id = manifest.id();
    vec![
        Message::Request(1, Request::GetManifest(id)).encode(),
        Message::Request(2, Request::GetChunk(id, 3)).encode(),
        Message::Response(1, Response::Manifest(id, manifest.encode())).encode(),
        Message::Response(2, Response::Chunk(id, 3, vec![7; 1024])).encode(),
        Message::Response(3, Response::NotFound(id)).encode(),
        Message::Response(4, Response::Busy).encode(),
    ]
}

fn blob_manifest(data: &[u8]) -> bool {
    use mesh_blob::Manifest;
    let Ok(manifest) = Manifest::decode(data) else {
        return false;
    };
    round_trip(&manifest, &manifest.encode(), Manifest::decode);
    let own = Manifest::decode_for(&manifest.id(), data).expect("a manifest matches its own id");
    assert_eq!(own, manifest);
    let chunks: u64 = (0..manifest.count())
        .map(|i| manifest.chunk_len(i) as u64)
        .sum();
    assert_eq!(chunks, manifest.size(), "chunk lengths add up to the size");
    true
}

fn blob_manifest_seeds() -> Vec<Vec<u8>> {
    use mesh_blob::Manifest;
    vec![
        Manifest::of(&[1u8; 10_000], 4096)
            .expect("manifest")
            .encode(),
        Manifest::of(b"", 1024).expect("manifest").encode(),
    ]
}

// --- recovery ----------------------------------------------------------------------------

fn recovery_frame(data: &[u8]) -> bool {
    use mesh_crypto::envelope::{MAX_PLAINTEXT_LEN, verify};
    use mesh_recovery::message::{Ack, Frame, RecoveryRequest, Revocation, StatusReport};
    let Ok(frame) = Frame::decode(data) else {
        return false;
    };
    round_trip(&frame, &frame.encode(), Frame::decode);
    match &frame {
        Frame::Grant(b) | Frame::Release(b) => {
            let _ = verify(b, MAX_PLAINTEXT_LEN);
        }
        Frame::Ack(b) => {
            let _ = Signed::<Ack>::decode(b, NOW);
        }
        Frame::Request(b) => {
            let _ = Signed::<RecoveryRequest>::decode(b, NOW);
        }
        Frame::Status(b) => {
            let _ = Signed::<StatusReport>::decode(b, NOW);
        }
        Frame::Revoke(b) => {
            let _ = Signed::<Revocation>::decode(b, NOW);
        }
    }
    true
}

fn recovery_frame_seeds() -> Vec<Vec<u8>> {
    use mesh_recovery::message::{Ack, AckKind, Frame, RecoveryRequest};
    let ack = sign(
        &BOB,
        Ack {
            kind: AckKind::Stored,
            owner: ALICE.peer_id(),
            set_id: [3; 32],
        },
    );
    let request = sign(
        &ALICE,
        RecoveryRequest {
            owner: ALICE.peer_id(),
            set_id: [3; 32],
            nonce: [4; 16],
        },
    );
    vec![
        Frame::Ack(ack).encode(),
        Frame::Request(request).encode(),
        Frame::Grant(envelope_seeds().remove(0)).encode(),
    ]
}

fn recovery_payload(data: &[u8]) -> bool {
    use mesh_recovery::GuardianSet;
    use mesh_recovery::message::{Ack, RecoveryRequest, Revocation, SealedShare, StatusReport};
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    match kind % 6 {
        0 => payload_round_trip::<GuardianSet>(body),
        1 => payload_round_trip::<Ack>(body),
        2 => payload_round_trip::<RecoveryRequest>(body),
        3 => payload_round_trip::<StatusReport>(body),
        4 => payload_round_trip::<Revocation>(body),
        _ => {
            let Ok(share) = SealedShare::decode(body) else {
                return false;
            };
            let again = SealedShare::decode(&share.encode()).expect("re-encoded share decodes");
            assert!(again == share, "decode(encode(share)) != share");
            true
        }
    }
}

fn recovery_payload_seeds() -> Vec<Vec<u8>> {
    use mesh_crypto::Hash256;
    use mesh_recovery::GuardianSet;
    use mesh_recovery::message::{
        Ack, AckKind, GuardianEntry, RecoveryRequest, RequestStatus, Revocation, SealedShare,
        StatusReport,
    };
    use mesh_recovery::shamir::Share;
    fn tagged(kind: u8, payload: &impl SignedPayload) -> Vec<u8> {
        let mut out = vec![kind];
        payload.encode(&mut out);
        out
    }
    let set = GuardianSet {
        set_id: [3; 32],
        k: 2,
        guardians: (1..=3u8)
            .map(|x| GuardianEntry {
                guardian: Identity::from_seed(&[x + 10; 32]).peer_id(),
                x,
                commitment: Hash256([x; 32]),
            })
            .collect(),
    };
    let share = SealedShare {
        request_id: Hash256([0; 32]),
        share: Share { x: 1, y: [9; 32] },
        salt: [5; 32],
        set: sign(&ALICE, set.clone()),
    };
    vec![
        tagged(0, &set),
        tagged(
            1,
            &Ack {
                kind: AckKind::Refused,
                owner: ALICE.peer_id(),
                set_id: [3; 32],
            },
        ),
        tagged(
            2,
            &RecoveryRequest {
                owner: ALICE.peer_id(),
                set_id: [0; 32],
                nonce: [8; 16],
            },
        ),
        tagged(
            3,
            &StatusReport {
                request_id: Hash256([6; 32]),
                status: RequestStatus::Pending,
            },
        ),
        tagged(4, &Revocation { set_id: [3; 32] }),
        [&[5][..], &share.encode()].concat(),
    ]
}

// --- platform ----------------------------------------------------------------------------

fn invite_payload_value() -> mesh_platform::invite::InvitePayload {
    use mesh_platform::invite::{BootstrapHint, InvitePayload};
    InvitePayload {
        display_name: "Alice".into(),
        nonce: [6; mesh_platform::invite::INVITE_NONCE_LEN],
        bootstrap: vec![
            BootstrapHint::Signaling("https://meshd.example.org/signal".into()),
            BootstrapHint::Peer(BOB.peer_id()),
        ],
    }
}

fn invite(data: &[u8]) -> bool {
    use mesh_platform::invite::{Invite, InvitePayload};
    let mut any = payload_round_trip::<InvitePayload>(data);
    if let Ok(invite) = Invite::verify(data, NOW) {
        assert_eq!(invite.as_bytes(), data);
        let link = Invite::from_link(&invite.to_link(), NOW).expect("its own link verifies");
        let ndef = Invite::from_ndef(&invite.to_ndef(), NOW).expect("its own NDEF verifies");
        assert_eq!(link.as_bytes(), data);
        assert_eq!(ndef.as_bytes(), data);
        any = true;
    }
    any |= Invite::from_ndef(data, NOW).is_ok();
    if let Ok(text) = std::str::from_utf8(data) {
        any |= Invite::from_link(text, NOW).is_ok();
    }
    any
}

fn invite_seeds() -> Vec<Vec<u8>> {
    use mesh_platform::invite::Invite;
    let bytes = sign(&ALICE, invite_payload_value());
    let invite = Invite::verify(&bytes, NOW).expect("verifies");
    let mut payload = Vec::new();
    invite_payload_value().encode(&mut payload);
    vec![
        bytes,
        invite.to_link().into_bytes(),
        invite.to_ndef(),
        payload,
    ]
}

fn pin_set_value() -> mesh_platform::pinning::PinSetPayload {
    mesh_platform::pinning::PinSetPayload {
        sequence: 7,
        hosts: vec!["meshd.example.org".into(), "*.example.net".into()],
        pins: vec![[1; 32], [2; 32]],
    }
}

fn pin_set(data: &[u8]) -> bool {
    use mesh_platform::pinning::{PinPolicy, PinSetPayload};
    let any = payload_round_trip::<PinSetPayload>(data);
    let policy = PinPolicy::new(ALICE.peer_id());
    if let Ok(sequence) = policy.update(data, NOW) {
        assert_eq!(policy.active_sequence(), Some(sequence));
        true
    } else {
        assert_eq!(
            policy.active_sequence(),
            None,
            "a refused set is not active"
        );
        any
    }
}

fn pin_set_seeds() -> Vec<Vec<u8>> {
    use mesh_platform::pinning::sign_pin_set;
    let mut payload = Vec::new();
    pin_set_value().encode(&mut payload);
    vec![
        sign_pin_set(&ALICE, pin_set_value(), NOW, NOW.saturating_add(DAY_MS)).expect("signs"),
        payload,
    ]
}

fn keystore(data: &[u8]) -> bool {
    use mesh_platform::keystore::open_secret;
    // Bytes 2..10 are the Argon2id cost: cap it (1-2 passes, 8-64 KiB) so one input costs
    // milliseconds, then fix the checksum so the fuzzer gets past it.
    let mut body = data.to_vec();
    if body.len() >= 10 {
        // In-range costs up to the cap are kept as they are, so valid seeds stay valid.
        let ops = u32::from_le_bytes([body[2], body[3], body[4], body[5]]);
        let mem = u32::from_le_bytes([body[6], body[7], body[8], body[9]]);
        let ops = 1 + ops.wrapping_sub(1) % 2;
        let mem = (8 << 10) + mem.wrapping_sub(8 << 10) % (56 << 10);
        body[2..6].copy_from_slice(&ops.to_le_bytes());
        body[6..10].copy_from_slice(&mem.to_le_bytes());
    }
    let checksum = mesh_crypto::hash::blake2b_256(&body);
    body.extend_from_slice(checksum.as_bytes());
    open_secret(&body, PASSPHRASE).is_ok()
}

fn keystore_seeds() -> Vec<Vec<u8>> {
    use mesh_platform::keystore::{KdfParams, seal_with};
    [&b"secret"[..], &[0x42; 64]]
        .iter()
        .map(|secret| {
            let mut sealed = seal_with(
                secret,
                PASSPHRASE,
                KdfParams {
                    opslimit: 1,
                    memlimit: 8 << 10,
                },
                &[1; 16],
                &[2; 24],
            )
            .expect("seals");
            sealed.truncate(sealed.len() - 32);
            sealed
        })
        .collect()
}

// --- BLE and WebRTC ----------------------------------------------------------------------

fn ble_fragments(data: &[u8]) -> bool {
    use mesh_transport_ble::fragment::{
        MAX_BUFFERED, MAX_MESSAGE_LEN, MAX_REASSEMBLIES, Reassembler,
    };
    let mut r = Reassembler::new();
    let mut any = false;
    for (i, m) in messages(data).enumerate() {
        if let Ok(Some(message)) = r.push(m, Duration::from_millis(100 * i as u64)) {
            assert!(message.len() <= MAX_MESSAGE_LEN);
            any = true;
        }
        assert!(r.in_progress() <= MAX_REASSEMBLIES, "reassemblies bounded");
        assert!(r.buffered() <= MAX_BUFFERED, "buffered bytes bounded");
    }
    any
}

fn ble_fragments_seeds() -> Vec<Vec<u8>> {
    use mesh_transport_ble::fragment::fragment;
    let long: Vec<u8> = (0..600u16).map(|i| i.to_le_bytes()[0]).collect();
    let a = fragment(1, &long, 23).expect("fragments");
    let b = fragment(2, b"short", 185).expect("fragments");
    let mut interleaved: Vec<&[u8]> = Vec::new();
    for (i, f) in a.iter().enumerate() {
        interleaved.push(f);
        if i == 3 {
            interleaved.push(&b[0]);
        }
    }
    vec![join(&interleaved)]
}

fn description_value() -> mesh_transport_webrtc::wire::Description {
    use mesh_transport_webrtc::wire::{Description, DescriptionKind};
    Description {
        kind: DescriptionKind::Offer,
        session: [4; 16],
        from: ALICE.peer_id(),
        to: BOB.peer_id(),
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\na=fingerprint:sha-256 \
              00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n"
            .into(),
    }
}

fn webrtc_signaling(data: &[u8]) -> bool {
    use mesh_transport_webrtc::wire::{Description, parse_fingerprint, sdp_fingerprint};
    let mut any = payload_round_trip::<Description>(data);
    if let Ok(d) = Description::decode(data) {
        let encoded = d.encode().expect("a decoded description encodes");
        round_trip(&d, &encoded, Description::decode);
        any = true;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        any |= sdp_fingerprint(text).is_some();
        any |= parse_fingerprint(text).is_some();
    }
    any
}

fn webrtc_signaling_seeds() -> Vec<Vec<u8>> {
    let d = description_value();
    let mut payload = Vec::new();
    SignedPayload::encode(&d, &mut payload);
    vec![d.encode().expect("encodes"), payload, d.sdp.into_bytes()]
}

fn webrtc_channel(data: &[u8]) -> bool {
    use mesh_transport_webrtc::wire::{Reassembler, single_message, unreliable_frame};
    let mut r = Reassembler::default();
    let mut any = false;
    for m in messages(data) {
        if let Ok(Some(frame)) = r.push(m) {
            assert!(frame.len() <= Reassembler::MAX, "frames bounded");
            any = true;
        }
        if let Ok(frame) = unreliable_frame(m) {
            assert_eq!(single_message(frame).ok().as_deref(), Some(m));
        }
    }
    any
}

fn webrtc_channel_seeds() -> Vec<Vec<u8>> {
    use mesh_transport::ProtocolId;
    use mesh_transport::frame::Frame;
    use mesh_transport_webrtc::wire::chunks;
    let small = Frame::new(ProtocolId::DHT, vec![1; 40])
        .expect("frame")
        .encode();
    let large = Frame::new(ProtocolId::BLOB, vec![2; 40_000])
        .expect("frame")
        .encode();
    let mut parts: Vec<Vec<u8>> = chunks(&small).collect();
    parts.extend(chunks(&large).map(|c| c[..c.len().min(600)].to_vec()));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    vec![join(&refs)]
}

fn file_offer(data: &[u8]) -> bool {
    use mesh_node::files::{FileOffer, valid_name};
    let Some(offer) = FileOffer::decode(data) else {
        return false;
    };
    assert!(valid_name(&offer.name), "a decoded offer has a valid name");
    let again = FileOffer::decode(&offer.encode()).expect("re-encoded offer decodes");
    assert_eq!(again, offer);
    true
}

fn file_offer_seeds() -> Vec<Vec<u8>> {
    use mesh_blob::Manifest;
    use mesh_node::files::FileOffer;
    vec![
        FileOffer {
            blob: Manifest::of(b"content", 1024).expect("manifest").id(),
            size: 7,
            name: "notes.txt".into(),
            key: envelope_seeds().remove(0),
        }
        .encode(),
    ]
}
