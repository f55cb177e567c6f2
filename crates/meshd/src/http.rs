//! The HTTP plumbing both listeners and the sub-commands' client share (hyper, HTTP/1.1).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

pub(crate) use mesh_transport_webrtc::signaling::http::ID_PATH;
/// Largest response body a client collects in memory (JSON answers; blobs are streamed).
pub(crate) const MAX_RESPONSE: usize = 16 << 20;
/// How long a client waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type RespBody = UnsyncBoxBody<Bytes, std::io::Error>;
pub(crate) type Resp = Response<RespBody>;
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A whole body, as a response body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(full(format!("{body}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Resp {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A listener the server accepts connections from.
pub(crate) trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub connections: usize,
    /// Longest time one request may take, body included (`None`: the handler bounds itself).
    pub request_timeout: Option<Duration>,
}

/// Serves `handler` on `listener` until `stop` turns true; then stops accepting and lets the
/// connections in progress finish their requests (the caller bounds how long).
pub(crate) async fn serve<L: Listener>(
    listener: L,
    handler: Handler,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => s,
            _ = stop.changed() => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let handler = Arc::clone(&handler);
        let service = hyper::service::service_fn(move |req| {
            let handler = Arc::clone(&handler);
            async move {
                let answer = handler(req);
                Ok::<_, std::convert::Infallible>(match limits.request_timeout {
                    Some(t) => tokio::time::timeout(t, answer).await.unwrap_or_else(|_| {
                        text(StatusCode::REQUEST_TIMEOUT, "request took too long")
                    }),
                    None => answer.await,
                })
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(Some(Duration::from_secs(10)))
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Reads a request body of at most `max` bytes.
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, Box<Resp>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    Limited::new(body, max)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| Box::new(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large")))
}

/// Where a client request goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A plain `http://` URL.
    Url(String),
    /// A path on the node's control socket.
    #[cfg(unix)]
    Socket(PathBuf, String),
}

impl Target {
    /// A path on the control socket of the node in `data_dir`.
    #[cfg(unix)]
    pub(crate) fn control(socket: &Path, path: &str) -> Self {
        Self::Socket(socket.to_path_buf(), path.to_string())
    }
}

/// One HTTP/1.1 request with a whole body: the status and the response body.
pub(crate) async fn request(
    url: &str,
    method: Method,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), BoxError> {
    let res = send(
        &Target::Url(url.to_string()),
        method,
        Full::new(Bytes::from(body.unwrap_or_default())),
        None,
    )
    .await?;
    collect(res, MAX_RESPONSE).await
}

/// Collects a response's body (at most `max` bytes).
pub(crate) async fn collect(
    res: Response<Incoming>,
    max: usize,
) -> Result<(StatusCode, Bytes), BoxError> {
    let status = res.status();
    let bytes = Limited::new(res.into_body(), max)
        .collect()
        .await?
        .to_bytes();
    Ok((status, bytes))
}

/// Sends one request with any body (a stream, for uploads) and returns the response, whose
/// body the caller reads (the connection lives as long as it).
pub(crate) async fn send<B>(
    target: &Target,
    method: Method,
    body: B,
    content_length: Option<u64>,
) -> Result<Response<Incoming>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    match target {
        Target::Url(url) => {
            let uri: hyper::Uri = url.parse()?;
            if uri.scheme_str() != Some("http") {
                return Err(format!("{url}: plain http:// only").into());
            }
            let authority = uri.authority().ok_or("no host")?.clone();
            // `[::1]` in a URL is `::1` to connect to.
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = authority.port_u16().unwrap_or(80);
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((host, port)),
            )
            .await
            .map_err(|_| format!("{url}: no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("{url}: {e}"))?;
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            exchange(
                stream,
                authority.as_str(),
                &path,
                method,
                body,
                content_length,
            )
            .await
        }
        #[cfg(unix)]
        Target::Socket(socket, path) => {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                format!(
                    "{}: {e} (is `meshd run` running with this data dir?)",
                    socket.display()
                )
            })?;
            exchange(stream, "localhost", path, method, body, content_length).await
        }
    }
}

async fn exchange<IO, B>(
    io: IO,
    host: &str,
    path: &str,
    method: Method,
    body: B,
    content_length: Option<u64>,
) -> Result<Response<Incoming>, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP client connection");
        }
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(len) = content_length {
        req = req.header("content-length", len);
    }
    Ok(sender.send_request(req.body(body)?).await?)
}
