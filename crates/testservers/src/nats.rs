//! Throwaway NATS servers with JetStream, alone or as a cluster.
//!
//! A [`NatsServer`] is `nats-server` with JetStream on (its store in a temporary
//! directory), on a free port of 127.0.0.1 for clients and another for monitoring
//! (`/healthz`, `/jsz`, ...). A [`NatsCluster`] is three of them joined by routes on
//! loopback ports, under one cluster name, each with its own store: streams with three
//! replicas survive the loss of one server. JetStream may use up to 256 MB of memory and 4 GB
//! of disk per server.
//!
//! A server is ready when it has written its ports file (so the ports are its own) and
//! its `/healthz` answers 200: for JetStream in a cluster, once it is in contact with a
//! metadata leader.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serverproc::{IoContext, ServerProcess};
use tempfile::TempDir;

use crate::conf::quoted_path;
use crate::{Error, Server};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The ports of one server.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    monitor: u16,
    route: Option<u16>,
}

impl Ports {
    fn free(clustered: bool) -> Result<Ports, Error> {
        Ok(Ports {
            client: serverproc::free_port()?,
            monitor: serverproc::free_port()?,
            route: if clustered { Some(serverproc::free_port()?) } else { None },
        })
    }
}

/// A running (or stopped) throwaway `nats-server` with JetStream. Removed (server killed,
/// store deleted) when dropped.
pub struct NatsServer {
    program: PathBuf,
    name: String,
    cluster: Option<String>,
    ports: Ports,
    base: PathBuf,
    process: ServerProcess,
    /// Owns the directory; taken (and so deleted) by `destroy`.
    dir: Mutex<Option<TempDir>>,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .field("ports", &self.ports)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl NatsServer {
    /// Starts a single server with JetStream.
    ///
    /// # Errors
    /// `nats-server` is missing (`apt-get install nats-server`), or it did not come up (the
    /// error holds its log's tail).
    pub fn new() -> Result<NatsServer, Error> {
        let mut servers = start_group(1)?;
        Ok(servers.remove(0))
    }

    /// Writes the configuration of a server (not started).
    fn configure(
        program: &Path,
        name: &str,
        base: &Path,
        ports: Ports,
        cluster: Option<(&str, Vec<u16>)>,
    ) -> Result<NatsServer, Error> {
        let server = NatsServer {
            program: program.to_path_buf(),
            name: name.to_owned(),
            cluster: cluster.as_ref().map(|(c, _)| (*c).to_owned()),
            ports,
            base: base.to_path_buf(),
            process: ServerProcess::new(
                format!("nats-server {name} (port {})", ports.client),
                base.join("nats-server.log"),
                libc::SIGKILL,
            ),
            dir: Mutex::new(None),
        };
        let mut text = format!(
            "# written by testservers\nserver_name: \"{name}\"\nlisten: \"127.0.0.1:{}\"\n\
             http: \"127.0.0.1:{}\"\nports_file_dir: {}\n\
             jetstream {{\n  store_dir: {}\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
            ports.client,
            ports.monitor,
            quoted_path(&server.ports_dir())?,
            quoted_path(&server.store_dir())?,
        );
        if let (Some((cluster, routes)), Some(route_port)) = (cluster, ports.route) {
            let routes: Vec<String> =
                routes.iter().map(|p| format!("    \"nats-route://127.0.0.1:{p}\"")).collect();
            text.push_str(&format!(
                "cluster {{\n  name: \"{cluster}\"\n  listen: \"127.0.0.1:{route_port}\"\n  \
                 routes: [\n{}\n  ]\n}}\n",
                routes.join("\n")
            ));
        }
        for dir in [server.ports_dir(), server.store_dir()] {
            std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let config = server.config_path();
        std::fs::write(&config, text).ctx(|| format!("write {}", config.display()))?;
        Ok(server)
    }

    /// The server's name (`server_name`), unique in this process.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the cluster the server is in, if any.
    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The client port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.ports.client
    }

    /// The monitoring port on 127.0.0.1 (`/healthz`, `/varz`, `/jsz`, ...).
    pub fn monitor_port(&self) -> u16 {
        self.ports.monitor
    }

    /// The route (cluster) port, for a server of a [`NatsCluster`].
    pub fn route_port(&self) -> Option<u16> {
        self.ports.route
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.base.join("store")
    }

    fn ports_dir(&self) -> PathBuf {
        self.base.join("ports")
    }

    fn config_path(&self) -> PathBuf {
        self.base.join("nats-server.conf")
    }

    /// Connects a client to this server.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect(&self) -> Result<async_nats::Client, Error> {
        Ok(async_nats::connect(self.url()).await?)
    }

    /// Whether `/healthz` answers 200: the server is up and JetStream is available (in a
    /// cluster, in contact with a metadata leader and caught up with it).
    pub fn is_healthy(&self) -> bool {
        http_status(self.ports.monitor, "/healthz") == Some(200)
    }

    fn spawn(&self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-c").arg(self.config_path()).current_dir(&self.base);
        self.process.spawn(cmd)?;
        Ok(())
    }

    /// Whether the server with `pid` is ours and healthy: it wrote its ports file (its
    /// listeners are bound, so the ports are not another process's) and `/healthz` says 200.
    fn is_ready(&self, pid: u32) -> bool {
        let suffix = format!("_{pid}.ports");
        let wrote_ports = std::fs::read_dir(self.ports_dir()).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        });
        wrote_ports && self.is_healthy()
    }

    /// Kills the server and deletes its files. Idempotent.
    pub(crate) fn destroy(&self) {
        let _ = self.kill9();
        drop(self.dir.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// In a cluster, [`start`](Server::start) needs another server running to become healthy;
/// see [`NatsCluster::start_stopped`].
impl Server for NatsServer {
    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn start(&self) -> Result<(), Error> {
        self.spawn()?;
        wait_all(&[self])
    }

    fn stop(&self) -> Result<(), Error> {
        Ok(self.process.stop(libc::SIGTERM, Duration::from_secs(60))?)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Three `nats-server`s with JetStream joined into one cluster on loopback ports. Removed
/// when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    name: String,
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three servers and waits until each is healthy (a JetStream metadata leader is
    /// elected and every server is in contact with it).
    ///
    /// # Errors
    /// As [`NatsServer::new`].
    pub fn new() -> Result<NatsCluster, Error> {
        let servers = start_group(3)?;
        let name = servers[0].cluster.clone().unwrap_or_default();
        Ok(NatsCluster { name, servers })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The servers.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Server `i` (0, 1 or 2).
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// The client URLs of all servers.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Connects a client that knows every server (and so fails over between them).
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect(&self) -> Result<async_nats::Client, Error> {
        Ok(async_nats::connect(self.urls()).await?)
    }

    /// Starts every stopped server at once and waits until all are healthy: after all were
    /// stopped, one alone could not elect a metadata leader.
    ///
    /// # Errors
    /// A server exited or did not become healthy in time.
    pub fn start_stopped(&self) -> Result<(), Error> {
        let stopped: Vec<&NatsServer> = self.servers.iter().filter(|s| !s.is_running()).collect();
        for server in &stopped {
            server.spawn()?;
        }
        wait_all(&stopped)
    }
}

/// Creates and starts `size` servers, clustered when more than one, retrying on fresh ports
/// when one was taken.
fn start_group(size: usize) -> Result<Vec<NatsServer>, Error> {
    let program = serverproc::find_program("nats-server")
        .ok_or(Error::NotInstalled { program: "nats-server", package: "nats-server" })?;
    let clustered = size > 1;
    let cluster = serverproc::unique_name("cluster");
    let names: Vec<String> = (0..size).map(|_| serverproc::unique_name("nats")).collect();
    let mut dirs = (0..size)
        .map(|_| serverproc::tempdir("testservers-nats-"))
        .collect::<Result<Vec<TempDir>, _>>()?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let ports = (0..size).map(|_| Ports::free(clustered)).collect::<Result<Vec<_>, _>>()?;
        let mut servers = Vec::with_capacity(size);
        for (i, (name, dir)) in names.iter().zip(&dirs).enumerate() {
            let routes: Vec<u16> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(_, p)| p.route)
                .collect();
            let cluster = clustered.then_some((cluster.as_str(), routes));
            servers.push(NatsServer::configure(&program, name, dir.path(), ports[i], cluster)?);
        }
        let started = servers.iter().try_for_each(NatsServer::spawn);
        let refs: Vec<&NatsServer> = servers.iter().collect();
        match started.and_then(|()| wait_all(&refs)) {
            Ok(()) => {
                for (server, dir) in servers.iter().zip(dirs.drain(..)) {
                    *server.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                }
                return Ok(servers);
            }
            // Another process took a port between free_port and the bind: start afresh.
            Err(Error::Process(e)) if e.is_port_clash() && attempts < 5 => {
                drop(refs);
                drop(servers);
                for server_dir in &dirs {
                    let store = server_dir.path().join("store");
                    let _ = std::fs::remove_dir_all(store);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until every server of `servers` (spawned) is ready, all of them at the same time;
/// kills them all on a timeout. A clustered server can turn unhealthy again after it was
/// ready (it falls behind the metadata leader elected meanwhile), so once each has been
/// ready, all are asked again until one pass finds every one healthy.
fn wait_all(servers: &[&NatsServer]) -> Result<(), Error> {
    let began = Instant::now();
    let mut pending: Vec<&NatsServer> = servers.to_vec();
    loop {
        let mut still = Vec::new();
        for server in pending {
            if !server.process.poll_ready(|pid| server.is_ready(pid))? {
                still.push(server);
            }
        }
        pending = still;
        if pending.is_empty() {
            pending = servers.iter().copied().filter(|s| !s.is_healthy()).collect();
        }
        let Some(first) = pending.first() else { return Ok(()) };
        if began.elapsed() > START_TIMEOUT {
            let log_tail = first.log_tail(30);
            for server in &pending {
                server.kill9()?;
            }
            return Err(serverproc::Error::StartTimeout { waited: START_TIMEOUT, log_tail }.into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status code of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).ok()?;
    // "HTTP/1.1 200 OK"
    let line = std::str::from_utf8(&response).ok()?.lines().next()?;
    line.strip_prefix("HTTP/1.")?.split(' ').nth(1)?.parse().ok()
}

static SHARED: OnceLock<NatsServer> = OnceLock::new();

/// The NATS server shared by all tests of this test process, started on first use.
///
/// Use it for tests that only need their own streams and subjects (see
/// [`crate::unique_name`]); tests that stop, restart or crash a server start their own. It
/// is removed at process exit, and killed by the kernel if the process is killed.
///
/// # Panics
/// If the server cannot be started (the message says why, e.g. which package to install).
pub fn shared() -> &'static NatsServer {
    SHARED.get_or_init(|| {
        let server = NatsServer::new()
            .unwrap_or_else(|e| panic!("testservers: starting the shared NATS server failed: {e}"));
        crate::exit::register_cleanup();
        server
    })
}

/// Removes the shared server (at process exit).
pub(crate) fn clean_up() {
    if let Some(server) = SHARED.get() {
        server.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_reads_the_status_line() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.0\r\n"));
            conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}").unwrap();
        });
        assert_eq!(http_status(port, "/healthz"), Some(503));
        server.join().unwrap();
    }
}
