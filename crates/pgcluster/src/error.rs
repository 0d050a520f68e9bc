//! Errors returned by this crate.

use std::path::PathBuf;

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

    /// Running a program or the server failed (a file-system or process operation, a helper
    /// program such as `initdb`, a start that timed out or a server that exited).
    #[error(transparent)]
    Process(serverproc::Error),

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
        match e {
            serverproc::Error::NoSuchUser { .. } => Error::NoPostgresUser,
            other => Error::Process(other),
        }
    }
}
