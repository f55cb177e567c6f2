//! The HTTP plumbing both listeners and the sub-commands' client share (hyper, HTTP/1.1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

/// Where a node tells its peer id.
pub(crate) const ID_PATH: &str = "/mesh/v1/id";
/// Largest response a client reads (a blob of the largest default size, and some).
pub(crate) const MAX_RESPONSE: usize = 64 << 20;

pub(crate) type Resp = Response<Full<Bytes>>;
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;

pub(crate) fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves `handler` on `listener` until `stop` turns true; then stops accepting and lets the
/// connections in progress finish their requests (bounded by the caller's grace period).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handler = Arc::clone(&handler);
                let service = hyper::service::service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
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
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Reads a request body of at most `max` bytes.
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, Resp>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, max)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))
}

/// One HTTP/1.1 request to a plain `http://` URL: the status and the body.
pub(crate) async fn request(
    url: &str,
    method: Method,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let body = Full::new(Bytes::from(body.unwrap_or_default()));
    request_with(url, method, bearer, body, None, MAX_RESPONSE).await
}

/// [`request`] with any request body (a stream, for uploads).
pub(crate) async fn request_with<B>(
    url: &str,
    method: Method,
    bearer: Option<&str>,
    body: B,
    content_length: Option<u64>,
    max: usize,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri: hyper::Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: plain http:// only").into());
    }
    let authority = uri.authority().ok_or("no host")?.clone();
    let stream =
        tokio::net::TcpStream::connect((authority.host(), authority.port_u16().unwrap_or(80)))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", authority.as_str());
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(len) = content_length {
        req = req.header("content-length", len);
    }
    let res = sender.send_request(req.body(body)?).await;
    let out = match res {
        Ok(res) => {
            let status = res.status();
            let bytes = Limited::new(res.into_body(), max)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok((status, bytes))
        }
        Err(e) => Err(format!("{url}: {e}").into()),
    };
    driver.abort();
    out
}
