//! Bad command-line use: one clear `error:` line on stderr, a non-zero exit status, and never a
//! password from a connection string in the output.

use std::process::Command;

use crate::common::database;

const PASSWORD: &str = "Pw-cli-9981-secret";

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env_remove("PGMIRROR_SOURCE")
        .env_remove("PGMIRROR_TARGET")
        .env_remove("RUST_LOG")
        .output()
        .expect("run pgmirror");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "password leaked for {args:?}: {stdout}{stderr}"
    );
    Outcome { code: out.status.code(), stderr }
}

/// Fails unless the run failed with exactly one `error:` line that contains `want`.
fn assert_clear_error(args: &[&str], want: &str) {
    let out = run(args);
    assert!(out.code.is_some_and(|c| c != 0), "{args:?} must fail: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line for {args:?}: {}", out.stderr);
    // clap lists missing arguments on the line after its error line.
    let said = lines[errors[0]..].iter().take(2).copied().collect::<Vec<_>>().join("\n");
    assert!(said.contains(want), "{args:?}: expected {want:?} in {said:?}");
}

#[test]
fn malformed_command_lines_fail_with_one_clear_line() {
    let url = format!("postgres://rep:{PASSWORD}@127.0.0.1:5999/app");
    assert_clear_error(&["frobnicate"], "unrecognized subcommand 'frobnicate'");
    assert_clear_error(&["bench", "--runs", "0"], "--runs must be at least 1");
    assert_clear_error(&["mirror", "--target", &url, "--tables", "a"], "--source");
    assert_clear_error(&["mirror", "--source", &url, "--target", &url], "--publication");
    assert_clear_error(
        &["mirror", "--source", &url, "--target", &url, "--publication", "p", "--tables", "a"],
        "cannot be used with",
    );
    assert_clear_error(
        &["mirror", "--source", &url, "--target", &url, "--tables", "a", "--copy-jobs", "many"],
        "--copy-jobs",
    );
    assert_clear_error(
        &["tail", "--source", &url, "--tables", "a", "--temporary", "--create-slot"],
        "cannot be used with",
    );
    assert_clear_error(
        &["tail", "--source", &url, "--tables", "a", "--endpos", "16/B374D84G"],
        "invalid LSN \"16/B374D84G\"",
    );
    assert_clear_error(
        &["tail", "--source", &url, "--tables", "a", "-I", "0/20", "-E", "0/10"],
        "--endpos 0/10 is before --startpos 0/20",
    );
    for bad in [
        format!("postgres://rep:{PASSWORD}@127.0.0.1:notaport/app"),
        format!("postgres://rep:{PASSWORD}@[::1/app"),
        format!("host=127.0.0.1 password={PASSWORD} sslmode=bogus"),
        format!("host=127.0.0.1 password='{PASSWORD}"),
    ] {
        assert_clear_error(
            &["mirror", "--source", &bad, "--target", &url, "--tables", "a"],
            "--source: invalid connection string",
        );
        assert_clear_error(
            &["mirror", "--source", &url, "--target", &bad, "--tables", "a"],
            "--target: invalid connection string",
        );
    }
    // A MySQL URL names a MySQL target, never a source.
    assert_clear_error(
        &[
            "mirror",
            "--source",
            &format!("mysql://rep:{PASSWORD}@127.0.0.1/app"),
            "--target",
            &url,
            "--tables",
            "a",
        ],
        "--source: invalid connection string",
    );
    assert_clear_error(
        &[
            "mirror",
            "--source",
            &url,
            "--target",
            &format!("mysql://rep:{PASSWORD}@127.0.0.1:notaport/app"),
            "--tables",
            "a",
        ],
        "--target: bad MySQL target URL",
    );
    // Nothing listens on port 1: one line that says where it tried to connect.
    let closed = format!("postgres://rep:{PASSWORD}@127.0.0.1:1/app?connect_timeout=5");
    assert_clear_error(&["tail", "--source", &closed, "--tables", "a"], "127.0.0.1:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_publications_are_named() {
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "cli").await;
    client.batch_execute("CREATE TABLE known (id int PRIMARY KEY)").await.unwrap();
    let (dst_db, _dst) = database(cluster, "cli_dst").await;
    // Trust authentication ignores the password, but it must not be echoed either.
    let src = cluster.url_for("postgres", Some(PASSWORD), &db);
    let dst = cluster.url_for("postgres", Some(PASSWORD), &dst_db);
    assert_clear_error(
        &["mirror", "--source", &src, "--target", &dst, "--tables", "known,no_such_table"],
        "no_such_table",
    );
    assert_clear_error(
        &["mirror", "--source", &src, "--target", &dst, "--publication", "no_such_pub"],
        "no_such_pub",
    );
    assert_clear_error(&["tail", "--source", &src, "--tables", "nope.nothing"], "nothing");
    assert_clear_error(
        &["mirror", "--source", &src, "--target", &dst, "--tables", "\"unterminated"],
        "unterminated",
    );
    assert_clear_error(
        &["mirror", "--source", &src, "--target", &dst, "--tables", "known,nosuchschema.*"],
        "schema \"nosuchschema\" not found on the source",
    );
    assert_clear_error(
        &["tail", "--source", &src, "--publication", "p", "--exclude-tables", "known"],
        "--exclude-tables cannot narrow --publication",
    );
}
