//! NatsTarget against a real nats-server: subjects, headers, payloads in both formats, the
//! progress kept in the bucket, duplicates dropped on a restart, refused streams.

use std::sync::Arc;

use applier::nats::{stored_progress, subject};
use applier::{
    ApplyError, Change, CommitInfo, NatsError, NatsTarget, NatsTargetConfig, PayloadFormat, Target,
    TxnInfo,
};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use pgoutput_decoder::{
    Column, DecodingMessage, Lsn, OldTuple, PgTimestamp, Relation, RelationColumn, ReplicaIdentity,
    Tuple,
};
use serde_json::{Value, json};

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(name: &str, format: PayloadFormat) -> NatsTargetConfig {
    let mut cfg = NatsTargetConfig::new(name, "shop db");
    cfg.stream = name.to_uppercase();
    cfg.prefix = format!("pgm.{name}");
    cfg.format = format;
    cfg.bucket = format!("{name}_progress");
    cfg.max_in_flight = 3;
    cfg
}

async fn target(cfg: &NatsTargetConfig) -> NatsTarget {
    let client = testservers::nats::shared().connect().await.unwrap();
    NatsTarget::connect(client, cfg.clone()).await.unwrap()
}

async fn js() -> jetstream::Context {
    jetstream::new(testservers::nats::shared().connect().await.unwrap())
}

/// A table with a hostile name: a dot, a space, `*` and `>`.
fn relation() -> Arc<Relation> {
    let col = |name: &str, type_oid, is_key| RelationColumn {
        is_key,
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    Arc::new(Relation {
        xid: None,
        rel_id: 16400,
        namespace: "my schema".into(),
        name: "odd.t *>".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", 23, true), col("doc", 25, false), col("n", 1700, false)],
    })
}

fn row(cols: &[Option<&str>]) -> Tuple {
    Tuple::from_columns(cols.iter().map(|c| match c {
        Some("<toast>") => Column::UnchangedToast,
        Some(v) => Column::Text(v.as_bytes()),
        None => Column::Null,
    }))
}

fn txn(n: u64) -> (TxnInfo, CommitInfo) {
    let commit_lsn = Lsn(0x100 * n);
    let time = PgTimestamp(800_000_000_000_000);
    let xid = u32::try_from(700 + n).unwrap();
    (
        TxnInfo { xid, commit_lsn, commit_time: time, streamed: false, gid: None },
        CommitInfo { xid, commit_lsn, end_lsn: Lsn(commit_lsn.0 + 8), commit_time: time },
    )
}

/// One transaction of every change kind.
async fn publish_all_kinds(t: &mut NatsTarget, n: u64) {
    let rel = relation();
    let (begin, commit) = txn(n);
    t.begin(&begin).await.unwrap();
    t.change(Change::Insert {
        rel: rel.clone(),
        new: row(&[Some("1"), Some("big"), Some("1.50")]),
    })
    .await
    .unwrap();
    t.change(Change::Update {
        rel: rel.clone(),
        old: None,
        new: row(&[Some("1"), Some("<toast>"), None]),
    })
    .await
    .unwrap();
    t.change(Change::Delete {
        rel: rel.clone(),
        old: OldTuple::Key(row(&[Some("1"), None, None])),
    })
    .await
    .unwrap();
    t.change(Change::Truncate { rels: vec![rel.clone()], cascade: false, restart_identity: true })
        .await
        .unwrap();
    t.change(Change::Message(DecodingMessage {
        xid: None,
        transactional: true,
        lsn: Lsn(0x100 * n + 4),
        prefix: "app".into(),
        content: Bytes::from_static(b"hello"),
    }))
    .await
    .unwrap();
    t.commit(&commit).await.unwrap();
}

async fn messages(stream_name: &str) -> Vec<(String, async_nats::HeaderMap, Value)> {
    let js = js().await;
    let mut s = js.get_stream(stream_name).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.unwrap();
        let v = serde_json::from_slice(&m.payload).unwrap();
        out.push((m.subject.to_string(), m.headers, v));
    }
    out
}

fn header(h: &async_nats::HeaderMap, k: &str) -> String {
    h.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_kind_as_json_on_escaped_subjects_with_headers() {
    let name = unique("json");
    let cfg = config(&name, PayloadFormat::Json);
    let mut t = target(&cfg).await;
    assert!(t.created_stream());
    assert_eq!(t.load_progress().await.unwrap(), None);
    publish_all_kinds(&mut t, 1).await;
    assert_eq!(t.flush().await.unwrap(), Some(Lsn(0x108)));
    assert_eq!(t.last_sequence(), 5);

    let msgs = messages(&cfg.stream).await;
    let table = format!("{}.shop%20db.my%20schema.odd%2Et%20%2A%3E", cfg.prefix);
    let subjects: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
    let message = format!("{}.shop%20db._message", cfg.prefix);
    assert_eq!(subjects, [&table, &table, &table, &table, &message]);
    let types: Vec<&str> = msgs.iter().map(|m| m.2["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["insert", "update", "delete", "truncate", "message"]);
    assert_eq!(msgs[0].2["new"], json!({"id":1,"doc":"big","n":1.50}));
    assert_eq!(msgs[1].2["new"]["doc"], json!({"unchanged_toast": true}), "never null");
    assert_eq!(msgs[1].2["new"]["n"], Value::Null);
    assert_eq!(msgs[2].2["key"], json!({"id":1}));
    for (i, (_, h, _)) in msgs.iter().enumerate() {
        assert_eq!(header(h, "Nats-Msg-Id"), format!("{name}:0/100:{i}"));
        assert_eq!(header(h, "Pgmirror-Commit-Lsn"), "0/100");
        assert_eq!(header(h, "Pgmirror-Xid"), "701");
        assert!(header(h, "Pgmirror-Commit-Time").starts_with("2025-"), "{h:?}");
    }
    let stored = stored_progress(&js().await, &cfg.bucket, &cfg.name).await.unwrap();
    assert_eq!(stored, Some(Lsn(0x108)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_kind_as_debezium_envelopes_with_markers() {
    let name = unique("dbz");
    let mut cfg = config(&name, PayloadFormat::Debezium);
    cfg.transaction_markers = true;
    let mut t = target(&cfg).await;
    publish_all_kinds(&mut t, 2).await;
    t.flush().await.unwrap();
    let msgs = messages(&cfg.stream).await;
    let tx = format!("{}.shop%20db._transaction", cfg.prefix);
    assert_eq!(msgs.len(), 7);
    assert_eq!((msgs[0].0.as_str(), msgs[0].2["status"].as_str()), (tx.as_str(), Some("BEGIN")));
    assert_eq!((msgs[6].0.as_str(), msgs[6].2["status"].as_str()), (tx.as_str(), Some("END")));
    assert_eq!(msgs[6].2["event_count"], 5);
    let ops: Vec<&str> = msgs[1..6].iter().map(|m| m.2["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "u", "d", "t", "m"]);
    let (c, u, d) = (&msgs[1].2, &msgs[2].2, &msgs[3].2);
    assert_eq!(c["after"], json!({"id":1,"doc":"big","n":1.50}));
    assert_eq!(c["before"], Value::Null);
    assert_eq!(u["after"]["doc"], "__debezium_unavailable_value");
    assert_eq!(u["before"], json!({"id":1}), "the key, from the new row");
    assert_eq!(d["before"], json!({"id":1}));
    assert_eq!(d["after"], Value::Null);
    let src = &c["source"];
    assert_eq!(src["schema"], "my schema");
    assert_eq!(src["table"], "odd.t *>");
    assert_eq!(src["db"], "shop db");
    assert_eq!(src["txId"], 702);
    assert_eq!(src["lsn"], 0x200);
    assert_eq!(src["snapshot"], "false");
    assert_eq!(src["ts_ms"], 946_684_800_000_i64 + 800_000_000_000);
    assert!(c["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(msgs[4].2["source"]["table"], "odd.t *>");
    assert_eq!(msgs[5].2["message"]["content"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_skips_what_the_bucket_holds_and_duplicates_are_dropped() {
    let name = unique("restart");
    let cfg = config(&name, PayloadFormat::Json);
    let mut t = target(&cfg).await;
    publish_all_kinds(&mut t, 1).await;
    assert_eq!(t.flush().await.unwrap(), Some(Lsn(0x108)));
    // Published and acknowledged, then a crash before the next flush stored its end.
    publish_all_kinds(&mut t, 2).await;
    drop(t);
    let mut again = target(&cfg).await;
    assert!(!again.created_stream());
    assert_eq!(again.load_progress().await.unwrap(), Some(Lsn(0x108)), "the applier skips txn 1");
    publish_all_kinds(&mut again, 2).await;
    publish_all_kinds(&mut again, 3).await;
    assert_eq!(again.flush().await.unwrap(), Some(Lsn(0x308)));
    let msgs = messages(&cfg.stream).await;
    let ids: Vec<String> = msgs.iter().map(|m| header(&m.1, "Nats-Msg-Id")).collect();
    let name = name.as_str();
    let want: Vec<String> =
        (1..=3).flat_map(|n| (0..5).map(move |i| format!("{name}:0/{n}00:{i}"))).collect();
    assert_eq!(ids, want, "each change once, in commit order");
}

/// After the duplicate window, JetStream no longer drops what a restart publishes again: the
/// stream's last message tells what it holds beyond the bucket's progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_duplicate_window_republishes_nothing_stored() {
    let name = unique("window");
    let cfg = config(&name, PayloadFormat::Json);
    let js = js().await;
    js.create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.prefix)],
        duplicate_window: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut t = target(&cfg).await;
    publish_all_kinds(&mut t, 1).await;
    assert_eq!(t.flush().await.unwrap(), Some(Lsn(0x108)));
    // Stored, then a crash before the bucket heard of it.
    publish_all_kinds(&mut t, 2).await;
    let mut s = js.get_stream(&cfg.stream).await.unwrap();
    while s.info().await.unwrap().state.messages < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(t);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut again = target(&cfg).await;
    assert_eq!(again.load_progress().await.unwrap(), Some(Lsn(0x108)));
    publish_all_kinds(&mut again, 2).await;
    publish_all_kinds(&mut again, 3).await;
    assert_eq!(again.flush().await.unwrap(), Some(Lsn(0x308)));
    let ids: Vec<String> =
        messages(&cfg.stream).await.iter().map(|m| header(&m.1, "Nats-Msg-Id")).collect();
    let name = name.as_str();
    let want: Vec<String> =
        (1..=3).flat_map(|n| (0..5).map(move |i| format!("{name}:0/{n}00:{i}"))).collect();
    assert_eq!(ids, want, "each change once, in commit order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_the_prefix_is_refused() {
    let name = unique("other");
    let cfg = config(&name, PayloadFormat::Json);
    js().await
        .create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{name}.elsewhere.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let client = testservers::nats::shared().connect().await.unwrap();
    let err = NatsTarget::connect(client, cfg.clone()).await.unwrap_err();
    assert!(matches!(err, NatsError::StreamSubjects { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("\"{}.>\"", cfg.prefix)) && text.contains("another stream"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_stops_without_storing_progress() {
    let name = unique("full");
    let cfg = config(&name, PayloadFormat::Json);
    js().await
        .create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.>", cfg.prefix)],
            max_messages: 7,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut t = target(&cfg).await;
    publish_all_kinds(&mut t, 1).await;
    assert_eq!(t.flush().await.unwrap(), Some(Lsn(0x108)));
    let failed = async {
        // The third message of this transaction is refused (its acknowledgement may be read
        // while publishing, with acknowledgements in flight bounded, or at the flush).
        let rel = relation();
        let (begin, commit) = txn(2);
        t.begin(&begin).await?;
        for i in 0..5 {
            let id = i.to_string();
            t.change(Change::Insert { rel: rel.clone(), new: row(&[Some(&id), None, None]) })
                .await?;
        }
        t.commit(&commit).await?;
        t.flush().await
    };
    let err = failed.await.unwrap_err();
    match &err {
        ApplyError::Nats(NatsError::StreamFull { stored, .. }) => assert_eq!(*stored, Lsn(0x108)),
        other => panic!("not a full stream: {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("size limit") && text.contains("0/108"), "{text}");
    let stored = stored_progress(&js().await, &cfg.bucket, &cfg.name).await.unwrap();
    assert_eq!(stored, Some(Lsn(0x108)), "the progress stays before what was refused");
}

#[test]
fn subjects_of_hostile_names() {
    let cfg = NatsTargetConfig::new("m", "db");
    assert_eq!(cfg.table_subject("a.b", "*"), "pgmirror.db.a%2Eb.%2A");
    assert_eq!(subject::token("x y>"), "x%20y%3E");
}

#[tokio::test]
async fn a_deleted_stream_is_a_transient_error_that_names_it() {
    let name = unique("gone");
    let cfg = config(&name, PayloadFormat::Json);
    let mut t = target(&cfg).await;
    publish_all_kinds(&mut t, 1).await;
    assert_eq!(t.flush().await.unwrap(), Some(Lsn(0x108)));
    js().await.delete_stream(&cfg.stream).await.unwrap();
    let failed = async {
        let (begin, commit) = txn(2);
        t.begin(&begin).await?;
        t.change(Change::Insert { rel: relation(), new: row(&[Some("9"), None, None]) }).await?;
        t.commit(&commit).await?;
        t.flush().await
    };
    let err = failed.await.unwrap_err();
    let ApplyError::Nats(nats) = &err else { panic!("not a NATS error: {err}") };
    assert!(nats.is_transient(), "a stream may come back: retried");
    let text = format!("{:#}", anyhow_like(&err));
    assert!(text.contains(&cfg.stream) && text.contains("no stream takes the subject"), "{text}");
}

/// The error and its sources on one line, as the binary prints them.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A change the stream refuses (larger than its `max_msg_size`) while it stores those published
/// after it: a stop that says the order is broken and how many came after, never a retry loop;
/// the same change last in its transaction is only too large.
#[tokio::test]
async fn a_refused_change_with_later_ones_stored_stops_and_says_the_order_broke() {
    for (big_at, after) in [(1usize, 2usize), (3, 0)] {
        let name = unique("order");
        let cfg = config(&name, PayloadFormat::Json);
        js().await
            .create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![format!("{}.>", cfg.prefix)],
                max_message_size: 2000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut t = target(&cfg).await;
        let big = "x".repeat(3000);
        let failed = async {
            let (begin, commit) = txn(1);
            t.begin(&begin).await?;
            for i in 0..4 {
                let id = i.to_string();
                let v = if i == big_at { Some(big.as_str()) } else { Some("small") };
                t.change(Change::Insert { rel: relation(), new: row(&[Some(&id), v, None]) })
                    .await?;
            }
            t.commit(&commit).await?;
            t.flush().await
        };
        let err = failed.await.unwrap_err();
        let text = err.to_string();
        let ApplyError::Nats(nats) = &err else { panic!("not a NATS error: {text}") };
        assert!(!nats.is_transient(), "retrying cannot help: {text}");
        assert!(text.contains("max_msg_size"), "{text}");
        match nats {
            NatsError::OutOfOrder { stored_after, .. } => {
                assert_eq!(*stored_after, after, "{text}");
                assert!(text.contains("commit order"), "{text}");
            }
            other => assert_eq!(after, 0, "not reported as out of order: {other}"),
        }
        let stored = stored_progress(&js().await, &cfg.bucket, &cfg.name).await.unwrap();
        assert_eq!(stored, None, "nothing confirmed");
    }
}
