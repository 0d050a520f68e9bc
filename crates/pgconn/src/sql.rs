//! Ordinary (non-replication) connections with the same settings and TLS
//! rules as the replication connection, so the project connects one way.

use tokio_postgres::SimpleQueryMessage;

use crate::config::{ChannelBinding, ConnConfig, Host, SslMode};
use crate::error::{DbError, Error};
use crate::hosts::{self, SERVER_STATE_SQL, Session};
use crate::tls::MakeRustlsConnect;

/// The tokio-postgres configuration and TLS connector for the first host of `cfg`
/// ([`connect_sql`] tries each host with its own).
///
/// # Errors
/// [`Error::Tls`] when the TLS settings are unusable (e.g. a missing root
/// certificate file).
fn sql_config(cfg: &ConnConfig) -> Result<(tokio_postgres::Config, MakeRustlsConnect), Error> {
    let mut pg = tokio_postgres::Config::new();
    match cfg.host() {
        Host::Tcp(h) => pg.host(h),
        Host::Unix(dir) => pg.host_path(dir),
    };
    pg.port(cfg.port())
        .user(cfg.user())
        .dbname(cfg.dbname())
        .application_name(cfg.application_name());
    if let Some(pw) = cfg.effective_password() {
        pg.password(pw);
    }
    if let Some(t) = cfg.connect_timeout() {
        pg.connect_timeout(t);
    }
    if let Some(options) = cfg.options() {
        pg.options(options);
    }
    match cfg.keepalives() {
        None => {
            pg.keepalives(false);
        }
        Some(k) => {
            pg.keepalives(true);
            if let Some(idle) = k.idle {
                pg.keepalives_idle(idle);
            }
            if let Some(interval) = k.interval {
                pg.keepalives_interval(interval);
            }
            if let Some(count) = k.count {
                pg.keepalives_retries(count);
            }
        }
    }
    if let Some(t) = cfg.tcp_user_timeout() {
        pg.tcp_user_timeout(t);
    }
    // TLS is never used on Unix sockets (as in libpq); verification details
    // live in the connector, tokio-postgres only needs to know whether TLS
    // is mandatory.
    pg.ssl_mode(match cfg.sslmode() {
        _ if cfg.is_unix_socket() => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    pg.channel_binding(match cfg.channel_binding() {
        ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    });
    Ok((pg, MakeRustlsConnect::new(cfg)?))
}

/// Opens an ordinary SQL connection with every setting of `cfg` (hosts tried in order
/// for `target_session_attrs`, password or `.pgpass` or the config's prompt, TLS and
/// client certificate, `options`, keepalives, `connect_timeout`, `application_name`) and
/// spawns its connection task on the current tokio runtime.
///
/// # Errors
/// [`Error::Connect`] when the server is unreachable, [`Error::Db`] for
/// server errors (wrong password, unknown database ...), [`Error::PasswordMissing`],
/// [`Error::SessionAttrs`], [`Error::Tls`] and [`Error::Sql`] otherwise;
/// [`Error::AllHostsFailed`] with each host's when several were given.
pub async fn connect_sql(cfg: &ConnConfig) -> Result<tokio_postgres::Client, Error> {
    hosts::connect(cfg, |one| Box::pin(connect_one(one))).await
}

async fn connect_one(cfg: ConnConfig) -> Result<tokio_postgres::Client, Error> {
    let (pg, tls) = sql_config(&cfg)?;
    let (client, connection) = pg.connect(tls).await.map_err(|e| map_connect_error(&cfg, e))?;
    let target = cfg.target();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(%target, error = %e, "SQL connection ended with an error");
        }
    });
    Ok(client)
}

impl Session for tokio_postgres::Client {
    async fn server_state_row(&mut self) -> Result<(String, String), Error> {
        let messages = self.simple_query(SERVER_STATE_SQL).await?;
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .ok_or_else(|| Error::Protocol("no server state row".into()))?;
        let text = |i: usize| row.get(i).unwrap_or_default().to_owned();
        Ok((text(0), text(1)))
    }

    async fn discard(self) {
        // Dropping the client ends its connection task, which says goodbye to the server.
    }
}

fn map_connect_error(cfg: &ConnConfig, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut d = DbError::from_tokio_postgres(db);
        d.user = Some(cfg.user().to_owned());
        d.database = Some(cfg.dbname().to_owned());
        return Error::Db(Box::new(d));
    }
    // An I/O error while connecting: say where, like the replication side.
    let source = std::error::Error::source(&e);
    if let Some(io) = source.and_then(|s| s.downcast_ref::<std::io::Error>())
        && is_connect_failure(io.kind())
    {
        return Error::Connect {
            target: cfg.target(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        };
    }
    // tokio-postgres keeps the kind of its own errors private, and these carry no SQLSTATE:
    // its timeout, missing password and TLS failures are told apart by their text.
    let text = e.to_string();
    let cause = source.map(ToString::to_string).unwrap_or_default();
    if text.starts_with("timeout")
        && let Some(timeout) = cfg.connect_timeout()
    {
        return Error::ConnectTimeout { target: cfg.target(), timeout };
    }
    // tokio-postgres: the server asked for a password and the config has none.
    if text.starts_with("invalid configuration") && cause == "password missing" {
        return cfg.password_missing();
    }
    if cause.contains("server does not support TLS") {
        return Error::TlsUnavailable { target: cfg.target(), sslmode: cfg.sslmode().to_string() };
    }
    if text.contains("TLS") {
        return Error::Tls(format!("handshake with {}: {cause}", cfg.target()));
    }
    Error::Sql(e)
}

fn is_connect_failure(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | NotFound | AddrNotAvailable | HostUnreachable | NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settings_reach_tokio_postgres() {
        let cfg = ConnConfig::parse_with_env(
            "host=h port=7 user=u dbname=d options='-c search_path=s' keepalives_idle=11 \
             keepalives_interval=3 keepalives_count=4 tcp_user_timeout=1500 sslmode=disable",
            &|_| None,
        )
        .unwrap();
        let (pg, _) = sql_config(&cfg).unwrap();
        assert_eq!(pg.get_options(), Some("-c search_path=s"));
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(11));
        assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(3)));
        assert_eq!(pg.get_keepalives_retries(), Some(4));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_millis(1500)));
        let off = ConnConfig::parse_with_env("host=h user=u keepalives=0", &|_| None).unwrap();
        assert!(!sql_config(&off).unwrap().0.get_keepalives());
    }
}
