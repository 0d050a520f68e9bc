//! Each auth method admits the right password and refuses a wrong or missing one, for
//! normal and replication connections.

use std::process::Command;

use pgcluster::{AuthMethod, Cluster, ClusterBuilder};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

// Characters that need URL encoding and SQL literal quoting.
const PASSWORD: &str = "s3cr'et p@ss:/%";

async fn try_connect(
    cluster: &Cluster,
    password: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let (client, conn) =
        cluster.config_for("postgres", password, "postgres").connect(NoTls).await?;
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.map(|_| ())
}

/// A replication-mode connection via psql (IDENTIFY_SYSTEM), password through the env.
fn replication_ok(cluster: &Cluster, password: &str) -> bool {
    let status = Command::new(cluster.bindir().join("psql"))
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres replication=database",
            cluster.port()
        ))
        .args(["-X", "-q", "-c", "IDENTIFY_SYSTEM"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    status.status.success()
}

async fn check_method(method: AuthMethod, stored_prefix: &str) {
    let cluster = ClusterBuilder::new().auth(method).password(PASSWORD).start().unwrap();
    let _log = cluster.log_guard();
    try_connect(&cluster, Some(PASSWORD)).await.unwrap();
    let err = try_connect(&cluster, Some("wrong")).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{method:?}: {err}");
    assert!(try_connect(&cluster, None).await.is_err(), "{method:?}: no password must fail");

    // The URL carries the (percent-encoded) password.
    let (client, conn) = tokio_postgres::connect(&cluster.url("postgres"), NoTls).await.unwrap();
    tokio::spawn(conn);
    let stored: String = client
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with(stored_prefix), "{method:?} stored as {}", &stored[..6]);

    assert!(replication_ok(&cluster, PASSWORD), "{method:?}: replication with right password");
    assert!(!replication_ok(&cluster, "wrong"), "{method:?}: replication with wrong password");
}

#[tokio::test]
async fn scram_sha_256() {
    check_method(AuthMethod::ScramSha256, "SCRAM-SHA-256$").await;
}

#[tokio::test]
async fn md5() {
    check_method(AuthMethod::Md5, "md5").await;
}

#[tokio::test]
async fn cleartext_password() {
    check_method(AuthMethod::Password, "SCRAM-SHA-256$").await;
}

#[tokio::test]
async fn trust_needs_no_password() {
    let cluster = ClusterBuilder::new().start().unwrap();
    try_connect(&cluster, None).await.unwrap();
    try_connect(&cluster, Some("anything")).await.unwrap();
    assert!(replication_ok(&cluster, ""));
}

#[test]
fn password_methods_need_a_password() {
    for method in [AuthMethod::Password, AuthMethod::Md5, AuthMethod::ScramSha256] {
        let err = ClusterBuilder::new().auth(method).start().unwrap_err();
        assert!(matches!(err, pgcluster::Error::PasswordRequired(m) if m == method));
    }
}

#[test]
fn debug_output_hides_the_password() {
    let builder = ClusterBuilder::new().password(PASSWORD);
    assert!(!format!("{builder:?}").contains(PASSWORD));
}
