//! Every authentication method with the right, a wrong and no password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgcluster::{AuthMethod, ClusterBuilder};
use pgconn::{ConnConfig, Error, PasswordPrompt, SqlState, connect_sql};
use replication::ReplicationClient;

use crate::{cfg, cfg_from, repl_err, start_cluster};

const PASSWORD: &str = "s3cret pa:ss@word";

/// Answers every question with `answer` and counts them.
#[derive(Debug)]
struct CountingPrompt {
    answer: Option<&'static str>,
    asked: AtomicUsize,
}

impl PasswordPrompt for CountingPrompt {
    fn password(&self, user: &str, target: &str) -> Option<String> {
        assert_eq!(user, "postgres");
        assert!(target.starts_with("127.0.0.1:"), "{target}");
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.answer.map(str::to_owned)
    }
}

async fn check_method(method: AuthMethod) {
    let cluster =
        start_cluster(ClusterBuilder::new().fast_unsafe().auth(method).password(PASSWORD)).await;
    let good = cfg(&cluster, "postgres");
    assert_eq!(good.password(), Some(PASSWORD), "the URL carries the password");

    // Right password: replication connection and SQL connection.
    let mut client = ReplicationClient::connect(&good).await.expect("replication connect");
    let info = client.identify_system().await.expect("identify_system");
    assert_eq!(info.dbname.as_deref(), Some("postgres"));
    client.close().await;
    let sql = connect_sql(&good).await.expect("sql connect");
    let one: i32 = sql.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // Wrong password: a server error that says what to fix, never the password.
    let bad = good.clone().with_password(Some("wrong".into()));
    for err in [repl_err(&bad).await, connect_sql(&bad).await.unwrap_err()] {
        assert!(err.is_auth_failure(), "{method:?}: {err}");
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{method:?}: {err}");
        let text = err.to_string();
        assert!(text.contains("check the password"), "{text}");
        assert!(!text.contains("wrong") && !text.contains(PASSWORD), "{text}");
    }

    // No password at all (and no password file): a client-side error that says how to
    // give one, the same on both connection kinds.
    let none = good.clone().with_password(None).with_passfile(None);
    for err in [repl_err(&none).await, connect_sql(&none).await.unwrap_err()] {
        assert!(matches!(err, Error::PasswordMissing { .. }), "{method:?}: {err}");
        assert!(err.is_auth_failure() && err.is_password_missing());
        let text = err.to_string();
        assert!(text.contains("PGPASSWORD") && text.contains("password file"), "{text}");
    }

    // A prompt is asked only when the server wants a password, once per connection made.
    let prompt = Arc::new(CountingPrompt { answer: Some(PASSWORD), asked: AtomicUsize::new(0) });
    let prompted = none.clone().with_password_prompt(prompt.clone());
    let mut client = ReplicationClient::connect(&prompted).await.expect("prompted password");
    client.identify_system().await.unwrap();
    client.close().await;
    connect_sql(&prompted).await.expect("sql with prompted password");
    assert_eq!(prompt.asked.load(Ordering::SeqCst), 2);
    let mute = Arc::new(CountingPrompt { answer: None, asked: AtomicUsize::new(0) });
    let err = ReplicationClient::connect(&none.clone().with_password_prompt(mute.clone()))
        .await
        .unwrap_err();
    assert!(err.is_password_missing(), "{err}");
    assert_eq!(mute.asked.load(Ordering::SeqCst), 1);

    // The password file supplies it.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &passfile,
        format!("# test\n127.0.0.1:{}:*:postgres:{escaped}\n", cluster.port()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let from_file = none.clone().with_passfile(Some(passfile));
    let mut client = ReplicationClient::connect(&from_file).await.expect("password from file");
    client.identify_system().await.unwrap();
    client.close().await;
    connect_sql(&from_file).await.expect("sql with password from file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_password() {
    check_method(AuthMethod::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5() {
    check_method(AuthMethod::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256() {
    check_method(AuthMethod::ScramSha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_and_unix_socket() {
    let cluster = pgcluster::shared();
    // Trust over TCP without any password.
    let client = ReplicationClient::connect(&cfg(cluster, "postgres")).await.unwrap();
    assert!(client.server_version() >= 100_000);
    assert!(!client.is_tls());
    assert!(client.backend_pid().is_some());
    client.close().await;
    // Over the Unix socket: a host that is a directory.
    let socket = ConnConfig::parse_with_env(
        &format!(
            "host='{}' port={} user=postgres dbname=postgres application_name=sock_test",
            cluster.socket_dir().display(),
            cluster.port()
        ),
        &crate::no_env,
    )
    .unwrap();
    assert!(socket.is_unix_socket());
    let mut client = ReplicationClient::connect(&socket).await.expect("unix socket");
    let rows = client.simple_query("SELECT current_setting('application_name')").await;
    // The walsender accepts SQL in replication=database mode.
    assert_eq!(rows.unwrap()[0].get(0), Some("sock_test"));
    client.close().await;
    let sql = connect_sql(&socket).await.expect("sql over unix socket");
    let name: String =
        sql.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
    assert_eq!(name, "sock_test");
    // A URL with the default application name.
    let url = cfg_from(&cluster.url("postgres"), "sslmode=prefer");
    let sql = connect_sql(&url).await.expect("prefer falls back to plaintext");
    let name: String =
        sql.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
    assert_eq!(name, "pgmirror");
}
