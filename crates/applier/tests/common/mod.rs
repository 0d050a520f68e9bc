//! Shared set-up: a source and a target database on the shared test cluster, a publication
//! and a slot on the source, and reading pgoutput messages from the slot through SQL.

#![allow(dead_code)]

use applier::{Applier, ApplierConfig, ApplyError, PostgresTarget, PostgresTargetConfig};
use bytes::Bytes;
use pgoutput_decoder::{Decoder, LogicalMessage, Lsn};
use tokio_postgres::Client;

pub struct Env {
    pub src: Client,
    pub dst: Client,
    pub src_db: String,
    pub dst_db: String,
    pub slot: String,
    pub publication: String,
}

/// Creates both databases with `schema` (SQL run on each), a publication for all tables and
/// a slot (two-phase when asked).
pub async fn setup(prefix: &str, schema: &str, two_phase: bool) -> Env {
    let cluster = pgcluster::shared();
    let src_db = pgcluster::unique_name(&format!("{prefix}_src"));
    let dst_db = pgcluster::unique_name(&format!("{prefix}_dst"));
    cluster.create_database(&src_db).await.unwrap();
    cluster.create_database(&dst_db).await.unwrap();
    let src = cluster.connect(&src_db).await.unwrap();
    let dst = cluster.connect(&dst_db).await.unwrap();
    src.batch_execute(schema).await.unwrap();
    dst.batch_execute(schema).await.unwrap();
    let publication = pgcluster::unique_name(&format!("{prefix}_pub"));
    let slot = pgcluster::unique_name(&format!("{prefix}_slot"));
    src.batch_execute(&format!("CREATE PUBLICATION {publication} FOR ALL TABLES")).await.unwrap();
    src.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, $2)",
        &[&slot, &two_phase],
    )
    .await
    .unwrap();
    Env { src, dst, src_db, dst_db, slot, publication }
}

impl Env {
    /// A new connection to the source database.
    pub async fn source_session(&self) -> Client {
        pgcluster::shared().connect(&self.src_db).await.unwrap()
    }

    /// A new connection to the target database.
    pub async fn target_session(&self) -> Client {
        pgcluster::shared().connect(&self.dst_db).await.unwrap()
    }

    /// Consumes the slot's changes as decoded pgoutput messages. `extra` are more plugin
    /// options (name, value); `work_mem` sets `logical_decoding_work_mem` for the decoding.
    pub async fn fetch(
        &self,
        proto: u32,
        binary: bool,
        extra: &[(&str, &str)],
        work_mem: Option<&str>,
    ) -> Vec<LogicalMessage> {
        let session = self.source_session().await;
        // The test cluster commits asynchronously and decoding reads only flushed WAL: a
        // synchronous commit of a transaction that wrote WAL flushes everything before it.
        // (Its message is not published unless `messages` is on.)
        session.batch_execute("SET synchronous_commit = on").await.unwrap();
        session
            .batch_execute("SELECT pg_logical_emit_message(true, 'test-flush', '')")
            .await
            .unwrap();
        session.batch_execute("RESET synchronous_commit").await.unwrap();
        if let Some(mem) = work_mem {
            session
                .batch_execute(&format!("SET logical_decoding_work_mem = '{mem}'"))
                .await
                .unwrap();
        }
        let mut options: Vec<String> = vec![
            "proto_version".into(),
            proto.to_string(),
            "publication_names".into(),
            self.publication.clone(),
            "binary".into(),
            binary.to_string(),
        ];
        for (k, v) in extra {
            options.push((*k).into());
            options.push((*v).into());
        }
        let rows = session
            .query(
                "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, VARIADIC $2::text[])",
                &[&self.slot, &options],
            )
            .await
            .unwrap();
        let mut decoder = Decoder::new(proto);
        rows.iter().map(|r| decoder.decode(Bytes::from(r.get::<_, Vec<u8>>(0))).unwrap()).collect()
    }

    /// A PostgreSQL target on the target database, able to open more sessions (as the
    /// mirror's is), so large streamed transactions are applied while they arrive.
    pub async fn target(&self, mirror: &str) -> PostgresTarget {
        let db = self.dst_db.clone();
        PostgresTarget::new(self.target_session().await, PostgresTargetConfig::new(mirror))
            .await
            .unwrap()
            .with_connector(move || {
                let db = db.clone();
                async move { pgcluster::shared().connect(&db).await }
            })
    }

    /// Applies `msgs` into the target database with a fresh applier, then flushes.
    pub async fn apply(
        &self,
        msgs: &[LogicalMessage],
        cfg: ApplierConfig,
    ) -> Result<Applier<PostgresTarget>, ApplyError> {
        let target = self.target("test").await;
        apply_all(target, msgs, cfg).await
    }

    /// Whether every table of `tables` has the same fingerprint on both sides.
    pub async fn assert_same(&self, tables: &[&str]) {
        for t in tables {
            let a = store::table_fingerprint(&self.src, t).await.unwrap();
            let b = store::table_fingerprint(&self.dst, t).await.unwrap();
            assert_eq!(a, b, "table {t} differs");
        }
    }

    /// The stored progress of mirror `name`.
    pub async fn progress(&self, name: &str) -> Option<Lsn> {
        self.dst
            .query_opt(
                "SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, String>(0).parse().unwrap())
    }
}

/// Runs each `;`-separated statement on its own (so each autocommits as its own
/// transaction, unlike a multi-statement simple query). No literal may contain `;`.
pub async fn exec_each(client: &Client, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{stmt}: {e:?}"));
    }
}

/// Feeds every message, then flushes.
pub async fn apply_all<T: applier::Target>(
    target: T,
    msgs: &[LogicalMessage],
    cfg: ApplierConfig,
) -> Result<Applier<T>, ApplyError> {
    let mut a = Applier::new(target, cfg).await?;
    for m in msgs {
        a.handle(m.clone()).await?;
    }
    a.flush().await?;
    Ok(a)
}

/// End LSN of the last Commit / Stream Commit / Commit Prepared message.
pub fn last_end(msgs: &[LogicalMessage]) -> Lsn {
    msgs.iter()
        .rev()
        .find_map(|m| match m {
            LogicalMessage::Commit(c) => Some(c.end_lsn),
            LogicalMessage::StreamCommit(c) => Some(c.end_lsn),
            LogicalMessage::CommitPrepared(c) => Some(c.end_lsn),
            _ => None,
        })
        .expect("a commit")
}

pub fn count(msgs: &[LogicalMessage], f: impl Fn(&LogicalMessage) -> bool) -> usize {
    msgs.iter().filter(|m| f(m)).count()
}
