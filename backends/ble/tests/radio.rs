//! The simulated radio itself: the MTU limit, certain loss and reordering, and both ways a link
//! can go (a disconnect, an end dropped) failing reads and writes with `Disconnected`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::future::Future;
use std::task::{Context, Waker};

use mesh_platform::runtime::TokioRuntime;
use mesh_transport_ble::radio::{Radio, RadioError, SimConfig, SimRadio};

fn pair(mtu: usize) -> (SimRadio<TokioRuntime>, SimRadio<TokioRuntime>) {
    SimRadio::pair(
        &TokioRuntime::current(),
        SimConfig {
            mtu,
            ..SimConfig::default()
        },
    )
}

/// Polls `fut` once; whether it finished.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> bool {
    fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

#[tokio::test]
async fn a_write_over_the_mtu_payload_is_refused_and_one_at_it_arrives() {
    let (a, b) = pair(23);
    assert_eq!(a.mtu(), 23);
    assert_eq!(
        a.write(&[1; 21]).await,
        Err(RadioError::TooLarge { len: 21, max: 20 })
    );
    a.write(&[2; 20]).await.unwrap();
    assert_eq!(b.read().await.unwrap(), vec![2; 20]);
    assert_eq!(
        RadioError::TooLarge { len: 21, max: 20 }.to_string(),
        "write of 21 bytes exceeds MTU payload 20"
    );
}

#[tokio::test]
async fn with_certain_loss_no_write_arrives() {
    let (a, b) = pair(23);
    // Loss applies to both directions, whichever end sets it; over 1 counts as 1.
    b.set_loss(3.0);
    for i in 0..50u8 {
        a.write(&[i]).await.unwrap();
        b.write(&[i]).await.unwrap();
    }
    a.set_loss(0.0);
    a.write(b"marker").await.unwrap();
    b.write(b"back").await.unwrap();
    // The first thing each end reads is what was sent after the loss stopped.
    assert_eq!(b.read().await.unwrap(), b"marker");
    assert_eq!(a.read().await.unwrap(), b"back");
}

#[tokio::test]
async fn with_certain_reordering_each_write_swaps_places_with_the_next() {
    let (a, b) = pair(23);
    a.set_reorder(1.0);
    for i in 1..=4u8 {
        a.write(&[i]).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(b.read().await.unwrap()[0]);
    }
    assert_eq!(got, [2, 1, 4, 3]);
    // A write held back is sent after the next one even once reordering stops.
    a.write(&[5]).await.unwrap();
    a.set_reorder(0.0);
    a.write(&[6]).await.unwrap();
    a.write(&[7]).await.unwrap();
    for want in [6, 5, 7] {
        assert_eq!(b.read().await.unwrap(), [want]);
    }
}

#[tokio::test]
async fn a_disconnect_wakes_a_blocked_reader_and_fails_both_ends() {
    let (a, b) = pair(23);
    let read = b.read();
    let mut read = std::pin::pin!(read);
    assert!(!poll_once(read.as_mut()), "nothing to read yet");
    a.disconnect();
    assert_eq!(read.await, Err(RadioError::Disconnected));
    assert_eq!(b.read().await, Err(RadioError::Disconnected));
    assert_eq!(a.read().await, Err(RadioError::Disconnected));
    assert_eq!(b.write(b"x").await, Err(RadioError::Disconnected));
    assert_eq!(a.write(b"x").await, Err(RadioError::Disconnected));
}

#[tokio::test]
async fn a_write_delivered_before_a_disconnect_is_not_read_after_it() {
    let (a, b) = pair(23);
    a.write(b"late").await.unwrap();
    a.disconnect();
    assert_eq!(b.read().await, Err(RadioError::Disconnected));
}

#[tokio::test]
async fn dropping_one_end_fails_the_other_ends_reads_and_writes() {
    let (a, b) = pair(23);
    a.write(b"last").await.unwrap();
    drop(a);
    // What was already sent still arrives; then the link is gone.
    assert_eq!(b.read().await.unwrap(), b"last");
    assert_eq!(b.read().await, Err(RadioError::Disconnected));
    assert_eq!(b.write(b"x").await, Err(RadioError::Disconnected));
    // `close` on the simulated radio is the trait's default: it does nothing.
    b.close();
    assert_eq!(b.mtu(), 23);
}
