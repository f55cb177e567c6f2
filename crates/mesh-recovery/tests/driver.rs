//! Social recovery over the memory transport with the driver: an owner protects its key with
//! three guardians (2 of 3); a guardian restarts from its store and still holds its share; a
//! new device asks, the guardians' users compare the verification codes and approve (one
//! denies), and the key comes back. No byte of the key or of any share is in any store.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::{Identity, envelope};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::TokioRuntime;
use mesh_recovery::RequestStatus;
use mesh_recovery::driver::{DriverOptions, RecoveryHandle, TABLES, start};
use mesh_recovery::message::{GRANT_CONTEXT, SealedShare};
use mesh_recovery::node::{Event, RecoveryConfig};
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
