//! CPU time and peak memory of a process, from `/proc` (Linux).
//!
//! Read while the process still runs: once it has exited (and been reaped) its `/proc` entry
//! is gone, which is why the samplers keep the last value they read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Time `pid` has spent on a CPU in nanoseconds (`/proc/<pid>/schedstat`), `None` if it is
/// gone or the kernel keeps no such account: finer than [`cpu_ticks`], for phases as short as
/// a few milliseconds of CPU.
pub fn cpu_nanos(pid: u32) -> Option<u64> {
    parse_schedstat(&std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?)
}

fn parse_schedstat(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The CPU time a fixed set of processes spends from [`CpuSpan::start`] on.
#[derive(Debug)]
pub struct CpuSpan(Vec<(u32, u64)>);

impl CpuSpan {
    /// Reads the processes' CPU time now; those that cannot be read are left out.
    pub fn start(pids: &[u32]) -> Self {
        CpuSpan(pids.iter().filter_map(|&p| Some((p, cpu_nanos(p)?))).collect())
    }

    /// Nanoseconds of CPU since the start, summed over the processes still running; `None`
    /// if none is.
    pub fn nanos(&self) -> Option<u64> {
        let now: Vec<u64> =
            self.0.iter().filter_map(|&(p, t)| Some(cpu_nanos(p)?.saturating_sub(t))).collect();
        (!now.is_empty()).then(|| now.iter().sum())
    }
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

/// The walsender serving a slot, by the slot's name.
pub(crate) const WALSENDER_PID: &str = "SELECT active_pid FROM pg_catalog.pg_replication_slots \
     WHERE slot_name = $1 AND active_pid IS NOT NULL";

/// The server processes connected to a database, by its name, but for the asking session.
pub(crate) const DATABASE_PIDS: &str = "SELECT pid FROM pg_catalog.pg_stat_activity \
     WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()";

/// The pids that `sql` (one of the queries above) returns for `param`.
pub(crate) async fn server_pids(
    client: &Client,
    sql: &str,
    param: &str,
) -> Result<Vec<u32>, tokio_postgres::Error> {
    let rows = client.query(sql, &[&param]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<i32>>(0))
        .filter_map(|p| u32::try_from(p).ok())
        .collect())
}

/// Follows the server processes a query names and keeps, per process, the highest CPU time
/// read from its `/proc` entry, read every few milliseconds so that a process that exits with
/// its client loses at most one interval. The processes' CPU times are summed at the end.
#[derive(Debug)]
struct CpuSampler {
    ticks: Arc<Mutex<HashMap<u32, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How a [`CpuSampler`] looks its processes up.
struct Lookup {
    /// Returns the pids (`int4`) given one text parameter.
    sql: &'static str,
    param: String,
    /// Pids never counted (the benchmark's own sessions).
    exclude: Vec<u32>,
    /// Keep asking after the first pid was found (backends come and go); otherwise the first
    /// answer is kept (a walsender lives as long as its client).
    refresh: bool,
}

impl CpuSampler {
    fn start(client: Client, lookup: Lookup) -> Self {
        let ticks = Arc::new(Mutex::new(HashMap::new()));
        let seen = ticks.clone();
        let task = tokio::spawn(async move {
            let mut pids: Vec<u32> = Vec::new();
            let mut last_lookup: Option<Instant> = None;
            loop {
                // Ask every 10 ms until found, then every 100 ms (or never again).
                let due = match last_lookup {
                    None => true,
                    Some(_) if pids.is_empty() => true,
                    Some(at) => lookup.refresh && at.elapsed() >= Duration::from_millis(100),
                };
                if due {
                    if let Ok(found) = server_pids(&client, lookup.sql, &lookup.param).await {
                        pids = found.into_iter().filter(|p| !lookup.exclude.contains(p)).collect();
                    }
                    last_lookup = Some(Instant::now());
                }
                sample(&seen, &pids);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        CpuSampler { ticks, task }
    }

    /// Takes a last sample, stops, and returns the processes' CPU seconds (`None` if none was
    /// ever seen).
    fn finish(self, ticks_per_second: f64) -> Option<f64> {
        self.task.abort();
        let pids: Vec<u32> = lock(&self.ticks).keys().copied().collect();
        sample(&self.ticks, &pids);
        let ticks = lock(&self.ticks);
        (!ticks.is_empty()).then(|| ticks_as_seconds(ticks.values().sum(), ticks_per_second))
    }
}

fn lock(m: &Mutex<HashMap<u32, u64>>) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sample(seen: &Mutex<HashMap<u32, u64>>, pids: &[u32]) {
    for &pid in pids {
        if let Some(n) = cpu_ticks(pid) {
            let mut map = lock(seen);
            let t = map.entry(pid).or_insert(0);
            *t = (*t).max(n);
        }
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the walsender serving a slot (`pg_replication_slots.active_pid`) and sums its CPU
/// time (several walsenders, if the client reconnected).
#[derive(Debug)]
pub struct WalsenderSampler(CpuSampler);

impl WalsenderSampler {
    /// Starts sampling the walsender of `slot`, looked up through `primary` (a connection of
    /// its own, used only for that).
    pub fn start(primary: Client, slot: String) -> Self {
        WalsenderSampler(CpuSampler::start(
            primary,
            Lookup { sql: WALSENDER_PID, param: slot, exclude: Vec::new(), refresh: false },
        ))
    }

    /// Takes a last sample, stops, and returns the walsender's CPU seconds (`None` if it was
    /// never seen).
    pub fn finish(self, ticks_per_second: f64) -> Option<f64> {
        self.0.finish(ticks_per_second)
    }
}

/// Follows the server processes connected to one database (`pg_stat_activity.datname`):
/// a subscriber's apply worker, or the sessions a client such as pgmirror holds, and sums
/// their CPU time. Processes are looked up every 100 ms, so one that lives shorter than that
/// may be missed.
#[derive(Debug)]
pub struct BackendSampler(CpuSampler);

impl BackendSampler {
    /// Starts sampling the processes of database `db`, looked up through `server` (a
    /// connection of its own to another database of the same server), except `exclude` (the
    /// benchmark's own sessions on `db`).
    pub fn start(server: Client, db: String, exclude: Vec<i32>) -> Self {
        BackendSampler(CpuSampler::start(
            server,
            Lookup {
                sql: DATABASE_PIDS,
                param: db,
                exclude: exclude.into_iter().filter_map(|p| u32::try_from(p).ok()).collect(),
                refresh: true,
            },
        ))
    }

    /// Takes a last sample, stops, and returns the processes' CPU seconds (`None` if none
    /// was ever seen).
    pub fn finish(self, ticks_per_second: f64) -> Option<f64> {
        self.0.finish(ticks_per_second)
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
    fn parses_schedstat() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
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
        // The kernel adds up a running task's time at its ticks and switches: spin until one.
        let span = CpuSpan::start(&[me]);
        let t = Instant::now();
        let mut x = 0_u64;
        while span.nanos() == Some(0) && t.elapsed() < Duration::from_secs(5) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(span.nanos().is_some_and(|ns| ns > 0), "{x}");
        assert!(peak_rss_bytes(me).unwrap() > 0);
        assert!(clock_ticks_per_second() > 0.0);
    }
}
