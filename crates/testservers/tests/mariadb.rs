//! Throwaway MariaDB servers: settings, data through restarts and crashes, passwords,
//! the shared server.

use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor, Row};
use testservers::{MariaDb, MariaDbBuilder, Server};

async fn count(server: &MariaDb, db: &str) -> i64 {
    let mut conn = server.connect(db).await.unwrap();
    conn.fetch_one("SELECT count(*) FROM t").await.unwrap().get(0)
}

async fn variable(conn: &mut MySqlConnection, name: &str) -> String {
    let row = sqlx::query("SHOW GLOBAL VARIABLES WHERE Variable_name = ?")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap();
    row.get(1)
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while serverproc::process_exists(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[tokio::test]
async fn rows_survive_restart_and_kill9() {
    let server = MariaDbBuilder::new().start().unwrap();
    let _log = server.log_guard();
    let port = server.port();
    let db = testservers::unique_name("round trip");
    server.create_database(&db).await.unwrap();
    let mut conn = server.connect(&db).await.unwrap();
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, name varchar(20) NOT NULL)").await.unwrap();
    sqlx::query("INSERT INTO t VALUES (?, ?)")
        .bind(1)
        .bind("grüße 🐬")
        .execute(&mut conn)
        .await
        .unwrap();
    let name: String = conn.fetch_one("SELECT name FROM t WHERE id = 1").await.unwrap().get(0);
    assert_eq!(name, "grüße 🐬", "utf8mb4 round trip");
    conn.close().await.unwrap();

    // Clean stop and start: same port, rows kept.
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(count(&server, &db).await, 1);
    assert!(matches!(
        server.start(),
        Err(testservers::Error::Process(serverproc::Error::AlreadyRunning))
    ));

    // kill -9 with a connection open and a committed row: crash recovery keeps it.
    let mut holder = server.connect(&db).await.unwrap();
    holder.execute("INSERT INTO t VALUES (2, 'committed')").await.unwrap();
    let pid = server.pid().unwrap();
    server.kill9().unwrap();
    assert!(!server.is_running());
    assert!(wait_gone(pid));
    assert!(holder.execute("SELECT 1").await.is_err(), "the server is gone");
    assert!(server.connect(&db).await.is_err(), "a stopped server refuses");
    server.start().unwrap();
    assert_eq!(count(&server, &db).await, 2);
    assert!(server.log_contents().unwrap().contains("crash recovery"), "{}", server.log_tail(40));

    // Stopping a stopped server is fine.
    server.stop().unwrap();
    server.stop().unwrap();
    server.kill9().unwrap();
}

#[tokio::test]
async fn settings_are_those_for_tests() {
    let server = MariaDbBuilder::new()
        .binlog()
        .setting("innodb_buffer_pool_size", "128M")
        // Another redo log size than the template's: resized at start.
        .setting("innodb_log_file_size", "32M")
        .start()
        .unwrap();
    let _log = server.log_guard();
    let mut conn = server.connect("mysql").await.unwrap();
    let sql_mode = variable(&mut conn, "sql_mode").await;
    assert!(sql_mode.contains("STRICT_ALL_TABLES"), "{sql_mode}");
    assert_eq!(variable(&mut conn, "character_set_server").await, "utf8mb4");
    assert_eq!(variable(&mut conn, "collation_server").await, "utf8mb4_general_ci");
    assert_eq!(variable(&mut conn, "time_zone").await, "+00:00");
    assert_eq!(variable(&mut conn, "local_infile").await, "ON");
    assert_eq!(variable(&mut conn, "bind_address").await, "127.0.0.1");
    assert_eq!(variable(&mut conn, "log_bin").await, "ON");
    assert_eq!(variable(&mut conn, "binlog_format").await, "ROW");
    assert_eq!(variable(&mut conn, "innodb_buffer_pool_size").await, (128 << 20).to_string());
    assert_eq!(variable(&mut conn, "innodb_log_file_size").await, (32 << 20).to_string());
    // Durable unless asked otherwise: benchmarks must be fair.
    assert_eq!(variable(&mut conn, "innodb_flush_log_at_trx_commit").await, "1");
    // Strict: a value too long is an error, not a silent truncation.
    conn.execute("CREATE DATABASE strictness").await.unwrap();
    conn.execute("CREATE TABLE strictness.t (s varchar(2))").await.unwrap();
    let err = conn.execute("INSERT INTO strictness.t VALUES ('abc')").await.unwrap_err();
    assert!(err.to_string().contains("Data too long"), "{err}");
    // Settings survive a restart.
    conn.close().await.unwrap();
    server.restart().unwrap();
    let mut conn = server.connect("mysql").await.unwrap();
    assert_eq!(variable(&mut conn, "innodb_buffer_pool_size").await, (128 << 20).to_string());

    let fast = MariaDbBuilder::new().fast_unsafe().start().unwrap();
    let mut conn = fast.connect("mysql").await.unwrap();
    assert_eq!(variable(&mut conn, "log_bin").await, "OFF");
    assert_eq!(variable(&mut conn, "innodb_flush_log_at_trx_commit").await, "2");
}

#[tokio::test]
async fn a_password_guards_tcp_and_the_socket() {
    let password = "p@ss w'rd\\x";
    let server = MariaDbBuilder::new().password(password).start().unwrap();
    let _log = server.log_guard();
    assert_eq!(server.password(), Some(password));
    assert!(!format!("{server:?}").contains("w'rd"), "Debug hides the password");
    assert!(!server.data_dir().parent().unwrap().join("password.sql").exists());

    // The URL encodes it; sqlx decodes it.
    let mut conn = MySqlConnection::connect(&server.url("mysql")).await.unwrap();
    let user: String = conn.fetch_one("SELECT current_user()").await.unwrap().get(0);
    assert_eq!(user, "root@127.0.0.1");
    let no_password = server.url_for("root", None, "mysql");
    let err = MySqlConnection::connect(&no_password).await.unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");

    let socket = MySqlConnectOptions::new().socket(server.socket_path()).username("root");
    let err = MySqlConnection::connect_with(&socket).await.unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");
    let mut conn = MySqlConnection::connect_with(&socket.password(password)).await.unwrap();
    let user: String = conn.fetch_one("SELECT current_user()").await.unwrap().get(0);
    assert_eq!(user, "root@localhost");

    // Without a password, root needs none.
    let open = testservers::mariadb::shared();
    assert_eq!(open.password(), None);
    assert_eq!(open.url("x"), format!("mysql://root@127.0.0.1:{}/x", open.port()));
    MySqlConnection::connect(&open.url("mysql")).await.unwrap();
}

#[tokio::test]
async fn databases_with_odd_names_are_created_and_dropped() {
    let server = testservers::mariadb::shared();
    let _log = server.log_guard();
    let db = format!("odd `name` {}", testservers::unique_name("x"));
    server.create_database(&db).await.unwrap();
    let mut conn = server.connect(&db).await.unwrap();
    let current: String = conn.fetch_one("SELECT database()").await.unwrap().get(0);
    assert_eq!(current, db);
    conn.close().await.unwrap();
    server.drop_database(&db).await.unwrap();
    assert!(server.connect(&db).await.is_err());
    server.drop_database(&db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_server_serves_many_tasks() {
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(async move {
                let server = testservers::mariadb::shared();
                let db = testservers::unique_name(&format!("task{i}"));
                server.create_database(&db).await.unwrap();
                let mut conn = server.connect(&db).await.unwrap();
                conn.execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
                conn.execute("INSERT INTO t VALUES (1), (2)").await.unwrap();
                server.port()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), testservers::mariadb::shared().port());
    }
    assert!(std::ptr::eq(testservers::mariadb::shared(), testservers::mariadb::shared()));
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_files() {
    let server = MariaDb::new().unwrap();
    let mut conn = server.connect("mysql").await.unwrap();
    let pid = server.pid().unwrap();
    let base = server.data_dir().parent().unwrap().to_path_buf();
    assert!(server.data_dir().join("mysql").is_dir());
    drop(server);
    assert!(wait_gone(pid), "mariadbd must be gone after drop");
    assert!(!base.exists(), "{} must be removed", base.display());
    assert!(conn.execute("SELECT 1").await.is_err());
}

#[test]
fn bad_settings_are_refused() {
    let err = MariaDbBuilder::new().setting("port", "1\nskip-grant-tables").start().unwrap_err();
    assert!(matches!(err, testservers::Error::InvalidSetting { .. }), "{err}");
    // A setting the server rejects: the error holds the server's own words.
    let err = MariaDbBuilder::new().setting("innodb_no_such_thing", "1").start().unwrap_err();
    assert!(err.to_string().contains("innodb_no_such_thing"), "{err}");
}

/// mariadbd deletes the `#sql*` files of its tmpdir when it starts: each server has a
/// tmpdir of its own, or starting one would delete another's temporary tables.
#[tokio::test]
async fn starting_a_server_leaves_another_servers_temporary_tables_alone() {
    let first = MariaDb::new().unwrap();
    let _log = first.log_guard();
    let mut conn = first.connect("mysql").await.unwrap();
    conn.execute("CREATE TEMPORARY TABLE scratch (x int) ENGINE=Aria").await.unwrap();
    conn.execute("INSERT INTO scratch VALUES (1)").await.unwrap();
    let second = MariaDb::new().unwrap();
    assert!(second.is_running());
    let n: i64 = conn.fetch_one("SELECT count(*) FROM scratch").await.unwrap().get(0);
    assert_eq!(n, 1);
    conn.execute("DROP TEMPORARY TABLE scratch").await.unwrap();
}
