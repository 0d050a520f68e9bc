//! Errors returned by this crate.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::AuthMethod;

/// Everything that can go wrong while creating, starting, stopping or using a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server binaries (`postgres`, `initdb`) were found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}); install postgresql-15 \
         (apt-get install postgresql-15) or set PGMIRROR_PG_BINDIR to the directory holding \
         `postgres` and `initdb`"
    )]
    BinariesNotFound {
        /// The places that were searched, for the message.
        searched: String,
    },

    /// We run as root but there is no `postgres` OS user to run the server as.
    #[error(
        "running as root, but there is no `postgres` OS user to run the server as \
         (initdb refuses root); create it (useradd postgres) or run as a non-root user"
    )]
    NoPostgresUser,

    /// A file-system or process operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program (initdb, psql, ...) exited unsuccessfully.
    #[error("`{program}` failed with {status}: {output}")]
    CommandFailed {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its combined stdout and stderr (never contains a password: passwords go via stdin).
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
        /// The postmaster's exit status.
        status: ExitStatus,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// `start()` was called while the server is running.
    #[error("the server is already running")]
    AlreadyRunning,

    /// The authentication method needs a superuser password but none was given.
    #[error("auth method {0:?} needs a superuser password: call ClusterBuilder::password")]
    PasswordRequired(AuthMethod),

    /// A caller-supplied setting name or value cannot be written safely to a config file.
    #[error("invalid setting {name:?}: {reason}")]
    InvalidSetting {
        /// The setting name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// TLS certificate generation failed.
    #[error("generating TLS certificates failed")]
    Tls(#[from] rcgen::Error),

    /// A caller-supplied TLS file does not exist.
    #[error("TLS file not found: {0}")]
    TlsFileMissing(PathBuf),

    /// A SQL command against the cluster failed.
    #[error("postgres error")]
    Postgres(#[from] tokio_postgres::Error),
}

impl From<serverproc::Error> for Error {
    fn from(e: serverproc::Error) -> Self {
        use serverproc::Error as E;
        match e {
            E::NoSuchUser { .. } => Error::NoPostgresUser,
            E::Io { context, source } => Error::Io { context, source },
            E::CommandFailed { program, status, output } => {
                Error::CommandFailed { program, status, output }
            }
            E::StartTimeout { waited, log_tail } => Error::StartTimeout { waited, log_tail },
            E::ServerExited { status, log_tail } => Error::ServerExited { status, log_tail },
            E::AlreadyRunning => Error::AlreadyRunning,
        }
    }
}
