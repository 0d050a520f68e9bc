//! `--max-lag`: the most lag a healthy mirror may have, as a duration or a size of WAL.

use std::fmt;
use std::str::FromStr;

use crate::display::human_bytes;

/// `--max-lag`: the most lag a healthy mirror may have, in time or in WAL bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxLag {
    /// Compared with PostgreSQL's `replay_lag` for the slot's consumer (seconds).
    Seconds(f64),
    /// Compared with the WAL between the primary's position and the slot's confirmed position.
    Bytes(i64),
}

/// A `--max-lag` value that is neither a duration nor a size.
#[derive(Debug, thiserror::Error)]
#[error("expected a duration (500ms, 30s, 5m, 1h) or a size of WAL (512kB, 64MB, 1GB), got {0:?}")]
pub struct BadMaxLag(String);

impl FromStr for MaxLag {
    type Err = BadMaxLag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMaxLag(s.to_owned());
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, unit) = t.split_at(split);
        let n: f64 = number.parse().map_err(|_| bad())?;
        // PostgreSQL's units (memory in powers of 1024, as `pg_size_pretty` prints), and `m`
        // for minutes as in `5m`.
        let seconds = match unit.trim_start() {
            "ms" => Some(n / 1000.0),
            "s" => Some(n),
            "m" | "min" => Some(n * 60.0),
            "h" => Some(n * 3600.0),
            _ => None,
        };
        if let Some(s) = seconds {
            return Ok(MaxLag::Seconds(s));
        }
        let scale: u32 = match unit.trim_start() {
            "B" => 0,
            "kB" | "KB" => 1,
            "MB" => 2,
            "GB" => 3,
            "TB" => 4,
            _ => return Err(bad()),
        };
        let bytes = n * 1024f64.powi(i32::try_from(scale).unwrap_or(0));
        // In range and whole: an i64 count of bytes.
        if !(0.0..9.0e18).contains(&bytes) || bytes.fract() != 0.0 {
            return Err(bad());
        }
        format!("{bytes:.0}").parse().map(MaxLag::Bytes).map_err(|_| bad())
    }
}

impl fmt::Display for MaxLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxLag::Seconds(s) => write!(f, "{s} s"),
            MaxLag::Bytes(b) => f.write_str(&human_bytes(*b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_lag_is_a_duration_or_a_size() {
        let ok = |s: &str| s.parse::<MaxLag>().unwrap();
        assert_eq!(ok("30s"), MaxLag::Seconds(30.0));
        assert_eq!(ok("5m"), MaxLag::Seconds(300.0));
        assert_eq!(ok("2min"), MaxLag::Seconds(120.0));
        assert_eq!(ok("1h"), MaxLag::Seconds(3600.0));
        assert_eq!(ok("500ms"), MaxLag::Seconds(0.5));
        assert_eq!(ok("1.5s"), MaxLag::Seconds(1.5));
        assert_eq!(ok("64MB"), MaxLag::Bytes(64 << 20));
        assert_eq!(ok("512 kB"), MaxLag::Bytes(512 << 10));
        assert_eq!(ok("1GB"), MaxLag::Bytes(1 << 30));
        assert_eq!(ok("100B"), MaxLag::Bytes(100));
        for bad in ["30", "5M", "1 day", "s", "-1s", "1.5B", "10XB", ""] {
            let err = bad.parse::<MaxLag>().expect_err(bad).to_string();
            assert!(err.contains("30s") && err.contains("64MB"), "{err}");
        }
    }
}
