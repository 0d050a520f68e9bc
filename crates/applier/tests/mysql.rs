//! MySqlTarget against a real MariaDB server: runs that span the source transactions of a
//! group, updates folded into pending rows, and each key's changes applied in source order.

use std::sync::Arc;

use applier::mysql::schema::{self, MySqlTable, SourceTable};
use applier::mysql::{MySqlTargetConfig, progress, session};
use applier::{Change, CommitInfo, MySqlTarget, Target, TxnInfo};
use pgoutput_decoder::{
    Column, Lsn, OldTuple, PgTimestamp, Relation, RelationColumn, ReplicaIdentity, Tuple,
};
use sqlx::MySqlConnection;

/// Source tables `t (id int key, v text, n int)` and `u (id int key, c int)`, mapped.
async fn tables() -> Vec<MySqlTable> {
    let cluster = pgcluster::shared();
    let db = pgcluster::unique_name("mysqlruns");
    cluster.create_database(&db).await.unwrap();
    let src = cluster.connect(&db).await.unwrap();
    src.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int); \
         CREATE TABLE u (id int PRIMARY KEY, c int)",
    )
    .await
    .unwrap();
    let mut sources = Vec::new();
    for name in ["t", "u"] {
        let oid: u32 =
            src.query_one("SELECT $1::text::regclass::oid", &[&name]).await.unwrap().get(0);
        sources.push(SourceTable {
            schema: "public".into(),
            name: name.into(),
            oid,
            key: vec!["id".into()],
        });
    }
    schema::describe(&src, &sources).await.unwrap()
}

/// A target on a fresh MariaDB database holding the mapped tables, and a second connection.
async fn target(prefix: &str) -> (MySqlTarget, MySqlConnection) {
    target_in_mode(prefix, None).await
}

/// [`target`], its session's `sql_mode` extended by `extra_mode`.
async fn target_in_mode(prefix: &str, extra_mode: Option<&str>) -> (MySqlTarget, MySqlConnection) {
    let server = testservers::mariadb::shared();
    let name = pgcluster::unique_name(prefix);
    server.create_database(&name).await.unwrap();
    let opts = session::parse_url(&server.url(&name)).unwrap();
    let (mut conn, info) = session::connect(&opts).await.unwrap();
    if let Some(mode) = extra_mode {
        let sql = format!("SET SESSION sql_mode = CONCAT(@@sql_mode, ',{mode}')");
        sqlx::Executor::execute(&mut conn, sql.as_str()).await.unwrap();
    }
    let tables = tables().await;
    schema::ensure_tables(&mut conn, &tables, info.collation()).await.unwrap();
    progress::ensure_table(&mut conn).await.unwrap();
    let row = progress::MirrorRow {
        stats_paused: Vec::new(),
        name: prefix.into(),
        state: progress::MirrorState::Streaming,
        slot: prefix.into(),
        publication: prefix.into(),
        created_publication: false,
        source_system_id: None,
        lsn: None,
    };
    progress::save(&mut conn, &row).await.unwrap();
    let check = server.connect(&name).await.unwrap();
    (MySqlTarget::new(conn, info, tables, MySqlTargetConfig::new(prefix)), check)
}

fn relation(rel_id: u32, name: &str, cols: &[&str]) -> Arc<Relation> {
    Arc::new(Relation {
        xid: None,
        rel_id,
        namespace: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| RelationColumn {
                is_key: i == 0,
                name: (*c).into(),
                type_oid: if *c == "v" { 25 } else { 23 },
                type_modifier: -1,
            })
            .collect(),
    })
}

/// A tuple: `"~"` is an unchanged TOAST value.
fn row(cols: &[Option<&str>]) -> Tuple {
    Tuple::from_columns(cols.iter().map(|c| match c {
        Some("~") => Column::UnchangedToast,
        Some(v) => Column::Text(v.as_bytes()),
        None => Column::Null,
    }))
}

fn ins(rel: &Arc<Relation>, cols: &[Option<&str>]) -> Change {
    Change::Insert { rel: rel.clone(), new: row(cols) }
}

fn upd(rel: &Arc<Relation>, old_key: Option<&str>, cols: &[Option<&str>]) -> Change {
    let old = old_key.map(|k| {
        let mut key = vec![Some(k)];
        key.resize(cols.len(), None);
        OldTuple::Key(row(&key))
    });
    Change::Update { rel: rel.clone(), old, new: row(cols) }
}

fn del(rel: &Arc<Relation>, key: &str, width: usize) -> Change {
    let mut cols = vec![Some(key)];
    cols.resize(width, None);
    Change::Delete { rel: rel.clone(), old: OldTuple::Key(row(&cols)) }
}

/// Applies each inner list as one source transaction, then flushes them as one group.
async fn apply_group(t: &mut MySqlTarget, txns: Vec<Vec<Change>>) {
    for (n, changes) in txns.into_iter().enumerate() {
        let n = n as u64 + 1;
        let commit_lsn = Lsn(0x100 * n);
        let time = PgTimestamp(800_000_000_000_000);
        let xid = 700 + u32::try_from(n).expect("few transactions");
        t.begin(&TxnInfo { xid, commit_lsn, commit_time: time, streamed: false, gid: None })
            .await
            .unwrap();
        for c in changes {
            t.change(c).await.unwrap();
        }
        t.commit(&CommitInfo {
            xid,
            commit_lsn,
            end_lsn: Lsn(commit_lsn.0 + 8),
            commit_time: time,
        })
        .await
        .unwrap();
    }
    t.flush().await.unwrap();
}

async fn rows(conn: &mut MySqlConnection, sql: &str) -> Vec<String> {
    let raw: Vec<Vec<u8>> = sqlx::query_scalar(sql).fetch_all(conn).await.unwrap();
    raw.into_iter().map(|r| String::from_utf8(r).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_runs_span_transactions_and_updates_fold_into_pending_rows() {
    let (mut target, mut check) = target("mfold").await;
    let t = relation(16401, "t", &["id", "v", "n"]);
    let u = relation(16402, "u", &["id", "c"]);
    // Store OLTP's shape: per transaction an insert into two tables, then updates of the new
    // rows and of one hot row.
    let mut txns = Vec::new();
    for i in 1..=50 {
        let id = i.to_string();
        let count = i.to_string();
        txns.push(vec![
            ins(&t, &[Some(&id), Some("new"), Some("0")]),
            ins(&u, &[Some(&id), Some("0")]),
            upd(&t, None, &[Some(&id), Some("paid"), Some("~")]),
            upd(&u, None, &[Some(&id), Some("1")]),
            upd(&t, None, &[Some("1"), Some("~"), Some(&count)]),
        ]);
    }
    apply_group(&mut target, txns).await;
    // One INSERT per table: every update folded into its row's pending insert.
    assert_eq!(target.stats().statements, 2, "{:?}", target.stats());
    let got = rows(&mut check, "SELECT CONCAT_WS(',', id, v, n) FROM t ORDER BY id").await;
    let mut want = vec!["1,paid,50".to_owned()];
    want.extend((2..=50).map(|i| format!("{i},paid,0")));
    assert_eq!(got, want);
    let got = rows(&mut check, "SELECT CONCAT_WS(',', id, c) FROM u ORDER BY id").await;
    assert_eq!(got, (1..=50).map(|i| format!("{i},1")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_each_keys_changes_across_transactions_of_a_group_end_right() {
    let (mut target, mut check) = target("morder").await;
    let t = relation(16403, "t", &["id", "v", "n"]);
    let u = relation(16404, "u", &["id", "c"]);
    apply_group(
        &mut target,
        vec![vec![
            ins(&t, &[Some("10"), Some("ten"), Some("0")]),
            ins(&t, &[Some("11"), Some("eleven"), Some("0")]),
        ]],
    )
    .await;
    apply_group(
        &mut target,
        vec![
            // Insert, update (a TOASTed column kept), delete, insert again of key 1.
            vec![ins(&t, &[Some("1"), Some("a"), Some("1")]), ins(&u, &[Some("1"), Some("1")])],
            vec![upd(&t, None, &[Some("1"), Some("~"), Some("2")])],
            vec![del(&t, "1", 3), upd(&u, None, &[Some("1"), Some("2")])],
            vec![ins(&t, &[Some("1"), Some("b"), Some("3")])],
            // The key moves 1 -> 5, then 1 is inserted again and 5 updated.
            vec![upd(&t, Some("1"), &[Some("5"), Some("c"), Some("4")])],
            vec![ins(&t, &[Some("1"), Some("d"), Some("5")]), del(&u, "1", 2)],
            vec![upd(&t, None, &[Some("5"), Some("e"), Some("~")])],
            // Updates of an existing row: folded (same columns), then other columns, then
            // deleted and inserted again; another existing row updated twice and kept.
            vec![upd(&t, None, &[Some("10"), Some("x"), Some("1")])],
            vec![upd(&t, None, &[Some("10"), Some("y"), Some("2")])],
            vec![upd(&t, None, &[Some("10"), Some("~"), Some("3")])],
            vec![upd(&t, None, &[Some("11"), Some("p"), Some("1")])],
            vec![del(&t, "10", 3), ins(&u, &[Some("1"), Some("9")])],
            vec![ins(&t, &[Some("10"), Some("z"), None])],
            vec![upd(&t, None, &[Some("11"), Some("q"), Some("2")])],
        ],
    )
    .await;
    let got =
        rows(&mut check, "SELECT CONCAT_WS(',', id, v, IFNULL(n, 'null')) FROM t ORDER BY id")
            .await;
    assert_eq!(got, ["1,d,5", "5,e,4", "10,z,null", "11,q,2"]);
    let got = rows(&mut check, "SELECT CONCAT_WS(',', id, c) FROM u ORDER BY id").await;
    assert_eq!(got, ["1,9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_updates_of_different_columns_share_a_run() {
    let (mut target, mut check) = target("msets").await;
    let t = relation(16405, "t", &["id", "v", "n"]);
    let rows_1_to_20 =
        (1..=20).map(|i| ins(&t, &[Some(&i.to_string()), Some("old"), Some("0")])).collect();
    apply_group(&mut target, vec![rows_1_to_20]).await;
    let before = target.stats().statements;
    // Every other row keeps its TOASTed `v`: updates alternate between two column lists.
    let keys: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let tens: Vec<String> = (1..=20).map(|i| (i * 10).to_string()).collect();
    let vs: Vec<String> = (1..=20).map(|i| format!("v{i}")).collect();
    let mut txns = Vec::new();
    for i in 0..20 {
        let v = if i % 2 == 0 { "~" } else { vs[i].as_str() };
        txns.push(vec![upd(&t, None, &[Some(&keys[i]), Some(v), Some(&tens[i])])]);
    }
    // Row 1 again, setting only `v`: folded into its pending update of `n`.
    txns.push(vec![upd(&t, None, &[Some("1"), Some("w"), Some("~")])]);
    apply_group(&mut target, txns).await;
    // One statement per column list (n; v, n; n, v), not one per change of list.
    assert_eq!(target.stats().statements - before, 3, "{:?}", target.stats());
    let got = rows(&mut check, "SELECT CONCAT_WS(',', id, v, n) FROM t ORDER BY id").await;
    let mut want = vec!["1,w,10".to_owned()];
    want.extend(
        (2..=20).map(|i| format!("{i},{},{}", if i % 2 == 1 { "old" } else { &vs[i - 1] }, i * 10)),
    );
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_hostile_values_arrive_intact_with_and_without_backslash_escapes() {
    let hostile = [
        "it's",
        "''",
        "\\",
        "a\\'b",
        "\\'; DROP TABLE t; --",
        "nul\0inside",
        "\0",
        "tab\tnew\nline\rcr\u{1a}",
        "😀 4-byte 𝄞",
        "\"double\" `back`",
        "",
    ];
    for (n, mode) in [None, Some("NO_BACKSLASH_ESCAPES")].into_iter().enumerate() {
        let prefix = format!("mhostile{n}");
        let (mut target, mut check) = target_in_mode(&prefix, mode).await;
        let t = relation(16410 + u32::try_from(n).unwrap(), "t", &["id", "v", "n"]);
        let keys: Vec<String> = (1..=hostile.len()).map(|i| i.to_string()).collect();
        // Inserted (a multi-row INSERT), and each value also set by an update of another row
        // (the UPDATE's derived table) and used as the key of nothing else.
        let mut txn: Vec<Change> = keys
            .iter()
            .zip(hostile)
            .map(|(k, v)| ins(&t, &[Some(k), Some(v), Some("0")]))
            .collect();
        txn.push(ins(&t, &[Some("100"), Some("x"), Some("0")]));
        apply_group(&mut target, vec![txn]).await;
        let updates: Vec<Vec<Change>> = keys
            .iter()
            .zip(hostile)
            .map(|(k, v)| vec![upd(&t, None, &[Some(k), Some(v), Some("1")])])
            .collect();
        apply_group(&mut target, updates).await;
        let got: Vec<(i32, Vec<u8>, i32)> =
            sqlx::query_as("SELECT id, CAST(v AS BINARY), n FROM t WHERE id < 100 ORDER BY id")
                .fetch_all(&mut check)
                .await
                .unwrap();
        let want: Vec<(i32, Vec<u8>, i32)> = hostile
            .iter()
            .enumerate()
            .map(|(i, v)| (i32::try_from(i + 1).unwrap(), v.as_bytes().to_vec(), 1))
            .collect();
        assert_eq!(got, want, "sql_mode extra {mode:?}");
    }
}
