//! Opening the push socket of an [`HttpRemote`] (`GET /api/v1/sync/ws`):
//! the listener itself is [`crate::remote::push`].
//!
//! - URL: the server URL with `http` → `ws`, `https` → `wss`.
//! - Headers: the bearer access token, the user agent and the protocol
//!   header, as on every request. A 401 refreshes the access token the
//!   same way other requests do ([`HttpRemote::refresh_after`],
//!   single-flight) and tries once more.
//! - TLS: rustls with the trust of the HTTP client ([`ClientTls`]): a
//!   private CA only, or the system's roots plus the bundled Mozilla ones.
//! - A 404 means a server without push: [`DialError::Unsupported`].

use super::{tls_hint, user_agent, ClientTls, HttpRemote};
use crate::protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION, PUSH_PATH};
use crate::remote::push::{DialError, PushDial, PushSocket};
use crate::remote::RemoteError;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::Connector;

/// Longest wait for a socket to open (TCP, TLS and the upgrade).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials the push socket of one [`HttpRemote`].
pub(super) struct HttpDial {
    pub(super) remote: Arc<HttpRemote>,
    pub(super) connector: Option<Connector>,
}

impl HttpDial {
    pub(super) fn new(remote: Arc<HttpRemote>) -> Self {
        let connector = remote
            .base
            .starts_with("https://")
            .then(|| rustls_config(&remote.tls))
            .flatten()
            .map(|c| Connector::Rustls(Arc::new(c)));
        HttpDial { remote, connector }
    }

    /// The socket's URL.
    fn url(&self) -> String {
        let base = &self.remote.base;
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.clone()
        };
        format!("{ws}{PUSH_PATH}")
    }

    /// One upgrade attempt with `token`.
    async fn attempt(&self, token: &str) -> Result<PushSocket, WsError> {
        let mut req = self.url().into_client_request()?;
        let headers = req.headers_mut();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| WsError::HttpFormat(e.into()))?;
        headers.insert(header::AUTHORIZATION, bearer);
        if let Ok(ua) = HeaderValue::from_str(&user_agent()) {
            headers.insert(header::USER_AGENT, ua);
        }
        headers.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            req,
            None,
            true,
            self.connector.clone(),
        );
        match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(r) => r.map(|(socket, _)| socket),
            Err(_) => Err(WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", DIAL_TIMEOUT.as_secs()),
            ))),
        }
    }
}

#[async_trait]
impl PushDial for HttpDial {
    async fn dial(&self) -> Result<PushSocket, DialError> {
        let mut token = self.remote.access_token.read().clone();
        if token.is_empty() {
            token = self.remote.refresh_after(&token).await.map_err(refused)?;
        }
        let first = self.attempt(&token).await;
        let result = match first {
            Err(WsError::Http(resp)) if resp.status() == StatusCode::UNAUTHORIZED => {
                let token = self.remote.refresh_after(&token).await.map_err(refused)?;
                self.attempt(&token).await
            }
            other => other,
        };
        result.map_err(|e| match e {
            WsError::Http(resp) if resp.status() == StatusCode::NOT_FOUND => {
                DialError::Unsupported("404".into())
            }
            WsError::Http(resp) => DialError::Failed(format!(
                "the server refused the push upgrade ({})",
                resp.status()
            )),
            other => DialError::Failed(tls_hint(format!("push connection: {other}"))),
        })
    }

    async fn renewed(&self) {
        use crate::remote::Remote;
        self.remote.credentials_renewed().await
    }
}

fn refused(e: RemoteError) -> DialError {
    DialError::Failed(e.to_string())
}

/// A rustls client configuration with the HTTP client's trust (see the
/// module docs). Certificates that fail to parse are skipped (a bad CA
/// file is refused earlier, by [`ClientTls::check`]). `None` only if
/// rustls refuses its own ring provider.
fn rustls_config(tls: &ClientTls) -> Option<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                let _ = roots.add(cert);
            }
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "a system root certificate could not be loaded");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, "system root certificates for push");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => Some(b.with_root_certificates(roots).with_no_client_auth()),
        Err(e) => {
            tracing::warn!(error = %e, "rustls refused the ring provider; push over TLS is off");
            None
        }
    }
}

#[cfg(test)]
mod tests;
