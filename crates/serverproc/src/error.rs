//! Errors returned by this crate.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while preparing, starting or stopping a server process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// We run as root but the OS user the server must run as does not exist.
    #[error(
        "running as root, but there is no `{user}` OS user to run the server as; install the \
         server's package (it creates the user) or run as a non-root user"
    )]
    NoSuchUser {
        /// The missing user.
        user: String,
    },

    /// A file-system or process operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program exited unsuccessfully.
    #[error("`{program}` failed with {status}: {output}")]
    CommandFailed {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its combined stdout and stderr (secrets go via stdin or files, never argv).
        output: String,
    },

    /// The server did not become ready in time.
    #[error("server did not accept connections within {waited:?}; log tail:\n{log_tail}")]
    StartTimeout {
        /// How long we waited.
        waited: Duration,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// The server exited while we waited for it to start.
    #[error("server exited during startup ({status}); log tail:\n{log_tail}")]
    ServerExited {
        /// The server's exit status.
        status: ExitStatus,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// `start` was called while the server is running.
    #[error("the server is already running")]
    AlreadyRunning,
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Whether the server exited because its port was taken (by another process, between
    /// [`free_port`](crate::free_port) and the server's bind): then a retry on a fresh port
    /// will do. Recognises PostgreSQL's, MariaDB's and nats-server's messages.
    pub fn is_port_clash(&self) -> bool {
        matches!(self, Error::ServerExited { log_tail, .. } if log_tail_says_port_clash(log_tail))
    }
}

/// Whether a server log tail reports a failed bind.
pub fn log_tail_says_port_clash(log_tail: &str) -> bool {
    log_tail.contains("could not bind") || log_tail.contains("in use")
}

/// Extension to attach context to `io::Result`s.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] with a lazily built context.
    ///
    /// # Errors
    /// The original error, wrapped.
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, Error> {
        self.map_err(|e| Error::io(f(), e))
    }
}
