//! `pgmirror tail`: JSON lines for a scripted workload, and a restart that neither skips nor
//! repeats a transaction; `--startpos` and `--endpos`; `--file`, which holds every transaction
//! the slot has confirmed even across a SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgoutput_decoder::{Column, Decoder, LogicalMessage};
use tokio_postgres::Client;

use serde_json::{Value, json};

use crate::common::database;

struct Tail {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Tail {
    fn start(source: &str, slot: &str) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
            .args(["tail", "--source", source, "--tables", "items", "--slot", slot])
            .arg("--create-slot")
            .env("RUST_LOG", std::env::var("PGMIRROR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pgmirror tail");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value: Value = serde_json::from_str(&line).expect("each line is JSON");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Tail { child, lines }
    }

    /// The next `n` lines, failing after a timeout.
    fn take(&self, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(v) => got.push(v),
                Err(_) => panic!("only {} of {n} lines arrived: {got:#?}", got.len()),
            }
        }
        got
    }

    /// Stops with SIGTERM, as Ctrl-C would, and waits.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY-free: sending a signal by pid through the `kill` command.
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tail exits cleanly on SIGTERM: {status}");
    }
}

/// The parts of a line that do not depend on LSNs, xids or times.
fn shape(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        for volatile in ["xid", "commit_lsn", "end_lsn", "commit_time", "lsn"] {
            obj.remove(volatile);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_each_change_once_across_restarts() {
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "tail").await;
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('ok', 'so \"so\"'); \
             CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags text[], \
             meta jsonb, moods mood[], big text); \
             ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL; \
             CREATE FUNCTION big_text() RETURNS text LANGUAGE sql \
             AS $$ SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i $$",
        )
        .await
        .unwrap();
    let slot = pgcluster::unique_name("tail");
    let url = cluster.url(&db);

    let tail = Tail::start(&url, &slot);
    // The slot is created by tail; wait until it is consistent before writing (it is listed
    // while it still waits for the transactions running elsewhere on the shared cluster, and
    // a commit before its consistent point is never decoded).
    crate::common::wait_slot_ready(&client, &slot).await;
    // Three separate transactions (one query string would merge the INSERT into the BEGIN).
    client
        .execute(
            "INSERT INTO items VALUES (1, 'pen', 1.50, '{a,\"b,c\"}', '{\"k\": 1}', \
             '{ok,\"so \\\"so\\\"\"}', NULL)",
            &[],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "BEGIN; UPDATE items SET price = 2 WHERE id = 1; \
             INSERT INTO items VALUES (2, 'ink', NULL, NULL, NULL, NULL, big_text()); COMMIT;",
        )
        .await
        .unwrap();
    client.execute("DELETE FROM items WHERE id = 1", &[]).await.unwrap();
    let lines: Vec<Value> = tail.take(10).iter().map(shape).collect();
    let big: String =
        client.query_one("SELECT big FROM items WHERE id = 2", &[]).await.unwrap().get(0);
    assert_eq!(
        lines,
        vec![
            json!({"type": "begin"}),
            json!({"type": "insert", "schema": "public", "table": "items",
                   "new": {"id": 1, "name": "pen", "price": 1.50, "tags": ["a", "b,c"],
                           "meta": r#"{"k": 1}"#, "moods": ["ok", "so \"so\""], "big": null}}),
            json!({"type": "commit"}),
            json!({"type": "begin"}),
            json!({"type": "update", "schema": "public", "table": "items", "key": {"id": 1},
                   "new": {"id": 1, "name": "pen", "price": 2, "tags": ["a", "b,c"],
                           "meta": r#"{"k": 1}"#, "moods": ["ok", "so \"so\""], "big": null}}),
            json!({"type": "insert", "schema": "public", "table": "items",
                   "new": {"id": 2, "name": "ink", "price": null, "tags": null,
                           "meta": null, "moods": null, "big": big}}),
            json!({"type": "commit"}),
            json!({"type": "begin"}),
            json!({"type": "delete", "schema": "public", "table": "items", "key": {"id": 1}}),
            json!({"type": "commit"}),
        ]
    );
    // An update that leaves the TOASTed column alone: marked unchanged, never null.
    client.execute("UPDATE items SET name = 'ink2' WHERE id = 2", &[]).await.unwrap();
    let update = tail.take(3)[1].clone();
    assert_eq!(update["new"]["big"], json!({"unchanged_toast": true}), "{update}");

    // Stopped, then more work, then started again: only the new work is printed.
    tail.stop();
    client.execute("INSERT INTO items VALUES (3, 'cap')", &[]).await.unwrap();
    let tail = Tail::start(&url, &slot);
    let lines = tail.take(3);
    assert_eq!(shape(&lines[1])["new"]["id"], json!(3), "{lines:?}");
    // Nothing else follows: no transaction was repeated.
    assert!(tail.lines.recv_timeout(Duration::from_millis(500)).is_err());
    tail.stop();
}

/// Runs `pgmirror tail` with `args` until it exits by itself (60 s at most): its status and
/// its output lines.
fn run_to_end(args: &[&str]) -> (ExitStatus, Vec<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .arg("tail")
        .args(args)
        .env("RUST_LOG", std::env::var("PGMIRROR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pgmirror tail");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).expect("each line is JSON"))
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tail {args:?} did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// Where the next WAL record goes: past every commit so far. (The test cluster commits
/// asynchronously, so `pg_current_wal_lsn()`, the write position, may still be behind them.)
async fn wal_lsn(client: &Client) -> String {
    client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0)
}

/// A table `items` with `columns`, and a publication for it and a slot of the same name.
async fn items_slot(client: &Client, prefix: &str, columns: &str) -> String {
    let slot = pgcluster::unique_name(prefix);
    client
        .batch_execute(&format!(
            "CREATE TABLE items ({columns}); CREATE PUBLICATION {slot} FOR TABLE items"
        ))
        .await
        .unwrap();
    client
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    slot
}

/// The ids inserted by the transactions in `lines`, in order (begin, insert, commit each).
fn inserted(lines: &[Value]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l["type"] == "insert")
        .map(|l| l["new"]["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startpos_and_endpos_bound_what_is_printed() {
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "tail_pos").await;
    let slot = items_slot(&client, "tail_pos", "id int PRIMARY KEY").await;
    client.batch_execute("CREATE TABLE other (id int)").await.unwrap();
    let url = cluster.url(&db);
    let common =
        ["--source", url.as_str(), "--publication", slot.as_str(), "--slot", slot.as_str()];

    client.execute("INSERT INTO items VALUES (1)", &[]).await.unwrap();
    let after_1 = wal_lsn(&client).await;
    client.execute("INSERT INTO items VALUES (2)", &[]).await.unwrap();
    let after_2 = wal_lsn(&client).await;
    client.execute("INSERT INTO items VALUES (3)", &[]).await.unwrap();
    // WAL past the last published transaction: only the primary's keepalives show tail that
    // nothing else comes before `after_3`.
    client.execute("INSERT INTO other VALUES (1)", &[]).await.unwrap();
    let after_3 = wal_lsn(&client).await;
    client.execute("INSERT INTO items VALUES (4)", &[]).await.unwrap();

    // Transaction 1 is before --startpos, 3 and 4 after --endpos.
    let (status, lines) =
        run_to_end(&[&common[..], &["--startpos", &after_1, "--endpos", &after_2]].concat());
    assert!(status.success(), "{status}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(inserted(&lines), [2]);
    assert_eq!(
        (lines[0]["type"].as_str(), lines[2]["type"].as_str()),
        (Some("begin"), Some("commit"))
    );
    let end: pgoutput_decoder::Lsn = lines[2]["end_lsn"].as_str().unwrap().parse().unwrap();
    assert!(end <= after_2.parse().unwrap(), "{end} is past --endpos {after_2}");

    // From the slot's confirmed position: transaction 3 only, though 4 is in the WAL too.
    let (status, lines) = run_to_end(&[&common[..], &["--endpos", &after_3]].concat());
    assert!(status.success(), "{status}");
    assert_eq!(inserted(&lines), [3], "{lines:#?}");
    // Nothing left before --endpos: an empty run that still ends.
    let (status, lines) = run_to_end(&[&common[..], &["--endpos", &after_3]].concat());
    assert!(status.success(), "{status}");
    assert!(lines.is_empty(), "{lines:#?}");
    // Transaction 4, where the slot stands.
    let (status, lines) =
        run_to_end(&[&common[..], &["--endpos", &wal_lsn(&client).await]].concat());
    assert!(status.success(), "{status}");
    assert_eq!(inserted(&lines), [4], "{lines:#?}");
}

/// Complete transactions in a JSON-lines file: the inserted ids of each, in file order.
fn file_transactions(path: &std::path::Path) -> Vec<Vec<i64>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut done = Vec::new();
    let mut open: Option<Vec<i64>> = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        match v["type"].as_str() {
            Some("begin") => open = Some(Vec::new()),
            Some("insert") => {
                open.iter_mut().for_each(|t| t.push(v["new"]["id"].as_i64().unwrap()))
            }
            Some("commit") => done.extend(open.take()),
            _ => {}
        }
    }
    done
}

/// The id of the first insert the slot would send again, if any (the slot must be inactive).
async fn first_unconfirmed(client: &Client, slot: &str) -> Option<i64> {
    // Decoding reads only flushed WAL, and the test cluster commits asynchronously: a
    // synchronous commit (a transaction of its own) flushes every insert before it.
    for sql in [
        "SET synchronous_commit = on",
        "SELECT pg_logical_emit_message(true, 'flush', '')",
        "RESET synchronous_commit",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2)",
            &[&slot, &slot],
        )
        .await
        .unwrap();
    let mut decoder = Decoder::new(1);
    rows.iter().find_map(|r| match decoder.decode(Bytes::from(r.get::<_, Vec<u8>>(0))).unwrap() {
        LogicalMessage::Insert(i) => match i.new.get(0) {
            Some(Column::Text(id)) => Some(std::str::from_utf8(id).unwrap().parse().unwrap()),
            other => panic!("unexpected id {other:?}"),
        },
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_holds_every_transaction_the_slot_confirmed_across_sigkill() {
    const ROWS: i64 = 1000;
    // Paced at first, so the kill comes while transactions trickle in one by one: each is
    // confirmed soon after it is written, and lines held back in a buffer would be missed.
    const PACED: i64 = 200;
    let cluster = pgcluster::shared();
    let (db, client) = database(cluster, "tail_file").await;
    let slot = items_slot(&client, "tail_file", "id int8 PRIMARY KEY").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("changes.jsonl");
    let url = cluster.url(&db);
    let args = [
        "tail",
        "--source",
        url.as_str(),
        "--publication",
        slot.as_str(),
        "--slot",
        slot.as_str(),
        "-f",
    ];

    // One insert per transaction, while tail writes them to the file.
    let writer = cluster.connect(&db).await.unwrap();
    let workload = tokio::spawn(async move {
        for id in 1..=ROWS {
            writer.execute("INSERT INTO items VALUES ($1)", &[&id]).await.unwrap();
            if id <= PACED {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let mut tail = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(args)
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    crate::common::wait_for(Duration::from_secs(60), "tail to write 40 transactions", || async {
        file_transactions(&file).len() >= 40
    })
    .await;
    tail.kill().unwrap();
    tail.wait().unwrap();
    let killed_at = file_transactions(&file).len();
    crate::common::wait_for(Duration::from_secs(30), "the slot to be released", || async {
        let active: bool = client
            .query_one("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .unwrap()
            .get(0);
        !active
    })
    .await;
    let unconfirmed = first_unconfirmed(&client, &slot).await.unwrap_or(ROWS + 1);
    let written: Vec<i64> = file_transactions(&file).concat();
    let missing: Vec<i64> = (1..unconfirmed).filter(|id| !written.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "the slot confirmed every id before {unconfirmed} but the file lacks {missing:?}"
    );
    assert!(written.len() < usize::try_from(ROWS).unwrap(), "killed before the workload ended");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only its owner may read the changes");

    // A restart appends the rest: every transaction is in the file, none lost.
    workload.await.unwrap();
    let end = wal_lsn(&client).await;
    let (status, lines) =
        run_to_end(&[&args[1..], &[file.to_str().unwrap(), "--endpos", &end]].concat());
    assert!(status.success(), "{status}");
    assert!(lines.is_empty(), "nothing on standard output with -f: {lines:?}");
    let all = file_transactions(&file);
    assert!(all.len() > killed_at);
    let ids: std::collections::BTreeSet<i64> = all.concat().into_iter().collect();
    let lost: Vec<i64> = (1..=ROWS).filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty() && ids.len() == usize::try_from(ROWS).unwrap(), "lost {lost:?}");
}
