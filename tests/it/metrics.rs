//! `pgmirror mirror --metrics-addr`: Prometheus text served while the mirror runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{store_pair, wait_converged};

fn scrape(port: u16) -> Option<String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    sock.read_to_string(&mut body).ok()?;
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rows_by_table_and_operation() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", &cluster.url(&src_db), "--target", &cluster.url(&dst_db)])
        .args(["--name", &pgcluster::unique_name("metrics"), "--tables", &store::TABLES.join(",")])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    src.batch_execute(
        "INSERT INTO customers (email, name) VALUES ('m1@example.com', 'M'), ('m2@example.com', 'M'); \
         UPDATE customers SET name = 'N' WHERE email = 'm1@example.com'",
    )
    .await
    .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(port).unwrap_or_default();
        if text.contains("op=\"update\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("pgmirror_rows_total{table=\"public.customers\",op=\"insert\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("pgmirror_rows_total{table=\"public.customers\",op=\"update\"} 1"),
        "{text}"
    );
    assert!(text.contains("pgmirror_initial_copy_tables_done 4"), "{text}");
    assert!(text.contains("# TYPE pgmirror_apply_lag_bytes gauge"), "{text}");
}
