//! libpq's keywords and its two connection string syntaxes (`postgres://` URLs and
//! `key=value`), parsed into [`Params`] before any default is applied.

use std::collections::BTreeMap;

use crate::error::Error;

/// What pgmirror does with a libpq keyword.
#[derive(Debug, Clone, Copy)]
enum Support {
    /// Understood (some values may still be refused when the config is resolved).
    Yes,
    /// Refused with this reason, so that no setting is dropped silently.
    No(&'static str),
}

/// One libpq connection keyword and the environment variable that supplies its default.
#[derive(Debug)]
struct Keyword {
    name: &'static str,
    env: Option<&'static str>,
    support: Support,
}

const fn yes(name: &'static str, env: Option<&'static str>) -> Keyword {
    Keyword { name, env, support: Support::Yes }
}

const fn no(name: &'static str, why: &'static str) -> Keyword {
    Keyword { name, env: None, support: Support::No(why) }
}

/// libpq's keywords (PostgreSQL 17), in the order libpq lists them.
const KEYWORDS: &[Keyword] = &[
    yes("service", Some("PGSERVICE")),
    yes("user", Some("PGUSER")),
    yes("password", Some("PGPASSWORD")),
    yes("passfile", Some("PGPASSFILE")),
    yes("channel_binding", Some("PGCHANNELBINDING")),
    yes("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    yes("dbname", Some("PGDATABASE")),
    yes("host", Some("PGHOST")),
    no("hostaddr", "give the address in host= instead"),
    yes("port", Some("PGPORT")),
    yes("client_encoding", Some("PGCLIENTENCODING")),
    yes("options", Some("PGOPTIONS")),
    yes("application_name", Some("PGAPPNAME")),
    yes("fallback_application_name", None),
    yes("keepalives", None),
    yes("keepalives_idle", None),
    yes("keepalives_interval", None),
    yes("keepalives_count", None),
    yes("tcp_user_timeout", None),
    yes("sslmode", Some("PGSSLMODE")),
    yes("sslnegotiation", Some("PGSSLNEGOTIATION")),
    yes("sslcompression", Some("PGSSLCOMPRESSION")),
    yes("sslcert", Some("PGSSLCERT")),
    yes("sslkey", Some("PGSSLKEY")),
    yes("sslcertmode", Some("PGSSLCERTMODE")),
    no("sslpassword", "use a private key file that is not encrypted"),
    yes("sslrootcert", Some("PGSSLROOTCERT")),
    no("sslcrl", "certificate revocation lists are not checked"),
    no("sslcrldir", "certificate revocation lists are not checked"),
    yes("sslsni", Some("PGSSLSNI")),
    no("requirepeer", "connect with a user name the server authenticates instead"),
    no("require_auth", "configure the accepted methods in the server's pg_hba.conf instead"),
    no("ssl_min_protocol_version", "TLS 1.2 and 1.3 are always accepted"),
    no("ssl_max_protocol_version", "TLS 1.2 and 1.3 are always accepted"),
    yes("gssencmode", Some("PGGSSENCMODE")),
    no("krbsrvname", "GSSAPI/Kerberos authentication is not supported"),
    no("gsslib", "GSSAPI/Kerberos authentication is not supported"),
    no("gssdelegation", "GSSAPI/Kerberos authentication is not supported"),
    no("replication", "pgmirror chooses the connection kind itself"),
    yes("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    yes("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
];

fn keyword(name: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.name == name)
}

/// Keyword values as written, before the service file, `PG*` variables and defaults.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    values: BTreeMap<&'static str, String>,
}

impl Params {
    /// Records `key = value`; a later value for the same key wins (as in libpq).
    ///
    /// # Errors
    /// An unknown keyword, or one pgmirror does not support (named with the reason).
    pub(crate) fn set(&mut self, key: &str, value: String) -> Result<(), Error> {
        // JDBC-style `ssl=true`, which libpq also accepts in URLs.
        if key == "ssl" && value == "true" {
            self.values.insert("sslmode", "require".to_owned());
            return Ok(());
        }
        let Some(kw) = keyword(key) else {
            return Err(Error::Config(format!("invalid connection option {}", echo_key(key))));
        };
        match kw.support {
            Support::Yes => {
                self.values.insert(kw.name, value);
                Ok(())
            }
            // An empty value means "not set", so it asks for nothing unsupported.
            Support::No(_) if value.is_empty() => Ok(()),
            Support::No(why) => Err(Error::Config(format!(
                "connection option \"{}\" is not supported by pgmirror ({why})",
                kw.name
            ))),
        }
    }

    /// The value of `key` when set and not empty (an empty value counts as unset, as in
    /// libpq).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Whether `key` has a non-empty value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Takes every keyword of `other` that is not set here yet.
    pub(crate) fn fill_from(&mut self, other: Params) {
        for (k, v) in other.values {
            if !self.has(k) {
                self.values.insert(k, v);
            }
        }
    }

    /// Takes each unset keyword's `PG*` variable, when it is set and not empty.
    pub(crate) fn fill_from_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for kw in KEYWORDS {
            if let (Support::Yes, Some(var)) = (kw.support, kw.env)
                && !self.has(kw.name)
                && let Some(value) = env(var).filter(|v| !v.is_empty())
            {
                self.values.insert(kw.name, value);
            }
        }
    }
}

/// Parses a URL (`postgres://` or `postgresql://`) or a `key=value` string into `params`.
pub(crate) fn parse(s: &str, params: &mut Params) -> Result<(), Error> {
    let trimmed = s.trim();
    match trimmed.strip_prefix("postgres://").or_else(|| trimmed.strip_prefix("postgresql://")) {
        Some(rest) => parse_url(rest, params),
        None => parse_key_value(trimmed, params),
    }
}

/// Whether `s` is a connection string rather than a plain database name (libpq's rule for
/// expanding `dbname`).
pub(crate) fn is_conninfo(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://") || s.contains('=')
}

/// `user:pass@host:port,host:port/db?k=v&...` (after the scheme).
fn parse_url(rest: &str, params: &mut Params) -> Result<(), Error> {
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
    let hostspecs = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.set("user", percent_decode(user, "user name")?)?;
            }
            if let Some(p) = password {
                params.set("password", percent_decode(p, "password")?)?;
            }
            hostspec
        }
        None => authority,
    };
    // Several hosts are separated by commas, each with its own optional port.
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for spec in hostspecs.split(',') {
        let (host, port) = parse_hostspec(spec)?;
        hosts.push(host);
        ports.push(match port {
            Some(p) => percent_decode(p, "port")?,
            None => String::new(),
        });
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        params.set("host", hosts.join(","))?;
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.set("port", ports.join(","))?;
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.set("dbname", percent_decode(db, "database name")?)?;
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
        params.set(&key, value)?;
    }
    Ok(())
}

/// One `host[:port]` of a URL, the host decoded (`[v6]` brackets removed).
fn parse_hostspec(spec: &str) -> Result<(String, Option<&str>), Error> {
    if let Some(v6) = spec.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| Error::Config("missing \"]\" in IPv6 host address".to_owned()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                Error::Config("unexpected characters after IPv6 host address".to_owned())
            })?),
        };
        return Ok((addr.to_owned(), port));
    }
    Ok(match spec.rsplit_once(':') {
        Some((h, p)) => (percent_decode(h, "host")?, Some(p)),
        None => (percent_decode(spec, "host")?, None),
    })
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
fn parse_key_value(s: &str, params: &mut Params) -> Result<(), Error> {
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
        params.set(&key, value)?;
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

/// Encodes everything but unreserved URL characters.
pub(crate) fn percent_encode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Params {
        let mut p = Params::default();
        parse(s, &mut p).unwrap();
        p
    }

    #[test]
    fn url_with_several_hosts() {
        let p = parsed("postgres://u@h1:5433,[::1]:5434,h3/db?target_session_attrs=read-write");
        assert_eq!(p.get("host"), Some("h1,::1,h3"));
        assert_eq!(p.get("port"), Some("5433,5434,"));
        assert_eq!(p.get("target_session_attrs"), Some("read-write"));
        let p = parsed("postgresql://a,b/db");
        assert_eq!(p.get("host"), Some("a,b"));
        assert_eq!(p.get("port"), None);
    }

    #[test]
    fn unsupported_keywords_are_named() {
        let mut p = Params::default();
        for (kv, why) in [
            ("hostaddr=127.0.0.1", "host="),
            ("sslcrl=/x.crl", "revocation"),
            ("krbsrvname=pg", "GSSAPI"),
            ("replication=database", "connection kind"),
        ] {
            let err = parse(kv, &mut p).unwrap_err().to_string();
            let key = kv.split('=').next().unwrap();
            assert!(err.contains(&format!("\"{key}\" is not supported")), "{err}");
            assert!(err.contains(why), "{err}");
        }
        // An empty value asks for nothing.
        parse("hostaddr=''", &mut p).unwrap();
        let err = parse("bogus=1", &mut p).unwrap_err().to_string();
        assert!(err.contains("invalid connection option \"bogus\""), "{err}");
    }

    #[test]
    fn conninfo_or_database_name() {
        assert!(is_conninfo("postgres://h/db"));
        assert!(is_conninfo("host=h dbname=d"));
        assert!(!is_conninfo("mydb"));
    }
}
