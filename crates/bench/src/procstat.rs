//! CPU time and peak memory of a process, from `/proc` (Linux).
//!
//! Read while the process still runs: once it has exited (and been reaped) its `/proc` entry
//! is gone, which is why the samplers keep the last value they read.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|t| *t > 0)
        .map_or(100.0, f64::from)
}

/// User plus system CPU time of `pid` in clock ticks, `None` if it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' comes field 3 (state); utime is field 14, i.e. the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) of `pid` in bytes, `None` if it is gone.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 =
        line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Follows the walsender serving a slot (`pg_replication_slots.active_pid`) and keeps the
/// highest CPU time read from its `/proc` entry, sampling every few milliseconds so that a
/// walsender that exits with its client loses at most one interval.
#[derive(Debug)]
pub struct WalsenderSampler {
    ticks: Arc<AtomicU64>,
    pid: Arc<AtomicI32>,
    task: tokio::task::JoinHandle<()>,
}

impl WalsenderSampler {
    /// Starts sampling the walsender of `slot`, looked up through `primary` (a connection of
    /// its own, used only for that).
    pub fn start(primary: Client, slot: String) -> Self {
        let ticks = Arc::new(AtomicU64::new(0));
        let pid = Arc::new(AtomicI32::new(0));
        let (t, p) = (ticks.clone(), pid.clone());
        let task = tokio::spawn(async move {
            loop {
                let current = p.load(Ordering::Relaxed);
                if current == 0 {
                    if let Ok(Some(row)) = primary
                        .query_opt(
                            "SELECT active_pid FROM pg_catalog.pg_replication_slots \
                             WHERE slot_name = $1 AND active_pid IS NOT NULL",
                            &[&slot],
                        )
                        .await
                    {
                        p.store(row.get::<_, i32>(0), Ordering::Relaxed);
                    }
                } else if let Some(n) = u32::try_from(current).ok().and_then(cpu_ticks) {
                    t.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        WalsenderSampler { ticks, pid, task }
    }

    /// Takes a last sample, stops, and returns the walsender's CPU seconds (`None` if it was
    /// never seen).
    pub fn finish(self, ticks_per_second: f64) -> Option<f64> {
        let pid = self.pid.load(Ordering::Relaxed);
        if let Some(n) = u32::try_from(pid).ok().and_then(cpu_ticks) {
            self.ticks.fetch_max(n, Ordering::Relaxed);
        }
        self.task.abort();
        (pid != 0).then(|| ticks_as_seconds(self.ticks.load(Ordering::Relaxed), ticks_per_second))
    }
}

impl Drop for WalsenderSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Converts clock ticks to seconds.
pub fn ticks_as_seconds(ticks: u64, ticks_per_second: f64) -> f64 {
    // Tick counts of a benchmark stay far below 2^52: exact as f64.
    #[allow(clippy::cast_precision_loss)]
    let t = ticks as f64;
    t / ticks_per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "1234 (post gres: (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_vm_hwm() {
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1 kB\n"), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(peak_rss_bytes(me).unwrap() > 0);
        assert!(clock_ticks_per_second() > 0.0);
    }
}
