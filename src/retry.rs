//! Which failures are worth retrying, and how long to wait between tries.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use pgconn::SqlState;
use pgconn::sqlstate::is_connection_exception;

/// Whether `err` (anywhere in its chain) is a fault that goes away by itself: a lost or refused
/// connection, a server shutting down or starting up, too many connections, a lock or
/// serialization conflict. Everything else (a missing slot, a schema mismatch, a bad password)
/// repeats on every try and must stop the mirror with its message.
pub fn is_transient(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = replication::connection_error(e) {
            if r.is_connection_lost() {
                return true;
            }
            if let Some(code) = r.code() {
                return transient_sqlstate(code);
            }
        }
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            if pg.is_closed() {
                return true;
            }
            if let Some(db) = pg.as_db_error() {
                return transient_sqlstate(db.code());
            }
        }
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            return transient_sqlstate(db.code());
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::NotFound // a Unix socket that is gone while the server is down
            );
        }
        if e.downcast_ref::<tokio::time::error::Elapsed>().is_some() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn transient_sqlstate(code: &SqlState) -> bool {
    is_connection_exception(code)
        || matches!(
            *code,
            SqlState::ADMIN_SHUTDOWN
                | SqlState::CRASH_SHUTDOWN
                | SqlState::CANNOT_CONNECT_NOW
                | SqlState::TOO_MANY_CONNECTIONS
                | SqlState::T_R_SERIALIZATION_FAILURE
                | SqlState::T_R_DEADLOCK_DETECTED
                | SqlState::LOCK_NOT_AVAILABLE
                // statement_timeout on a locked table
                | SqlState::QUERY_CANCELED
                // the target in recovery, briefly
                | SqlState::READ_ONLY_SQL_TRANSACTION
        )
}

/// Capped exponential backoff: 250 ms, 500 ms, 1 s, ... up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial, initial, max }
    }

    /// The delay before the next try; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn io_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(is_transient(&refused));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!is_transient(&denied));
    }

    #[test]
    fn sqlstates_are_classified() {
        assert!(transient_sqlstate(&SqlState::ADMIN_SHUTDOWN));
        assert!(transient_sqlstate(&SqlState::CONNECTION_FAILURE));
        assert!(transient_sqlstate(&SqlState::T_R_SERIALIZATION_FAILURE));
        // A missing slot stays missing, a wrong password stays wrong.
        assert!(!transient_sqlstate(&SqlState::UNDEFINED_OBJECT));
        assert!(!transient_sqlstate(&SqlState::INVALID_PASSWORD));
    }
}
