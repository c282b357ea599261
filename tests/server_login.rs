//! Logging in again as an existing device (`LoginRequest::device_id`)
//! against the real server on a loopback port: the device keeps its id,
//! and no account can log in as another account's device. And logging in
//! to a server of another protocol version: one clear error.

use nimbus::protocol::{DeviceId, LoginResponse};
use nimbus::remote::http::{login, login_with, HttpRemote, Tokens};
use nimbus::remote::{Remote, RemoteError};
use nimbus::server::{self, RunningServer, ServerConfig};

struct Fx {
    cfg: ServerConfig,
    server: RunningServer,
    url: String,
    _dir: tempfile::TempDir,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::loopback(dir.path().join("data"));
        server::add_user(&cfg, "alice", "alice-pw").await.unwrap();
        server::add_user(&cfg, "bob", "bob-pw").await.unwrap();
        let server = server::start(cfg.clone()).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        Fx {
            cfg,
            server,
            url,
            _dir: dir,
        }
    }

    async fn login_as(
        &self,
        user: &str,
        device: Option<DeviceId>,
    ) -> Result<LoginResponse, RemoteError> {
        login_with(&self.url, user, &format!("{user}-pw"), "laptop", device).await
    }

    /// The tokens work: a pull through them succeeds.
    async fn works(&self, r: &LoginResponse) -> bool {
        HttpRemote::new(&self.url, Tokens::from(r.clone()))
            .pull(0, 10)
            .await
            .is_ok()
    }

    async fn device_count(&self, user: &str) -> usize {
        let meta = server::meta_store::open(None, &self.cfg.data_dir)
            .await
            .unwrap();
        let account = meta.account_by_name(user).await.unwrap().unwrap();
        let n = meta.list_devices(account.id).await.unwrap().len();
        meta.close().await;
        n
    }
}

fn is_unknown_device(r: &Result<LoginResponse, RemoteError>) -> bool {
    matches!(
        r,
        Err(RemoteError::Rejected { status: 403, code, op: None, .. }) if code == "unknown_device"
    )
}

#[tokio::test]
async fn a_login_with_the_device_id_keeps_the_device() {
    let fx = Fx::new().await;
    let first = fx.login_as("alice", None).await.unwrap();
    let again = fx.login_as("alice", Some(first.device_id)).await.unwrap();
    assert_eq!(again.device_id, first.device_id);
    assert_ne!(again.refresh_token, first.refresh_token);
    assert_ne!(again.access_token, first.access_token);
    assert_eq!(fx.device_count("alice").await, 1, "no device registered");
    // Both logins' tokens work (the earlier one is not revoked by the new).
    assert!(fx.works(&again).await);
    assert!(fx.works(&first).await);
    // A wrong password with a valid device id is the usual 401.
    assert!(matches!(
        login_with(&fx.url, "alice", "wrong", "laptop", Some(first.device_id)).await,
        Err(RemoteError::Unauthorized(_))
    ));
    // The old JSON shape (no device_id) still registers a new device.
    let other = login(&fx.url, "alice", "alice-pw", "desk").await.unwrap();
    assert_ne!(other.device_id, first.device_id);
    assert_eq!(fx.device_count("alice").await, 2);
    fx.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_foreign_or_unknown_device_id_is_refused_and_a_revoked_one_is_reinstated() {
    let fx = Fx::new().await;
    let bobs = fx.login_as("bob", None).await.unwrap();
    let alices = fx.login_as("alice", None).await.unwrap();

    // Alice cannot take Bob's device, nor an id that was never issued; the
    // answer is the same for both, and nothing is registered.
    let foreign = fx.login_as("alice", Some(bobs.device_id)).await;
    assert!(is_unknown_device(&foreign), "{foreign:?}");
    let unknown = fx.login_as("alice", Some(DeviceId::random())).await;
    assert!(is_unknown_device(&unknown), "{unknown:?}");
    let (RemoteError::Rejected { message: m1, .. }, RemoteError::Rejected { message: m2, .. }) =
        (foreign.unwrap_err(), unknown.unwrap_err())
    else {
        unreachable!()
    };
    assert!(
        m1.contains("not a registered device of this account"),
        "{m1}"
    );
    assert_eq!(m1.len(), m2.len(), "same sentence apart from the id");
    assert_eq!(fx.device_count("alice").await, 1);
    assert_eq!(fx.device_count("bob").await, 1);
    // Bob's device is untouched.
    assert!(fx.works(&bobs).await);
    let bob_again = fx.login_as("bob", Some(bobs.device_id)).await.unwrap();
    assert_eq!(bob_again.device_id, bobs.device_id);

    // A revoked device is reinstated by a password login as it (issue 13:
    // the mount resumes as the same device), with new tokens only: those
    // issued before the revocation stay dead.
    let meta = server::meta_store::open(None, &fx.cfg.data_dir)
        .await
        .unwrap();
    let alice = meta.account_by_name("alice").await.unwrap().unwrap();
    assert!(meta
        .revoke_device(alice.id, alices.device_id)
        .await
        .unwrap());
    meta.close().await;
    assert!(!fx.works(&alices).await);
    let back = fx.login_as("alice", Some(alices.device_id)).await.unwrap();
    assert_eq!(back.device_id, alices.device_id);
    assert!(fx.works(&back).await);
    assert!(!fx.works(&alices).await);
    assert_eq!(fx.device_count("alice").await, 1);
    fx.server.shutdown().await.unwrap();
}

/// A server of protocol version `version`, as the real one behaves: every
/// answer names its version, a request naming another gets 400
/// `protocol_version`. Records the version header of each request.
async fn server_of_version(
    version: u32,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    use nimbus::protocol::{ErrorBody, PROTOCOL_HEADER};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let asked = headers
                .get(PROTOCOL_HEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(asked.clone());
            let body = ErrorBody {
                error: "protocol_version".into(),
                message: format!("the server's own words about {asked:?}"),
                op: None,
            };
            (
                StatusCode::BAD_REQUEST,
                [(PROTOCOL_HEADER, version.to_string())],
                axum::Json(body),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_login_to_a_server_of_another_protocol_version_says_which_to_upgrade() {
    use nimbus::protocol::PROTOCOL_VERSION;
    use nimbus::remote::{FailureClass, NeedsUser};
    for (server, upgrade) in [
        (PROTOCOL_VERSION + 1, "upgrade this client"),
        (PROTOCOL_VERSION - 1, "upgrade the server"),
    ] {
        let (url, seen) = server_of_version(server).await;
        let err = login(&url, "alice", "alice-pw", "laptop")
            .await
            .unwrap_err();
        let RemoteError::Rejected {
            status: 400,
            code,
            message,
            op: None,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(code, "protocol_version");
        // The client's sentence, from the version the answer names.
        assert!(
            message.starts_with(&format!(
                "the server speaks Nimbus protocol {server} and this client protocol \
                 {PROTOCOL_VERSION}; {upgrade}"
            )) && message.ends_with(&format!("speaks protocol {}", server.max(PROTOCOL_VERSION))),
            "{message}"
        );
        // A mount pauses and says so; it neither retries nor drops a change.
        assert_eq!(
            err.class(),
            FailureClass::NeedsUser(NeedsUser::Misconfigured(message.clone()))
        );
        // The client told its version.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some(PROTOCOL_VERSION.to_string())]
        );
    }
}

/// `nimbus login` prints one line with both versions, and saves nothing.
#[tokio::test]
async fn nimbus_login_to_a_server_of_another_protocol_version_prints_one_clear_error() {
    use nimbus::protocol::PROTOCOL_VERSION;
    let (url, _) = server_of_version(PROTOCOL_VERSION + 1).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().to_owned();
    let server = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .args(["login", &server, "--user", "alice", "--password-stdin"])
            .args(["--device", "laptop"])
            .env("NIMBUS_CONFIG_DIR", &dir)
            .env_remove("RUST_LOG")
            .env_remove("NIMBUS_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"alice-pw\n");
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let newer = PROTOCOL_VERSION + 1;
    assert_eq!(
        lines[0],
        format!(
            "nimbus: cannot log in to {url}: the server speaks Nimbus protocol {newer} and this \
             client protocol {PROTOCOL_VERSION}; upgrade this client (nimbus) to a release that \
             speaks protocol {newer}"
        )
    );
    assert!(!config.path().join("login.json").exists());
}
