//! The web UI: static files embedded in the binary, served beside `/api`.
//!
//! The UI is plain HTML, CSS and ES modules under `ui/` (no build step), plus
//! the uPlot chart library vendored from npm (`ui/vendor/`, MIT, its licence
//! served beside it). It is a single page: `/` is the shell and every view is
//! a `#/…` fragment, so the server knows only the fixed file list below; the
//! scripts talk to `/api` alone, with HTTP Basic credentials the login form
//! keeps in `sessionStorage`.
//!
//! ```text
//!  GET /                  index.html      no-cache + ETag
//!  GET /app.css, /js/*.js our files       no-cache + ETag (304 when unchanged)
//!  GET /vendor/uPlot-V.*  versioned name  public, one year, immutable
//! ```
//!
//! Our files have no version in their names and change with the binary, so
//! the browser revalidates them on each load (a 304 costs a round trip, not
//! the body); the vendored files carry the library's version in their names,
//! so a new version is a new path and the old one may be cached forever.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The router that serves the UI: GET (and HEAD) of each file in [`ASSETS`],
/// and `/` for the shell. It claims no path under `/api` and has no fallback,
/// so the management server can merge it with the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for asset in ASSETS {
        let etag = etag_of(asset.body);
        let serve = move |headers: HeaderMap| async move { respond(asset, etag, &headers) };
        if asset.path == INDEX_PATH {
            router = router.route("/", get(serve.clone()));
        }
        router = router.route(asset.path, get(serve));
    }
    router
}

/// One embedded file.
struct Asset {
    /// The URL path it is served at.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    cache: Cache,
}

/// How long a browser may keep a file without asking again.
#[derive(Clone, Copy)]
enum Cache {
    /// Revalidate on every use (with the ETag): our files, unversioned names.
    Revalidate,
    /// Never revalidate: the file name carries the content's version.
    Immutable,
}

/// The answer to one GET: the file, or 304 when the browser's copy is current.
fn respond(asset: &'static Asset, etag: HeaderValue, request: &HeaderMap) -> Response {
    let cache = match asset.cache {
        Cache::Revalidate => CACHE_REVALIDATE,
        Cache::Immutable => CACHE_IMMUTABLE,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ETAG, etag.clone());
    if matches_etag(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.content_type == HTML {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    (StatusCode::OK, headers, asset.body).into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare equal,
/// as RFC 9110 asks for this header.
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(Ok(wanted)) = request.get(header::IF_NONE_MATCH).map(|v| v.to_str()) else {
        return false;
    };
    let ours = etag.as_bytes();
    wanted.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours)
}

/// A strong ETag from the content: FNV-1a, 64 bits, computed once per file
/// when the router is built.
fn etag_of(body: &[u8]) -> HeaderValue {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut tag = [0u8; 18];
    tag[0] = b'"';
    tag[17] = b'"';
    for (i, slot) in tag[1..17].iter_mut().enumerate() {
        let nibble = (hash >> (60 - 4 * i)) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    // Quotes and hex digits are visible ASCII, which a header value allows.
    HeaderValue::from_bytes(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
}

const CACHE_REVALIDATE: &str = "no-cache";
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// The shell's policy: scripts, styles and API calls from this origin only
/// (uPlot sizes its elements through inline styles), no framing.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const INDEX_PATH: &str = "/index.html";

/// Every file of the UI; a file the pages refer to and this table lacks is
/// found by `every_referenced_file_is_served` below.
macro_rules! asset {
    ($path:literal, $type:expr, $cache:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("ui", $path)), cache: $cache }
    };
}

static ASSETS: &[Asset] = &[
    asset!("/index.html", HTML, Cache::Revalidate),
    asset!("/app.css", CSS, Cache::Revalidate),
    asset!("/favicon.svg", SVG, Cache::Revalidate),
    asset!("/js/main.js", JS, Cache::Revalidate),
    asset!("/js/api.js", JS, Cache::Revalidate),
    asset!("/js/dom.js", JS, Cache::Revalidate),
    asset!("/js/overview.js", JS, Cache::Revalidate),
    asset!("/js/queues.js", JS, Cache::Revalidate),
    asset!("/js/exchanges.js", JS, Cache::Revalidate),
    asset!("/js/clients.js", JS, Cache::Revalidate),
    asset!("/js/admin.js", JS, Cache::Revalidate),
    asset!("/vendor/uPlot-1.6.32.iife.min.js", JS, Cache::Immutable),
    asset!("/vendor/uPlot-1.6.32.min.css", CSS, Cache::Immutable),
    asset!("/vendor/uPlot-LICENSE.txt", TEXT, Cache::Revalidate),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// The paths the shell and the scripts load: `src="…"`/`href="…"` in
    /// HTML and `from './x.js'` / `import('./x.js')` in modules.
    fn referenced_paths() -> Vec<String> {
        let mut paths = Vec::new();
        for asset in ASSETS.iter().filter(|a| a.content_type == HTML || a.content_type == JS) {
            let text = String::from_utf8_lossy(asset.body);
            let dir = asset.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            for marker in ["src=\"", "href=\"", "from '", "import('"] {
                for piece in text.split(marker).skip(1) {
                    let end = piece.find(['"', '\'']).unwrap_or(0);
                    let target = &piece[..end];
                    if target.starts_with('#') || target.contains(':') || target.is_empty() {
                        continue;
                    }
                    paths.push(match target.strip_prefix("./") {
                        Some(rest) => format!("{dir}/{rest}"),
                        None => target.to_string(),
                    });
                }
            }
        }
        paths
    }

    #[test]
    fn every_referenced_file_is_served() {
        let paths = referenced_paths();
        assert!(paths.iter().any(|p| p == "/js/main.js"), "the shell loads main.js: {paths:?}");
        assert!(paths.iter().any(|p| p == "/js/api.js"), "main.js imports api.js: {paths:?}");
        for path in paths {
            assert!(ASSETS.iter().any(|a| a.path == path), "{path} is referenced but not in ASSETS");
        }
    }

    #[test]
    fn no_asset_is_under_api_and_paths_are_unique() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(asset.path.starts_with('/') && !asset.path.starts_with("/api"), "{}", asset.path);
            assert!(ASSETS[..i].iter().all(|a| a.path != asset.path), "{} twice", asset.path);
        }
    }

    /// A response read whole from a real socket: status line, lower-cased
    /// headers, body.
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    fn request(port: u16, head: &str) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(stream, "{head}Host: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let text = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| l.split_once(':').unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Answer { status, headers, body: raw[split + 4..].to_vec() }
    }

    /// The router on a real listener of a runtime of its own; the port.
    fn serve() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router::<()>()).await.unwrap();
            });
        });
        port
    }

    #[test]
    fn files_are_served_with_their_type_and_cache_rules() {
        let port = serve();
        let root = request(port, "GET / HTTP/1.1\r\n");
        assert_eq!(root.status, 200);
        assert_eq!(root.header("content-type"), Some(HTML));
        assert_eq!(root.header("cache-control"), Some(CACHE_REVALIDATE));
        assert!(root.header("content-security-policy").is_some());
        assert!(String::from_utf8_lossy(&root.body).contains("<title>Lepus"));
        let index = request(port, "GET /index.html HTTP/1.1\r\n");
        assert_eq!((index.body.len(), index.header("etag")), (root.body.len(), root.header("etag")));

        let script = request(port, "GET /js/main.js HTTP/1.1\r\n");
        assert_eq!((script.status, script.header("content-type")), (200, Some(JS)));
        assert_eq!(script.header("x-content-type-options"), Some("nosniff"));
        let vendor = request(port, "GET /vendor/uPlot-1.6.32.iife.min.js HTTP/1.1\r\n");
        assert_eq!(vendor.header("cache-control"), Some(CACHE_IMMUTABLE));
        assert!(vendor.body.starts_with(b"/*! https://github.com/leeoniya/uPlot (v1.6.32)"));

        let etag = script.header("etag").unwrap();
        let again = request(port, &format!("GET /js/main.js HTTP/1.1\r\nIf-None-Match: W/\"x\", {etag}\r\n"));
        assert_eq!((again.status, again.body.len()), (304, 0));
        let changed = request(port, "GET /js/main.js HTTP/1.1\r\nIf-None-Match: \"0123456789abcdef\"\r\n");
        assert_eq!((changed.status, changed.body.len()), (200, script.body.len()));

        let head = request(port, "HEAD /app.css HTTP/1.1\r\n");
        assert_eq!((head.status, head.header("content-type"), head.body.len()), (200, Some(CSS), 0));
        assert_eq!(request(port, "GET /api/overview HTTP/1.1\r\n").status, 404);
        assert_eq!(request(port, "GET /js/nothing.js HTTP/1.1\r\n").status, 404);
        assert_eq!(request(port, "POST /index.html HTTP/1.1\r\nContent-Length: 0\r\n").status, 405);
    }

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        assert_eq!(etag_of(b"").len(), 18);
    }
}
