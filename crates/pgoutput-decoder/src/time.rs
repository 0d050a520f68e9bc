//! PostgreSQL timestamps as sent by the replication protocol.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds from the Unix epoch to the PostgreSQL epoch, 2000-01-01 00:00 UTC.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
const MICROS_PER_SEC: i64 = 1_000_000;

/// A point in time as PostgreSQL sends it: microseconds since 2000-01-01 00:00 UTC.
///
/// [`Display`](fmt::Display) prints RFC 3339 in UTC with microseconds, e.g.
/// `2026-11-25T19:13:22.123456Z`; `i64::MAX`/`i64::MIN` print as PostgreSQL's
/// `infinity`/`-infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// The current system time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`], saturating at the ends of the `i64` range.
    pub fn from_system_time(t: SystemTime) -> Self {
        let unix_micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        PgTimestamp(unix_micros.saturating_sub(PG_EPOCH_UNIX_MICROS))
    }

    /// Converts to a [`SystemTime`]. Every `i64` value is representable on Unix
    /// platforms; elsewhere an out-of-range value saturates to the PostgreSQL epoch.
    pub fn to_system_time(self) -> SystemTime {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(946_684_800);
        let offset = Duration::from_micros(self.0.unsigned_abs());
        let t =
            if self.0 >= 0 { pg_epoch.checked_add(offset) } else { pg_epoch.checked_sub(offset) };
        t.unwrap_or(pg_epoch)
    }

    /// Microseconds since the Unix epoch (saturating).
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_UNIX_MICROS)
    }
}

impl fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            i64::MAX => return f.write_str("infinity"),
            i64::MIN => return f.write_str("-infinity"),
            _ => {}
        }
        // i128 so that values near the i64 ends do not overflow.
        let unix = i128::from(self.0) + i128::from(PG_EPOCH_UNIX_MICROS);
        let secs = unix.div_euclid(i128::from(MICROS_PER_SEC));
        let micros = unix.rem_euclid(i128::from(MICROS_PER_SEC));
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let year_fmt = if (0..=9999).contains(&year) { 4 } else { 0 };
        write!(
            f,
            "{year:0year_fmt$}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, public domain algorithm).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i128::from(month <= 2);
    // Both are in small ranges (see above), so the conversions cannot fail.
    (year, u32::try_from(month).unwrap_or(0), u32::try_from(day).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_rfc3339_utc() {
        assert_eq!(PgTimestamp(0).to_string(), "2000-01-01T00:00:00.000000Z");
        assert_eq!(PgTimestamp(-1).to_string(), "1999-12-31T23:59:59.999999Z");
        assert_eq!(PgTimestamp(-PG_EPOCH_UNIX_MICROS).to_string(), "1970-01-01T00:00:00.000000Z");
        // Python: datetime(2026,11,25,19,13,22,123456) - datetime(2000,1,1) in µs.
        assert_eq!(PgTimestamp(848_949_202_123_456).to_string(), "2026-11-25T19:13:22.123456Z");
        // Leap day.
        assert_eq!(PgTimestamp(5_184_000_000_000).to_string(), "2000-03-01T00:00:00.000000Z");
        assert_eq!(PgTimestamp(i64::MAX).to_string(), "infinity");
        assert_eq!(PgTimestamp(i64::MIN).to_string(), "-infinity");
        // No panic near the ends.
        let _ = PgTimestamp(i64::MAX - 1).to_string();
        let _ = PgTimestamp(i64::MIN + 1).to_string();
    }

    #[test]
    fn system_time_round_trip() {
        let t = PgTimestamp(848_949_202_123_456);
        assert_eq!(PgTimestamp::from_system_time(t.to_system_time()), t);
        let before = PgTimestamp(-123_456_789);
        assert_eq!(PgTimestamp::from_system_time(before.to_system_time()), before);
        assert_eq!(PgTimestamp(0).unix_micros(), PG_EPOCH_UNIX_MICROS);
        assert_eq!(PgTimestamp::from_system_time(UNIX_EPOCH), PgTimestamp(-PG_EPOCH_UNIX_MICROS));
        assert!(PgTimestamp::now() > PgTimestamp(800_000_000_000_000));
    }
}
