//! Helpers for tests that change two devices while the server is down
//! (so that their changes are concurrent for sure) and then bring it back.

use super::{wait_for, Device, Server};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// How long a change may take to reach the other device.
pub const ARRIVE: Duration = Duration::from_secs(90);

/// The names in folder `dir`, sorted (none if it cannot be read).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until folder `rel` of `dev` holds exactly `want`.
pub fn wait_names(dev: &Device, rel: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let dir = dev.path(rel);
    wait_for(
        &format!("{} on {} to hold {want:?}", dir.display(), dev.name),
        ARRIVE,
        || {
            let got = names(&dir);
            (got == want).then_some(())
        },
    );
}

/// Starts the server again and waits until both devices pushed everything
/// (in no set order: both upload as soon as it answers).
pub fn restart_and_sync(server: &mut Server, a: &Device, b: &Device) {
    server.restart();
    a.sync();
    b.sync();
    a.sync();
}

/// Starts the server again with `second` not running, so that `first`'s
/// queued changes reach the server before any of `second`'s: `second`'s
/// mount is killed (its journal survives, as after a crash), `first`
/// uploads, then `second` is mounted again and uploads its own.
pub fn restart_in_order(server: &mut Server, first: &Device, second: &mut Device) {
    second.kill9();
    server.restart();
    first.sync();
    second.mount(&[]);
    second.sync();
    first.sync();
}
