//! What `--target` names, by its URL scheme: `mysql://` or `mariadb://` is a MySQL/MariaDB
//! database, `nats://` or `tls://` a NATS JetStream server (or cluster), anything else a
//! PostgreSQL server.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use applier::mysql::session::{MySqlUrl, is_mysql_url};
use pgconn::ConnConfig;

/// How long a client that lost its connection waits before reconnecting: for good.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A parsed `--target`.
#[derive(Debug, Clone)]
pub enum TargetUrl {
    /// A PostgreSQL server (URL or key=value string).
    Postgres(ConnConfig),
    /// A MySQL or MariaDB database.
    MySql(MySqlUrl),
    /// A NATS server or cluster.
    Nats(NatsUrl),
}

impl TargetUrl {
    /// Decides by the scheme and parses.
    ///
    /// # Errors
    /// An invalid URL or connection string, with the problem (never the password).
    pub fn parse(value: &str) -> anyhow::Result<TargetUrl> {
        if is_mysql_url(value) {
            return Ok(TargetUrl::MySql(MySqlUrl::parse(value)?));
        }
        if is_nats_url(value) {
            return NatsUrl::parse(value).map(TargetUrl::Nats);
        }
        ConnConfig::parse(value).context("invalid connection string").map(TargetUrl::Postgres)
    }
}

/// Whether `value` names a NATS server (`nats://`, or `tls://` for NATS over TLS).
pub fn is_nats_url(value: &str) -> bool {
    let lower = value.trim_start().to_ascii_lowercase();
    lower.starts_with("nats://") || lower.starts_with("tls://")
}

/// A NATS target: `nats://[user:password@]host[:port][,host[:port]...][?options]` (`tls://`
/// requires TLS). A user without a password is a token (`nats://s3cr3t@host`). Options:
/// `creds=FILE` (a credentials file, JWT and NKey seed), `nkey=FILE` (an NKey seed file),
/// `tls=true`, `ca=FILE` (root certificates), `cert=FILE&key=FILE` (a client certificate).
#[derive(Clone)]
pub struct NatsUrl {
    /// `host:port` of each server.
    pub servers: Vec<String>,
    /// User and password.
    pub user: Option<(String, String)>,
    /// An authentication token.
    pub token: Option<String>,
    /// A credentials file.
    pub creds: Option<PathBuf>,
    /// An NKey seed file.
    pub nkey: Option<PathBuf>,
    /// TLS required.
    pub tls: bool,
    /// Root certificates for TLS.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL without secrets: `nats://user:***@host:4222,...`.
impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "tls://" } else { "nats://" })?;
        if let Some((user, _)) = &self.user {
            write!(f, "{user}:***@")?;
        } else if self.token.is_some() {
            f.write_str("***@")?;
        }
        f.write_str(&self.servers.join(","))
    }
}

impl NatsUrl {
    /// Parses a NATS URL (see the type's docs).
    ///
    /// # Errors
    /// A missing host, an unknown option, a client certificate without its key.
    pub fn parse(value: &str) -> anyhow::Result<NatsUrl> {
        let value = value.trim();
        let (scheme, rest) = value.split_once("://").context("a NATS URL starts with nats://")?;
        let tls_scheme = scheme.eq_ignore_ascii_case("tls");
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let decode =
            |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let mut url = NatsUrl {
            servers: Vec::new(),
            user: None,
            token: None,
            creds: None,
            nkey: None,
            tls: tls_scheme,
            ca: None,
            client_cert: None,
        };
        match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, pass))) => url.user = Some((decode(user), decode(pass))),
            Some(None) => url.token = userinfo.map(decode),
            None => {}
        }
        for host in hosts.trim_end_matches('/').split(',') {
            let host = host.trim().trim_start_matches("nats://").trim_start_matches("tls://");
            if host.is_empty() {
                bail!(
                    "NATS URL {url} names an empty server; give host[:port] for each, separated by commas"
                );
            }
            url.servers.push(if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:4222")
            });
        }
        let (mut cert, mut key) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "creds" => url.creds = Some(v.into()),
                "nkey" => url.nkey = Some(v.into()),
                "tls" => url.tls |= matches!(v.as_str(), "true" | "1" | "required" | ""),
                "ca" => url.ca = Some(v.into()),
                "cert" => cert = Some(PathBuf::from(v)),
                "key" => key = Some(PathBuf::from(v)),
                other => bail!(
                    "NATS URL {url}: unknown option {other:?}; known: creds, nkey, tls, ca, cert, key"
                ),
            }
        }
        match (cert, key) {
            (Some(c), Some(k)) => url.client_cert = Some((c, k)),
            (None, None) => {}
            _ => bail!("NATS URL {url}: a client certificate needs both cert=FILE and key=FILE"),
        }
        Ok(url)
    }

    /// Connects with the URL's authentication and TLS settings. `name` is the connection's
    /// name on the server.
    ///
    /// # Errors
    /// Unreadable credentials, and connection errors.
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        // Never reconnect once connected: a reconnected client would send the messages it
        // buffered while disconnected, which could land after messages the lost server never
        // stored, out of commit order. The lost connection ends the session instead (its acks
        // time out), and the next session publishes again from the stored progress on a new
        // client. The old client's reconnect then waits for good (its buffered messages with
        // it) until the process ends.
        let connected = Arc::new(AtomicBool::new(false));
        let seen = connected.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        seen.store(true, Ordering::Relaxed);
                    }
                }
            })
            .reconnect_delay_callback(move |attempts| {
                if connected.load(Ordering::Relaxed) {
                    NEVER
                } else {
                    Duration::from_millis(100 * u64::try_from(attempts.min(40)).unwrap_or(40))
                }
            });
        if let Some((user, pass)) = &self.user {
            opts = opts.user_and_password(user.clone(), pass.clone());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let Some(creds) = &self.creds {
            opts = opts.credentials_file(creds).await.with_context(|| {
                format!("reading the NATS credentials file {}", creds.display())
            })?;
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading the NKey seed file {}", path.display()))?;
            opts = opts.nkey(seed.trim().to_owned());
        }
        if self.tls {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &self.ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let scheme = if self.tls { "tls" } else { "nats" };
        let addrs = self
            .servers
            .iter()
            .map(|s| format!("{scheme}://{s}").parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("NATS URL {self}"))?;
        opts.connect(addrs).await.map_err(|e| {
            NatsConnectError { url: self.to_string(), kind: e.kind(), detail: e.to_string() }.into()
        })
    }
}

/// A NATS server that could not be reached or refused the connection, with what to check.
#[derive(Debug)]
pub struct NatsConnectError {
    url: String,
    kind: async_nats::ConnectErrorKind,
    detail: String,
}

impl NatsConnectError {
    /// Whether trying again later may succeed (nothing answering yet, a timeout; not a
    /// certificate the client does not trust).
    pub fn is_transient(&self) -> bool {
        use async_nats::ConnectErrorKind as K;
        matches!(self.kind, K::Io | K::TimedOut | K::Dns | K::MaxReconnects)
            && !self.detail.contains("certificate")
    }
}

impl fmt::Display for NatsConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use async_nats::ConnectErrorKind as K;
        let fix = match self.kind {
            K::AuthorizationViolation | K::Authentication => {
                "the server refused the credentials: check the user and password, token, nkey= or \
                 creds= in --target"
            }
            K::Tls => "check tls://, ca=, cert= and key= in --target against the server's TLS",
            // The client reports a certificate it does not trust as an I/O error.
            _ if self.detail.contains("certificate") => {
                "the server's certificate is not trusted: give its CA as ca=FILE in --target"
            }
            K::ServerParse => "give host:port for each server in --target",
            _ => "check the host and port in --target, and that nats-server runs",
        };
        // The client's text repeats its kind ("authorization violation: nats: ...").
        let detail = self.detail.split(": nats: ").next().unwrap_or(&self.detail);
        write!(f, "connecting to NATS at {}: {detail}; {fix}", self.url)
    }
}

impl std::error::Error for NatsConnectError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_scheme() {
        let nats = TargetUrl::parse("nats://u:p%40ss@a:1,b?creds=/x.creds").unwrap();
        let TargetUrl::Nats(n) = nats else { panic!("not NATS") };
        assert_eq!(n.servers, ["a:1", "b:4222"]);
        assert_eq!(n.user, Some(("u".into(), "p@ss".into())));
        assert_eq!(n.creds, Some(PathBuf::from("/x.creds")));
        assert_eq!(n.to_string(), "nats://u:***@a:1,b:4222", "no password shown");
        let TargetUrl::Nats(t) = TargetUrl::parse("tls://tok@h").unwrap() else {
            panic!("not NATS")
        };
        assert!(t.tls);
        assert_eq!(t.token.as_deref(), Some("tok"));
        assert_eq!(format!("{t:?}"), "tls://***@h:4222");
        assert!(matches!(TargetUrl::parse("postgres://h/db").unwrap(), TargetUrl::Postgres(_)));
        let err = NatsUrl::parse("nats://h?cert=/c").unwrap_err().to_string();
        assert!(err.contains("key=FILE"), "{err}");
        let err = NatsUrl::parse("nats://h?bogus=1").unwrap_err().to_string();
        assert!(err.contains("unknown option \"bogus\""), "{err}");
    }
}
