//! The results of a benchmark: per run, per contender and workload, and the text table.

use serde::Serialize;

use crate::clusters::ClusterSettings;

/// One contender's run on one backlog.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// 1-based run number.
    pub run: u32,
    /// Seconds until caught up; `None` when the run failed.
    pub seconds: Option<f64>,
    /// CPU seconds of the walsender that served the contender.
    pub walsender_cpu_s: Option<f64>,
    /// CPU seconds of the pgmirror process.
    pub pgmirror_cpu_s: Option<f64>,
    /// CPU seconds of the target's server processes that applied the changes: the
    /// subscriber's apply worker (native, pglogical) or pgmirror's target sessions.
    pub target_cpu_s: Option<f64>,
    /// Peak RSS of the pgmirror process in MB.
    pub peak_rss_mb: Option<f64>,
    /// Whether the target equals the primary (for `pg_recvlogical`: the slot reached the
    /// end LSN).
    pub verified: bool,
    /// Why the run failed.
    pub error: Option<String>,
}

/// A pgmirror process's figures, read from `/proc` while it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessFigures {
    pub(crate) cpu_s: Option<f64>,
    pub(crate) peak_rss_mb: Option<f64>,
}

impl RunResult {
    /// Run `run` of a pgmirror process that caught up in `seconds`.
    pub(crate) fn measured(
        run: u32,
        seconds: f64,
        walsender_cpu_s: Option<f64>,
        process: ProcessFigures,
        verified: bool,
    ) -> Self {
        RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s,
            pgmirror_cpu_s: process.cpu_s,
            target_cpu_s: None,
            peak_rss_mb: process.peak_rss_mb,
            verified,
            error: None,
        }
    }

    /// Run `run` of a subscriber inside the target server (no process of its own to watch).
    pub(crate) fn subscriber(
        run: u32,
        seconds: f64,
        walsender_cpu_s: Option<f64>,
        target_cpu_s: Option<f64>,
        verified: bool,
    ) -> Self {
        let none = ProcessFigures { cpu_s: None, peak_rss_mb: None };
        RunResult { target_cpu_s, ..Self::measured(run, seconds, walsender_cpu_s, none, verified) }
    }

    /// Run `run` that failed with `error`.
    pub(crate) fn failed(run: u32, error: &crate::Error) -> Self {
        RunResult {
            run,
            seconds: None,
            walsender_cpu_s: None,
            pgmirror_cpu_s: None,
            target_cpu_s: None,
            peak_rss_mb: None,
            verified: false,
            error: Some(error.one_line()),
        }
    }
}

/// Median, minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The minimum.
    pub min: f64,
    /// The maximum.
    pub max: f64,
}

impl Stat {
    /// Of `values`; `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median =
            if v.len().is_multiple_of(2) { f64::midpoint(v[mid - 1], v[mid]) } else { v[mid] };
        Some(Stat { median, min: v[0], max: v[v.len() - 1] })
    }
}

/// One contender on one workload, over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderReport {
    /// `native`, `pg_recvlogical`, `pgmirror`, `pglogical`, ...
    pub contender: String,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Seconds over the successful runs.
    pub seconds: Option<Stat>,
    /// Rows per second at the median time.
    pub rows_per_s: Option<f64>,
    /// Source transactions per second at the median time.
    pub txns_per_s: Option<f64>,
    /// Median time relative to the native subscriber's median time.
    pub ratio_vs_native: Option<f64>,
    /// Walsender CPU seconds.
    pub walsender_cpu_s: Option<Stat>,
    /// Per run, the contender's seconds over its walsender's CPU seconds: how close it came
    /// to the primary's own limit (1.0 would be as fast as the walsender can decode and send).
    pub vs_walsender_cpu: Option<Stat>,
    /// Median walsender CPU seconds over the native subscriber's median seconds: the lowest
    /// `ratio_vs_native` any consumer could reach with the walsender working this hard.
    pub walsender_cpu_vs_native: Option<f64>,
    /// pgmirror CPU seconds.
    pub pgmirror_cpu_s: Option<Stat>,
    /// CPU seconds of the target's processes that applied the changes (see
    /// [`RunResult::target_cpu_s`]).
    pub target_cpu_s: Option<Stat>,
    /// Highest peak RSS of pgmirror over the runs, MB.
    pub peak_rss_mb: Option<f64>,
    /// Every run succeeded and was verified.
    pub verified: bool,
}

/// Decoding cost of a backlog, measured on its recording.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeShare {
    /// pgoutput messages in the backlog.
    pub messages: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Seconds to decode them all (one core).
    pub decode_s: f64,
    /// `decode_s` over pgmirror's median CPU seconds.
    pub share_of_pgmirror_cpu: Option<f64>,
}

/// One workload's results.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Its name.
    pub workload: String,
    /// Source transactions in the backlog.
    pub transactions: u64,
    /// Row changes in the backlog (rows copied, for the initial copy).
    pub rows: u64,
    /// WAL bytes of the backlog (for the initial copy: the source database's size).
    pub wal_bytes: u64,
    /// Seconds to generate the backlog.
    pub generate_s: f64,
    /// Per contender.
    pub contenders: Vec<ContenderReport>,
    /// Decoding cost.
    pub decode: Option<DecodeShare>,
    /// Contenders that did not run on this workload, and why (one line each).
    pub notes: Vec<String>,
}

/// Live latency: one small transaction on an idle primary until visible on the replica.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// The contender.
    pub contender: String,
    /// Samples taken.
    pub samples: usize,
    /// Milliseconds.
    pub ms: Stat,
    /// CPU time per sample of the processes on the change's way.
    pub cpu_us: PathCpu,
}

/// CPU time per latency sample, in microseconds, of the processes one change goes through:
/// the work behind the latency, including what each does between samples (keepalives, status
/// updates, its own timers). `None` where it could not be read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathCpu {
    /// The walsender.
    pub walsender: Option<f64>,
    /// The consumer's own process, when it runs outside the servers (pgmirror).
    pub consumer: Option<f64>,
    /// The target's server processes on the database (the subscriber's apply worker, or
    /// pgmirror's sessions).
    pub target: Option<f64>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The primary's `server_version`.
    pub server_version: String,
    /// Whether the clusters ran durable (`--durable`).
    pub durable: bool,
    /// What each cluster ran with.
    pub clusters: Vec<ClusterSettings>,
    /// Contenders left out of the whole run, and why (one line each).
    pub notes: Vec<String>,
    /// The size multiplier.
    pub scale: f64,
    /// Runs per contender.
    pub runs: u32,
    /// Per workload.
    pub workloads: Vec<WorkloadReport>,
    /// Live latency, when measured.
    pub latency: Vec<LatencyReport>,
}

/// The contenders of a streaming backlog, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    Native,
    Recvlogical,
    Pgmirror,
    /// pgmirror into MariaDB (`--mariadb`).
    PgmirrorMariaDb,
    /// A pglogical subscription (when the extension is installed).
    Pglogical,
    /// MariaDB's own `LOAD DATA INFILE` of the copied rows (`--mariadb`, initial copy only):
    /// the ceiling of a copy into MariaDB.
    MariaDbLoadData,
}

impl Contender {
    pub(crate) const EACH: [Contender; 6] = [
        Contender::Native,
        Contender::Recvlogical,
        Contender::Pgmirror,
        Contender::PgmirrorMariaDb,
        Contender::Pglogical,
        Contender::MariaDbLoadData,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Native => "native",
            Contender::Recvlogical => "pg_recvlogical",
            Contender::Pgmirror => "pgmirror",
            Contender::PgmirrorMariaDb => "pgmirror-mariadb",
            Contender::Pglogical => "pglogical",
            Contender::MariaDbLoadData => "mariadb-load-data",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Contender::Native => "n",
            Contender::Recvlogical => "r",
            Contender::Pgmirror => "m",
            Contender::PgmirrorMariaDb => "y",
            Contender::Pglogical => "l",
            Contender::MariaDbLoadData => "d",
        }
    }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    // Byte counts of a process fit f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / f64::from(1u32 << 20)
}

pub(crate) fn describe(r: &RunResult) -> String {
    match (&r.error, r.seconds) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, Some(s)) => format!("{s:.2} s, verified {}", r.verified),
        (None, None) => "no result".into(),
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_second(count: u64, seconds: f64) -> Option<f64> {
    (count > 0 && seconds > 0.0).then(|| count as f64 / seconds)
}

pub(crate) fn summarize(
    runs: &[(Contender, RunResult)],
    rows: u64,
    txns: u64,
) -> Vec<ContenderReport> {
    summarize_named(runs, Vec::new(), rows, txns)
}

/// [`summarize`], with more contenders known by name only (pgmirror into shards).
pub(crate) fn summarize_named(
    runs: &[(Contender, RunResult)],
    named: Vec<(String, Vec<RunResult>)>,
    rows: u64,
    txns: u64,
) -> Vec<ContenderReport> {
    let mut out = Vec::new();
    let contenders: Vec<Contender> =
        Contender::EACH.into_iter().filter(|c| runs.iter().any(|(x, _)| x == c)).collect();
    let each = contenders.into_iter().map(|c| {
        let mine: Vec<RunResult> =
            runs.iter().filter(|(x, _)| *x == c).map(|(_, r)| r.clone()).collect();
        (c.name().to_owned(), mine)
    });
    for (name, mine) in each.chain(named) {
        let seconds = Stat::of(mine.iter().filter_map(|r| r.seconds));
        out.push(ContenderReport {
            contender: name,
            seconds,
            rows_per_s: seconds.and_then(|s| per_second(rows, s.median)),
            txns_per_s: seconds.and_then(|s| per_second(txns, s.median)),
            ratio_vs_native: None,
            walsender_cpu_s: Stat::of(mine.iter().filter_map(|r| r.walsender_cpu_s)),
            vs_walsender_cpu: Stat::of(mine.iter().filter_map(|r| {
                match (r.seconds, r.walsender_cpu_s) {
                    (Some(s), Some(w)) if w > 0.0 => Some(s / w),
                    _ => None,
                }
            })),
            walsender_cpu_vs_native: None,
            pgmirror_cpu_s: Stat::of(mine.iter().filter_map(|r| r.pgmirror_cpu_s)),
            target_cpu_s: Stat::of(mine.iter().filter_map(|r| r.target_cpu_s)),
            peak_rss_mb: mine.iter().filter_map(|r| r.peak_rss_mb).reduce(f64::max),
            verified: !mine.is_empty() && mine.iter().all(|r| r.verified && r.error.is_none()),
            runs: mine,
        });
    }
    let native = out.iter().find(|c| c.contender == "native").and_then(|c| c.seconds);
    for c in &mut out {
        c.ratio_vs_native = match (c.seconds, native) {
            (Some(s), Some(n)) if n.median > 0.0 => Some(s.median / n.median),
            _ => None,
        };
        c.walsender_cpu_vs_native = match (c.walsender_cpu_s, native) {
            (Some(w), Some(n)) if n.median > 0.0 => Some(w.median / n.median),
            _ => None,
        };
    }
    out
}

/// The report as a text table.
pub fn render(report: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "PostgreSQL {}, scale {}, {} run(s); seconds are median (min-max)",
        report.server_version, report.scale, report.runs
    );
    let clusters: Vec<String> = report
        .clusters
        .iter()
        .map(|c| {
            let preload = if c.shared_preload_libraries.is_empty() {
                String::new()
            } else {
                format!(", shared_preload_libraries = {}", c.shared_preload_libraries)
            };
            format!(
                "{} fsync = {}, synchronous_commit = {}{preload}",
                c.role, c.fsync, c.synchronous_commit
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "clusters ({}): {}; backlogs generated with synchronous_commit = off",
        if report.durable { "--durable" } else { "not durable" },
        clusters.join("; ")
    );
    for note in &report.notes {
        let _ = writeln!(s, "{note}");
    }
    let _ = writeln!(
        s,
        "{:<14} {:<16} {:>22} {:>11} {:>10} {:>7} {:>20} {:>8} {:>10} {:>8} {:>5}",
        "workload",
        "contender",
        "seconds",
        "rows/s",
        "txns/s",
        "vs nat",
        "walsender CPU s",
        "pgm CPU",
        "target CPU",
        "RSS MB",
        "ok"
    );
    for w in &report.workloads {
        for c in &w.contenders {
            let opt = |v: Option<f64>, prec: usize| v.map_or("-".into(), |v| format!("{v:.prec$}"));
            let stat = |v: Option<Stat>| {
                v.map_or("-".into(), |v| format!("{:.2} ({:.2}-{:.2})", v.median, v.min, v.max))
            };
            let _ = writeln!(
                s,
                "{:<14} {:<16} {:>22} {:>11} {:>10} {:>7} {:>20} {:>8} {:>10} {:>8} {:>5}",
                w.workload,
                c.contender,
                stat(c.seconds),
                opt(c.rows_per_s, 0),
                opt(c.txns_per_s, 0),
                opt(c.ratio_vs_native, 2),
                stat(c.walsender_cpu_s),
                opt(c.pgmirror_cpu_s.map(|s| s.median), 2),
                opt(c.target_cpu_s.map(|s| s.median), 2),
                opt(c.peak_rss_mb, 0),
                if c.verified { "yes" } else { "NO" },
            );
            for r in &c.runs {
                if let Some(e) = &r.error {
                    let _ = writeln!(s, "    run {} failed: {e}", r.run);
                }
            }
        }
        let mut line = format!(
            "  {}: {} txns, {} rows, {:.1} MB {}, generated in {:.1} s",
            w.workload,
            w.transactions,
            w.rows,
            mb(w.wal_bytes),
            if w.decode.is_some() { "WAL" } else { "source database" },
            w.generate_s
        );
        if let Some(d) = &w.decode {
            let _ = write!(
                line,
                "; decoding {} messages ({:.1} MB) took {:.3} s{}",
                d.messages,
                mb(d.payload_bytes),
                d.decode_s,
                d.share_of_pgmirror_cpu
                    .map_or(String::new(), |x| format!(" = {:.1}% of pgmirror's CPU", x * 100.0))
            );
        }
        let pgmirror = w.contenders.iter().find(|c| c.contender == Contender::Pgmirror.name());
        if let Some((vs, floor)) =
            pgmirror.and_then(|c| c.vs_walsender_cpu.zip(c.walsender_cpu_vs_native))
        {
            let _ = write!(
                line,
                "; pgmirror took {:.2}x ({:.2}-{:.2}) its walsender's CPU time, which alone was \
                 {floor:.2} of native's time",
                vs.median, vs.min, vs.max
            );
        }
        let _ = writeln!(s, "{line}");
        for note in &w.notes {
            let _ = writeln!(s, "  {}: {note}", w.workload);
        }
    }
    let _ = writeln!(
        s,
        "pgm CPU: the pgmirror process; target CPU: the target's processes that applied the \
         changes (the subscriber's apply worker, or pgmirror's target sessions)"
    );
    for l in &report.latency {
        let _ = write!(
            s,
            "live latency {}: median {:.1} ms (min {:.1}, max {:.1}) over {} samples",
            l.contender, l.ms.median, l.ms.min, l.ms.max, l.samples
        );
        let cpu: Vec<String> = [
            ("walsender", l.cpu_us.walsender),
            (l.contender.as_str(), l.cpu_us.consumer),
            ("target", l.cpu_us.target),
        ]
        .iter()
        .filter_map(|(who, us)| us.map(|us| format!("{who} {us:.0} µs")))
        .collect();
        if cpu.is_empty() {
            let _ = writeln!(s);
        } else {
            let _ = writeln!(s, "; CPU per sample: {}", cpu.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert!(Stat::of([]).is_none());
        let s = Stat::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    fn ok(run: u32, seconds: f64) -> RunResult {
        RunResult {
            run,
            seconds: Some(seconds),
            walsender_cpu_s: Some(1.0),
            pgmirror_cpu_s: None,
            target_cpu_s: None,
            peak_rss_mb: None,
            verified: true,
            error: None,
        }
    }

    fn settings(role: &str, on: &str, preload: &str) -> ClusterSettings {
        ClusterSettings {
            role: role.into(),
            fsync: on.into(),
            synchronous_commit: on.into(),
            shared_preload_libraries: preload.into(),
        }
    }

    fn report(workloads: Vec<WorkloadReport>, durable: bool, notes: Vec<String>) -> BenchReport {
        let (on, preload) = if durable { ("on", "pglogical") } else { ("off", "") };
        BenchReport {
            server_version: "15.8".into(),
            durable,
            clusters: vec![settings("primary", on, preload), settings("replica", on, preload)],
            notes,
            scale: 1.0,
            runs: 2,
            workloads,
            latency: vec![],
        }
    }

    fn workload(
        name: &str,
        contenders: Vec<ContenderReport>,
        notes: Vec<String>,
    ) -> WorkloadReport {
        WorkloadReport {
            workload: name.into(),
            transactions: 100,
            rows: 1000,
            wal_bytes: 1 << 20,
            generate_s: 1.0,
            contenders,
            decode: None,
            notes,
        }
    }

    /// The table row of `contender`, split into its columns.
    fn row<'a>(text: &'a str, contender: &'a str) -> Vec<&'a str> {
        rows(text, contender).next().unwrap_or_else(|| panic!("no {contender} row in\n{text}"))
    }

    /// Table rows (not the summary lines, whose first word ends with ':') of `contender`.
    fn rows<'a>(text: &'a str, contender: &'a str) -> impl Iterator<Item = Vec<&'a str>> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(move |w| w.len() > 1 && !w[0].ends_with(':') && w[1] == contender)
    }

    fn row_missing(text: &str, contender: &str) -> bool {
        rows(text, contender).next().is_none()
    }

    #[test]
    fn pglogical_row_and_own_cpu() {
        let runs = vec![
            (Contender::Native, RunResult::subscriber(1, 4.0, Some(2.0), Some(3.0), true)),
            (Contender::Pgmirror, RunResult { target_cpu_s: Some(0.9), ..ok(1, 2.0) }),
            (Contender::Pglogical, RunResult::subscriber(1, 8.0, Some(2.5), Some(5.5), true)),
        ];
        let s = summarize(&runs, 1000, 100);
        let names: Vec<&str> = s.iter().map(|c| c.contender.as_str()).collect();
        assert_eq!(names, ["native", "pgmirror", "pglogical"]);
        assert_eq!(s[2].ratio_vs_native, Some(2.0));
        assert_eq!(s[2].target_cpu_s.unwrap().median, 5.5);
        let text = render(&report(vec![workload("store4", s, vec![])], true, vec![]));
        // workload, contender, seconds (3 words), rows/s, txns/s, vs nat, walsender (3 words),
        // pgm CPU, target CPU, RSS, ok
        assert_eq!(
            row(&text, "pglogical"),
            [
                "store4",
                "pglogical",
                "8.00",
                "(8.00-8.00)",
                "125",
                "12",
                "2.00",
                "2.50",
                "(2.50-2.50)",
                "-",
                "5.50",
                "-",
                "yes"
            ],
            "{text}"
        );
        assert_eq!(row(&text, "native")[10], "3.00", "{text}");
        assert_eq!(row(&text, "pgmirror")[10], "0.90", "{text}");
        assert!(
            text.contains(
                "clusters (--durable): primary fsync = on, synchronous_commit = on, \
                 shared_preload_libraries = pglogical; replica fsync = on, synchronous_commit = on, \
                 shared_preload_libraries = pglogical; backlogs generated with synchronous_commit = off"
            ),
            "{text}"
        );
        assert!(!text.contains("skipped"), "{text}");
    }

    #[test]
    fn skipped_pglogical_is_one_line() {
        let runs = vec![(Contender::Native, ok(1, 4.0)), (Contender::Pgmirror, ok(1, 1.0))];
        let text = render(&report(
            vec![workload(
                "full-identity",
                summarize(&runs, 1000, 100),
                vec!["pglogical not run: no key".into()],
            )],
            false,
            vec![crate::pglogical::skipped_note("15")],
        ));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "clusters (not durable): primary fsync = off, synchronous_commit = off; \
             replica fsync = off, synchronous_commit = off; backlogs generated with \
             synchronous_commit = off"
        );
        assert_eq!(lines[2], "pglogical: skipped (install postgresql-15-pglogical)");
        assert_eq!(text.lines().filter(|l| l.contains("skipped")).count(), 1, "{text}");
        assert!(row_missing(&text, "pglogical"), "{text}");
        assert!(text.contains("\n  full-identity: pglogical not run: no key\n"), "{text}");
        // The table still has every other contender.
        assert_eq!(row(&text, "native")[2], "4.00");
        assert_eq!(row(&text, "pgmirror")[2], "1.00");
    }

    #[test]
    fn summaries_and_ratio() {
        let runs = vec![
            (Contender::Native, ok(1, 4.0)),
            (Contender::Pgmirror, ok(1, 1.0)),
            (Contender::Native, ok(2, 6.0)),
            (
                Contender::Pgmirror,
                RunResult { error: Some("x".into()), verified: false, ..ok(2, 2.0) },
            ),
        ];
        let s = summarize(&runs, 1000, 100);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].seconds.unwrap().median, 5.0);
        assert_eq!(s[0].rows_per_s, Some(200.0));
        assert_eq!(s[0].txns_per_s, Some(20.0));
        assert!(s[0].verified);
        assert_eq!(s[1].ratio_vs_native, Some(1.5 / 5.0));
        assert!(!s[1].verified);
        // Every run's walsender spent 1 s: native took 4 and 6 s, pgmirror 1 and 2 s.
        assert_eq!(s[0].vs_walsender_cpu.unwrap().median, 5.0);
        assert_eq!(s[1].vs_walsender_cpu.unwrap().median, 1.5);
        assert_eq!(s[1].walsender_cpu_vs_native, Some(1.0 / 5.0));
        let text = render(&report(vec![workload("tiny", s, vec![])], false, vec![]));
        assert!(text.contains("run 2 failed: x"), "{text}");
        assert!(
            text.contains("pgmirror took 1.50x (1.00-2.00) its walsender's CPU time, which alone was 0.20 of native's time"),
            "{text}"
        );
        assert!(text.contains("NO"), "{text}");
    }
}
