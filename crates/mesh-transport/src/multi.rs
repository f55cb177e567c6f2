//! [`Transports`]: two transports as one, so that one [`crate::pool::Pool`] (and so one node)
//! links over both, say WebRTC and BLE. Dials go by address: those starting with one of the
//! second transport's prefixes (`ble:`, ...) to it, the rest to the first. Links arrive from
//! both: each transport's `accept` runs in a task of its own (an accept is never cancelled
//! half-way through a handshake), and [`Transport::accept`] takes the next from either; a
//! transport whose accept fails stops, the other goes on, and `accept` fails once both have.
//! Nest them for three or more.
//!
//! A [`crate::pool::Pool`] advertises one address on every link: give it the address of the
//! transport most peers can dial (peers on the other learn it from their own dials).

use std::sync::Arc;

use async_trait::async_trait;
use mesh_crypto::PeerId;
use mesh_platform::runtime::Runtime;
use tokio::sync::{Mutex, mpsc};

use crate::{Connection, ConnectionQuality, Frame, Transport, TransportError, TransportKind};

/// Links accepted and waiting for [`Transport::accept`] at most, per transport.
const ACCEPT_QUEUE: usize = 16;

/// A link of either transport.
#[derive(Debug)]
pub enum Either<A, B> {
    /// Of the first transport.
    First(A),
    /// Of the second.
    Second(B),
}

/// What the accept tasks hand over.
type Accepted<A, B> =
    Result<Either<<A as Transport>::Connection, <B as Transport>::Connection>, TransportError>;

/// Two transports behind one [`Transport`].
pub struct Transports<A: Transport, B: Transport> {
    first: Arc<A>,
    second: Arc<B>,
    second_prefixes: Vec<String>,
    accepted: Mutex<mpsc::Receiver<Accepted<A, B>>>,
}

impl<A: Transport, B: Transport> std::fmt::Debug for Transports<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("first", &self.first.kind())
            .field("second", &self.second.kind())
            .field("second_prefixes", &self.second_prefixes)
            .finish_non_exhaustive()
    }
}

impl<A, B> Transports<A, B>
where
    A: Transport + 'static,
    B: Transport + 'static,
    A::Connection: 'static,
    B::Connection: 'static,
{
    /// `first` for every address but those starting with one of `second_prefixes`, which go
    /// to `second`; both accept, in tasks on `runtime`, until they fail.
    pub fn new<R: Runtime>(first: A, second: B, second_prefixes: &[&str], runtime: &R) -> Self {
        let (tx, rx) = mpsc::channel(2 * ACCEPT_QUEUE);
        let (first, second) = (Arc::new(first), Arc::new(second));
        runtime.spawn(Box::pin(accept_into(
            Arc::clone(&first),
            tx.clone(),
            Either::First,
            "first",
        )));
        runtime.spawn(Box::pin(accept_into(
            Arc::clone(&second),
            tx,
            Either::Second,
            "second",
        )));
        Self {
            first,
            second,
            second_prefixes: second_prefixes.iter().map(ToString::to_string).collect(),
            accepted: Mutex::new(rx),
        }
    }

    fn goes_second(&self, address: &str) -> bool {
        self.second_prefixes.iter().any(|p| address.starts_with(p))
    }
}

/// Accepts links of `transport` into `tx` (as `wrap` says) until the transport fails for good
/// (both kinds handle transient errors inside) or the `Transports` is dropped.
async fn accept_into<T: Transport, C>(
    transport: Arc<T>,
    tx: mpsc::Sender<Result<C, TransportError>>,
    wrap: fn(T::Connection) -> C,
    which: &'static str,
) {
    loop {
        // Also ends when the `Transports` is dropped, not only at the next link.
        let accepted = tokio::select! {
            r = transport.accept() => r,
            () = tx.closed() => return,
        };
        match accepted {
            Ok(c) => {
                if tx.send(Ok(wrap(c))).await.is_err() {
                    return;
                }
            }
            // This one stops; the other transport goes on.
            Err(e) => {
                tracing::warn!(error = %e, which, "transport stopped accepting");
                return;
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<A, B> Transport for Transports<A, B>
where
    A: Transport + 'static,
    B: Transport + 'static,
    A::Connection: 'static,
    B::Connection: 'static,
{
    type Connection = Either<A::Connection, B::Connection>;

    /// The first transport's kind (each link reports its own).
    fn kind(&self) -> TransportKind {
        self.first.kind()
    }

    async fn dial(&self, peer: PeerId, address: &str) -> Result<Self::Connection, TransportError> {
        if self.goes_second(address) {
            self.second.dial(peer, address).await.map(Either::Second)
        } else {
            self.first.dial(peer, address).await.map(Either::First)
        }
    }

    /// The next link from either transport; [`TransportError::Closed`] once both have
    /// stopped accepting.
    async fn accept(&self) -> Result<Self::Connection, TransportError> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .unwrap_or(Err(TransportError::Closed))
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<A: Connection, B: Connection> Connection for Either<A, B> {
    fn remote(&self) -> PeerId {
        match self {
            Self::First(c) => c.remote(),
            Self::Second(c) => c.remote(),
        }
    }

    fn kind(&self) -> TransportKind {
        match self {
            Self::First(c) => c.kind(),
            Self::Second(c) => c.kind(),
        }
    }

    fn quality(&self) -> ConnectionQuality {
        match self {
            Self::First(c) => c.quality(),
            Self::Second(c) => c.quality(),
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        match self {
            Self::First(c) => c.send(frame).await,
            Self::Second(c) => c.send(frame).await,
        }
    }

    async fn send_unreliable(&self, frame: Frame) -> Result<(), TransportError> {
        match self {
            Self::First(c) => c.send_unreliable(frame).await,
            Self::Second(c) => c.send_unreliable(frame).await,
        }
    }

    async fn recv(&self) -> Result<Frame, TransportError> {
        match self {
            Self::First(c) => c.recv().await,
            Self::Second(c) => c.recv().await,
        }
    }

    async fn ping(&self) -> Result<(), TransportError> {
        match self {
            Self::First(c) => c.ping().await,
            Self::Second(c) => c.ping().await,
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        match self {
            Self::First(c) => c.close().await,
            Self::Second(c) => c.close().await,
        }
    }

    fn initiated_here(&self) -> bool {
        match self {
            Self::First(c) => c.initiated_here(),
            Self::Second(c) => c.initiated_here(),
        }
    }
}
