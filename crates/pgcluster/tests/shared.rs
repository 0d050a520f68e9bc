//! The per-process shared cluster: used from parallel tests, and gone after the process
//! exits normally (atexit) or is killed (PR_SET_PDEATHSIG).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PGCLUSTER_TEST_CHILD_MODE";

async fn use_shared(tag: &str) -> u16 {
    let cluster = pgcluster::shared();
    let _log = cluster.log_guard();
    let db = pgcluster::unique_name(tag);
    cluster.create_database(&db).await.unwrap();
    let client = cluster.connect(&db).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    cluster.port()
}

#[tokio::test]
async fn shared_a() {
    assert_eq!(use_shared("shared_a").await, pgcluster::shared().port());
}

#[tokio::test]
async fn shared_b() {
    assert_eq!(use_shared("shared_b").await, pgcluster::shared().port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_from_many_tasks() {
    let tasks: Vec<_> = (0..8).map(|i| tokio::spawn(use_shared_task(i))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(std::ptr::eq(pgcluster::shared(), pgcluster::shared()));
}

async fn use_shared_task(i: usize) {
    use_shared(&format!("task{i}")).await;
}

/// Not a test on its own: the body of the child process started by the tests below.
#[test]
#[ignore = "run as a child process by the cleanup tests"]
fn child_process_body() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let cluster = pgcluster::shared();
    let pid = cluster.pid().unwrap();
    let base = cluster.data_dir().parent().unwrap().display().to_string();
    println!("PGCLUSTER_CHILD {pid} {base}");
    if mode == "hang" {
        // Bounded, in case the parent test fails before killing us.
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next().unwrap();
        state != "Z" && state != "X"
    })
}

/// Starts the child, returns it with the postmaster pid and base dir it reported.
fn spawn_child(mode: &str) -> (std::process::Child, u32, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_body", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // libtest prints "test child_process_body ... " before the marker on the same line.
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| l.split_once("PGCLUSTER_CHILD ").map(|(_, rest)| rest.to_owned()))
        .expect("child reported its cluster");
    // Keep draining: a closed pipe would make the child's later prints fail.
    std::thread::spawn(move || lines.for_each(drop));
    let mut parts = line.split_whitespace();
    let pid = parts.next().unwrap().parse().unwrap();
    let base = PathBuf::from(parts.next().unwrap());
    (child, pid, base)
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shared_cluster_removed_at_normal_exit() {
    let (mut child, pid, base) = spawn_child("exit");
    assert!(child.wait().unwrap().success());
    // atexit ran before the process ended: everything is already gone.
    assert!(!alive(pid), "postmaster {pid} outlived its process");
    assert!(!base.exists(), "{} left behind", base.display());
}

#[test]
fn shared_cluster_dies_with_killed_process() {
    let (mut child, pid, base) = spawn_child("hang");
    assert!(alive(pid));
    child.kill().unwrap(); // SIGKILL: no atexit, no destructors
    child.wait().unwrap();
    eventually("postmaster exits after its parent is killed", || !alive(pid));
    // The directory cannot be removed by a killed process; clean up after it here.
    let _ = std::fs::remove_dir_all(&base);
}
