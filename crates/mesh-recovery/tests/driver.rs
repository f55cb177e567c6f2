//! Social recovery over the memory transport with the driver: an owner protects its key with
//! three guardians (2 of 3); a guardian restarts from its store and still holds its share; a
//! new device asks, the guardians' users compare the verification codes and approve (one
//! denies), and the key comes back. No byte of the key or of any share is in any store.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Identity, UnixMillis, envelope};
use mesh_platform::kv::{Batch, KvStore, Schema, Store, read_table};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_recovery::RequestStatus;
use mesh_recovery::driver::{
    DriverError, DriverOptions, RecoveryHandle, SHARES_TABLE, TABLES, load, start,
};
use mesh_recovery::message::{AckKind, Frame, GRANT_CONTEXT, SealedShare};
use mesh_recovery::node::{Event, Output, RecoveryConfig, RecoveryError, RecoveryNode};
use mesh_recovery::shamir::ShamirError;
use mesh_store_memory::{MemoryBackend, SharedMap};
use mesh_transport::memory::{LinkConfig, MemoryNetwork};
use mesh_transport::pool::Pool;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

type Net = Arc<MemoryNetwork<TokioRuntime>>;

struct Node {
    id: Arc<Identity>,
    address: String,
    handle: RecoveryHandle,
    events: Receiver<Event>,
    map: SharedMap,
}

async fn node(net: &Net, id: Arc<Identity>, address: &str, map: SharedMap) -> Node {
    let rt = TokioRuntime::current();
    let pool = Pool::new(
        net.transport(Arc::clone(&id), address).unwrap(),
        rt.clone(),
        id.peer_id(),
        address,
    );
    pool.start_accepting();
    let store: Arc<dyn KvStore> = Arc::new(
        Store::open(MemoryBackend::with_map(Arc::clone(&map)), &SCHEMA)
            .await
            .unwrap(),
    );
    let (handle, events) = start(
        Arc::clone(&id),
        pool,
        rt,
        DriverOptions {
            config: RecoveryConfig {
                resend_interval_ms: 500,
                ..RecoveryConfig::default()
            },
            store: Some(store),
        },
    )
    .await
    .unwrap();
    Node {
        id,
        address: address.to_string(),
        handle,
        events,
        map,
    }
}

impl Node {
    fn at(&self) -> (mesh_crypto::PeerId, String) {
        (self.id.peer_id(), self.address.clone())
    }

    async fn next(&mut self, what: impl Fn(&Event) -> bool) -> Event {
        loop {
            let e = timeout(Duration::from_secs(10), self.events.recv())
                .await
                .expect("an event within 10 s")
                .expect("the driver is alive");
            if what(&e) {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn guardians_keep_sealed_shares_across_a_restart_and_approve_a_recovery() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let owner_id = Arc::new(Identity::from_seed(&[0x0a; 32]));
    let owner_peer = owner_id.peer_id();
    let mut owner = node(&net, Arc::clone(&owner_id), "owner", SharedMap::default()).await;
    let mut g = Vec::new();
    for (i, name) in ["g1", "g2", "g3"].iter().enumerate() {
        let id = Arc::new(Identity::from_seed(&[0x10 + u8::try_from(i).unwrap(); 32]));
        g.push(node(&net, id, name, SharedMap::default()).await);
    }
    // Each guardian's user accepts to hold a share for the owner.
    for guardian in &g {
        guardian.handle.allow_owner(owner_peer, true).await.unwrap();
    }
    let list: Vec<_> = g.iter().map(Node::at).collect();
    let set = owner.handle.protect(list, 2).await.unwrap();
    owner.next(|e| *e == Event::Protected { set_id: set }).await;

    // Guardian 1 restarts (at a new address) from its store: its share is still there.
    g[0].handle.shutdown().await.unwrap();
    let (id, map) = (Arc::clone(&g[0].id), g[0].map.clone());
    g[0] = node(&net, id, "g1-again", map).await;
    assert_eq!(g[0].handle.held().await.unwrap(), vec![(owner_peer, set)]);

    // The owner's device is gone. A new device asks all three.
    owner.handle.shutdown().await.unwrap();
    let device_id = Arc::new(Identity::generate());
    let mut device = node(&net, Arc::clone(&device_id), "device", SharedMap::default()).await;
    let codes = device
        .handle
        .recover(owner_peer, g.iter().map(Node::at).collect(), None)
        .await
        .unwrap();
    // Each guardian's user compares the code the device shows with the one on their screen.
    for (i, guardian) in g.iter_mut().enumerate() {
        let Event::ApprovalNeeded {
            request_id,
            owner,
            requester,
            code,
        } = guardian
            .next(|e| matches!(e, Event::ApprovalNeeded { .. }))
            .await
        else {
            unreachable!()
        };
        assert_eq!((owner, requester), (owner_peer, device_id.peer_id()));
        let shown = &codes
            .iter()
            .find(|(p, _)| *p == guardian.id.peer_id())
            .unwrap()
            .1;
        assert_eq!(&code, shown, "the codes match");
        if i == 2 {
            guardian.handle.deny(request_id).await.unwrap();
        } else {
            guardian.handle.approve(request_id).await.unwrap();
        }
    }
    // Both the denial and the recovery come, in either order.
    let (mut denied, mut recovered) = (false, false);
    while !(denied && recovered) {
        match device.next(|_| true).await {
            Event::GuardianStatus {
                status: RequestStatus::Denied,
                guardian,
                ..
            } => {
                assert_eq!(guardian, g[2].id.peer_id());
                denied = true;
            }
            Event::Recovered { owner } => {
                assert_eq!(owner, owner_peer);
                recovered = true;
            }
            _ => {}
        }
    }
    let back = device.handle.take_recovered(owner_peer).await.unwrap();
    assert_eq!(back.peer_id(), owner_peer);

    // No plaintext at rest: neither the key nor any share is in any store.
    let mut secrets = vec![owner_id.seed().to_vec()];
    for guardian in &g {
        for (k, v) in guardian.map.read().unwrap().iter() {
            if k.starts_with(b"\x0frecovery/shares") {
                let opened = envelope::open(&guardian.id, &v[10..], GRANT_CONTEXT).unwrap();
                secrets.push(
                    SealedShare::decode(&opened.plaintext)
                        .unwrap()
                        .share
                        .y
                        .to_vec(),
                );
            }
        }
    }
    assert_eq!(secrets.len(), 4, "three shares kept, sealed");
    for n in g.iter().chain([&owner, &device]) {
        let map = n.map.read().unwrap();
        for (k, v) in map.iter() {
            for s in &secrets {
                assert!(!k.windows(32).any(|w| w == s.as_slice()));
                assert!(
                    !v.windows(32).any(|w| w == s.as_slice()),
                    "a secret at rest"
                );
            }
        }
    }
}

async fn open_store(map: SharedMap) -> Store<MemoryBackend> {
    Store::open(MemoryBackend::with_map(map), &SCHEMA)
        .await
        .unwrap()
}

#[tokio::test]
async fn load_restores_shares_and_revocations_and_deletes_rows_that_do_not_verify() {
    let t0 = UnixMillis(1_700_000_000_000);
    let owner_id = Arc::new(Identity::from_seed(&[0x0a; 32]));
    let owner = owner_id.peer_id();
    let guardian = Arc::new(Identity::from_seed(&[0x10; 32]));
    let mut dealer = RecoveryNode::new(owner_id, RecoveryConfig::default());
    let set = dealer
        .protect(&[(guardian.peer_id(), String::new())], 1, t0)
        .unwrap();
    let Some(Output::Send { bytes, .. }) = dealer.poll() else {
        panic!("a grant");
    };
    let Ok(Frame::Grant(grant)) = Frame::decode(&bytes) else {
        panic!("a grant");
    };
    let key = |set: &[u8; 32]| [owner.as_bytes().as_slice(), set].concat();
    let row = |kind: u8, at: u64, rest: &[u8]| {
        let mut v = vec![1, kind];
        v.extend_from_slice(&at.to_le_bytes());
        v.extend_from_slice(rest);
        v
    };
    let store = open_store(SharedMap::default()).await;
    let mut rows = Batch::new();
    rows.put(SHARES_TABLE, key(&set), row(1, 77, &grant));
    rows.put(SHARES_TABLE, key(&[2; 32]), row(1, 77, b"not a grant"));
    rows.put(SHARES_TABLE, key(&[3; 32]), row(2, 88, &[]));
    rows.put(SHARES_TABLE, key(&[4; 32]), row(2, 88, &[0]));
    rows.put(SHARES_TABLE, vec![5; 10], row(2, 88, &[]));
    rows.put(SHARES_TABLE, key(&[6; 32]), vec![9, 1]);
    store.apply(rows).await.unwrap();

    let mut node = RecoveryNode::new(Arc::clone(&guardian), RecoveryConfig::default());
    assert_eq!(load(&store, &mut node, t0).await.unwrap(), 1);
    assert_eq!(node.held(), vec![(owner, set)]);
    let (created, received, kept) = node.held_record(&(owner, set)).unwrap();
    assert_eq!(
        (created, received, kept),
        (t0, UnixMillis(77), grant.as_slice())
    );
    assert_eq!(node.revoked_at(&(owner, [3; 32])), Some(UnixMillis(88)));
    assert_eq!(node.revoked_at(&(owner, [4; 32])), None);
    let mut left: Vec<Vec<u8>> = read_table(&store, SHARES_TABLE, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    left.sort();
    let mut want = vec![key(&set), key(&[3; 32])];
    want.sort();
    assert_eq!(left, want, "the rows that do not verify are deleted");

    // A share whose set is revoked in the same store does not come back.
    let mut rows = Batch::new();
    rows.put(SHARES_TABLE, key(&set), row(2, 99, &[]));
    store.apply(rows).await.unwrap();
    let mut node = RecoveryNode::new(guardian, RecoveryConfig::default());
    assert_eq!(load(&store, &mut node, t0).await.unwrap(), 0);
    assert!(node.held().is_empty());
    assert_eq!(node.revoked_at(&(owner, set)), Some(UnixMillis(99)));
}

#[tokio::test]
async fn a_refresh_and_a_revocation_through_the_driver_delete_old_shares_for_good() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let owner_id = Arc::new(Identity::from_seed(&[0x0a; 32]));
    let owner_peer = owner_id.peer_id();
    let mut owner = node(&net, owner_id, "owner", SharedMap::default()).await;
    let mut g = Vec::new();
    for (i, name) in ["g1", "g2", "g3"].iter().enumerate() {
        let id = Arc::new(Identity::from_seed(&[0x10 + u8::try_from(i).unwrap(); 32]));
        let guardian = node(&net, id, name, SharedMap::default()).await;
        guardian.handle.allow_owner(owner_peer, true).await.unwrap();
        g.push(guardian);
    }
    let old = owner
        .handle
        .protect(vec![g[0].at(), g[1].at()], 1)
        .await
        .unwrap();
    owner.next(|e| *e == Event::Protected { set_id: old }).await;
    assert!(owner.handle.unacknowledged(old).await.unwrap().is_empty());

    let new = owner
        .handle
        .refresh(old, vec![g[1].at(), g[2].at()], 2)
        .await
        .unwrap();
    assert_ne!(new, old);
    for guardian in &mut g[..2] {
        guardian
            .next(|e| {
                *e == Event::ShareRevoked {
                    owner: owner_peer,
                    set_id: old,
                }
            })
            .await;
    }
    let mut revoked_by = Vec::new();
    let mut protected = false;
    while revoked_by.len() < 2 || !protected {
        match owner.next(|_| true).await {
            Event::Acknowledged {
                set_id,
                guardian,
                kind: AckKind::Revoked,
            } if set_id == old => revoked_by.push(guardian),
            Event::Protected { set_id } if set_id == new => protected = true,
            _ => {}
        }
    }
    revoked_by.sort();
    let mut want = vec![g[0].id.peer_id(), g[1].id.peer_id()];
    want.sort();
    assert_eq!(revoked_by, want);
    assert!(owner.handle.unacknowledged(new).await.unwrap().is_empty());
    assert!(g[0].handle.held().await.unwrap().is_empty());
    assert_eq!(g[1].handle.held().await.unwrap(), vec![(owner_peer, new)]);

    // Guardian 1 stored the revocation: read back, it keeps the old set out.
    g[0].handle.shutdown().await.unwrap();
    let store = open_store(g[0].map.clone()).await;
    let mut back = RecoveryNode::new(Arc::clone(&g[0].id), RecoveryConfig::default());
    let now = TokioRuntime::current().unix_time();
    assert_eq!(load(&store, &mut back, now).await.unwrap(), 0);
    assert!(back.revoked_at(&(owner_peer, old)).is_some());

    // The new set, revoked by naming its guardians.
    owner
        .handle
        .revoke_at(new, vec![g[1].at(), g[2].at()])
        .await
        .unwrap();
    for guardian in &mut g[1..] {
        guardian
            .next(|e| {
                *e == Event::ShareRevoked {
                    owner: owner_peer,
                    set_id: new,
                }
            })
            .await;
        assert!(guardian.handle.held().await.unwrap().is_empty());
    }

    // A stopped driver says so.
    owner.handle.shutdown().await.unwrap();
    assert!(matches!(
        owner.handle.held().await,
        Err(DriverError::Stopped)
    ));
    assert!(matches!(
        owner.handle.shutdown().await,
        Err(DriverError::Stopped)
    ));
}

#[tokio::test]
async fn a_guardian_lists_a_pending_request_and_the_device_shows_the_key_before_taking_it() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let owner_id = Arc::new(Identity::from_seed(&[0x0a; 32]));
    let owner_peer = owner_id.peer_id();
    let mut owner = node(&net, owner_id, "owner", SharedMap::default()).await;
    let mut g1 = node(
        &net,
        Arc::new(Identity::from_seed(&[0x10; 32])),
        "g1",
        SharedMap::default(),
    )
    .await;
    let g2 = node(
        &net,
        Arc::new(Identity::from_seed(&[0x11; 32])),
        "g2",
        SharedMap::default(),
    )
    .await;
    g1.handle.allow_owner(owner_peer, true).await.unwrap();
    // Guardian 2's user accepts the owner, then takes it back.
    g2.handle.allow_owner(owner_peer, true).await.unwrap();
    g2.handle.allow_owner(owner_peer, false).await.unwrap();
    let set = owner
        .handle
        .protect(vec![g1.at(), g2.at()], 1)
        .await
        .unwrap();
    owner
        .next(|e| {
            *e == Event::Acknowledged {
                set_id: set,
                guardian: g2.id.peer_id(),
                kind: AckKind::Refused,
            }
        })
        .await;
    assert!(g2.handle.held().await.unwrap().is_empty());
    assert_eq!(g1.handle.held().await.unwrap(), vec![(owner_peer, set)]);

    let device_id = Arc::new(Identity::generate());
    let mut device = node(&net, Arc::clone(&device_id), "device", SharedMap::default()).await;
    device
        .handle
        .recover(owner_peer, vec![g1.at()], Some(set))
        .await
        .unwrap();
    let Event::ApprovalNeeded { request_id, .. } =
        g1.next(|e| matches!(e, Event::ApprovalNeeded { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        g1.handle.pending_requests().await.unwrap(),
        vec![(request_id, owner_peer, device_id.peer_id())]
    );
    assert!(device.handle.recovered(owner_peer).await.unwrap().is_none());
    assert!(matches!(
        device.handle.take_recovered(owner_peer).await,
        Err(DriverError::Recovery(RecoveryError::Shamir(
            ShamirError::NotEnoughShares { have: 0, need: 0 }
        )))
    ));
    g1.handle.approve(request_id).await.unwrap();
    device
        .next(|e| *e == Event::Recovered { owner: owner_peer })
        .await;
    assert!(g1.handle.pending_requests().await.unwrap().is_empty());
    for (what, again) in [
        ("approve", g1.handle.approve(request_id).await),
        ("deny", g1.handle.deny(request_id).await),
    ] {
        assert!(
            matches!(
                again,
                Err(DriverError::Recovery(RecoveryError::Unknown("request")))
            ),
            "{what} of a request no longer pending"
        );
    }
    // Shown (as often as asked) before it is handed over.
    for _ in 0..2 {
        let shown = device.handle.recovered(owner_peer).await.unwrap().unwrap();
        assert_eq!(shown.peer_id(), owner_peer);
    }
    let taken = device.handle.take_recovered(owner_peer).await.unwrap();
    assert_eq!(taken.peer_id(), owner_peer);
    assert!(device.handle.recovered(owner_peer).await.unwrap().is_none());
}
