//! The web page the public listener serves at `/`: a browser node (the `mesh-web` package)
//! with a plain page to unlock an identity, message, send and fetch files, and see links and
//! storage. Every file is embedded in the binary; the package only when meshd was built with
//! `MESH_WEB_PKG` (see `build.rs`, `cargo xtask web`).

use hyper::StatusCode;
use hyper::header::HeaderValue;

use crate::http::{self, Resp};

/// Scripts from this origin only, WebAssembly compiled from them, and any `connect-src`
/// (the page may link to other nodes' signaling endpoints).
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
                   connect-src *; img-src 'self' data: blob:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

const PAGE: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
];

#[cfg(mesh_web_pkg)]
const PACKAGE: &[(&str, &str, &[u8])] = &[
    (
        "/pkg/mesh_web.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("MESH_WEB_PKG_DIR"), "/mesh_web.js")),
    ),
    (
        "/pkg/mesh_web_bg.wasm",
        "application/wasm",
        include_bytes!(concat!(env!("MESH_WEB_PKG_DIR"), "/mesh_web_bg.wasm")),
    ),
];
#[cfg(not(mesh_web_pkg))]
const PACKAGE: &[(&str, &str, &[u8])] = &[];

/// Whether this binary carries the browser node's package.
pub(crate) const BUNDLED: bool = cfg!(mesh_web_pkg);

/// The response for `path`, if it is one of the page's files.
pub(crate) fn file(path: &str) -> Option<Resp> {
    let path = if path == "/index.html" { "/" } else { path };
    let (_, content_type, body) = PAGE.iter().chain(PACKAGE).find(|(p, _, _)| *p == path)?;
    let mut r = hyper::Response::new(http::full(*body));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Revalidated each time: a new meshd brings a new page and package.
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    *r.status_mut() = StatusCode::OK;
    Some(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn serves_the_page_with_a_strict_policy() {
        let r = file("/").unwrap();
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self' 'wasm-unsafe-eval'")
        );
        assert!(file("/index.html").is_some());
        assert!(file("/app.js").is_some());
        assert!(file("/../Cargo.toml").is_none());
        assert!(file("/pkg/other.js").is_none());
        assert_eq!(file("/pkg/mesh_web_bg.wasm").is_some(), BUNDLED);
    }
}
