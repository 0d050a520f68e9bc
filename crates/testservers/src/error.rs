//! Errors returned by this crate.

use std::path::PathBuf;

/// Everything that can go wrong while starting, stopping or using a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server program is not installed.
    #[error(
        "`{program}` not found (looked in PATH, /usr/sbin, /usr/local/sbin, /sbin, /usr/bin, \
         /usr/local/bin); install {package} (apt-get install {package})"
    )]
    NotInstalled {
        /// The missing program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },

    /// We run as root but the OS user the server must run as does not exist.
    #[error(
        "running as root, but there is no `{user}` OS user to run {program} as; install \
         {package} (apt-get install {package}), which creates it"
    )]
    NoServiceUser {
        /// The missing user.
        user: &'static str,
        /// The server program.
        program: &'static str,
        /// The Debian package that creates the user.
        package: &'static str,
    },

    /// A caller-supplied setting cannot be written safely to a configuration file.
    #[error("invalid setting {name:?}: {reason}")]
    InvalidSetting {
        /// The setting name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A path cannot be written into a configuration file.
    #[error(
        "path {0} holds a quote, a backslash or a line break and cannot go into a server's \
         configuration file; set TMPDIR to a plain directory"
    )]
    UnsafePath(PathBuf),

    /// Preparing, starting or stopping the server process failed.
    #[error(transparent)]
    Process(#[from] serverproc::Error),

    /// A MariaDB connection or statement failed.
    #[error("mariadb: {0}")]
    MariaDb(#[from] sqlx::Error),

    /// Connecting to a NATS server failed.
    #[error("nats: {0}")]
    NatsConnect(#[from] async_nats::ConnectError),
}
