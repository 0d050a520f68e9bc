//! The frontend/backend protocol over one socket: connecting, TLS
//! negotiation, authentication, and reading/writing framed messages.
//!
//! Encoding and authentication come from `postgres-protocol`; its backend
//! parser lacks CopyBothResponse (`W`) and NegotiateProtocolVersion (`v`)
//! and consumes an unknown frame before failing, so the header is peeked
//! and those two are handled here.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::AsRawFd;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use pgconn::{ChannelBinding, ConnConfig, DbError, Error, Host, tls};

use crate::pacing::{BULK_LOWAT, BULK_READ_WAIT, Pacer};

/// Frames larger than this are refused (PostgreSQL's own limit on a single
/// message is 1 GB; this guards against a corrupt length allocating wildly).
const MAX_FRAME: usize = 1 << 30;
/// The least room a socket read has: a whole receive window of a paced backlog.
const READ_CHUNK: usize = 64 * 1024;

/// Any byte stream the connection can run over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One message from the server.
pub(crate) enum Backend {
    /// A message `postgres-protocol` knows.
    Msg(Message),
    /// `W`: the server entered CopyBoth mode (after START_REPLICATION).
    CopyBothResponse,
}

/// An authenticated connection between commands.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    params: HashMap<String, String>,
    pub(crate) tls: bool,
    pub(crate) channel_binding: bool,
    pub(crate) backend_pid: Option<i32>,
    pub(crate) user: String,
    database: String,
    pub(crate) target: String,
    /// Bulk-read control for TCP connections (see [`crate::pacing`]).
    pacer: Option<Pacer>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("backend_pid", &self.backend_pid)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Opens, secures and authenticates a connection, honouring `connect_timeout`.
    pub(crate) async fn connect(cfg: &ConnConfig) -> Result<Conn, Error> {
        let fut = Box::pin(Self::connect_inner(cfg));
        match cfg.connect_timeout() {
            Some(timeout) => tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| Error::ConnectTimeout { target: cfg.target(), timeout })?,
            None => fut.await,
        }
    }

    async fn connect_inner(cfg: &ConnConfig) -> Result<Conn, Error> {
        let target = cfg.target();
        let connect_err = |source| Error::Connect { target: target.clone(), source };
        let mut pacer = None;
        let (io, tls, cert_hash): (Box<dyn Io>, bool, Option<Vec<u8>>) = match cfg.host() {
            Host::Unix(_) => {
                let path = cfg.socket_path().unwrap_or_default();
                (Box::new(UnixStream::connect(&path).await.map_err(connect_err)?), false, None)
            }
            Host::Tcp(host) => {
                let mut tcp =
                    TcpStream::connect((host.as_str(), cfg.port())).await.map_err(connect_err)?;
                // Status updates are tiny and latency matters more than batching.
                tcp.set_nodelay(true)?;
                tune_tcp(&tcp, cfg)?;
                // The socket lives inside `io` as long as the connection does.
                pacer = Some(Pacer::new(tcp.as_raw_fd()));
                match tls::client_config(cfg)? {
                    None => (Box::new(tcp), false, None),
                    Some(config) => match negotiate_tls(&mut tcp).await? {
                        true => {
                            let name = tls::server_name(host, cfg)?;
                            let stream = tokio_rustls::TlsConnector::from(config)
                                .connect(name, tcp)
                                .await
                                .map_err(|e| Error::Tls(format!("handshake with {target}: {e}")))?;
                            let hash = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| tls::tls_server_end_point(c));
                            (Box::new(stream), true, hash)
                        }
                        false if cfg.sslmode().requires_tls() => {
                            return Err(Error::TlsUnavailable {
                                target,
                                sslmode: cfg.sslmode().to_string(),
                            });
                        }
                        false => (Box::new(tcp), false, None),
                    },
                }
            }
        };
        let mut conn = Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            params: HashMap::new(),
            tls,
            channel_binding: false,
            backend_pid: None,
            user: cfg.user().to_owned(),
            database: cfg.dbname().to_owned(),
            target,
            pacer,
        };
        conn.startup(cfg).await?;
        conn.authenticate(cfg, cert_hash).await?;
        conn.finish_startup().await?;
        Ok(conn)
    }

    async fn startup(&mut self, cfg: &ConnConfig) -> Result<(), Error> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user()),
            ("database", cfg.dbname()),
            ("application_name", cfg.application_name()),
            ("client_encoding", "UTF8"),
            // Deterministic text output for dates, times and floats.
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
            ("TimeZone", "UTC"),
        ];
        // The logical walsender of the named database.
        params.push(("replication", "database"));
        if let Some(options) = cfg.options() {
            params.push(("options", options));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)?;
        self.flush().await
    }

    async fn authenticate(
        &mut self,
        cfg: &ConnConfig,
        cert_hash: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        loop {
            match self.read_message().await? {
                Backend::Msg(Message::AuthenticationOk) => return Ok(()),
                Backend::Msg(Message::AuthenticationCleartextPassword) => {
                    self.require_no_channel_binding(cfg)?;
                    let pw = cfg.effective_password().ok_or_else(|| cfg.password_missing())?;
                    frontend::password_message(pw.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Backend::Msg(Message::AuthenticationMd5Password(body)) => {
                    self.require_no_channel_binding(cfg)?;
                    let pw = cfg.effective_password().ok_or_else(|| cfg.password_missing())?;
                    let hash = md5_hash(cfg.user().as_bytes(), pw.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Backend::Msg(Message::AuthenticationSasl(body)) => {
                    let pw = cfg.effective_password().ok_or_else(|| cfg.password_missing())?;
                    let mut plain = false;
                    let mut plus = false;
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms.next()? {
                        plain |= m == sasl::SCRAM_SHA_256;
                        plus |= m == sasl::SCRAM_SHA_256_PLUS;
                    }
                    self.scram(cfg, &pw, plain, plus, cert_hash.clone()).await?;
                }
                Backend::Msg(Message::ErrorResponse(body)) => return Err(self.db_error(&body)),
                Backend::Msg(
                    Message::AuthenticationGss
                    | Message::AuthenticationSspi
                    | Message::AuthenticationKerberosV5
                    | Message::AuthenticationScmCredential,
                ) => {
                    return Err(Error::Auth(
                        "the server asks for GSSAPI/SSPI/Kerberos authentication, which is not \
                         supported; use password or SCRAM authentication in pg_hba.conf"
                            .to_owned(),
                    ));
                }
                _ => {
                    return Err(Error::Protocol("unexpected message during authentication".into()));
                }
            }
        }
    }

    fn require_no_channel_binding(&self, cfg: &ConnConfig) -> Result<(), Error> {
        if cfg.channel_binding() == ChannelBinding::Require {
            return Err(Error::Auth(
                "channel_binding=require but the server did not ask for SCRAM authentication"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    async fn scram(
        &mut self,
        cfg: &ConnConfig,
        password: &str,
        offers_plain: bool,
        offers_plus: bool,
        cert_hash: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let want_binding = cfg.channel_binding() != ChannelBinding::Disable;
        let (mechanism, binding) = match cert_hash {
            Some(hash) if offers_plus && want_binding => {
                (sasl::SCRAM_SHA_256_PLUS, sasl::ChannelBinding::tls_server_end_point(hash))
            }
            // We could bind but the server did not offer it ("y" flag): lets the
            // server detect a downgrade attack.
            Some(_) if offers_plain && want_binding => {
                (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested())
            }
            _ if offers_plain => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
            _ => {
                return Err(Error::Auth(
                    "the server offers no supported SASL mechanism (need SCRAM-SHA-256)".into(),
                ));
            }
        };
        if cfg.channel_binding() == ChannelBinding::Require && mechanism != sasl::SCRAM_SHA_256_PLUS
        {
            return Err(Error::Auth(
                "channel_binding=require but the connection cannot use SCRAM-SHA-256-PLUS (it \
                 needs TLS and a server that offers it)"
                    .to_owned(),
            ));
        }
        let mut scram = sasl::ScramSha256::new(password.as_bytes(), binding);
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.read_message().await? {
            Backend::Msg(Message::AuthenticationSaslContinue(body)) => {
                scram.update(body.data()).map_err(|e| Error::Auth(format!("SCRAM: {e}")))?;
            }
            Backend::Msg(Message::ErrorResponse(body)) => return Err(self.db_error(&body)),
            _ => return Err(Error::Protocol("expected AuthenticationSASLContinue".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        match self.read_message().await? {
            Backend::Msg(Message::AuthenticationSaslFinal(body)) => {
                // Verifies the server signature: the server knew the password too.
                scram.finish(body.data()).map_err(|e| Error::Auth(format!("SCRAM: {e}")))?;
            }
            Backend::Msg(Message::ErrorResponse(body)) => return Err(self.db_error(&body)),
            _ => return Err(Error::Protocol("expected AuthenticationSASLFinal".into())),
        }
        self.channel_binding = mechanism == sasl::SCRAM_SHA_256_PLUS;
        Ok(())
    }

    /// After AuthenticationOk: parameters and key data until ReadyForQuery.
    async fn finish_startup(&mut self) -> Result<(), Error> {
        loop {
            match self.read_message().await? {
                Backend::Msg(Message::BackendKeyData(body)) => {
                    self.backend_pid = Some(body.process_id());
                }
                Backend::Msg(Message::ReadyForQuery(_)) => return Ok(()),
                Backend::Msg(Message::ErrorResponse(body)) => return Err(self.db_error(&body)),
                _ => return Err(Error::Protocol("unexpected message during startup".into())),
            }
        }
    }

    /// A server parameter reported by ParameterStatus (e.g. `server_version`).
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Converts an ErrorResponse, attaching the user for fix hints.
    pub(crate) fn db_error(&self, body: &backend::ErrorResponseBody) -> Error {
        let mut fields = Vec::new();
        let mut iter = body.fields();
        while let Ok(Some(f)) = iter.next() {
            fields.push((f.type_(), String::from_utf8_lossy(f.value_bytes()).into_owned()));
        }
        let mut db = DbError::from_fields(fields.iter().map(|(t, v)| (*t, v.as_str())));
        db.user = Some(self.user.clone());
        db.database = Some(self.database.clone());
        Error::Db(Box::new(db))
    }

    /// Queues a message built by a `frontend` function.
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Writes and flushes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Reads the next message, skipping (after recording or logging)
    /// ParameterStatus, NoticeResponse and NegotiateProtocolVersion.
    ///
    /// Cancel-safe: bytes already read stay in the buffer.
    pub(crate) async fn read_message(&mut self) -> Result<Backend, Error> {
        loop {
            if let Some(msg) = self.parse_buffered()? {
                match msg {
                    Backend::Msg(Message::ParameterStatus(body)) => {
                        self.params.insert(body.name()?.to_owned(), body.value()?.to_owned());
                    }
                    Backend::Msg(Message::NoticeResponse(body)) => {
                        let mut it = body.fields();
                        let mut text = String::new();
                        while let Ok(Some(f)) = it.next() {
                            if f.type_() == b'M' {
                                text = String::from_utf8_lossy(f.value_bytes()).into_owned();
                            }
                        }
                        tracing::info!(target: "replication::server", "server notice: {text}");
                    }
                    other => return Ok(other),
                }
                continue;
            }
            // Room for a whole receive window: a read cut short by the buffer leaves data
            // in the socket, which holds the window half shut and hides from the pacing
            // how much the primary has sent meanwhile.
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
                self.rbuf.reserve(2 * READ_CHUNK);
            }
            let n = self.read_some().await?;
            if n == 0 {
                return Err(Error::Closed(format!(
                    "server {} closed the connection unexpectedly",
                    self.target
                )));
            }
        }
    }

    /// Switches the socket between bulk (catch-up) and live reading, and says
    /// whether it reads in bulk now (never for Unix sockets).
    pub(crate) fn set_bulk_reading(&mut self, bulk: bool) -> bool {
        self.pacer.as_mut().is_some_and(|p| {
            p.set_bulk(bulk);
            p.is_bulk()
        })
    }

    /// One socket read. In bulk mode over a near link, a read that follows one that left
    /// little waiting pauses first (about as long as the walsender takes to fill the window)
    /// and takes at most half a window; over a far link the kernel holds the wake-up until a
    /// good amount is queued, and after [`BULK_READ_WAIT`] whatever is there is read anyway.
    /// See [`crate::pacing`].
    async fn read_some(&mut self) -> Result<usize, Error> {
        let Some(pacer) = self.pacer.as_mut().filter(|p| p.is_bulk()) else {
            return Ok(self.io.read_buf(&mut self.rbuf).await?);
        };
        if pacer.is_paced() {
            if let Some(pause) = pacer.pause() {
                tokio::time::sleep(pause).await;
                pacer.after_pause();
            }
            let n = match pacer.read_limit() {
                Some(limit) => (&mut self.io).take(limit).read_buf(&mut self.rbuf).await?,
                None => self.io.read_buf(&mut self.rbuf).await?,
            };
            pacer.after_read(self.tls);
            return Ok(n);
        }
        // A cancelled read may have left the low-water mark at one byte.
        pacer.set_lowat(BULK_LOWAT);
        if let Ok(n) = tokio::time::timeout(BULK_READ_WAIT, self.io.read_buf(&mut self.rbuf)).await
        {
            return Ok(n?);
        }
        // Lowering the mark signals readiness at once if anything is queued.
        pacer.set_lowat(1);
        let n = self.io.read_buf(&mut self.rbuf).await?;
        pacer.set_lowat(BULK_LOWAT);
        Ok(n)
    }

    fn parse_buffered(&mut self) -> Result<Option<Backend>, Error> {
        loop {
            let Some(header) = backend::Header::parse(&self.rbuf)? else {
                return Ok(None);
            };
            let len = usize::try_from(header.len()).ok().filter(|l| *l <= MAX_FRAME).ok_or_else(
                || Error::Protocol(format!("invalid message length {}", header.len())),
            )?;
            let total = len + 1;
            if self.rbuf.len() < total {
                self.rbuf.reserve(total - self.rbuf.len());
                return Ok(None);
            }
            match header.tag() {
                b'W' => {
                    self.rbuf.advance(total);
                    return Ok(Some(Backend::CopyBothResponse));
                }
                b'v' => {
                    // We ask for 3.0 without `_pq_` options, so there is
                    // nothing to downgrade; note it and go on.
                    self.rbuf.advance(total);
                    tracing::debug!("server sent NegotiateProtocolVersion");
                }
                _ => {
                    return match Message::parse(&mut self.rbuf)? {
                        Some(m) => Ok(Some(Backend::Msg(m))),
                        None => Ok(None),
                    };
                }
            }
        }
    }

    /// Sends Terminate and closes the socket (errors ignored: we are leaving).
    pub(crate) async fn terminate(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// TCP keepalives and `tcp_user_timeout` as configured (keepalives on by default, as in
/// libpq, so a server that vanishes without a word is noticed).
pub(crate) fn tune_tcp(tcp: &TcpStream, cfg: &ConnConfig) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    match cfg.keepalives() {
        None => sock.set_keepalive(false)?,
        Some(k) => {
            let mut params = socket2::TcpKeepalive::new();
            if let Some(idle) = k.idle {
                params = params.with_time(idle);
            }
            if let Some(interval) = k.interval {
                params = params.with_interval(interval);
            }
            if let Some(count) = k.count {
                params = params.with_retries(count);
            }
            sock.set_tcp_keepalive(&params)?;
        }
    }
    if let Some(timeout) = cfg.tcp_user_timeout() {
        sock.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// Sends SSLRequest and reads exactly one byte: `S` means go ahead with
/// TLS, `N` means plaintext only. Anything else (e.g. an ErrorResponse from
/// an ancient server) is refused without echoing it (CVE-2024-10977).
async fn negotiate_tls(tcp: &mut TcpStream) -> Result<bool, Error> {
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        _ => Err(Error::Protocol("the server rejected the TLS request".into())),
    }
}

/// Turns `server_version` (`15.18 (Debian ...)`, `16beta1`, `9.6.24`) into
/// the `server_version_num` form (150018, 160000, 90624).
pub(crate) fn parse_server_version(s: &str) -> Option<u32> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit() && c != '.').next()?.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + minor)
    } else {
        let patch: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(major * 10000 + minor * 100 + patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_server_version("15.18 (Debian 15.18-1.pgdg120+1)"), Some(150018));
        assert_eq!(parse_server_version("16beta1"), Some(160000));
        assert_eq!(parse_server_version("17.2"), Some(170002));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("garbage"), None);
    }

    #[tokio::test]
    async fn tcp_keepalives_and_user_timeout() {
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let cfg = |s: &str| ConnConfig::parse_with_env(s, &|_| None).unwrap();
        let sock = socket2::SockRef::from(&tcp);
        tune_tcp(&tcp, &cfg("host=h user=u")).unwrap();
        assert!(sock.keepalive().unwrap(), "on by default");
        tune_tcp(
            &tcp,
            &cfg("host=h user=u keepalives_idle=42 keepalives_interval=7 keepalives_count=5 \
                  tcp_user_timeout=2500"),
        )
        .unwrap();
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 5);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_millis(2500)));
        tune_tcp(&tcp, &cfg("host=h user=u keepalives=0")).unwrap();
        assert!(!sock.keepalive().unwrap());
    }
}
