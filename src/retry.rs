//! Which failures are worth retrying, and how long to wait between tries.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

/// Whether `err` (anywhere in its chain) is a fault that goes away by itself: a lost or refused
/// connection, a server shutting down or starting up, too many connections, a lock or
/// serialization conflict. Everything else (a missing slot, a schema mismatch, a bad password)
/// repeats on every try and must stop the mirror with its message.
pub fn is_transient(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<replication::Error>() {
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
                return transient_sqlstate(db.code().code());
            }
        }
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            return transient_sqlstate(db.code().code());
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

fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "53300" // too_many_connections
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "57014" // query_canceled (statement_timeout on a locked table)
                | "25006" // read_only_sql_transaction (target in recovery, briefly)
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
        assert!(transient_sqlstate("57P01"));
        assert!(transient_sqlstate("08006"));
        assert!(!transient_sqlstate("42704")); // undefined_object: a missing slot stays missing
        assert!(!transient_sqlstate("28P01")); // a wrong password stays wrong
    }
}
