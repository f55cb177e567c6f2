//! The recovery core, sans-IO: frames and time go in, frames to send and events come out.
//! One [`RecoveryNode`] plays all three roles for its identity: owner (protects its own key),
//! guardian (keeps others' shares), and recovering device (asks for shares of a lost key).
//!
//! Flows (formats in [`crate::message`], `docs/PROTOCOL.md` §14):
//!
//! 1. **Protect** ([`RecoveryNode::protect`]): the owner splits its seed `k` of `n`, signs the
//!    guardian set (guardians, indices, salted commitments), seals each share with the set to
//!    its guardian, and sends the GRANTs again every [`RecoveryConfig::resend_interval_ms`]
//!    until each guardian acknowledges (guardians may be offline).
//! 2. **Keep**: a guardian opens a GRANT, checks that the set is signed by the envelope's
//!    sender, that it is listed with this index, and that the share matches its commitment;
//!    keeps the envelope as it came (sealed to its own key) and acknowledges.
//! 3. **Recover** ([`RecoveryNode::recover`]): the new device, with a fresh identity, sends
//!    each guardian a signed request naming the old identity. A guardian checks the signature
//!    (and that the link's peer signed it), freshness and replay, finds the share, checks its
//!    release rate, and holds the request until the policy allows it: the application's
//!    approval ([`RecoveryNode::approve`], after comparing [`crate::verification_code`] with the
//!    new device out of band) and the waiting period. Then it re-seals the share to the new
//!    device, bound to the request.
//! 4. **Combine**: the new device checks each released share against the owner's signed set
//!    and the share's commitment, names the guardian of any share that fails
//!    ([`Event::BadShare`]), and once `k` good shares of one set are in, combines them and
//!    checks that the seed gives the old identity before reporting [`Event::Recovered`].
//! 5. **Refresh** ([`RecoveryNode::refresh`]): a new set (other guardians, other `k`/`n`) and a
//!    signed revocation of the old one, sent until acknowledged; guardians delete the revoked
//!    share and refuse requests for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use mesh_crypto::envelope;
use mesh_crypto::{Hash256, Identity, PeerId, Signed, UnixMillis};
use mesh_platform::kv::ChangeSet;
use zeroize::Zeroizing;

use crate::message::{
    Ack, AckKind, Frame, GRANT_CONTEXT, GuardianEntry, GuardianSet, MAX_GUARDIANS,
    MAX_SHARE_PLAINTEXT, RELEASE_CONTEXT, RecoveryRequest, RequestStatus, Revocation, SealedShare,
    SetId, SignedSet, StatusReport, commitment, verification_code,
};
use crate::shamir::{self, SECRET_LEN, ShamirError, Share};

/// A day, in milliseconds.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest wait between two tries of a send.
const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;

/// When to try again after `attempts` tries.
fn backoff(base: u64, attempts: u32) -> u64 {
    base.saturating_mul(1u64 << attempts.min(20))
        .min(MAX_BACKOFF_MS)
}

/// Limits and policy of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Whether a guardian releases a share only after [`RecoveryNode::approve`] (the
    /// application asks its user, who compares the verification code with the new device).
    /// Without it, shares are released after the waiting period alone.
    pub require_approval: bool,
    /// How long a guardian holds a request before releasing, even when approved, in ms.
    pub min_wait_ms: u64,
    /// Shares of one owner a guardian releases per 24 hours at most.
    pub releases_per_day: u32,
    /// How long a request stays valid (its signed expiry), in ms.
    pub request_validity_ms: u64,
    /// How long an owner waits before sending an unacknowledged grant or revocation again,
    /// and a recovering device an unanswered request, in ms (doubling after each try, up to an
    /// hour).
    pub resend_interval_ms: u64,
    /// Tries after which an owner gives up on a guardian ([`Event::GaveUp`]).
    pub max_resends: u32,
    /// Whether a guardian keeps shares only of owners the application accepted
    /// ([`RecoveryNode::allow_owner`]): without it, any peer could fill its store.
    pub require_known_owner: bool,
    /// Shares a guardian keeps at most (all owners).
    pub max_shares: usize,
    /// Sets of one owner a guardian keeps at most (the oldest goes).
    pub max_sets_per_owner: usize,
    /// Requests a guardian holds at most, pending.
    pub max_pending: usize,
    /// Requests for one owner a guardian holds at most, pending (the oldest goes).
    pub max_pending_per_owner: usize,
    /// Revoked sets a guardian remembers at most (so that their shares cannot come back).
    pub max_revoked: usize,
    /// Final answers (releases, denials) a guardian keeps, to give again when a request is
    /// repeated.
    pub max_answered: usize,
    /// Request ids a guardian remembers at most (against replays, until they expire).
    pub max_seen: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            require_approval: true,
            min_wait_ms: 0,
            releases_per_day: 3,
            request_validity_ms: DAY_MS,
            resend_interval_ms: 30_000,
            max_resends: 20,
            require_known_owner: true,
            max_shares: 10_000,
            max_sets_per_owner: 4,
            max_pending: 1024,
            max_pending_per_owner: 4,
            max_revoked: 10_000,
            max_answered: 1024,
            max_seen: 100_000,
        }
    }
}

/// Errors of the API calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Bad threshold or guardian list.
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    /// A guardian listed twice, the owner as its own guardian, or more than 255 guardians.
    #[error("invalid guardian list: {0}")]
    Guardians(&'static str),
    /// No such set, request or recovery.
    #[error("unknown {0}")]
    Unknown(&'static str),
    /// Signing or sealing failed.
    #[error(transparent)]
    Crypto(#[from] mesh_crypto::Error),
}

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Guardian: a share of `owner` is kept.
    ShareStored {
        /// Whose.
        owner: PeerId,
        /// Of which set.
        set_id: SetId,
    },
    /// Guardian: a share was deleted on the owner's revocation.
    ShareRevoked {
        /// Whose.
        owner: PeerId,
        /// Of which set.
        set_id: SetId,
    },
    /// Guardian: a verified request waits for the application's decision.
    ApprovalNeeded {
        /// The request, for [`RecoveryNode::approve`] or [`RecoveryNode::deny`].
        request_id: Hash256,
        /// The identity being recovered.
        owner: PeerId,
        /// The new device asking.
        requester: PeerId,
        /// The code the new device shows for this request: compare them out of band.
        code: String,
    },
    /// Guardian: a share was released to a new device.
    Released {
        /// The request.
        request_id: Hash256,
        /// Whose share.
        owner: PeerId,
        /// To whom.
        requester: PeerId,
    },
    /// Guardian or owner: a frame was refused.
    Refused {
        /// Who sent it.
        from: PeerId,
        /// Why.
        reason: &'static str,
    },
    /// Owner: a guardian acknowledged.
    Acknowledged {
        /// The set.
        set_id: SetId,
        /// The guardian.
        guardian: PeerId,
        /// What it confirmed.
        kind: AckKind,
    },
    /// Owner: every guardian of the set holds its share.
    Protected {
        /// The set.
        set_id: SetId,
    },
    /// Owner: a guardian never acknowledged after every try; nothing more is sent to it.
    GaveUp {
        /// The set.
        set_id: SetId,
        /// The guardian.
        guardian: PeerId,
    },
    /// Recovering: a good share came in.
    ShareAccepted {
        /// Whose key.
        owner: PeerId,
        /// From which guardian.
        guardian: PeerId,
    },
    /// Recovering: a guardian sent a share that does not verify; it was discarded.
    BadShare {
        /// Whose key.
        owner: PeerId,
        /// The guardian that sent it.
        guardian: PeerId,
        /// What failed.
        reason: &'static str,
    },
    /// Recovering: a guardian answered with a status.
    GuardianStatus {
        /// Whose key.
        owner: PeerId,
        /// The guardian.
        guardian: PeerId,
        /// Its answer.
        status: RequestStatus,
    },
    /// Recovering: a guardian gave no final answer before the request expired (or after
    /// every try); ask again with a new request.
    RequestExpired {
        /// Whose key.
        owner: PeerId,
        /// The guardian.
        guardian: PeerId,
    },
    /// Recovering: the key is back ([`RecoveryNode::take_recovered`]).
    Recovered {
        /// Whose key.
        owner: PeerId,
    },
    /// Recovering: `k` shares that each matched their commitment did not give the owner's
    /// key (the owner's own set is inconsistent); nothing is reported recovered.
    CombineFailed {
        /// Whose key.
        owner: PeerId,
    },
}

/// What the core wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a frame (payload of a `ProtocolId::RECOVERY` frame).
    Send {
        /// To whom.
        to: PeerId,
        /// Where (empty: over an open link only).
        address: String,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Report an event.
    Event(Event),
}

/// A share a guardian keeps: the GRANT envelope as received (sealed to the guardian).
#[derive(Debug, Clone)]
struct Held {
    grant: Vec<u8>,
    set_created: UnixMillis,
    received_at: UnixMillis,
}

struct Pending {
    requester: PeerId,
    address: String,
    owner: PeerId,
    set_id: SetId,
    approved: bool,
    release_at: UnixMillis,
    /// The guardian's own deadline: the request's expiry, or later if the waiting period ends
    /// after it.
    expires_at: UnixMillis,
}

/// The final answer to a request, kept to give again if the request is repeated (its answer
/// was lost).
struct Answered {
    requester: PeerId,
    owner: PeerId,
    set_id: SetId,
    /// The RELEASE frame, or the final status.
    answer: Result<Vec<u8>, RequestStatus>,
    expires_at: UnixMillis,
}

/// Something sent until it is answered, with backoff.
struct Outgoing {
    to: PeerId,
    address: String,
    frame: Vec<u8>,
    done: bool,
    attempts: u32,
    next_at: UnixMillis,
    /// For a request: its signed expiry, after which asking again is pointless.
    expires_at: Option<UnixMillis>,
}

impl Outgoing {
    fn new(to: PeerId, address: String, frame: Vec<u8>, now: UnixMillis, base: u64) -> Self {
        Self {
            to,
            address,
            frame,
            done: false,
            attempts: 1,
            next_at: now.saturating_add(backoff(base, 0)),
            expires_at: None,
        }
    }
}

struct Distribution {
    grants: Vec<Outgoing>,
    revokes: Vec<Outgoing>,
    /// Guardians that refused their share.
    refused: Vec<PeerId>,
    protected: bool,
}

struct SetShares {
    set: SignedSet,
    shares: Vec<Share>,
}

struct Session {
    /// request id -> the request, sent until a guardian answers it finally.
    requests: HashMap<Hash256, Outgoing>,
    set_id: Option<SetId>,
    sets: BTreeMap<SetId, SetShares>,
}

/// The recovery core of one identity. See the module docs.
pub struct RecoveryNode {
    id: Arc<Identity>,
    config: RecoveryConfig,
    // Guardian.
    shares: BTreeMap<(PeerId, SetId), Held>,
    pending: HashMap<Hash256, Pending>,
    seen: HashMap<Hash256, UnixMillis>,
    releases: HashMap<PeerId, VecDeque<UnixMillis>>,
    changes: ChangeSet<(PeerId, SetId)>,
    revoked: BTreeMap<(PeerId, SetId), UnixMillis>,
    answered: HashMap<Hash256, Answered>,
    allowed: std::collections::HashSet<PeerId>,
    // Owner.
    sets: BTreeMap<SetId, Distribution>,
    // Recovering.
    sessions: HashMap<PeerId, Session>,
    recovered: HashMap<PeerId, Zeroizing<[u8; SECRET_LEN]>>,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for RecoveryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryNode")
            .field("peer", &self.id.peer_id())
            .field("shares", &self.shares.len())
            .field("pending", &self.pending.len())
            .field("sets", &self.sets.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    mesh_crypto::random_fill(&mut b);
    b
}

impl RecoveryNode {
    /// A node for `id`.
    pub fn new(id: Arc<Identity>, config: RecoveryConfig) -> Self {
        Self {
            id,
            config,
            shares: BTreeMap::new(),
            pending: HashMap::new(),
            seen: HashMap::new(),
            releases: HashMap::new(),
            changes: ChangeSet::default(),
            revoked: BTreeMap::new(),
            answered: HashMap::new(),
            allowed: std::collections::HashSet::new(),
            sets: BTreeMap::new(),
            sessions: HashMap::new(),
            recovered: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.id.peer_id()
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn send(&mut self, to: PeerId, address: &str, frame: &Frame) {
        self.out.push_back(Output::Send {
            to,
            address: address.to_string(),
            bytes: frame.encode(),
        });
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn refuse(&mut self, from: PeerId, reason: &'static str) {
        tracing::debug!(%from, reason, "recovery frame refused");
        self.event(Event::Refused { from, reason });
    }

    /// When the core next wants [`RecoveryNode::tick`].
    pub fn next_wakeup(&self) -> Option<UnixMillis> {
        let release = self
            .pending
            .values()
            .filter(|p| p.approved)
            .map(|p| p.release_at)
            .min();
        let resend = self
            .sets
            .values()
            .flat_map(|d| d.grants.iter().chain(&d.revokes))
            .chain(self.sessions.values().flat_map(|s| s.requests.values()))
            .filter(|o| !o.done)
            .map(|o| o.expires_at.map_or(o.next_at, |e| e.min(o.next_at)))
            .min();
        [release, resend].into_iter().flatten().min()
    }

    // ---------------------------------------------------------------- owner

    /// Protects this node's identity: `k` of the `guardians` (peer and address) will be
    /// needed to recover it. Sends the grants; returns the new set's id.
    ///
    /// # Errors
    /// [`RecoveryError::Shamir`] for `k` out of `1..=n`; [`RecoveryError::Guardians`] for a
    /// repeated guardian, this node itself, or more than 255.
    pub fn protect(
        &mut self,
        guardians: &[(PeerId, String)],
        k: u8,
        now: UnixMillis,
    ) -> Result<SetId, RecoveryError> {
        let me = self.id.peer_id();
        if guardians.len() > MAX_GUARDIANS {
            return Err(RecoveryError::Guardians("more than 255 guardians"));
        }
        for (i, (g, _)) in guardians.iter().enumerate() {
            if *g == me {
                return Err(RecoveryError::Guardians(
                    "the owner cannot be its own guardian",
                ));
            }
            if guardians[..i].iter().any(|(o, _)| o == g) {
                return Err(RecoveryError::Guardians("a guardian is listed twice"));
            }
        }
        let n = u8::try_from(guardians.len()).map_err(|_| RecoveryError::Guardians("too many"))?;
        let seed = self.id.seed();
        let shares = shamir::split(&seed, k, n)?;
        drop(seed);
        let set_id: SetId = random();
        let salts: Vec<[u8; 32]> = shares.iter().map(|_| random()).collect();
        let entries = guardians
            .iter()
            .zip(&shares)
            .zip(&salts)
            .map(|(((g, _), s), salt)| GuardianEntry {
                guardian: *g,
                x: s.x,
                commitment: commitment(&set_id, s, salt),
            })
            .collect();
        let set = Signed::sign(
            &self.id,
            GuardianSet {
                set_id,
                k,
                guardians: entries,
            },
            now,
            UnixMillis::NEVER,
        )?;
        let mut grants = Vec::with_capacity(guardians.len());
        for (((g, address), share), salt) in guardians.iter().zip(shares).zip(salts) {
            let sealed = SealedShare {
                request_id: Hash256::default(),
                share,
                salt,
                set: set.as_bytes().to_vec(),
            };
            let envelope = envelope::seal(&self.id, g, GRANT_CONTEXT, &sealed.encode())?;
            grants.push(Outgoing::new(
                *g,
                address.clone(),
                Frame::Grant(envelope).encode(),
                now,
                self.config.resend_interval_ms,
            ));
        }
        for o in &grants {
            self.out.push_back(Output::Send {
                to: o.to,
                address: o.address.clone(),
                bytes: o.frame.clone(),
            });
        }
        self.sets.insert(
            set_id,
            Distribution {
                grants,
                revokes: Vec::new(),
                refused: Vec::new(),
                protected: false,
            },
        );
        Ok(set_id)
    }

    /// Replaces set `old` with a new one (`k` of `guardians`), and revokes `old` at its
    /// guardians (sent until each acknowledges). Returns the new set's id.
    ///
    /// # Errors
    /// As [`RecoveryNode::protect`]; [`RecoveryError::Unknown`] for a set this node did not
    /// make.
    pub fn refresh(
        &mut self,
        old: &SetId,
        guardians: &[(PeerId, String)],
        k: u8,
        now: UnixMillis,
    ) -> Result<SetId, RecoveryError> {
        if !self.sets.contains_key(old) {
            return Err(RecoveryError::Unknown("set"));
        }
        let new = self.protect(guardians, k, now)?;
        self.revoke(old, now)?;
        Ok(new)
    }

    /// Revokes set `old` at its guardians.
    ///
    /// # Errors
    /// [`RecoveryError::Unknown`] for a set this node did not make (or no longer remembers:
    /// use [`RecoveryNode::revoke_at`]).
    pub fn revoke(&mut self, old: &SetId, now: UnixMillis) -> Result<(), RecoveryError> {
        let guardians: Vec<(PeerId, String)> = self
            .sets
            .get(old)
            .ok_or(RecoveryError::Unknown("set"))?
            .grants
            .iter()
            .map(|g| (g.to, g.address.clone()))
            .collect();
        self.revoke_at(old, &guardians, now)
    }

    /// Revokes set `old` at `guardians`, whether or not this node remembers the set (after a
    /// restart, the guardians are listed in the signed set each of them holds).
    ///
    /// # Errors
    /// [`RecoveryError::Crypto`] if the revocation cannot be signed.
    pub fn revoke_at(
        &mut self,
        old: &SetId,
        guardians: &[(PeerId, String)],
        now: UnixMillis,
    ) -> Result<(), RecoveryError> {
        let revocation = Signed::sign(
            &self.id,
            Revocation { set_id: *old },
            now,
            UnixMillis::NEVER,
        )?;
        let frame = Frame::Revoke(revocation.into_bytes()).encode();
        let base = self.config.resend_interval_ms;
        let revokes: Vec<Outgoing> = guardians
            .iter()
            .map(|(g, a)| Outgoing::new(*g, a.clone(), frame.clone(), now, base))
            .collect();
        for o in &revokes {
            self.out.push_back(Output::Send {
                to: o.to,
                address: o.address.clone(),
                bytes: o.frame.clone(),
            });
        }
        let d = self.sets.entry(*old).or_insert_with(|| Distribution {
            grants: Vec::new(),
            revokes: Vec::new(),
            refused: Vec::new(),
            protected: false,
        });
        d.grants.iter_mut().for_each(|g| g.done = true);
        d.revokes = revokes;
        Ok(())
    }

    /// The guardians of set `set_id` that have not acknowledged yet.
    pub fn unacknowledged(&self, set_id: &SetId) -> Vec<PeerId> {
        self.sets.get(set_id).map_or_else(Vec::new, |d| {
            d.grants
                .iter()
                .chain(&d.revokes)
                .filter(|o| !o.done)
                .map(|o| o.to)
                .collect()
        })
    }

    fn on_ack(&mut self, from: PeerId, bytes: &[u8], now: UnixMillis) {
        let Ok(ack) = Signed::<Ack>::decode(bytes, now) else {
            return self.refuse(from, "bad acknowledgement");
        };
        let a = ack.payload();
        if *ack.author() != from || a.owner != self.id.peer_id() {
            return self.refuse(from, "acknowledgement not from its guardian");
        }
        let Some(d) = self.sets.get_mut(&a.set_id) else {
            return;
        };
        let list = match a.kind {
            AckKind::Stored | AckKind::Refused => &mut d.grants,
            AckKind::Revoked => &mut d.revokes,
        };
        let Some(o) = list.iter_mut().find(|o| o.to == from && !o.done) else {
            return;
        };
        o.done = true;
        if a.kind == AckKind::Refused {
            d.refused.push(from);
        }
        let all_stored = a.kind == AckKind::Stored
            && !d.protected
            && d.revokes.is_empty()
            && d.refused.is_empty()
            && d.grants.iter().all(|g| g.done);
        if all_stored {
            d.protected = true;
        }
        let (set_id, kind) = (a.set_id, a.kind);
        if a.kind == AckKind::Revoked && d.revokes.iter().all(|r| r.done) {
            self.sets.remove(&set_id);
        }
        self.event(Event::Acknowledged {
            set_id,
            guardian: from,
            kind,
        });
        if all_stored {
            self.event(Event::Protected { set_id });
        }
    }

    // ---------------------------------------------------------------- guardian

    /// Handles a frame from `from` (authenticated by the link), reachable at `address`.
    pub fn handle(&mut self, from: PeerId, address: &str, bytes: &[u8], now: UnixMillis) {
        match Frame::decode(bytes) {
            Ok(Frame::Grant(b)) => self.on_grant(from, address, &b, now),
            Ok(Frame::Ack(b)) => self.on_ack(from, &b, now),
            Ok(Frame::Request(b)) => self.on_request(from, address, &b, now),
            Ok(Frame::Release(b)) => self.on_release(from, &b, now),
            Ok(Frame::Status(b)) => self.on_status(from, &b, now),
            Ok(Frame::Revoke(b)) => self.on_revoke(from, address, &b, now),
            Err(_) => self.refuse(from, "malformed frame"),
        }
    }

    /// Opens and checks a grant: the share, its set, and this guardian's place in it.
    fn check_grant(
        &self,
        grant: &[u8],
        now: UnixMillis,
    ) -> Result<(PeerId, SealedShare, SignedSet), &'static str> {
        let opened = envelope::open_with_limit(&self.id, grant, GRANT_CONTEXT, MAX_SHARE_PLAINTEXT)
            .map_err(|_| "grant does not open")?;
        let plaintext = Zeroizing::new(opened.plaintext);
        let sealed = SealedShare::decode(&plaintext).map_err(|_| "malformed grant")?;
        if sealed.request_id != Hash256::default() {
            return Err("malformed grant");
        }
        let set =
            Signed::<GuardianSet>::decode(&sealed.set, now).map_err(|_| "bad guardian set")?;
        if *set.author() != opened.sender {
            return Err("guardian set not signed by the grant's sender");
        }
        let entry = set
            .payload()
            .entry(&self.id.peer_id())
            .ok_or("not a guardian of this set")?;
        if entry.x != sealed.share.x
            || commitment(&set.payload().set_id, &sealed.share, &sealed.salt) != entry.commitment
        {
            return Err("share does not match its commitment");
        }
        Ok((opened.sender, sealed, set))
    }

    fn on_grant(&mut self, from: PeerId, address: &str, grant: &[u8], now: UnixMillis) {
        let (owner, _sealed, set) = match self.check_grant(grant, now) {
            Ok(x) => x,
            Err(reason) => return self.refuse(from, reason),
        };
        let set_id = set.payload().set_id;
        let key = (owner, set_id);
        let refusal = if self.revoked.contains_key(&key) {
            Some("set revoked")
        } else if self.shares.contains_key(&key) {
            // Already kept (its acknowledgement was lost): acknowledge again.
            None
        } else if self.config.require_known_owner && !self.allowed.contains(&owner) {
            Some("owner not accepted by this guardian")
        } else if !self.shares.contains_key(&key) && self.shares.len() >= self.config.max_shares {
            Some("guardian full")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.refuse(from, reason);
            return self.ack(owner, address, AckKind::Refused, set_id, now);
        }
        if !self.shares.contains_key(&key) {
            let mut of_owner: Vec<(UnixMillis, SetId)> = self
                .shares
                .iter()
                .filter(|((o, _), _)| *o == owner)
                .map(|((_, s), h)| (h.set_created, *s))
                .collect();
            of_owner.sort();
            while of_owner.len() >= self.config.max_sets_per_owner.max(1) {
                let (_, oldest) = of_owner.remove(0);
                self.shares.remove(&(owner, oldest));
                self.changes.mark((owner, oldest));
            }
            self.shares.insert(
                key,
                Held {
                    grant: grant.to_vec(),
                    set_created: set.created_at(),
                    received_at: now,
                },
            );
            self.changes.mark(key);
            self.event(Event::ShareStored { owner, set_id });
        }
        self.ack(owner, address, AckKind::Stored, set_id, now);
    }

    fn ack(&mut self, owner: PeerId, address: &str, kind: AckKind, set_id: SetId, now: UnixMillis) {
        match Signed::sign(
            &self.id,
            Ack {
                kind,
                owner,
                set_id,
            },
            now,
            UnixMillis::NEVER,
        ) {
            Ok(ack) => self.send(owner, address, &Frame::Ack(ack.into_bytes())),
            Err(e) => tracing::warn!(error = %e, "acknowledgement not signed"),
        }
    }

    fn on_revoke(&mut self, from: PeerId, address: &str, bytes: &[u8], now: UnixMillis) {
        let Ok(r) = Signed::<Revocation>::decode(bytes, now) else {
            return self.refuse(from, "bad revocation");
        };
        let owner = *r.author();
        let set_id = r.payload().set_id;
        let key = (owner, set_id);
        let known = self.allowed.contains(&owner) || self.shares.keys().any(|(o, _)| *o == owner);
        // Remembered (for owners this guardian knows: no one else can fill the list), so that
        // a grant of this set arriving late cannot bring it back.
        if known && !self.revoked.contains_key(&key) {
            while self.revoked.len() >= self.config.max_revoked.max(1) {
                let Some(oldest) = self
                    .revoked
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                self.revoked.remove(&oldest);
                self.changes.mark(oldest);
            }
            self.revoked.insert(key, now);
            self.changes.mark(key);
        }
        if self.shares.remove(&key).is_some() {
            self.event(Event::ShareRevoked { owner, set_id });
        }
        // A release kept for a repeated request must not outlive the revocation: a repeat
        // now hears that there is no share.
        for a in self.answered.values_mut() {
            if a.owner == owner && a.set_id == set_id {
                a.answer = Err(RequestStatus::NoShare);
            }
        }
        let dropped: Vec<(Hash256, PeerId, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.owner == owner && p.set_id == set_id)
            .map(|(id, p)| (*id, p.requester, p.address.clone()))
            .collect();
        for (id, requester, address) in dropped {
            if let Some(p) = self.pending.remove(&id) {
                self.remember_answer(
                    id,
                    Answered {
                        requester,
                        owner,
                        set_id,
                        answer: Err(RequestStatus::NoShare),
                        expires_at: p.expires_at,
                    },
                    now,
                );
            }
            self.status(requester, &address, id, RequestStatus::NoShare, now);
        }
        self.ack(owner, address, AckKind::Revoked, set_id, now);
    }

    fn status(
        &mut self,
        to: PeerId,
        address: &str,
        request_id: Hash256,
        status: RequestStatus,
        now: UnixMillis,
    ) {
        match Signed::sign(
            &self.id,
            StatusReport { request_id, status },
            now,
            UnixMillis::NEVER,
        ) {
            Ok(s) => self.send(to, address, &Frame::Status(s.into_bytes())),
            Err(e) => tracing::warn!(error = %e, "status not signed"),
        }
    }

    fn on_request(&mut self, from: PeerId, address: &str, bytes: &[u8], now: UnixMillis) {
        let Ok(req) = Signed::<RecoveryRequest>::decode(bytes, now) else {
            return self.refuse(from, "bad request");
        };
        if *req.author() != from {
            return self.refuse(from, "request not signed by the peer that sent it");
        }
        if req.expires_at().0.saturating_sub(req.created_at().0) > self.config.request_validity_ms {
            return self.refuse(from, "request valid for too long");
        }
        let id = *req.id();
        self.seen.retain(|_, expires| *expires > now);
        if self.seen.contains_key(&id) {
            return self.repeat(from, address, id, now);
        }
        let r = req.payload();
        let owner = r.owner;
        let set_id = if r.set_id == [0; 32] {
            self.shares
                .iter()
                .filter(|((o, _), _)| *o == owner)
                .max_by_key(|(_, h)| h.set_created)
                .map(|((_, s), _)| *s)
        } else {
            self.shares
                .contains_key(&(owner, r.set_id))
                .then_some(r.set_id)
        };
        // Answers that change nothing here are given again to a repeat: the id is remembered
        // only once the request is held.
        let Some(set_id) = set_id else {
            return self.status(from, address, id, RequestStatus::NoShare, now);
        };
        if self.rate_limited(&owner, now) {
            return self.status(from, address, id, RequestStatus::RateLimited, now);
        }
        // One request per requester, a few per owner, a bound in all; nothing already held is
        // pushed out (the guardian's user can deny what they do not want).
        let of_requester = self
            .pending
            .iter()
            .find(|(_, p)| p.requester == from)
            .map(|(id, p)| (*id, p.approved));
        match of_requester {
            Some((_, true)) => return self.status(from, address, id, RequestStatus::Busy, now),
            Some((old, false)) => {
                self.pending.remove(&old);
            }
            None => {}
        }
        let of_owner = self.pending.values().filter(|p| p.owner == owner).count();
        if of_owner >= self.config.max_pending_per_owner.max(1)
            || self.pending.len() >= self.config.max_pending
            || self.seen.len() >= self.config.max_seen
        {
            return self.status(from, address, id, RequestStatus::Busy, now);
        }
        self.seen.insert(id, req.expires_at());
        let release_at = now.saturating_add(self.config.min_wait_ms);
        let approved = !self.config.require_approval;
        self.pending.insert(
            id,
            Pending {
                requester: from,
                address: address.to_string(),
                owner,
                set_id,
                approved,
                release_at,
                // The request's own expiry: a request must be valid for longer than the
                // waiting period (the new device asks again otherwise).
                expires_at: req.expires_at(),
            },
        );
        if approved && self.config.min_wait_ms == 0 {
            return self.release(id, now);
        }
        self.status(from, address, id, RequestStatus::Pending, now);
        if self.config.require_approval {
            self.event(Event::ApprovalNeeded {
                request_id: id,
                owner,
                requester: from,
                code: verification_code(&id),
            });
        }
    }

    /// A request seen before, from `from`: the same answer again if it is its author's.
    fn repeat(&mut self, from: PeerId, address: &str, id: Hash256, now: UnixMillis) {
        if self.pending.get(&id).is_some_and(|p| p.requester == from) {
            return self.status(from, address, id, RequestStatus::Pending, now);
        }
        let again = self
            .answered
            .get(&id)
            .filter(|a| a.requester == from && a.expires_at > now)
            .map(|a| (a.answer.clone(), a.owner, a.set_id));
        match again {
            // A share goes again only while it is still held (not revoked meanwhile).
            Some((Ok(frame), owner, set_id)) if self.shares.contains_key(&(owner, set_id)) => {
                self.out.push_back(Output::Send {
                    to: from,
                    address: address.to_string(),
                    bytes: frame,
                });
            }
            Some((Ok(_), ..)) => self.status(from, address, id, RequestStatus::NoShare, now),
            Some((Err(status), ..)) => self.status(from, address, id, status, now),
            None => self.refuse(from, "replayed request"),
        }
    }

    fn remember_answer(&mut self, id: Hash256, a: Answered, now: UnixMillis) {
        self.answered.retain(|_, a| a.expires_at > now);
        if self.answered.len() >= self.config.max_answered.max(1)
            && let Some(oldest) = self
                .answered
                .iter()
                .min_by_key(|(_, a)| a.expires_at)
                .map(|(id, _)| *id)
        {
            self.answered.remove(&oldest);
        }
        self.answered.insert(id, a);
    }

    fn rate_limited(&mut self, owner: &PeerId, now: UnixMillis) -> bool {
        let Some(times) = self.releases.get_mut(owner) else {
            return false;
        };
        while times
            .front()
            .is_some_and(|t| t.saturating_add(DAY_MS) <= now)
        {
            times.pop_front();
        }
        times.len() >= self.config.releases_per_day as usize
    }

    /// Approves request `request_id` (after the user compared its verification code with the
    /// new device): the share is released now, or when the waiting period ends.
    ///
    /// # Errors
    /// [`RecoveryError::Unknown`] for a request that is not pending.
    pub fn approve(&mut self, request_id: &Hash256, now: UnixMillis) -> Result<(), RecoveryError> {
        let p = self
            .pending
            .get_mut(request_id)
            .ok_or(RecoveryError::Unknown("request"))?;
        p.approved = true;
        if p.release_at <= now {
            self.release(*request_id, now);
        }
        Ok(())
    }

    /// Denies request `request_id`; the new device is told.
    ///
    /// # Errors
    /// [`RecoveryError::Unknown`] for a request that is not pending.
    pub fn deny(&mut self, request_id: &Hash256, now: UnixMillis) -> Result<(), RecoveryError> {
        let p = self
            .pending
            .remove(request_id)
            .ok_or(RecoveryError::Unknown("request"))?;
        self.status(
            p.requester,
            &p.address,
            *request_id,
            RequestStatus::Denied,
            now,
        );
        self.remember_answer(
            *request_id,
            Answered {
                requester: p.requester,
                owner: p.owner,
                set_id: p.set_id,
                answer: Err(RequestStatus::Denied),
                expires_at: p.expires_at,
            },
            now,
        );
        Ok(())
    }

    /// Requests waiting for a decision or their waiting period: (request, owner, requester).
    pub fn pending_requests(&self) -> Vec<(Hash256, PeerId, PeerId)> {
        self.pending
            .iter()
            .map(|(id, p)| (*id, p.owner, p.requester))
            .collect()
    }

    fn release(&mut self, request_id: Hash256, now: UnixMillis) {
        let Some(p) = self.pending.remove(&request_id) else {
            return;
        };
        if p.expires_at <= now {
            return self.refuse(p.requester, "request expired before its release");
        }
        if self.rate_limited(&p.owner, now) {
            return self.status(
                p.requester,
                &p.address,
                request_id,
                RequestStatus::RateLimited,
                now,
            );
        }
        let Some(held) = self.shares.get(&(p.owner, p.set_id)) else {
            return self.status(
                p.requester,
                &p.address,
                request_id,
                RequestStatus::NoShare,
                now,
            );
        };
        let grant = held.grant.clone();
        let Ok((_, mut sealed, _)) = self.check_grant(&grant, now) else {
            return self.status(
                p.requester,
                &p.address,
                request_id,
                RequestStatus::NoShare,
                now,
            );
        };
        sealed.request_id = request_id;
        let envelope =
            match envelope::seal(&self.id, &p.requester, RELEASE_CONTEXT, &sealed.encode()) {
                Ok(e) => e,
                Err(e) => return tracing::warn!(error = %e, "share not sealed"),
            };
        self.releases.entry(p.owner).or_default().push_back(now);
        let frame = Frame::Release(envelope).encode();
        self.remember_answer(
            request_id,
            Answered {
                requester: p.requester,
                owner: p.owner,
                set_id: p.set_id,
                answer: Ok(frame.clone()),
                expires_at: p.expires_at,
            },
            now,
        );
        self.out.push_back(Output::Send {
            to: p.requester,
            address: p.address.clone(),
            bytes: frame,
        });
        self.event(Event::Released {
            request_id,
            owner: p.owner,
            requester: p.requester,
        });
    }

    /// The share this guardian holds for `owner`'s set `set_id`, opened (for a guardian's own
    /// export or inspection; it never leaves the node this way).
    pub fn open_held(
        &self,
        owner: &PeerId,
        set_id: &SetId,
        now: UnixMillis,
    ) -> Option<SealedShare> {
        let held = self.shares.get(&(*owner, *set_id))?;
        self.check_grant(&held.grant, now).ok().map(|(_, s, _)| s)
    }

    /// The sets this guardian holds shares of: (owner, set).
    pub fn held(&self) -> Vec<(PeerId, SetId)> {
        self.shares.keys().copied().collect()
    }

    /// Time passes: releases whose waiting period is over, and sends not yet answered (with
    /// backoff; an owner gives up on a guardian after [`RecoveryConfig::max_resends`] tries).
    pub fn tick(&mut self, now: UnixMillis) {
        let due: Vec<Hash256> = self
            .pending
            .iter()
            .filter(|(_, p)| p.approved && p.release_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.release(id, now);
        }
        self.pending.retain(|_, p| p.expires_at > now);
        self.releases.retain(|_, times| {
            times.retain(|t| t.saturating_add(DAY_MS) > now);
            !times.is_empty()
        });
        let base = self.config.resend_interval_ms;
        let max = self.config.max_resends;
        let mut sends = Vec::new();
        let mut gave_up = Vec::new();
        for (set_id, d) in &mut self.sets {
            for o in d.grants.iter_mut().chain(d.revokes.iter_mut()) {
                if o.done || o.next_at > now {
                    continue;
                }
                if o.attempts >= max {
                    o.done = true;
                    gave_up.push((*set_id, o.to));
                    continue;
                }
                sends.push((o.to, o.address.clone(), o.frame.clone()));
                o.next_at = now.saturating_add(backoff(base, o.attempts));
                o.attempts += 1;
            }
        }
        let mut expired = Vec::new();
        for (owner, s) in &mut self.sessions {
            for o in s.requests.values_mut() {
                if o.done {
                    continue;
                }
                if o.expires_at.is_some_and(|e| e <= now) || o.attempts >= max {
                    o.done = true;
                    expired.push((*owner, o.to));
                    continue;
                }
                if o.next_at > now {
                    continue;
                }
                sends.push((o.to, o.address.clone(), o.frame.clone()));
                o.next_at = now.saturating_add(backoff(base, o.attempts));
                o.attempts += 1;
            }
        }
        // A revocation acknowledged everywhere (or given up on) ends the set's distribution.
        self.sets
            .retain(|_, d| d.revokes.is_empty() || d.revokes.iter().any(|o| !o.done));
        for (to, address, bytes) in sends {
            self.out.push_back(Output::Send { to, address, bytes });
        }
        for (set_id, guardian) in gave_up {
            self.event(Event::GaveUp { set_id, guardian });
        }
        for (owner, guardian) in expired {
            self.event(Event::RequestExpired { owner, guardian });
        }
    }

    /// Accepts `owner` as someone this guardian keeps a share for (with
    /// [`RecoveryConfig::require_known_owner`], grants of other owners are refused).
    pub fn allow_owner(&mut self, owner: PeerId) {
        self.allowed.insert(owner);
    }

    /// Stops accepting new grants of `owner` (shares already kept stay, until revoked).
    pub fn forget_owner(&mut self, owner: &PeerId) {
        self.allowed.remove(owner);
    }

    // ---------------------------------------------------------------- persistence

    /// The (owner, set) keys of shares added or removed since the last call, for the driver
    /// to persist (off until [`RecoveryNode::track_changes`]).
    pub fn take_changes(&mut self) -> Vec<(PeerId, SetId)> {
        self.changes.take()
    }

    /// Starts recording changes for [`RecoveryNode::take_changes`].
    pub fn track_changes(&mut self) {
        self.changes.enable();
    }

    /// When set `key` was revoked here, if it was (and is still remembered).
    pub fn revoked_at(&self, key: &(PeerId, SetId)) -> Option<UnixMillis> {
        self.revoked.get(key).copied()
    }

    /// Puts back a revocation read from storage.
    pub fn restore_revoked(&mut self, key: (PeerId, SetId), at: UnixMillis) {
        self.shares.remove(&key);
        self.revoked.insert(key, at);
    }

    /// The stored form of a held share: `(set created, received, grant envelope)`.
    pub fn held_record(&self, key: &(PeerId, SetId)) -> Option<(UnixMillis, UnixMillis, &[u8])> {
        self.shares
            .get(key)
            .map(|h| (h.set_created, h.received_at, h.grant.as_slice()))
    }

    /// Puts back a share read from storage, checked like a new grant.
    ///
    /// # Errors
    /// The reason it does not verify (the driver deletes it).
    pub fn restore(
        &mut self,
        grant: &[u8],
        received_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<(), &'static str> {
        let (owner, _, set) = self.check_grant(grant, now)?;
        if self.revoked.contains_key(&(owner, set.payload().set_id)) {
            return Err("set revoked");
        }
        self.shares.insert(
            (owner, set.payload().set_id),
            Held {
                grant: grant.to_vec(),
                set_created: set.created_at(),
                received_at,
            },
        );
        Ok(())
    }

    // ---------------------------------------------------------------- recovering

    /// Starts recovering `owner`'s key from `guardians` (this node being the new device, with
    /// its fresh identity): sends each a signed request. `set_id` names the set, or `None` for
    /// the newest each guardian holds. Returns each guardian's verification code, for the
    /// user to read to them.
    ///
    /// # Errors
    /// [`RecoveryError::Crypto`] if a request cannot be signed.
    pub fn recover(
        &mut self,
        owner: PeerId,
        guardians: &[(PeerId, String)],
        set_id: Option<SetId>,
        now: UnixMillis,
    ) -> Result<Vec<(PeerId, String)>, RecoveryError> {
        let mut requests = HashMap::new();
        let mut codes = Vec::new();
        let mut frames = Vec::new();
        for (g, address) in guardians {
            let req = Signed::sign(
                &self.id,
                RecoveryRequest {
                    owner,
                    set_id: set_id.unwrap_or([0; 32]),
                    nonce: random(),
                },
                now,
                now.saturating_add(self.config.request_validity_ms),
            )?;
            codes.push((*g, verification_code(req.id())));
            let frame = Frame::Request(req.as_bytes().to_vec()).encode();
            frames.push((*g, address.clone(), frame.clone()));
            let mut o = Outgoing::new(
                *g,
                address.clone(),
                frame,
                now,
                self.config.resend_interval_ms,
            );
            o.expires_at = Some(req.expires_at());
            requests.insert(*req.id(), o);
        }
        for (to, address, bytes) in frames {
            self.out.push_back(Output::Send { to, address, bytes });
        }
        let session = self.sessions.entry(owner).or_insert_with(|| Session {
            requests: HashMap::new(),
            set_id,
            sets: BTreeMap::new(),
        });
        session.set_id = set_id;
        session.requests.extend(requests);
        Ok(codes)
    }

    fn on_status(&mut self, from: PeerId, bytes: &[u8], now: UnixMillis) {
        let Ok(s) = Signed::<StatusReport>::decode(bytes, now) else {
            return self.refuse(from, "bad status");
        };
        let report = s.payload().clone();
        if *s.author() != from {
            return self.refuse(from, "status not signed by its sender");
        }
        let owner = self.sessions.iter_mut().find_map(|(o, sess)| {
            let req = sess.requests.get_mut(&report.request_id)?;
            if req.to != from {
                return None;
            }
            if matches!(
                report.status,
                RequestStatus::Denied | RequestStatus::NoShare | RequestStatus::RateLimited
            ) {
                // A final answer: stop asking this guardian.
                req.done = true;
            } else {
                // Pending or busy: the guardian is there; keep asking (at most hourly) until
                // the request expires, in case its answer gets lost.
                req.attempts = 1;
            }
            Some(*o)
        });
        if let Some(owner) = owner {
            self.event(Event::GuardianStatus {
                owner,
                guardian: from,
                status: report.status,
            });
        }
    }

    fn on_release(&mut self, from: PeerId, bytes: &[u8], now: UnixMillis) {
        let Ok(opened) =
            envelope::open_with_limit(&self.id, bytes, RELEASE_CONTEXT, MAX_SHARE_PLAINTEXT)
        else {
            return self.refuse(from, "release does not open");
        };
        let guardian = opened.sender;
        let plaintext = Zeroizing::new(opened.plaintext);
        let Ok(sealed) = SealedShare::decode(&plaintext) else {
            return self.bad_share(None, guardian, "malformed share");
        };
        let owner = self.sessions.iter().find_map(|(o, sess)| {
            sess.requests
                .get(&sealed.request_id)
                .is_some_and(|r| r.to == guardian)
                .then_some(*o)
        });
        let Some(owner) = owner else {
            return self.refuse(guardian, "release for no request of ours");
        };
        // Any release ends its request: a good one is used, a bad one is not asked for again.
        if let Some(r) = self
            .sessions
            .get_mut(&owner)
            .and_then(|s| s.requests.get_mut(&sealed.request_id))
        {
            r.done = true;
        }
        let set = match Signed::<GuardianSet>::decode(&sealed.set, now) {
            Ok(set) if *set.author() == owner => set,
            _ => {
                return self.bad_share(
                    Some(owner),
                    guardian,
                    "guardian set not signed by the owner",
                );
            }
        };
        let payload = set.payload();
        let Some(entry) = payload.entry(&guardian) else {
            return self.bad_share(Some(owner), guardian, "not a guardian of the set");
        };
        if entry.x != sealed.share.x
            || commitment(&payload.set_id, &sealed.share, &sealed.salt) != entry.commitment
        {
            return self.bad_share(Some(owner), guardian, "share does not match its commitment");
        }
        let Some(session) = self.sessions.get_mut(&owner) else {
            return;
        };
        if session.set_id.is_some_and(|s| s != payload.set_id) {
            return self.bad_share(Some(owner), guardian, "share of another set");
        }
        // One share per request: the request is used up.
        session.requests.remove(&sealed.request_id);
        let set_id = payload.set_id;
        let k = payload.k;
        let entry = session.sets.entry(set_id).or_insert_with(|| SetShares {
            set,
            shares: Vec::new(),
        });
        if !entry.shares.iter().any(|s| s.x == sealed.share.x) {
            entry.shares.push(sealed.share.clone());
        }
        let have = entry.shares.len();
        self.event(Event::ShareAccepted { owner, guardian });
        if have >= usize::from(k) && !self.recovered.contains_key(&owner) {
            self.combine(owner, set_id);
        }
    }

    fn bad_share(&mut self, owner: Option<PeerId>, guardian: PeerId, reason: &'static str) {
        tracing::warn!(%guardian, reason, "bad share");
        match owner {
            Some(owner) => self.event(Event::BadShare {
                owner,
                guardian,
                reason,
            }),
            None => self.refuse(guardian, reason),
        }
    }

    fn combine(&mut self, owner: PeerId, set_id: SetId) {
        let Some(entry) = self.sessions.get(&owner).and_then(|s| s.sets.get(&set_id)) else {
            return;
        };
        let k = entry.set.payload().k;
        match shamir::combine(&entry.shares, k) {
            Ok(seed) if Identity::from_seed(&seed).peer_id() == owner => {
                self.recovered.insert(owner, seed);
                self.event(Event::Recovered { owner });
            }
            Ok(_) => {
                tracing::error!(%owner, "shares combine to another key");
                self.event(Event::CombineFailed { owner });
            }
            Err(e) => tracing::debug!(%owner, error = %e, "not combined yet"),
        }
    }

    /// The recovered identity of `owner`, if it is back, without handing it over: an
    /// application saves it first, then takes it with [`RecoveryNode::take_recovered`], so
    /// that a failed save does not lose the key.
    pub fn recovered(&self, owner: &PeerId) -> Option<Identity> {
        self.recovered
            .get(owner)
            .map(|seed| Identity::from_seed(seed))
    }

    /// The recovered identity of `owner`, once [`Event::Recovered`] came.
    ///
    /// # Errors
    /// [`RecoveryError::Shamir`] with [`ShamirError::NotEnoughShares`] (the good shares in
    /// and the threshold; a threshold of 0 when no share came) while too few are in: never a
    /// wrong key.
    pub fn take_recovered(&mut self, owner: &PeerId) -> Result<Identity, RecoveryError> {
        if let Some(seed) = self.recovered.remove(owner) {
            self.sessions.remove(owner);
            return Ok(Identity::from_seed(&seed));
        }
        let best = self.sessions.get(owner).and_then(|s| {
            s.sets
                .values()
                .max_by_key(|e| e.shares.len())
                .map(|e| (e.shares.len(), e.set.payload().k))
        });
        let (have, need) = best.unwrap_or((0, 0));
        Err(ShamirError::NotEnoughShares { have, need }.into())
    }
}
