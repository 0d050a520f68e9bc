//! Connecting as libpq does with several hosts and `target_session_attrs`: each host in
//! turn until one accepts and suits, a password prompt when a server wants a password
//! nothing gave, and every host's failure in the error when none does.

use std::future::Future;

use crate::config::{ConnConfig, ServerState, TargetSessionAttrs};
use crate::error::Error;

/// Asks a connected server what `target_session_attrs` looks at (works on replication
/// connections too).
pub const SERVER_STATE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery()::text, \
                                    pg_catalog.current_setting('transaction_read_only')";

/// A connection the host loop can vet and give up: an SQL connection (`tokio_postgres::Client`)
/// or a replication connection.
pub trait Session: Sized {
    /// The answer to [`SERVER_STATE_SQL`]: (`pg_is_in_recovery`, `transaction_read_only`).
    fn server_state_row(&mut self) -> impl Future<Output = Result<(String, String), Error>> + Send;

    /// Ends a connection that does not suit.
    fn discard(self) -> impl Future<Output = ()> + Send;
}

/// Connects to the first of `cfg`'s hosts that accepts and suits its `target_session_attrs`
/// (`prefer-standby`: a standby if any host is one, else the first that accepts), with
/// `connect_one` making one connection to one host.
///
/// # Errors
/// The one host's error, or [`Error::AllHostsFailed`] with each host's.
pub async fn connect<T, F, Fut>(cfg: &ConnConfig, connect_one: F) -> Result<T, Error>
where
    T: Session,
    F: Fn(ConnConfig) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let wanted = cfg.target_session_attrs();
    let rounds: &[TargetSessionAttrs] = match wanted {
        TargetSessionAttrs::PreferStandby => {
            &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
        }
        _ => &[wanted],
    };
    let mut failures: Vec<(String, Error)> = Vec::new();
    for &round in rounds {
        for host in cfg.per_host() {
            let target = host.target();
            match attempt(host, round, &connect_one).await {
                Ok(session) => return Ok(session),
                Err(e) => {
                    // A host tried again in a later round reports its last failure only.
                    failures.retain(|(t, _)| *t != target);
                    failures.push((target, e));
                }
            }
        }
    }
    match failures.len() {
        1 => Err(failures.remove(0).1),
        _ => Err(Error::AllHostsFailed(failures)),
    }
}

async fn attempt<T, F, Fut>(
    cfg: ConnConfig,
    round: TargetSessionAttrs,
    connect_one: &F,
) -> Result<T, Error>
where
    T: Session,
    F: Fn(ConnConfig) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut session = match connect_one(cfg.clone()).await {
        // As psql does: ask, then connect again (the server would not wait for a person).
        Err(e) if e.is_password_missing() => match cfg.ask_password().await {
            Some(password) => connect_one(cfg.clone().with_password(Some(password))).await?,
            None => return Err(e),
        },
        other => other?,
    };
    if round == TargetSessionAttrs::Any {
        return Ok(session);
    }
    let state = match session.server_state_row().await {
        Ok((recovery, read_only)) => {
            ServerState { in_recovery: is_true(&recovery), read_only: is_true(&read_only) }
        }
        Err(e) => {
            session.discard().await;
            return Err(e);
        }
    };
    match round.mismatch(state) {
        None => Ok(session),
        Some(reason) => {
            session.discard().await;
            Err(Error::SessionAttrs {
                target: cfg.target(),
                wanted: cfg.target_session_attrs(),
                reason,
            })
        }
    }
}

/// PostgreSQL's text forms of true (`true`, `t`, `on`).
fn is_true(s: &str) -> bool {
    matches!(s, "true" | "t" | "on")
}
