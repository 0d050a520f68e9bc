//! `pgmirror tail`: JSON lines for a scripted workload, and a restart that neither skips nor
//! repeats a transaction.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags text[], \
             meta jsonb, big text); \
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
    crate::common::wait_for(Duration::from_secs(20), "the tail slot", || async {
        client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots \
                 WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                &[&slot],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // Three separate transactions (one query string would merge the INSERT into the BEGIN).
    client
        .execute("INSERT INTO items VALUES (1, 'pen', 1.50, '{a,b}', '{\"k\": 1}', NULL)", &[])
        .await
        .unwrap();
    client
        .batch_execute(
            "BEGIN; UPDATE items SET price = 2 WHERE id = 1; \
             INSERT INTO items VALUES (2, 'ink', NULL, NULL, NULL, big_text()); COMMIT;",
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
                   "new": {"id": 1, "name": "pen", "price": 1.50, "tags": ["a", "b"],
                           "meta": {"k": 1}, "big": null}}),
            json!({"type": "commit"}),
            json!({"type": "begin"}),
            json!({"type": "update", "schema": "public", "table": "items", "key": {"id": 1},
                   "new": {"id": 1, "name": "pen", "price": 2, "tags": ["a", "b"],
                           "meta": {"k": 1}, "big": null}}),
            json!({"type": "insert", "schema": "public", "table": "items",
                   "new": {"id": 2, "name": "ink", "price": null, "tags": null,
                           "meta": null, "big": big}}),
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
