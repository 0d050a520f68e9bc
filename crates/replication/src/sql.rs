//! Ordinary (non-replication) connections with the same settings and TLS
//! rules as the replication connection, so the project connects one way.

use crate::config::{ChannelBinding, ConnConfig, Host, SslMode};
use crate::error::{DbError, Error};
use crate::tls::MakeRustlsConnect;

/// The tokio-postgres configuration and TLS connector for `cfg` (for callers
/// that drive the connection future themselves).
///
/// # Errors
/// [`Error::Tls`] when the TLS settings are unusable (e.g. a missing root
/// certificate file).
pub fn sql_config(cfg: &ConnConfig) -> Result<(tokio_postgres::Config, MakeRustlsConnect), Error> {
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

/// Opens an ordinary SQL connection (host, port, user, password or
/// `.pgpass`, database, `sslmode`, `sslrootcert`, `connect_timeout`,
/// `application_name` as in `cfg`) and spawns its connection task on the
/// current tokio runtime.
///
/// # Errors
/// [`Error::Connect`] when the server is unreachable, [`Error::Db`] for
/// server errors (wrong password, unknown database ...), [`Error::Tls`] and
/// [`Error::Sql`] otherwise.
pub async fn connect_sql(cfg: &ConnConfig) -> Result<tokio_postgres::Client, Error> {
    let (pg, tls) = sql_config(cfg)?;
    let (client, connection) = pg.connect(tls).await.map_err(|e| map_connect_error(cfg, e))?;
    let target = cfg.target();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(%target, error = %e, "SQL connection ended with an error");
        }
    });
    Ok(client)
}

fn map_connect_error(cfg: &ConnConfig, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut d = DbError::from_tokio_postgres(db);
        d.user = Some(cfg.user().to_owned());
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
    let text = e.to_string();
    let cause = source.map(ToString::to_string).unwrap_or_default();
    if text.starts_with("timeout")
        && let Some(timeout) = cfg.connect_timeout()
    {
        return Error::ConnectTimeout { target: cfg.target(), timeout };
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
