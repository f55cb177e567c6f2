//! The browser node's JavaScript API in headless Chromium: identities sealed in IndexedDB,
//! refused input, files recorded, and a closed node. (Talking to other peers is the
//! end-to-end test's: `crates/meshd/tests/browser.rs`.)

#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unnecessary_wraps,
    clippy::float_cmp
)] // test code: exact small integers as f64

use mesh_crypto::Identity;
use mesh_web::MeshNode;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// A database of its own for each test.
fn db(name: &str) -> Option<String> {
    Some(format!("mesh-web-test-{name}-{}", js_sys::Math::random()))
}

fn bytes(b: &[u8]) -> js_sys::Uint8Array {
    js_sys::Uint8Array::from(b)
}

fn error_name(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.name()))
        .unwrap_or_default()
}

fn refused<T>(r: Result<T, JsValue>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => error_name(&e),
    }
}

#[wasm_bindgen_test]
async fn an_identity_is_created_sealed_and_unlocked_only_with_its_passphrase() {
    let db = db("identity");
    assert!(!MeshNode::has_identity(db.clone()).await.unwrap());
    assert_eq!(
        refused(MeshNode::open("a good passphrase".into(), false, db.clone()).await),
        "NoIdentity"
    );
    assert_eq!(
        refused(MeshNode::open("short".into(), true, db.clone()).await),
        "InvalidInput"
    );
    let node = MeshNode::open("a good passphrase".into(), true, db.clone())
        .await
        .unwrap();
    let id = node.peer_id();
    assert_eq!(node.fingerprint().len(), 19, "xxxx-xxxx-xxxx-xxxx");
    node.close().await.unwrap();
    assert!(MeshNode::has_identity(db.clone()).await.unwrap());
    assert_eq!(
        refused(MeshNode::open("not the passphrase".into(), false, db.clone()).await),
        "WrongPassphrase"
    );
    // `create` does not replace an identity that is there.
    let again = MeshNode::open("a good passphrase".into(), true, db.clone())
        .await
        .unwrap();
    assert_eq!(again.peer_id(), id);
    again.close().await.unwrap();
    MeshNode::forget(db.clone()).await.unwrap();
    assert!(!MeshNode::has_identity(db).await.unwrap());
}

#[wasm_bindgen_test]
async fn bad_input_is_refused_with_named_errors_and_a_closed_node_stays_closed() {
    let db = db("input");
    let node = MeshNode::open("a good passphrase".into(), true, db.clone())
        .await
        .unwrap();
    let friend = Identity::generate().peer_id().to_string();
    assert_eq!(
        refused(node.send("not a peer id".into(), "hi".into()).await),
        "InvalidInput"
    );
    assert_eq!(
        refused(
            node.send(friend.clone(), "x".repeat(mesh_web::MAX_TEXT_LEN + 1))
                .await
        ),
        "InvalidInput"
    );
    assert_eq!(
        refused(
            node.send_file(friend.clone(), "../up.txt".into(), bytes(&[1, 2, 3]))
                .await
        ),
        "InvalidInput"
    );
    assert_eq!(
        refused(node.connect("ftp://example.invalid".into()).await),
        "InvalidInput"
    );
    assert_eq!(
        refused(node.fetch_file("00".repeat(32)).await),
        "InvalidInput"
    );
    assert_eq!(refused(node.fetch_file("zz".into()).await), "InvalidInput");
    // A file over the store's limit is refused before it is copied in.
    let max = node.max_file_size();
    assert!(
        max > 9 << 20 && max < 10 << 20,
        "the default 10 MiB blob limit less overhead"
    );
    let too_big = js_sys::Uint8Array::new_with_length(u32::try_from(max + 1).unwrap());
    assert_eq!(
        refused(
            node.send_file(friend.clone(), "big.bin".into(), too_big)
                .await
        ),
        "InvalidInput"
    );
    // Recovery thresholds out of range (0, above the guardians, above 255).
    for k in [0, 2, 257] {
        assert_eq!(
            refused(node.recovery_protect(vec![friend.clone()], k).await),
            "InvalidInput",
            "{k}"
        );
    }
    // A message to a peer nobody can reach still goes into the mesh (store and forward).
    let sent = node.send(friend.clone(), "hello".into()).await.unwrap();
    assert_eq!(sent.len(), 64);
    // A file sent is recorded (and only its recipient can open it).
    let offer = node
        .send_file(friend.clone(), "notes.txt".into(), bytes(b"content"))
        .await
        .unwrap();
    let files: js_sys::Array = node.files().await.unwrap().unchecked_into();
    assert_eq!(files.length(), 1);
    let entry = files.get(0);
    let field = |k: &str| js_sys::Reflect::get(&entry, &k.into()).unwrap();
    assert_eq!(field("id").as_string().unwrap(), offer);
    assert_eq!(field("name").as_string().unwrap(), "notes.txt");
    assert_eq!(field("direction").as_string().unwrap(), "sent");
    assert_eq!(field("peer").as_string().unwrap(), friend);
    assert_eq!(field("size").as_f64().unwrap(), 7.0);
    assert_eq!(field("stored").as_bool(), Some(true));
    assert_eq!(refused(node.open_file(offer).await), "InvalidInput");
    let status = node.status().await.unwrap();
    let storage = js_sys::Reflect::get(&status, &"storage".into()).unwrap();
    let blobs = js_sys::Reflect::get(&storage, &"blobs".into()).unwrap();
    assert_eq!(blobs.as_f64(), Some(1.0));

    // A pending nextEvent ends with undefined when the node closes.
    let (pending, ()) = futures_util::future::join(node.next_event(), async {
        node.close().await.unwrap();
    })
    .await;
    assert!(pending.unwrap().is_undefined());
    node.close().await.unwrap();
    assert_eq!(refused(node.send(friend, "late".into()).await), "Closed");
    assert!(node.next_event().await.unwrap().is_undefined());
    MeshNode::forget(db).await.unwrap();
}
