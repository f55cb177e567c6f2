//! The sans-IO recovery core on its own, driven by hand: what an owner, a guardian and a
//! recovering device refuse (bad lists and thresholds, frames that do not open or verify,
//! acknowledgements, statuses and releases they cannot attribute), the limits a guardian
//! keeps (shares, sets per owner, revocations, pending requests, releases per day), its
//! waiting period, and the owner's and device's resends, give-ups and expiries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names,
    clippy::too_many_lines
)] // test code: each test is one scenario, told in order

use std::sync::Arc;

use mesh_crypto::{Hash256, Identity, PeerId, Signed, UnixMillis, envelope};
use mesh_recovery::RequestStatus;
use mesh_recovery::message::{
    Ack, AckKind, Frame, GRANT_CONTEXT, GuardianEntry, GuardianSet, MAX_FRAME_LEN, RELEASE_CONTEXT,
    RecoveryRequest, Revocation, SealedShare, SetId, StatusReport, commitment,
};
use mesh_recovery::node::{Event, Output, RecoveryConfig, RecoveryError, RecoveryNode};
use mesh_recovery::shamir::{self, ShamirError};

const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn at(ms: u64) -> UnixMillis {
    T0.saturating_add(ms)
}

fn ident(seed: u8) -> Arc<Identity> {
    Arc::new(Identity::from_seed(&[seed; 32]))
}

/// What a node put out: frames to send (to, address, bytes) and events.
#[derive(Default)]
struct Out {
    sends: Vec<(PeerId, String, Vec<u8>)>,
    events: Vec<Event>,
}

fn drain(node: &mut RecoveryNode) -> Out {
    let mut out = Out::default();
    while let Some(o) = node.poll() {
        match o {
            Output::Send { to, address, bytes } => out.sends.push((to, address, bytes)),
            Output::Event(e) => out.events.push(e),
        }
    }
    out
}

fn refused(from: PeerId, reason: &'static str) -> Vec<Event> {
    vec![Event::Refused { from, reason }]
}

/// Nodes that reach each other: node `i` has the identity of seed `i + 1` and address `n{i}`.
struct Net {
    ids: Vec<Arc<Identity>>,
    nodes: Vec<RecoveryNode>,
    /// Every frame sent: (from, to, bytes).
    sent: Vec<(usize, PeerId, Vec<u8>)>,
}

impl Net {
    fn new(configs: &[RecoveryConfig]) -> Self {
        let ids: Vec<Arc<Identity>> = (0..configs.len())
            .map(|i| ident(u8::try_from(i + 1).unwrap()))
            .collect();
        let nodes = ids
            .iter()
            .zip(configs)
            .map(|(id, c)| RecoveryNode::new(Arc::clone(id), *c))
            .collect();
        Self {
            ids,
            nodes,
            sent: Vec::new(),
        }
    }

    fn peer(&self, i: usize) -> PeerId {
        self.ids[i].peer_id()
    }

    fn at(&self, i: usize) -> (PeerId, String) {
        (self.peer(i), format!("n{i}"))
    }

    fn list(&self, which: &[usize]) -> Vec<(PeerId, String)> {
        which.iter().map(|&i| self.at(i)).collect()
    }

    /// Delivers every frame until none is left, at `now`; returns (node, event) in order.
    fn run(&mut self, now: UnixMillis) -> Vec<(usize, Event)> {
        let mut events = Vec::new();
        loop {
            let mut frames = Vec::new();
            for i in 0..self.nodes.len() {
                let out = drain(&mut self.nodes[i]);
                events.extend(out.events.into_iter().map(|e| (i, e)));
                for (to, _, bytes) in out.sends {
                    self.sent.push((i, to, bytes.clone()));
                    if let Some(j) = self.ids.iter().position(|id| id.peer_id() == to) {
                        frames.push((i, j, bytes));
                    }
                }
            }
            if frames.is_empty() {
                return events;
            }
            for (i, j, bytes) in frames {
                let (from, address) = self.at(i);
                self.nodes[j].handle(from, &address, &bytes, now);
            }
        }
    }

    /// Hands `bytes` to node `to` as if node `from` sent it, and runs.
    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        bytes: &[u8],
        now: UnixMillis,
    ) -> Vec<(usize, Event)> {
        let (peer, address) = self.at(from);
        self.nodes[to].handle(peer, &address, bytes, now);
        self.run(now)
    }

    /// The REQUEST frames node `from` sent, in order.
    fn requests(&self, from: usize) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|(i, _, f)| *i == from && matches!(Frame::decode(f), Ok(Frame::Request(_))))
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

fn of(events: &[(usize, Event)], node: usize) -> Vec<Event> {
    events
        .iter()
        .filter(|(i, _)| *i == node)
        .map(|(_, e)| e.clone())
        .collect()
}

fn request_id(frame: &[u8], now: UnixMillis) -> Hash256 {
    let Ok(Frame::Request(b)) = Frame::decode(frame) else {
        panic!("not a request frame");
    };
    *Signed::<RecoveryRequest>::decode(&b, now).unwrap().id()
}

fn guardian_config() -> RecoveryConfig {
    RecoveryConfig::default()
}

/// Owner 0 protects its key with guardians `guardians` (each accepting it), `k` of them.
fn protected(net: &mut Net, guardians: &[usize], k: u8, now: UnixMillis) -> SetId {
    let owner = net.peer(0);
    for &g in guardians {
        net.nodes[g].allow_owner(owner);
    }
    let list = net.list(guardians);
    let set = net.nodes[0].protect(&list, k, now).unwrap();
    let events = net.run(now);
    assert!(
        of(&events, 0).contains(&Event::Protected { set_id: set }),
        "{events:?}"
    );
    set
}

/// Owner 0, guardian 1 (configured `guardian`) and device 2 (configured `device`), the owner's
/// key [`protected`] at `T0` by guardian 1 alone, one of one, and no request made yet. Returns
/// the net, the set and guardian 1 as the list a device asks, `net.list(&[1])`.
fn one_guardian(
    guardian: RecoveryConfig,
    device: RecoveryConfig,
) -> (Net, SetId, Vec<(PeerId, String)>) {
    let mut net = Net::new(&[RecoveryConfig::default(), guardian, device]);
    let set = protected(&mut net, &[1], 1, T0);
    let one = net.list(&[1]);
    (net, set, one)
}

/// An owner-signed set dealing `secret` `k` of `guardians`, and each guardian's sealed share.
fn deal(
    owner: &Identity,
    guardians: &[PeerId],
    k: u8,
    secret: &[u8; 32],
    set_id: SetId,
) -> Vec<SealedShare> {
    let n = u8::try_from(guardians.len()).unwrap();
    let shares = shamir::split(secret, k, n).unwrap();
    let salts: Vec<[u8; 32]> = (0..n).map(|i| [i.wrapping_add(100); 32]).collect();
    let entries = guardians
        .iter()
        .zip(&shares)
        .zip(&salts)
        .map(|((g, s), salt)| GuardianEntry {
            guardian: *g,
            x: s.x,
            commitment: commitment(&set_id, s, salt),
        })
        .collect();
    let set = Signed::sign(
        owner,
        GuardianSet {
            set_id,
            k,
            guardians: entries,
        },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap()
    .into_bytes();
    shares
        .into_iter()
        .zip(salts)
        .map(|(share, salt)| SealedShare {
            request_id: Hash256::default(),
            share,
            salt,
            set: set.clone(),
        })
        .collect()
}

fn grant(owner: &Identity, to: &PeerId, sealed: &SealedShare) -> Vec<u8> {
    Frame::Grant(envelope::seal(owner, to, GRANT_CONTEXT, &sealed.encode()).unwrap()).encode()
}

fn release(guardian: &Identity, to: &PeerId, sealed: &SealedShare, request: Hash256) -> Vec<u8> {
    let mut s = sealed.clone();
    s.request_id = request;
    Frame::Release(envelope::seal(guardian, to, RELEASE_CONTEXT, &s.encode()).unwrap()).encode()
}

fn status(guardian: &Identity, request_id: Hash256, status: RequestStatus) -> Vec<u8> {
    let s = Signed::sign(
        guardian,
        StatusReport { request_id, status },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap();
    Frame::Status(s.into_bytes()).encode()
}

fn ack(guardian: &Identity, owner: PeerId, set_id: SetId, kind: AckKind) -> Vec<u8> {
    let a = Signed::sign(
        guardian,
        Ack {
            kind,
            owner,
            set_id,
        },
        T0,
        UnixMillis::NEVER,
    )
    .unwrap();
    Frame::Ack(a.into_bytes()).encode()
}

/// `n` distinct identities, none of them seed `[1; 32]`.
fn many(n: usize) -> Vec<Arc<Identity>> {
    (0..n)
        .map(|i| {
            let mut seed = [0xee; 32];
            seed[..8].copy_from_slice(&u64::try_from(i).unwrap().to_le_bytes());
            Arc::new(Identity::from_seed(&seed))
        })
        .collect()
}

// ------------------------------------------------------------------------------- owner

#[test]
fn protect_refuses_a_bad_guardian_list_or_threshold_and_sends_nothing() {
    let owner_id = ident(1);
    let me = owner_id.peer_id();
    let mut owner = RecoveryNode::new(owner_id, RecoveryConfig::default());
    let list: Vec<(PeerId, String)> = many(256)
        .iter()
        .map(|g| (g.peer_id(), String::new()))
        .collect();
    assert_eq!(
        owner.protect(&list, 2, T0),
        Err(RecoveryError::Guardians("more than 255 guardians"))
    );
    let with_me = vec![list[0].clone(), (me, String::new())];
    assert_eq!(
        owner.protect(&with_me, 1, T0),
        Err(RecoveryError::Guardians(
            "the owner cannot be its own guardian"
        ))
    );
    let twice = vec![list[0].clone(), list[1].clone(), list[0].clone()];
    assert_eq!(
        owner.protect(&twice, 1, T0),
        Err(RecoveryError::Guardians("a guardian is listed twice"))
    );
    let two = &list[..2];
    assert_eq!(
        owner.protect(two, 0, T0),
        Err(RecoveryError::Shamir(ShamirError::BadThreshold {
            k: 0,
            n: 2
        }))
    );
    assert_eq!(
        owner.protect(two, 3, T0),
        Err(RecoveryError::Shamir(ShamirError::BadThreshold {
            k: 3,
            n: 2
        }))
    );
    assert_eq!(
        owner.protect(&[], 1, T0),
        Err(RecoveryError::Shamir(ShamirError::BadThreshold {
            k: 1,
            n: 0
        }))
    );
    assert!(owner.poll().is_none(), "nothing sent for a refused list");
    assert_eq!(owner.next_wakeup(), None, "and nothing to resend");
}

#[test]
fn a_set_of_255_guardians_fills_a_frame_exactly_and_its_last_guardian_keeps_its_share() {
    let owner_id = ident(1);
    let me = owner_id.peer_id();
    let mut owner = RecoveryNode::new(owner_id, RecoveryConfig::default());
    let guardians = many(255);
    let named: Vec<(PeerId, String)> = guardians
        .iter()
        .enumerate()
        .map(|(i, g)| (g.peer_id(), format!("g{i}")))
        .collect();
    let set = owner.protect(&named, 255, T0).unwrap();
    let out = drain(&mut owner);
    assert!(out.events.is_empty());
    assert_eq!(out.sends.len(), 255, "one grant per guardian");
    for ((to, address, bytes), (g, a)) in out.sends.iter().zip(&named) {
        assert_eq!((to, address), (g, a));
        assert_eq!(
            bytes.len(),
            MAX_FRAME_LEN,
            "the largest set makes the largest frame"
        );
    }
    assert_eq!(owner.unacknowledged(&set).len(), 255);

    let last = Arc::clone(&guardians[254]);
    let mut g = RecoveryNode::new(Arc::clone(&last), RecoveryConfig::default());
    g.allow_owner(me);
    g.handle(me, "owner", &out.sends[254].2, T0);
    let gout = drain(&mut g);
    assert_eq!(
        gout.events,
        vec![Event::ShareStored {
            owner: me,
            set_id: set
        }]
    );
    let kept = g.open_held(&me, &set, T0).unwrap();
    assert_eq!(kept.share.x, 255);
    let signed = Signed::<GuardianSet>::decode(&kept.set, T0).unwrap();
    assert_eq!(
        (signed.payload().k, signed.payload().guardians.len()),
        (255, 255)
    );
    assert_eq!(gout.sends.len(), 1);
    assert_eq!((gout.sends[0].0, gout.sends[0].1.as_str()), (me, "owner"));
    owner.handle(last.peer_id(), "g254", &gout.sends[0].2, T0);
    assert_eq!(
        drain(&mut owner).events,
        vec![Event::Acknowledged {
            set_id: set,
            guardian: last.peer_id(),
            kind: AckKind::Stored
        }]
    );
    assert_eq!(owner.unacknowledged(&set).len(), 254);
    assert!(!owner.unacknowledged(&set).contains(&last.peer_id()));
}

#[test]
fn refresh_and_revoke_refuse_a_set_the_owner_does_not_know() {
    let mut net = Net::new(&[RecoveryConfig::default(), guardian_config()]);
    let unknown = [9; 32];
    let list = net.list(&[1]);
    assert_eq!(
        net.nodes[0].refresh(&unknown, &list, 1, T0),
        Err(RecoveryError::Unknown("set"))
    );
    assert_eq!(
        net.nodes[0].revoke(&unknown, T0),
        Err(RecoveryError::Unknown("set"))
    );
    assert!(net.nodes[0].poll().is_none());
    // A refresh to a bad list leaves the old set alone: nothing revoked.
    let set = protected(&mut net, &[1], 1, T0);
    assert_eq!(
        net.nodes[0].refresh(&set, &list, 2, at(1)),
        Err(RecoveryError::Shamir(ShamirError::BadThreshold {
            k: 2,
            n: 1
        }))
    );
    assert!(net.nodes[0].poll().is_none());
    assert_eq!(net.nodes[1].held(), vec![(net.peer(0), set)]);
}

#[test]
fn an_owner_that_forgot_its_set_revokes_it_at_the_guardians_named() {
    let mut net = Net::new(&[
        RecoveryConfig::default(),
        guardian_config(),
        guardian_config(),
    ]);
    let owner = net.peer(0);
    let set = protected(&mut net, &[1, 2], 2, T0);
    // The owner restarts: a new core for the same identity, which knows no set.
    net.nodes[0] = RecoveryNode::new(Arc::clone(&net.ids[0]), RecoveryConfig::default());
    assert_eq!(
        net.nodes[0].revoke(&set, at(1)),
        Err(RecoveryError::Unknown("set"))
    );
    let list = net.list(&[1, 2]);
    net.nodes[0].revoke_at(&set, &list, at(1)).unwrap();
    assert_eq!(
        net.nodes[0].unacknowledged(&set),
        vec![net.peer(1), net.peer(2)]
    );
    let events = net.run(at(1));
    for g in [1, 2] {
        assert_eq!(
            of(&events, g),
            vec![Event::ShareRevoked { owner, set_id: set }]
        );
        assert!(net.nodes[g].held().is_empty());
        assert_eq!(net.nodes[g].revoked_at(&(owner, set)), Some(at(1)));
    }
    assert_eq!(
        of(&events, 0),
        vec![
            Event::Acknowledged {
                set_id: set,
                guardian: net.peer(1),
                kind: AckKind::Revoked
            },
            Event::Acknowledged {
                set_id: set,
                guardian: net.peer(2),
                kind: AckKind::Revoked
            },
        ]
    );
    // Acknowledged everywhere: the set is done with.
    assert!(net.nodes[0].unacknowledged(&set).is_empty());
    assert_eq!(
        net.nodes[0].revoke(&set, at(2)),
        Err(RecoveryError::Unknown("set"))
    );
    assert_eq!(net.nodes[0].next_wakeup(), None);
}

#[test]
fn an_owner_refuses_acknowledgements_it_cannot_attribute_and_counts_each_guardian_once() {
    let owner_id = ident(1);
    let me = owner_id.peer_id();
    let (g1, g2) = (ident(2), ident(3));
    let mut owner = RecoveryNode::new(owner_id, RecoveryConfig::default());
    let list = vec![(g1.peer_id(), String::new()), (g2.peer_id(), String::new())];
    let set = owner.protect(&list, 2, T0).unwrap();
    drain(&mut owner);
    let mut hand = |from: PeerId, bytes: &[u8]| {
        owner.handle(from, "", bytes, T0);
        drain(&mut owner).events
    };
    assert_eq!(
        hand(g1.peer_id(), &Frame::Ack(vec![1, 2, 3]).encode()),
        refused(g1.peer_id(), "bad acknowledgement")
    );
    // Signed by guardian 1, sent by guardian 2.
    assert_eq!(
        hand(g2.peer_id(), &ack(&g1, me, set, AckKind::Stored)),
        refused(g2.peer_id(), "acknowledgement not from its guardian")
    );
    // For another owner.
    let other = ident(99).peer_id();
    assert_eq!(
        hand(g1.peer_id(), &ack(&g1, other, set, AckKind::Stored)),
        refused(g1.peer_id(), "acknowledgement not from its guardian")
    );
    // For a set this owner does not have, or a revocation it did not send: nothing.
    assert!(hand(g1.peer_id(), &ack(&g1, me, [9; 32], AckKind::Stored)).is_empty());
    assert!(hand(g1.peer_id(), &ack(&g1, me, set, AckKind::Revoked)).is_empty());
    let stored = ack(&g1, me, set, AckKind::Stored);
    assert_eq!(
        hand(g1.peer_id(), &stored),
        vec![Event::Acknowledged {
            set_id: set,
            guardian: g1.peer_id(),
            kind: AckKind::Stored
        }]
    );
    assert!(
        hand(g1.peer_id(), &stored).is_empty(),
        "the same acknowledgement again changes nothing"
    );
    assert_eq!(
        hand(g2.peer_id(), &ack(&g2, me, set, AckKind::Stored)),
        vec![
            Event::Acknowledged {
                set_id: set,
                guardian: g2.peer_id(),
                kind: AckKind::Stored
            },
            Event::Protected { set_id: set },
        ]
    );
    assert!(owner.unacknowledged(&set).is_empty());
}

#[test]
fn a_refused_share_keeps_a_set_from_being_protected() {
    let mut net = Net::new(&[
        RecoveryConfig::default(),
        guardian_config(),
        guardian_config(),
    ]);
    let owner = net.peer(0);
    net.nodes[1].allow_owner(owner);
    // Guardian 2's user accepted the owner, then changed their mind.
    net.nodes[2].allow_owner(owner);
    net.nodes[2].forget_owner(&owner);
    let list = net.list(&[1, 2]);
    let set = net.nodes[0].protect(&list, 1, T0).unwrap();
    let events = net.run(T0);
    assert_eq!(
        of(&events, 2),
        refused(owner, "owner not accepted by this guardian")
    );
    assert!(net.nodes[2].held().is_empty());
    assert_eq!(
        of(&events, 0),
        vec![
            Event::Acknowledged {
                set_id: set,
                guardian: net.peer(1),
                kind: AckKind::Stored
            },
            Event::Acknowledged {
                set_id: set,
                guardian: net.peer(2),
                kind: AckKind::Refused
            },
        ],
        "no Protected: one guardian holds nothing"
    );
    assert!(net.nodes[0].unacknowledged(&set).is_empty(), "no resends");
    assert_eq!(net.nodes[0].next_wakeup(), None);
}

#[test]
fn an_owner_resends_an_unacknowledged_grant_with_backoff_then_gives_up() {
    let config = RecoveryConfig {
        resend_interval_ms: 1000,
        max_resends: 3,
        ..RecoveryConfig::default()
    };
    let mut owner = RecoveryNode::new(ident(1), config);
    let g = ident(2).peer_id();
    let set = owner.protect(&[(g, "g".into())], 1, T0).unwrap();
    let first = drain(&mut owner).sends;
    assert_eq!(first.len(), 1);
    assert_eq!(owner.next_wakeup(), Some(at(1000)));
    owner.tick(at(999));
    assert!(owner.poll().is_none(), "not before its time");
    owner.tick(at(1000));
    let out = drain(&mut owner);
    assert_eq!(out.sends, first, "the same grant again");
    assert!(out.events.is_empty());
    assert_eq!(owner.next_wakeup(), Some(at(1000 + 2000)), "twice the wait");
    owner.tick(at(3000));
    assert_eq!(drain(&mut owner).sends, first);
    assert_eq!(owner.next_wakeup(), Some(at(3000 + 4000)));
    owner.tick(at(7000));
    let out = drain(&mut owner);
    assert!(out.sends.is_empty(), "three tries were the most");
    assert_eq!(
        out.events,
        vec![Event::GaveUp {
            set_id: set,
            guardian: g
        }]
    );
    assert!(owner.unacknowledged(&set).is_empty());
    assert_eq!(owner.next_wakeup(), None);
}

// ---------------------------------------------------------------------------- guardian

#[test]
fn a_guardian_refuses_frames_and_grants_that_do_not_open_or_verify_without_acknowledging() {
    let owner = ident(1);
    let o = owner.peer_id();
    let g_id = ident(2);
    let (g, g2, g3) = (g_id.peer_id(), ident(3).peer_id(), ident(4).peer_id());
    let stranger = ident(9);
    let mut guardian = RecoveryNode::new(Arc::clone(&g_id), guardian_config());
    guardian.allow_owner(o);
    let shares = deal(&owner, &[g, g2], 2, &owner.seed(), [5; 32]);
    let mut check = |from: PeerId, bytes: &[u8], reason: &'static str| {
        guardian.handle(from, "owner", bytes, T0);
        let out = drain(&mut guardian);
        assert_eq!(out.events, refused(from, reason));
        assert!(out.sends.is_empty(), "no acknowledgement for {reason}");
    };
    check(o, &[], "malformed frame");
    check(o, &[1, 77], "malformed frame");
    check(
        o,
        &Frame::Grant(vec![0; 10]).encode(),
        "grant does not open",
    );
    check(o, &grant(&owner, &g2, &shares[1]), "grant does not open");
    let junk = envelope::seal(&owner, &g, GRANT_CONTEXT, b"junk").unwrap();
    check(o, &Frame::Grant(junk).encode(), "malformed grant");
    let mut with_request = shares[0].clone();
    with_request.request_id = Hash256([1; 32]);
    check(o, &grant(&owner, &g, &with_request), "malformed grant");
    let mut bad_set = shares[0].clone();
    bad_set.set = b"junk".to_vec();
    check(o, &grant(&owner, &g, &bad_set), "bad guardian set");
    let s = stranger.peer_id();
    check(
        s,
        &grant(&stranger, &g, &shares[0]),
        "guardian set not signed by the grant's sender",
    );
    check(
        o,
        &grant(&owner, &g, &shares[1]),
        "share does not match its commitment",
    );
    let mut tweaked = shares[0].clone();
    tweaked.share.y[0] ^= 1;
    check(
        o,
        &grant(&owner, &g, &tweaked),
        "share does not match its commitment",
    );
    let others = deal(&owner, &[g2, g3], 1, &owner.seed(), [6; 32]);
    check(
        o,
        &grant(&owner, &g, &others[0]),
        "not a guardian of this set",
    );
    assert!(guardian.held().is_empty());

    // The real one is kept and acknowledged.
    guardian.handle(o, "owner", &grant(&owner, &g, &shares[0]), T0);
    let out = drain(&mut guardian);
    assert_eq!(
        out.events,
        vec![Event::ShareStored {
            owner: o,
            set_id: [5; 32]
        }]
    );
    assert_eq!(out.sends.len(), 1);
    let Ok(Frame::Ack(a)) = Frame::decode(&out.sends[0].2) else {
        panic!("an acknowledgement");
    };
    let a = Signed::<Ack>::decode(&a, T0).unwrap();
    assert_eq!(*a.author(), g);
    assert_eq!(
        a.payload(),
        &Ack {
            kind: AckKind::Stored,
            owner: o,
            set_id: [5; 32]
        }
    );
}

#[test]
fn a_full_guardian_refuses_new_owners_but_acknowledges_a_share_it_keeps_again() {
    let full = RecoveryConfig {
        require_known_owner: false,
        max_shares: 1,
        ..RecoveryConfig::default()
    };
    let mut net = Net::new(&[RecoveryConfig::default(), RecoveryConfig::default(), full]);
    let (o1, o2) = (net.peer(0), net.peer(1));
    // No allow_owner: this guardian keeps shares of anyone, up to one.
    let g = net.list(&[2]);
    let set1 = net.nodes[0].protect(&g, 1, T0).unwrap();
    let events = net.run(T0);
    assert_eq!(
        of(&events, 2),
        vec![Event::ShareStored {
            owner: o1,
            set_id: set1
        }]
    );
    assert!(of(&events, 0).contains(&Event::Protected { set_id: set1 }));
    let set2 = net.nodes[1].protect(&g, 1, T0).unwrap();
    let events = net.run(T0);
    assert_eq!(of(&events, 2), refused(o2, "guardian full"));
    assert_eq!(
        of(&events, 1),
        vec![Event::Acknowledged {
            set_id: set2,
            guardian: net.peer(2),
            kind: AckKind::Refused
        }]
    );
    assert_eq!(net.nodes[2].held(), vec![(o1, set1)]);
    // The first owner's grant again (its acknowledgement was lost): acknowledged again as
    // stored, not stored twice, not refused for being full.
    let first_grant = net
        .sent
        .iter()
        .find(|(i, _, f)| *i == 0 && matches!(Frame::decode(f), Ok(Frame::Grant(_))))
        .unwrap()
        .2
        .clone();
    net.nodes[2].handle(o1, "n0", &first_grant, at(1));
    let out = drain(&mut net.nodes[2]);
    assert!(out.events.is_empty());
    assert_eq!(out.sends.len(), 1);
    let Ok(Frame::Ack(a)) = Frame::decode(&out.sends[0].2) else {
        panic!("an acknowledgement");
    };
    assert_eq!(
        Signed::<Ack>::decode(&a, at(1)).unwrap().payload().kind,
        AckKind::Stored
    );
}

#[test]
fn a_guardian_keeps_at_most_max_sets_per_owner_and_the_oldest_goes() {
    let config = RecoveryConfig {
        max_sets_per_owner: 2,
        ..RecoveryConfig::default()
    };
    let mut net = Net::new(&[RecoveryConfig::default(), config]);
    let owner = net.peer(0);
    net.nodes[1].track_changes();
    let s1 = protected(&mut net, &[1], 1, T0);
    let s2 = protected(&mut net, &[1], 1, at(1));
    let s3 = protected(&mut net, &[1], 1, at(2));
    let mut held = net.nodes[1].held();
    held.sort();
    let mut want = vec![(owner, s2), (owner, s3)];
    want.sort();
    assert_eq!(held, want, "the oldest set went");
    assert!(net.nodes[1].held_record(&(owner, s1)).is_none());
    let mut changes = net.nodes[1].take_changes();
    changes.sort();
    let mut want = vec![(owner, s1), (owner, s2), (owner, s3)];
    want.sort();
    assert_eq!(changes, want, "the removal is a change to persist too");
}

#[test]
fn a_revocation_deletes_the_share_and_answers_held_requests_with_no_share() {
    let (mut net, set, one) = one_guardian(guardian_config(), RecoveryConfig::default());
    let (owner, guardian) = (net.peer(0), net.peer(1));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    let events = net.run(at(1));
    assert!(matches!(
        of(&events, 1).as_slice(),
        [Event::ApprovalNeeded { .. }]
    ));
    assert_eq!(net.nodes[1].pending_requests().len(), 1);

    // A revocation that does not verify changes nothing.
    let events = net.deliver(0, 1, &Frame::Revoke(vec![1, 2, 3]).encode(), at(2));
    assert_eq!(of(&events, 1), refused(owner, "bad revocation"));
    assert_eq!(net.nodes[1].held(), vec![(owner, set)]);

    net.nodes[0].revoke(&set, at(3)).unwrap();
    let events = net.run(at(3));
    assert_eq!(
        of(&events, 1),
        vec![Event::ShareRevoked { owner, set_id: set }]
    );
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::NoShare
        }],
        "the held request is answered"
    );
    assert!(net.nodes[1].pending_requests().is_empty());
    assert!(net.nodes[1].held().is_empty());
    assert_eq!(net.nodes[1].revoked_at(&(owner, set)), Some(at(3)));
    let request = net.requests(2)[0].clone();
    assert_eq!(
        net.nodes[1].approve(&request_id(&request, at(3)), at(3)),
        Err(RecoveryError::Unknown("request"))
    );
    // The same request again hears the same answer.
    let events = net.deliver(2, 1, &request, at(4));
    assert!(of(&events, 1).is_empty());
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::NoShare
        }]
    );
    // The device asks no further: the answer was final.
    assert_eq!(net.nodes[2].next_wakeup(), None);
}

#[test]
fn a_guardian_remembers_at_most_max_revoked_revocations_forgetting_the_oldest() {
    let config = RecoveryConfig {
        max_revoked: 1,
        ..RecoveryConfig::default()
    };
    let mut net = Net::new(&[RecoveryConfig::default(), config]);
    let owner = net.peer(0);
    net.nodes[1].allow_owner(owner);
    net.nodes[1].track_changes();
    let g = net.list(&[1]);
    net.nodes[0].revoke_at(&[1; 32], &g, T0).unwrap();
    net.run(T0);
    assert_eq!(net.nodes[1].revoked_at(&(owner, [1; 32])), Some(T0));
    net.nodes[0].revoke_at(&[2; 32], &g, at(1)).unwrap();
    net.run(at(1));
    assert_eq!(net.nodes[1].revoked_at(&(owner, [1; 32])), None);
    assert_eq!(net.nodes[1].revoked_at(&(owner, [2; 32])), Some(at(1)));
    assert_eq!(
        net.nodes[1].take_changes(),
        vec![(owner, [1; 32]), (owner, [2; 32])]
    );
}

#[test]
fn a_guardian_answers_no_share_for_an_owner_or_set_it_does_not_hold() {
    let (mut net, _, one) = one_guardian(guardian_config(), RecoveryConfig::default());
    let (owner, guardian) = (net.peer(0), net.peer(1));
    net.nodes[2]
        .recover(owner, &one, Some([7; 32]), at(1))
        .unwrap();
    let events = net.run(at(1));
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::NoShare
        }]
    );
    assert!(of(&events, 1).is_empty(), "nothing for the guardian's user");
    let nobody = ident(77).peer_id();
    net.nodes[2].recover(nobody, &one, None, at(2)).unwrap();
    let events = net.run(at(2));
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner: nobody,
            guardian,
            status: RequestStatus::NoShare
        }]
    );
    assert_eq!(net.nodes[2].next_wakeup(), None, "final answers: no resend");
    assert_eq!(
        net.nodes[2].take_recovered(&owner).err(),
        Some(RecoveryError::Shamir(ShamirError::NotEnoughShares {
            have: 0,
            need: 0
        }))
    );
}

#[test]
fn approve_and_deny_refuse_a_request_that_is_not_pending() {
    let mut g = RecoveryNode::new(ident(2), guardian_config());
    let id = Hash256([3; 32]);
    assert_eq!(g.approve(&id, T0), Err(RecoveryError::Unknown("request")));
    assert_eq!(g.deny(&id, T0), Err(RecoveryError::Unknown("request")));
    assert!(g.poll().is_none());
    assert!(g.pending_requests().is_empty());
}

#[test]
fn an_approved_request_is_released_when_the_waiting_period_ends() {
    let waiting = RecoveryConfig {
        min_wait_ms: 10_000,
        ..RecoveryConfig::default()
    };
    let (mut net, _, one) = one_guardian(waiting, RecoveryConfig::default());
    let (owner, guardian, device) = (net.peer(0), net.peer(1), net.peer(2));
    let codes = net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    let events = net.run(at(1));
    let rid = request_id(&net.requests(2)[0], at(1));
    assert_eq!(
        of(&events, 1),
        vec![Event::ApprovalNeeded {
            request_id: rid,
            owner,
            requester: device,
            code: codes[0].1.clone()
        }]
    );
    assert_eq!(codes[0].0, guardian);
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::Pending
        }]
    );
    assert_eq!(net.nodes[1].pending_requests(), vec![(rid, owner, device)]);
    assert_eq!(
        net.nodes[1].next_wakeup(),
        None,
        "nothing due before approval"
    );
    net.nodes[1].approve(&rid, at(2)).unwrap();
    assert!(net.run(at(2)).is_empty(), "approved, still waiting");
    assert_eq!(net.nodes[1].next_wakeup(), Some(at(1 + 10_000)));
    net.nodes[1].tick(at(10_000));
    assert!(net.run(at(10_000)).is_empty());
    net.nodes[1].tick(at(10_001));
    let events = net.run(at(10_001));
    assert_eq!(
        of(&events, 1),
        vec![Event::Released {
            request_id: rid,
            owner,
            requester: device
        }]
    );
    assert_eq!(
        of(&events, 2),
        vec![
            Event::ShareAccepted { owner, guardian },
            Event::Recovered { owner }
        ]
    );
    assert!(net.nodes[1].pending_requests().is_empty());
    assert_eq!(
        net.nodes[2].take_recovered(&owner).unwrap().peer_id(),
        owner
    );
}

#[test]
fn without_approval_a_share_is_released_after_the_waiting_period_alone() {
    let waiting = RecoveryConfig {
        require_approval: false,
        min_wait_ms: 5000,
        ..RecoveryConfig::default()
    };
    let (mut net, _, one) = one_guardian(waiting, RecoveryConfig::default());
    let (owner, guardian, device) = (net.peer(0), net.peer(1), net.peer(2));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    let events = net.run(at(1));
    assert!(of(&events, 1).is_empty(), "no approval asked");
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::Pending
        }]
    );
    assert_eq!(net.nodes[1].next_wakeup(), Some(at(5001)));
    net.nodes[1].tick(at(5001));
    let events = net.run(at(5001));
    let rid = request_id(&net.requests(2)[0], at(1));
    assert_eq!(
        of(&events, 1),
        vec![Event::Released {
            request_id: rid,
            owner,
            requester: device
        }]
    );
    assert!(of(&events, 2).contains(&Event::Recovered { owner }));
}

#[test]
fn a_request_that_expires_during_the_waiting_period_is_not_released() {
    let waiting = RecoveryConfig {
        require_approval: false,
        min_wait_ms: 20_000,
        ..RecoveryConfig::default()
    };
    let short = RecoveryConfig {
        request_validity_ms: 10_000,
        ..RecoveryConfig::default()
    };
    let (mut net, _, one) = one_guardian(waiting, short);
    let (owner, device) = (net.peer(0), net.peer(2));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    net.run(at(1));
    net.nodes[1].tick(at(20_001));
    let events = net.run(at(20_001));
    assert_eq!(
        of(&events, 1),
        refused(device, "request expired before its release")
    );
    assert!(
        !net.sent
            .iter()
            .any(|(i, _, f)| *i == 1 && matches!(Frame::decode(f), Ok(Frame::Release(_)))),
        "no share left the guardian"
    );
    assert!(net.nodes[1].pending_requests().is_empty());
}

#[test]
fn a_guardian_releases_at_most_releases_per_day_shares_of_an_owner() {
    let one_a_day = RecoveryConfig {
        releases_per_day: 1,
        ..RecoveryConfig::default()
    };
    let d = RecoveryConfig::default();
    let mut net = Net::new(&[d, one_a_day, d, d]);
    let (owner, guardian) = (net.peer(0), net.peer(1));
    protected(&mut net, &[1], 1, T0);
    let one = net.list(&[1]);
    // Two devices ask; the guardian's user approves both.
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    net.nodes[3].recover(owner, &one, None, at(1)).unwrap();
    net.run(at(1));
    let (r2, r3) = (
        request_id(&net.requests(2)[0], at(1)),
        request_id(&net.requests(3)[0], at(1)),
    );
    net.nodes[1].approve(&r2, at(2)).unwrap();
    let events = net.run(at(2));
    assert!(of(&events, 2).contains(&Event::Recovered { owner }));
    net.nodes[1].approve(&r3, at(3)).unwrap();
    let events = net.run(at(3));
    assert!(of(&events, 1).is_empty(), "no second release");
    assert_eq!(
        of(&events, 3),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::RateLimited
        }]
    );
    // A new request within the day is told at once.
    net.nodes[3].recover(owner, &one, None, at(4)).unwrap();
    let events = net.run(at(4));
    assert!(of(&events, 1).is_empty(), "not even asked");
    assert_eq!(
        of(&events, 3),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::RateLimited
        }]
    );
    // A day after the release, a request is held again.
    net.nodes[1].tick(at(2 + DAY_MS));
    net.nodes[3]
        .recover(owner, &one, None, at(2 + DAY_MS))
        .unwrap();
    let events = net.run(at(2 + DAY_MS));
    assert!(matches!(
        of(&events, 1).as_slice(),
        [Event::ApprovalNeeded { .. }]
    ));
}

#[test]
fn a_new_request_from_a_device_replaces_its_unapproved_one_and_the_old_is_a_replay() {
    let (mut net, _, one) = one_guardian(guardian_config(), RecoveryConfig::default());
    let (owner, device) = (net.peer(0), net.peer(2));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    net.run(at(1));
    net.nodes[2].recover(owner, &one, None, at(2)).unwrap();
    let events = net.run(at(2));
    let sent = net.requests(2);
    let (r1, r2) = (request_id(&sent[0], at(2)), request_id(&sent[1], at(2)));
    assert!(matches!(
        of(&events, 1).as_slice(),
        [Event::ApprovalNeeded { request_id, .. }] if *request_id == r2
    ));
    assert_eq!(net.nodes[1].pending_requests(), vec![(r2, owner, device)]);
    let events = net.deliver(2, 1, &sent[0], at(3));
    assert_eq!(of(&events, 1), refused(device, "replayed request"));
    assert_eq!(
        net.nodes[1].approve(&r1, at(3)),
        Err(RecoveryError::Unknown("request"))
    );
    net.nodes[1].approve(&r2, at(3)).unwrap();
    let events = net.run(at(3));
    assert!(of(&events, 2).contains(&Event::Recovered { owner }));
}

#[test]
fn a_device_with_an_approved_request_waiting_is_busy_for_another() {
    let waiting = RecoveryConfig {
        min_wait_ms: 60_000,
        ..RecoveryConfig::default()
    };
    let (mut net, _, one) = one_guardian(waiting, RecoveryConfig::default());
    let (owner, guardian, device) = (net.peer(0), net.peer(1), net.peer(2));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    net.run(at(1));
    let r1 = request_id(&net.requests(2)[0], at(1));
    net.nodes[1].approve(&r1, at(2)).unwrap();
    net.run(at(2));
    net.nodes[2].recover(owner, &one, None, at(3)).unwrap();
    let events = net.run(at(3));
    assert_eq!(
        of(&events, 2),
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: RequestStatus::Busy
        }]
    );
    assert_eq!(
        net.nodes[1].pending_requests(),
        vec![(r1, owner, device)],
        "the approved one stays"
    );
}

#[test]
fn a_guardian_is_busy_beyond_max_pending_requests_or_max_seen_ids() {
    let few_pending = RecoveryConfig {
        max_pending: 1,
        ..RecoveryConfig::default()
    };
    let few_seen = RecoveryConfig {
        max_seen: 1,
        ..RecoveryConfig::default()
    };
    let d = RecoveryConfig::default();
    let mut net = Net::new(&[d, few_pending, few_seen, d, d]);
    let owner = net.peer(0);
    protected(&mut net, &[1, 2], 1, T0);
    let both = net.list(&[1, 2]);
    net.nodes[3].recover(owner, &both, None, at(1)).unwrap();
    let events = net.run(at(1));
    assert_eq!(of(&events, 3).len(), 2);
    assert!(of(&events, 3).iter().all(|e| matches!(
        e,
        Event::GuardianStatus {
            status: RequestStatus::Pending,
            ..
        }
    )));
    net.nodes[4].recover(owner, &both, None, at(2)).unwrap();
    let events = net.run(at(2));
    let mut busy: Vec<PeerId> = of(&events, 4)
        .into_iter()
        .map(|e| match e {
            Event::GuardianStatus {
                guardian,
                status: RequestStatus::Busy,
                ..
            } => guardian,
            e => panic!("{e:?}"),
        })
        .collect();
    busy.sort();
    let mut want = vec![net.peer(1), net.peer(2)];
    want.sort();
    assert_eq!(busy, want);
    for g in [1, 2] {
        assert_eq!(net.nodes[g].pending_requests().len(), 1);
    }
}

#[test]
fn a_repeated_request_hears_pending_then_its_denial_again() {
    let (mut net, _, one) = one_guardian(guardian_config(), RecoveryConfig::default());
    let (owner, guardian) = (net.peer(0), net.peer(1));
    net.nodes[2].recover(owner, &one, None, at(1)).unwrap();
    net.run(at(1));
    let request = net.requests(2)[0].clone();
    let rid = request_id(&request, at(1));
    let status_of = |s| {
        vec![Event::GuardianStatus {
            owner,
            guardian,
            status: s,
        }]
    };
    let events = net.deliver(2, 1, &request, at(2));
    assert!(of(&events, 1).is_empty(), "the user is not asked twice");
    assert_eq!(of(&events, 2), status_of(RequestStatus::Pending));
    net.nodes[1].deny(&rid, at(3)).unwrap();
    let events = net.run(at(3));
    assert_eq!(of(&events, 2), status_of(RequestStatus::Denied));
    assert_eq!(net.nodes[2].next_wakeup(), None, "a denial is final");
    let events = net.deliver(2, 1, &request, at(4));
    assert_eq!(of(&events, 2), status_of(RequestStatus::Denied));
    assert_eq!(
        net.nodes[1].deny(&rid, at(4)),
        Err(RecoveryError::Unknown("request"))
    );
}

// -------------------------------------------------------------------------- recovering

#[test]
fn a_device_refuses_statuses_it_cannot_attribute_and_asks_again_until_expiry() {
    let config = RecoveryConfig {
        resend_interval_ms: 1000,
        request_validity_ms: 10_000,
        ..RecoveryConfig::default()
    };
    let owner = ident(1).peer_id();
    let (g1, g2) = (ident(2), ident(3));
    let mut device = RecoveryNode::new(ident(50), config);
    let list = vec![(g1.peer_id(), "g1".into()), (g2.peer_id(), "g2".into())];
    device.recover(owner, &list, None, T0).unwrap();
    let first = drain(&mut device).sends;
    assert_eq!(first.len(), 2);
    let (r1, r2) = (request_id(&first[0].2, T0), request_id(&first[1].2, T0));
    let mut hand = |from: &Identity, bytes: &[u8]| {
        device.handle(from.peer_id(), "", bytes, T0);
        let out = drain(&mut device);
        assert!(out.sends.is_empty());
        out.events
    };
    assert_eq!(
        hand(&g1, &Frame::Status(vec![0; 5]).encode()),
        refused(g1.peer_id(), "bad status")
    );
    let by_g2 = status(&g2, r1, RequestStatus::Pending);
    assert_eq!(
        hand(&g1, &by_g2),
        refused(g1.peer_id(), "status not signed by its sender")
    );
    // Guardian 2 answering about the request sent to guardian 1, or about no request: ignored.
    assert!(hand(&g2, &by_g2).is_empty());
    assert!(hand(&g1, &status(&g1, Hash256([8; 32]), RequestStatus::Denied)).is_empty());
    assert_eq!(
        hand(&g1, &status(&g1, r1, RequestStatus::Pending)),
        vec![Event::GuardianStatus {
            owner,
            guardian: g1.peer_id(),
            status: RequestStatus::Pending
        }]
    );
    assert_eq!(
        hand(&g2, &status(&g2, r2, RequestStatus::Denied)),
        vec![Event::GuardianStatus {
            owner,
            guardian: g2.peer_id(),
            status: RequestStatus::Denied
        }]
    );
    // Guardian 2 said no: only guardian 1 is asked again.
    assert_eq!(device.next_wakeup(), Some(at(1000)));
    device.tick(at(1000));
    assert_eq!(drain(&mut device).sends, vec![first[0].clone()]);
    // A pending answer keeps the waits short: the next try is one interval later, not two.
    device.handle(
        g1.peer_id(),
        "",
        &status(&g1, r1, RequestStatus::Busy),
        at(1500),
    );
    drain(&mut device);
    device.tick(at(3000));
    assert_eq!(drain(&mut device).sends, vec![first[0].clone()]);
    assert_eq!(device.next_wakeup(), Some(at(3000 + 2000)));
    // The request expires: no more tries, and the application hears it.
    device.tick(at(10_000));
    let out = drain(&mut device);
    assert!(out.sends.is_empty());
    assert_eq!(
        out.events,
        vec![Event::RequestExpired {
            owner,
            guardian: g1.peer_id()
        }]
    );
    assert_eq!(device.next_wakeup(), None);
}

#[test]
fn a_device_refuses_releases_that_do_not_verify_and_recovers_from_good_ones() {
    let owner_id = ident(1);
    let owner = owner_id.peer_id();
    let (g1, g2, g3) = (ident(2), ident(3), ident(4));
    let device_id = ident(50);
    let d = device_id.peer_id();
    let mut device = RecoveryNode::new(Arc::clone(&device_id), RecoveryConfig::default());
    let set_a = [0xa; 32];
    let list = vec![(g1.peer_id(), String::new()), (g2.peer_id(), String::new())];
    device.recover(owner, &list, Some(set_a), T0).unwrap();
    let sends = drain(&mut device).sends;
    let (r1, r2) = (request_id(&sends[0].2, T0), request_id(&sends[1].2, T0));
    let shares = deal(
        &owner_id,
        &[g1.peer_id(), g2.peer_id()],
        2,
        &owner_id.seed(),
        set_a,
    );
    let mut hand = |from: &Identity, bytes: &[u8]| {
        device.handle(from.peer_id(), "", bytes, T0);
        drain(&mut device).events
    };
    let bad = |guardian: &Identity, reason| {
        vec![Event::BadShare {
            owner,
            guardian: guardian.peer_id(),
            reason,
        }]
    };
    assert_eq!(
        hand(&g1, &Frame::Release(vec![0; 10]).encode()),
        refused(g1.peer_id(), "release does not open")
    );
    // Sealed for someone else.
    assert_eq!(
        hand(&g1, &release(&g1, &g2.peer_id(), &shares[0], r1)),
        refused(g1.peer_id(), "release does not open")
    );
    let junk = envelope::seal(&g1, &d, RELEASE_CONTEXT, b"junk").unwrap();
    assert_eq!(
        hand(&g1, &Frame::Release(junk).encode()),
        refused(g1.peer_id(), "malformed share")
    );
    assert_eq!(
        hand(&g1, &release(&g1, &d, &shares[0], Hash256([4; 32]))),
        refused(g1.peer_id(), "release for no request of ours")
    );
    // Guardian 1 answering the request sent to guardian 2.
    assert_eq!(
        hand(&g1, &release(&g1, &d, &shares[0], r2)),
        refused(g1.peer_id(), "release for no request of ours")
    );
    // A set signed by the guardian itself.
    let forged = deal(&g1, &[g1.peer_id(), g2.peer_id()], 1, &[3; 32], set_a);
    assert_eq!(
        hand(&g1, &release(&g1, &d, &forged[0], r1)),
        bad(&g1, "guardian set not signed by the owner")
    );
    let without_g1 = deal(
        &owner_id,
        &[g2.peer_id(), g3.peer_id()],
        1,
        &owner_id.seed(),
        set_a,
    );
    assert_eq!(
        hand(&g1, &release(&g1, &d, &without_g1[0], r1)),
        bad(&g1, "not a guardian of the set")
    );
    assert_eq!(
        hand(&g1, &release(&g1, &d, &shares[1], r1)),
        bad(&g1, "share does not match its commitment")
    );
    let set_b = deal(
        &owner_id,
        &[g1.peer_id(), g2.peer_id()],
        2,
        &owner_id.seed(),
        [0xb; 32],
    );
    assert_eq!(
        hand(&g1, &release(&g1, &d, &set_b[0], r1)),
        bad(&g1, "share of another set")
    );
    // The good share of set A: one of two.
    assert_eq!(
        hand(&g1, &release(&g1, &d, &shares[0], r1)),
        vec![Event::ShareAccepted {
            owner,
            guardian: g1.peer_id()
        }]
    );
    assert_eq!(
        hand(&g1, &release(&g1, &d, &shares[0], r1)),
        refused(g1.peer_id(), "release for no request of ours"),
        "a request is used up by its share"
    );
    assert_eq!(device.recovered(&owner).map(|i| i.peer_id()), None);
    assert_eq!(
        device.take_recovered(&owner).err(),
        Some(RecoveryError::Shamir(ShamirError::NotEnoughShares {
            have: 1,
            need: 2
        }))
    );
    device.handle(g2.peer_id(), "", &release(&g2, &d, &shares[1], r2), T0);
    assert_eq!(
        drain(&mut device).events,
        vec![
            Event::ShareAccepted {
                owner,
                guardian: g2.peer_id()
            },
            Event::Recovered { owner }
        ]
    );
    // Shown without being handed over, then handed over once.
    assert_eq!(device.recovered(&owner).unwrap().peer_id(), owner);
    assert_eq!(device.recovered(&owner).unwrap().peer_id(), owner);
    assert_eq!(*device.take_recovered(&owner).unwrap().seed(), [1; 32]);
    assert!(device.recovered(&owner).is_none());
    assert_eq!(
        device.take_recovered(&owner).err(),
        Some(RecoveryError::Shamir(ShamirError::NotEnoughShares {
            have: 0,
            need: 0
        }))
    );
}

#[test]
fn a_guardian_s_share_counts_once_however_often_it_is_released() {
    let owner_id = ident(1);
    let owner = owner_id.peer_id();
    let (g1, g2) = (ident(2), ident(3));
    let mut device = RecoveryNode::new(ident(50), RecoveryConfig::default());
    let d = device.peer_id();
    let one = vec![(g1.peer_id(), String::new())];
    device.recover(owner, &one, None, T0).unwrap();
    device.recover(owner, &one, None, T0).unwrap();
    let sends = drain(&mut device).sends;
    let (r1, r2) = (request_id(&sends[0].2, T0), request_id(&sends[1].2, T0));
    let shares = deal(
        &owner_id,
        &[g1.peer_id(), g2.peer_id()],
        2,
        &owner_id.seed(),
        [3; 32],
    );
    for r in [r1, r2] {
        device.handle(g1.peer_id(), "", &release(&g1, &d, &shares[0], r), T0);
        assert_eq!(
            drain(&mut device).events,
            vec![Event::ShareAccepted {
                owner,
                guardian: g1.peer_id()
            }]
        );
    }
    assert_eq!(
        device.take_recovered(&owner).err(),
        Some(RecoveryError::Shamir(ShamirError::NotEnoughShares {
            have: 1,
            need: 2
        }))
    );
}

#[test]
fn shares_that_verify_but_make_another_key_are_never_reported_recovered() {
    let owner_id = ident(1);
    let owner = owner_id.peer_id();
    let g1 = ident(2);
    let mut device = RecoveryNode::new(ident(50), RecoveryConfig::default());
    let d = device.peer_id();
    device
        .recover(owner, &[(g1.peer_id(), String::new())], None, T0)
        .unwrap();
    let r1 = request_id(&drain(&mut device).sends[0].2, T0);
    // The owner signed a set whose shares deal some other secret.
    let shares = deal(&owner_id, &[g1.peer_id()], 1, &[0x42; 32], [3; 32]);
    device.handle(g1.peer_id(), "", &release(&g1, &d, &shares[0], r1), T0);
    assert_eq!(
        drain(&mut device).events,
        vec![
            Event::ShareAccepted {
                owner,
                guardian: g1.peer_id()
            },
            Event::CombineFailed { owner }
        ]
    );
    assert!(device.recovered(&owner).is_none());
    assert!(device.take_recovered(&owner).is_err());
}

// ------------------------------------------------------------------------- persistence

#[test]
fn a_stored_grant_is_restored_checked_like_a_new_one_and_a_revocation_keeps_it_out() {
    let owner_id = ident(1);
    let owner = owner_id.peer_id();
    let g = ident(2);
    let set_id = [5; 32];
    let shares = deal(&owner_id, &[g.peer_id()], 1, &owner_id.seed(), set_id);
    let frame = grant(&owner_id, &g.peer_id(), &shares[0]);
    let Ok(Frame::Grant(envelope)) = Frame::decode(&frame) else {
        unreachable!()
    };
    let key = (owner, set_id);

    // Changes are not recorded until asked for.
    let mut first = RecoveryNode::new(Arc::clone(&g), guardian_config());
    first.allow_owner(owner);
    first.handle(owner, "", &frame, at(7));
    drain(&mut first);
    assert!(first.take_changes().is_empty());
    let (created, received, kept) = first.held_record(&key).unwrap();
    assert_eq!((created, received, kept), (T0, at(7), envelope.as_slice()));
    first.track_changes();
    let revoke = Signed::sign(&owner_id, Revocation { set_id }, T0, UnixMillis::NEVER).unwrap();
    first.handle(
        owner,
        "",
        &Frame::Revoke(revoke.into_bytes()).encode(),
        at(8),
    );
    assert_eq!(first.take_changes(), vec![key]);
    assert!(first.take_changes().is_empty(), "each change once");

    let mut node = RecoveryNode::new(Arc::clone(&g), guardian_config());
    assert_eq!(
        node.restore(&[0; 10], T0, at(9)),
        Err("grant does not open")
    );
    let mut tweaked = shares[0].clone();
    tweaked.share.y[3] ^= 1;
    let Ok(Frame::Grant(bad)) = Frame::decode(&grant(&owner_id, &g.peer_id(), &tweaked)) else {
        unreachable!()
    };
    assert_eq!(
        node.restore(&bad, T0, at(9)),
        Err("share does not match its commitment")
    );
    assert!(node.held().is_empty());
    node.restore(&envelope, at(7), at(9)).unwrap();
    assert_eq!(node.held(), vec![key]);
    assert_eq!(
        node.held_record(&key),
        Some((T0, at(7), envelope.as_slice()))
    );
    assert_eq!(
        node.open_held(&owner, &set_id, at(9)),
        Some(shares[0].clone())
    );
    assert_eq!(node.open_held(&owner, &[6; 32], at(9)), None);
    node.restore_revoked(key, at(8));
    assert!(node.held().is_empty(), "a revocation removes the share");
    assert_eq!(node.revoked_at(&key), Some(at(8)));
    assert_eq!(node.restore(&envelope, at(7), at(9)), Err("set revoked"));
    assert!(node.held().is_empty());
}
