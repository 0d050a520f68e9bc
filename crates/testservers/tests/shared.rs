//! The per-process shared servers are gone after the process exits normally (atexit) or is
//! killed (PR_SET_PDEATHSIG).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testservers::Server;

const CHILD_ENV: &str = "TESTSERVERS_TEST_CHILD_MODE";

/// Not a test on its own: the body of the child process started by the tests below.
#[test]
#[ignore = "run as a child process by the clean-up tests"]
fn child_process_body() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let mariadb = testservers::mariadb::shared();
    let nats = testservers::nats::shared();
    let mariadb_base = mariadb.data_dir().parent().unwrap().display().to_string();
    let nats_base = nats.store_dir().parent().unwrap().display().to_string();
    println!(
        "TESTSERVERS_CHILD {} {mariadb_base} {} {nats_base}",
        mariadb.pid().unwrap(),
        nats.pid().unwrap()
    );
    if mode == "hang" {
        // Bounded, in case the parent test fails before killing us.
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// A started child and what it reported: (pid, base directory) of each shared server.
struct Child {
    process: std::process::Child,
    servers: Vec<(u32, PathBuf)>,
    /// The child's `$TMPDIR`, holding all its servers' files and templates.
    tmp: tempfile::TempDir,
}

fn spawn_child(mode: &str) -> Child {
    let tmp = tempfile::tempdir().unwrap();
    // The `mysql` user must be able to reach its directories inside.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_body", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    // libtest prints "test child_process_body ... " before the marker on the same line.
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| l.split_once("TESTSERVERS_CHILD ").map(|(_, rest)| rest.to_owned()))
        .expect("child reported its servers");
    // Keep draining: a closed pipe would make the child's later prints fail.
    std::thread::spawn(move || lines.for_each(drop));
    let parts: Vec<&str> = line.split_whitespace().collect();
    let servers =
        parts.chunks(2).map(|pair| (pair[0].parse().unwrap(), PathBuf::from(pair[1]))).collect();
    Child { process, servers, tmp }
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shared_servers_are_removed_at_normal_exit() {
    let mut child = spawn_child("exit");
    assert!(child.process.wait().unwrap().success());
    assert_eq!(child.servers.len(), 2);
    // atexit ran before the process ended: everything is already gone.
    for (pid, base) in &child.servers {
        assert!(!serverproc::process_exists(*pid), "server {pid} outlived its process");
        assert!(base.starts_with(child.tmp.path()), "{}", base.display());
    }
    let left: Vec<_> =
        std::fs::read_dir(child.tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn shared_servers_die_with_a_killed_process() {
    let mut child = spawn_child("hang");
    for (pid, _) in &child.servers {
        assert!(serverproc::process_exists(*pid));
    }
    child.process.kill().unwrap(); // SIGKILL: no atexit, no destructors
    child.process.wait().unwrap();
    for (pid, _) in &child.servers {
        eventually("the server exits after its parent is killed", || {
            !serverproc::process_exists(*pid)
        });
    }
    // A killed process cannot remove its directories: `child.tmp` is removed here.
}
