//! Creating a database survives a crash at any moment: a half-made file from an interrupted
//! creation never stands where the database belongs.

#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use mesh_platform::kv::KvBackend;
use mesh_store_redb::RedbBackend;

#[tokio::test]
async fn a_leftover_from_an_interrupted_creation_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    // What a process killed halfway through creating the database leaves behind: the scratch
    // file, without a valid header.
    std::fs::write(dir.path().join("node.redb.creating"), b"").unwrap();
    let db = RedbBackend::open(&path).await.unwrap();
    assert_eq!(db.get(b"k").await.unwrap(), None);
    db.close().await.unwrap();
    drop(db);
    assert!(path.exists());
    assert!(!dir.path().join("node.redb.creating").exists());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    std::fs::write(&path, b"someone else's data").unwrap();
    let e = RedbBackend::open(&path).await.err().unwrap();
    assert!(e.to_string().contains("redb"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's data");
}
