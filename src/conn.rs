//! Connection settings from the command line, as psql takes them: a connection string
//! (`--source`/`--target`), psql's `-h -p -U -d` for the source, the `PG*` variables and the
//! service file, libpq's defaults for the rest, and a password prompt on the terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::target_url::TargetUrl;
use anyhow::Context;
use clap::Args;
use pgconn::{ConnConfig, PasswordPrompt, SqlState};

/// When to ask for a password on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// When a server wants one that no setting gives, if stdin is a terminal (psql's default).
    Auto,
    /// Before connecting, for every connection without a password (`-W`, like psql's).
    Always,
    /// Never (`-w`, like psql's): a server that wants a password fails the connection.
    Never,
}

static PROMPT: AtomicU8 = AtomicU8::new(0);

/// Sets when passwords are asked for, for the rest of the process.
pub fn set_prompt(prompt: Prompt) {
    PROMPT.store(prompt as u8, Ordering::Relaxed);
}

fn prompt_mode() -> Prompt {
    match PROMPT.load(Ordering::Relaxed) {
        1 => Prompt::Always,
        2 => Prompt::Never,
        _ => Prompt::Auto,
    }
}

/// The help section of [`SourceArgs`].
const SOURCE_HEADING: &str = "Source (the primary; PG* variables fill in the rest)";

/// Set when the source came from libpq's defaults alone: what they made of it.
static DEFAULT_SOURCE: OnceLock<String> = OnceLock::new();

/// Where the source is: a connection string and psql's short options, each optional.
///
/// Precedence, most specific first: `-h -p -U -d` override the matching parts of `--source`
/// (or of `PGMIRROR_SOURCE`); the connection string, then the service file it names, then the
/// `PG*` variables give the rest; libpq's defaults (the local socket, the OS user name, a
/// database named like the user) fill what is still missing, as in psql.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// The primary, as a URL (`postgres://user@host:port/db?...`) or `key=value` string.
    #[arg(long, env = "PGMIRROR_SOURCE", hide_env_values = true, value_name = "CONNINFO")]
    #[arg(help_heading = SOURCE_HEADING)]
    pub source: Option<String>,
    /// The primary's host name, address or socket directory (overrides --source's).
    #[arg(short = 'h', long = "host", help_heading = SOURCE_HEADING, value_name = "HOST")]
    pub host: Option<String>,
    /// The primary's port (overrides --source's).
    #[arg(short = 'p', long = "port", help_heading = SOURCE_HEADING, value_name = "PORT")]
    pub port: Option<String>,
    /// The role to connect to the primary as (overrides --source's).
    #[arg(short = 'U', long = "username", help_heading = SOURCE_HEADING, value_name = "USER")]
    pub username: Option<String>,
    /// The primary's database (overrides --source's), or a whole connection string, as
    /// psql's -d takes.
    #[arg(short = 'd', long = "dbname", help_heading = SOURCE_HEADING, value_name = "DBNAME")]
    pub dbname: Option<String>,
}

impl SourceArgs {
    /// The source's connection settings.
    ///
    /// # Errors
    /// A malformed connection string or option (named, never echoed: it may hold a password),
    /// two connection strings, or `-W` without a terminal.
    pub fn config(&self) -> anyhow::Result<ConnConfig> {
        self.resolve(true)
    }

    /// Like [`SourceArgs::config`], but refuses a source made of libpq's defaults alone: for
    /// `mirror`, which retries an unreachable server for ever instead of failing.
    ///
    /// # Errors
    /// As [`SourceArgs::config`], and nothing that names the source.
    pub fn named_config(&self) -> anyhow::Result<ConnConfig> {
        self.resolve(false)
    }

    fn resolve(&self, allow_defaults: bool) -> anyhow::Result<ConnConfig> {
        let env = |name: &str| std::env::var(name).ok();
        let (conninfo, dbname) = match (&self.source, &self.dbname) {
            (Some(_), Some(d)) if ConnConfig::is_conninfo(d) => anyhow::bail!(
                "--source and -d both hold a connection string; give the source with one of them"
            ),
            (None, Some(d)) if ConnConfig::is_conninfo(d) => (d.as_str(), None),
            (s, d) => (s.as_deref().unwrap_or(""), d.as_deref()),
        };
        let overrides = [
            ("host", self.host.as_deref().unwrap_or("")),
            ("port", self.port.as_deref().unwrap_or("")),
            ("user", self.username.as_deref().unwrap_or("")),
            ("dbname", dbname.unwrap_or("")),
        ];
        let cfg = ConnConfig::from_params(conninfo, &overrides, &env).or_else(|e| {
            // Name the culprit: the connection string, or the options on top of it.
            let named = if self.source.is_some() { "--source" } else { "-d" };
            ConnConfig::parse(conninfo)
                .with_context(|| format!("{named}: invalid connection string"))?;
            Err(e).context("-h/-p/-U/-d: invalid connection setting")
        })?;
        if cfg.is_all_defaults() {
            let tried = format!(
                "{} as user \"{}\" to database \"{}\"",
                cfg.target(),
                cfg.user(),
                cfg.dbname()
            );
            anyhow::ensure!(
                allow_defaults,
                "no source given: name the primary with --source postgres://USER@HOST:PORT/DBNAME, \
                 -h HOST -p PORT -U USER -d DBNAME, or PGHOST, PGPORT, PGUSER and PGDATABASE (a \
                 mirror runs for ever and does not guess it from libpq's defaults: {tried})"
            );
            tracing::info!("no source given: connecting with libpq's defaults to {tried}");
            let _ = DEFAULT_SOURCE.set(tried);
        }
        with_prompt(cfg, "source")
    }
}

/// Parses a `--target` (or other) connection string. The error names the option but never
/// echoes the string, which may hold a password. Passwords are asked for as [`Prompt`] says.
///
/// # Errors
/// A malformed connection string, or `-W` without a terminal to ask on.
pub fn parse(option: &str, value: &str) -> anyhow::Result<ConnConfig> {
    let cfg =
        ConnConfig::parse(value).with_context(|| format!("{option}: invalid connection string"))?;
    with_prompt(cfg, option.trim_start_matches('-'))
}

/// `--target`'s value: a MySQL/MariaDB URL, or a PostgreSQL connection string parsed as
/// [`parse`] does (with its password prompt). [`TargetUrl::parse`] decides which.
///
/// # Errors
/// A malformed connection string, named by the option.
pub fn parse_target(value: &str) -> anyhow::Result<TargetUrl> {
    let other_kind =
        applier::mysql::session::is_mysql_url(value) || crate::target_url::is_nats_url(value);
    match TargetUrl::parse(value) {
        Ok(TargetUrl::Postgres(_)) | Err(_) if !other_kind => {
            parse("--target", value).map(TargetUrl::Postgres)
        }
        Ok(target) => Ok(target),
        Err(e) => Err(e.context("--target")),
    }
}

/// Adds the password prompt `what` (`source`, `target`) asks with, as [`Prompt`] says.
fn with_prompt(cfg: ConnConfig, what: &str) -> anyhow::Result<ConnConfig> {
    let terminal = std::io::stdin().is_terminal();
    match prompt_mode() {
        Prompt::Never => Ok(cfg),
        Prompt::Auto if !terminal => Ok(cfg),
        Prompt::Auto => Ok(cfg.with_password_prompt(Arc::new(TerminalPrompt::new(what)))),
        Prompt::Always if cfg.effective_password().is_some() => Ok(cfg),
        Prompt::Always => {
            anyhow::ensure!(
                terminal,
                "-W/--password needs a terminal to ask for the {what} password; use PGPASSWORD \
                 or a password file (~/.pgpass or PGPASSFILE) instead"
            );
            let password = TerminalPrompt::new(what)
                .ask(cfg.user(), &cfg.target())
                .with_context(|| format!("reading the {what} password"))?;
            Ok(cfg.with_password(Some(password)))
        }
    }
}

/// Asks on the terminal (never echoed, never logged), once per role and server.
#[derive(Debug)]
struct TerminalPrompt {
    what: String,
    answers: Mutex<HashMap<(String, String), String>>,
}

impl TerminalPrompt {
    fn new(what: &str) -> Self {
        TerminalPrompt { what: what.to_owned(), answers: Mutex::new(HashMap::new()) }
    }

    fn ask(&self, user: &str, target: &str) -> std::io::Result<String> {
        rpassword::prompt_password(format!("Password for {user}@{target} ({}): ", self.what))
    }
}

impl PasswordPrompt for TerminalPrompt {
    fn password(&self, user: &str, target: &str) -> Option<String> {
        // Held while asking, so parallel connections wait for one answer.
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (user.to_owned(), target.to_owned());
        if let Some(known) = answers.get(&key) {
            return Some(known.clone());
        }
        let password = self.ask(user, target).ok()?;
        answers.insert(key, password.clone());
        Some(password)
    }
}

/// Completes a command's error with what only the command line knows: how to give a
/// password, the fix for a connection failure, and, when the source came from libpq's
/// defaults alone, what was tried and how to give one.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    let Some(conn_err) = err.chain().find_map(replication::connection_error) else {
        return err;
    };
    let mut notes = Vec::new();
    // Server errors and some others carry their fix already.
    if let Some(fix) = conn_err.fix()
        && !format!("{err:#}").contains(&fix)
    {
        notes.push(format!("fix: {fix}"));
    }
    if conn_err.is_password_missing() {
        notes.push(
            "on a terminal pgmirror asks for it (-W: ask before connecting, -w: never ask)"
                .to_owned(),
        );
    }
    let failed_to_connect = conn_err.is_connection_lost()
        || conn_err.is_auth_failure()
        || conn_err.code() == Some(&SqlState::INVALID_CATALOG_NAME)
        || matches!(conn_err, pgconn::Error::ConnectTimeout { .. });
    if failed_to_connect && let Some(tried) = DEFAULT_SOURCE.get() {
        notes.push(format!(
            "no source was given, so libpq's defaults were tried ({tried}): give one with \
             --source postgres://USER@HOST:PORT/DBNAME, -h HOST -p PORT -U USER -d DBNAME, or \
             PGHOST, PGPORT, PGUSER and PGDATABASE"
        ));
    }
    if notes.is_empty() {
        return err;
    }
    anyhow::anyhow!("{err:#}; {}", notes.join("; "))
}
