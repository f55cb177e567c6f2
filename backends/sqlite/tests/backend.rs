//! The SQLite backend below the conformance suite: its options reach the database, a path no
//! file can be made at fails to open, and a closed backend refuses work with a backend error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::time::Duration;

use mesh_platform::kv::{Direction, KvBackend, KvError, RawOp};
use mesh_store_sqlite::{Commit, SqliteBackend, SqliteOptions};
use sqlx::Row;

async fn pragma(b: &SqliteBackend, sql: &'static str) -> String {
    let row = sqlx::query(sql).fetch_one(b.pool()).await.unwrap();
    row.try_get::<i64, _>(0)
        .map(|n| n.to_string())
        .or_else(|_| row.try_get::<String, _>(0))
        .unwrap()
}

fn is_sqlite_error(r: &KvError) -> bool {
    matches!(
        r,
        KvError::Backend {
            backend: "sqlite",
            ..
        }
    )
}

#[tokio::test]
async fn the_options_reach_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let durable = SqliteBackend::open(dir.path().join("durable.sqlite"))
        .await
        .unwrap();
    assert_eq!(durable.name(), "sqlite");
    assert_eq!(pragma(&durable, "PRAGMA journal_mode").await, "wal");
    assert_eq!(pragma(&durable, "PRAGMA synchronous").await, "2", "FULL");
    assert_eq!(pragma(&durable, "PRAGMA busy_timeout").await, "5000");
    assert_eq!(durable.pool().options().get_max_connections(), 4);

    let fast = SqliteBackend::open_with(
        dir.path().join("fast.sqlite"),
        SqliteOptions {
            max_connections: 0,
            commit: Commit::Fast,
            busy_timeout: Duration::from_millis(250),
        },
    )
    .await
    .unwrap();
    assert_eq!(pragma(&fast, "PRAGMA synchronous").await, "1", "NORMAL");
    assert_eq!(pragma(&fast, "PRAGMA busy_timeout").await, "250");
    // At least one connection, whatever was asked.
    assert_eq!(fast.pool().options().get_max_connections(), 1);
    // With a single connection, a barrier and a read in turn do not deadlock.
    fast.apply(vec![RawOp::Put(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    fast.barrier().await.unwrap();
    assert_eq!(fast.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        fast.value_lens(&[b"k".to_vec(), b"none".to_vec()])
            .await
            .unwrap(),
        vec![Some(1), None]
    );
}

#[tokio::test]
async fn a_path_where_no_file_can_be_made_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/x.sqlite");
    let err = SqliteBackend::open(&missing).await.unwrap_err();
    assert!(is_sqlite_error(&err), "{err:?}");
    // A directory is no database file either.
    let err = SqliteBackend::open(dir.path()).await.unwrap_err();
    assert!(is_sqlite_error(&err), "{err:?}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteBackend::open(&path).await.unwrap_err();
    assert!(is_sqlite_error(&err), "{err:?}");
}

#[tokio::test]
async fn a_closed_backend_refuses_work_and_the_data_stays_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let b = SqliteBackend::open(&path).await.unwrap();
    b.apply(vec![
        RawOp::Put(vec![1], vec![10]),
        RawOp::Put(vec![2], vec![20]),
        RawOp::Put(vec![3], vec![30]),
    ])
    .await
    .unwrap();
    b.close().await.unwrap();
    for err in [
        b.get(&[1]).await.unwrap_err(),
        b.range(&[], false, &[9], false, Direction::Forward, 10)
            .await
            .unwrap_err(),
        b.apply(vec![RawOp::Delete(vec![1])]).await.unwrap_err(),
        b.value_lens(&[vec![1]]).await.unwrap_err(),
        b.barrier().await.unwrap_err(),
    ] {
        assert!(is_sqlite_error(&err), "{err:?}");
    }
    // Closing again is harmless.
    b.close().await.unwrap();
    let again = SqliteBackend::open(&path).await.unwrap();
    assert_eq!(
        again
            .range(&[1], true, &[3], true, Direction::Reverse, 10)
            .await
            .unwrap(),
        vec![(vec![3], vec![30]), (vec![2], vec![20])]
    );
    // A delete range is half-open: the upper bound stays.
    again
        .apply(vec![RawOp::DeleteRange(vec![1], vec![3])])
        .await
        .unwrap();
    assert_eq!(
        again
            .range(&[], false, &[9], false, Direction::Forward, 10)
            .await
            .unwrap(),
        vec![(vec![3], vec![30])]
    );
}
