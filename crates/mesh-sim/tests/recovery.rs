//! Social recovery in the simulator: guardians offline while the owner protects its key and
//! coming back; a recovery with a lying guardian (named, its share discarded) and too few
//! honest guardians (a clean error), then enough; replayed, forged and misattributed requests
//! refused; a refresh that leaves the old set useless; and no secret or share in any frame.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names,
    clippy::too_many_lines
)] // test code: each test is one scenario, told in order

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Identity, PeerId, Signed, envelope};
use mesh_recovery::RequestStatus;
use mesh_recovery::message::{Frame, RELEASE_CONTEXT, RecoveryRequest, SetId};
use mesh_recovery::node::{Event, Output, RecoveryConfig, RecoveryError, RecoveryNode};
use mesh_recovery::shamir::{self, ShamirError};
use mesh_sim::{Action, NetConfig, Node, Now, Sim, UNIX_START, address};

/// A peer in the simulation: the recovery core, every frame it sent, and optionally a liar
/// that answers requests with a corrupted share.
struct Peer {
    id: Arc<Identity>,
    core: RecoveryNode,
    sent: Vec<Vec<u8>>,
    liar: bool,
    /// Frames the liar made itself, waiting to be sent.
    core_out: Vec<(PeerId, String, Vec<u8>)>,
}

impl Node for Peer {
    type Event = Event;

    fn handle(&mut self, from: PeerId, address: &str, bytes: &[u8], now: Now) {
        if self.liar
            && let Ok(Frame::Request(b)) = Frame::decode(bytes)
            && let Ok(req) = Signed::<RecoveryRequest>::decode(&b, now.unix)
        {
            // A guardian that lies: its real share with one byte changed, sealed and signed
            // properly, so only the commitment can tell.
            let owner = req.payload().owner;
            let held = self.core.held();
            let Some((_, set_id)) = held.iter().find(|(o, _)| *o == owner) else {
                return;
            };
            let mut s = self.core.open_held(&owner, set_id, now.unix).unwrap();
            s.request_id = *req.id();
            s.share.y[0] ^= 0x55;
            let env = envelope::seal(&self.id, &from, RELEASE_CONTEXT, &s.encode()).unwrap();
            let bytes = Frame::Release(env).encode();
            self.sent.push(bytes.clone());
            self.core_out.push((from, address.to_string(), bytes));
            return;
        }
        self.core.handle(from, address, bytes, now.unix);
    }

    fn tick(&mut self, now: Now) {
        self.core.tick(now.unix);
    }

    fn next_deadline(&self) -> Duration {
        self.core.next_wakeup().map_or(Duration::MAX, |t| {
            Duration::from_millis(t.0.saturating_sub(UNIX_START))
        })
    }

    fn poll(&mut self) -> Option<Action<Event>> {
        if let Some((to, address, bytes)) = self.core_out.pop() {
            return Some(Action::Send { to, address, bytes });
        }
        self.core.poll().map(|o| match o {
            Output::Send { to, address, bytes } => {
                self.sent.push(bytes.clone());
                Action::Send { to, address, bytes }
            }
            Output::Event(e) => Action::Event(e),
        })
    }
}

impl Peer {
    fn new(seed: u8, config: RecoveryConfig) -> Self {
        let id = Arc::new(Identity::from_seed(&[seed; 32]));
        Self {
            core: RecoveryNode::new(Arc::clone(&id), config),
            id,
            sent: Vec::new(),
            liar: false,
            core_out: Vec::new(),
        }
    }
}

fn auto_release() -> RecoveryConfig {
    RecoveryConfig {
        require_approval: false,
        ..RecoveryConfig::default()
    }
}

/// Owner 0, guardians 1..=5 (5 lies), new device 6. Every node accepts node 0 as an owner.
fn network() -> Sim<Peer> {
    let mut sim = Sim::new(NetConfig::default());
    let owner = Identity::from_seed(&[1; 32]).peer_id();
    for seed in 0..=6u8 {
        let mut p = Peer::new(seed + 1, auto_release());
        p.liar = seed == 5;
        p.core.allow_owner(owner);
        let peer = p.id.peer_id();
        sim.add(peer, p);
    }
    sim
}

fn guardians(sim: &Sim<Peer>, which: &[usize]) -> Vec<(PeerId, String)> {
    which.iter().map(|&i| (sim.peer(i), address(i))).collect()
}

fn run(sim: &mut Sim<Peer>, secs: u64) -> Vec<(usize, Event)> {
    sim.run_until(sim.now().monotonic + Duration::from_secs(secs));
    sim.take_events()
}

fn protect(sim: &mut Sim<Peer>, which: &[usize], k: u8) -> SetId {
    let g = guardians(sim, which);
    sim.with(0, |p, now| p.core.protect(&g, k, now.unix))
        .unwrap()
}

#[test]
fn guardians_come_back_a_liar_is_named_and_k_good_shares_recover_the_key() {
    let mut sim = network();
    let owner = sim.peer(0);
    // Guardians 1 and 2 are away while the owner protects its key.
    sim.set_online(1, false);
    sim.set_online(2, false);
    let set = protect(&mut sim, &[1, 2, 3, 4, 5], 3);
    let events = run(&mut sim, 5);
    let acked: Vec<PeerId> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Acknowledged { guardian, .. } => Some(*guardian),
            _ => None,
        })
        .collect();
    assert_eq!(acked.len(), 3);
    let pending = sim.with(0, |p, _| p.core.unacknowledged(&set));
    assert_eq!(pending, vec![sim.peer(1), sim.peer(2)]);
    // They come back; the owner's next resend (every 30 s) reaches them.
    sim.set_online(1, true);
    sim.set_online(2, true);
    let events = run(&mut sim, 40);
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 0 && *e == Event::Protected { set_id: set }),
        "{events:?}"
    );
    assert!(sim.with(0, |p, _| p.core.unacknowledged(&set)).is_empty());
    for g in 1..=5 {
        assert_eq!(sim.node(g).core.held(), vec![(owner, set)]);
    }

    // The owner's device is lost. The new device (6) asks everyone; 3 and 4 are away, so only
    // 1, 2 (honest) and 5 (lying) answer.
    sim.set_online(0, false);
    sim.set_online(3, false);
    sim.set_online(4, false);
    let all = guardians(&sim, &[1, 2, 3, 4, 5]);
    let codes = sim
        .with(6, |p, now| p.core.recover(owner, &all, None, now.unix))
        .unwrap();
    assert_eq!(codes.len(), 5);
    assert!(codes.iter().all(|(_, c)| c.len() == 6));
    let events = run(&mut sim, 10);
    let bad: Vec<&Event> = events
        .iter()
        .filter(|(i, e)| *i == 6 && matches!(e, Event::BadShare { .. }))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        bad,
        vec![&Event::BadShare {
            owner,
            guardian: sim.peer(5),
            reason: "share does not match its commitment"
        }],
        "the liar is named"
    );
    let accepted = events
        .iter()
        .filter(|(i, e)| *i == 6 && matches!(e, Event::ShareAccepted { .. }))
        .count();
    assert_eq!(accepted, 2);
    // Two good shares of three: a clean error, never a wrong key.
    let e = sim
        .with(6, |p, _| p.core.take_recovered(&owner))
        .unwrap_err();
    assert_eq!(
        e,
        RecoveryError::Shamir(ShamirError::NotEnoughShares { have: 2, need: 3 })
    );

    // Guardian 3 is back: asked again, it releases, and the key is whole.
    sim.set_online(3, true);
    let three = guardians(&sim, &[3]);
    sim.with(6, |p, now| p.core.recover(owner, &three, None, now.unix))
        .unwrap();
    let events = run(&mut sim, 10);
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 6 && *e == Event::Recovered { owner })
    );
    let recovered = sim.with(6, |p, _| p.core.take_recovered(&owner)).unwrap();
    assert_eq!(recovered.peer_id(), owner);
    assert_eq!(*recovered.seed(), [1u8; 32], "the owner's seed itself");

    // Nothing secret in any frame: not the seed, not any share.
    let mut secrets: Vec<Vec<u8>> = vec![vec![1u8; 32]];
    for g in 1..=5 {
        let s = sim
            .node(g)
            .core
            .open_held(&owner, &set, sim.now().unix)
            .unwrap();
        secrets.push(s.share.y.to_vec());
    }
    let mut frames = 0;
    for i in 0..=6 {
        for f in &sim.node(i).sent {
            frames += 1;
            for s in &secrets {
                assert!(
                    !f.windows(32).any(|w| w == s.as_slice()),
                    "a secret in a frame of node {i}"
                );
            }
        }
    }
    assert!(frames > 20);
    // Nor in what guardians keep.
    for g in 1..=5 {
        let (_, _, grant) = sim.node(g).core.held_record(&(owner, set)).unwrap();
        for s in &secrets {
            assert!(!grant.windows(32).any(|w| w == s.as_slice()));
        }
    }
}

/// The REQUEST frames node `i` sent, in order.
fn requests_sent(sim: &Sim<Peer>, i: usize) -> Vec<Vec<u8>> {
    sim.node(i)
        .sent
        .iter()
        .filter(|f| matches!(Frame::decode(f), Ok(Frame::Request(_))))
        .cloned()
        .collect()
}

fn refusals(events: &[(usize, Event)], at: usize) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Refused { reason, .. } if *i == at => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn replayed_forged_and_misattributed_requests_are_refused() {
    let mut sim = network();
    let owner = sim.peer(0);
    protect(&mut sim, &[1, 2], 2);
    run(&mut sim, 5);
    let one = guardians(&sim, &[1]);
    sim.with(6, |p, now| p.core.recover(owner, &one, None, now.unix))
        .unwrap();
    let events = run(&mut sim, 5);
    let released = |events: &[(usize, Event)]| {
        events
            .iter()
            .filter(|(i, e)| *i == 1 && matches!(e, Event::Released { .. }))
            .count()
    };
    assert_eq!(released(&events), 1);
    let request = requests_sent(&sim, 6).pop().unwrap();
    let new_device = sim.peer(6);

    // The same request again, from the same device (as if the release was lost): the same
    // release again, not a second one.
    sim.with(1, |p, now| {
        p.core.handle(new_device, &address(6), &request, now.unix);
    });
    // The same request sent by another peer (it cannot be answered to its signer's key
    // anyway, but it is refused before that).
    let other = sim.peer(4);
    sim.with(1, |p, now| {
        p.core.handle(other, &address(4), &request, now.unix);
    });
    // A forged one: the signed bytes changed.
    let mut forged = request.clone();
    let n = forged.len();
    forged[n - 70] ^= 1;
    sim.with(1, |p, now| {
        p.core.handle(new_device, &address(6), &forged, now.unix);
    });
    let events = run(&mut sim, 5);
    assert_eq!(
        refusals(&events, 1),
        vec!["request not signed by the peer that sent it", "bad request"]
    );
    assert_eq!(released(&events), 0, "no new release for any of them");
    let releases_sent = sim
        .node(1)
        .sent
        .iter()
        .filter(|f| matches!(Frame::decode(f), Ok(Frame::Release(_))))
        .count();
    assert_eq!(
        releases_sent, 2,
        "the first release, and the same again for the repeat"
    );

    // A request valid for longer than a guardian accepts (48 h) is refused.
    let long = Signed::sign(
        &sim.node(6).id.clone(),
        RecoveryRequest {
            owner,
            set_id: [0; 32],
            nonce: [9; 16],
        },
        sim.now().unix,
        sim.now().unix.saturating_add(48 * 3600 * 1000),
    )
    .unwrap();
    let frame = Frame::Request(long.into_bytes()).encode();
    sim.with(1, |p, now| {
        p.core.handle(new_device, &address(6), &frame, now.unix);
    });
    let events = run(&mut sim, 5);
    assert_eq!(refusals(&events, 1), vec!["request valid for too long"]);

    // A request signed more than its validity ago is refused too.
    sim.run_until(sim.now().monotonic + Duration::from_secs(25 * 3600));
    let late = requests_sent(&sim, 6).pop().unwrap();
    sim.with(1, |p, now| {
        p.core.handle(new_device, &address(6), &late, now.unix);
    });
    let events = run(&mut sim, 5);
    assert_eq!(refusals(&events, 1), vec!["bad request"]);
}

#[test]
fn a_refresh_leaves_the_old_set_useless() {
    let mut sim = network();
    let owner = sim.peer(0);
    let old = protect(&mut sim, &[1, 2, 3], 2);
    run(&mut sim, 5);
    let old_share = sim
        .node(1)
        .core
        .open_held(&owner, &old, sim.now().unix)
        .unwrap();

    let g = guardians(&sim, &[3, 4, 6]);
    let new = sim
        .with(0, |p, now| p.core.refresh(&old, &g, 2, now.unix))
        .unwrap();
    let events = run(&mut sim, 5);
    let revoked = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ShareRevoked { set_id, .. } if *set_id == old))
        .count();
    assert_eq!(revoked, 3, "every old guardian deleted its share");
    for g in [1, 2] {
        assert!(sim.node(g).core.held().is_empty());
    }
    assert_eq!(sim.node(3).core.held(), vec![(owner, new)]);
    assert!(sim.with(0, |p, _| p.core.unacknowledged(&old)).is_empty());
    // A grant of the old set arriving late (a resend still in flight) does not bring it back.
    let old_grant = sim
        .node(0)
        .sent
        .iter()
        .find(|f| matches!(Frame::decode(f), Ok(Frame::Grant(_))))
        .unwrap()
        .clone();
    sim.with(1, |p, now| {
        p.core.handle(owner, &address(0), &old_grant, now.unix);
    });
    let events = run(&mut sim, 5);
    assert_eq!(refusals(&events, 1), vec!["set revoked"]);
    assert!(sim.node(1).core.held().is_empty());

    // The device is lost; a new one (5, here honest) asks the old guardians for the old set.
    sim.node_mut_liar(5, false);
    sim.set_online(0, false);
    let old_guardians = guardians(&sim, &[1, 2, 3]);
    sim.with(5, |p, now| {
        p.core.recover(owner, &old_guardians, Some(old), now.unix)
    })
    .unwrap();
    let events = run(&mut sim, 5);
    let no_share = events
        .iter()
        .filter(|(i, e)| {
            *i == 5
                && matches!(
                    e,
                    Event::GuardianStatus {
                        status: RequestStatus::NoShare,
                        ..
                    }
                )
        })
        .count();
    assert_eq!(no_share, 3);
    assert!(sim.with(5, |p, _| p.core.take_recovered(&owner)).is_err());
    // A share of the old set kept by someone does not combine with shares of the new one.
    let new_share = sim
        .node(4)
        .core
        .open_held(&owner, &new, sim.now().unix)
        .unwrap();
    let mixed = shamir::combine(&[old_share.share.clone(), new_share.share.clone()], 2);
    let mixed = mixed.map(|s| Identity::from_seed(&s).peer_id());
    assert_ne!(mixed, Ok(owner), "old and new shares do not make the key");

    // The new set works.
    let new_guardians = guardians(&sim, &[3, 4]);
    sim.with(5, |p, now| {
        p.core.recover(owner, &new_guardians, None, now.unix)
    })
    .unwrap();
    let events = run(&mut sim, 5);
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 5 && *e == Event::Recovered { owner })
    );
}

trait LiarSwitch {
    fn node_mut_liar(&mut self, i: usize, liar: bool);
}

impl LiarSwitch for Sim<Peer> {
    fn node_mut_liar(&mut self, i: usize, liar: bool) {
        self.with(i, |p, _| p.liar = liar);
    }
}

#[test]
fn a_guardian_refuses_unknown_owners_and_an_owner_gives_up_on_an_absent_guardian() {
    let mut sim = network();
    // Node 6 is no one's accepted owner: its grants are refused, with a signed answer.
    let g = guardians(&sim, &[1, 2]);
    let set = sim
        .with(6, |p, now| p.core.protect(&g, 2, now.unix))
        .unwrap();
    let events = run(&mut sim, 5);
    let refused = events
        .iter()
        .filter(|(i, e)| {
            *i == 6
                && matches!(
                    e,
                    Event::Acknowledged {
                        kind: mesh_recovery::message::AckKind::Refused,
                        ..
                    }
                )
        })
        .count();
    assert_eq!(refused, 2);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Protected { .. }))
    );
    assert!(
        sim.with(6, |p, _| p.core.unacknowledged(&set)).is_empty(),
        "no more resends"
    );
    assert!(sim.node(1).core.held().is_empty());

    // Guardian 2 never comes back: the owner tries with backoff, then gives up on it.
    sim.set_online(2, false);
    let g = guardians(&sim, &[1, 2]);
    let set = protect(&mut sim, &[1, 2], 1);
    let _ = g;
    let events = run(&mut sim, 30 * 3600);
    let gave_up: Vec<&Event> = events
        .iter()
        .filter(|(i, e)| *i == 0 && matches!(e, Event::GaveUp { .. }))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        gave_up,
        vec![&Event::GaveUp {
            set_id: set,
            guardian: sim.peer(2)
        }]
    );
    let sent_to_2 = sim.stats().offline;
    assert!(
        sent_to_2 <= 20,
        "{sent_to_2} sends to the absent guardian: bounded"
    );
}

#[test]
fn a_lost_release_is_sent_again_when_the_device_asks_again() {
    let mut sim = network();
    let owner = sim.peer(0);
    protect(&mut sim, &[1, 2], 2);
    run(&mut sim, 5);
    sim.set_online(0, false);
    // The device asks, then drops off the network before the releases arrive.
    let g = guardians(&sim, &[1, 2]);
    sim.with(6, |p, now| p.core.recover(owner, &g, None, now.unix))
        .unwrap();
    sim.set_online(6, false);
    let events = run(&mut sim, 2);
    let released = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Released { .. }))
        .count();
    assert_eq!(
        released, 2,
        "both guardians released (and both releases were lost)"
    );
    // Back online, its requests go out again at the next resend, and the guardians send the
    // same releases again: no new approval, no new release counted.
    sim.set_online(6, true);
    let events = run(&mut sim, 60);
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 6 && *e == Event::Recovered { owner })
    );
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Released { .. }))
    );
}

/// Owner 0, guardians 1 and 2 asking their users, new device 6, and strangers 3..=5.
fn approving_network() -> Sim<Peer> {
    let mut sim = Sim::new(NetConfig::default());
    let owner = Identity::from_seed(&[1; 32]).peer_id();
    for seed in 0..=6u8 {
        let mut p = Peer::new(seed + 1, RecoveryConfig::default());
        p.core.allow_owner(owner);
        let peer = p.id.peer_id();
        sim.add(peer, p);
    }
    sim
}

fn statuses(events: &[(usize, Event)], at: usize) -> Vec<RequestStatus> {
    events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::GuardianStatus { status, .. } if *i == at => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn strangers_cannot_push_out_a_real_request_and_a_busy_one_is_asked_again() {
    let mut sim = approving_network();
    let owner = sim.peer(0);
    protect(&mut sim, &[1, 2], 2);
    run(&mut sim, 5);
    // Four strangers ask guardian 1 for the owner's share first: its four places are taken.
    let one = guardians(&sim, &[1]);
    for s in 3..=5 {
        sim.with(s, |p, now| p.core.recover(owner, &one, None, now.unix))
            .unwrap();
    }
    sim.with(0, |p, now| p.core.recover(owner, &one, None, now.unix))
        .unwrap();
    let events = run(&mut sim, 5);
    let asked: Vec<_> = events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::ApprovalNeeded {
                request_id,
                requester,
                ..
            } if *i == 1 => Some((*request_id, *requester)),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 4);
    // The real device asks: busy, and nothing already held was pushed out.
    let both = guardians(&sim, &[1, 2]);
    sim.with(6, |p, now| p.core.recover(owner, &both, None, now.unix))
        .unwrap();
    let events = run(&mut sim, 5);
    assert!(statuses(&events, 6).contains(&RequestStatus::Busy));
    assert_eq!(sim.node(1).core.pending_requests().len(), 4);
    let approve_device = |sim: &mut Sim<Peer>, events: &[(usize, Event)]| {
        for (i, e) in events {
            if let Event::ApprovalNeeded {
                request_id,
                requester,
                ..
            } = e
                && *requester == sim.peer(6)
            {
                let id = *request_id;
                sim.with(*i, |p, now| p.core.approve(&id, now.unix))
                    .unwrap();
            }
        }
    };
    approve_device(&mut sim, &events);
    // The guardian's user denies the strangers; the device's next try (same request) is
    // taken this time, approved by both guardians' users, and the key comes back.
    for (id, _) in &asked {
        sim.with(1, |p, now| p.core.deny(id, now.unix)).unwrap();
    }
    let mut recovered = false;
    for _ in 0..10 {
        let events = run(&mut sim, 60);
        approve_device(&mut sim, &events);
        recovered |= events
            .iter()
            .any(|(i, e)| *i == 6 && *e == Event::Recovered { owner });
        if recovered {
            break;
        }
    }
    assert!(recovered);
}

#[test]
fn a_kept_release_is_not_sent_again_after_a_revocation() {
    let mut sim = network();
    let owner = sim.peer(0);
    let old = protect(&mut sim, &[1, 2], 2);
    run(&mut sim, 5);
    // The device asks and drops off before the releases arrive.
    let g = guardians(&sim, &[1, 2]);
    sim.with(6, |p, now| p.core.recover(owner, &g, None, now.unix))
        .unwrap();
    sim.set_online(6, false);
    run(&mut sim, 2);
    // The owner, still there, sees it and refreshes: the old set is revoked.
    let new_g = guardians(&sim, &[3, 4]);
    sim.with(0, |p, now| p.core.refresh(&old, &new_g, 2, now.unix))
        .unwrap();
    run(&mut sim, 5);
    // The device comes back and asks again with the same requests: no share any more.
    sim.set_online(6, true);
    let events = run(&mut sim, 60);
    assert_eq!(
        statuses(&events, 6),
        vec![RequestStatus::NoShare, RequestStatus::NoShare]
    );
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::ShareAccepted { .. }))
    );
    // A stranger's revocation of some set is not even remembered; a resent grant of a share
    // already held is acknowledged as stored even after the user stopped accepting the owner.
    let stranger = Identity::from_seed(&[0x99; 32]);
    let revoke = Signed::sign(
        &stranger,
        mesh_recovery::message::Revocation { set_id: [7; 32] },
        sim.now().unix,
        mesh_crypto::UnixMillis::NEVER,
    )
    .unwrap();
    let frame = Frame::Revoke(revoke.into_bytes()).encode();
    let stranger_peer = stranger.peer_id();
    sim.with(3, |p, now| {
        p.core.handle(stranger_peer, "", &frame, now.unix);
    });
    assert_eq!(sim.node(3).core.revoked_at(&(stranger_peer, [7; 32])), None);
}
