//! TLS: `ssl = on` with a generated CA, verified by a rustls client (verify-full).

use std::sync::Arc;

use pgcluster::{Cluster, ClusterBuilder, TlsConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;

async fn connect_verified(
    cluster: &Cluster,
    ca: &std::path::Path,
) -> Result<bool, tokio_postgres::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let mut pg = cluster.config("postgres");
    pg.ssl_mode(SslMode::Require);
    let (client, conn) = pg.connect(tls).await?;
    tokio::spawn(conn);
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn generated_certificates_verify() {
    let a = ClusterBuilder::new().tls(TlsConfig::Generate).start().unwrap();
    let _log = a.log_guard();
    assert!(a.tls_enabled());
    let client = a.connect("postgres").await.unwrap();
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(ssl, "on");
    let ca_a = a.ca_cert_path().unwrap().to_path_buf();
    assert!(connect_verified(&a, &ca_a).await.unwrap(), "connection must be encrypted");

    // Another cluster's CA must not verify this server.
    let b = ClusterBuilder::new().tls(TlsConfig::Generate).start().unwrap();
    let ca_b = b.ca_cert_path().unwrap().to_path_buf();
    assert!(connect_verified(&a, &ca_b).await.is_err());

    // Caller-supplied files: serve A's certificate from a third cluster; A's CA verifies it.
    let c = ClusterBuilder::new()
        .tls(TlsConfig::Files {
            cert: a.data_dir().join("server.crt"),
            key: a.data_dir().join("server.key"),
            ca: Some(ca_a.clone()),
        })
        .start()
        .unwrap();
    assert!(connect_verified(&c, c.ca_cert_path().unwrap()).await.unwrap());
}

#[test]
fn missing_tls_files_are_reported() {
    let err = ClusterBuilder::new()
        .tls(TlsConfig::Files { cert: "/nonexistent.crt".into(), key: "/x.key".into(), ca: None })
        .start()
        .unwrap_err();
    assert!(matches!(err, pgcluster::Error::TlsFileMissing(_)), "{err}");
}

#[tokio::test]
async fn no_tls_by_default() {
    let cluster = ClusterBuilder::new().start().unwrap();
    assert!(!cluster.tls_enabled());
    assert!(cluster.ca_cert_path().is_none());
    let client = cluster.connect("postgres").await.unwrap();
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(ssl, "off");
}
