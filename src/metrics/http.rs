//! The HTTP endpoint of `--metrics-addr`: `GET /metrics` (Prometheus text) and `GET /healthz`
//! (200 while the mirror streams, 503 otherwise); 404 for other paths, 405 for other methods.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Metrics, exposition};

/// A client that sends no request head within this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` that is not about one connection (out of file descriptors,
/// say), so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Where to listen: `HOST:PORT` (`127.0.0.1:9187`, `localhost:9187`, `[::1]:9187`) or `:PORT`
/// for every IPv4 interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    host: Option<String>,
    port: u16,
}

/// A `--metrics-addr` value that is not `HOST:PORT` or `:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("expected HOST:PORT or :PORT (e.g. 127.0.0.1:9187, localhost:9187 or :9187), got {0:?}")]
pub struct BadListenAddr(String);

impl FromStr for ListenAddr {
    type Err = BadListenAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr { host: Some(addr.ip().to_string()), port: addr.port() });
        }
        let bad = || BadListenAddr(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        // An IPv6 address needs brackets (`[::1]:9187`), which SocketAddr parsed above.
        if host.contains([':', '[', ']', '/']) || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(ListenAddr { host: (!host.is_empty()).then(|| host.to_owned()), port })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, ":{}", self.port),
        }
    }
}

impl ListenAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it listens on every interface (`:PORT`, `0.0.0.0:PORT`, `[::]:PORT`).
    pub fn is_every_interface(&self) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| h.parse().is_ok_and(|ip: std::net::IpAddr| ip.is_unspecified()))
    }

    /// The socket addresses to bind: every address the host name resolves to.
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match &self.host {
            None => Ok(vec![SocketAddr::from(([0, 0, 0, 0], self.port))]),
            Some(host) => {
                let mut addrs: Vec<SocketAddr> =
                    tokio::net::lookup_host((host.as_str(), self.port)).await?.collect();
                addrs.dedup();
                Ok(addrs)
            }
        }
    }
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// The addresses it listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves `metrics` on every address `addr` resolves to (`localhost`: 127.0.0.1 and ::1).
///
/// # Errors
/// The name does not resolve, or none of its addresses can be bound (the first error).
pub async fn serve(addr: &ListenAddr, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
    let registry = Arc::new(exposition::registry(metrics.clone()));
    let mut server = MetricsServer { addrs: Vec::new(), tasks: Vec::new() };
    let mut first_error = None;
    for socket_addr in addr.resolve().await? {
        match TcpListener::bind(socket_addr).await {
            Ok(listener) => {
                let local = listener.local_addr()?;
                tracing::info!(addr = %local, "serving Prometheus metrics on /metrics, health on /healthz");
                server.addrs.push(local);
                server.tasks.push(tokio::spawn(accept_loop(
                    listener,
                    registry.clone(),
                    metrics.clone(),
                )));
            }
            // `localhost` may also name ::1 on a host without IPv6: one address is enough.
            Err(e) => {
                tracing::debug!(addr = %socket_addr, error = %e, "cannot listen");
                first_error.get_or_insert(e);
            }
        }
    }
    match (server.addrs.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )),
        (false, _) => Ok(server),
    }
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // About one connection that is gone already: take the next.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (registry, metrics) = (registry.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let response = respond(&req, &registry, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

/// The answer to one request.
fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return text(StatusCode::NOT_FOUND, "not found: try /metrics or /healthz\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n".into());
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        return match metrics.health() {
            Ok(word) => text(StatusCode::OK, format!("{word}\n")),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        };
    }
    let mut r = Response::new(Full::new(Bytes::from(exposition::render(registry))));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(exposition::CONTENT_TYPE));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_as_people_write_them() {
        let ok = |s: &str| s.parse::<ListenAddr>().unwrap();
        assert_eq!(ok("127.0.0.1:9187"), ListenAddr { host: Some("127.0.0.1".into()), port: 9187 });
        assert_eq!(ok("localhost:9187"), ListenAddr { host: Some("localhost".into()), port: 9187 });
        assert_eq!(ok(":9187"), ListenAddr { host: None, port: 9187 });
        assert_eq!(ok("[::1]:9187"), ListenAddr { host: Some("::1".into()), port: 9187 });
        assert_eq!(ok("[::1]:9187").to_string(), "[::1]:9187");
        assert_eq!(ok(":9187").to_string(), ":9187");
        assert!(ok(":9187").is_every_interface() && ok("0.0.0.0:1").is_every_interface());
        assert!(!ok("localhost:1").is_every_interface() && !ok("127.0.0.1:1").is_every_interface());
        for bad in ["9187", "localhost", "localhost:", "::1:9187", "host:99999", "a b:1", ""] {
            let err = bad.parse::<ListenAddr>().expect_err(bad).to_string();
            assert!(err.contains("HOST:PORT") && err.contains(":9187"), "{err}");
        }
    }
}
