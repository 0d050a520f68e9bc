//! TLS with rustls (ring provider) for both connection kinds: the
//! replication connection (which runs the handshake itself with [`client_config`],
//! [`server_name`] and [`tls_server_end_point`]) and tokio-postgres in
//! [`crate::connect_sql`] ([`MakeRustlsConnect`]).
//!
//! `sslmode` semantics follow libpq: `require` encrypts without verifying
//! (unless a root certificate is configured, then it acts as `verify-ca`),
//! `verify-ca` checks the chain but not the name, `verify-full` checks both.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{ConnConfig, SslMode};
use crate::error::Error;

/// How the server certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypt only (`prefer`, `require` without roots).
    None,
    /// Chain to a trusted root, any name.
    Chain,
    /// Chain and host name.
    Full,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client config for `cfg`, or `None` when TLS is not
/// attempted at all (`sslmode=disable` or a Unix socket).
///
/// # Errors
/// [`Error::Tls`] when the certificates cannot be read or `sslmode` needs roots none gives.
pub fn client_config(cfg: &ConnConfig) -> Result<Option<Arc<ClientConfig>>, Error> {
    if cfg.sslmode() == SslMode::Disable || cfg.is_unix_socket() {
        return Ok(None);
    }
    let root_setting = cfg.sslrootcert().map(str::to_owned).or_else(default_root_cert);
    let verify = match cfg.sslmode() {
        SslMode::VerifyFull => Verify::Full,
        SslMode::VerifyCa => Verify::Chain,
        // libpq: with a root certificate file present, require verifies the chain.
        SslMode::Require if cfg.sslrootcert().is_some() => Verify::Chain,
        _ => Verify::None,
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::None {
        Arc::new(NoVerify(provider.signature_verification_algorithms))
    } else {
        let Some(root_setting) = root_setting else {
            return Err(Error::Tls(format!(
                "sslmode={} needs trusted root certificates: set sslrootcert to a PEM file (or \
                 to \"system\" for the operating system's trusted CAs), or create \
                 ~/.postgresql/root.crt",
                cfg.sslmode()
            )));
        };
        let roots = Arc::new(load_roots(&root_setting)?);
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        if verify == Verify::Full { inner } else { Arc::new(ChainOnly(inner)) }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match (cfg.sslcert(), cfg.sslkey()) {
        (Some(cert), Some(key)) => {
            let (chain, key) = load_client_cert(cert, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Tls(format!("client certificate {}: {e}", cert.display())))?
        }
        _ => builder.with_no_client_auth(),
    };
    // libpq never sends an IP address as the server name, and neither does rustls.
    config.enable_sni = cfg.sslsni();
    Ok(Some(Arc::new(config)))
}

/// The client certificate chain and its private key, which (as libpq insists) no one but
/// its owner may read: mode 0600 or less, or 0640 or less when owned by root.
fn load_client_cert(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("could not read sslcert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!("sslcert {} holds no certificate", cert.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(key)
            .map_err(|e| Error::Tls(format!("could not read sslkey {}: {e}", key.display())))?;
        let mode = meta.permissions().mode();
        let allowed = if meta.uid() == 0 { 0o037 } else { 0o077 };
        if mode & allowed != 0 {
            return Err(Error::Tls(format!(
                "private key file {} has group or world access; it must have permissions \
                 u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less \
                 if owned by root",
                key.display()
            )));
        }
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("could not read sslkey {}: {e}", key.display())))?;
    Ok((chain, key))
}

/// libpq's fallback: `~/.postgresql/root.crt` when it exists.
fn default_root_cert() -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then(|| path.display().to_string())
}

fn load_roots(setting: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if setting == "system" {
        // The operating system's store (SSL_CERT_FILE and SSL_CERT_DIR override it).
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Error::Tls(format!(
                "sslrootcert=system: no trusted certificate in the system store{why}"
            )));
        }
        return Ok(roots);
    }
    let certs = CertificateDer::pem_file_iter(setting)
        .map_err(|e| Error::Tls(format!("could not read sslrootcert {setting}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("could not parse sslrootcert {setting}: {e}")))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Tls(format!("sslrootcert {setting} holds no usable certificate")));
    }
    Ok(roots)
}

/// The name presented for SNI and checked by `verify-full`. For modes that
/// do not check names, an unparsable host falls back to a placeholder.
///
/// # Errors
/// [`Error::Tls`] for `verify-full` with a host that is no valid server name.
pub fn server_name(host: &str, cfg: &ConnConfig) -> Result<ServerName<'static>, Error> {
    match ServerName::try_from(host.to_owned()) {
        Ok(n) => Ok(n),
        Err(_) if cfg.sslmode() != SslMode::VerifyFull => {
            Ok(ServerName::try_from("localhost").map_err(|e| Error::Tls(e.to_string()))?)
        }
        Err(e) => Err(Error::Tls(format!("host \"{host}\" is not a valid TLS server name: {e}"))),
    }
}

/// Accepts any certificate but still checks the handshake signatures (so
/// the session key is bound to the presented certificate, which channel
/// binding relies on).
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: full WebPKI verification, except that a name mismatch is
/// accepted. webpki checks the chain before the name, so a name error means
/// the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The `tls-server-end-point` channel binding data (RFC 5929): the hash of
/// the server certificate, with SHA-256 when the certificate's signature
/// uses MD5, SHA-1 or SHA-256, else the signature's own hash. `None` when the
/// algorithm has no single hash (e.g. Ed25519): channel binding is then not
/// offered, as in libpq.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm_oid(cert_der)?;
    // OID bodies (DER contents) of the signature algorithms we map.
    const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    match oid {
        SHA256_RSA | SHA1_RSA | MD5_RSA | ECDSA_SHA256 | ECDSA_SHA1 => {
            Some(sha2::Sha256::digest(cert_der).to_vec())
        }
        SHA384_RSA | ECDSA_SHA384 => Some(sha2::Sha384::digest(cert_der).to_vec()),
        SHA512_RSA | ECDSA_SHA512 => Some(sha2::Sha512::digest(cert_der).to_vec()),
        _ => None,
    }
}

/// Reads one DER TLV at the start of `buf`: (tag, contents, rest).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
/// AlgorithmIdentifier ::= SEQUENCE { OID, params }, signature }.
fn signature_algorithm_oid(cert_der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, cert, _) = der_tlv(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs, rest) = der_tlv(cert)?;
    let (tag, alg, _) = der_tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    (tag == OID).then_some(oid)
}

/// tokio-postgres TLS glue over tokio-rustls, with channel binding.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Option<Arc<ClientConfig>>,
    cfg: ConnConfig,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustlsConnect")
            .field("tls", &self.config.is_some())
            .field("sslmode", &self.cfg.sslmode())
            .finish()
    }
}

impl MakeRustlsConnect {
    /// TLS setup for `cfg` (same rules as the replication connection).
    pub fn new(cfg: &ConnConfig) -> Result<Self, Error> {
        Ok(MakeRustlsConnect { config: client_config(cfg)?, cfg: cfg.clone() })
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // tokio-postgres asks for a connector even when TLS is off; it is
        // only used if the handshake really happens.
        let name = match self.config {
            Some(_) => server_name(domain, &self.cfg).map_err(io::Error::other)?,
            None => ServerName::try_from("localhost").map_err(io::Error::other)?,
        };
        Ok(RustlsConnect { config: self.config.clone(), name })
    }
}

/// One pending TLS handshake for tokio-postgres.
#[derive(Debug)]
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| io::Error::other("TLS is disabled"))?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS stream for tokio-postgres.
#[derive(Debug)]
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()).and_then(|c| tls_server_end_point(c))
        {
            Some(hash) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(hash),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wraps `body` in a DER TLV (short or long length form).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap());
        } else {
            let bytes = u16::try_from(len).unwrap().to_be_bytes();
            out.push(0x82);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(body);
        out
    }

    fn fake_cert(oid: &[u8]) -> Vec<u8> {
        let tbs = tlv(0x30, &[0u8; 200]);
        let alg = tlv(0x30, &[tlv(0x06, oid), vec![0x05, 0x00]].concat());
        let sig = tlv(0x03, &[0u8; 10]);
        tlv(0x30, &[tbs, alg, sig].concat())
    }

    #[test]
    fn end_point_hash_follows_signature_algorithm() {
        let rsa256 = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(tls_server_end_point(&rsa256).unwrap(), sha2::Sha256::digest(&rsa256).to_vec());
        let rsa1 = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(tls_server_end_point(&rsa1).unwrap().len(), 32);
        let ec384 = fake_cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(tls_server_end_point(&ec384).unwrap(), sha2::Sha384::digest(&ec384).to_vec());
        let rsa512 = fake_cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(tls_server_end_point(&rsa512).unwrap().len(), 64);
        let ed25519 = fake_cert(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        // Truncated or garbage input never panics.
        for n in 0..rsa256.len() {
            assert_eq!(tls_server_end_point(&rsa256[..n]), None);
        }
        assert_eq!(tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn config_per_sslmode() {
        let env = |_: &str| None;
        let cfg = |s: &str| ConnConfig::parse_with_env(s, &env).unwrap();
        assert!(client_config(&cfg("host=h user=u sslmode=disable")).unwrap().is_none());
        assert!(client_config(&cfg("host=/tmp user=u sslmode=require")).unwrap().is_none());
        assert!(client_config(&cfg("host=h user=u sslmode=require")).unwrap().is_some());
        assert!(client_config(&cfg("host=h user=u sslmode=prefer")).unwrap().is_some());
        assert!(
            client_config(&cfg("host=h user=u sslmode=verify-full sslrootcert=system"))
                .unwrap()
                .is_some()
        );
        let err = client_config(&cfg("host=h user=u sslmode=verify-ca sslrootcert=/nonexistent"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent"), "{err}");
        let c = cfg("host=h user=u sslmode=verify-full");
        assert!(server_name("h", &c).is_ok());
        assert!(server_name("bad name!", &c).is_err());
        let c = cfg("host=h user=u sslmode=require");
        assert!(server_name("bad name!", &c).is_ok());
    }
}
