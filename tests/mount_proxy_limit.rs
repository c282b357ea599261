//! End to end through the kernel with a reverse proxy in front of the
//! server that refuses request bodies above a limit, as nginx does with
//! `client_max_body_size` (413 with an HTML page, not the server's JSON).
//!
//! Device A reaches the server only through the proxy, device B directly.
//! While the limit refuses A's chunk uploads, nothing may be lost: the
//! refused content waits (everything else goes on), `nimbus status` and
//! `nimbus sync --wait` say why, a remount keeps the work, and lifting the
//! limit lets the journal drain by itself.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use std::fs;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ARRIVE: Duration = Duration::from_secs(60);
/// Long enough for a paused uploader's probe (1 s doubling to 60 s).
const RESUME: Duration = Duration::from_secs(150);
const MIB: u64 = 1 << 20;

/// nginx's page for a body over `client_max_body_size`.
const NGINX_413: &str = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n\
<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n\
<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n";

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// Largest body forwarded; `u64::MAX` = no limit.
    limit: AtomicU64,
    /// Requests answered 413.
    refused: AtomicU64,
}

/// A loopback reverse proxy with a switchable body-size limit.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    /// Runs the proxy; dropped (stopping it) with the `Proxy`.
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: &str, limit: u64) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            limit: AtomicU64::new(limit),
            refused: AtomicU64::new(0),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Proxy {
            url,
            state,
            _rt: rt,
        }
    }

    fn set_limit(&self, limit: u64) {
        self.state.limit.store(limit, Ordering::SeqCst);
    }

    fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// Connection-level headers a proxy must not pass on (RFC 9110 §7.6.1),
/// plus those the outgoing client sets itself.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn too_large(state: &ProxyState) -> Response {
    state.refused.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "text/html")],
        NGINX_413,
    )
        .into_response()
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let limit = state.limit.load(Ordering::SeqCst);
    // Like nginx: refuse on the declared length, and on the real length
    // when none was declared (chunked bodies). The body is read either way,
    // as nginx's lingering close does, so that the client reads the 413
    // instead of a connection reset in the middle of its upload.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "bad request body").into_response();
    };
    if declared.is_some_and(|n| n > limit) || body.len() as u64 > limit {
        return too_large(&state);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = state
        .client
        .request(parts.method, format!("{}{path}", state.upstream));
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let Ok(bytes) = resp.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "upstream body broke").into_response();
    };
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

fn nimbus(dev: &Device, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("NIMBUS_CONFIG_DIR", &dev.config)
        .args(args)
        .arg(&dev.mnt)
        .output()
        .unwrap()
}

fn status_json(dev: &Device) -> serde_json::Value {
    let out = nimbus(dev, &["status", "--json"]);
    assert!(
        out.status.success(),
        "nimbus status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn state_of(path: &std::path::Path) -> String {
    let raw = nimbus::cli::xattr::get(path, "user.nimbus.state").unwrap();
    String::from_utf8(raw).unwrap()
}

fn hash_of(path: &std::path::Path) -> Option<blake3::Hash> {
    fs::read(path).ok().map(|d| blake3::hash(&d))
}

/// One server, the proxy (limit 1 MiB) in front of it, A mounted through
/// the proxy, B directly; A has written a 5 MiB random file, then a small
/// one.
struct Scene {
    big_hash: blake3::Hash,
    // Fields drop in order: devices unmount before the proxy and server go.
    a: Device,
    b: Device,
    proxy: Proxy,
    _server: Server,
}

fn scene() -> Scene {
    let server = Server::start();
    server.add_user("erin", "pw-erin-123");
    let proxy = Proxy::start(&server.url, MIB);
    let mut a = Device::login_url(&proxy.url, "erin", "pw-erin-123", "behind-proxy");
    let mut b = Device::login(&server, "erin", "pw-erin-123", "direct");
    a.mount(&[]);
    b.mount(&[]);

    // Random bytes do not compress, so chunk PUTs carry their plain
    // length; make sure some chunk of this file is over the limit.
    let big = data(5 * MIB as usize, 413);
    let largest = nimbus::chunking::chunk_bytes(&big)
        .iter()
        .map(|(_, r)| r.len() as u64)
        .max()
        .unwrap();
    assert!(largest > MIB, "largest chunk is only {largest} bytes");
    fs::write(a.path("big.bin"), &big).unwrap();
    fs::write(a.path("small.txt"), b"small enough").unwrap();
    Scene {
        big_hash: blake3::hash(&big),
        a,
        b,
        proxy,
        _server: server,
    }
}

#[test]
fn body_limit_pauses_uploads_without_losing_them_and_lifting_it_resumes() {
    let Scene {
        big_hash,
        mut a,
        b,
        proxy,
        _server,
    } = scene();
    wait_for("the proxy to refuse a chunk", ARRIVE, || {
        (proxy.refused() > 0).then_some(())
    });
    // Only the refused content waits: the small file reaches B meanwhile.
    wait_content(&b.path("small.txt"), b"small enough", ARRIVE);
    assert!(!b.path("big.bin").exists(), "no empty stand-in for big.bin");
    // `sync --wait` gives up with the reason, not just "still pending".
    let out = nimbus(&a, &["sync", "--wait", "--timeout", "5s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sync --wait succeeded: {stderr}");
    assert!(
        stderr.contains("413") && stderr.contains("body"),
        "stderr does not name the body limit: {stderr}"
    );
    assert!(stderr.contains("big.bin"), "{stderr}");

    let st = status_json(&a);
    assert_eq!(st["connection"], "misconfigured", "{st}");
    let reason = st["connection_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("413"), "{st}");
    let pending = nimbus(&a, &["status"]);
    let human = String::from_utf8_lossy(&pending.stdout);
    assert!(human.contains("misconfigured"), "{human}");
    assert!(human.contains("big.bin"), "{human}");
    assert_eq!(state_of(&a.path("big.bin")), "pending");

    // A remount while still limited keeps everything.
    a.unmount();
    a.mount(&[]);
    assert_eq!(state_of(&a.path("big.bin")), "pending");
    assert_eq!(hash_of(&a.path("big.bin")), Some(big_hash));
    assert_eq!(fs::read(a.path("small.txt")).unwrap(), b"small enough");
    let refused_before = proxy.refused();
    wait_for("the remounted uploader to hit the limit", ARRIVE, || {
        let st = status_json(&a);
        (proxy.refused() > refused_before && st["connection"] == "misconfigured").then_some(())
    });
    assert_eq!(state_of(&a.path("big.bin")), "pending");

    // Lift the limit: the journal drains on its own, no remount.
    proxy.set_limit(u64::MAX);
    wait_for("A's journal to drain", RESUME, || {
        let st = status_json(&a);
        (st["pending_ops"] == 0).then_some(())
    });
    let out = nimbus(&a, &["sync", "--wait", "--timeout", "30s"]);
    assert!(
        out.status.success(),
        "sync --wait after the limit was lifted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_json(&a)["connection"], "online");
    assert_ne!(state_of(&a.path("big.bin")), "pending");
    wait_for("B to read the big file", ARRIVE, || {
        (hash_of(&b.path("big.bin")) == Some(big_hash)).then_some(())
    });
    wait_content(&b.path("small.txt"), b"small enough", ARRIVE);
}
