//! One server process: started with its output appended to a log file, waited for, stopped,
//! crashed.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Error;
use crate::error::IoContext;
use crate::spawn::{children_of, process_exists, send_signal, spawn_tied};

/// A server process and its log. Spawned through [`spawn_tied`], so it dies with this
/// process; killed (SIGKILL) when dropped while still running.
pub struct ServerProcess {
    label: String,
    log_path: PathBuf,
    death_signal: libc::c_int,
    child: Mutex<Option<Child>>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("label", &self.label)
            .field("log_path", &self.log_path)
            .field("pid", &self.pid())
            .finish()
    }
}

impl ServerProcess {
    /// A stopped server. `label` names it in messages (`"postgres (port 5432)"`); its
    /// output goes to `log_path`; the kernel sends it `death_signal` when this process dies.
    pub fn new(label: impl Into<String>, log_path: PathBuf, death_signal: libc::c_int) -> Self {
        ServerProcess { label: label.into(), log_path, death_signal, child: Mutex::new(None) }
    }

    /// Spawns `cmd` (program, arguments, identity) with stdin closed and stdout and stderr
    /// appended to the log, and returns its pid.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`], or opening the log or spawning failed.
    pub fn spawn(&self, mut cmd: Command) -> Result<u32, Error> {
        let mut child = self.lock_child();
        Self::reap(&mut child);
        if child.is_some() {
            return Err(Error::AlreadyRunning);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .ctx(|| format!("open {}", self.log_path.display()))?;
        let log_err = log.try_clone().ctx(|| "dup log file")?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let spawned = spawn_tied(cmd, self.death_signal).ctx(|| format!("spawn {program}"))?;
        let pid = spawned.id();
        *child = Some(spawned);
        Ok(pid)
    }

    /// One readiness check of a spawned server: `Ok(true)` once `ready(pid)` says so,
    /// `Ok(false)` while it is starting (or when none was spawned).
    ///
    /// # Errors
    /// [`Error::ServerExited`] with the log's tail when the server has exited.
    pub fn poll_ready(&self, ready: impl FnOnce(u32) -> bool) -> Result<bool, Error> {
        let mut guard = self.lock_child();
        let Some(child) = guard.as_mut() else { return Ok(false) };
        if let Some(status) = child.try_wait().ctx(|| format!("wait for {}", self.label))? {
            guard.take();
            return Err(Error::ServerExited { status, log_tail: self.log_tail(30) });
        }
        Ok(ready(child.id()))
    }

    /// Polls `ready(pid)` every few milliseconds until it says yes. If the server exits
    /// first or `timeout` passes, the server is killed and the log's tail returned in the
    /// error.
    ///
    /// # Errors
    /// [`Error::ServerExited`] or [`Error::StartTimeout`].
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(u32) -> bool,
    ) -> Result<(), Error> {
        let began = Instant::now();
        while !self.poll_ready(&mut ready)? {
            if began.elapsed() > timeout {
                let log_tail = self.log_tail(30);
                self.kill9()?;
                return Err(Error::StartTimeout { waited: timeout, log_tail });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// [`spawn`](Self::spawn) then [`wait_ready`](Self::wait_ready).
    ///
    /// # Errors
    /// As those two.
    pub fn start(
        &self,
        cmd: Command,
        timeout: Duration,
        ready: impl FnMut(u32) -> bool,
    ) -> Result<(), Error> {
        self.spawn(cmd)?;
        self.wait_ready(timeout, ready)
    }

    /// Sends `signal` and waits up to `patience` for the server to exit; then SIGKILLs it
    /// and its children. Does nothing if it is not running.
    ///
    /// # Errors
    /// Waiting for the process failed.
    pub fn stop(&self, signal: libc::c_int, patience: Duration) -> Result<(), Error> {
        let mut guard = self.lock_child();
        let Some(mut child) = guard.take() else { return Ok(()) };
        let what = || format!("wait for {}", self.label);
        if child.try_wait().ctx(what)?.is_some() {
            return Ok(());
        }
        send_signal(child.id(), signal);
        let deadline = Instant::now() + patience;
        loop {
            if child.try_wait().ctx(what)?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                tracing::warn!(server = %self.label, signal, "server did not stop; killing it");
                drop(guard);
                return self.kill_tree(child);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Simulates a crash: SIGKILL to the server and its children at once (no shutdown, no
    /// cleanup), waiting until all are gone. Does nothing if it is not running.
    ///
    /// # Errors
    /// Waiting for the process failed.
    pub fn kill9(&self) -> Result<(), Error> {
        let child = self.lock_child().take();
        match child {
            Some(child) => self.kill_tree(child),
            None => Ok(()),
        }
    }

    /// Forgets the process without signalling it (it has exited, or is left to run).
    pub fn forget(&self) {
        self.lock_child().take();
    }

    /// The server's pid, when running.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.lock_child();
        Self::reap(&mut child);
        child.as_ref().map(Child::id)
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// The log file (all starts of this server).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log.
    ///
    /// # Errors
    /// Reading the file failed.
    pub fn log_contents(&self) -> Result<String, Error> {
        let bytes = fs::read(&self.log_path).ctx(|| format!("read {}", self.log_path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The last `lines` lines of the log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_contents().unwrap_or_default(), lines)
    }

    /// A guard that prints the tail of the log to stderr if the current thread is panicking
    /// when it is dropped. Hold it for the length of a test.
    pub fn log_guard(&self) -> LogGuard<'_> {
        LogGuard { process: self }
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a server that has exited on its own.
    fn reap(child: &mut Option<Child>) {
        if let Some(c) = child.as_mut()
            && !matches!(c.try_wait(), Ok(None))
        {
            *child = None;
        }
    }

    /// SIGKILLs the server and its children and waits until all are gone, so that a
    /// following start finds no shared memory, lock or port still held.
    fn kill_tree(&self, mut child: Child) -> Result<(), Error> {
        let pid = child.id();
        let children = children_of(pid);
        send_signal(pid, libc::SIGKILL);
        for &c in &children {
            send_signal(c, libc::SIGKILL);
        }
        child.wait().ctx(|| format!("wait for {}", self.label))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|&c| process_exists(c)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Prints the server log's tail to stderr when dropped during a panic. See
/// [`ServerProcess::log_guard`].
#[derive(Debug)]
pub struct LogGuard<'a> {
    process: &'a ServerProcess,
}

impl Drop for LogGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} server log, last 50 lines ----\n{}\n---- end of log ----",
                self.process.label,
                self.process.log_tail(50)
            );
        }
    }
}

/// The last `lines` lines of `contents`.
fn tail(contents: &str, lines: usize) -> String {
    let all: Vec<&str> = contents.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn tail_takes_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn start_stop_and_crash() {
        let dir = tempfile::tempdir().unwrap();
        let ready_file = dir.path().join("ready");
        let server = ServerProcess::new("sh", dir.path().join("log"), libc::SIGKILL);
        let script = format!("echo started; touch {}; exec sleep 30", ready_file.display());
        server.start(sh(&script), Duration::from_secs(10), |_| ready_file.exists()).unwrap();
        assert!(server.is_running());
        assert!(matches!(server.spawn(sh("true")), Err(Error::AlreadyRunning)));
        server.stop(libc::SIGTERM, Duration::from_secs(10)).unwrap();
        assert!(!server.is_running());
        assert_eq!(server.log_contents().unwrap(), "started\n");

        // A server ignoring the stop signal is killed after the patience.
        server.spawn(sh("trap '' TERM; echo again; while :; do sleep 1; done")).unwrap();
        let pid = server.pid().unwrap();
        server.wait_ready(Duration::from_secs(10), |_| server_log_has(&server, "again")).unwrap();
        server.stop(libc::SIGTERM, Duration::from_millis(200)).unwrap();
        assert!(!process_exists(pid));

        server.spawn(sh("exec sleep 30")).unwrap();
        let pid = server.pid().unwrap();
        server.kill9().unwrap();
        assert!(!process_exists(pid));
        server.kill9().unwrap();
    }

    fn server_log_has(server: &ServerProcess, text: &str) -> bool {
        server.log_contents().is_ok_and(|log| log.contains(text))
    }

    #[test]
    fn an_exit_during_startup_reports_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::new("sh", dir.path().join("log"), libc::SIGKILL);
        let err = server
            .start(
                sh("echo 'bind: address already in use'; exit 1"),
                Duration::from_secs(10),
                |_| false,
            )
            .unwrap_err();
        assert!(err.is_port_clash(), "{err}");
        assert!(!server.is_running());

        let err =
            server.start(sh("exec sleep 30"), Duration::from_millis(50), |_| false).unwrap_err();
        assert!(matches!(err, Error::StartTimeout { .. }), "{err}");
        assert!(!err.is_port_clash());
        assert!(!server.is_running(), "a server that timed out is killed");
    }
}
