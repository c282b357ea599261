//! The command line's logic. `src/main.rs` only parses arguments (clap)
//! and calls one function here per command; everything a command does —
//! reading stdin, talking to the server, detaching, waiting for a mount —
//! lives in these modules so it can be tested and read in one place.
//!
//! Conventions every command follows:
//! - an error is one line on stderr, `nimbus: <message>` (the anyhow
//!   context chain joined by `: `, see [`error_line`]), and exit code 1;
//!   clap's usage errors exit with 2;
//! - waiting is polling with a deadline, never an unbounded block;
//! - logs go to stderr through `tracing`, filtered by `NIMBUS_LOG` or
//!   `RUST_LOG` (see [`init_logging`]).

pub mod account;
pub mod conflicts;
pub mod mount;
pub mod mountinfo;
pub mod progress;
pub mod server;
pub mod size;
pub mod status;
pub mod xattr;

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal};

/// Sets up `tracing` to stderr. The filter comes from `NIMBUS_LOG`, else
/// `RUST_LOG`, else `default` (`warn` for short commands, `info` for
/// `serve` and `mount`). An invalid filter falls back to `default` with a
/// warning rather than failing the command.
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let spec = ["NIMBUS_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    let (filter, bad) = match spec {
        Some(s) => match EnvFilter::try_new(&s) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(default),
                Some(format!("ignoring log filter '{s}': {e}")),
            ),
        },
        None => (EnvFilter::new(default), None),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    if let Some(msg) = bad {
        tracing::warn!("{msg}");
    }
}

/// Makes a panic (always a bug, never a user mistake) print one line,
/// `nimbus: internal error at FILE:LINE: MESSAGE`, instead of Rust's
/// multi-line report. With `RUST_BACKTRACE` set, the default report (and
/// backtrace) is kept for debugging.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("internal error{at}: {msg}").replace(['\n', '\r'], " ");
        eprintln!("nimbus: {line} (please report this bug)");
    }));
}

/// The one line printed for an error: its context chain joined by `: `,
/// with any line breaks inside messages folded into spaces.
pub fn error_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a password for `--password-stdin`: the first line of standard
/// input without its line ending. Empty is an error.
pub fn read_password_stdin() -> Result<String> {
    read_password_from(&mut std::io::stdin().lock())
}

pub(crate) fn read_password_from(input: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        bail!("no password on standard input (--password-stdin reads its first line)");
    }
    Ok(pw.to_string())
}

/// This machine's host name (the default device name), or `device` if it
/// cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates
    // when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    "device".to_string()
}

/// A multi-threaded tokio runtime for commands that do network I/O.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_first_line_without_newline() {
        let pw = read_password_from(&mut &b"s3cret\nmore\n"[..]).unwrap();
        assert_eq!(pw, "s3cret");
        assert_eq!(read_password_from(&mut &b"a b\r\n"[..]).unwrap(), "a b");
        assert_eq!(
            read_password_from(&mut &b"no-newline"[..]).unwrap(),
            "no-newline"
        );
        for empty in [&b""[..], b"\n", b"\r\n"] {
            let e = read_password_from(&mut &empty[..]).unwrap_err();
            assert!(e.to_string().contains("no password"), "{e}");
        }
    }

    #[test]
    fn error_line_joins_context_on_one_line() {
        let e = anyhow::anyhow!("inner\nproblem").context("outer");
        assert_eq!(error_line(&e), "outer: inner problem");
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
