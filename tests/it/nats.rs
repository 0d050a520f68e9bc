//! `pgmirror mirror --target nats://...` against real nats-servers: every change once and in
//! commit order through SIGKILLs of pgmirror and of NATS servers, both payload formats, a full
//! stream, hostile names.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use applier::nats::stored_progress;
use async_nats::jetstream;
use pgoutput_decoder::Lsn;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use testservers::Server;

use crate::common::{Mirror, database, kill, spawn, wait_for};

#[allow(dead_code)] // `main` is for `cargo run --example`
#[path = "../../examples/nats_consumer.rs"]
mod nats_consumer;

/// One stored message.
#[derive(Debug)]
struct Msg {
    subject: String,
    id: String,
    commit_lsn: Option<Lsn>,
    snapshot: bool,
    body: Value,
}

impl Msg {
    /// The change's index in its transaction (streamed changes).
    fn index(&self) -> u64 {
        self.id.rsplit(':').next().and_then(|i| i.parse().ok()).expect("index in the id")
    }
}

async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Msg> {
    let mut s = js.get_stream(stream).await.expect("the stream");
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let mut tries = 0;
        let m = loop {
            match s.get_raw_message(seq).await {
                Ok(m) => break m,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "retrying a read of the stream");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reading message {seq}: {e}"),
            }
        };
        let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
        out.push(Msg {
            subject: m.subject.to_string(),
            id: h("Nats-Msg-Id").expect("Nats-Msg-Id"),
            commit_lsn: h("Pgmirror-Commit-Lsn").map(|l| l.parse().unwrap()),
            snapshot: h("Pgmirror-Snapshot").is_some(),
            body: serde_json::from_slice(&m.payload).unwrap(),
        });
    }
    out
}

/// Every id once; streamed changes in commit order, each transaction's indices 0, 1, 2...
fn assert_exactly_once_in_order(msgs: &[Msg]) {
    let mut ids = HashSet::new();
    for m in msgs {
        assert!(ids.insert(&m.id), "message {} stored twice", m.id);
    }
    let streamed: Vec<&Msg> = msgs.iter().filter(|m| !m.snapshot).collect();
    let first_streamed = msgs.iter().position(|m| !m.snapshot).unwrap_or(msgs.len());
    assert!(msgs[first_streamed..].iter().all(|m| !m.snapshot), "copied rows come first");
    for w in streamed.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (la, lb) = (a.commit_lsn.unwrap(), b.commit_lsn.unwrap());
        if la == lb {
            assert_eq!(
                b.index(),
                a.index() + 1,
                "a gap inside a transaction: {} then {}",
                a.id,
                b.id
            );
        } else {
            assert!(la < lb, "out of commit order: {} then {}", a.id, b.id);
            assert_eq!(b.index(), 0, "a transaction starts at its first change: {}", b.id);
        }
    }
}

/// Store OLTP transactions until stopped; returns (transactions, order lines).
fn start_load(
    cluster: &'static pgcluster::Cluster,
    db: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let db = db.to_owned();
    tokio::spawn(async move {
        let mut writer = cluster.connect(&db).await.unwrap();
        let mut rng = StdRng::seed_from_u64(0x0A75);
        let (mut txns, mut lines) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let out = store::oltp_transaction(&mut writer, &mut rng).await.unwrap();
            txns += 1;
            lines += out.lines as u64;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (txns, lines)
    })
}

struct Setup {
    cluster: &'static pgcluster::Cluster,
    db: String,
    name: String,
    stream: String,
    prefix: String,
    snapshot_rows: u64,
}

impl Setup {
    async fn new(tag: &str) -> Setup {
        let cluster = pgcluster::shared();
        let (db, src) = database(cluster, tag).await;
        store::create_schema(&src).await.unwrap();
        let scale = store::Scale::tiny();
        store::populate(&src, &scale).await.unwrap();
        let snapshot_rows = store::TABLES.iter().map(|t| scale.rows(t)).sum();
        let name = pgcluster::unique_name(tag);
        Setup {
            cluster,
            db,
            stream: name.to_uppercase(),
            prefix: format!("p_{name}"),
            name,
            snapshot_rows,
        }
    }

    fn spawn(&self, url: &str, extra: &[&str]) -> Mirror {
        let tables = store::TABLES.join(",");
        let mut args = vec![
            "--name",
            &self.name,
            "--tables",
            &tables,
            "--nats-stream",
            &self.stream,
            "--subject-prefix",
            &self.prefix,
        ];
        args.extend_from_slice(extra);
        spawn(&args, &self.cluster.url(&self.db), url)
    }

    async fn wait_copied(&self, js: &jetstream::Context) {
        wait_for(Duration::from_secs(60), "the initial copy", || async {
            stored_progress(js, "pgmirror", &self.name).await.ok().flatten().is_some()
        })
        .await;
    }

    /// Waits for every change of a load of `txns` transactions with `lines` order lines, then
    /// checks each arrived once and in order, and counts them by kind and table.
    async fn verify(&self, js: &jetstream::Context, (txns, lines): (u64, u64)) -> Vec<Msg> {
        // Per transaction: an order, its lines, a product's stock, the order paid.
        let want = self.snapshot_rows + 3 * txns + lines;
        wait_for(Duration::from_secs(120), "every change in the stream", || async {
            // A request may time out while a cluster elects a leader.
            match js.get_stream(&self.stream).await {
                Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages >= want),
                Err(_) => false,
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let msgs = read_all(js, &self.stream).await;
        assert_exactly_once_in_order(&msgs);
        assert_eq!(msgs.len() as u64, want, "{txns} transactions, {lines} lines");
        let count = |table: &str, kind: &str, snapshot: bool| {
            msgs.iter()
                .filter(|m| m.snapshot == snapshot && m.body["type"] == kind)
                .filter(|m| m.subject.ends_with(&format!(".public.{table}")))
                .count() as u64
        };
        assert_eq!(count("products", "update", false), txns);
        assert_eq!(count("orders", "insert", false), txns);
        assert_eq!(count("orders", "update", false), txns);
        assert_eq!(count("order_items", "insert", false), lines);
        let scale = store::Scale::tiny();
        for t in store::TABLES {
            assert_eq!(count(t, "insert", true), scale.rows(t), "copied rows of {t}");
        }
        msgs
    }
}

/// The stock of every product, rebuilt from the stream by the example consumer, equals the
/// primary's.
async fn assert_products_rebuilt(setup: &Setup, client: async_nats::Client) {
    let subject = format!("{}.{}.public.products", setup.prefix, setup.db);
    let rows = nats_consumer::run(
        client,
        &setup.stream,
        &subject,
        &["id".to_owned()],
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let src = setup.cluster.connect(&setup.db).await.unwrap();
    let want: BTreeMap<i64, i32> = src
        .query("SELECT id, stock FROM products", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: BTreeMap<i64, i32> = rows
        .values()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap();
            (n("id"), i32::try_from(n("stock")).unwrap())
        })
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_ten_times_under_load_every_change_once_in_order() {
    let nats = testservers::nats::shared();
    let js = jetstream::new(nats.connect().await.unwrap());
    let setup = Setup::new("nats_kill").await;
    let mut child = setup.spawn(&nats.url(), &[]);
    setup.wait_copied(&js).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(setup.cluster, &setup.db, stop.clone());
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..1200))).await;
        kill(&mut child);
        child = setup.spawn(&nats.url(), &[]);
    }
    stop.store(true, Ordering::Relaxed);
    let done = load.await.unwrap();
    assert!(done.0 > 20, "the load ran: {done:?}");
    setup.verify(&js, done).await;
    assert_products_rebuilt(&setup, nats.connect().await.unwrap()).await;
    kill(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_server_killed_and_restarted_mid_stream() {
    let nats = testservers::NatsServer::new().unwrap();
    let setup = Setup::new("nats_srvkill").await;
    let mut child = setup.spawn(&nats.url(), &[]);
    let js = jetstream::new(nats.connect().await.unwrap());
    setup.wait_copied(&js).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(setup.cluster, &setup.db, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.kill9().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let done = load.await.unwrap();
    let js = jetstream::new(nats.connect().await.unwrap());
    setup.verify(&js, done).await;
    kill(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_cluster_servers_killed_mid_stream() {
    let cluster = testservers::NatsCluster::new().unwrap();
    let url = cluster.urls().join(",");
    let setup = Setup::new("nats_r3").await;
    let mut child = setup.spawn(&url, &["--nats-replicas", "3"]);
    let js = jetstream::new(cluster.connect().await.unwrap());
    setup.wait_copied(&js).await;
    let info = js.get_stream(&setup.stream).await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(setup.cluster, &setup.db, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.server(1).kill9().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let done = load.await.unwrap();
    // Two of three keep the stream going.
    setup.verify(&js, done).await;
    cluster.server(1).start().unwrap();
    kill(&mut child);
}

const TYPES: &str = r#"
    CREATE SCHEMA "sp ace.x";
    CREATE TYPE mood AS ENUM ('sad', 'ok');
    CREATE TABLE "sp ace.x"."we.ird *>" (
        id int PRIMARY KEY, i2 int2, i8 int8, n numeric(12,3), f4 float4, f8 float8, b bool,
        t text, vc varchar(10), c char(3), by bytea, d date, ts timestamp, tz timestamptz,
        iv interval, u uuid, j json, jb jsonb, arr int[], tarr text[], inet inet, m mood,
        big text);
    ALTER TABLE "sp ace.x"."we.ird *>" ALTER COLUMN big SET STORAGE EXTERNAL;"#;

fn row_values(id: i32) -> String {
    format!(
        "({id}, -3, 9007199254740993, 1234.5, 1.5, 'NaN', true, 'tab\there \"q\" é', 'vc', 'ab',
          '\\x00ff', '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02',
          '1 day 02:03:04', '12121212-1212-1212-1212-121212121212', '{{\"a\": [1, 2]}}',
          '{{\"b\": null}}', '{{1,NULL,3}}', '{{\"x,y\",z}}', '10.0.0.1/8', 'ok',
          repeat('x', 4000))"
    )
}

/// Both formats, the initial copy and streaming: a row copied and the same values streamed
/// print the same; every change kind; an unchanged TOAST value marked; a table whose schema
/// and name hold a dot, a space, `*` and `>` gets one escaped subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_and_type_in_both_formats_on_a_hostile_subject() {
    let nats = testservers::nats::shared();
    let js = jetstream::new(nats.connect().await.unwrap());
    let cluster = pgcluster::shared();
    let (db, src) = database(cluster, "nats_types").await;
    src.batch_execute(TYPES).await.unwrap();
    src.batch_execute(&format!("INSERT INTO \"sp ace.x\".\"we.ird *>\" VALUES {}", row_values(1)))
        .await
        .unwrap();
    let table = r#""sp ace.x"."we.ird *>""#;
    for format in ["json", "debezium"] {
        let name = pgcluster::unique_name("nats_types");
        let (stream, prefix) = (name.to_uppercase(), format!("p_{name}"));
        let mut child = spawn(
            &[
                "--name",
                &name,
                "--tables",
                table,
                "--nats-stream",
                &stream,
                "--subject-prefix",
                &prefix,
                "--format",
                format,
                "--transaction-markers",
            ],
            &cluster.url(&db),
            &nats.url(),
        );
        wait_for(Duration::from_secs(60), "the initial copy", || async {
            stored_progress(&js, "pgmirror", &name).await.ok().flatten().is_some()
        })
        .await;
        let id = if format == "json" { 2 } else { 3 };
        // One transaction each.
        for sql in [
            format!("INSERT INTO {table} VALUES {}", row_values(id)),
            format!("UPDATE {table} SET t = 'changed' WHERE id = {id}"),
            format!("DELETE FROM {table} WHERE id = {id}"),
            format!("TRUNCATE {table}"),
            format!("INSERT INTO {table} VALUES {}", row_values(1)),
        ] {
            src.batch_execute(&sql).await.unwrap();
        }
        wait_for(Duration::from_secs(60), "the changes", || async {
            let mut s = js.get_stream(&stream).await.unwrap();
            // 1 copied row; 5 transactions of one change each, with their markers.
            let want = 1 + 5 * 3;
            s.info().await.unwrap().state.messages >= want
        })
        .await;
        kill(&mut child);
        let msgs = read_all(&js, &stream).await;
        assert_eq!(msgs.len(), 16);
        assert_exactly_once_in_order(&msgs);
        let subject = format!("{prefix}.{db}.sp%20ace%2Ex.we%2Eird%20%2A%3E");
        let changes: Vec<&Msg> =
            msgs.iter().filter(|m| !m.subject.ends_with("._transaction")).collect();
        assert!(changes.iter().all(|m| m.subject == subject), "{:?}", changes[0].subject);
        let markers = msgs.len() - changes.len();
        assert_eq!(markers, 10);
        let (copied, inserted, updated, deleted, truncated) = (
            &changes[0].body,
            &changes[1].body,
            &changes[2].body,
            &changes[3].body,
            &changes[4].body,
        );
        if format == "json" {
            let kinds: Vec<&str> =
                changes.iter().map(|m| m.body["type"].as_str().unwrap()).collect();
            assert_eq!(kinds, ["insert", "insert", "update", "delete", "truncate", "insert"]);
            let mut streamed = inserted["new"].clone();
            streamed["id"] = json!(1);
            assert_eq!(copied["new"], streamed, "a copied row prints as the same row streamed");
            let new = &inserted["new"];
            assert_eq!(new["i8"], json!(9_007_199_254_740_993_i64));
            assert_eq!(new["f8"], "NaN");
            assert_eq!(new["b"], true);
            assert_eq!(new["t"], "tab\there \"q\" é");
            assert_eq!(new["by"], "\\x00ff");
            assert_eq!(new["tz"], "2024-01-02 01:04:05+00");
            assert_eq!(new["arr"], json!([1, null, 3]));
            assert_eq!(new["tarr"], json!(["x,y", "z"]));
            assert_eq!(new["m"], "ok");
            assert_eq!(new["jb"], "{\"b\": null}");
            assert_eq!(updated["new"]["big"], json!({"unchanged_toast": true}));
            assert_eq!(updated["new"]["t"], "changed");
            assert_eq!(deleted["key"], json!({"id": id}));
            assert_eq!(truncated["tables"][0]["table"], "we.ird *>");
        } else {
            let ops: Vec<&str> = changes.iter().map(|m| m.body["op"].as_str().unwrap()).collect();
            assert_eq!(ops, ["r", "c", "u", "d", "t", "c"]);
            let mut streamed = inserted["after"].clone();
            streamed["id"] = json!(1);
            assert_eq!(copied["after"], streamed);
            assert_eq!(updated["after"]["big"], "__debezium_unavailable_value");
            assert_eq!(deleted["before"], json!({"id": id}));
            assert_eq!(inserted["source"]["table"], "we.ird *>");
            assert_eq!(inserted["source"]["schema"], "sp ace.x");
            assert_eq!(inserted["source"]["db"], db.as_str());
            assert_eq!(copied["source"]["snapshot"], "true");
        }
    }
}

/// A stream at its size limit: pgmirror stops with one clear line, and the slot is not
/// confirmed past what the stream stored: once the limit is raised, the next start publishes
/// every change the full stream refused, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_stops_the_mirror_and_holds_the_slot() {
    let nats = testservers::nats::shared();
    let js = jetstream::new(nats.connect().await.unwrap());
    let setup = Setup::new("nats_full").await;
    let mut config = jetstream::stream::Config {
        name: setup.stream.clone(),
        subjects: vec![format!("{}.>", setup.prefix)],
        max_messages: i64::try_from(setup.snapshot_rows).unwrap() + 10,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_stream(config.clone()).await.unwrap();
    let child = setup.spawn(&nats.url(), &[]);
    setup.wait_copied(&js).await;
    let mut writer = setup.cluster.connect(&setup.db).await.unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let (mut txns, mut lines) = (0, 0);
    for _ in 0..10 {
        lines += store::oltp_transaction(&mut writer, &mut rng).await.unwrap().lines as u64;
        txns += 1;
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let s = child.0.wait().unwrap();
        (s, child)
    });
    let (status, _child) = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .expect("pgmirror stops")
        .unwrap();
    assert!(!status.success());
    let full = js.get_stream(&setup.stream).await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(full, setup.snapshot_rows + 10);

    config.max_messages = -1;
    js.update_stream(config).await.unwrap();
    let mut child = setup.spawn(&nats.url(), &[]);
    setup.verify(&js, (txns, lines)).await;
    kill(&mut child);
}

fn pgmirror(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pgmirror");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `check`, `status` and `drop` with a NATS target: the stream and progress shown, and drop
/// removes the slot, the publication and the stream pgmirror created, and keeps a stream it
/// was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_status_and_drop_understand_a_nats_target() {
    let nats = testservers::nats::shared();
    let js = jetstream::new(nats.connect().await.unwrap());
    let setup = Setup::new("nats_ops").await;
    let source = setup.cluster.url(&setup.db);
    let tables = store::TABLES.join(",");
    let (ok, text) = pgmirror(&[
        "check",
        "--source",
        &source,
        "--target",
        &nats.url(),
        "--tables",
        &tables,
        "--nats-stream",
        &setup.stream,
        "--subject-prefix",
        &setup.prefix,
    ]);
    assert!(text.contains(&format!("stream {} will be created", setup.stream)), "{text}");
    assert!(ok, "{text}");

    let mut child = setup.spawn(&nats.url(), &[]);
    setup.wait_copied(&js).await;
    let (ok, text) =
        pgmirror(&["status", "--source", &source, "--target", &nats.url(), "--name", &setup.name]);
    assert!(ok, "{text}");
    let stored = stored_progress(&js, "pgmirror", &setup.name).await.unwrap().unwrap();
    assert!(text.contains(&format!("acknowledged  {stored}")), "{text}");
    let rows = setup.snapshot_rows;
    assert!(text.contains(&format!("{rows} messages, last sequence {rows}")), "{text}");
    kill(&mut child);

    let (ok, text) = pgmirror(&[
        "drop",
        "--source",
        &source,
        "--target",
        &nats.url(),
        "--name",
        &setup.name,
        "--wait",
    ]);
    assert!(ok, "{text}");
    for line in ["removed slot", "removed publication", "removed stream", "removed bucket keys"] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(js.get_stream(&setup.stream).await.is_err(), "the stream pgmirror created is gone");
    assert_eq!(stored_progress(&js, "pgmirror", &setup.name).await.unwrap(), None);
    let src = setup.cluster.connect(&setup.db).await.unwrap();
    let slots: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("pgmirror_{}", setup.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);

    // A stream and a slot the user made are kept.
    let slot = format!("pgmirror_{}", setup.name);
    src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    js.create_stream(jetstream::stream::Config {
        name: setup.stream.clone(),
        subjects: vec![format!("{}.>", setup.prefix)],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut child = setup.spawn(&nats.url(), &["--no-initial-copy"]);
    wait_for(Duration::from_secs(60), "the set-up", || async {
        stored_progress(&js, "pgmirror", &setup.name).await.ok().flatten().is_some()
            || crate::nats::status_ok(&source, &nats.url(), &setup.name)
    })
    .await;
    kill(&mut child);
    let (ok, text) = pgmirror(&[
        "drop",
        "--source",
        &source,
        "--target",
        &nats.url(),
        "--name",
        &setup.name,
        "--wait",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("kept    stream"), "{text}");
    assert!(text.contains("kept    slot"), "{text}");
    assert!(js.get_stream(&setup.stream).await.is_ok());
    src.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

/// `pgmirror status` exits 0 (set up, streaming).
fn status_ok(source: &str, url: &str, name: &str) -> bool {
    pgmirror(&["status", "--source", source, "--target", url, "--name", name]).0
}

/// A `nats-server` with JetStream that wants credentials (its process, its store directory,
/// its port); killed when dropped.
struct AuthServer(std::process::Child, #[allow(dead_code)] tempfile::TempDir, u16);

impl AuthServer {
    /// `auth`: `nats-server` flags such as `--user U --pass P` or `--auth TOKEN`.
    fn start(auth: &[&str]) -> AuthServer {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js"])
            .args(auth)
            .arg("-sd")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        AuthServer(child, dir, port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User and password in the URL: a wrong password is one line that does not show it, the
/// right one publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_in_the_url_never_printed() {
    let server = AuthServer::start(&["--user", "pgm", "--pass", "s3cr3t-pw"]);
    let setup = Setup::new("nats_auth").await;
    let tables = store::TABLES.join(",");
    let wrong = format!("nats://pgm:wr0ng-pw@127.0.0.1:{}", server.2);
    let (ok, text) = pgmirror(&[
        "mirror",
        "--source",
        &setup.cluster.url(&setup.db),
        "--target",
        &wrong,
        "--name",
        &setup.name,
        "--tables",
        &tables,
    ]);
    assert!(!ok, "{text}");
    assert!(!text.contains("wr0ng-pw"), "the password is printed: {text}");
    assert!(text.contains("nats://pgm:***@127.0.0.1"), "{text}");
    let failures = text.lines().filter(|l| l.contains("authorization")).count();
    assert_eq!(failures, 1, "one line says what failed: {text}");

    let mut child = setup.spawn(&format!("nats://pgm:s3cr3t-pw@127.0.0.1:{}", server.2), &[]);
    let client =
        async_nats::ConnectOptions::with_user_and_password("pgm".into(), "s3cr3t-pw".into())
            .connect(format!("127.0.0.1:{}", server.2))
            .await
            .unwrap();
    setup.wait_copied(&jetstream::new(client)).await;
    kill(&mut child);
}

/// A token as the URL's user: the mirror publishes, and the token is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_url() {
    let server = AuthServer::start(&["--auth", "t0ken-xyz"]);
    let setup = Setup::new("nats_token").await;
    let url = format!("nats://t0ken-xyz@127.0.0.1:{}", server.2);
    let (ok, text) =
        pgmirror(&["check", "--source", &setup.cluster.url(&setup.db), "--target", &url]);
    assert!(text.contains("NATS reachable at nats://***@127.0.0.1"), "{text}");
    assert!(!text.contains("t0ken-xyz"), "{text}");
    assert!(ok, "{text}");
    let mut child = setup.spawn(&url, &[]);
    let client = async_nats::ConnectOptions::with_token("t0ken-xyz".into())
        .connect(format!("127.0.0.1:{}", server.2))
        .await
        .unwrap();
    setup.wait_copied(&jetstream::new(client)).await;
    kill(&mut child);
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`: (ca, cert, key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

/// TLS: `tls://` with the server's CA given as `ca=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(certs.path());
    let server = AuthServer::start(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let setup = Setup::new("nats_tls").await;
    let url = format!("tls://127.0.0.1:{}?ca={ca}", server.2);
    let mut child = setup.spawn(&url, &[]);
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.clone().into())
        .connect(format!("tls://127.0.0.1:{}", server.2))
        .await
        .unwrap();
    setup.wait_copied(&jetstream::new(client)).await;
    kill(&mut child);
    // Without the CA the server's certificate is not trusted: one line saying what to check.
    let plain = format!("tls://127.0.0.1:{}", server.2);
    let (ok, text) =
        pgmirror(&["check", "--source", &setup.cluster.url(&setup.db), "--target", &plain]);
    assert!(!ok, "{text}");
    assert!(text.contains("ca="), "{text}");
}

/// A second pgmirror running the same mirror refuses with one line while the first streams,
/// and publishes nothing: the first one's changes arrive once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pgmirror_of_the_same_mirror_refuses_to_run() {
    let nats = testservers::nats::shared();
    let js = jetstream::new(nats.connect().await.unwrap());
    let setup = Setup::new("nats_twice").await;
    let first = setup.spawn(&nats.url(), &[]);
    setup.wait_copied(&js).await;
    let tables = store::TABLES.join(",");
    let source = setup.cluster.url(&setup.db);
    let (ok, out) = pgmirror(&[
        "mirror",
        "--source",
        &source,
        "--target",
        &nats.url(),
        "--name",
        &setup.name,
        "--tables",
        &tables,
        "--nats-stream",
        &setup.stream,
        "--subject-prefix",
        &setup.prefix,
    ]);
    assert!(!ok, "{out}");
    let waiting = out.find("another pgmirror holds mirror").expect(&out);
    let refused = out.find("another pgmirror is already running mirror").expect(&out);
    assert!(waiting < refused, "says at once that it waits: {out}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(setup.cluster, &setup.db, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let done = load.await.unwrap();
    setup.verify(&js, done).await;
    drop(first);
}

/// A JWT of `claims` (with `iss` and `sub` filled in), signed by `issuer` as NATS signs them.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, mut claims: Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let claims_obj = claims.as_object_mut().unwrap();
    claims_obj.insert("iss".into(), json!(issuer.public_key()));
    claims_obj.insert("sub".into(), json!(subject));
    claims_obj.insert("iat".into(), json!(1_700_000_000));
    claims_obj.insert("jti".into(), json!(format!("JTI{}", subject)));
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&sig))
}

/// A server configuration in operator mode (an operator, a system account and an account with
/// JetStream) in `dir`, and a credentials file of a user of that account: (config, creds).
fn operator_mode(dir: &std::path::Path) -> (String, String) {
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        json!({"name": "op", "nats": {"type": "operator", "version": 2}}),
    );
    let limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1,
        "streams": -1, "consumer": -1});
    let account_claims = |name: &str, limits: Value| {
        json!({"name": name, "nats": {"limits": limits,
            "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2}})
    };
    let sys_jwt = nats_jwt(&operator, &system.public_key(), account_claims("SYS", json!({})));
    let acc_jwt = nats_jwt(&operator, &account.public_key(), account_claims("app", limits));
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        json!({"name": "pgm", "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1,
            "payload": -1, "type": "user", "version": 2}}),
    );
    let conf = dir.join("operator.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{op_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{sys_jwt}\"\n  {acc}: \"{acc_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        ),
    )
    .unwrap();
    let creds = dir.join("pgm.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    (conf.to_str().unwrap().to_owned(), creds.to_str().unwrap().to_owned())
}

/// A credentials file (`?creds=FILE`) for a server in operator mode: without it the server
/// refuses, with it the mirror publishes, and the file's secrets never appear in output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, creds) = operator_mode(dir.path());
    let server = AuthServer::start(&["-c", &conf]);
    let setup = Setup::new("nats_creds").await;
    let source = setup.cluster.url(&setup.db);
    let bare = format!("nats://127.0.0.1:{}", server.2);
    let (ok, text) = pgmirror(&["check", "--source", &source, "--target", &bare]);
    assert!(!ok, "a server in operator mode refuses a client without credentials: {text}");
    let url = format!("{bare}?creds={creds}");
    let (ok, text) = pgmirror(&["check", "--source", &source, "--target", &url]);
    assert!(ok, "{text}");
    let secrets = std::fs::read_to_string(&creds).unwrap();
    let seed = secrets.lines().find(|l| l.starts_with("SU")).unwrap();
    assert!(!text.contains(seed), "{text}");
    let mut child = setup.spawn(&url, &[]);
    let client = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .unwrap()
        .connect(format!("127.0.0.1:{}", server.2))
        .await
        .unwrap();
    setup.wait_copied(&jetstream::new(client)).await;
    kill(&mut child);
}
