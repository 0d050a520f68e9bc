//! A crash between two shards' commits: one shard committed a transaction that moves rows
//! both ways between them, the other did not. Replaying the stream converges either way, with
//! the shard key in the replica identity or outside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use applier::shard::{MoveId, ShardLayout, ShardTarget};
use applier::{ApplyError, Change, CommitInfo, Target, TxnInfo, TypeMap};
use pgoutput_decoder::{DecodingMessage, Lsn, OldTuple, Relation, Tuple};

use super::elsewhere::{LOOSE, loose_layout};
use super::routing::{STORE, TOASTED, store_layout};
use super::*;
use crate::common::{apply_all, last_end, setup};

/// A shard whose flush "crashes" once `other`'s progress has reached `end` (so the other
/// shard's commit is in), without committing its own transaction.
#[derive(Debug)]
struct Crashing {
    inner: PostgresTarget,
    crash_after: Option<(String, Lsn)>,
}

impl Target for Crashing {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.inner.load_progress().await
    }
    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.inner.begin(txn).await
    }
    async fn relation(&mut self, rel: &Arc<Relation>, types: &TypeMap) -> Result<(), ApplyError> {
        self.inner.relation(rel, types).await
    }
    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        self.inner.change(change).await
    }
    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        self.inner.commit(commit).await
    }
    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        let Some((other, end)) = &self.crash_after else { return self.inner.flush().await };
        let other = connect(other).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done: bool = other
                .query_one(
                    "SELECT coalesce(max(end_lsn) >= $1::text::pg_lsn, false) \
                     FROM pgmirror.progress WHERE mirror_name = 'test'",
                    &[&end.to_string()],
                )
                .await
                .unwrap()
                .get(0);
            if done {
                return Err(ApplyError::Unsupported("a crash before this shard's commit"));
            }
            assert!(Instant::now() < deadline, "the other shard never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn message(&mut self, msg: &DecodingMessage) -> Result<(), ApplyError> {
        self.inner.message(msg).await
    }
}

impl ShardTarget for Crashing {
    async fn take_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
        at: MoveId,
    ) -> Result<Option<Tuple>, ApplyError> {
        self.inner.take_row(rel, old, new, at).await
    }
    async fn holds_row(
        &mut self,
        rel: &Arc<Relation>,
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> Result<bool, ApplyError> {
        self.inner.holds_row(rel, old, new).await
    }
    async fn delete_if_held(
        &mut self,
        rel: Arc<Relation>,
        old: OldTuple,
    ) -> Result<(), ApplyError> {
        self.inner.delete_if_held(rel, old).await
    }
    async fn taken_row(&mut self, at: MoveId) -> Result<Option<Tuple>, ApplyError> {
        self.inner.taken_row(at).await
    }
    async fn forget_moves(&mut self, before: Lsn) -> Result<(), ApplyError> {
        self.inner.forget_moves(before).await
    }
}

/// Customer ids below 200 that live on shard `shard` of 2 now and on the other after
/// `+ 1000`.
async fn movers(src: &tokio_postgres::Client, shard: i32) -> Vec<i64> {
    src.query(
        "SELECT g FROM generate_series(1, 200) g \
         WHERE satisfies_hash_partition('probe_bigint'::regclass, 2, $1, g::int8) \
           AND NOT satisfies_hash_partition('probe_bigint'::regclass, 2, $1, g::int8 + 1000) \
         LIMIT 5",
        &[&shard],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, i32>(0).into())
    .collect()
}

/// How a crash test's table is laid out and changed.
struct Case {
    schema: &'static str,
    layout: fn() -> ShardLayout,
    /// Fills the table with rows 1..=200, TOASTed values in each.
    fill: &'static str,
    /// Moves the rows of `$1` (ids) to key + 1000.
    mv: &'static str,
    table: &'static str,
    key: &'static str,
}

/// `customers` by `id`, its primary key.
const IN_IDENTITY: Case = Case {
    schema: STORE,
    layout: store_layout,
    fill: "INSERT INTO customers SELECT g, 'c' || g, {TOASTED} FROM generate_series(1, 200) g",
    mv: "UPDATE customers SET id = id + 1000 WHERE id = ANY($1)",
    table: "customers",
    key: "t.id",
};

/// `orders` by `customer_id`, outside its primary key `id` (the default identity).
const OUTSIDE_IDENTITY: Case = Case {
    schema: LOOSE,
    layout: loose_layout,
    fill: "INSERT INTO orders SELECT g, g, 'new', {TOASTED} FROM generate_series(1, 200) g",
    mv: "UPDATE orders SET customer_id = customer_id + 1000 WHERE customer_id = ANY($1)",
    table: "orders",
    key: "t.customer_id",
};

#[tokio::test]
async fn a_crash_between_two_shards_commits_converges_whichever_committed() {
    Box::pin(crash_between_commits(&IN_IDENTITY)).await;
}

#[tokio::test]
async fn a_crash_between_two_shards_commits_converges_with_the_key_outside_the_identity() {
    Box::pin(crash_between_commits(&OUTSIDE_IDENTITY)).await;
}

async fn crash_between_commits(case: &Case) {
    let layout = (case.layout)();
    for crashed in [0usize, 1] {
        let env = setup("shard_crash", case.schema, false).await;
        let dbs = shard_databases(&env, 2, case.schema).await;
        env.src.batch_execute(&case.fill.replace("{TOASTED}", TOASTED)).await.unwrap();
        let first = env.fetch(1, false, &[], None).await;
        apply_all(sharded(&dbs, &layout).await, &first, cfg()).await.unwrap();
        // One transaction moving rows both ways, their TOASTed values not sent.
        let mut ids = movers(&env.src, 0).await;
        ids.extend(movers(&env.src, 1).await);
        assert_eq!(ids.len(), 10);
        env.src.execute(case.mv, &[&ids]).await.unwrap();
        let moves = env.fetch(1, false, &[], None).await;
        let end = last_end(&moves);
        let mut shards = Vec::new();
        for (i, db) in dbs.iter().enumerate() {
            let crash_after = (i == crashed).then(|| (dbs[1 - i].clone(), end));
            shards.push(Crashing { inner: shard_target(db).await, crash_after });
        }
        let e = apply_all(ShardedTarget::new(shards, layout.clone()), &moves, cfg())
            .await
            .expect_err("one shard crashed");
        assert!(matches!(e, ApplyError::Unsupported(_)), "{e}");
        // The crashed shard's transaction is gone with its session.
        let survivor = connect(&dbs[1 - crashed]).await;
        let kept: i64 = survivor
            .query_one("SELECT count(*) FROM pgmirror.shard_moves", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 5, "the committed shard keeps the rows it handed over");
        // The restart replays the transaction; each shard skips what it holds.
        let again = apply_all(sharded(&dbs, &layout).await, &moves, cfg()).await.unwrap();
        assert_eq!(again.target().moved_rows(), 10);
        assert_eq!(
            again.target().shards().map(|s| s.stats().missing_rows).sum::<u64>(),
            0,
            "every moved row was found"
        );
        assert_layout(&env, &dbs, case.table, case.key, "probe_bigint").await;
        for db in &dbs {
            assert_eq!(env_progress(db).await, Some(end), "progress of {db}");
        }
    }
}

async fn env_progress(db: &str) -> Option<Lsn> {
    connect(db)
        .await
        .query_opt("SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = 'test'", &[])
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0).parse().unwrap())
}
