//! Throwaway MariaDB servers.
//!
//! A [`MariaDb`] is a data directory in a temporary directory (a copy of a per-process
//! `mariadb-install-db` template), served by its own `mariadbd` on a free port of 127.0.0.1
//! and a private Unix socket. When running as root the server runs as the `mysql` OS user.
//!
//! Settings (each can be overridden with [`MariaDbBuilder::setting`]): `utf8mb4` with
//! `utf8mb4_general_ci`, `sql_mode = TRADITIONAL` (strict), time zone UTC, `local_infile`
//! on, a 64 MB InnoDB buffer pool and 16 MB redo log, no binary log unless
//! [`MariaDbBuilder::binlog`], durable commits unless [`MariaDbBuilder::fast_unsafe`].
//!
//! Accounts: `root` may log in over TCP (the server listens on 127.0.0.1 only) and over the
//! socket, with no password unless [`MariaDbBuilder::password`] sets one (for both).

mod install;

use std::fmt;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serverproc::{IoContext, RunAs, ServerProcess};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor};
use tempfile::TempDir;

use crate::conf::validate_setting;
use crate::{Error, Server};
use install::{Options, Paths, Programs};

/// Configures and starts a [`MariaDb`].
///
/// ```no_run
/// # fn main() -> Result<(), testservers::Error> {
/// let server = testservers::MariaDbBuilder::new()
///     .password("secret")
///     .setting("innodb_buffer_pool_size", "256M")
///     .start()?;
/// println!("{}", server.url("mysql"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MariaDbBuilder {
    options: Options,
    password: Option<String>,
    start_timeout: Duration,
}

impl fmt::Debug for MariaDbBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDbBuilder")
            .field("options", &self.options)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("start_timeout", &self.start_timeout)
            .finish()
    }
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MariaDbBuilder {
    /// Defaults: no password, no binary log, durable commits.
    pub fn new() -> Self {
        MariaDbBuilder {
            options: Options::default(),
            password: None,
            start_timeout: Duration::from_secs(60),
        }
    }

    /// Adds a `[mariadbd]` option-file setting (`name = value`; `-` and `_` are the same in
    /// names). Later settings override earlier ones and this crate's.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.settings.push((name.into(), value.into()));
        self
    }

    /// Sets the password of `root` (from TCP and the socket).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Turns the binary log on (`log-bin`, `binlog-format = ROW`, `server-id = 1`), so that
    /// commits are two-phase between the binary log and InnoDB, as on a replication source.
    pub fn binlog(mut self) -> Self {
        self.options.binlog = true;
        self
    }

    /// Trades durability for speed (`innodb_flush_log_at_trx_commit = 2`, no doublewrite
    /// buffer): commits survive a crash of the server ([`MariaDb::kill9`]) but not of the
    /// machine. Only for functional tests, never for benchmarks.
    pub fn fast_unsafe(mut self) -> Self {
        self.options.fast_unsafe = true;
        self
    }

    /// How long `start` waits for the server to accept connections (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Creates the server (a copy of the per-process template) and starts it.
    ///
    /// # Errors
    /// Missing programs (`apt-get install mariadb-server`), no `mysql` OS user when root, a
    /// bad setting, or a server that does not come up (the error holds its log's tail).
    pub fn start(self) -> Result<MariaDb, Error> {
        for (name, value) in &self.options.settings {
            validate_setting(name, value)?;
        }
        let programs = Programs::find()?;
        let run_as = install::run_as()?;
        let dir = serverproc::tempdir("testservers-mariadb-")?;
        run_as.chown(dir.path())?;
        let paths = Paths::new(dir.path());
        install::materialize(&programs, run_as, &paths.data_dir)?;
        serverproc::private_dir(&paths.tmp, run_as)?;
        // The password is set by the first start, from a file only the server can read,
        // before the server accepts connections: never in argv, never a window without it.
        let init_file = match &self.password {
            Some(password) => {
                let path = paths.base.join("password.sql");
                serverproc::private_file(&path, password_sql(password).as_bytes(), run_as)?;
                Some(path)
            }
            None => None,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = serverproc::free_port()?;
            let text = install::option_file(&paths, port, &self.options)?;
            std::fs::write(&paths.options, text)
                .ctx(|| format!("write {}", paths.options.display()))?;
            run_as.chown(&paths.options)?;
            let server = MariaDb {
                mariadbd: programs.mariadbd.clone(),
                run_as,
                port,
                password: self.password.clone(),
                paths: paths.clone(),
                start_timeout: self.start_timeout,
                process: ServerProcess::new(
                    format!("mariadbd (port {port})"),
                    paths.base.join("mariadbd.log"),
                    libc::SIGKILL,
                ),
                dir: Mutex::new(None),
            };
            match server.start_with(init_file.as_deref()) {
                Ok(()) => {
                    if let Some(path) = &init_file {
                        let _ = std::fs::remove_file(path);
                    }
                    *server.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                    return Ok(server);
                }
                // Another process took the port between free_port and the bind.
                Err(Error::Process(e)) if e.is_port_clash() && attempts < 5 => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The statement that sets root's password for every root account.
fn password_sql(password: &str) -> String {
    let secret = quote_literal(password);
    let accounts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|host| format!("'root'@'{host}' IDENTIFIED BY {secret}"))
        .collect();
    format!("ALTER USER {};\n", accounts.join(", "))
}

/// A running (or stopped) throwaway MariaDB server. Removed (server killed, files deleted)
/// when dropped.
pub struct MariaDb {
    mariadbd: PathBuf,
    run_as: RunAs,
    port: u16,
    password: Option<String>,
    paths: Paths,
    start_timeout: Duration,
    process: ServerProcess,
    /// Owns the directory; taken (and so deleted) by `destroy`.
    dir: Mutex<Option<TempDir>>,
}

impl fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDb")
            .field("port", &self.port)
            .field("data_dir", &self.paths.data_dir)
            .field("socket", &self.paths.socket)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl MariaDb {
    /// Starts a server with default settings (`MariaDbBuilder::new().start()`).
    ///
    /// # Errors
    /// As [`MariaDbBuilder::start`].
    pub fn new() -> Result<MariaDb, Error> {
        MariaDbBuilder::new().start()
    }

    /// A new [`MariaDbBuilder`].
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::new()
    }

    /// The TCP port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The server's Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.paths.socket
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.paths.data_dir
    }

    /// Root's password, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `mysql://root[:password]@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        self.url_for("root", self.password.as_deref(), db)
    }

    /// A URL for another user (user, password and database percent-encoded).
    pub fn url_for(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut url = format!("mysql://{}", percent_encode(user));
        if let Some(password) = password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push_str(&format!("@{}:{}/{}", self.host(), self.port, percent_encode(db)));
        url
    }

    /// sqlx connection options for root on TCP.
    pub fn connect_options(&self, db: &str) -> MySqlConnectOptions {
        let options = MySqlConnectOptions::new()
            .host(self.host())
            .port(self.port)
            .username("root")
            .database(db);
        match &self.password {
            Some(password) => options.password(password),
            None => options,
        }
    }

    /// Connects as root over TCP.
    ///
    /// # Errors
    /// The connection or authentication failed.
    pub async fn connect(&self, db: &str) -> Result<MySqlConnection, Error> {
        Ok(MySqlConnection::connect_with(&self.connect_options(db)).await?)
    }

    /// Creates database `name` (quoted, so any name works).
    ///
    /// # Errors
    /// Connecting failed or the database exists.
    pub async fn create_database(&self, name: &str) -> Result<(), Error> {
        self.execute(&format!("CREATE DATABASE {}", quote_ident(name))).await
    }

    /// Drops database `name` if it exists.
    ///
    /// # Errors
    /// Connecting or the drop failed.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        self.execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name))).await
    }

    async fn execute(&self, sql: &str) -> Result<(), Error> {
        let mut conn = self.connect("mysql").await?;
        conn.execute(sql).await?;
        conn.close().await?;
        Ok(())
    }

    fn start_with(&self, init_file: Option<&Path>) -> Result<(), Error> {
        let mut cmd = Command::new(&self.mariadbd);
        // `--defaults-file` must come first.
        cmd.arg(format!("--defaults-file={}", self.paths.options.display()));
        if let Some(file) = init_file {
            cmd.arg(format!("--init-file={}", file.display()));
        }
        cmd.current_dir(&self.paths.base);
        self.run_as.apply(&mut cmd);
        let socket = &self.paths.socket;
        Ok(self.process.start(cmd, self.start_timeout, |_| greets(socket))?)
    }

    /// Kills the server and deletes its files. Idempotent.
    pub(crate) fn destroy(&self) {
        let _ = self.kill9();
        drop(self.dir.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl Server for MariaDb {
    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn start(&self) -> Result<(), Error> {
        self.start_with(None)
    }

    fn stop(&self) -> Result<(), Error> {
        Ok(self.process.stop(libc::SIGTERM, Duration::from_secs(120))?)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Whether a MariaDB server answers on `socket` with its greeting (protocol version 10):
/// the socket is ours, so the answer is from our server, after crash recovery. (The server
/// logs the probe as an aborted, unauthenticated connection.)
fn greets(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // A packet header (3 bytes length, 1 byte sequence), then the protocol version.
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && head[4] == 10
}

/// Quotes a MariaDB identifier: `` ` `` + the name with `` ` `` doubled + `` ` ``.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a MariaDB string literal (for `sql_mode`s without `NO_BACKSLASH_ESCAPES`, as
/// on the servers started here).
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    const UNRESERVED: &AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

static SHARED: OnceLock<MariaDb> = OnceLock::new();

/// The MariaDB server shared by all tests of this test process, started on first use (no
/// password, [`MariaDbBuilder::fast_unsafe`]).
///
/// Use it for tests that only need their own database (see [`crate::unique_name`]); tests
/// that stop, restart or crash a server must start their own [`MariaDb`]. It is removed at
/// process exit, and killed by the kernel if the process is killed (its temporary directory
/// is then left behind in `$TMPDIR`).
///
/// # Panics
/// If the server cannot be started (the message says why, e.g. which package to install).
pub fn shared() -> &'static MariaDb {
    SHARED.get_or_init(|| {
        let server = MariaDbBuilder::new()
            .fast_unsafe()
            .start()
            .unwrap_or_else(|e| panic!("testservers: starting the shared MariaDB failed: {e}"));
        crate::exit::register_cleanup();
        server
    })
}

/// Removes the shared server and the template (at process exit).
pub(crate) fn clean_up() {
    if let Some(server) = SHARED.get() {
        server.destroy();
    }
    install::remove_template();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_statement_covers_every_root_account() {
        assert_eq!(
            password_sql("it's"),
            "ALTER USER 'root'@'localhost' IDENTIFIED BY 'it''s', \
             'root'@'127.0.0.1' IDENTIFIED BY 'it''s', 'root'@'::1' IDENTIFIED BY 'it''s';\n"
        );
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal(r"it's a\b"), r"'it''s a\\b'");
        assert_eq!(quote_literal("nul\0"), r"'nul\0'");
    }

    #[test]
    fn identifiers_and_urls_are_quoted() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }
}
