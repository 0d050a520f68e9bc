//! Whether the mirror `status` shows is healthy: its exit status as a health check.

use std::fmt;
use std::str::FromStr;

use super::{Status, human_bytes};

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

/// What makes the mirror unhealthy, one line each; empty when it is healthy.
pub fn problems(status: &Status, max_lag: Option<MaxLag>) -> Vec<String> {
    let slot = &status.slot;
    let Some(s) = &status.slot_status else {
        return vec![format!(
            "slot {slot:?} does not exist on the source: create the mirror with `pgmirror mirror`"
        )];
    };
    let mut out = Vec::new();
    if s.wal_status.as_deref() == Some("lost") {
        out.push(format!(
            "slot {slot:?} is invalidated (wal_status lost): the primary removed WAL it still \
             needed; recover with `pgmirror drop` then `pgmirror mirror` (a fresh initial copy)"
        ));
    }
    if !s.active {
        out.push(format!("slot {slot:?} is inactive: no pgmirror is connected to it"));
    }
    match max_lag {
        Some(MaxLag::Bytes(max)) => match status.lag_bytes {
            Some(lag) if lag > max => {
                out.push(format!("lag {} is over --max-lag {}", human_bytes(lag), human_bytes(max)))
            }
            Some(_) => {}
            None => out.push("lag in bytes unknown (the slot has no confirmed position)".into()),
        },
        Some(MaxLag::Seconds(max)) => match status.lag_seconds {
            Some(lag) if lag > max => {
                out.push(format!("lag {lag:.1} s is over --max-lag {}", MaxLag::Seconds(max)));
            }
            Some(_) => {}
            // An inactive slot is reported above; otherwise the role cannot see the lag.
            None if !s.active => {}
            None => out.push(
                "lag in seconds unknown: pg_stat_replication hides it from this role (see the \
                 note on pg_read_all_stats), or give --max-lag in bytes"
                    .into(),
            ),
        },
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::SlotStatus;

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

    fn status(slot: Option<SlotStatus>) -> Status {
        Status {
            mirror: "m".into(),
            state: None,
            slot: "pgmirror_m".into(),
            publication: None,
            source_lsn: "0/0".into(),
            slot_status: slot,
            lag_bytes: Some(2048),
            lag_seconds: Some(3.0),
            target: None,
            tables: vec![],
            healthy: true,
            problems: vec![],
            notes: vec![],
        }
    }

    fn slot(active: bool, wal_status: &str) -> SlotStatus {
        SlotStatus {
            active,
            active_pid: active.then_some(42),
            application_name: None,
            client_addr: None,
            state: None,
            details_visible: true,
            confirmed_flush_lsn: Some("0/10".into()),
            restart_lsn: Some("0/8".into()),
            retained_wal_bytes: Some(8),
            wal_status: Some(wal_status.into()),
            safe_wal_size: None,
            database: None,
        }
    }

    #[test]
    fn missing_lost_inactive_and_lagging_slots_are_unhealthy() {
        assert!(problems(&status(Some(slot(true, "reserved"))), None).is_empty());
        let missing = problems(&status(None), None);
        assert!(missing[0].contains("does not exist"), "{missing:?}");
        let lost = problems(&status(Some(slot(false, "lost"))), None);
        assert!(lost[0].contains("invalidated") && lost[1].contains("inactive"), "{lost:?}");
        let healthy = status(Some(slot(true, "reserved")));
        assert!(problems(&healthy, Some(MaxLag::Bytes(4096))).is_empty());
        assert!(problems(&healthy, Some(MaxLag::Seconds(5.0))).is_empty());
        let over = problems(&healthy, Some(MaxLag::Bytes(1024)));
        assert_eq!(over, ["lag 2.0 kB is over --max-lag 1.0 kB"]);
        let over = problems(&healthy, Some(MaxLag::Seconds(2.0)));
        assert_eq!(over, ["lag 3.0 s is over --max-lag 2 s"]);
    }
}
