//! Operations whose CPU instructions are counted (`mesh-bench count OP N`, run under valgrind's
//! callgrind by `cargo xtask bench --instructions`).
//!
//! An instruction count does not depend on what else the machine does, unlike a time, so the
//! regression guard on these is meaningful on a shared VM. Each operation is CPU work of one
//! product crate, deterministic but for key and nonce randomness (whose cost is constant): no
//! I/O, no threads. Only the calls inside [`instruction_counted_region`] are counted (callgrind's
//! `--toggle-collect`); setup and one warm-up call are outside it.

use std::hint::black_box;
use std::time::Duration;

use mesh_blob::Manifest;
use mesh_crypto::{Identity, UnixMillis, envelope};
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::bloom::Bloom;
use mesh_gossip::message::Frame as GossipFrame;
use mesh_gossip::{GossipMessage, GossipPayload, MessageId};
use mesh_transport::handshake::{Initiator, Responder, Session};
use mesh_transport::link::{Incoming, Link};
use mesh_transport::{Frame, ProtocolId};

/// An operation, ready to run (its inputs prepared); it returns whether it did its work (a
/// refused STORE is refused, a verification succeeds), so that a broken op cannot pass for a
/// cheap one.
type Op = Box<dyn FnMut() -> bool>;

/// Prepares an operation.
type Prepare = fn() -> Op;

/// The operations, by name: each entry prepares its inputs and returns the call to count.
pub(crate) const OPS: &[(&str, Prepare)] = &[
    ("crypto: seal 1 KiB envelope", seal),
    ("crypto: open 1 KiB envelope", open),
    ("crypto: sign 1 KiB", sign),
    ("crypto: verify 1 KiB", verify),
    ("transport: handshake, both sides", handshake),
    ("transport: seal + open a 1 KiB frame", frame),
    ("dht: decode + verify a 1 KiB record", record),
    ("dht: refused STORE, rate limited", refused_rate),
    ("dht: refused STORE, over quota", refused_quota),
    ("gossip: decode + verify a 1 KiB message", gossip_message),
    ("gossip: digest of 1,000 ids, built and queried", digest),
    ("blob: manifest of 1 MiB (64 KiB chunks)", manifest),
];

/// The op named `name`, prepared.
pub(crate) fn prepare(name: &str) -> Option<Op> {
    OPS.iter().find(|(n, _)| *n == name).map(|(_, make)| make())
}

/// Runs `op` `n` times. The one function callgrind collects in (by this name): keep it out of
/// line and its name unique.
#[inline(never)]
pub(crate) fn instruction_counted_region(op: &mut dyn FnMut() -> bool, n: u32) -> bool {
    let mut all = true;
    for _ in 0..n {
        all &= black_box(op());
    }
    all
}

const NOW: UnixMillis = UnixMillis(1_000_000);
const LATER: UnixMillis = UnixMillis(4_600_000);

fn alice() -> Identity {
    Identity::from_seed(&[1; 32])
}

fn bob() -> Identity {
    Identity::from_seed(&[2; 32])
}

fn seal() -> Op {
    let (a, b) = (alice(), bob().peer_id());
    let text = vec![0x42; 1024];
    Box::new(move || envelope::seal(&a, &b, b"mesh/message", &text).is_ok())
}

fn open() -> Op {
    let b = bob();
    let sealed =
        envelope::seal(&alice(), &b.peer_id(), b"mesh/message", &[0x42; 1024]).unwrap_or_default();
    Box::new(move || envelope::open(&b, &sealed, b"mesh/message").is_ok())
}

fn sign() -> Op {
    let a = alice();
    let m = vec![7; 1024];
    Box::new(move || {
        black_box(a.sign("mesh/bench/v1", &m));
        true
    })
}

fn verify() -> Op {
    let a = alice();
    let m = vec![7; 1024];
    let s = a.sign("mesh/bench/v1", &m);
    let id = a.peer_id();
    Box::new(move || id.verify("mesh/bench/v1", &m, &s).is_ok())
}

/// Alice's and Bob's sessions after a whole handshake (Alice dials Bob), if it succeeded.
fn sessions(alice: &Identity, bob: &Identity, binding: &[u8]) -> Option<(Session, Session)> {
    let (initiator, m1) = Initiator::start(binding, Some(bob.peer_id())).ok()?;
    let (responder, m2) = Responder::on_m1(bob, binding, &m1).ok()?;
    let (m3, ours) = initiator.on_m2(alice, &m2).ok()?;
    Some((ours, responder.on_m3(&m3).ok()?))
}

fn handshake() -> Op {
    let (a, b) = (alice(), bob());
    Box::new(move || {
        sessions(&a, &b, b"binding").is_some_and(|(ours, theirs)| ours.send_key == theirs.recv_key)
    })
}

fn frame() -> Op {
    let links = sessions(&alice(), &bob(), b"")
        .map(|(ours, theirs)| (Link::sealed(ours, false), Link::sealed(theirs, false)));
    let frame = Frame::new(ProtocolId::MESSAGING, vec![9; 1024]).ok();
    Box::new(move || {
        let (Some((tx, rx)), Some(frame)) = (&links, &frame) else {
            return false;
        };
        let sealed = tx.seal_frame(frame).unwrap_or_default();
        matches!(rx.receive(&sealed, Duration::ZERO), Ok(Incoming::Frame(got)) if got == *frame)
    })
}

fn record() -> Op {
    let payload = RecordPayload {
        name: b"profile".to_vec(),
        seq: 1,
        value: vec![0x42; 1024],
    };
    let bytes = Record::sign(&alice(), payload, NOW, LATER)
        .map(Record::into_bytes)
        .unwrap_or_default();
    Box::new(move || Record::decode(&bytes, NOW).is_ok())
}

/// One of the DHT suite's flood cases (the same prepared stores and STOREs).
fn refused(case: usize) -> Op {
    let (_, mut store, from, bytes) = crate::dht::cases().swap_remove(case);
    let peer = from.peer_id();
    Box::new(move || {
        store
            .put(peer, &bytes, crate::dht::NOW, Duration::ZERO)
            .is_err()
    })
}

fn refused_rate() -> Op {
    refused(0)
}

fn refused_quota() -> Op {
    refused(1)
}

fn gossip_message() -> Op {
    let payload = GossipPayload {
        topic: b"chat".to_vec(),
        body: vec![0x42; 1024],
    };
    let frame = GossipMessage::sign(&alice(), payload, NOW, LATER).map(|m| {
        GossipFrame::Push {
            ttl: 6,
            hops: 1,
            message: m.into_bytes(),
        }
        .encode()
    });
    let frame = frame.unwrap_or_default();
    Box::new(move || match GossipFrame::decode(&frame) {
        Ok(GossipFrame::Push { message, .. }) => GossipMessage::decode(&message, NOW).is_ok(),
        _ => false,
    })
}

fn digest() -> Op {
    let ids: Vec<MessageId> = (0..1000u32)
        .map(|i| {
            let mut id = [0; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            MessageId(mesh_crypto::hash::blake2b_256(&id).0)
        })
        .collect();
    Box::new(move || {
        let mut filter = Bloom::for_items(ids.len(), 0.01);
        for id in &ids {
            filter.insert(id, 7);
        }
        ids.iter().all(|id| filter.contains(id, 7))
    })
}

fn manifest() -> Op {
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    Box::new(move || Manifest::of(&data, 64 * 1024).is_ok_and(|m| m.count() == 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_prepared_by_name_and_runs() {
        for (name, _) in OPS {
            let mut op = prepare(name).unwrap_or_else(|| panic!("{name}"));
            assert!(
                instruction_counted_region(&mut op, 2),
                "{name} did not do its work"
            );
        }
        assert!(prepare("no such op").is_none());
    }
}
