//! Signaling over HTTP: the endpoint `meshd` serves for browsers and first contact, and the
//! client that dials through it.
//!
//! `POST {SIGNAL_PATH}` with the offer as the body (`application/octet-stream`); the response
//! is `200` with the answer, `400` when the peer refused the offer, `413` when it is too large,
//! `503` when too many offers wait, `504` when no answer came in time. CORS is open (`*`): the
//! endpoint carries only descriptions, which the handshake authenticates anyway, so browsers
//! on any origin may use it.
//!
//! The native client speaks plain HTTP/1.1 (put a TLS terminator in front of a public
//! endpoint); in the browser the client is `fetch`, which also does HTTPS.

use async_trait::async_trait;
use mesh_crypto::PeerId;

use super::{IncomingOffer, Signaling, SignalingError};

/// Path of the signaling endpoint.
pub const SIGNAL_PATH: &str = "/mesh/v1/signal";
/// Path where a node serving signaling tells its peer id as text (`meshd` does), so that a
/// peer given only the URL can bootstrap from it (trust on first use).
pub const ID_PATH: &str = "/mesh/v1/id";
/// How long the endpoint waits for the local transport's answer.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[cfg(target_arch = "wasm32")]
pub use browser::HttpSignaling;
/// What a response to a signaling POST means, on every client: `200` carries the answer.
pub(crate) fn response_result(status: u16, body: Vec<u8>) -> Result<Vec<u8>, SignalingError> {
    match status {
        200 => Ok(body),
        504 => Err(SignalingError::Timeout),
        s => Err(SignalingError::Refused(format!(
            "{s}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))),
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{HttpSignaling, SignalEndpoint};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::body::Incoming;
    use hyper::{Method, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::sync::{mpsc, oneshot};

    use super::{
        ANSWER_TIMEOUT, IncomingOffer, PeerId, SIGNAL_PATH, Signaling, SignalingError, async_trait,
    };
    use crate::signaling::MAX_SIGNALING_MESSAGE;
    use crate::signaling::Responder;

    /// Offers waiting for the transport; more get `503`.
    const QUEUE: usize = 32;

    /// HTTP signaling: always a client; also receives offers when made with
    /// [`HttpSignaling::serve`] (its own HTTP server) or [`HttpSignaling::endpoint`] (a handler
    /// to mount in the application's HTTP server).
    pub struct HttpSignaling {
        server: Option<Server>,
    }

    struct Server {
        addr: Option<SocketAddr>,
        offers: tokio::sync::Mutex<mpsc::Receiver<IncomingOffer>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(task) = &self.task {
                task.abort();
            }
        }
    }

    /// The receiving side of [`HttpSignaling::endpoint`]: hands each `POST` to the transport
    /// and answers with its answer. Cheap to clone.
    #[derive(Clone, Debug)]
    pub struct SignalEndpoint {
        offers: Arc<mpsc::Sender<IncomingOffer>>,
    }

    impl SignalEndpoint {
        /// Answers one request for [`SIGNAL_PATH`] (the caller routes by path): `OPTIONS` for
        /// CORS preflight, `POST` with an offer; anything else is `405`.
        pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
        where
            B: hyper::body::Body,
            B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        {
            handle_offer(req, &self.offers).await
        }
    }

    impl std::fmt::Debug for HttpSignaling {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HttpSignaling")
                .field("serving", &self.local_addr())
                .finish()
        }
    }

    impl HttpSignaling {
        /// A client only: dials through other peers' endpoints, receives no offers.
        pub fn client() -> Self {
            Self { server: None }
        }

        /// Serves the endpoint on `listener` (and is a client too). Needs a tokio runtime.
        ///
        /// # Errors
        /// If the listener's address cannot be read.
        pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
            let addr = listener.local_addr()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = tokio::spawn(accept_loop(listener, tx));
            Ok(Self {
                server: Some(Server {
                    addr: Some(addr),
                    offers: tokio::sync::Mutex::new(rx),
                    task: Some(task),
                }),
            })
        }

        /// Receives offers through the returned [`SignalEndpoint`], which the application
        /// mounts at [`SIGNAL_PATH`] in its own HTTP server (next to its other routes); is a
        /// client too. [`HttpSignaling::url`] is `None`: the application knows its URL.
        pub fn endpoint() -> (Self, SignalEndpoint) {
            let (tx, rx) = mpsc::channel(QUEUE);
            let signaling = Self {
                server: Some(Server {
                    addr: None,
                    offers: tokio::sync::Mutex::new(rx),
                    task: None,
                }),
            };
            (
                signaling,
                SignalEndpoint {
                    offers: Arc::new(tx),
                },
            )
        }

        /// Whether offers arrive here ([`HttpSignaling::serve`] or
        /// [`HttpSignaling::endpoint`]), rather than only being sent.
        pub fn receives(&self) -> bool {
            self.server.is_some()
        }

        /// Where the endpoint listens, if serving on its own listener.
        pub fn local_addr(&self) -> Option<SocketAddr> {
            self.server.as_ref().and_then(|s| s.addr)
        }

        /// The endpoint's URL, if serving.
        pub fn url(&self) -> Option<String> {
            self.local_addr()
                .map(|a| format!("http://{a}{SIGNAL_PATH}"))
        }
    }

    async fn accept_loop(listener: tokio::net::TcpListener, offers: mpsc::Sender<IncomingOffer>) {
        let offers = Arc::new(offers);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "signaling accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let offers = offers.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, offers.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "signaling HTTP connection");
                }
            });
        }
    }

    fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(body.into()));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-origin",
            hyper::header::HeaderValue::from_static("*"),
        );
        h.insert(
            "access-control-allow-methods",
            hyper::header::HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            hyper::header::HeaderValue::from_static("content-type"),
        );
        h.insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/octet-stream"),
        );
        r
    }

    struct HttpResponder(oneshot::Sender<Vec<u8>>);

    #[async_trait]
    impl Responder for HttpResponder {
        async fn answer(self: Box<Self>, answer: Vec<u8>) -> Result<(), SignalingError> {
            self.0.send(answer).map_err(|_| SignalingError::Closed)
        }
    }

    async fn handle(
        req: Request<Incoming>,
        offers: Arc<mpsc::Sender<IncomingOffer>>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        if req.uri().path() != SIGNAL_PATH {
            return Ok(response(StatusCode::NOT_FOUND, "not found"));
        }
        Ok(handle_offer(req, &offers).await)
    }

    async fn handle_offer<B>(
        req: Request<B>,
        offers: &mpsc::Sender<IncomingOffer>,
    ) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match *req.method() {
            Method::OPTIONS => return response(StatusCode::NO_CONTENT, ""),
            Method::POST => {}
            _ => return response(StatusCode::METHOD_NOT_ALLOWED, "POST only"),
        }
        let body = match Limited::new(req.into_body(), MAX_SIGNALING_MESSAGE)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return response(StatusCode::PAYLOAD_TOO_LARGE, "offer too large"),
        };
        let (tx, rx) = oneshot::channel();
        let offer = IncomingOffer {
            offer: body.to_vec(),
            responder: Box::new(HttpResponder(tx)),
        };
        if offers.try_send(offer).is_err() {
            return response(StatusCode::SERVICE_UNAVAILABLE, "busy");
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => response(StatusCode::OK, answer),
            Ok(Err(_)) => response(StatusCode::BAD_REQUEST, "offer refused"),
            Err(_) => response(StatusCode::GATEWAY_TIMEOUT, "no answer"),
        }
    }

    async fn post(url: &str, offer: Vec<u8>) -> Result<Vec<u8>, SignalingError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| SignalingError::Unreachable(format!("not a URL: {url}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(SignalingError::Unreachable(format!(
                "the native client speaks plain http only: {url}"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| SignalingError::Unreachable(format!("no host in {url}")))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| SignalingError::Unreachable(format!("{url}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SignalingError::Unreachable(format!("{url}: {e}")))?;
        let driver = tokio::spawn(conn);
        let _stop = crate::on_drop(move || driver.abort());
        let req = Request::post(uri.path_and_query().map_or(SIGNAL_PATH, |p| p.as_str()))
            .header("host", authority.as_str())
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(offer)))
            .map_err(|e| SignalingError::Malformed(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| SignalingError::Unreachable(format!("{url}: {e}")))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_SIGNALING_MESSAGE)
            .collect()
            .await
            .map_err(|_| SignalingError::TooLarge {
                len: MAX_SIGNALING_MESSAGE + 1,
                max: MAX_SIGNALING_MESSAGE,
            })?
            .to_bytes();
        super::response_result(status.as_u16(), body.to_vec())
    }

    #[async_trait]
    impl Signaling for HttpSignaling {
        /// `address` is the endpoint's URL (`http://host:port/mesh/v1/signal`).
        async fn exchange(
            &self,
            _to: PeerId,
            address: &str,
            offer: Vec<u8>,
        ) -> Result<Vec<u8>, SignalingError> {
            post(address, offer).await
        }

        async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
            match &self.server {
                Some(s) => s
                    .offers
                    .lock()
                    .await
                    .recv()
                    .await
                    .ok_or(SignalingError::Closed),
                None => Err(SignalingError::Closed),
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod browser {
    use super::{IncomingOffer, PeerId, Signaling, SignalingError, async_trait};

    /// HTTP signaling in the browser: a client through `fetch` (browsers cannot listen).
    #[derive(Debug, Default)]
    pub struct HttpSignaling;

    impl HttpSignaling {
        /// The `fetch` client.
        pub fn client() -> Self {
            Self
        }

        /// Whether offers arrive here: never in the browser.
        pub fn receives(&self) -> bool {
            false
        }
    }

    #[async_trait(?Send)]
    impl Signaling for HttpSignaling {
        /// `address` is the endpoint's URL.
        async fn exchange(
            &self,
            _to: PeerId,
            address: &str,
            offer: Vec<u8>,
        ) -> Result<Vec<u8>, SignalingError> {
            crate::browser::fetch_post(address, &offer).await
        }

        async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
            Err(SignalingError::Closed)
        }
    }
}
