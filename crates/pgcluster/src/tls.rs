//! TLS material for a cluster: caller-supplied files or a generated CA + server certificate.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use serverproc::{IoContext, RunAs};

use crate::Error;

/// Where the server's certificate and key come from.
#[derive(Debug, Clone)]
pub enum TlsConfig {
    /// Generate a fresh CA and a server certificate for `localhost` and `127.0.0.1`, signed
    /// by it. The CA's PEM is available from [`crate::Cluster::ca_cert_path`] so clients can
    /// use `sslmode=verify-full`.
    Generate,
    /// Use these PEM files (copied into the data directory, since the server user must be
    /// able to read the key and PostgreSQL insists on strict key permissions).
    Files {
        /// Server certificate (PEM).
        cert: PathBuf,
        /// Server private key (PEM).
        key: PathBuf,
        /// Optional CA certificate to expose to clients.
        ca: Option<PathBuf>,
    },
}

/// Paths of the installed TLS files.
#[derive(Debug, Clone)]
pub(crate) struct InstalledTls {
    /// Server certificate inside the data dir.
    pub(crate) cert: PathBuf,
    /// Server key inside the data dir.
    pub(crate) key: PathBuf,
    /// CA certificate, readable by the caller.
    pub(crate) ca: Option<PathBuf>,
}

/// Writes the certificate and key into `data_dir` (key mode 0600, owned by the server user)
/// and the CA PEM (if any) into `public_dir`.
pub(crate) fn install(
    config: &TlsConfig,
    data_dir: &Path,
    public_dir: &Path,
    run_as: RunAs,
) -> Result<InstalledTls, Error> {
    let (cert_pem, key_pem, ca_pem) = match config {
        TlsConfig::Generate => {
            let generated = generate()?;
            (generated.0.into_bytes(), generated.1.into_bytes(), Some(generated.2.into_bytes()))
        }
        TlsConfig::Files { cert, key, ca } => {
            let read = |p: &PathBuf| {
                if !p.is_file() {
                    return Err(Error::TlsFileMissing(p.clone()));
                }
                Ok(fs::read(p).ctx(|| format!("read {}", p.display()))?)
            };
            (read(cert)?, read(key)?, ca.as_ref().map(read).transpose()?)
        }
    };
    let cert = data_dir.join("server.crt");
    let key = data_dir.join("server.key");
    serverproc::private_file(&cert, &cert_pem, run_as)?;
    serverproc::private_file(&key, &key_pem, run_as)?;
    let ca = match ca_pem {
        Some(pem) => {
            let path = public_dir.join("ca.crt");
            fs::write(&path, pem).ctx(|| format!("write {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    Ok(InstalledTls { cert, key, ca })
}

/// Generates (server cert PEM, server key PEM, CA cert PEM).
fn generate() -> Result<(String, String, String), Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "pgcluster test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let server_cert = params.signed_by(&server_key, &issuer)?;

    Ok((server_cert.pem(), server_key.serialize_pem(), ca_cert.pem()))
}
