//! Hand-rolled Prometheus counters and gauges (`GET /metrics`, text format
//! 0.0.4).

use super::chunk_store::ChunkStoreUsage;
use super::meta_store::MetaCounts;
use crate::protocol::CommitOutcome;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a chunk store usage figure is reused (it may walk the store).
pub const USAGE_CACHE_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Metrics {
    started: Instant,
    /// (method, route, status) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Bytes of chunk bodies received, as sent on the wire.
    pub chunk_wire_bytes_in: Counter,
    /// Plain bytes of chunks received.
    pub chunk_bytes_in: Counter,
    /// Plain bytes of chunks sent (chunk GETs and file downloads).
    pub chunk_bytes_out: Counter,
    pub chunks_stored: Counter,
    pub chunks_deduplicated: Counter,
    pub hash_mismatches: Counter,
    pub logins: Counter,
    pub login_failures: Counter,
    /// Rotated refresh tokens presented again outside the grace window
    /// (possible theft; each ended a device's session).
    pub refresh_reuse: Counter,
    pub commits: Counter,
    commit_ops: Mutex<BTreeMap<&'static str, u64>>,
    usage_cache: Mutex<Option<(Instant, ChunkStoreUsage)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: Mutex::default(),
            chunk_wire_bytes_in: Counter::default(),
            chunk_bytes_in: Counter::default(),
            chunk_bytes_out: Counter::default(),
            chunks_stored: Counter::default(),
            chunks_deduplicated: Counter::default(),
            hash_mismatches: Counter::default(),
            logins: Counter::default(),
            login_failures: Counter::default(),
            refresh_reuse: Counter::default(),
            commits: Counter::default(),
            commit_ops: Mutex::default(),
            usage_cache: Mutex::default(),
        }
    }
}

fn outcome_label(o: &CommitOutcome) -> &'static str {
    match o {
        CommitOutcome::Applied { .. } => "applied",
        CommitOutcome::Renamed { .. } => "renamed",
        CommitOutcome::ConflictCopy { .. } => "conflict_copy",
        CommitOutcome::Superseded { .. } => "superseded",
        CommitOutcome::AlreadyGone => "already_gone",
        CommitOutcome::Merged { .. } => "merged",
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .entry((method.to_owned(), route.to_owned(), status))
            .or_insert(0) += 1;
    }

    pub fn record_commit(&self, outcomes: &[CommitOutcome]) {
        self.commits.inc();
        let mut ops = self.commit_ops.lock();
        for o in outcomes {
            *ops.entry(outcome_label(o)).or_insert(0) += 1;
        }
    }

    /// The cached chunk store usage if still fresh.
    pub fn cached_usage(&self) -> Option<ChunkStoreUsage> {
        self.usage_cache
            .lock()
            .filter(|(at, _)| at.elapsed() < USAGE_CACHE_TTL)
            .map(|(_, u)| u)
    }

    pub fn set_usage(&self, u: ChunkStoreUsage) {
        *self.usage_cache.lock() = Some((Instant::now(), u));
    }

    /// The text exposition; `push_sockets` and `push_notifications` come
    /// from the push hub (`server::push`).
    pub fn render(
        &self,
        counts: Option<MetaCounts>,
        usage: Option<ChunkStoreUsage>,
        push_sockets: u64,
        push_notifications: u64,
    ) -> String {
        let mut text = String::new();
        let family = |text: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        let n = "nimbus_http_requests_total";
        family(
            &mut text,
            n,
            "counter",
            "HTTP requests by method, route and status.",
        );
        for ((method, route, status), count) in self.requests.lock().iter() {
            let _ = writeln!(
                text,
                "{n}{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                label(method),
                label(route)
            );
        }

        let counters: [(&str, &str, &Counter); 10] = [
            (
                "nimbus_chunk_wire_bytes_received_total",
                "Chunk upload bytes as sent on the wire.",
                &self.chunk_wire_bytes_in,
            ),
            (
                "nimbus_chunk_bytes_received_total",
                "Plain bytes of uploaded chunks.",
                &self.chunk_bytes_in,
            ),
            (
                "nimbus_chunk_bytes_sent_total",
                "Plain bytes of chunks sent (chunk downloads and file content).",
                &self.chunk_bytes_out,
            ),
            (
                "nimbus_chunks_stored_total",
                "Uploaded chunks that were new to the store.",
                &self.chunks_stored,
            ),
            (
                "nimbus_chunks_deduplicated_total",
                "Uploaded chunks the store already had.",
                &self.chunks_deduplicated,
            ),
            (
                "nimbus_chunk_hash_mismatches_total",
                "Chunk uploads refused because the bytes did not match the hash.",
                &self.hash_mismatches,
            ),
            ("nimbus_logins_total", "Successful logins.", &self.logins),
            (
                "nimbus_login_failures_total",
                "Refused logins.",
                &self.login_failures,
            ),
            (
                "nimbus_refresh_token_reuse_total",
                "Rotated refresh tokens used again (each ended that device's session).",
                &self.refresh_reuse,
            ),
            (
                "nimbus_commits_total",
                "Commit requests that succeeded.",
                &self.commits,
            ),
        ];
        for (name, help, c) in counters {
            family(&mut text, name, "counter", help);
            let _ = writeln!(text, "{name} {}", c.get());
        }

        let n = "nimbus_commit_ops_total";
        family(&mut text, n, "counter", "Committed operations by outcome.");
        for (outcome, count) in self.commit_ops.lock().iter() {
            let _ = writeln!(text, "{n}{{outcome=\"{outcome}\"}} {count}");
        }

        let n = "nimbus_push_notifications_total";
        family(
            &mut text,
            n,
            "counter",
            "Change notifications sent on push sockets.",
        );
        let _ = writeln!(text, "{n} {push_notifications}");

        let mut gauges = vec![
            (
                "nimbus_uptime_seconds",
                "Seconds since the server started.",
                self.started.elapsed().as_secs(),
            ),
            (
                "nimbus_push_connections",
                "Push sockets (GET /api/v1/sync/ws) open now.",
                push_sockets,
            ),
        ];
        if let Some(c) = counts {
            gauges.push(("nimbus_accounts", "Accounts.", c.accounts));
            gauges.push(("nimbus_devices", "Registered devices.", c.devices));
            gauges.push((
                "nimbus_live_nodes",
                "Files, folders and symlinks not in the trash.",
                c.live_nodes,
            ));
        }
        if let Some(u) = usage {
            gauges.push((
                "nimbus_chunk_store_chunks",
                "Chunks in the chunk store.",
                u.chunks,
            ));
            gauges.push((
                "nimbus_chunk_store_bytes",
                "Bytes used by the chunk store (as stored, compressed).",
                u.stored_bytes,
            ));
        }
        for (name, help, v) in gauges {
            family(&mut text, name, "gauge", help);
            let _ = writeln!(text, "{name} {v}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record_request("GET", "/healthz", 200);
        m.record_request("GET", "/healthz", 200);
        m.record_request("PUT", "/api/v1/chunks/{hex}", 400);
        m.chunk_bytes_in.add(42);
        m.record_commit(&[CommitOutcome::AlreadyGone]);
        let t = m.render(
            Some(MetaCounts {
                accounts: 2,
                devices: 3,
                live_nodes: 4,
            }),
            Some(ChunkStoreUsage {
                chunks: 5,
                stored_bytes: 6,
            }),
            7,
            8,
        );
        assert!(t.contains("nimbus_push_connections 7"), "{t}");
        assert!(t.contains("nimbus_push_notifications_total 8"), "{t}");
        assert!(t.contains(
            "nimbus_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"
        ));
        assert!(t.contains("route=\"/api/v1/chunks/{hex}\",status=\"400\"} 1"));
        assert!(t.contains("nimbus_chunk_bytes_received_total 42"));
        assert!(t.contains("nimbus_commit_ops_total{outcome=\"already_gone\"} 1"));
        assert!(t.contains("nimbus_accounts 2"));
        assert!(t.contains("nimbus_chunk_store_bytes 6"));
        // Every sample line belongs to a declared family.
        let mut declared = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
    }
}
