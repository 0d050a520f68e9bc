//! What every server of this crate does once set up: start again, stop, crash, show its log.

use std::path::Path;

use serverproc::{LogGuard, ServerProcess};

use crate::Error;

/// A started test server ([`MariaDb`](crate::MariaDb), [`NatsServer`](crate::NatsServer)):
/// stopped, crashed and started again on the same ports and files, so that tests can take
/// it away mid-stream. Bring the trait into scope to call its methods
/// (`use testservers::Server;`).
pub trait Server {
    /// The server process: its pid, signals and log.
    fn process(&self) -> &ServerProcess;

    /// Starts the server again, on the same ports and files, and waits until it is ready
    /// (after recovery, following [`kill9`](Self::kill9)).
    ///
    /// # Errors
    /// Already running, or the server exited or did not become ready in time (the error
    /// holds its log's tail).
    fn start(&self) -> Result<(), Error>;

    /// Shuts the server down cleanly (SIGTERM) and waits for it; kills it if it takes too
    /// long. Does nothing if it is not running.
    ///
    /// # Errors
    /// Waiting for the process failed.
    fn stop(&self) -> Result<(), Error>;

    /// [`stop`](Self::stop) then [`start`](Self::start).
    ///
    /// # Errors
    /// As those two.
    fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }

    /// Simulates a crash: SIGKILL, no shutdown, and waits until the process is gone. Does
    /// nothing if it is not running.
    ///
    /// # Errors
    /// Waiting for the process failed.
    fn kill9(&self) -> Result<(), Error> {
        Ok(self.process().kill9()?)
    }

    /// The server's pid, when running.
    fn pid(&self) -> Option<u32> {
        self.process().pid()
    }

    /// Whether the server is running.
    fn is_running(&self) -> bool {
        self.process().is_running()
    }

    /// The server log (all starts).
    ///
    /// # Errors
    /// Reading it failed.
    fn log_contents(&self) -> Result<String, Error> {
        Ok(self.process().log_contents()?)
    }

    /// The last `lines` lines of the server log.
    fn log_tail(&self, lines: usize) -> String {
        self.process().log_tail(lines)
    }

    /// The server log file.
    fn log_path(&self) -> &Path {
        self.process().log_path()
    }

    /// A guard that prints the tail of the server log to stderr if the current thread is
    /// panicking when it is dropped. Hold it for the length of a test.
    fn log_guard(&self) -> LogGuard<'_> {
        self.process().log_guard()
    }
}
