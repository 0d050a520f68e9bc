//! The errors of the replication connection: those of connecting and talking to the server
//! ([`pgconn::Error`]), and replication data that cannot be decoded.

use std::io;

use pgconn::{DbError, SqlState};
use pgoutput_decoder::DecodeError;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, authenticating or talking to the server failed, or the server answered
    /// with an error.
    #[error(transparent)]
    Conn(#[from] pgconn::Error),
    /// A replication payload could not be decoded.
    #[error("could not decode replication data")]
    Decode(#[from] DecodeError),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Conn(pgconn::Error::Io(e))
    }
}

impl Error {
    /// The connection's error, unless replication data could not be decoded.
    pub fn connection(&self) -> Option<&pgconn::Error> {
        match self {
            Error::Conn(e) => Some(e),
            Error::Decode(_) => None,
        }
    }

    /// The server's error, if this is one.
    pub fn db_error(&self) -> Option<&DbError> {
        self.connection().and_then(pgconn::Error::db_error)
    }

    /// The SQLSTATE code of a server error.
    pub fn code(&self) -> Option<&SqlState> {
        self.db_error().map(|d| &d.code)
    }

    /// See [`pgconn::Error::is_auth_failure`].
    pub fn is_auth_failure(&self) -> bool {
        self.connection().is_some_and(pgconn::Error::is_auth_failure)
    }

    /// See [`pgconn::Error::is_password_missing`].
    pub fn is_password_missing(&self) -> bool {
        self.connection().is_some_and(pgconn::Error::is_password_missing)
    }

    /// See [`pgconn::Error::is_connection_lost`].
    pub fn is_connection_lost(&self) -> bool {
        self.connection().is_some_and(pgconn::Error::is_connection_lost)
    }

    /// See [`pgconn::Error::fix`].
    pub fn fix(&self) -> Option<String> {
        self.connection().and_then(pgconn::Error::fix)
    }

    /// The replication slot does not exist.
    pub fn is_slot_missing(&self) -> bool {
        self.is_undefined("replication slot")
    }

    /// The replication slot is in use by another connection.
    pub fn is_slot_active(&self) -> bool {
        self.code() == Some(&SqlState::OBJECT_IN_USE)
    }

    /// A publication named in START_REPLICATION does not exist.
    pub fn is_publication_missing(&self) -> bool {
        self.is_undefined("publication")
    }

    /// An undefined object of this kind. A missing slot and a missing publication share
    /// their SQLSTATE; only the message names which it is.
    fn is_undefined(&self, kind: &str) -> bool {
        self.db_error()
            .is_some_and(|d| d.code == SqlState::UNDEFINED_OBJECT && d.message.contains(kind))
    }
}

/// `err` as a connection error, from an SQL connection ([`pgconn::Error`]) or a replication
/// connection ([`Error`]) alike; `None` for other errors (its causes are not looked at: walk
/// them with `source()` or `anyhow::Error::chain`).
pub fn connection_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a pgconn::Error> {
    err.downcast_ref::<pgconn::Error>()
        .or_else(|| err.downcast_ref::<Error>().and_then(Error::connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: SqlState, message: &str) -> Error {
        let mut e = DbError::default();
        e.severity = "ERROR".into();
        e.code = code;
        e.message = message.into();
        Error::Conn(pgconn::Error::Db(Box::new(e)))
    }

    #[test]
    fn slot_and_publication_predicates() {
        let e = db(SqlState::UNDEFINED_OBJECT, "replication slot \"s\" does not exist");
        assert!(e.is_slot_missing() && !e.is_publication_missing());
        assert!(e.fix().unwrap().contains("create the slot first"), "{e}");
        let e = db(SqlState::UNDEFINED_OBJECT, "publication \"p\" does not exist");
        assert!(e.is_publication_missing() && !e.is_slot_missing());
        let e = db(SqlState::OBJECT_IN_USE, "replication slot \"s\" is active for PID 42");
        assert!(e.is_slot_active() && !e.is_slot_missing());
        assert_eq!(e.code(), Some(&SqlState::OBJECT_IN_USE));
        assert_eq!(e.to_string(), format!("{}", e.connection().unwrap()), "transparent");
    }

    #[test]
    fn connection_error_is_found_in_either_kind() {
        let sql = pgconn::Error::Closed("gone".into());
        assert!(connection_error(&sql).is_some_and(pgconn::Error::is_connection_lost));
        let repl = Error::Conn(pgconn::Error::Closed("gone".into()));
        assert!(connection_error(&repl).is_some_and(pgconn::Error::is_connection_lost));
        let empty = pgoutput_decoder::Decoder::new(1).decode(bytes::Bytes::new()).unwrap_err();
        let decode = Error::Decode(empty);
        assert!(connection_error(&decode).is_none());
        let io = std::io::Error::other("not a connection error");
        assert!(connection_error(&io).is_none());
        assert!(!decode.is_connection_lost());
    }
}
