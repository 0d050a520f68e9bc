//! A crash between two shards' commits: one shard committed a transaction that moves rows
//! both ways between them, the other did not. Replaying the stream converges either way, with
//! the shard key in the replica identity or outside it. The test runs against any kind of
//! shard ([`CrashShards`]); here on PostgreSQL shards.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use applier::shard::{MoveId, ShardLayout, ShardTarget};
use applier::{ApplyError, Change, CommitInfo, Target, TxnInfo, TypeMap};
use futures_util::future::BoxFuture;
use pgoutput_decoder::{
    ColumnValue, DecodingMessage, LogicalMessage, Lsn, OldTuple, Relation, Tuple,
};

use super::elsewhere::{LOOSE, loose_layout};
use super::routing::{STORE, TOASTED, store_layout};
use super::*;
use crate::common::{apply_all, last_end, setup};

/// Reads a shard's stored progress, each call in a session of its own.
pub(crate) type ProgressProbe = Box<dyn Fn() -> BoxFuture<'static, Option<Lsn>> + Send + Sync>;

/// A shard whose flush "crashes" once the other shard's progress (read by the probe) has
/// reached the LSN (so the other shard's commit is in), without committing its own
/// transaction.
struct Crashing<T> {
    inner: T,
    crash_after: Option<(ProgressProbe, Lsn)>,
}

impl<T: fmt::Debug> fmt::Debug for Crashing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crashing")
            .field("inner", &self.inner)
            .field("crash_after", &self.crash_after.as_ref().map(|(_, end)| end))
            .finish()
    }
}

impl<T: ShardTarget + Send> Target for Crashing<T> {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if other().await >= Some(*end) {
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

impl<T: ShardTarget + Send> ShardTarget for Crashing<T> {
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

/// Two shards of one kind for [`crash_between_commits`], each target mirror `test`.
pub(crate) trait CrashShards: Sized {
    /// A target on one shard.
    type Target: ShardTarget + Send + fmt::Debug;

    /// Two fresh shard databases for `case`'s table (its source in `env`, made by `schema`).
    async fn create(env: &Env, case: &Case, schema: &str) -> Self;

    /// A new target on shard `i`.
    async fn target(&self, i: usize) -> Self::Target;

    /// Reads shard `i`'s stored progress.
    fn progress(&self, i: usize) -> ProgressProbe;

    /// How many rows shard `i` keeps for moves to other shards.
    async fn kept(&self, i: usize) -> i64;

    /// Rows an update or delete found on no shard, if the targets count them.
    fn missing(target: &ShardedTarget<Self::Target>) -> Option<u64>;

    /// Checks that each shard holds exactly the source rows of `case`'s table that
    /// PostgreSQL's hash partitioning puts in its partition, every value equal.
    async fn assert_layout(&self, env: &Env, case: &Case);

    /// A sharded target over new targets on both shards.
    async fn sharded(&self, layout: &ShardLayout) -> ShardedTarget<Self::Target> {
        ShardedTarget::new(vec![self.target(0).await, self.target(1).await], layout.clone())
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
pub(crate) struct Case {
    /// The source's (and PostgreSQL shards') schema.
    schema: fn() -> String,
    layout: fn() -> ShardLayout,
    /// Fills the table with rows 1..=200, TOASTed text and bytea values in each.
    fill: &'static str,
    /// Moves the rows of `$1` (ids) to key + 1000.
    mv: &'static str,
    pub(crate) table: &'static str,
    /// The table's primary key column.
    pub(crate) id: &'static str,
    /// The shard key column.
    pub(crate) key: &'static str,
}

/// `customers` by `id`, its primary key.
pub(crate) const IN_IDENTITY: Case = Case {
    schema: || format!("{STORE}ALTER TABLE customers ADD photo bytea;"),
    layout: store_layout,
    fill: "INSERT INTO customers SELECT g, 'c' || g, {TOASTED}, decode({TOASTED}, 'hex') \
           FROM generate_series(1, 200) g",
    mv: "UPDATE customers SET id = id + 1000 WHERE id = ANY($1)",
    table: "customers",
    id: "id",
    key: "id",
};

/// `orders` by `customer_id`, outside its primary key `id` (the default identity).
pub(crate) const OUTSIDE_IDENTITY: Case = Case {
    schema: || format!("{LOOSE}ALTER TABLE orders ADD scan bytea;"),
    layout: loose_layout,
    fill: "INSERT INTO orders SELECT g, g, 'new', {TOASTED}, decode({TOASTED}, 'hex') \
           FROM generate_series(1, 200) g",
    mv: "UPDATE orders SET customer_id = customer_id + 1000 WHERE customer_id = ANY($1)",
    table: "orders",
    id: "id",
    key: "customer_id",
};

/// PostgreSQL shards: the env's target database and one more.
struct PgShards {
    dbs: Vec<String>,
}

impl CrashShards for PgShards {
    type Target = PostgresTarget;

    async fn create(env: &Env, _case: &Case, schema: &str) -> Self {
        PgShards { dbs: shard_databases(env, 2, schema).await }
    }

    async fn target(&self, i: usize) -> PostgresTarget {
        shard_target(&self.dbs[i]).await
    }

    fn progress(&self, i: usize) -> ProgressProbe {
        let db = self.dbs[i].clone();
        Box::new(move || {
            let db = db.clone();
            Box::pin(async move {
                connect(&db)
                    .await
                    .query_opt(
                        "SELECT end_lsn::text FROM pgmirror.progress WHERE mirror_name = 'test'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .map(|r| r.get::<_, String>(0).parse().unwrap())
            })
        })
    }

    async fn kept(&self, i: usize) -> i64 {
        connect(&self.dbs[i])
            .await
            .query_one("SELECT count(*) FROM pgmirror.shard_moves", &[])
            .await
            .unwrap()
            .get(0)
    }

    fn missing(target: &ShardedTarget<PostgresTarget>) -> Option<u64> {
        Some(target.shards().map(|s| s.stats().missing_rows).sum())
    }

    async fn assert_layout(&self, env: &Env, case: &Case) {
        let key = format!("t.{}", case.key);
        assert_layout(env, &self.dbs, case.table, &key, "probe_bigint").await;
    }
}

#[tokio::test]
async fn a_crash_between_two_shards_commits_converges_whichever_committed() {
    Box::pin(crash_between_commits::<PgShards>(&IN_IDENTITY)).await;
}

#[tokio::test]
async fn a_crash_between_two_shards_commits_converges_with_the_key_outside_the_identity() {
    Box::pin(crash_between_commits::<PgShards>(&OUTSIDE_IDENTITY)).await;
}

/// Moves five rows each way between two shards in one source transaction; one shard crashes
/// before its commit once the other committed (each shard in turn); a restart replays the
/// transaction and the shards converge on the source's layout and values.
pub(crate) async fn crash_between_commits<S: CrashShards>(case: &Case) {
    let layout = (case.layout)();
    let schema = (case.schema)();
    for crashed in [0usize, 1] {
        let env = setup("shard_crash", &schema, false).await;
        let shards = S::create(&env, case, &schema).await;
        env.src.batch_execute(&case.fill.replace("{TOASTED}", TOASTED)).await.unwrap();
        let first = env.fetch(1, false, &[], None).await;
        apply_all(shards.sharded(&layout).await, &first, cfg()).await.unwrap();
        // One transaction moving rows both ways, their TOASTed values not sent.
        let mut ids = movers(&env.src, 0).await;
        ids.extend(movers(&env.src, 1).await);
        assert_eq!(ids.len(), 10);
        env.src.execute(case.mv, &[&ids]).await.unwrap();
        let moves = env.fetch(1, false, &[], None).await;
        let unsent = moves
            .iter()
            .filter(|m| {
                matches!(m, LogicalMessage::Update(u)
                if u.new.values().filter(|v| *v == ColumnValue::UnchangedToast).count() == 2)
            })
            .count();
        assert_eq!(unsent, 10, "each move leaves its TOASTed text and bytea unsent");
        let end = last_end(&moves);
        let mut targets = Vec::new();
        for i in 0..2 {
            let crash_after = (i == crashed).then(|| (shards.progress(1 - i), end));
            targets.push(Crashing { inner: shards.target(i).await, crash_after });
        }
        let e = apply_all(ShardedTarget::new(targets, layout.clone()), &moves, cfg())
            .await
            .expect_err("one shard crashed");
        assert!(matches!(e, ApplyError::Unsupported(_)), "{e}");
        // The crashed shard's transaction is gone with its session.
        assert_eq!(
            shards.kept(1 - crashed).await,
            5,
            "the committed shard keeps the rows it handed over"
        );
        let before = Some(last_end(&first));
        assert_eq!(shards.progress(crashed)().await, before, "the crashed shard's progress");
        // The restart replays the transaction; each shard skips what it holds.
        let again = apply_all(shards.sharded(&layout).await, &moves, cfg()).await.unwrap();
        assert_eq!(again.target().moved_rows(), 10);
        if let Some(missing) = S::missing(again.target()) {
            assert_eq!(missing, 0, "every moved row was found");
        }
        shards.assert_layout(&env, case).await;
        for i in 0..2 {
            assert_eq!(shards.progress(i)().await, Some(end), "progress of shard {i}");
        }
    }
}
