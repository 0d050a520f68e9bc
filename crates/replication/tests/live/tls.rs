//! TLS modes against a cluster with a generated CA, and SCRAM channel binding.

use pgcluster::{AuthMethod, ClusterBuilder, TlsConfig};
use pgconn::{ChannelBinding, Error, SslMode, connect_sql};
use replication::ReplicationClient;

use crate::{cfg, cfg_from, repl_err, start_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_and_channel_binding() {
    let cluster = start_cluster(
        ClusterBuilder::new()
            .fast_unsafe()
            .auth(AuthMethod::ScramSha256)
            .password("tls-secret")
            .tls(TlsConfig::Generate),
    )
    .await;
    let ca = cluster.ca_cert_path().expect("generated CA").display().to_string();
    let url = cluster.url("postgres");

    // verify-full against the generated CA, by IP and by name.
    for host in ["127.0.0.1", "localhost"] {
        let c = cfg_from(&url, &format!("sslmode=verify-full&sslrootcert={ca}"))
            .with_host(pgconn::Host::Tcp(host.into()));
        let mut client = ReplicationClient::connect(&c).await.expect("verify-full");
        assert!(client.is_tls());
        // SCRAM-SHA-256-PLUS: the server verified our tls-server-end-point hash.
        assert!(client.uses_channel_binding(), "channel binding over TLS");
        client.identify_system().await.unwrap();
        let ssl = client
            .simple_query("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(ssl[0].get(0), Some("true"));
        client.close().await;
        let sql = connect_sql(&c).await.expect("sql verify-full");
        let ssl: bool = sql
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "connect_sql uses TLS");
    }

    // verify-ca checks the chain only.
    let c = cfg_from(&url, &format!("sslmode=verify-ca&sslrootcert={ca}"));
    ReplicationClient::connect(&c).await.expect("verify-ca").close().await;

    // require: encrypted without verification.
    let c = cfg_from(&url, "sslmode=require");
    let client = ReplicationClient::connect(&c).await.expect("require");
    assert!(client.is_tls());
    client.close().await;
    connect_sql(&c).await.expect("sql require");

    // channel_binding=require works over TLS ...
    let c = cfg_from(&url, "sslmode=require&channel_binding=require");
    assert_eq!(c.channel_binding(), ChannelBinding::Require);
    ReplicationClient::connect(&c).await.expect("channel binding required").close().await;
    connect_sql(&c).await.expect("sql channel binding required");
    // ... and is refused without it.
    let plain = cfg(&cluster, "postgres").with_channel_binding(ChannelBinding::Require);
    let err = repl_err(&plain).await;
    assert!(matches!(err, Error::Auth(_)), "{err}");

    // An untrusted server certificate is rejected.
    let c = cfg_from(&url, "sslmode=verify-full&sslrootcert=system");
    let err = repl_err(&c).await;
    assert!(matches!(err, Error::Tls(_)), "{err}");
    let err = connect_sql(&c).await.unwrap_err();
    assert!(matches!(err, Error::Tls(_) | Error::Sql(_)), "{err}");

    // sslmode=disable stays in plaintext even though the server offers TLS.
    let c = cfg(&cluster, "postgres");
    assert_eq!(c.sslmode(), SslMode::Disable);
    let client = ReplicationClient::connect(&c).await.unwrap();
    assert!(!client.is_tls());
    assert!(!client.uses_channel_binding());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_but_not_offered() {
    let cluster = pgcluster::shared();
    let c = cfg_from(&cluster.url("postgres"), "sslmode=require");
    let err = repl_err(&c).await;
    assert!(matches!(err, Error::TlsUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    let err = connect_sql(&c).await.unwrap_err();
    assert!(matches!(err, Error::TlsUnavailable { .. }), "{err}");
    // prefer falls back to plaintext.
    let c = cfg_from(&cluster.url("postgres"), "sslmode=prefer");
    let client = ReplicationClient::connect(&c).await.expect("prefer");
    assert!(!client.is_tls());
    client.close().await;
}
