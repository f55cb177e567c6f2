//! An iterative lookup (FIND_NODE or FIND_VALUE) as a state machine: it says whom to ask next,
//! is told what came back, and knows when it is done (sans-IO).
//!
//! At most [`ALPHA`] requests are in flight; the candidate set is bounded ([`MAX_CANDIDATES`],
//! the closest kept); each peer is asked once. The lookup ends when the [`K`] closest candidates
//! known have all answered (or failed), when nobody is left to ask, or when a value arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_crypto::PeerId;

use crate::key::{Distance, Key};
use crate::routing::{Contact, K};

/// Requests in flight per lookup (Kademlia's alpha).
pub const ALPHA: usize = 3;
/// Candidates a lookup keeps (the closest ones).
pub const MAX_CANDIDATES: usize = 4 * K;
/// How long an answer may take before the request counts as lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Times a candidate is asked before a lost request makes it failed (lossy links lose some
/// requests or answers; without a retry a lookup misses every node whose answer was lost).
pub const MAX_ATTEMPTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight(Duration),
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    state: State,
    /// Requests sent to it.
    attempts: u8,
    /// Hops from the start: 1 for contacts from our own table.
    hops: u32,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The closest nodes that answered, closest first (at most k).
    pub closest: Vec<Contact>,
    /// The value, for a FIND_VALUE that found one, and who had it.
    pub value: Option<(PeerId, Vec<u8>)>,
    /// Requests sent.
    pub requests: u32,
    /// Longest chain of answers that led to a contact in `closest` (or to the value).
    pub hops: u32,
}

/// One iterative lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: Key,
    local: PeerId,
    candidates: BTreeMap<Distance, Candidate>,
    value: Option<(PeerId, Vec<u8>, u32)>,
    requests: u32,
}

impl Lookup {
    /// A lookup for `target`, starting from `seeds` (the closest contacts in our table).
    pub fn new(local: PeerId, target: Key, seeds: Vec<Contact>) -> Self {
        let mut l = Self {
            target,
            local,
            candidates: BTreeMap::new(),
            value: None,
            requests: 0,
        };
        for c in seeds {
            l.add(c, 1);
        }
        l
    }

    /// The key looked up.
    pub fn target(&self) -> Key {
        self.target
    }

    fn add(&mut self, contact: Contact, hops: u32) {
        if contact.peer == self.local {
            return;
        }
        let d = contact.key.distance(&self.target);
        if self.candidates.contains_key(&d) {
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // Keep the closest: drop the farthest if the newcomer is closer.
            match self.candidates.last_key_value() {
                Some((far, _)) if *far > d => {
                    let far = *far;
                    self.candidates.remove(&far);
                }
                _ => return,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                contact,
                state: State::Waiting,
                attempts: 0,
                hops,
            },
        );
    }

    fn in_flight(&self) -> usize {
        self.candidates
            .values()
            .filter(|c| matches!(c.state, State::InFlight(_)))
            .count()
    }

    /// Whether the lookup has finished.
    pub fn is_done(&self) -> bool {
        if self.value.is_some() {
            return true;
        }
        // Done when none of the k closest still waits or is in flight.
        !self
            .candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .any(|c| matches!(c.state, State::Waiting | State::InFlight(_)))
    }

    /// Whom to ask now (marks them in flight at `now`). Requests that timed out count as
    /// failed first.
    pub fn next(&mut self, now: Duration) -> Vec<Contact> {
        for c in self.candidates.values_mut() {
            if let State::InFlight(since) = c.state
                && now.saturating_sub(since) >= REQUEST_TIMEOUT
            {
                c.state = if c.attempts < MAX_ATTEMPTS {
                    State::Waiting
                } else {
                    State::Failed
                };
            }
        }
        if self.is_done() {
            return Vec::new();
        }
        let free = ALPHA.saturating_sub(self.in_flight());
        let mut out = Vec::new();
        // Only the k closest live candidates are worth asking.
        for c in self
            .candidates
            .values_mut()
            .filter(|c| c.state != State::Failed)
            .take(K)
        {
            if out.len() == free {
                break;
            }
            if c.state == State::Waiting {
                c.state = State::InFlight(now);
                c.attempts += 1;
                out.push(c.contact.clone());
            }
        }
        self.requests += u32::try_from(out.len()).unwrap_or(u32::MAX);
        out
    }

    fn find(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let d = Key::of_peer(peer).distance(&self.target);
        self.candidates
            .get_mut(&d)
            .filter(|c| c.contact.peer == *peer)
    }

    /// `from` answered with `contacts`. Answers from peers not asked are ignored.
    pub fn on_nodes(&mut self, from: &PeerId, contacts: Vec<Contact>) {
        let Some(c) = self.find(from) else {
            return;
        };
        if !matches!(c.state, State::InFlight(_)) {
            return;
        }
        c.state = State::Answered;
        let hops = c.hops + 1;
        for contact in contacts.into_iter().take(K) {
            self.add(contact, hops);
        }
    }

    /// `from` answered with a value (already verified by the caller).
    pub fn on_value(&mut self, from: &PeerId, value: Vec<u8>) {
        let Some(c) = self.find(from) else {
            return;
        };
        if !matches!(c.state, State::InFlight(_)) {
            return;
        }
        c.state = State::Answered;
        let hops = c.hops;
        self.value = Some((*from, value, hops));
    }

    /// A request to `peer` failed for good (a bad answer, no way to send).
    pub fn on_failure(&mut self, peer: &PeerId) {
        if let Some(c) = self.find(peer) {
            c.state = State::Failed;
        }
    }

    /// A request to `peer` got no answer in time: it is asked again, up to [`MAX_ATTEMPTS`]
    /// times in all.
    pub fn on_timeout(&mut self, peer: &PeerId) {
        if let Some(c) = self.find(peer)
            && matches!(c.state, State::InFlight(_))
        {
            c.state = if c.attempts < MAX_ATTEMPTS {
                State::Waiting
            } else {
                State::Failed
            };
        }
    }

    /// What was found so far (final once [`Lookup::is_done`]).
    pub fn outcome(&self) -> Outcome {
        let closest: Vec<&Candidate> = self
            .candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .take(K)
            .collect();
        let hops = self
            .value
            .as_ref()
            .map(|v| v.2)
            .or_else(|| closest.iter().map(|c| c.hops).max())
            .unwrap_or(0);
        Outcome {
            closest: closest.into_iter().map(|c| c.contact.clone()).collect(),
            value: self.value.as_ref().map(|(p, v, _)| (*p, v.clone())),
            requests: self.requests,
            hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mesh_crypto::Identity;

    use super::*;
    use crate::routing::RoutingTable;

    fn peer(n: u32) -> PeerId {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        seed[5] = 0x11;
        Identity::from_seed(&seed).peer_id()
    }

    /// A static network of `n` nodes whose tables saw every other node, each in a rotated
    /// order (so buckets hold different contacts): full Kademlia tables.
    fn network(n: u32) -> (Vec<PeerId>, HashMap<PeerId, RoutingTable>) {
        let peers: Vec<PeerId> = (0..n).map(peer).collect();
        let mut tables: HashMap<PeerId, RoutingTable> =
            peers.iter().map(|p| (*p, RoutingTable::new(*p))).collect();
        for (i, p) in peers.iter().enumerate() {
            let table = tables.get_mut(p).unwrap();
            for j in 0..peers.len() {
                let q = peers[(i * 7 + j) % peers.len()];
                table.insert(Contact::new(q, "", Duration::ZERO));
            }
        }
        (peers, tables)
    }

    fn run(tables: &HashMap<PeerId, RoutingTable>, from: PeerId, target: Key) -> Outcome {
        let mut lookup = Lookup::new(from, target, tables[&from].closest(&target, K));
        let mut now = Duration::ZERO;
        let mut rounds = 0;
        while !lookup.is_done() {
            let asked = lookup.next(now);
            for c in asked {
                let answer = tables[&c.peer].closest(&target, K);
                lookup.on_nodes(&c.peer, answer);
            }
            now += Duration::from_millis(10);
            rounds += 1;
            assert!(rounds < 1000, "lookup does not terminate");
        }
        lookup.outcome()
    }

    #[test]
    fn lookups_converge_on_the_true_closest_nodes() {
        let (all, tables) = network(500);
        for t in 0..20u32 {
            let target = Key::of_peer(&peer(100_000 + t));
            let outcome = run(&tables, all[t as usize], target);
            let mut truth: Vec<PeerId> = all.clone();
            truth.sort_by_key(|p| Key::of_peer(p).distance(&target));
            let found: Vec<PeerId> = outcome.closest.iter().map(|c| c.peer).collect();
            assert_eq!(found[0], truth[0], "the closest node is found");
            let overlap = found.iter().filter(|p| truth[..K].contains(p)).count();
            assert!(overlap >= K - 2, "found {overlap} of the true 20 closest");
            assert!(outcome.requests <= 200, "{} requests", outcome.requests);
        }
    }

    #[test]
    fn in_flight_requests_are_bounded_and_timeouts_count_as_failures() {
        let seeds: Vec<Contact> = (1..=30)
            .map(|n| Contact::new(peer(n), "", Duration::ZERO))
            .collect();
        let mut l = Lookup::new(peer(0), Key([0; 32]), seeds);
        let first = l.next(Duration::ZERO);
        assert_eq!(first.len(), ALPHA);
        assert!(
            l.next(Duration::from_millis(1)).is_empty(),
            "alpha in flight already"
        );
        // Nobody answers: after the timeout the same three are asked again, up to
        // MAX_ATTEMPTS times; then they count as failed and the next three are asked.
        let mut now = Duration::ZERO;
        for _ in 1..MAX_ATTEMPTS {
            now += REQUEST_TIMEOUT;
            assert_eq!(l.next(now), first);
        }
        now += REQUEST_TIMEOUT;
        let second = l.next(now);
        assert_eq!(second.len(), ALPHA);
        assert!(second.iter().all(|c| !first.contains(c)));
        // Answers from peers never asked are ignored.
        l.on_nodes(
            &peer(999),
            vec![Contact::new(peer(1000), "", Duration::ZERO)],
        );
        assert!(l.candidates.len() <= 30);
    }

    #[test]
    fn candidates_stay_bounded_under_huge_answers() {
        let mut l = Lookup::new(
            peer(0),
            Key([0; 32]),
            vec![Contact::new(peer(1), "", Duration::ZERO)],
        );
        let asked = l.next(Duration::ZERO);
        // A hostile peer answers with far more contacts than allowed: only k are taken.
        let flood: Vec<Contact> = (10..2_000)
            .map(|n| Contact::new(peer(n), "", Duration::ZERO))
            .collect();
        l.on_nodes(&asked[0].peer, flood);
        assert!(l.candidates.len() <= 1 + K);
        // Many answers never grow it past the cap.
        let mut now = Duration::ZERO;
        let mut n = 2_000;
        while !l.is_done() {
            for c in l.next(now) {
                let more: Vec<Contact> = (n..n + 20)
                    .map(|m| Contact::new(peer(m), "", Duration::ZERO))
                    .collect();
                n += 20;
                l.on_nodes(&c.peer, more);
                assert!(l.candidates.len() <= MAX_CANDIDATES);
            }
            now += Duration::from_millis(1);
            assert!(n < 40_000, "does not terminate");
        }
    }

    #[test]
    fn a_value_ends_the_lookup() {
        let seeds: Vec<Contact> = (1..=5)
            .map(|n| Contact::new(peer(n), "", Duration::ZERO))
            .collect();
        let mut l = Lookup::new(peer(0), Key([1; 32]), seeds);
        let asked = l.next(Duration::ZERO);
        l.on_value(&asked[1].peer, b"v".to_vec());
        assert!(l.is_done());
        assert!(l.next(Duration::ZERO).is_empty());
        assert_eq!(l.outcome().value, Some((asked[1].peer, b"v".to_vec())));
    }
}
