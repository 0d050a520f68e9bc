//! Speaking libpq and psql: fixes from the SQLSTATE, libpq's defaults with no source, the
//! `PG*` variables and psql's `-h -p -U -d`, `-?`/`--help`, passwords asked on a terminal
//! and explained without one, and `sslrootcert=system` from the operating system's store.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgcluster::{AuthMethod, ClusterBuilder, TlsConfig};

use crate::common::database;

const PASSWORD: &str = "Pw-libpq-6120-secret";

/// Variables that would choose a server, a password or a prompt for pgmirror.
const CHOOSERS: [&str; 12] = [
    "PGMIRROR_SOURCE",
    "PGMIRROR_TARGET",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGTARGETSESSIONATTRS",
    "RUST_LOG",
];

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs pgmirror without a terminal, with only `env` of the [`CHOOSERS`] set and no password
/// file; fails if the password shows anywhere.
fn pgmirror(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmirror"));
    cmd.args(args).env("PGPASSFILE", "/nonexistent/pgpass");
    for var in CHOOSERS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run pgmirror");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD), "password shown");
    run
}

/// The one `error:` line of a failed run.
fn error_line(run: &Run) -> String {
    assert!(run.code.is_some_and(|c| c != 0), "must fail: {}{}", run.stdout, run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    errors[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_fix_comes_from_the_sqlstate() {
    let cluster = pgcluster::shared();
    let url = cluster.url("no_such_db_cli");
    let run = pgmirror(&["check", "--source", &url], &[]);
    assert_eq!(run.code, Some(1));
    for check in ["source connection", "replication connection"] {
        let at = run.stdout.find(check).unwrap_or_else(|| panic!("{check}: {}", run.stdout));
        let fix = run.stdout[at..].lines().nth(1).unwrap();
        assert!(fix.contains("fix: check the database name (psql -l"), "{check}: {fix}");
        assert!(fix.contains("CREATE DATABASE \"no_such_db_cli\""), "{check}: {fix}");
    }
    assert!(!run.stdout.contains("pg_hba"), "{}", run.stdout);
    let dst = cluster.url("postgres");
    for args in [
        vec!["tail", "--source", &url, "--tables", "t"],
        vec!["mirror", "--source", &url, "--target", &dst, "--tables", "t"],
    ] {
        let line = error_line(&pgmirror(&args, &[]));
        assert!(line.contains("database \"no_such_db_cli\" does not exist"), "{line}");
        assert!(line.contains("CREATE DATABASE \"no_such_db_cli\""), "{line}");
        assert!(!line.contains("pg_hba"), "{line}");
    }
}

#[test]
fn no_source_means_libpq_defaults_and_says_so() {
    let user = whoami_user();
    for args in [
        vec!["tail", "--source", "", "--tables", "t"],
        vec!["tail", "--tables", "t"],
        vec!["check", "--source", ""],
    ] {
        let run = pgmirror(&args, &[]);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains(&format!("host {user} {user}")), "{args:?}: {all}");
        assert!(!all.contains("pg_hba"), "{args:?}: {all}");
        assert!(all.contains("libpq's defaults"), "{args:?}: {all}");
        assert!(all.contains(&format!("as user \"{user}\" to database \"{user}\"")), "{all}");
        if args[0] == "tail" {
            let line = error_line(&run);
            assert!(line.contains("--source postgres://USER@HOST:PORT/DBNAME"), "{line}");
            assert!(line.contains("-h HOST -p PORT -U USER -d DBNAME"), "{line}");
        } else {
            assert!(run.stdout.contains("fix: start the server"), "{}", run.stdout);
        }
    }
}

#[test]
fn mirror_does_not_retry_a_guessed_source_for_ever() {
    let target = "postgres://postgres@127.0.0.1:1/db";
    let line = error_line(&pgmirror(&["mirror", "--target", target, "--tables", "t"], &[]));
    assert!(line.contains("no source given: name the primary with --source"), "{line}");
    assert!(line.contains("does not guess it from libpq's defaults"), "{line}");
}

fn whoami_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_variables_and_psql_options_choose_the_source() {
    let cluster = pgcluster::shared();
    let (db, _client) = database(cluster, "psqlopts").await;
    let port = cluster.port().to_string();
    let passed = |run: &Run| {
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(&format!("database \"{db}\"")), "{}", run.stdout);
    };
    // PG* variables alone, as psql takes them.
    let env =
        [("PGHOST", "127.0.0.1"), ("PGPORT", &port), ("PGUSER", "postgres"), ("PGDATABASE", &db)];
    passed(&pgmirror(&["check"], &env));
    // psql's short and long options.
    passed(&pgmirror(&["check", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", &db], &[]));
    passed(&pgmirror(
        &["check", "--host", "127.0.0.1", "--port", &port, "--username=postgres", "--dbname", &db],
        &[],
    ));
    // The options override the matching parts of --source; the variables fill in the rest.
    let wrong = cluster.url("wrong_db_name");
    passed(&pgmirror(&["check", "--source", &wrong, "-d", &db], &[]));
    passed(&pgmirror(
        &["check", "-d", &db],
        &[("PGHOST", "127.0.0.1"), ("PGPORT", &port), ("PGUSER", "postgres")],
    ));
    // -d may hold a whole connection string, as in psql.
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname={db}");
    passed(&pgmirror(&["check", "-d", &conninfo], &[]));
    let line = error_line(&pgmirror(&["check", "--source", &wrong, "-d", &conninfo], &[]));
    assert!(line.contains("--source and -d both hold a connection string"), "{line}");
    let line = error_line(&pgmirror(&["check", "-h", "127.0.0.1", "-p", "notaport"], &[]));
    assert!(line.contains("invalid port number"), "{line}");

    // Help is -? or --help; -h is the host.
    for help in ["-?", "--help"] {
        let run = pgmirror(&["tail", help], &[]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(run.stdout.contains("-h, --host <HOST>"), "{}", run.stdout);
        assert!(run.stdout.contains("-?, --help"), "{}", run.stdout);
    }
    let run = pgmirror(&["--help"], &[]);
    assert!(run.stdout.contains("Usage: pgmirror"), "{}", run.stdout);
    let line = error_line(&pgmirror(&["tail", "-h"], &[]));
    assert!(line.contains("--host <HOST>"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_asked_on_a_terminal_and_explained_without_one() {
    let cluster = tokio::task::spawn_blocking(|| {
        ClusterBuilder::new()
            .fast_unsafe()
            .auth(AuthMethod::ScramSha256)
            .password(PASSWORD)
            .start()
            .unwrap()
    })
    .await
    .unwrap();
    let url = cluster.url_for("postgres", None, "postgres");

    // No terminal: one line that says how to give one.
    let line = error_line(&pgmirror(&["tail", "--source", &url, "--tables", "t"], &[]));
    for want in ["asks for a password", "PGPASSWORD", "password file", "PGPASSFILE", "-W"] {
        assert!(line.contains(want), "{want}: {line}");
    }

    // On a terminal: asked once for all of check's connections, never echoed.
    let (out, asked) = on_terminal(&format!("check --source {url}"), Some(PASSWORD));
    assert_eq!(asked, 1, "{out}");
    assert!(
        out.contains(&format!("Password for postgres@127.0.0.1:{} (source): ", cluster.port()))
    );
    assert!(
        out.contains("✔ source connection") && out.contains("✔ replication connection"),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "echoed: {out}");
    // -w never asks, even on a terminal.
    let (out, asked) = on_terminal(&format!("-w check --source {url}"), None);
    assert_eq!(asked, 0, "{out}");
    assert!(out.contains("none was given"), "{out}");
}

/// Runs `pgmirror ARGS` on a pseudo-terminal (util-linux `script`), typing `password` once
/// the prompt is on the screen. Returns the screen and how many prompts appeared.
fn on_terminal(args: &str, password: Option<&str>) -> (String, usize) {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_pgmirror"));
    let mut script = Command::new("script");
    script.args(["-qefc", &cmd, "/dev/null"]).env("PGPASSFILE", "/nonexistent/pgpass");
    for var in CHOOSERS {
        script.env_remove(var);
    }
    let mut child = script
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(password) = password {
        // Type only once asked: earlier input would be echoed by the terminal itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&screen).contains("Password for") {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = rx.recv_timeout(left).expect("a password prompt within 30 s");
            screen.extend(chunk);
        }
        // A person reads the prompt first; the terminal stops echoing just after showing it.
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    reader.join().unwrap();
    screen.extend(rx.try_iter().flatten());
    let screen = String::from_utf8_lossy(&screen).into_owned();
    assert!(status.is_some(), "pgmirror on the terminal did not finish: {screen}");
    let asked = screen.matches("Password for").count();
    (screen, asked)
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslrootcert_system_uses_the_operating_system_store() {
    let cluster = tokio::task::spawn_blocking(|| {
        ClusterBuilder::new().fast_unsafe().tls(TlsConfig::Generate).start().unwrap()
    })
    .await
    .unwrap();
    let ca = cluster.ca_cert_path().unwrap().display().to_string();
    let source = format!(
        "host=localhost port={} user=postgres dbname=postgres sslrootcert=system",
        cluster.port()
    );
    // SSL_CERT_FILE replaces the system store: with the cluster's CA in it, verify-full passes.
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().display().to_string();
    let store = [("SSL_CERT_FILE", ca.as_str()), ("SSL_CERT_DIR", empty.as_str())];
    let run = pgmirror(&["check", "--source", &source], &store);
    assert!(run.stdout.contains("✔ source connection"), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("✔ replication connection"), "{}", run.stdout);
    // The real system store does not know the test CA.
    let run = pgmirror(&["check", "--source", &source], &[]);
    assert!(run.stdout.contains("✘ source connection"), "{}", run.stdout);
    assert!(run.stdout.contains("certificate"), "{}", run.stdout);
}
