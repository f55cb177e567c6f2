//! The runtime seam: what a protocol driver needs from its environment, and nothing more.
//!
//! Protocol cores are sans-IO and take `now` as an argument; their async drivers get the time,
//! timers and task spawning from a [`Runtime`]. [`TokioRuntime`] serves native targets (feature
//! `tokio-runtime`); `WasmRuntime` serves the browser (`performance.now()`, `setTimeout`,
//! `spawn_local`). A simulator supplies its own virtual-time implementation.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mesh_crypto::UnixMillis;

use crate::{MaybeSend, MaybeSync};

/// A boxed future: `Send` natively, not on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future: `Send` natively, not on wasm32.
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Clock, timers and tasks.
pub trait Runtime: Clone + MaybeSend + MaybeSync + 'static {
    /// Monotonic time since an arbitrary origin fixed when the runtime was made. Never goes
    /// back; use it for timeouts and rates.
    fn monotonic(&self) -> Duration;

    /// Wall-clock time, for signed records and expiry. May jump.
    fn unix_time(&self) -> UnixMillis;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// Runs `task` in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// [`Runtime`] on tokio. Must be created inside a tokio runtime (it keeps its handle).
#[cfg(all(feature = "tokio-runtime", not(target_arch = "wasm32")))]
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    origin: tokio::time::Instant,
    handle: tokio::runtime::Handle,
}

#[cfg(all(feature = "tokio-runtime", not(target_arch = "wasm32")))]
impl TokioRuntime {
    /// The runtime of the current tokio context.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            handle: tokio::runtime::Handle::current(),
        }
    }
}

#[cfg(all(feature = "tokio-runtime", not(target_arch = "wasm32")))]
impl Runtime for TokioRuntime {
    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    fn unix_time(&self) -> UnixMillis {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(self.handle.spawn(task));
    }
}

/// [`Runtime`] in the browser (or any JS host with `performance` and `setTimeout`).
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Clone)]
pub struct WasmRuntime {
    origin_ms: f64,
}

#[cfg(target_arch = "wasm32")]
impl WasmRuntime {
    /// A runtime whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin_ms: performance_now(),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl Default for WasmRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// `performance.now()` from the global object (window or worker), falling back to `Date.now()`.
#[cfg(target_arch = "wasm32")]
fn performance_now() -> f64 {
    use js_sys::{Function, Reflect};
    let global = js_sys::global();
    Reflect::get(&global, &"performance".into())
        .ok()
        .filter(|p| !p.is_undefined())
        .and_then(|perf| {
            let now: Function = Reflect::get(&perf, &"now".into()).ok()?.into();
            now.call0(&perf).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

#[cfg(target_arch = "wasm32")]
impl Runtime for WasmRuntime {
    fn monotonic(&self) -> Duration {
        Duration::from_secs_f64(((performance_now() - self.origin_ms).max(0.0)) / 1000.0)
    }

    fn unix_time(&self) -> UnixMillis {
        // Date.now() is a non-negative integer number of milliseconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        UnixMillis(js_sys::Date::now() as u64)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(gloo_timers::future::sleep(duration))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        wasm_bindgen_futures::spawn_local(task);
    }
}

#[cfg(all(test, feature = "tokio-runtime", not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokio_runtime_sleeps_spawns_and_tells_time() {
        let rt = TokioRuntime::current();
        let t0 = rt.monotonic();
        rt.sleep(Duration::from_millis(20)).await;
        assert!(rt.monotonic().saturating_sub(t0) >= Duration::from_millis(20));
        // 2020-01-01 is in the past on any machine running this.
        assert!(rt.unix_time() > UnixMillis(1_577_836_800_000));
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(Box::pin(async move {
            let _ = tx.send(42);
        }));
        assert_eq!(rx.await.ok(), Some(42));
    }
}
