//! [`Timestamp`]: a point in time as POSIX keeps it (`struct timespec`):
//! whole seconds since the Unix epoch (negative before 1970) and
//! nanoseconds within that second, always in `0..1_000_000_000`.
//!
//! Unlike `i64` nanoseconds (which end in 2262), it holds every time a
//! filesystem can be asked to store: `touch -d 2300-01-01` and
//! `touch -d 1900-01-01` are kept exactly, as on ext4 (whose own range,
//! 1901–2446, is smaller).

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Seconds and nanoseconds since the Unix epoch (see the module docs).
/// Ordered by time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01 00:00:00 UTC; negative before.
    pub sec: i64,
    /// Nanoseconds after `sec`, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp { sec: 0, nsec: 0 };

    /// The current time of this machine.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A time given as nanoseconds since the epoch (the older wire form).
    pub fn from_ns(ns: i64) -> Self {
        Self::from_total_ns(i128::from(ns))
    }

    fn from_total_ns(ns: i128) -> Self {
        let sec = ns.div_euclid(NANOS_PER_SEC);
        Timestamp {
            sec: sec.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            nsec: ns.rem_euclid(NANOS_PER_SEC) as u32,
        }
    }

    /// Nanoseconds since the epoch, clamped to what `i64` holds
    /// (1677-09-21 to 2262-04-11).
    pub fn as_ns_clamped(self) -> i64 {
        let ns = i128::from(self.sec) * NANOS_PER_SEC + i128::from(self.nsec);
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// A `SystemTime` (exact: on Unix it is a `timespec` itself).
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                let total =
                    -(i128::from(d.as_secs()) * NANOS_PER_SEC) - i128::from(d.subsec_nanos());
                Self::from_total_ns(total)
            }
        }
    }

    /// As a `SystemTime`; a time the platform's `SystemTime` cannot hold
    /// (beyond ±2^63 s on Unix) saturates at the epoch's far side.
    pub fn to_system_time(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH
                .checked_add(Duration::new(self.sec as u64, self.nsec))
                .unwrap_or(UNIX_EPOCH + Duration::new(i64::MAX as u64, 0))
        } else {
            let back = Duration::new(self.sec.unsigned_abs(), 0);
            UNIX_EPOCH
                .checked_sub(back)
                .and_then(|t| t.checked_add(Duration::new(0, self.nsec)))
                .unwrap_or(UNIX_EPOCH)
        }
    }

    /// True when `nsec` is in range (a record from outside may not be).
    pub fn is_valid(self) -> bool {
        self.nsec < 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_round_trip_in_both_directions() {
        for ns in [
            0,
            1,
            -1,
            -250_000_000,
            1_700_000_000_123_456_789,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(Timestamp::from_ns(ns).as_ns_clamped(), ns, "{ns}");
        }
        assert_eq!(
            Timestamp::from_ns(-250_000_000),
            Timestamp {
                sec: -1,
                nsec: 750_000_000
            }
        );
    }

    #[test]
    fn system_times_beyond_2262_and_before_1677_are_exact() {
        for (sec, nsec) in [
            (10_413_792_000, 5),            // 2300-01-01
            (-2_208_988_800, 0),            // 1900-01-01
            (-30_610_224_000, 1),           // year 1000
            (-1, 250_000_000),              // 1969-12-31 23:59:59.25
            (253_402_300_799, 999_999_999), // 9999-12-31 23:59:59.999999999
        ] {
            let t = Timestamp { sec, nsec };
            assert_eq!(Timestamp::from_system_time(t.to_system_time()), t, "{t:?}");
        }
        let far = Timestamp {
            sec: 10_413_792_000,
            nsec: 0,
        };
        assert_eq!(far.as_ns_clamped(), i64::MAX, "the old form clamps");
    }

    #[test]
    fn ordered_by_time() {
        let a = Timestamp::from_ns(-1);
        let b = Timestamp::from_ns(0);
        let c = Timestamp::from_ns(1);
        assert!(a < b && b < c);
    }
}
