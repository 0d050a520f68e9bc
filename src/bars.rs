//! Progress bars on stderr, with log lines printed above them: one per table of the initial
//! copy, and one for the backlog applied after (re)connecting. Without a terminal, log lines
//! say the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tablesync::{CopyEvent, TableDef};

/// Shows per-table copy progress (rows, bytes, rate).
#[derive(Debug)]
pub struct CopyBars {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    logged: Mutex<HashMap<String, u64>>,
}

/// Log a line per table at most every this many bytes when there is no terminal.
const LOG_EVERY_BYTES: u64 = 64 << 20;

/// The one set of bars on stderr: every bar joins it, so that log lines can be printed
/// above the bars ([`suspend`]) instead of through them.
fn all_bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Runs `f` (which writes to stderr) with the bars hidden, and draws them again after.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    all_bars().suspend(f)
}

/// A bar style that fits an 80-column terminal: a line longer than the terminal wraps, and
/// a wrapped bar is never erased when it is redrawn. `{wide_bar}` takes what is left.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A table being copied: at most 20 + 1 + 11 + 6 + 10 columns besides the bar.
fn copy_style() -> ProgressStyle {
    style("{prefix:20!} {wide_bar} {human_pos:>11} rows {msg:10!}")
}

/// The backlog being applied.
fn catch_up_style() -> ProgressStyle {
    style("catching up {wide_bar} {binary_bytes:>10}/{binary_total_bytes:10} eta {eta:4}")
}

impl CopyBars {
    /// Bars for `tables` when `bars` is set (the output is a terminal), else log lines.
    pub fn new(tables: &[TableDef], bars: bool) -> Self {
        let bars = bars.then(|| {
            let multi = all_bars().clone();
            let style = copy_style();
            let map = tables
                .iter()
                .map(|t| {
                    let total = t.estimated_rows.unwrap_or(0).max(1);
                    let bar = multi.add(ProgressBar::new(total));
                    bar.set_style(style.clone());
                    bar.set_prefix(crate::display::display_name(t));
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (t.qualified_name().to_string(), bar)
                })
                .collect();
            (multi, map)
        });
        CopyBars { bars, logged: Mutex::new(HashMap::new()) }
    }

    /// Takes one event from `tablesync::copy_tables`.
    pub fn event(&self, event: CopyEvent<'_>) {
        match event {
            CopyEvent::Progress { table, rows, bytes } => {
                let name = table.qualified_name().to_string();
                if let Some((_, bars)) = &self.bars {
                    if let Some(bar) = bars.get(&name) {
                        if rows > bar.length().unwrap_or(0) {
                            bar.set_length(rows);
                        }
                        bar.set_position(rows);
                        bar.set_message(format!("{:.1} MB", mb(bytes)));
                    }
                } else if let Ok(mut logged) = self.logged.lock() {
                    let last = logged.entry(name.clone()).or_insert(0);
                    if bytes >= *last + LOG_EVERY_BYTES {
                        *last = bytes;
                        tracing::info!(table = %name, rows, mb = mb(bytes), "copying");
                    }
                }
            }
            CopyEvent::TableDone(report) => {
                let name = report.table.to_string();
                let secs = report.elapsed.as_secs_f64().max(1e-6);
                if let Some((_, bars)) = &self.bars {
                    if let Some(bar) = bars.get(&name) {
                        bar.set_length(report.rows.max(1));
                        bar.set_position(report.rows);
                        bar.finish_with_message(format!("{:.1} MB", mb(report.bytes)));
                    }
                } else {
                    tracing::info!(
                        table = %name,
                        rows = report.rows,
                        mb = mb(report.bytes),
                        rows_per_s = (report.rows as f64 / secs).round(),
                        "copied"
                    );
                }
            }
            _ => {}
        }
    }

    /// Ends the bars.
    pub fn finish(&self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Catch-up after (re)connecting: a bar of applied bytes against the primary's WAL on a
/// terminal, and one "caught up" log line when the backlog is gone.
///
/// The backlog ends at the primary's flush position when streaming started (IDENTIFY_SYSTEM's
/// `xlogpos`), not where the stream goes quiet: a walsender decoding a large transaction
/// sends nothing for seconds, and that silence is not the end of the backlog.
#[derive(Debug)]
pub struct CatchUpBar {
    start: Option<u64>,
    /// The primary's WAL flush position when streaming started.
    backlog_end: u64,
    bar: Option<ProgressBar>,
    done: bool,
}

impl CatchUpBar {
    /// Starts tracking a backlog that ends at `backlog_end`; shows a bar when stderr is a
    /// terminal.
    pub fn new(backlog_end: pgoutput_decoder::Lsn) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = all_bars().add(ProgressBar::new(0));
            bar.set_style(catch_up_style());
            bar
        });
        CatchUpBar { start: None, backlog_end: backlog_end.0, bar, done: false }
    }

    /// Records positions: `received` WAL from the primary, `confirmed` applied and durable.
    pub fn update(&mut self, received: pgoutput_decoder::Lsn, confirmed: pgoutput_decoder::Lsn) {
        if self.done || received.0 == 0 {
            return;
        }
        let start = *self.start.get_or_insert(confirmed.0.min(received.0));
        if let Some(bar) = &self.bar {
            bar.set_length(received.0.max(self.backlog_end).saturating_sub(start));
            bar.set_position(confirmed.0.saturating_sub(start));
        }
    }

    /// The stream went quiet with nothing pending, and everything up to `at` is applied (or
    /// was skipped by the primary). Logs "caught up" once `at` reaches the backlog's end;
    /// returns whether it has.
    pub fn caught_up(&mut self, at: pgoutput_decoder::Lsn) -> bool {
        if self.done {
            return true;
        }
        if at.0 < self.backlog_end {
            return false;
        }
        self.done = true;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!(lsn = %at, "caught up");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, ProgressDrawTarget};
    use pgoutput_decoder::Lsn;

    /// The rows an 80-column terminal shows after drawing one bar of `style`.
    fn drawn(style: ProgressStyle, prefix: &str, msg: &str) -> Vec<String> {
        let term = InMemoryTerm::new(10, 80);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let bar = ProgressBar::with_draw_target(Some(3_000_000_000), target);
        bar.set_style(style);
        bar.set_prefix(prefix.to_owned());
        bar.set_message(msg.to_owned());
        bar.set_position(1_234_567_890);
        bar.tick();
        term.contents().lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }

    /// A bar wider than the terminal wraps, and indicatif never erases the wrapped part, so
    /// every redraw would leave a stale line behind.
    #[test]
    fn bars_fit_80_columns() {
        let long = "some_schema.a_table_with_a_rather_long_name";
        let rows = drawn(copy_style(), long, "123456.7 MB");
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert!(rows[0].starts_with("some_schema.a_table_"), "{rows:#?}");
        assert!(rows[0].contains("1,234,567,890 rows"), "{rows:#?}");
        assert_eq!(drawn(catch_up_style(), "", "").len(), 1);
    }

    /// A quiet stream is not caught up before the position the primary had at the start (a
    /// walsender decoding a large transaction sends nothing for seconds).
    #[test]
    fn caught_up_only_at_the_backlog_end() {
        let mut c = CatchUpBar::new(Lsn(0x5000));
        c.update(Lsn(0x1000), Lsn(0x1000));
        assert!(!c.caught_up(Lsn(0x1000)));
        assert!(!c.caught_up(Lsn(0x4fff)));
        assert!(c.caught_up(Lsn(0x5000)));
        assert!(c.caught_up(Lsn(0x1000)), "stays caught up");
        assert!(CatchUpBar::new(Lsn::ZERO).caught_up(Lsn::ZERO));
    }
}
