//! Background workers of a mount.
//!
//! - [`uploader`]: drains the journal in order — chunks new content with
//!   FastCDC, asks the server which chunks it lacks, uploads only those,
//!   then commits the nodes' new state with their version vectors.
//! - [`follower`]: pulls the account's change log from its cursor and
//!   applies remote changes to the metadata cache, woken by the server's
//!   push notifications (`remote::push`), with a slow safety-net pull, or
//!   polling every second while push is unavailable.
//!
//! Both are loops with capped exponential backoff with jitter
//! ([`Backoff`]) on transient failures (server unreachable, 5xx) and stop
//! when their cancellation token fires.

pub mod follower;
pub mod uploader;

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Capped exponential backoff with jitter (via `backon`), restartable: the
/// step doubles from `min` up to `max / 2`, and each delay is drawn
/// between the step and twice it (so never above `max`), so that devices
/// that failed together do not retry together.
pub struct Backoff {
    builder: ExponentialBuilder,
    max: Duration,
    current: Option<backon::ExponentialBackoff>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            builder: ExponentialBuilder::default()
                .with_min_delay(min)
                // backon's jitter adds up to one more step: the step stops
                // at half the cap so that the delay never passes it.
                .with_max_delay((max / 2).max(min))
                .with_jitter()
                .without_max_times(),
            max,
            current: None,
        }
    }
    /// Starts over from `min` (after a success).
    pub fn reset(&mut self) {
        self.current = None;
    }
    pub fn next_delay(&mut self) -> Duration {
        let b = self.current.get_or_insert_with(|| self.builder.build());
        b.next().unwrap_or(self.max).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(30));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min && first <= min * 2, "{first:?}");
        let mut last = first;
        for _ in 0..30 {
            last = b.next_delay();
            assert!(last <= max, "never above the cap: {last:?}");
        }
        assert!(last >= max / 2, "reaches the cap's half: {last:?}");
        b.reset();
        assert!(b.next_delay() <= min * 2);
    }
}
