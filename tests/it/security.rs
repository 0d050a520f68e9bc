//! Security: passwords never printed (URL, PGPASSWORD, PGPASSFILE), TLS verify-full end to end,
//! and mirroring with least-privilege roles on both sides.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgcluster::{AuthMethod, ClusterBuilder, TlsConfig};
use pgconn::ConnConfig;
use pgmirror::mirror::MirrorOptions;
use pgmirror::selection::TableSelection;
use pgmirror::shutdown::Shutdown;

use crate::common::{database, fingerprints, store_pair, wait_converged, wait_for};

const RIGHT: &str = "Pw-h8-Right-31415";
const WRONG: &str = "Pw-h8-Wrong-27182";

struct Output {
    success: bool,
    all: String,
}

/// Runs pgmirror to completion, or stops it with SIGTERM after `run_for`.
fn pgmirror(args: &[&str], env: &[(&str, &str)], run_for: Option<Duration>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmirror"));
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("PGPASSWORD")
        .env_remove("RUST_LOG")
        .env("PGPASSFILE", "/nonexistent/pgpass")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pgmirror");
    if let Some(d) = run_for {
        std::thread::sleep(d);
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    }
    let (mut out, mut err) = (String::new(), String::new());
    // Read stderr on a thread: -vv output can fill a pipe.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    err.push_str(&reader.join().unwrap());
    let status = child.wait().unwrap();
    Output { success: status.success(), all: format!("{out}{err}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_url_env_and_passfile_are_never_printed() {
    let cluster =
        ClusterBuilder::new().auth(AuthMethod::ScramSha256).password(RIGHT).start().unwrap();
    let (db, client) = database(&cluster, "pw").await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let (dst_db, _dst) = database(&cluster, "pw_dst").await;
    let no_pw = cluster.url_for("postgres", None, &db);
    let dst_no_pw = cluster.url_for("postgres", None, &dst_db);
    let clean = |o: &Output| !o.all.contains(RIGHT) && !o.all.contains(WRONG);

    // A wrong password in the URL, with trace logging.
    let wrong_url = cluster.url_for("postgres", Some(WRONG), &db);
    let o = pgmirror(
        &["-vv", "mirror", "--source", &wrong_url, "--target", &wrong_url, "--tables", "t"],
        &[],
        None,
    );
    assert!(!o.success && o.all.contains("password authentication failed"), "{}", o.all);
    assert!(clean(&o), "password printed:\n{}", o.all);

    // A wrong PGPASSWORD.
    let o = pgmirror(
        &["-vv", "mirror", "--source", &no_pw, "--target", &dst_no_pw, "--tables", "t"],
        &[("PGPASSWORD", WRONG)],
        None,
    );
    assert!(!o.success && o.all.contains("password authentication failed"), "{}", o.all);
    assert!(clean(&o), "password printed:\n{}", o.all);

    // No password at all and no terminal to ask on: a clear message.
    let o = pgmirror(&["tail", "--source", &no_pw, "--tables", "t", "--temporary"], &[], None);
    assert!(!o.success && o.all.contains("none was given"), "{}", o.all);

    // The right password from each source works, and trace logs never show it.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(&passfile, format!("127.0.0.1:{}:*:postgres:{RIGHT}\n", cluster.port()))
        .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passfile = passfile.to_str().unwrap().to_owned();
    let right_url = cluster.url_for("postgres", Some(RIGHT), &db);
    for (how, url, env) in [
        ("url", right_url.as_str(), vec![]),
        ("PGPASSWORD", no_pw.as_str(), vec![("PGPASSWORD", RIGHT)]),
        ("PGPASSFILE", no_pw.as_str(), vec![("PGPASSFILE", passfile.as_str())]),
    ] {
        let slot = pgcluster::unique_name("pwslot");
        let o = pgmirror(
            &["-vv", "tail", "--source", url, "--tables", "t", "--temporary", "--slot", &slot],
            &env,
            Some(Duration::from_secs(3)),
        );
        assert!(o.success, "{how}: {}", o.all);
        assert!(o.all.contains("streaming changes"), "{how}: connected and streamed: {}", o.all);
        assert!(clean(&o), "{how}: password printed:\n{}", o.all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_mirror_end_to_end() {
    let cluster = ClusterBuilder::new().tls(TlsConfig::Generate).start().unwrap();
    let _log = cluster.log_guard();
    let (src_db, src, dst_db, dst) = store_pair(&cluster, &cluster, &store::Scale::tiny()).await;
    let ca = cluster.ca_cert_path().expect("generated CA").to_str().unwrap().to_owned();
    let tls = |db: &str| format!("{}?sslmode=verify-full&sslrootcert={ca}", cluster.url(db));
    let name = pgcluster::unique_name("tls");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", &tls(&src_db), "--target", &tls(&dst_db), "--name", &name])
        .args(["--tables", &store::TABLES.join(",")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    src.execute("INSERT INTO customers (email, name) VALUES ('tls@example.com', 'T')", &[])
        .await
        .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;
    wait_for(Duration::from_secs(10), "an encrypted walsender", || async {
        src.query_one(
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE r.application_name = 'pgmirror' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Another CA: verify-full refuses the server.
    let other = ClusterBuilder::new().tls(TlsConfig::Generate).start().unwrap();
    let wrong_ca = other.ca_cert_path().unwrap().to_str().unwrap().to_owned();
    let bad = format!("{}?sslmode=verify-full&sslrootcert={wrong_ca}", cluster.url(&src_db));
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["tail", "--source", &bad, "--tables", "customers", "--temporary"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_roles_mirror_end_to_end() {
    let cluster = pgcluster::shared();
    let (src_db, src, _, _) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let admin = cluster.connect("postgres").await.unwrap();
    let rep = pgcluster::unique_name("rep");
    let owner = pgcluster::unique_name("owner");
    let dst_db = pgcluster::unique_name("lp_dst");
    let publication = pgcluster::unique_name("lp_pub");
    let q = pgconn::quote_ident;
    // Source: REPLICATION and SELECT only; the publication is made by a superuser.
    admin.batch_execute(&format!("CREATE ROLE {} LOGIN REPLICATION", q(&rep))).await.unwrap();
    src.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA public TO {r};
         GRANT SELECT ON customers, products, orders, order_items TO {r};
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {r};
         CREATE PUBLICATION {p} FOR TABLE customers, products, orders, order_items;",
        r = q(&rep),
        p = q(&publication)
    ))
    .await
    .unwrap();
    // Target: a plain role that owns the target database.
    admin.batch_execute(&format!("CREATE ROLE {} LOGIN", q(&owner))).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {} OWNER {}", q(&dst_db), q(&owner)))
        .await
        .unwrap();
    for role in [&rep, &owner] {
        let su: bool = admin
            .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .unwrap()
            .get(0);
        assert!(!su);
    }
    let dst = cluster.connect(&dst_db).await.unwrap();

    let tables = TableSelection {
        publication: Some(publication.clone()),
        tables: None,
        exclude_tables: None,
    };
    pgmirror::logging::init(0);
    let opts = MirrorOptions::new(
        pgcluster::unique_name("lp"),
        ConnConfig::parse(&cluster.url_for(&rep, None, &src_db)).unwrap(),
        ConnConfig::parse(&cluster.url_for(&owner, None, &dst_db)).unwrap(),
        tables,
    );
    let shutdown = Shutdown::manual();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move { pgmirror::mirror::run(&opts, &mut stop).await });
    wait_converged(&src, &dst, Duration::from_secs(60)).await;

    let mut writer = cluster.connect(&src_db).await.unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    for _ in 0..50 {
        store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
    }
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    assert!(!task.is_finished());
    shutdown.trigger();
    task.await.unwrap().expect("mirror with least privileges stops cleanly");
    assert_eq!(fingerprints(&src).await, fingerprints(&dst).await);
    let owned: i64 = dst
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1",
            &[&owner],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 4, "the target tables belong to the target role");
}
