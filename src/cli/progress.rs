//! What `nimbus sync --wait` shows while it waits: operations and bytes
//! left, the upload rate over the last seconds, and what it is waiting on
//! (a paused connection, else the first pending path). On a terminal one
//! line is redrawn in place; otherwise a plain line is printed when what it
//! says changes, at most every [`PLAIN_EVERY`].

use super::size::format_bytes;
use super::xattr::Pending;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How far back the upload rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Least time between two plain (non-terminal) lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// The progress display of one `sync --wait`.
pub struct Progress {
    terminal: bool,
    samples: VecDeque<(Instant, u64)>,
    last_plain: Option<(Instant, String)>,
    drawn: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(std::io::stderr().is_terminal())
    }
}

impl Progress {
    /// `terminal`: redraw one line in place (else plain lines).
    pub fn new(terminal: bool) -> Self {
        Progress {
            terminal,
            samples: VecDeque::new(),
            last_plain: None,
            drawn: false,
        }
    }

    /// Bytes per second uploaded over the last [`RATE_WINDOW`], once there
    /// are two samples to compare.
    fn rate(&mut self, now: Instant, bytes_left: u64) -> Option<f64> {
        self.samples.push_back((now, bytes_left));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (t0, b0) = *self.samples.front()?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 0.5).then(|| b0.saturating_sub(bytes_left) as f64 / secs)
    }

    /// Shows the state `p` (and `note`, why uploads do not move).
    pub fn show(&mut self, p: &Pending, note: Option<&str>) {
        let now = Instant::now();
        let rate = self.rate(now, p.bytes);
        self.show_line(render(p, rate, note), line_without_rate(p, note));
    }

    /// Shows that nothing is left to upload but changes from the server
    /// are still to be applied: `note` says how far this device is, and
    /// `connection` why nothing moves, if known.
    pub fn show_pull(&mut self, note: &str, connection: Option<&str>) {
        let line = match connection {
            Some(c) => format!("waiting for {note}: {c}"),
            None => format!("waiting for {note}"),
        };
        self.show_line(line.clone(), line);
    }

    /// Draws `line` (in place on a terminal; else printed when `key`, what
    /// counts as a change, differs from the last and [`PLAIN_EVERY`] passed).
    fn show_line(&mut self, line: String, key: String) {
        let now = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
            self.drawn = true;
        } else {
            let changed = self
                .last_plain
                .as_ref()
                .is_none_or(|(t, last)| *last != key && now.duration_since(*t) >= PLAIN_EVERY);
            if changed {
                let _ = writeln!(err, "nimbus: {line}");
                self.last_plain = Some((now, key));
            }
        }
    }

    /// Ends the redrawn line (before a final message).
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.drawn = false;
        }
    }
}

/// What changes count for plain output: not the rate, which moves always.
fn line_without_rate(p: &Pending, note: Option<&str>) -> String {
    render(p, None, note)
}

/// One line: `waiting for 3 operations (2.0 MiB left, 1.5 MiB/s): a/b.bin`.
pub fn render(p: &Pending, rate: Option<f64>, note: Option<&str>) -> String {
    let ops = if p.count == 1 {
        "1 operation".to_string()
    } else {
        format!("{} operations", p.count)
    };
    let mut details = format!("{} left", format_bytes(p.bytes));
    if let Some(r) = rate {
        details.push_str(&format!(", {}/s", format_bytes(r as u64)));
    }
    let on = match (note, p.paths.first()) {
        (Some(n), _) => format!(": {n}"),
        (None, Some(path)) => format!(": {path}"),
        (None, None) => String::new(),
    };
    format!("waiting for {ops} ({details}){on}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(count: u64, bytes: u64) -> Pending {
        Pending {
            count,
            bytes,
            failed: 0,
            paths: vec!["d/big.bin".into()],
        }
    }

    #[test]
    fn renders_what_is_left_the_rate_and_what_it_waits_on() {
        assert_eq!(
            render(&pending(3, 2 << 20), Some(1.5 * 1048576.0), None),
            "waiting for 3 operations (2 MiB left, 1.5 MiB/s): d/big.bin"
        );
        assert_eq!(
            render(&pending(1, 0), None, Some("uploads paused: 413")),
            "waiting for 1 operation (0 B left): uploads paused: 413"
        );
    }

    #[test]
    fn the_rate_is_measured_over_the_window() {
        let mut p = Progress::new(false);
        let t0 = Instant::now();
        assert_eq!(p.rate(t0, 10_000), None);
        let r = p.rate(t0 + Duration::from_secs(2), 6_000).unwrap();
        assert!((r - 2_000.0).abs() < 1.0, "{r}");
        // Samples older than the window no longer count.
        let r = p.rate(t0 + Duration::from_secs(10), 6_000);
        assert_eq!(r, None);
    }
}
