//! Typed errors with the server's fields and, for the usual setup mistakes,
//! the fix.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::config::TargetSessionAttrs;
use crate::quote::quote_ident;
use crate::sqlstate::{SqlState, is_connection_exception, is_session_end};

/// Everything that can go wrong connecting to a server and talking to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string is invalid.
    #[error("invalid connection settings: {0}")]
    Config(String),
    /// The TCP or Unix-socket connection could not be opened.
    #[error(
        "could not connect to {target} (is the server running there and accepting \
         connections?)"
    )]
    Connect {
        /// `host:port` or socket path.
        target: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Connecting (TCP, TLS and authentication) took longer than `connect_timeout`.
    #[error("timed out after {timeout:?} connecting to {target}")]
    ConnectTimeout {
        /// `host:port` or socket path.
        target: String,
        /// The configured limit.
        timeout: Duration,
    },
    /// The server does not do TLS but the `sslmode` requires it.
    #[error("server {target} does not support TLS, but sslmode={sslmode} requires it")]
    TlsUnavailable {
        /// `host:port`.
        target: String,
        /// The configured mode.
        sslmode: String,
    },
    /// TLS configuration or handshake failure.
    #[error("TLS: {0}")]
    Tls(String),
    /// Authentication could not be carried out on the client side (unsupported
    /// method, channel binding required but absent).
    #[error("authentication: {0}")]
    Auth(String),
    /// The server asks for a password and neither the connection string,
    /// `PGPASSWORD`, the password file nor a prompt gave one.
    #[error(
        "the server at {target} asks for a password for user \"{user}\" and none was given \
         (not in the connection string, PGPASSWORD or the password file {passfile})"
    )]
    PasswordMissing {
        /// `host:port` or socket path.
        target: String,
        /// The role logging in.
        user: String,
        /// The password file that was consulted (or would be: `~/.pgpass`).
        passfile: String,
    },
    /// The server is not what `target_session_attrs` asks for.
    #[error("server {target} does not suit target_session_attrs={wanted}: {reason}")]
    SessionAttrs {
        /// `host:port` or socket path.
        target: String,
        /// The setting.
        wanted: TargetSessionAttrs,
        /// libpq's words, e.g. `session is read-only`.
        reason: &'static str,
    },
    /// Several hosts were given and none gave a suitable connection: each host with
    /// why, in the order tried.
    #[error("no host gave a suitable connection: {}", list_failures(.0))]
    AllHostsFailed(Vec<(String, Error)>),
    /// An ErrorResponse from the server.
    #[error("{0}")]
    Db(Box<DbError>),
    /// The server sent something this client does not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The requested feature needs a newer server or another option.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Reading from or writing to the server failed.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// The connection was closed (by the server, or this stream was shut down).
    #[error("connection closed: {0}")]
    Closed(String),
    /// An error from tokio-postgres that is not a server error (see [`crate::connect_sql`]).
    #[error("SQL connection")]
    Sql(#[source] tokio_postgres::Error),
}

impl Error {
    /// The failure that decides what this error is: the last host's for
    /// [`Error::AllHostsFailed`], else the error itself.
    fn decisive(&self) -> &Error {
        match self {
            Error::AllHostsFailed(all) => all.last().map_or(self, |(_, e)| e.decisive()),
            other => other,
        }
    }

    /// The server's error, if this is one.
    pub fn db_error(&self) -> Option<&DbError> {
        match self.decisive() {
            Error::Db(db) => Some(db),
            _ => None,
        }
    }

    /// The SQLSTATE code of a server error.
    pub fn code(&self) -> Option<&SqlState> {
        self.db_error().map(|d| &d.code)
    }

    /// Wrong password, no `pg_hba.conf` entry, or a client-side
    /// authentication problem.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.decisive(), Error::Auth(_) | Error::PasswordMissing { .. })
            || matches!(
                self.code(),
                Some(&(SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION))
            )
    }

    /// The server wants a password that nothing gave.
    pub fn is_password_missing(&self) -> bool {
        matches!(self.decisive(), Error::PasswordMissing { .. })
    }

    /// The connection is gone (closed, reset, or I/O failed); reconnecting may help.
    /// A server that does not suit `target_session_attrs` counts too: after a
    /// failover it may.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Closed(_) | Error::Io(_) | Error::Connect { .. } => true,
            Error::SessionAttrs { .. } => true,
            Error::AllHostsFailed(all) => all.iter().all(|(_, e)| e.is_connection_lost()),
            Error::Sql(e) => e.is_closed(),
            Error::Db(d) => is_session_end(&d.code) || is_connection_exception(&d.code),
            _ => false,
        }
    }

    /// For the usual setup mistakes, one line that says how to fix it: from the
    /// SQLSTATE of a server error, or from the kind of a client-side failure.
    pub fn fix(&self) -> Option<String> {
        match self.decisive() {
            Error::Db(db) => db.fix(),
            Error::Connect { .. } => Some(
                "start the server, or connect where it listens (host and port; the server's \
                 listen_addresses, port and unix_socket_directories say where)"
                    .to_owned(),
            ),
            Error::PasswordMissing { passfile, .. } => Some(password_fix(passfile)),
            Error::TlsUnavailable { .. } => Some(
                "turn on ssl on the server (ssl = on with a certificate), or connect with \
                 sslmode=prefer"
                    .to_owned(),
            ),
            Error::SessionAttrs { wanted, .. } => Some(format!(
                "list a server that suits target_session_attrs={wanted} among the hosts, or \
                 change target_session_attrs"
            )),
            _ => None,
        }
    }
}

/// How to give a password: the variable or the password file.
fn password_fix(passfile: &str) -> String {
    format!(
        "set PGPASSWORD, or add a line HOST:PORT:DATABASE:USER:PASSWORD to the password file \
         ({passfile}, mode 0600; PGPASSFILE names another)"
    )
}

/// `target: error: cause; target: error` for [`Error::AllHostsFailed`].
fn list_failures(all: &[(String, Error)]) -> String {
    let one = |(target, e): &(String, Error)| {
        let mut text = format!("{target}: {e}");
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    };
    all.iter().map(one).collect::<Vec<_>>().join("; ")
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Error::Db(Box::new(DbError::from_tokio_postgres(db))),
            None => Error::Sql(e),
        }
    }
}

/// The fields of a server ErrorResponse (or NoticeResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC` (localized form may differ).
    pub severity: String,
    /// SQLSTATE, e.g. [`SqlState::UNDEFINED_OBJECT`] (`42704`).
    pub code: SqlState,
    /// The primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint from the server.
    pub hint: Option<String>,
    /// Optional context (`CONTEXT:` line).
    pub context: Option<String>,
    /// The role this connection logs in as, to make fix hints concrete.
    pub user: Option<String>,
    /// The database this connection asked for, to make fix hints concrete.
    pub database: Option<String>,
}

impl Default for DbError {
    /// No fields: an empty severity, code and message.
    fn default() -> Self {
        DbError {
            severity: String::new(),
            code: SqlState::from_code(""),
            message: String::new(),
            detail: None,
            hint: None,
            context: None,
            user: None,
            database: None,
        }
    }
}

impl DbError {
    /// The error from the fields of an ErrorResponse as the protocol sends them: (field
    /// type byte, value), e.g. `(b'C', "42704")`.
    pub fn from_fields<'a>(fields: impl Iterator<Item = (u8, &'a str)>) -> DbError {
        let mut e = DbError::default();
        let mut localized = String::new();
        for (kind, value) in fields {
            match kind {
                // 'V' is the non-localized severity (PG 9.6+), prefer it.
                b'V' => e.severity = value.to_owned(),
                b'S' => localized = value.to_owned(),
                b'C' => e.code = SqlState::from_code(value),
                b'M' => e.message = value.to_owned(),
                b'D' => e.detail = Some(value.to_owned()),
                b'H' => e.hint = Some(value.to_owned()),
                b'W' => e.context = Some(value.to_owned()),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized;
        }
        e
    }

    pub(crate) fn from_tokio_postgres(db: &tokio_postgres::error::DbError) -> DbError {
        DbError {
            severity: db
                .parsed_severity()
                .map_or_else(|| db.severity().to_owned(), |s| s.to_string()),
            code: db.code().clone(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
            context: db.where_().map(str::to_owned),
            user: None,
            database: None,
        }
    }

    /// For the common setup mistakes, one line that says how to fix it.
    pub fn fix(&self) -> Option<String> {
        let user = self.user.as_deref().unwrap_or("<user>");
        let msg = self.message.as_str();
        // Within one SQLSTATE the message tells the cases apart: PostgreSQL has no finer code.
        match self.code {
            SqlState::INVALID_PASSWORD => {
                Some("check the password (connection string, PGPASSWORD or ~/.pgpass)".to_owned())
            }
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                if msg.starts_with("no pg_hba.conf entry") =>
            {
                Some(pg_hba_fix(msg))
            }
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                if msg.contains("pg_hba.conf rejects") =>
            {
                Some(
                    "a \"reject\" line in pg_hba.conf matches this connection: remove it or put a \
                 line that accepts it above it, then SELECT pg_reload_conf();"
                        .to_owned(),
                )
            }
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                if msg.starts_with("role ") && msg.ends_with("does not exist") =>
            {
                Some(format!(
                    "check the user name, or create the role: CREATE ROLE {} LOGIN PASSWORD '...';",
                    quote_ident(user)
                ))
            }
            SqlState::INVALID_CATALOG_NAME => {
                let db = self.database.as_deref().unwrap_or("<database>");
                Some(format!(
                    "check the database name (psql -l lists the databases), or create it: \
                     CREATE DATABASE {};",
                    quote_ident(db)
                ))
            }
            SqlState::INSUFFICIENT_PRIVILEGE
                if msg.starts_with("permission denied for database") =>
            {
                let db = self.database.as_deref().unwrap_or("<database>");
                Some(format!(
                    "GRANT CONNECT ON DATABASE {} TO {};",
                    quote_ident(db),
                    quote_ident(user)
                ))
            }
            SqlState::CANNOT_CONNECT_NOW => Some(
                "wait until the server accepts connections (it is starting up, shutting down or \
                 in recovery)"
                    .to_owned(),
            ),
            SqlState::TOO_MANY_CONNECTIONS => Some(
                "all connection slots are taken: raise max_connections (needs a restart) or end \
                 idle sessions (see pg_stat_activity)"
                    .to_owned(),
            ),
            SqlState::INSUFFICIENT_PRIVILEGE
                if msg.contains("replication") || msg.contains("WAL sender") =>
            {
                Some(format!(
                    "grant the role replication rights: ALTER ROLE {} WITH REPLICATION;",
                    quote_ident(user)
                ))
            }
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE if msg.contains("wal_level") => {
                Some("run ALTER SYSTEM SET wal_level = logical; then restart the server".to_owned())
            }
            SqlState::UNDEFINED_OBJECT if msg.contains("replication slot") => Some(
                "create the slot first (CREATE_REPLICATION_SLOT or \
                 pg_create_logical_replication_slot) or check its name"
                    .to_owned(),
            ),
            SqlState::UNDEFINED_OBJECT if msg.contains("publication") => Some(
                "create it on the source (CREATE PUBLICATION ... FOR TABLE ... / FOR ALL TABLES) \
                 or check the name"
                    .to_owned(),
            ),
            SqlState::OBJECT_IN_USE => Some(
                "another consumer is streaming from this slot; stop it or end it with \
                 SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE \
                 slot_name = '...'"
                    .to_owned(),
            ),
            SqlState::CONFIGURATION_LIMIT_EXCEEDED if msg.contains("replication slots") => Some(
                "raise max_replication_slots (needs a restart) or drop unused slots with \
                 SELECT pg_drop_replication_slot(slot_name)"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code.code(), self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        if let Some(fix) = self.fix() {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Builds the `pg_hba.conf` line to add from the server's message
/// `no pg_hba.conf entry for host "H", user "U", database "D", ...`.
fn pg_hba_fix(msg: &str) -> String {
    let field = |name: &str| -> Option<&str> {
        let start = msg.find(&format!("{name} \""))? + name.len() + 2;
        let len = msg[start..].find('"')?;
        Some(&msg[start..start + len])
    };
    let host = field("host").unwrap_or("<client address>");
    let user = field("user").unwrap_or("<user>");
    // Logical replication connections match on the database name, not the
    // `replication` keyword (which is for physical replication).
    let database = field("database").unwrap_or("replication");
    let line = if host == "[local]" {
        format!("local {database} {user} scram-sha-256")
    } else {
        let mask = if host.contains(':') { "128" } else { "32" };
        format!("host {database} {user} {host}/{mask} scram-sha-256")
    };
    format!(
        "add the line \"{line}\" to pg_hba.conf and reload the server (SELECT pg_reload_conf())"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: SqlState, message: &str) -> Error {
        Error::Db(Box::new(DbError {
            severity: "ERROR".into(),
            code,
            message: message.into(),
            user: Some("rep".into()),
            ..DbError::default()
        }))
    }

    #[test]
    fn fixes_and_predicates() {
        let e = db(SqlState::INVALID_PASSWORD, "password authentication failed for user \"rep\"");
        assert!(e.is_auth_failure());
        assert!(e.to_string().contains("check the password"));

        let e = db(
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "no pg_hba.conf entry for host \"10.1.2.3\", user \"rep\", database \"app\", no \
             encryption",
        );
        assert!(e.is_auth_failure());
        assert!(e.to_string().contains("\"host app rep 10.1.2.3/32 scram-sha-256\""), "{e}");
        let e = db(
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "no pg_hba.conf entry for host \"[local]\", user \"rep\", database \"app\"",
        );
        assert!(e.to_string().contains("\"local app rep scram-sha-256\""), "{e}");

        let e = db(
            SqlState::INSUFFICIENT_PRIVILEGE,
            "must be superuser or replication role to start walsender",
        );
        assert!(e.to_string().contains("ALTER ROLE \"rep\" WITH REPLICATION"), "{e}");

        let e = db(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "logical decoding requires wal_level >= logical",
        );
        assert!(e.to_string().contains("ALTER SYSTEM SET wal_level = logical"));

        let e = db(SqlState::UNDEFINED_OBJECT, "replication slot \"s\" does not exist");
        assert!(e.to_string().contains("create the slot first"), "{e}");
        let e = db(SqlState::UNDEFINED_OBJECT, "publication \"p\" does not exist");
        assert!(e.to_string().contains("CREATE PUBLICATION"));

        let e = db(SqlState::OBJECT_IN_USE, "replication slot \"s\" is active for PID 42");
        assert!(e.to_string().contains("pg_terminate_backend"));

        let e = db(SqlState::CONFIGURATION_LIMIT_EXCEEDED, "all replication slots are in use");
        assert!(e.to_string().contains("max_replication_slots"));
        assert_eq!(e.code(), Some(&SqlState::CONFIGURATION_LIMIT_EXCEEDED));

        // The fix comes from the SQLSTATE: a missing database is not a pg_hba.conf problem.
        let e = Error::Db(Box::new(DbError {
            severity: "FATAL".into(),
            code: SqlState::INVALID_CATALOG_NAME,
            message: "database \"nosuchdb\" does not exist".into(),
            database: Some("nosuchdb".into()),
            ..DbError::default()
        }));
        let fix = e.fix().unwrap();
        assert!(fix.contains("psql -l") && fix.contains("CREATE DATABASE \"nosuchdb\""), "{fix}");
        assert!(!e.to_string().contains("pg_hba"), "{e}");
        let e = db(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "role \"rep\" does not exist");
        assert!(e.fix().unwrap().contains("CREATE ROLE \"rep\""), "{e}");
        assert!(!e.to_string().contains("pg_hba"), "{e}");
        let e = db(
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "pg_hba.conf rejects connection for host \"[local]\", user \"rep\"",
        );
        assert!(e.fix().unwrap().contains("\"reject\" line"), "{e}");
        let e = db(SqlState::CANNOT_CONNECT_NOW, "the database system is starting up");
        assert!(e.fix().unwrap().contains("wait"), "{e}");

        // Lost connections, by class 08 or a session the server ended, are worth a retry.
        assert!(db(SqlState::CONNECTION_FAILURE, "connection failure").is_connection_lost());
        assert!(db(SqlState::ADMIN_SHUTDOWN, "terminating connection").is_connection_lost());
        assert!(!db(SqlState::QUERY_CANCELED, "canceling statement").is_connection_lost());

        let e = db(SqlState::INTERNAL_ERROR, "other");
        assert_eq!(e.db_error().unwrap().fix(), None);
        assert_eq!(e.to_string(), "ERROR XX000: other");
    }

    #[test]
    fn client_side_fixes_and_several_hosts() {
        let refused = || Error::Connect {
            target: "/var/run/postgresql/.s.PGSQL.5432".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let fix = refused().fix().unwrap();
        assert!(fix.contains("start the server"), "{fix}");
        assert!(!fix.contains("pg_hba"), "{fix}");
        let missing = Error::PasswordMissing {
            target: "h:5432".into(),
            user: "rep".into(),
            passfile: "/home/rep/.pgpass".into(),
        };
        assert!(missing.is_password_missing() && missing.is_auth_failure());
        let text = missing.to_string();
        assert!(text.contains("PGPASSWORD") && text.contains("/home/rep/.pgpass"), "{text}");
        assert!(missing.fix().unwrap().contains("PGPASSFILE"));

        let all = Error::AllHostsFailed(vec![
            ("a:1".into(), refused()),
            (
                "b:2".into(),
                Error::SessionAttrs {
                    target: "b:2".into(),
                    wanted: TargetSessionAttrs::ReadWrite,
                    reason: "session is read-only",
                },
            ),
        ]);
        let text = all.to_string();
        assert!(text.contains("a:1: could not connect"), "{text}");
        assert!(text.contains("entity not found"), "the cause is listed: {text}");
        assert!(text.contains("b:2: server b:2 does not suit target_session_attrs=read-write"));
        assert!(all.is_connection_lost());
        assert!(all.fix().unwrap().contains("target_session_attrs=read-write"));
        let all = Error::AllHostsFailed(vec![("a:1".into(), refused()), ("b:2".into(), missing)]);
        assert!(all.is_password_missing() && !all.is_connection_lost());
    }

    #[test]
    fn parses_fields() {
        let fields = [
            (b'S', "FEHLER"),
            (b'V', "ERROR"),
            (b'C', "42P01"),
            (b'M', "m"),
            (b'D', "d"),
            (b'H', "h"),
            (b'W', "w"),
        ];
        let e = DbError::from_fields(fields.into_iter());
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, SqlState::UNDEFINED_TABLE);
        assert_eq!(e.detail.as_deref(), Some("d"));
        assert_eq!(e.hint.as_deref(), Some("h"));
        assert_eq!(e.context.as_deref(), Some("w"));
        assert_eq!(e.to_string(), "ERROR 42P01: m; detail: d; hint: h");
    }
}
