//! Private clusters: start/stop/crash/restart, settings, cleanup on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use pgcluster::{Cluster, ClusterBuilder, StopMode};

async fn show(cluster: &Cluster, setting: &str) -> String {
    let client = cluster.connect("postgres").await.unwrap();
    client.query_one(&format!("SHOW {setting}"), &[]).await.unwrap().get(0)
}

async fn count(cluster: &Cluster) -> i64 {
    let client = cluster.connect("postgres").await.unwrap();
    client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0)
}

async fn insert(cluster: &Cluster, n: i32) {
    let client = cluster.connect("postgres").await.unwrap();
    client.execute("INSERT INTO t SELECT generate_series(1, $1)", &[&n]).await.unwrap();
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap().split_whitespace().next().unwrap();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[tokio::test]
async fn stop_start_crash_restart_keep_port_and_data() {
    let cluster = ClusterBuilder::new().start().unwrap();
    let _log = cluster.log_guard();
    let port = cluster.port();
    let client = cluster.connect("postgres").await.unwrap();
    client.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    drop(client);
    insert(&cluster, 10).await;

    // Fast stop, then start: same port, data kept.
    cluster.stop(StopMode::Fast).unwrap();
    assert!(!cluster.is_running());
    assert!(cluster.connect("postgres").await.is_err(), "stopped server must refuse");
    cluster.start().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(count(&cluster).await, 10);
    assert!(matches!(
        cluster.start(),
        Err(pgcluster::Error::Process(serverproc::Error::AlreadyRunning))
    ));

    // Immediate stop = crash: recovery replays the WAL.
    insert(&cluster, 5).await;
    cluster.stop(StopMode::Immediate).unwrap();
    cluster.start().unwrap();
    assert_eq!(count(&cluster).await, 15);

    // kill -9 of the postmaster and its backends: no backend may survive.
    let holder = cluster.connect("postgres").await.unwrap();
    insert(&cluster, 5).await;
    let pid = cluster.pid().unwrap();
    cluster.kill9().unwrap();
    assert!(!cluster.is_running());
    assert!(wait_gone(pid));
    assert!(holder.simple_query("SELECT 1").await.is_err(), "backend was killed");
    cluster.start().unwrap();
    assert_eq!(count(&cluster).await, 20);
    assert!(cluster.log_contents().unwrap().contains("database system was interrupted"));

    cluster.restart().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(count(&cluster).await, 20);

    // Stopping a stopped server is fine.
    cluster.stop(StopMode::Fast).unwrap();
    cluster.stop(StopMode::Immediate).unwrap();
    cluster.kill9().unwrap();
}

#[tokio::test]
async fn settings_are_applied() {
    let cluster = ClusterBuilder::new()
        .setting("work_mem", "7MB")
        .setting("application_name", "it's quoted")
        .wal_sender_timeout(Duration::from_secs(3))
        .start()
        .unwrap();
    let _log = cluster.log_guard();
    assert_eq!(show(&cluster, "wal_level").await, "logical");
    assert_eq!(show(&cluster, "max_replication_slots").await, "200");
    assert_eq!(show(&cluster, "max_wal_senders").await, "100");
    assert_eq!(show(&cluster, "max_prepared_transactions").await, "50");
    assert_eq!(show(&cluster, "work_mem").await, "7MB");
    assert_eq!(show(&cluster, "wal_sender_timeout").await, "3s");
    assert_eq!(show(&cluster, "listen_addresses").await, "127.0.0.1");
    // Durable by default: benchmarks must be fair.
    assert_eq!(show(&cluster, "fsync").await, "on");
    assert_eq!(show(&cluster, "synchronous_commit").await, "on");
    assert!(Path::new(&show(&cluster, "unix_socket_directories").await) == cluster.socket_dir());
    assert!(cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port())).exists());
    // Settings survive a restart.
    cluster.restart().unwrap();
    assert_eq!(show(&cluster, "work_mem").await, "7MB");
}

#[tokio::test]
async fn fast_unsafe_turns_off_fsync() {
    let cluster = ClusterBuilder::new().fast_unsafe().start().unwrap();
    assert_eq!(show(&cluster, "fsync").await, "off");
    assert_eq!(show(&cluster, "synchronous_commit").await, "off");
}

#[test]
fn invalid_settings_are_rejected() {
    let err = ClusterBuilder::new().setting("fsync", "off\nssl = on").start().unwrap_err();
    assert!(matches!(err, pgcluster::Error::InvalidSetting { .. }), "{err}");
    let err = ClusterBuilder::new().bindir("/nonexistent").start().unwrap_err();
    assert!(!matches!(err, pgcluster::Error::InvalidSetting { .. }), "{err}");
}

#[tokio::test]
async fn a_bad_setting_reports_the_log() {
    let err = ClusterBuilder::new().setting("wal_level", "bogus").start().unwrap_err();
    match err {
        pgcluster::Error::Process(serverproc::Error::ServerExited { log_tail, .. }) => {
            assert!(log_tail.contains("wal_level"), "{log_tail}")
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn drop_stops_server_and_removes_files() {
    let cluster = ClusterBuilder::new().start().unwrap();
    let client = cluster.connect("postgres").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let pid = cluster.pid().unwrap();
    let data = cluster.data_dir().to_path_buf();
    let base = data.parent().unwrap().to_path_buf();
    assert!(data.join("PG_VERSION").exists());
    drop(cluster);
    assert!(!alive(pid), "postmaster must be gone after drop");
    assert!(!base.exists(), "{} must be removed", base.display());
    assert!(client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test]
async fn databases_and_urls() {
    let cluster = ClusterBuilder::new().start().unwrap();
    let db = pgcluster::unique_name("Mixed Case-db");
    cluster.create_database(&db).await.unwrap();
    let (client, conn) =
        tokio_postgres::connect(&cluster.url(&db), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let name: String = client.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    assert_eq!(name, db);
    assert_eq!(cluster.url("x"), format!("postgres://postgres@127.0.0.1:{}/x", cluster.port()));
    drop(client);
    cluster.drop_database(&db).await.unwrap();
    assert!(cluster.connect(&db).await.is_err());
    // A name that needs quoting works too.
    cluster.create_database("we\"ird name").await.unwrap();
    cluster.connect("we\"ird name").await.unwrap();
}
