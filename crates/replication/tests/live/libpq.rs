//! libpq's connection options against real servers, on both connection kinds: `options`,
//! the service file, several hosts with `target_session_attrs`, client certificates, and
//! the fix for a database that does not exist.

use std::path::Path;

use pgcluster::{ClusterBuilder, TlsConfig};
use pgconn::{ConnConfig, Error, SqlState, connect_sql};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use replication::ReplicationClient;

use crate::{cfg, cfg_from, fresh_db, no_env, repl_err, start_cluster};

/// `sql` on a replication connection and on an SQL connection: both first values.
async fn ask_both(c: &ConnConfig, sql: &str) -> (String, String) {
    let mut repl = ReplicationClient::connect(c).await.expect("replication connection");
    let rows = repl.simple_query(sql).await.unwrap();
    let from_repl = rows[0].get(0).unwrap().to_owned();
    repl.close().await;
    let client = connect_sql(c).await.expect("SQL connection");
    let rows = client.simple_query(sql).await.unwrap();
    let from_sql = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    (from_repl, from_sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_sent_at_startup() {
    let (cluster, db) = fresh_db("options").await;
    let c = cfg_from(&cluster.url(&db), "sslmode=disable&options=-c%20search_path%3Dmirror_s");
    let (repl, sql) = ask_both(&c, "SHOW search_path").await;
    assert_eq!((repl.as_str(), sql.as_str()), ("mirror_s", "mirror_s"));
    // libpq's other spelling, and PGOPTIONS.
    let c = ConnConfig::parse_with_env(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", cluster.port()),
        &|k| (k == "PGOPTIONS").then(|| "--search_path=from_env".to_owned()),
    )
    .unwrap();
    let (repl, sql) = ask_both(&c, "SHOW search_path").await;
    assert_eq!((repl.as_str(), sql.as_str()), ("from_env", "from_env"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_file_names_the_server() {
    let (cluster, db) = fresh_db("service").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.conf");
    std::fs::write(
        &file,
        format!(
            "# test services\n[other]\nhost=192.0.2.1\n\n[mirror_src]\nhost=127.0.0.1\nport={}\n\
             user=postgres\ndbname={db}\napplication_name=svc_app\nsslmode=disable\n",
            cluster.port()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let env = |k: &str| (k == "PGSERVICEFILE").then(|| file.clone());
    let c = ConnConfig::parse_with_env("service=mirror_src", &env).unwrap();
    let (repl, sql) =
        ask_both(&c, "SELECT current_database() || ' ' || current_setting('application_name')")
            .await;
    let want = format!("{db} svc_app");
    assert_eq!((repl, sql), (want.clone(), want));
    // PGSERVICE chooses it too.
    let env = |k: &str| match k {
        "PGSERVICEFILE" => Some(file.clone()),
        "PGSERVICE" => Some("mirror_src".to_owned()),
        _ => None,
    };
    let c = ConnConfig::parse_with_env("", &env).unwrap();
    assert_eq!(c.dbname(), db);
}

/// A TCP port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_and_target_session_attrs() {
    let rw = pgcluster::shared().port();
    // Not a standby, but read-only: libpq counts it as such for read-write / read-only.
    let ro_cluster = start_cluster(
        ClusterBuilder::new().fast_unsafe().setting("default_transaction_read_only", "on"),
    )
    .await;
    let ro = ro_cluster.port();
    let down = closed_port();
    let hosts = |ports: &[u16], attrs: &str| {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let s = format!(
            "host={} port={} user=postgres dbname=postgres sslmode=disable \
             target_session_attrs={attrs}",
            vec!["127.0.0.1"; ports.len()].join(","),
            list.join(",")
        );
        ConnConfig::parse_with_env(&s, &no_env).unwrap()
    };
    for (ports, attrs, want) in [
        (vec![down, ro], "any", ro),
        (vec![ro, rw], "read-write", rw),
        (vec![rw, ro], "read-only", ro),
        (vec![down, ro, rw], "primary", ro),
        (vec![ro, rw], "prefer-standby", ro),
        (vec![down, rw], "read-write", rw),
    ] {
        let (repl, sql) = ask_both(&hosts(&ports, attrs), "SHOW port").await;
        assert_eq!((repl, sql), (want.to_string(), want.to_string()), "{ports:?} {attrs}");
    }
    // The URL form, one port per host.
    let url = format!(
        "postgres://postgres@127.0.0.1:{ro},127.0.0.1:{rw}/postgres?sslmode=disable&\
         target_session_attrs=read-write"
    );
    let c = ConnConfig::parse_with_env(&url, &no_env).unwrap();
    assert_eq!(ask_both(&c, "SHOW port").await.0, rw.to_string());

    // No host suits: every host's reason, in order.
    let c = hosts(&[down, ro, rw], "standby");
    for err in [repl_err(&c).await, connect_sql(&c).await.unwrap_err()] {
        let Error::AllHostsFailed(failures) = &err else { panic!("{err}") };
        assert_eq!(failures.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{down}: could not connect")), "{text}");
        assert!(
            text.contains(&format!(
                "127.0.0.1:{ro}: server 127.0.0.1:{ro} does not suit \
                                    target_session_attrs=standby: server is not in hot standby mode"
            )),
            "{text}"
        );
        assert!(err.fix().unwrap().contains("target_session_attrs=standby"), "{err}");
    }
    // One host: its own error, not a list.
    let c = hosts(&[ro], "read-write");
    let err = connect_sql(&c).await.unwrap_err();
    assert!(matches!(err, Error::SessionAttrs { reason: "session is read-only", .. }), "{err}");
    let err = repl_err(&hosts(&[down], "any")).await;
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for `postgres`, as
/// PEM files in `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Path) -> [std::path::PathBuf; 5] {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "client cert test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "postgres");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    let files = [
        ("ca.crt", ca_cert.pem()),
        ("server.crt", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.crt", client_cert.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        set_mode(&path, 0o600);
        path
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let cluster = start_cluster(ClusterBuilder::new().fast_unsafe().tls(TlsConfig::Files {
        cert: server_cert,
        key: server_key,
        ca: Some(ca),
    }))
    .await;
    // Only certificates from the test CA, and over TCP only `cert` authentication.
    let ca = cluster.ca_cert_path().unwrap().display().to_string();
    let admin = cluster.connect("postgres").await.unwrap();
    admin.batch_execute(&format!("ALTER SYSTEM SET ssl_ca_file = '{ca}'")).await.unwrap();
    drop(admin);
    std::fs::write(
        cluster.data_dir().join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| cluster.restart()).unwrap();

    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert={ca}",
        cluster.port()
    );
    let with_cert =
        format!("{base} sslcert={} sslkey={}", client_cert.display(), client_key.display());
    let c = ConnConfig::parse_with_env(&with_cert, &no_env).unwrap();
    let (repl, sql) =
        ask_both(&c, "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await;
    assert_eq!((repl.as_str(), sql.as_str()), ("/CN=postgres", "/CN=postgres"));

    // Without a certificate the server refuses, on both connection kinds.
    let c = ConnConfig::parse_with_env(&base, &no_env).unwrap();
    for err in [repl_err(&c).await, connect_sql(&c).await.unwrap_err()] {
        assert_eq!(err.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
    }
    // A key others can read is refused before connecting, as libpq does.
    set_mode(&client_key, 0o644);
    let c = ConnConfig::parse_with_env(&with_cert, &no_env).unwrap();
    for err in [repl_err(&c).await, connect_sql(&c).await.unwrap_err()] {
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(err.to_string().contains("group or world access"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_gets_its_own_fix() {
    let cluster = pgcluster::shared();
    let c = cfg(cluster, "no_such_db_libpq");
    for err in [repl_err(&c).await, connect_sql(&c).await.unwrap_err()] {
        assert_eq!(err.code(), Some(&SqlState::INVALID_CATALOG_NAME), "{err}");
        let text = err.to_string();
        assert!(text.contains("CREATE DATABASE \"no_such_db_libpq\""), "{text}");
        assert!(text.contains("psql -l"), "{text}");
        assert!(!text.contains("pg_hba"), "{text}");
    }
}
