//! Background workers of a mount.
//!
//! - [`uploader`]: drains the journal in order — chunks new content with
//!   FastCDC, asks the server which chunks it lacks, uploads only those,
//!   then commits the nodes' new state with their version vectors.
//! - [`follower`]: pulls the account's change log from its cursor and
//!   applies remote changes to the metadata cache.
//!
//! Both are loops with capped exponential backoff on transient failures
//! (server unreachable, 5xx) and stop when their cancellation token fires.

pub mod follower;
pub mod uploader;

use std::time::Duration;

/// Capped exponential backoff: 250 ms doubling up to 30 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.failures = 0;
    }
    pub fn next_delay(&mut self) -> Duration {
        let d = Duration::from_millis(250u64.saturating_mul(1 << self.failures.min(7)));
        self.failures = self.failures.saturating_add(1);
        d.min(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
        assert_eq!(b.next_delay(), Duration::from_millis(500));
        for _ in 0..20 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }
}
