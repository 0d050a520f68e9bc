//! The cluster itself: configuration, lifecycle and connection helpers.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use pgconn::{quote_ident, quote_literal};
use serverproc::{IoContext, RunAs, ServerProcess};
use tempfile::TempDir;
use tokio_postgres::NoTls;

use crate::Error;

use crate::tls::{self, InstalledTls, TlsConfig};

/// How clients authenticate; written to `pg_hba.conf` for normal and replication
/// connections, over the Unix socket and TCP (127.0.0.1 and ::1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// No password needed.
    #[default]
    Trust,
    /// Cleartext password.
    Password,
    /// MD5 challenge; the password is stored as an MD5 hash.
    Md5,
    /// SCRAM-SHA-256; the password is stored as a SCRAM secret.
    ScramSha256,
}

impl AuthMethod {
    /// The method's name in `pg_hba.conf`.
    pub fn hba_name(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }

    /// The `password_encryption` used when storing the superuser password. An MD5-stored
    /// password is required for `md5` to really run the MD5 exchange (with a SCRAM secret the
    /// server silently upgrades md5 to SCRAM).
    fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// How to stop the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: abort transactions, disconnect clients, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once without a checkpoint; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn signal(self) -> libc::c_int {
        match self {
            StopMode::Smart => libc::SIGTERM,
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }
}

/// Configures and starts a [`Cluster`].
///
/// ```no_run
/// # fn main() -> Result<(), pgcluster::Error> {
/// let cluster = pgcluster::ClusterBuilder::new()
///     .auth(pgcluster::AuthMethod::ScramSha256)
///     .password("secret")
///     .setting("log_min_messages", "debug1")
///     .start()?;
/// println!("{}", cluster.port());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterBuilder {
    bindir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    auth: AuthMethod,
    password: Option<String>,
    tls: Option<TlsConfig>,
    wal_sender_timeout: Option<Duration>,
    fast_unsafe: bool,
    start_timeout: Duration,
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("bindir", &self.bindir)
            .field("settings", &self.settings)
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("wal_sender_timeout", &self.wal_sender_timeout)
            .field("fast_unsafe", &self.fast_unsafe)
            .field("start_timeout", &self.start_timeout)
            .finish()
    }
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterBuilder {
    /// Defaults: trust auth, no password, no TLS, durable settings (fsync on).
    pub fn new() -> Self {
        ClusterBuilder {
            bindir: None,
            settings: Vec::new(),
            auth: AuthMethod::Trust,
            password: None,
            tls: None,
            wal_sender_timeout: None,
            fast_unsafe: false,
            start_timeout: Duration::from_secs(60),
        }
    }

    /// Uses the server binaries in `dir` instead of searching for them.
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Adds a `postgresql.conf` setting. Later settings override earlier ones and the
    /// defaults this crate writes.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets the client authentication method (default: trust).
    pub fn auth(mut self, method: AuthMethod) -> Self {
        self.auth = method;
        self
    }

    /// Sets the password of the `postgres` superuser.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Turns on TLS (`ssl = on`) with the given or a generated certificate.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets `wal_sender_timeout`.
    pub fn wal_sender_timeout(mut self, timeout: Duration) -> Self {
        self.wal_sender_timeout = Some(timeout);
        self
    }

    /// Trades durability for speed (`fsync`, `synchronous_commit`, `full_page_writes` off).
    /// Only for functional tests: never for benchmarks, and not for crash tests that rely on
    /// committed data surviving an OS crash (a server crash alone is still survived).
    pub fn fast_unsafe(mut self) -> Self {
        self.fast_unsafe = true;
        self
    }

    /// How long `start` waits for the server to accept connections (default 60 s; crash
    /// recovery after [`Cluster::kill9`] can take a while on a busy machine).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Creates the cluster (a copy of a per-process initdb template) and starts it.
    ///
    /// # Errors
    /// Missing binaries, missing `postgres` OS user when root, a failed initdb or a server
    /// that does not come up.
    pub fn start(self) -> Result<Cluster, Error> {
        let began = Instant::now();
        if self.auth != AuthMethod::Trust && self.password.is_none() {
            return Err(Error::PasswordRequired(self.auth));
        }
        for (name, value) in &self.settings {
            validate_setting(name, value)?;
        }
        let bindir = match &self.bindir {
            Some(dir) => dir.clone(),
            None => crate::find_bindir()?,
        };
        let run_as = RunAs::detect("postgres")?;

        let dir = serverproc::tempdir("pgcluster-")?;
        run_as.chown(dir.path())?;
        let base = dir.path().to_path_buf();
        let data_dir = base.join("data");
        let socket_dir = base.join("socket");
        serverproc::private_dir(&socket_dir, run_as)?;
        crate::template::materialize(&bindir, &data_dir, run_as)?;

        if let Some(password) = &self.password {
            set_password(&bindir, &data_dir, run_as, self.auth, password)?;
        }
        let tls = match &self.tls {
            Some(config) => Some(tls::install(config, &data_dir, &base, run_as)?),
            None => None,
        };
        write_hba(&data_dir, self.auth)?;

        let mut last_err = None;
        // A port found free can be taken by another process before the server binds it:
        // retry with a fresh port a few times.
        for _ in 0..5 {
            let port = serverproc::free_port()?;
            write_config(&data_dir, &socket_dir, port, tls.as_ref(), &self)?;
            let cluster = Cluster {
                bindir: bindir.clone(),
                run_as,
                port,
                password: self.password.clone(),
                tls: tls.clone(),
                base: base.clone(),
                data_dir: data_dir.clone(),
                socket_dir: socket_dir.clone(),
                start_timeout: self.start_timeout,
                process: ServerProcess::new(
                    format!("pgcluster (port {port})"),
                    data_dir.join("server.log"),
                    // Immediate shutdown: stops the backends, removes shared memory.
                    libc::SIGQUIT,
                ),
                dir: Mutex::new(None),
            };
            match cluster.start() {
                Ok(()) => {
                    *cluster.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                    tracing::debug!(port, elapsed = ?began.elapsed(), "pgcluster started");
                    return Ok(cluster);
                }
                Err(Error::Process(e)) if e.is_port_clash() => {
                    last_err = Some(Error::Process(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("the loop ran at least once"))
    }
}

/// A running (or stopped) throwaway PostgreSQL cluster. Removed (server stopped, files
/// deleted) when dropped.
pub struct Cluster {
    bindir: PathBuf,
    run_as: RunAs,
    port: u16,
    password: Option<String>,
    tls: Option<InstalledTls>,
    base: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    start_timeout: Duration,
    process: ServerProcess,
    /// Owns the directory; taken (and so deleted) by `destroy`.
    dir: Mutex<Option<TempDir>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("socket_dir", &self.socket_dir)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts a cluster with default settings (shorthand for `ClusterBuilder::new().start()`).
    ///
    /// # Errors
    /// As [`ClusterBuilder::start`].
    pub fn new() -> Result<Cluster, Error> {
        ClusterBuilder::new().start()
    }

    /// A new [`ClusterBuilder`] (same as `ClusterBuilder::new()`).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The TCP port on 127.0.0.1 (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The superuser password, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The CA certificate (PEM) clients can trust for `sslmode=verify-full`, when TLS is on
    /// and the CA is known.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().and_then(|t| t.ca.as_deref())
    }

    /// Whether the server was configured with `ssl = on`.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// `postgres://postgres[:password]@127.0.0.1:PORT/DB` for the superuser.
    pub fn url(&self, db: &str) -> String {
        self.url_for("postgres", self.password.as_deref(), db)
    }

    /// A URL for another user (the password is percent-encoded).
    pub fn url_for(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut url = format!("postgres://{}", percent_encode(user));
        if let Some(password) = password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push_str(&format!("@{}:{}/{}", self.host(), self.port, percent_encode(db)));
        url
    }

    /// A tokio-postgres config for the superuser on TCP.
    pub fn config(&self, db: &str) -> tokio_postgres::Config {
        self.config_for("postgres", self.password.as_deref(), db)
    }

    /// A tokio-postgres config for another user on TCP.
    pub fn config_for(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host(self.host()).port(self.port).user(user).dbname(db);
        if let Some(password) = password {
            config.password(password);
        }
        config
    }

    /// Connects as the superuser without TLS and spawns the connection task on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// The connection or authentication failed.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, Error> {
        let (client, connection) = self.config(db).connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "pgcluster connection ended");
            }
        });
        Ok(client)
    }

    /// Creates database `name` (quoted, so any name works).
    ///
    /// # Errors
    /// Connecting failed or the database exists.
    pub async fn create_database(&self, name: &str) -> Result<(), Error> {
        let client = self.connect("postgres").await?;
        client.batch_execute(&format!("CREATE DATABASE {}", quote_ident(name))).await?;
        Ok(())
    }

    /// Drops database `name` if it exists, disconnecting its sessions.
    ///
    /// # Errors
    /// Connecting failed or the drop failed.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)))
            .await?;
        Ok(())
    }

    /// The postmaster's pid, when running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the postmaster is running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Starts the server on the same port and data directory and waits until it accepts
    /// connections.
    ///
    /// # Errors
    /// [`serverproc::Error::AlreadyRunning`] (in [`Error::Process`]), or the server exited or did not come up in time.
    pub fn start(&self) -> Result<(), Error> {
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D").arg(&self.data_dir).current_dir(&self.base);
        self.run_as.apply(&mut cmd);
        let pidfile = self.data_dir.join("postmaster.pid");
        Ok(self.process.start(cmd, self.start_timeout, |pid| {
            fs::read_to_string(&pidfile).is_ok_and(|contents| pidfile_says_ready(&contents, pid))
        })?)
    }

    /// Stops the server. Does nothing if it is not running.
    ///
    /// # Errors
    /// Waiting for the process failed.
    pub fn stop(&self, mode: StopMode) -> Result<(), Error> {
        let patience = match mode {
            StopMode::Immediate => Duration::from_secs(10),
            StopMode::Fast | StopMode::Smart => Duration::from_secs(120),
        };
        Ok(self.process.stop(mode.signal(), patience)?)
    }

    /// Simulates a crash: SIGKILL to the postmaster and all its backends at once (no
    /// shutdown checkpoint, no cleanup). The next [`start`](Self::start) runs crash recovery.
    ///
    /// # Errors
    /// Waiting for the process failed.
    pub fn kill9(&self) -> Result<(), Error> {
        Ok(self.process.kill9()?)
    }

    /// `stop(Fast)` then `start()`.
    ///
    /// # Errors
    /// As [`stop`](Self::stop) and [`start`](Self::start).
    pub fn restart(&self) -> Result<(), Error> {
        self.stop(StopMode::Fast)?;
        self.start()
    }

    /// The whole server log (all starts of this cluster).
    ///
    /// # Errors
    /// Reading the file failed.
    pub fn log_contents(&self) -> Result<String, Error> {
        Ok(self.process.log_contents()?)
    }

    /// The last `lines` lines of the server log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The server log file (`server.log` in the data directory).
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// A guard that prints the tail of the server log to stderr if the current thread is
    /// panicking when it is dropped. Hold it for the length of a test.
    pub fn log_guard(&self) -> LogGuard<'_> {
        LogGuard { _inner: self.process.log_guard() }
    }

    /// Stops the server at once and deletes its directories. Idempotent.
    /// Leaves the cluster running after this process exits, and its files in place: stops the
    /// server, starts it again with `pg_ctl` (detached, so it does not die with this process),
    /// and returns where it lives. Used by `pgmirror demo --keep`.
    ///
    /// # Errors
    /// Stopping or starting the server failed (then the cluster is removed as usual).
    pub fn keep(self) -> Result<KeptCluster, Error> {
        self.stop(StopMode::Fast)?;
        let mut cmd = Command::new(self.bindir.join("pg_ctl"));
        cmd.arg("start")
            .arg("-w")
            .arg("-D")
            .arg(&self.data_dir)
            // A new file: `server.log` was created by this process, maybe as root.
            .arg("-l")
            .arg(self.data_dir.join("server-kept.log"))
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.run_as.apply(&mut cmd);
        let status = cmd.status().ctx(|| "run pg_ctl start")?;
        if !status.success() {
            return Err(Error::Process(serverproc::Error::Io {
                context: format!(
                    "pg_ctl start exited with {status}; see {}",
                    self.log_path().display()
                ),
                source: std::io::Error::other("pg_ctl start failed"),
            }));
        }
        // Keep the directory: dropping `self` must neither stop the server nor delete it.
        if let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = dir.keep();
        }
        let kept = KeptCluster {
            port: self.port,
            data_dir: self.data_dir.clone(),
            socket_dir: self.socket_dir.clone(),
            bindir: self.bindir.clone(),
            password: self.password.clone(),
        };
        // The postmaster we spawned has exited; nothing is left to stop.
        self.process.forget();
        Ok(kept)
    }

    pub(crate) fn destroy(&self) {
        let _ = self.kill_or_quit();
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(dir);
    }

    fn kill_or_quit(&self) -> Result<(), Error> {
        self.stop(StopMode::Immediate)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// A cluster left running by [`Cluster::keep`].
#[derive(Debug, Clone)]
pub struct KeptCluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The data directory (`pg_ctl -D` it to stop the server).
    pub data_dir: PathBuf,
    /// The Unix socket directory.
    pub socket_dir: PathBuf,
    /// The server binaries.
    pub bindir: PathBuf,
    /// The superuser's password, if one was set.
    pub password: Option<String>,
}

/// Prints the server log tail to stderr when dropped during a panic. See
/// [`Cluster::log_guard`].
#[derive(Debug)]
pub struct LogGuard<'a> {
    _inner: serverproc::LogGuard<'a>,
}

/// Line 8 of postmaster.pid is the status (`ready` once connections are accepted); line 1
/// the pid, checked so a stale file from a killed server is not mistaken for ours.
fn pidfile_says_ready(contents: &str, pid: u32) -> bool {
    let lines: Vec<&str> = contents.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).is_some_and(|l| l.trim() == "ready")
}

/// Rejects names/values that could break out of a `name = 'value'` line.
fn validate_setting(name: &str, value: &str) -> Result<(), Error> {
    let invalid = |reason| Err(Error::InvalidSetting { name: name.to_owned(), reason });
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return invalid("names may hold only ASCII letters, digits, '_' and '.'");
    }
    if value.contains(['\n', '\r', '\0']) {
        return invalid("values may not contain line breaks or NUL");
    }
    Ok(())
}

/// Quotes a value for postgresql.conf (`'` doubled; backslashes escaped).
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn write_config(
    data_dir: &Path,
    socket_dir: &Path,
    port: u16,
    tls: Option<&InstalledTls>,
    builder: &ClusterBuilder,
) -> Result<(), Error> {
    let mut settings: Vec<(String, String)> = vec![
        ("listen_addresses".into(), "127.0.0.1".into()),
        ("port".into(), port.to_string()),
        ("unix_socket_directories".into(), socket_dir.display().to_string()),
        ("wal_level".into(), "logical".into()),
        // A test binary's tests share one cluster and most leave their slot behind until the
        // process exits: 48 were alive at once in `tests/it` when the limit was 50.
        ("max_wal_senders".into(), "100".into()),
        ("max_replication_slots".into(), "200".into()),
        ("max_prepared_transactions".into(), "50".into()),
        ("max_connections".into(), "200".into()),
        ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
        ("password_encryption".into(), builder.auth.password_encryption().into()),
    ];
    if builder.fast_unsafe {
        for name in ["fsync", "synchronous_commit", "full_page_writes"] {
            settings.push((name.into(), "off".into()));
        }
    }
    if let Some(timeout) = builder.wal_sender_timeout {
        settings.push(("wal_sender_timeout".into(), format!("{}ms", timeout.as_millis())));
    }
    if let Some(tls) = tls {
        settings.push(("ssl".into(), "on".into()));
        settings.push(("ssl_cert_file".into(), tls.cert.display().to_string()));
        settings.push(("ssl_key_file".into(), tls.key.display().to_string()));
    }
    settings.extend(builder.settings.iter().cloned());

    // Written to a file of our own, included last from postgresql.conf, so that rewriting
    // it (a retry with another port) replaces rather than accumulates.
    let mut text = String::from("# written by pgcluster\n");
    for (name, value) in &settings {
        text.push_str(&format!("{name} = {}\n", conf_quote(value)));
    }
    let ours = data_dir.join("pgcluster.conf");
    fs::write(&ours, text).ctx(|| format!("write {}", ours.display()))?;
    let main = data_dir.join("postgresql.conf");
    let current = fs::read_to_string(&main).ctx(|| format!("read {}", main.display()))?;
    let include = "include = 'pgcluster.conf'\n";
    if !current.contains(include) {
        let mut f =
            File::options().append(true).open(&main).ctx(|| format!("open {}", main.display()))?;
        f.write_all(include.as_bytes()).ctx(|| format!("write {}", main.display()))?;
    }
    Ok(())
}

fn write_hba(data_dir: &Path, auth: AuthMethod) -> Result<(), Error> {
    let m = auth.hba_name();
    let mut text = String::from("# written by pgcluster\n# TYPE DATABASE USER ADDRESS METHOD\n");
    for db in ["all", "replication"] {
        text.push_str(&format!("local {db} all {m}\n"));
        text.push_str(&format!("host {db} all 127.0.0.1/32 {m}\n"));
        text.push_str(&format!("host {db} all ::1/128 {m}\n"));
    }
    let path = data_dir.join("pg_hba.conf");
    Ok(fs::write(&path, text).ctx(|| format!("write {}", path.display()))?)
}

/// Sets the superuser password in single-user mode before the first start, so no window
/// exists with a passwordless superuser over TCP, and the password travels via stdin only.
fn set_password(
    bindir: &Path,
    data_dir: &Path,
    run_as: RunAs,
    auth: AuthMethod,
    password: &str,
) -> Result<(), Error> {
    let mut cmd = Command::new(bindir.join("postgres"));
    cmd.arg("--single")
        .arg("-D")
        .arg(data_dir)
        .arg("-c")
        .arg(format!("password_encryption={}", auth.password_encryption()))
        // Keep the statement (and so the password) out of any error output.
        .args(["-c", "log_min_error_statement=panic"])
        .arg("postgres")
        .current_dir(data_dir);
    run_as.apply(&mut cmd);
    let sql = format!("ALTER ROLE postgres PASSWORD {};\n", quote_literal(password));
    serverproc::run(cmd, Some(sql.as_bytes())).map_err(|e| match e {
        serverproc::Error::CommandFailed { program, status, output } => {
            let output = output.replace(password, "<redacted>");
            Error::Process(serverproc::Error::CommandFailed { program, status, output })
        }
        other => other.into(),
    })
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

static EXIT_CLEANUP: Once = Once::new();

/// The shared cluster, created lazily by [`crate::shared`].
pub(crate) static SHARED: OnceLock<Cluster> = OnceLock::new();

/// Registers (once) the `atexit` handler that removes the shared cluster and the template.
pub(crate) fn register_exit_cleanup() {
    EXIT_CLEANUP.call_once(|| serverproc::at_exit(exit_cleanup));
}

extern "C" fn exit_cleanup() {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        if let Some(cluster) = SHARED.get() {
            cluster.destroy();
        }
        crate::template::remove();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_readiness() {
        let ready = "123\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  1 2\nready   \n";
        assert!(pidfile_says_ready(ready, 123));
        assert!(!pidfile_says_ready(ready, 124), "a stale file of another pid is not ready");
        let starting = ready.replace("ready   ", "starting");
        assert!(!pidfile_says_ready(&starting, 123));
        assert!(!pidfile_says_ready("123\n", 123));
    }

    #[test]
    fn settings_are_validated_and_quoted() {
        assert!(validate_setting("work_mem", "64MB").is_ok());
        assert!(validate_setting("auto_explain.log_min_duration", "0").is_ok());
        assert!(validate_setting("x = 1\nfsync", "off").is_err());
        assert!(validate_setting("fsync", "off\nssl = on").is_err());
        assert_eq!(conf_quote(r"it's a\b"), r"'it''s a\\b'");
    }

    #[test]
    fn urls_are_encoded() {
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(percent_encode("plain_1"), "plain_1");
    }

    #[test]
    fn password_needed_for_password_auth() {
        let err = ClusterBuilder::new().auth(AuthMethod::Md5).start().unwrap_err();
        assert!(matches!(err, Error::PasswordRequired(AuthMethod::Md5)));
    }
}
