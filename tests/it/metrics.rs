//! `pgmirror mirror --metrics-addr`: Prometheus text and a health check served while the
//! mirror runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Mirror, spawn, store_pair, wait_converged, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; the whole response (head and body), or `None`
/// while nothing listens.
fn request(port: u16, method: &str, path: &str) -> Option<String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).ok()?;
    let mut response = String::new();
    sock.read_to_string(&mut response).ok()?;
    Some(response)
}

fn scrape(port: u16) -> Option<String> {
    request(port, "GET", "/metrics")
}

/// The value of an unlabelled sample in exposition text.
fn sample(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn spawn_with_metrics(source: &str, target: &str, addr: &str) -> Mirror {
    let name = pgcluster::unique_name("metrics");
    let tables = store::TABLES.join(",");
    spawn(&["--name", &name, "--tables", &tables, "--metrics-addr", addr], source, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rows_by_table_and_operation() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let port = free_port();
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

/// The lag in seconds is 0 on an idle mirror that applied everything, however old the last
/// commit, and the age of the waiting change while one cannot be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_seconds_is_zero_when_caught_up_and_grows_while_a_change_waits() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    let port = free_port();
    let _mirror = spawn_with_metrics(
        &cluster.url(&src_db),
        &cluster.url(&dst_db),
        &format!("localhost:{port}"),
    );
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    let before_insert = unix_now();
    src.execute("INSERT INTO customers (email, name) VALUES ('lag@example.com', 'L')", &[])
        .await
        .unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;
    // Idle for a while: the last commit ages, nothing waits.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut text = String::new();
    wait_for(Duration::from_secs(10), "the insert confirmed applied", || {
        text = scrape(port).unwrap_or_default();
        let done = text.contains("pgmirror_last_applied_commit_timestamp_seconds")
            && sample(&text, "pgmirror_last_applied_commit_timestamp_seconds") > 0.0;
        async move { done }
    })
    .await;
    eprintln!("{text}");
    assert_eq!(sample(&text, "pgmirror_apply_lag_seconds"), 0.0, "idle and applied: {text}");
    let applied_at = sample(&text, "pgmirror_last_applied_commit_timestamp_seconds");
    assert!(
        applied_at >= before_insert - 5.0 && applied_at <= unix_now() - 2.0,
        "the insert committed at about {before_insert}, applied_at {applied_at}"
    );
    assert_eq!(sample(&text, "pgmirror_streaming"), 1.0);

    // A change that cannot be applied (its table is locked on the target) waits, and its age
    // is the lag.
    let mut locker = cluster.connect(&dst_db).await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE").await.unwrap();
    src.execute("INSERT INTO customers (email, name) VALUES ('wait@example.com', 'W')", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let text = scrape(port).expect("scrape");
    let lag = sample(&text, "pgmirror_apply_lag_seconds");
    assert!((1.5..60.0).contains(&lag), "a change waits for 2 s: lag {lag}\n{text}");
    tx.rollback().await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(30)).await;
    let mut lag = f64::NAN;
    wait_for(Duration::from_secs(10), "the lag back to 0", || {
        lag = sample(&scrape(port).unwrap_or_default(), "pgmirror_apply_lag_seconds");
        async move { lag == 0.0 }
    })
    .await;
}

/// `/metrics` and `/healthz` only, GET and HEAD only; process and build metrics; `:PORT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_metrics_and_health_and_nothing_else() {
    let cluster = pgcluster::shared();
    let (src_db, src, dst_db, dst) = store_pair(cluster, cluster, &store::Scale::tiny()).await;
    // The initial copy waits for a target table held locked: not streaming yet.
    store::create_schema(&dst).await.unwrap();
    let mut locker = cluster.connect(&dst_db).await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE order_items IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let port = free_port();
    let _mirror =
        spawn_with_metrics(&cluster.url(&src_db), &cluster.url(&dst_db), &format!(":{port}"));
    let mut health = String::new();
    wait_for(Duration::from_secs(30), "the endpoint", || {
        health = request(port, "GET", "/healthz").unwrap_or_default();
        let up = !health.is_empty();
        async move { up }
    })
    .await;
    assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
    assert!(health.contains("not streaming"), "{health}");

    tx.rollback().await.unwrap();
    wait_converged(&src, &dst, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(30), "healthy", || {
        health = request(port, "GET", "/healthz").unwrap_or_default();
        let ok = health.starts_with("HTTP/1.1 200 ");
        async move { ok }
    })
    .await;
    assert!(health.ends_with("\r\n\r\nstreaming\n"), "{health}");

    let text = scrape(port).unwrap();
    assert!(text.contains("content-type: text/plain; version=0.0.4"), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("\npgmirror_build_info{{version=\"{version}\"}} 1\n")),
        "{text}"
    );
    // Counted in the kernel's 10 ms ticks: a mirror of a tiny database can stay under one.
    let cpu = sample(&text, "process_cpu_seconds_total");
    assert!((0.0..600.0).contains(&cpu), "{text}");
    assert!(sample(&text, "process_resident_memory_bytes") > 1e6, "{text}");
    assert!(sample(&text, "process_open_fds") > 3.0, "{text}");
    let started = sample(&text, "process_start_time_seconds");
    assert!(started > unix_now() - 600.0 && started <= unix_now(), "{started}");

    for path in ["/", "/metrics/", "/favicon.ico", "/healthz?x=1/../metrics"] {
        let r = request(port, "GET", path).unwrap();
        let want_ok = path.starts_with("/healthz");
        assert_eq!(r.starts_with("HTTP/1.1 200 "), want_ok, "{path}: {r}");
        if !want_ok {
            assert!(r.starts_with("HTTP/1.1 404 "), "{path}: {r}");
        }
    }
    for method in ["POST", "PUT", "DELETE"] {
        let r = request(port, method, "/metrics").unwrap();
        assert!(r.starts_with("HTTP/1.1 405 "), "{method}: {r}");
        assert!(r.to_ascii_lowercase().contains("\r\nallow: get, head\r\n"), "{method}: {r}");
    }
    let head = request(port, "HEAD", "/metrics").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"), "{head}");
}

#[test]
fn a_malformed_metrics_address_is_refused_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["mirror", "--source", "postgres://u@127.0.0.1:1/db", "--target"])
        .args(["postgres://u@127.0.0.1:1/db", "--tables", "t", "--metrics-addr", "9187"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = stderr.lines().next().unwrap_or_default();
    assert!(line.contains("--metrics-addr") && line.contains("HOST:PORT or :PORT"), "{stderr}");
}

/// User and system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state; utime and stime
    // are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The endpoint alone, for [`out_of_file_descriptors_the_endpoint_waits_instead_of_spinning`],
/// which runs this test binary with a low descriptor limit: it serves on the port in
/// `ENDPOINT_ONLY_PORT` for a minute. Without that variable it does nothing.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by out_of_file_descriptors_the_endpoint_waits_instead_of_spinning"]
async fn endpoint_only() {
    let Some(port) = std::env::var("ENDPOINT_ONLY_PORT").ok() else { return };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let _server =
        pgmirror::metrics::http::serve(&addr, pgmirror::metrics::Metrics::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Out of file descriptors, `accept` fails until a connection closes: the endpoint waits
/// instead of retrying at once in a loop, and serves again once descriptors are free.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_endpoint_waits_instead_of_spinning() {
    let port = free_port();
    let test_binary = std::env::current_exe().unwrap();
    let command = format!(
        "ulimit -n 40 && exec {} --exact metrics::endpoint_only --ignored --test-threads 1",
        test_binary.display()
    );
    let child = Command::new("sh")
        .args(["-c", &command])
        .env("ENDPOINT_ONLY_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Mirror(child);
    let pid = child.0.id();
    wait_for(Duration::from_secs(30), "the endpoint", || {
        let up = request(port, "GET", "/healthz").is_some();
        async move { up }
    })
    .await;
    // Connections that send nothing hold a descriptor each until the server gives up on them.
    let held: Vec<TcpStream> =
        (0..60).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - before;
    // A loop retrying `accept` at once burns a core: about 200 ticks in these 2 s.
    assert!(spent < 30, "{spent} clock ticks of CPU in 2 s while out of descriptors");
    drop(held);
    let mut text = String::new();
    wait_for(Duration::from_secs(30), "the endpoint to serve again", || {
        text = scrape(port).unwrap_or_default();
        let ok = text.starts_with("HTTP/1.1 200 ");
        async move { ok }
    })
    .await;
    assert!(text.contains("pgmirror_build_info"), "{text}");
}
