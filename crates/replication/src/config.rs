//! Connection strings as PostgreSQL users write them.
//!
//! [`ConnConfig`] understands libpq's two syntaxes (a `postgres://` URL and the
//! `key=value` form), takes the standard `PG*` environment variables as
//! defaults and looks a missing password up in a `.pgpass` file. The password
//! never appears in `Display`, `Debug` or [`ConnConfig::redacted`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// Default TCP port of PostgreSQL.
pub const DEFAULT_PORT: u16 = 5432;
/// Application name sent when none is configured.
pub const DEFAULT_APPLICATION_NAME: &str = "pgmirror";

/// Socket directories tried, in order, when no host is given (Debian's libpq
/// default first, then the upstream default).
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// libpq options accepted for compatibility that have no effect here.
const IGNORED_OPTIONS: [&str; 9] = [
    "gssencmode",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "sslcompression",
    "sslsni",
];

/// `sslmode`: whether and how TLS is used (same meaning as in libpq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server insists; handled like `prefer` (the server is
    /// asked first, a plaintext fallback is used if it says no).
    Allow,
    /// Use TLS if the server supports it, without verifying the certificate.
    #[default]
    Prefer,
    /// Always use TLS; verify the certificate only if a root certificate is
    /// configured (then it behaves like `verify-ca`, as libpq does).
    Require,
    /// Always use TLS and verify that the certificate chains to a trusted root.
    VerifyCa,
    /// Like `verify-ca`, and also check that the certificate matches the host.
    VerifyFull,
}

impl SslMode {
    /// The keyword as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::str::FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(Error::Config(format!("invalid sslmode value: \"{other}\""))),
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `channel_binding`: whether SCRAM-SHA-256-PLUS (binding the authentication
/// to the TLS session) is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when TLS is active and the server offers it.
    #[default]
    Prefer,
    /// Fail unless the server authenticates with channel binding.
    Require,
}

impl ChannelBinding {
    /// The keyword as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl std::str::FromStr for ChannelBinding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(Error::Config(format!("invalid channel_binding value: \"{other}\"")));
            }
        })
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl Host {
    fn parse(s: &str) -> Host {
        // libpq: a host starting with a slash is a socket directory.
        if s.starts_with('/') { Host::Unix(PathBuf::from(s)) } else { Host::Tcp(s.to_owned()) }
    }

    /// The host as written in a connection string (a path for sockets).
    pub fn as_string(&self) -> String {
        match self {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        }
    }
}

/// A parsed connection string with every default resolved.
///
/// Build it with [`ConnConfig::parse`] (which reads the process environment
/// for `PG*` defaults) or [`ConnConfig::parse_with_env`] (explicit
/// environment, for tests), then adjust it with the `with_*` methods.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    host: Host,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    sslmode: SslMode,
    sslrootcert: Option<String>,
    channel_binding: ChannelBinding,
    application_name: String,
    connect_timeout: Option<Duration>,
    passfile: Option<PathBuf>,
}

/// Raw keyword values collected from a connection string, before defaults.
#[derive(Default)]
struct RawOptions {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    channel_binding: Option<String>,
    application_name: Option<String>,
    fallback_application_name: Option<String>,
    connect_timeout: Option<String>,
    passfile: Option<String>,
}

impl RawOptions {
    fn set(&mut self, key: &str, value: String) -> Result<(), Error> {
        let slot = match key {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "channel_binding" => &mut self.channel_binding,
            "application_name" => &mut self.application_name,
            "fallback_application_name" => &mut self.fallback_application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "passfile" => &mut self.passfile,
            // JDBC-style `ssl=true`, which libpq also accepts in URLs.
            "ssl" if value == "true" => {
                self.sslmode = Some("require".to_owned());
                return Ok(());
            }
            k if IGNORED_OPTIONS.contains(&k) => {
                tracing::debug!(option = k, "ignoring connection option without effect here");
                return Ok(());
            }
            other => {
                return Err(Error::Config(format!("invalid connection option \"{other}\"")));
            }
        };
        *slot = Some(value);
        Ok(())
    }
}

impl ConnConfig {
    /// Parses a connection string, using the process environment (`PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`,
    /// `PGSSLROOTCERT`, `PGAPPNAME`, `PGPASSFILE`, `PGCONNECT_TIMEOUT`,
    /// `PGCHANNELBINDING`) for anything the string leaves out.
    ///
    /// Accepts `postgres://` / `postgresql://` URLs and libpq's `key=value`
    /// form; the empty string means "all defaults".
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::parse_with_env(s, &|name| std::env::var(name).ok())
    }

    /// Like [`ConnConfig::parse`] but with an explicit environment lookup
    /// (`HOME` is also read through it, to find `~/.pgpass`).
    pub fn parse_with_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let trimmed = s.trim();
        let mut raw = RawOptions::default();
        if let Some(rest) =
            trimmed.strip_prefix("postgres://").or_else(|| trimmed.strip_prefix("postgresql://"))
        {
            parse_url(rest, &mut raw)?;
        } else {
            parse_key_value(trimmed, &mut raw)?;
        }
        Self::resolve(raw, env)
    }

    fn resolve(raw: RawOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        // An empty value counts as unset, as in libpq.
        let pick = |explicit: Option<String>, var: &str| -> Option<String> {
            explicit.filter(|v| !v.is_empty()).or_else(|| env(var).filter(|v| !v.is_empty()))
        };

        let host = match pick(raw.host, "PGHOST") {
            Some(h) if h.contains(',') => {
                return Err(Error::Config("multiple hosts are not supported".to_owned()));
            }
            Some(h) => Host::parse(&h),
            None => default_host(),
        };
        let port = match pick(raw.port, "PGPORT") {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::Config(format!("invalid port number: \"{p}\"")))?,
            None => DEFAULT_PORT,
        };
        let user = match pick(raw.user, "PGUSER") {
            Some(u) => u,
            None => whoami::username().map_err(|e| {
                Error::Config(format!("no user given and the OS user name is unknown: {e}"))
            })?,
        };
        let dbname = pick(raw.dbname, "PGDATABASE").unwrap_or_else(|| user.clone());
        let password = pick(raw.password, "PGPASSWORD");
        let sslmode = match pick(raw.sslmode, "PGSSLMODE") {
            Some(m) => m.parse()?,
            None => SslMode::default(),
        };
        let sslrootcert = pick(raw.sslrootcert, "PGSSLROOTCERT");
        let channel_binding = match pick(raw.channel_binding, "PGCHANNELBINDING") {
            Some(m) => m.parse()?,
            None => ChannelBinding::default(),
        };
        let application_name = pick(raw.application_name, "PGAPPNAME")
            .or(raw.fallback_application_name.filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_owned());
        let connect_timeout = match pick(raw.connect_timeout, "PGCONNECT_TIMEOUT") {
            Some(t) => parse_connect_timeout(&t)?,
            None => None,
        };
        let passfile = pick(raw.passfile, "PGPASSFILE").map(PathBuf::from).or_else(|| {
            env("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".pgpass"))
        });

        Ok(ConnConfig {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            channel_binding,
            application_name,
            connect_timeout,
            passfile,
        })
    }

    /// Where the server listens.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// TCP port (also the number in the Unix socket's file name).
    pub fn port(&self) -> u16 {
        self.port
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
    /// bundled Mozilla roots.
    pub fn sslrootcert(&self) -> Option<&str> {
        self.sslrootcert.as_deref()
    }

    /// SCRAM channel binding policy.
    pub fn channel_binding(&self) -> ChannelBinding {
        self.channel_binding
    }

    /// `application_name` reported to the server.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// Limit on connecting (TCP, TLS and authentication together).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The password file consulted when no password is given.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }

    /// Whether this connects over a Unix socket (TLS is never used there).
    pub fn is_unix_socket(&self) -> bool {
        matches!(self.host, Host::Unix(_))
    }

    /// The Unix socket path for a [`Host::Unix`] host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// `host:port` (or the socket path), for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(_) => {
                self.socket_path().map(|p| p.display().to_string()).unwrap_or_default()
            }
        }
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

    /// Same config with another host.
    pub fn with_host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    /// Same config with another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
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

    /// The password to use: the explicit one, else the first matching entry
    /// of the password file (skipped, like libpq, when it is not a regular
    /// file or is readable by group or others).
    pub fn effective_password(&self) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        let path = self.passfile.as_deref()?;
        let contents = read_passfile(path)?;
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        passfile_lookup(
            &contents,
            &host,
            self.is_unix_socket(),
            self.port,
            &self.dbname,
            &self.user,
        )
    }

    /// The connection string as a URL without the password: safe for logs
    /// and error messages.
    pub fn redacted(&self) -> String {
        let host = match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]"),
            Host::Tcp(h) => percent_encode(h),
            Host::Unix(p) => percent_encode(&p.display().to_string()),
        };
        let mut url = format!(
            "postgres://{}@{}:{}/{}?sslmode={}&application_name={}",
            percent_encode(&self.user),
            host,
            self.port,
            percent_encode(&self.dbname),
            self.sslmode,
            percent_encode(&self.application_name),
        );
        if let Some(root) = &self.sslrootcert {
            url.push_str("&sslrootcert=");
            url.push_str(&percent_encode(root));
        }
        if self.channel_binding != ChannelBinding::Prefer {
            url.push_str("&channel_binding=");
            url.push_str(self.channel_binding.as_str());
        }
        if let Some(t) = self.connect_timeout {
            url.push_str(&format!("&connect_timeout={}", t.as_secs()));
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
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("channel_binding", &self.channel_binding)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("passfile", &self.passfile)
            .finish()
    }
}

impl std::str::FromStr for ConnConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        ConnConfig::parse(s)
    }
}

fn default_host() -> Host {
    DEFAULT_SOCKET_DIRS
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .map_or_else(|| Host::Tcp("localhost".to_owned()), |p| Host::Unix(p.to_path_buf()))
}

/// libpq: whole seconds; 0 (or negative) waits forever; 1 is raised to 2.
fn parse_connect_timeout(s: &str) -> Result<Option<Duration>, Error> {
    let secs: i64 = s
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("invalid connect_timeout value: \"{s}\"")))?;
    Ok(match u64::try_from(secs) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(Duration::from_secs(n.max(2))),
    })
}

/// `user:pass@host:port/db?k=v&...` (after the scheme).
fn parse_url(rest: &str, raw: &mut RawOptions) -> Result<(), Error> {
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    // The last '@' separates user info: an unencoded '@' in a password is
    // tolerated that way.
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                raw.user = Some(percent_decode(user, "user name")?);
            }
            if let Some(p) = password {
                raw.password = Some(percent_decode(p, "password")?);
            }
            hostspec
        }
        None => authority,
    };
    if hostspec.contains(',') {
        return Err(Error::Config("multiple hosts are not supported".to_owned()));
    }
    let (host, port) = if let Some(v6) = hostspec.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| Error::Config("missing \"]\" in IPv6 host address".to_owned()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                Error::Config("unexpected characters after IPv6 host address".to_owned())
            })?),
        };
        (addr.to_owned(), port)
    } else {
        match hostspec.rsplit_once(':') {
            Some((h, p)) => (percent_decode(h, "host")?, Some(p)),
            None => (percent_decode(hostspec, "host")?, None),
        }
    };
    if !host.is_empty() {
        raw.host = Some(host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        raw.port = Some(percent_decode(p, "port")?);
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        raw.dbname = Some(percent_decode(db, "database name")?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "missing key/value separator \"=\" in URI query parameter {}",
                echo_key(pair)
            ))
        })?;
        let key = percent_decode(k, "query parameter")?;
        let value = percent_decode(v, &key)?;
        raw.set(&key, value)?;
    }
    Ok(())
}

/// A would-be key for an error message: echoed only if it looks like a keyword, since a
/// malformed string (say, a URL with an unknown scheme) can hold a password.
fn echo_key(key: &str) -> String {
    if !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        format!("\"{key}\"")
    } else {
        "a word that is not a keyword".to_owned()
    }
}

/// libpq's `key = value` form: values may be single-quoted; a backslash
/// escapes the next character both inside and outside quotes.
fn parse_key_value(s: &str, raw: &mut RawOptions) -> Result<(), Error> {
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::Config(format!(
                "missing \"=\" after {} in connection info string (URLs start with \
                 postgres:// or postgresql://)",
                echo_key(&key)
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(Error::Config(
                            "unterminated quoted string in connection info string".to_owned(),
                        ));
                    }
                    Some('\'') => break,
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        raw.set(&key, value)?;
    }
}

/// Decodes `%XX` escapes; `what` names the field for the error message
/// (the value itself is never echoed, it may be a password).
fn percent_decode(s: &str, what: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Config(format!("invalid percent-encoded token in {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Config(format!("{what} is not valid UTF-8")))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "password file is not a plain file; ignoring it");
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or \
                 less; ignoring it"
            );
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

/// Splits a `.pgpass` line on unescaped `:` into 5 fields, undoing `\`
/// escapes. The password (last field) takes the rest of the line.
fn split_passfile_line(line: &str) -> Option<[String; 5]> {
    let mut fields: [String; 5] = Default::default();
    let mut idx = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(e) = chars.next() {
                    fields[idx].push(e);
                }
            }
            ':' if idx < 4 => idx += 1,
            c => fields[idx].push(c),
        }
    }
    (idx == 4).then_some(fields)
}

/// The first `.pgpass` entry matching the connection (`*` matches anything;
/// an entry for `localhost` also matches Unix-socket connections).
pub(crate) fn passfile_lookup(
    contents: &str,
    host: &str,
    is_unix: bool,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    contents
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(split_passfile_line)
        .find(|[h, p, d, u, _]| {
            let host_ok = h == "*" || h == host || (is_unix && h == "localhost");
            host_ok
                && (p == "*" || *p == port)
                && (d == "*" || d == dbname)
                && (u == "*" || u == user)
        })
        .map(|[_, _, _, _, pw]| pw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn parse(s: &str) -> ConnConfig {
        ConnConfig::parse_with_env(s, &env_of(&[("USER", "ignored")])).unwrap()
    }

    #[test]
    fn url_full() {
        let c = parse(
            "postgres://al%40ice:p%3Ass%2Fw@db.example.com:6543/my%20db?sslmode=verify-full&\
             application_name=tail&sslrootcert=/etc/ca.pem&connect_timeout=7",
        );
        assert_eq!(c.host(), &Host::Tcp("db.example.com".into()));
        assert_eq!(c.port(), 6543);
        assert_eq!(c.user(), "al@ice");
        assert_eq!(c.password(), Some("p:ss/w"));
        assert_eq!(c.dbname(), "my db");
        assert_eq!(c.sslmode(), SslMode::VerifyFull);
        assert_eq!(c.application_name(), "tail");
        assert_eq!(c.sslrootcert(), Some("/etc/ca.pem"));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn url_variants() {
        let c = parse("postgresql://u@[::1]:5555/d");
        assert_eq!(c.host(), &Host::Tcp("::1".into()));
        assert_eq!(c.port(), 5555);
        assert_eq!(c.target(), "[::1]:5555");
        let c = parse("postgres://u@%2Fvar%2Frun%2Fpg/d");
        assert_eq!(c.host(), &Host::Unix("/var/run/pg".into()));
        assert_eq!(c.socket_path().unwrap(), PathBuf::from("/var/run/pg/.s.PGSQL.5432"));
        let c = parse("postgres:///d?host=/tmp/x&port=7000&user=bob");
        assert_eq!(c.host(), &Host::Unix("/tmp/x".into()));
        assert_eq!(c.port(), 7000);
        assert_eq!(c.user(), "bob");
        assert_eq!(c.dbname(), "d");
        // An unencoded '@' in the password: the last '@' splits.
        let c = parse("postgres://u:a@b@h/d");
        assert_eq!(c.password(), Some("a@b"));
        assert_eq!(c.host(), &Host::Tcp("h".into()));
        let c = parse("postgres://u@h/d?ssl=true");
        assert_eq!(c.sslmode(), SslMode::Require);
    }

    #[test]
    fn url_errors() {
        let env = env_of(&[]);
        for bad in [
            "postgres://u@h/d?bogus=1",
            "postgres://u@h:notaport/d",
            "postgres://u@h:0/d",
            "postgres://u@h1,h2/d",
            "postgres://u@[::1/d",
            "postgres://u@h/d?sslmode=sometimes",
            "postgres://u:%zz@h/d",
            "postgres://u@h/d?port",
        ] {
            let err = ConnConfig::parse_with_env(bad, &env).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
        // The password is never echoed, even when it is malformed.
        let err = ConnConfig::parse_with_env("postgres://u:sec%zret@h/d", &env).unwrap_err();
        assert!(!err.to_string().contains("sec"), "{err}");
    }

    #[test]
    fn key_value() {
        let c = parse(
            r"host=10.0.0.1 port = 6000 user=bob password='a b\'c\\d' dbname=x\ y sslmode=disable",
        );
        assert_eq!(c.host(), &Host::Tcp("10.0.0.1".into()));
        assert_eq!(c.port(), 6000);
        assert_eq!(c.user(), "bob");
        assert_eq!(c.password(), Some(r"a b'c\d"));
        assert_eq!(c.dbname(), "x y");
        assert_eq!(c.sslmode(), SslMode::Disable);
        let c = parse("host=/run/pg user=u password='' dbname=''");
        assert_eq!(c.host(), &Host::Unix("/run/pg".into()));
        assert_eq!(c.password(), None);
        assert_eq!(c.dbname(), "u");
    }

    #[test]
    fn key_value_errors() {
        let env = env_of(&[("PGUSER", "u")]);
        for bad in ["host", "host=a port", "password='abc", "nope=1", "connect_timeout=x"] {
            let err = ConnConfig::parse_with_env(bad, &env).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
        let err = ConnConfig::parse_with_env("password='secret", &env).unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn env_defaults_and_precedence() {
        let env = env_of(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "7777"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "/ca.pem"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "1"),
            ("PGCHANNELBINDING", "require"),
        ]);
        let c = ConnConfig::parse_with_env("", &env).unwrap();
        assert_eq!(c.host(), &Host::Tcp("envhost".into()));
        assert_eq!(c.port(), 7777);
        assert_eq!(c.user(), "envuser");
        assert_eq!(c.password(), Some("envpw"));
        assert_eq!(c.dbname(), "envdb");
        assert_eq!(c.sslmode(), SslMode::Require);
        assert_eq!(c.sslrootcert(), Some("/ca.pem"));
        assert_eq!(c.application_name(), "envapp");
        // libpq raises 1 s to 2 s.
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(c.channel_binding(), ChannelBinding::Require);

        let c =
            ConnConfig::parse_with_env("host=h user=me dbname=mine sslmode=disable", &env).unwrap();
        assert_eq!(c.host(), &Host::Tcp("h".into()));
        assert_eq!(c.user(), "me");
        assert_eq!(c.dbname(), "mine");
        assert_eq!(c.sslmode(), SslMode::Disable);
        assert_eq!(c.port(), 7777);
    }

    #[test]
    fn libpq_defaults() {
        let c = ConnConfig::parse_with_env("host=h", &env_of(&[])).unwrap();
        assert_eq!(c.port(), DEFAULT_PORT);
        assert_eq!(c.user(), whoami::username().unwrap());
        assert_eq!(c.dbname(), c.user());
        assert_eq!(c.sslmode(), SslMode::Prefer);
        assert_eq!(c.application_name(), DEFAULT_APPLICATION_NAME);
        assert_eq!(c.connect_timeout(), None);
        assert_eq!(c.passfile(), None);
        let c =
            ConnConfig::parse_with_env("host=h user=u", &env_of(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(c.passfile(), Some(Path::new("/home/u/.pgpass")));
        let c = parse("host=h user=u fallback_application_name=fb");
        assert_eq!(c.application_name(), "fb");
        let c = parse("host=h user=u connect_timeout=0");
        assert_eq!(c.connect_timeout(), None);
        let c = ConnConfig::parse_with_env("user=u", &env_of(&[])).unwrap();
        assert!(matches!(c.host(), Host::Unix(_) | Host::Tcp(_)));
    }

    #[test]
    fn redaction() {
        let c = parse("postgres://bob:hunter2@h:1/db?sslmode=require");
        let shown = [c.to_string(), format!("{c:?}"), c.redacted()];
        for s in &shown {
            assert!(!s.contains("hunter2"), "{s}");
        }
        assert_eq!(c.redacted(), "postgres://bob@h:1/db?sslmode=require&application_name=pgmirror");
        assert!(shown[1].contains("<redacted>"));
        // The redacted URL parses back to the same config minus the password.
        let back = parse(&c.redacted());
        assert_eq!(back, c.clone().with_password(None).with_passfile(None));
        let sock = parse("host='/tmp/s p' user=u dbname=d");
        let back = parse(&sock.redacted());
        assert_eq!(back.host(), &Host::Unix("/tmp/s p".into()));
    }

    #[test]
    fn passfile_matching() {
        let file = "# comment\n\
                    other:*:*:*:nope\n\
                    db.example.com:5432:app:bob:pw\\:with\\\\colon\n\
                    *:6000:*:*:wild\n\
                    localhost:5432:*:carol:sock\n";
        let look = |h: &str, unix: bool, port: u16, db: &str, u: &str| {
            passfile_lookup(file, h, unix, port, db, u)
        };
        assert_eq!(
            look("db.example.com", false, 5432, "app", "bob").as_deref(),
            Some(r"pw:with\colon")
        );
        assert_eq!(look("db.example.com", false, 5432, "other", "bob"), None);
        assert_eq!(look("anything", false, 6000, "x", "y").as_deref(), Some("wild"));
        assert_eq!(look("/run/pg", true, 5432, "x", "carol").as_deref(), Some("sock"));
        assert_eq!(look("h", false, 5432, "x", "carol"), None);
        assert_eq!(split_passfile_line("a:b:c"), None);
    }

    #[test]
    fn passfile_file_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "h:5432:d:u:from-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = env_of(&[("PGPASSFILE", path.to_str().unwrap())]);
        let c = ConnConfig::parse_with_env("host=h user=u dbname=d", &env).unwrap();
        assert_eq!(c.password(), None);
        assert_eq!(c.effective_password().as_deref(), Some("from-file"));
        // An explicit password wins.
        let c2 = c.clone().with_password(Some("explicit".into()));
        assert_eq!(c2.effective_password().as_deref(), Some("explicit"));
        // Group/world-readable files are ignored, like libpq.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(c.effective_password(), None);
        // So is a missing file.
        let c3 = c.with_passfile(Some(dir.path().join("missing")));
        assert_eq!(c3.effective_password(), None);
    }
}
