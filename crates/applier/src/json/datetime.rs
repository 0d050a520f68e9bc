//! Dates and times as PostgreSQL prints them with `DateStyle = ISO`, `IntervalStyle =
//! postgres` and `TimeZone = UTC`, from their binary forms (days or microseconds since
//! 2000-01-01, proleptic Gregorian calendar, year 0 printed as 1 BC).

use std::fmt::Write as _;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// Year, month and day of `days` since 2000-01-01 (year 0 is 1 BC).
fn civil(days: i64) -> (i64, i64, i64) {
    // Howard Hinnant's civil_from_days, shifted from 1970 to 2000.
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD`; returns whether the year is BC (the caller appends ` BC` last).
fn push_date(s: &mut String, days: i64) -> bool {
    let (y, m, d) = civil(days);
    let _ = write!(s, "{:04}-{m:02}-{d:02}", if y > 0 { y } else { 1 - y });
    y <= 0
}

/// `SS` and, when not zero, the fraction without trailing zeros.
fn push_seconds(s: &mut String, sec: i64, usec: i64) {
    let _ = write!(s, "{sec:02}");
    if usec != 0 {
        let frac = format!("{usec:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight (24:00:00 included).
fn push_time(s: &mut String, micros: i64) {
    let _ = write!(
        s,
        "{:02}:{:02}:",
        micros / USECS_PER_HOUR,
        micros % USECS_PER_HOUR / USECS_PER_MINUTE
    );
    push_seconds(s, micros % USECS_PER_MINUTE / USECS_PER_SEC, micros % USECS_PER_SEC);
}

/// A UTC offset of `west` seconds west of Greenwich: `+HH`, `-HH:MM`, `+HH:MM:SS`.
fn push_zone(s: &mut String, west: i32) {
    let abs = west.unsigned_abs();
    let (h, m, sec) = (abs / 3600, abs / 60 % 60, abs % 60);
    let _ = write!(s, "{}{h:02}", if west <= 0 { '+' } else { '-' });
    if sec != 0 {
        let _ = write!(s, ":{m:02}:{sec:02}");
    } else if m != 0 {
        let _ = write!(s, ":{m:02}");
    }
}

/// `date`: `YYYY-MM-DD[ BC]`, `infinity`, `-infinity`.
pub(super) fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        days => {
            let mut s = String::with_capacity(16);
            if push_date(&mut s, days.into()) {
                s.push_str(" BC");
            }
            s
        }
    }
}

/// `timestamp` (`with_zone`: `timestamptz`, in UTC): `YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]`.
pub(super) fn timestamp(micros: i64, with_zone: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        micros => {
            let mut s = String::with_capacity(32);
            let bc = push_date(&mut s, micros.div_euclid(USECS_PER_DAY));
            s.push(' ');
            push_time(&mut s, micros.rem_euclid(USECS_PER_DAY));
            if with_zone {
                s.push_str("+00");
            }
            if bc {
                s.push_str(" BC");
            }
            s
        }
    }
}

/// `time`: `HH:MM:SS[.ffffff]`.
pub(super) fn time(micros: i64) -> String {
    let mut s = String::with_capacity(16);
    push_time(&mut s, micros);
    s
}

/// `timetz`: the time and its offset (`west` seconds west of Greenwich).
pub(super) fn timetz(micros: i64, west: i32) -> String {
    let mut s = time(micros);
    push_zone(&mut s, west);
    s
}

/// `interval` in the `postgres` style: `1 year 2 mons -3 days +04:05:06.5`. Each part has its
/// own sign; a part after a negative one shows `+` when positive.
pub(super) fn interval(micros: i64, days: i32, months: i32) -> String {
    let mut s = String::with_capacity(32);
    let (mut is_zero, mut is_before) = (true, false);
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        let _ = write!(
            s,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value == 1 { "" } else { "s" },
        );
        is_before = value < 0;
        is_zero = false;
    }
    let (hour, min) = (micros / USECS_PER_HOUR, micros % USECS_PER_HOUR / USECS_PER_MINUTE);
    let (sec, usec) = (micros % USECS_PER_MINUTE / USECS_PER_SEC, micros % USECS_PER_SEC);
    if is_zero || micros != 0 {
        let minus = hour < 0 || min < 0 || sec < 0 || usec < 0;
        let _ = write!(
            s,
            "{}{}{:02}:{:02}:",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            hour.unsigned_abs(),
            min.unsigned_abs(),
        );
        push_seconds(&mut s, sec.abs(), usec.abs());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(9_861), "2026-12-31");
        assert_eq!(date(-730_119), "0001-01-01");
        assert_eq!(date(-730_120), "0001-12-31 BC");
        assert_eq!(date(i32::MIN), "-infinity");
        assert_eq!(timestamp(-1, true), "1999-12-31 23:59:59.999999+00");
        assert_eq!(timestamp(1_500_000, false), "2000-01-01 00:00:01.5");
        assert_eq!(time(USECS_PER_DAY), "24:00:00");
        assert_eq!(timetz(0, -19_800), "00:00:00+05:30");
        assert_eq!(timetz(0, 3_723), "00:00:00-01:02:03");
        assert_eq!(interval(0, 0, 0), "00:00:00");
        assert_eq!(interval(-14_706_500_000, 3, -14), "-1 years -2 mons +3 days -04:05:06.5");
        assert_eq!(interval(7_384_000_000, -1, 0), "-1 days +02:03:04");
        assert_eq!(interval(0, 1, 13), "1 year 1 mon 1 day");
    }
}
