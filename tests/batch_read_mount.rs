//! Cold small files through a real mount come in batches: reading 200
//! files that another device wrote costs a few `chunks/batch` requests,
//! not one chunk request per file (the server's own request counters
//! tell).

mod common;

use common::*;
use std::time::Duration;

const ARRIVE: Duration = Duration::from_secs(60);

/// The server's count of requests to `route` with status 200.
fn requests(server: &Server, method: &str, route: &str) -> u64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    let want = format!(
        "nimbus_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"200\"}}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn two_hundred_cold_small_files_cost_a_few_batch_requests() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let mut a = Device::login(&server, "alice", "pw", "writer");
    a.mount(&[]);
    let mut files = Vec::new();
    for folder in 0..4 {
        std::fs::create_dir(a.path(&format!("d{folder}"))).unwrap();
        for i in 0..50 {
            let name = format!("d{folder}/f{i:03}.txt");
            let bytes = data(4096, folder * 1000 + i);
            std::fs::write(a.path(&name), &bytes).unwrap();
            files.push((name, bytes));
        }
    }
    a.sync();

    // A second device: nothing of it is local yet. Wait for the listing
    // only (metadata), never reading content.
    let mut b = Device::login(&server, "alice", "pw", "reader");
    b.mount(&[]);
    wait_for("the 200 names on the reader", ARRIVE, || {
        let n: usize = (0..4)
            .map(|f| {
                std::fs::read_dir(b.path(&format!("d{f}")))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum();
        (n == 200).then_some(())
    });
    let singles = requests(&server, "GET", "/api/v1/chunks/{hex}");
    let batches = requests(&server, "POST", "/api/v1/chunks/batch");
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(b.path(name)).unwrap(), bytes, "{name}");
    }
    let singles = requests(&server, "GET", "/api/v1/chunks/{hex}") - singles;
    let batches = requests(&server, "POST", "/api/v1/chunks/batch") - batches;
    eprintln!("200 cold files: {singles} single and {batches} batch chunk requests");
    // One batch per folder is what the bounds give (50 × 4 KiB each);
    // allow some slack, far below one request per file.
    assert!(batches >= 1, "no batch was used");
    assert!(
        singles + batches <= 200 / 16,
        "{singles} single and {batches} batch chunk requests for 200 cold files"
    );
    b.unmount();
    a.unmount();
}
