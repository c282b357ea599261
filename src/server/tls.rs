//! HTTPS for `nimbus serve --tls-cert F --tls-key F`: rustls (ring) through
//! axum-server, whose certificate can be swapped while the listener keeps
//! accepting ([`reload`], on SIGHUP): connections already open finish on
//! the old certificate, new ones get the new one. A reload that fails
//! (missing file, key not matching, not PEM) keeps the old certificate
//! and says why.

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use std::path::PathBuf;

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Makes ring the process's rustls crypto provider (once; only one
/// backend is compiled in).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn describe(files: &TlsFiles) -> String {
    format!(
        "TLS certificate {} with key {}",
        files.cert.display(),
        files.key.display()
    )
}

/// Loads the certificate and key (a clear error naming both files).
pub async fn load(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| format!("cannot load the {}", describe(files)))
}

/// Reads the files again and serves the new certificate from the next
/// handshake on; on error the old one stays.
pub async fn reload(config: &RustlsConfig, files: &TlsFiles) -> anyhow::Result<()> {
    config
        .reload_from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| {
            format!(
                "cannot reload the {}; still serving the previous certificate",
                describe(files)
            )
        })
}
