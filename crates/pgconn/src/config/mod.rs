//! Connection strings as PostgreSQL users write them.
//!
//! [`ConnConfig`] understands libpq's two syntaxes (a `postgres://` URL and the
//! `key=value` form), its connection service file, the standard `PG*` environment
//! variables as defaults and looks a missing password up in a `.pgpass` file. The
//! password never appears in `Display`, `Debug` or [`ConnConfig::redacted`]. libpq
//! keywords pgmirror does not support are refused with the reason, never dropped.

mod conninfo;
mod modes;
mod passfile;
mod service;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conninfo::{Params, percent_encode};
pub(crate) use modes::ServerState;
pub use modes::{ChannelBinding, Host, Keepalives, SslMode, TargetSessionAttrs};

use crate::error::Error;

/// Default TCP port of PostgreSQL.
pub const DEFAULT_PORT: u16 = 5432;
/// Application name sent when none is configured.
pub const DEFAULT_APPLICATION_NAME: &str = "pgmirror";

/// Socket directories tried, in order, when no host is given (Debian's libpq
/// default first, then the upstream default).
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// Asks someone for a password that the server wants and no setting gives (psql asks on
/// the terminal).
pub trait PasswordPrompt: Send + Sync + fmt::Debug {
    /// The password of `user` for `target` (`host:port` or a socket path), or `None` when
    /// there is nobody to ask. Called off the async runtime: it may block.
    fn password(&self, user: &str, target: &str) -> Option<String>;
}

/// The prompt of a [`ConnConfig`]; configs compare equal whatever their prompt.
#[derive(Clone, Default)]
struct Prompt(Option<Arc<dyn PasswordPrompt>>);

impl PartialEq for Prompt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Prompt {}

/// A parsed connection string with every default resolved.
///
/// Build it with [`ConnConfig::parse`] (which reads the process environment
/// for `PG*` defaults) or [`ConnConfig::parse_with_env`] (explicit
/// environment, for tests), then adjust it with the `with_*` methods.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Never empty; tried in order.
    hosts: Vec<(Host, u16)>,
    user: String,
    password: Option<String>,
    dbname: String,
    sslmode: SslMode,
    sslrootcert: Option<String>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    sslsni: bool,
    channel_binding: ChannelBinding,
    application_name: String,
    connect_timeout: Option<Duration>,
    passfile: Option<PathBuf>,
    options: Option<String>,
    target_session_attrs: TargetSessionAttrs,
    keepalives: Option<Keepalives>,
    tcp_user_timeout: Option<Duration>,
    /// No host, port, user, database or service was given: libpq's defaults throughout.
    defaults_only: bool,
    prompt: Prompt,
}

impl ConnConfig {
    /// Parses a connection string, using the process environment for anything it leaves
    /// out: the service file (`PGSERVICE`, `PGSERVICEFILE`, `PGSYSCONFDIR`), then `PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGOPTIONS`, `PGSSLMODE`,
    /// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGAPPNAME`, `PGPASSFILE`,
    /// `PGCONNECT_TIMEOUT`, `PGCHANNELBINDING`, `PGTARGETSESSIONATTRS` and the other
    /// variables libpq reads.
    ///
    /// Accepts `postgres://` / `postgresql://` URLs and libpq's `key=value`
    /// form; the empty string means "all defaults".
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::parse_with_env(s, &|name| std::env::var(name).ok())
    }

    /// Like [`ConnConfig::parse`] but with an explicit environment lookup
    /// (`HOME` is also read through it, to find `~/.pgpass`, `~/.pg_service.conf` and
    /// `~/.postgresql/`).
    pub fn parse_with_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::from_params(s, &[], env)
    }

    /// A connection string with some keywords set on top, as `(keyword, value)` pairs that
    /// override the string's own (like `psql -h HOST -p PORT` with a connection string);
    /// empty values are skipped. `env` as for [`ConnConfig::parse_with_env`].
    pub fn from_params(
        conninfo: &str,
        overrides: &[(&str, &str)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let mut params = Params::default();
        conninfo::parse(conninfo, &mut params)?;
        for (key, value) in overrides.iter().filter(|(_, v)| !v.is_empty()) {
            params.set(key, (*value).to_owned())?;
        }
        Self::resolve(params, env)
    }

    /// Whether `s` is a connection string (a URL or `key=value`) rather than a plain
    /// database name: libpq's rule for a `dbname` that holds a whole connection string.
    pub fn is_conninfo(s: &str) -> bool {
        conninfo::is_conninfo(s)
    }

    fn resolve(mut params: Params, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        // Precedence as in libpq: the string, then the service file, then the variables.
        if let Some(name) = params.get("service").map(str::to_owned).or_else(|| var("PGSERVICE")) {
            params.fill_from(service::lookup(&name, env)?);
        }
        params.fill_from_env(env);
        let defaults_only = !["host", "port", "user", "dbname"].iter().any(|k| params.has(k));
        let get = |key: &str| params.get(key);

        let hosts = parse_hosts(get("host"), get("port"))?;
        let user = match get("user") {
            Some(u) => u.to_owned(),
            None => whoami::username().map_err(|e| {
                Error::Config(format!("no user given and the OS user name is unknown: {e}"))
            })?,
        };
        let dbname = get("dbname").unwrap_or(&user).to_owned();
        let sslrootcert = get("sslrootcert").map(str::to_owned);
        let sslmode = match (get("sslmode"), sslrootcert.as_deref()) {
            (Some(m), Some("system")) if m != "verify-full" => {
                return Err(Error::Config(format!(
                    "weak sslmode \"{m}\" may not be used with sslrootcert=system (use \
                     \"verify-full\")"
                )));
            }
            (Some(m), _) => m.parse()?,
            // libpq: the system's CAs are only worth using with full verification.
            (None, Some("system")) => SslMode::VerifyFull,
            (None, _) => SslMode::default(),
        };
        let home = var("HOME").map(PathBuf::from);
        let (sslcert, sslkey) = client_cert(get("sslcert"), get("sslkey"), home.as_deref())?;
        let (sslcert, sslkey) = match get("sslcertmode").unwrap_or("allow") {
            "allow" => (sslcert, sslkey),
            "disable" => (None, None),
            "require" => return Err(unsupported("sslcertmode=require", "use allow or disable")),
            other => return Err(invalid("sslcertmode", other)),
        };
        check_unsupported_values(&params)?;
        let channel_binding = match get("channel_binding") {
            Some(m) => m.parse()?,
            None => ChannelBinding::default(),
        };
        let application_name = get("application_name")
            .or(get("fallback_application_name"))
            .unwrap_or(DEFAULT_APPLICATION_NAME)
            .to_owned();
        let connect_timeout = match get("connect_timeout") {
            Some(t) => parse_connect_timeout(t)?,
            None => None,
        };
        let keepalives = match get("keepalives").map_or(Ok(1), |v| int("keepalives", v))? {
            0 => None,
            _ => Some(Keepalives {
                idle: seconds(get("keepalives_idle"), "keepalives_idle")?,
                interval: seconds(get("keepalives_interval"), "keepalives_interval")?,
                count: match get("keepalives_count") {
                    Some(v) => u32::try_from(int("keepalives_count", v)?).ok().filter(|n| *n > 0),
                    None => None,
                },
            }),
        };
        let tcp_user_timeout = match get("tcp_user_timeout") {
            Some(v) => u64::try_from(int("tcp_user_timeout", v)?)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            None => None,
        };
        let passfile =
            get("passfile").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".pgpass")));

        Ok(ConnConfig {
            hosts,
            user,
            password: get("password").map(str::to_owned),
            dbname,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            sslsni: get("sslsni").map_or(Ok(1), |v| int("sslsni", v))? != 0,
            channel_binding,
            application_name,
            connect_timeout,
            passfile,
            options: get("options").map(str::to_owned),
            target_session_attrs: get("target_session_attrs").unwrap_or("any").parse()?,
            keepalives,
            tcp_user_timeout,
            defaults_only,
            prompt: Prompt::default(),
        })
    }

    /// Where the server listens (the first host when several are given).
    pub fn host(&self) -> &Host {
        &self.hosts[0].0
    }

    /// TCP port (also the number in the Unix socket's file name) of the first host.
    pub fn port(&self) -> u16 {
        self.hosts[0].1
    }

    /// Every host with its port, in the order they are tried.
    pub fn hosts(&self) -> impl Iterator<Item = (&Host, u16)> {
        self.hosts.iter().map(|(h, p)| (h, *p))
    }

    /// One config per host, in the order they are tried.
    pub(crate) fn per_host(&self) -> impl Iterator<Item = ConnConfig> + '_ {
        self.hosts.iter().map(|h| ConnConfig { hosts: vec![h.clone()], ..self.clone() })
    }

    /// Role to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password given explicitly (connection string or `PGPASSWORD`).
    /// Never print it; see [`ConnConfig::effective_password`] for the
    /// `.pgpass` fallback.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Database to connect to.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// TLS mode.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// `sslrootcert`: a PEM file of trusted roots, or `system` for the
    /// operating system's trusted CAs.
    pub fn sslrootcert(&self) -> Option<&str> {
        self.sslrootcert.as_deref()
    }

    /// The client certificate (PEM) offered to the server: `sslcert`, else
    /// `~/.postgresql/postgresql.crt` when that file exists.
    pub fn sslcert(&self) -> Option<&Path> {
        self.sslcert.as_deref()
    }

    /// The private key of [`ConnConfig::sslcert`]: `sslkey`, else
    /// `~/.postgresql/postgresql.key`.
    pub fn sslkey(&self) -> Option<&Path> {
        self.sslkey.as_deref()
    }

    /// Whether the host name is sent in the TLS handshake (`sslsni`, on by default).
    pub fn sslsni(&self) -> bool {
        self.sslsni
    }

    /// SCRAM channel binding policy.
    pub fn channel_binding(&self) -> ChannelBinding {
        self.channel_binding
    }

    /// `application_name` reported to the server.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// Limit on connecting (TCP, TLS and authentication together), per host.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The password file consulted when no password is given.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }

    /// `options`: command-line options for the server process (`-c name=value ...`),
    /// sent at startup on every connection.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// Which of the hosts is acceptable.
    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// TCP keepalives (on by default, as in libpq); `None` when `keepalives=0`.
    pub fn keepalives(&self) -> Option<Keepalives> {
        self.keepalives
    }

    /// `tcp_user_timeout`: how long sent data may stay unacknowledged.
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }

    /// Whether nothing chose the server, role or database (no host, port, user, dbname or
    /// service in the string, the service file or the `PG*` variables): everything is
    /// libpq's default (local socket, OS user name, database of the same name).
    pub fn is_all_defaults(&self) -> bool {
        self.defaults_only
    }

    /// Whether this connects over a Unix socket (TLS is never used there).
    pub fn is_unix_socket(&self) -> bool {
        matches!(self.host(), Host::Unix(_))
    }

    /// The Unix socket path for a [`Host::Unix`] host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self.host() {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port()))),
            Host::Tcp(_) => None,
        }
    }

    /// `host:port` (or the socket path), for messages; several hosts are separated by
    /// commas.
    pub fn target(&self) -> String {
        let one = |host: &Host, port: u16| match host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
            Host::Tcp(h) => format!("{h}:{port}"),
            Host::Unix(dir) => dir.join(format!(".s.PGSQL.{port}")).display().to_string(),
        };
        self.hosts.iter().map(|(h, p)| one(h, *p)).collect::<Vec<_>>().join(",")
    }

    /// Same config with another database.
    pub fn with_dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = dbname.into();
        self
    }

    /// Same config with another user.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Same config with another password (`None` falls back to `.pgpass`).
    pub fn with_password(mut self, password: Option<String>) -> Self {
        self.password = password;
        self
    }

    /// Same config with this one host instead of the given ones (the first one's port).
    pub fn with_host(mut self, host: Host) -> Self {
        self.hosts = vec![(host, self.port())];
        self
    }

    /// Same config with another port, for every host.
    pub fn with_port(mut self, port: u16) -> Self {
        for h in &mut self.hosts {
            h.1 = port;
        }
        self
    }

    /// Same config with another TLS mode.
    pub fn with_sslmode(mut self, sslmode: SslMode) -> Self {
        self.sslmode = sslmode;
        self
    }

    /// Same config with another `sslrootcert`.
    pub fn with_sslrootcert(mut self, sslrootcert: Option<String>) -> Self {
        self.sslrootcert = sslrootcert;
        self
    }

    /// Same config with another channel binding policy.
    pub fn with_channel_binding(mut self, channel_binding: ChannelBinding) -> Self {
        self.channel_binding = channel_binding;
        self
    }

    /// Same config with another application name.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Same config with another connect timeout (`None` waits forever).
    pub fn with_connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Same config with another password file (`None`: never read one).
    pub fn with_passfile(mut self, passfile: Option<PathBuf>) -> Self {
        self.passfile = passfile;
        self
    }

    /// Same config, asking `prompt` when a server wants a password that neither the
    /// config nor the password file gives (the connection is then made again with it).
    pub fn with_password_prompt(mut self, prompt: Arc<dyn PasswordPrompt>) -> Self {
        self.prompt = Prompt(Some(prompt));
        self
    }

    /// Asks the configured prompt for this config's password, off the async runtime.
    pub(crate) async fn ask_password(&self) -> Option<String> {
        let prompt = self.prompt.0.clone()?;
        let (user, target) = (self.user.clone(), self.target());
        tokio::task::spawn_blocking(move || prompt.password(&user, &target)).await.ok().flatten()
    }

    /// The error for a server that wants a password nothing gave.
    pub fn password_missing(&self) -> Error {
        Error::PasswordMissing {
            target: self.target(),
            user: self.user.clone(),
            passfile: self
                .passfile
                .as_ref()
                .map_or_else(|| "~/.pgpass".to_owned(), |p| p.display().to_string()),
        }
    }

    /// The password to use: the explicit one, else the first matching entry
    /// of the password file (skipped, like libpq, when it is not a regular
    /// file or is readable by group or others). With several hosts, the first one's.
    pub fn effective_password(&self) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        let path = self.passfile.as_deref()?;
        passfile::lookup(
            path,
            &self.host().as_string(),
            self.is_unix_socket(),
            self.port(),
            &self.dbname,
            &self.user,
        )
    }

    /// The connection string as a URL without the password: safe for logs
    /// and error messages.
    pub fn redacted(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(h, p)| match h {
                Host::Tcp(h) if h.contains(':') => format!("[{h}]:{p}"),
                Host::Tcp(h) => format!("{}:{p}", percent_encode(h)),
                Host::Unix(dir) => format!("{}:{p}", percent_encode(&dir.display().to_string())),
            })
            .collect();
        let mut url = format!(
            "postgres://{}@{}/{}?sslmode={}&application_name={}",
            percent_encode(&self.user),
            hosts.join(","),
            percent_encode(&self.dbname),
            self.sslmode,
            percent_encode(&self.application_name),
        );
        let mut param = |key: &str, value: &str| {
            url.push_str(&format!("&{key}={}", percent_encode(value)));
        };
        if let Some(root) = &self.sslrootcert {
            param("sslrootcert", root);
        }
        for (key, path) in [("sslcert", &self.sslcert), ("sslkey", &self.sslkey)] {
            if let Some(path) = path {
                param(key, &path.display().to_string());
            }
        }
        if !self.sslsni {
            param("sslsni", "0");
        }
        if self.channel_binding != ChannelBinding::Prefer {
            param("channel_binding", self.channel_binding.as_str());
        }
        if let Some(t) = self.connect_timeout {
            param("connect_timeout", &t.as_secs().to_string());
        }
        if let Some(options) = &self.options {
            param("options", options);
        }
        if self.target_session_attrs != TargetSessionAttrs::Any {
            param("target_session_attrs", self.target_session_attrs.as_str());
        }
        match self.keepalives {
            None => param("keepalives", "0"),
            Some(k) => {
                let secs = [("keepalives_idle", k.idle), ("keepalives_interval", k.interval)];
                for (key, value) in secs {
                    if let Some(d) = value {
                        param(key, &d.as_secs().to_string());
                    }
                }
                if let Some(n) = k.count {
                    param("keepalives_count", &n.to_string());
                }
            }
        }
        if let Some(t) = self.tcp_user_timeout {
            param("tcp_user_timeout", &t.as_millis().to_string());
        }
        url
    }
}

impl fmt::Display for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("channel_binding", &self.channel_binding)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("passfile", &self.passfile)
            .field("options", &self.options)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("keepalives", &self.keepalives)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("prompt", &self.prompt.0.is_some())
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for ConnConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        ConnConfig::parse(s)
    }
}

fn invalid(key: &str, value: &str) -> Error {
    Error::Config(format!("invalid {key} value: \"{value}\""))
}

fn unsupported(what: &str, instead: &str) -> Error {
    Error::Config(format!("{what} is not supported by pgmirror; {instead}"))
}

/// Values of supported keywords that ask for something pgmirror cannot do.
fn check_unsupported_values(params: &Params) -> Result<(), Error> {
    match params.get("gssencmode") {
        // Without GSSAPI, `prefer` connects as libpq does when it has no credentials.
        None | Some("disable" | "prefer") => {}
        Some("require") => {
            return Err(unsupported("gssencmode=require", "use TLS (sslmode) for encryption"));
        }
        Some(other) => return Err(invalid("gssencmode", other)),
    }
    match params.get("sslnegotiation") {
        None | Some("postgres") => {}
        Some("direct") => {
            return Err(unsupported("sslnegotiation=direct", "use sslnegotiation=postgres"));
        }
        Some(other) => return Err(invalid("sslnegotiation", other)),
    }
    match params.get("load_balance_hosts") {
        None | Some("disable") => {}
        Some("random") => {
            return Err(unsupported(
                "load_balance_hosts=random",
                "hosts are tried in the order given",
            ));
        }
        Some(other) => return Err(invalid("load_balance_hosts", other)),
    }
    if let Some(enc) = params.get("client_encoding")
        && !["utf8", "utf-8", "unicode", "auto"].contains(&enc.to_ascii_lowercase().as_str())
    {
        return Err(unsupported(
            &format!("client_encoding={enc}"),
            "it always uses UTF8 (the server converts)",
        ));
    }
    match params.get("sslcompression") {
        None | Some("0") => {}
        Some("1") => tracing::warn!(
            "sslcompression=1 has no effect: TLS compression is not supported (PostgreSQL 14 \
             dropped it too)"
        ),
        Some(other) => return Err(invalid("sslcompression", other)),
    }
    Ok(())
}

/// `host` and `port` lists: as many ports as hosts, or one port for all. An empty host
/// means the default (a local socket), an empty port 5432.
fn parse_hosts(host: Option<&str>, port: Option<&str>) -> Result<Vec<(Host, u16)>, Error> {
    let hosts: Vec<&str> = host.map_or_else(|| vec![""], |h| h.split(',').collect());
    let ports: Vec<&str> = port.map_or_else(|| vec![""], |p| p.split(',').collect());
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(Error::Config(format!(
            "could not match {} port numbers to {} hosts",
            ports.len(),
            hosts.len()
        )));
    }
    let parse_port = |p: &str| -> Result<u16, Error> {
        match p.trim() {
            "" => Ok(DEFAULT_PORT),
            p => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::Config(format!("invalid port number: \"{p}\""))),
        }
    };
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h.trim() {
                "" => default_host(),
                h => Host::parse(h),
            };
            Ok((host, parse_port(ports.get(i).unwrap_or(&ports[0]))?))
        })
        .collect()
}

/// `sslcert`/`sslkey`, else libpq's `~/.postgresql/postgresql.crt` and `.key` when the
/// certificate exists. A named certificate must exist and have its key (libpq would silently
/// send none); a default one without its key is skipped with a warning.
fn client_cert(
    cert: Option<&str>,
    key: Option<&str>,
    home: Option<&Path>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), Error> {
    let dir = home.map(|h| h.join(".postgresql"));
    let key = key.map(PathBuf::from).or_else(|| dir.as_ref().map(|d| d.join("postgresql.key")));
    let has_key = key.as_ref().is_some_and(|k| k.is_file());
    match cert {
        Some(c) if !Path::new(c).is_file() => {
            Err(Error::Config(format!("sslcert {c} is not a readable file")))
        }
        Some(c) if !has_key => Err(Error::Config(format!(
            "certificate {c} present, but not its private key file (set sslkey)"
        ))),
        Some(c) => Ok((Some(PathBuf::from(c)), key)),
        None => match dir.map(|d| d.join("postgresql.crt")).filter(|p| p.is_file()) {
            Some(c) if has_key => Ok((Some(c), key)),
            Some(c) => {
                tracing::warn!(
                    "{} has no private key file next to it; no client certificate is sent",
                    c.display()
                );
                Ok((None, None))
            }
            None => Ok((None, None)),
        },
    }
}

fn default_host() -> Host {
    DEFAULT_SOCKET_DIRS
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .map_or_else(|| Host::Tcp("localhost".to_owned()), |p| Host::Unix(p.to_path_buf()))
}

fn int(key: &str, value: &str) -> Result<i64, Error> {
    value.trim().parse().map_err(|_| invalid(key, value))
}

/// Whole seconds; 0 or less keeps the system default.
fn seconds(value: Option<&str>, key: &str) -> Result<Option<Duration>, Error> {
    Ok(match value {
        Some(v) => u64::try_from(int(key, v)?).ok().filter(|s| *s > 0).map(Duration::from_secs),
        None => None,
    })
}

/// libpq: whole seconds; 0 (or negative) waits forever; 1 is raised to 2.
fn parse_connect_timeout(s: &str) -> Result<Option<Duration>, Error> {
    let secs = int("connect_timeout", s)?;
    Ok(match u64::try_from(secs) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(Duration::from_secs(n.max(2))),
    })
}

#[cfg(test)]
mod tests;
