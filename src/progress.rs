//! Progress of the initial copy: bars on a terminal, log lines otherwise.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tablesync::{CopyEvent, TableDef};

/// Shows per-table copy progress (rows, bytes, rate).
#[derive(Debug)]
pub struct CopyProgress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    logged: Mutex<HashMap<String, u64>>,
}

/// Log a line per table at most every this many bytes when there is no terminal.
const LOG_EVERY_BYTES: u64 = 64 << 20;

impl CopyProgress {
    /// Bars for `tables` when `bars` is set (the output is a terminal), else log lines.
    pub fn new(tables: &[TableDef], bars: bool) -> Self {
        let bars = bars.then(|| {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template(
                "{prefix:>28} {bar:30} {human_pos:>10} rows {msg} {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let map = tables
                .iter()
                .map(|t| {
                    let total = t.estimated_rows.unwrap_or(0).max(1);
                    let bar = multi.add(ProgressBar::new(total));
                    bar.set_style(style.clone());
                    bar.set_prefix(t.qualified_name().to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (t.qualified_name().to_string(), bar)
                })
                .collect();
            (multi, map)
        });
        CopyProgress { bars, logged: Mutex::new(HashMap::new()) }
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
                        bar.finish_with_message(format!(
                            "{:.1} MB, {:.0} rows/s",
                            mb(report.bytes),
                            report.rows as f64 / secs
                        ));
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
pub struct CatchUp {
    start: Option<u64>,
    /// The primary's WAL flush position when streaming started.
    target: u64,
    bar: Option<ProgressBar>,
    done: bool,
}

impl CatchUp {
    /// Starts tracking a backlog that ends at `target`; shows a bar when stderr is a terminal.
    pub fn new(target: pgoutput_decoder::Lsn) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "catching up {bar:30} {binary_bytes}/{binary_total_bytes} of WAL \
                     {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        CatchUp { start: None, target: target.0, bar, done: false }
    }

    /// Records positions: `received` WAL from the primary, `confirmed` applied and durable.
    pub fn update(&mut self, received: pgoutput_decoder::Lsn, confirmed: pgoutput_decoder::Lsn) {
        if self.done || received.0 == 0 {
            return;
        }
        let start = *self.start.get_or_insert(confirmed.0.min(received.0));
        if let Some(bar) = &self.bar {
            bar.set_length(received.0.max(self.target).saturating_sub(start));
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
        if at.0 < self.target {
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
    use pgoutput_decoder::Lsn;

    /// A quiet stream is not caught up before the position the primary had at the start (a
    /// walsender decoding a large transaction sends nothing for seconds).
    #[test]
    fn caught_up_only_at_the_backlog_end() {
        let mut c = CatchUp::new(Lsn(0x5000));
        c.update(Lsn(0x1000), Lsn(0x1000));
        assert!(!c.caught_up(Lsn(0x1000)));
        assert!(!c.caught_up(Lsn(0x4fff)));
        assert!(c.caught_up(Lsn(0x5000)));
        assert!(c.caught_up(Lsn(0x1000)), "stays caught up");
        assert!(CatchUp::new(Lsn::ZERO).caught_up(Lsn::ZERO));
    }
}
