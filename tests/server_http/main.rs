//! The real server on a loopback port with a temporary data dir, driven
//! through `HttpRemote` and plain `reqwest`.

use bytes::Bytes;
use nimbus::protocol::{
    ChunkId, ChunkRef, CommitOp, CommitOutcome, ErrorBody, FileContent, Manifest, NodeChange,
    NodeId, NodeKind, NodeMeta, VersionVector, MAX_CHUNK_LEN, MAX_MISSING_QUERY,
};
use nimbus::remote::http::{login, HttpRemote, Tokens};
use nimbus::remote::suite::{applied, dir_meta, upsert};
use nimbus::remote::{Remote, RemoteError};
use nimbus::server::{self, RunningServer, ServerConfig};
use rand::{RngCore, SeedableRng};
use reqwest::{header, StatusCode};

struct Fx {
    cfg: ServerConfig,
    server: Option<RunningServer>,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::loopback(dir.path().join("data"));
        server::add_user(&cfg, "alice", "alice-pw").await.unwrap();
        server::add_user(&cfg, "bob", "bob-pw").await.unwrap();
        let running = server::start(cfg.clone()).await.unwrap();
        let url = format!("http://{}", running.local_addr());
        Fx {
            cfg,
            server: Some(running),
            url,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let running = server::start(self.cfg.clone()).await.unwrap();
        self.url = format!("http://{}", running.local_addr());
        self.server = Some(running);
    }

    async fn remote(&self, user: &str, device: &str) -> HttpRemote {
        let r = login(&self.url, user, &format!("{user}-pw"), device)
            .await
            .unwrap();
        HttpRemote::new(&self.url, Tokens::from(r))
    }

    async fn token(&self, user: &str) -> String {
        login(&self.url, user, &format!("{user}-pw"), "curl")
            .await
            .unwrap()
            .access_token
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.url)
    }

    fn chunk_path(&self, id: &ChunkId) -> std::path::PathBuf {
        let hex = id.to_hex();
        self.cfg.data_dir.join("chunks").join(&hex[..2]).join(hex)
    }
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: ErrorBody = resp.json().await.expect("error body is JSON ErrorBody");
    assert!(!body.message.is_empty());
    (status, body.error)
}

fn random(len: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

fn text(len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| b"lorem ipsum dolor sit amet "[i % 27])
            .collect::<Vec<u8>>(),
    )
}

fn content_of(parts: &[&Bytes]) -> FileContent {
    FileContent {
        manifest: Manifest {
            chunks: parts
                .iter()
                .map(|p| ChunkRef {
                    id: ChunkId::of(p),
                    len: p.len() as u32,
                })
                .collect(),
        },
    }
}

fn file(content: FileContent) -> NodeMeta {
    NodeMeta {
        content: Some(content),
        ..NodeMeta::new(
            NodeKind::File,
            0o644,
            nimbus::protocol::Timestamp::from_ns(1_700_000_000_000_000_000),
        )
    }
}

mod basics;
mod batch;
mod data;
mod sessions;
mod xattrs;
