//! The benchmark workloads: the tables they need, the rows that exist before the slots are
//! created, and the backlog they generate afterwards.
//!
//! Backlogs are generated fast and without waiting on the primary's WAL flush
//! (`synchronous_commit = off` in the generating sessions only): many small transactions come
//! from a server-side `DO` loop that commits per iteration, or from parallel clients.

use std::fmt;
use std::str::FromStr;

use pgcluster::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::error::Error;

/// The table whose row, committed last, marks the end of a backlog.
pub const SENTINEL_TABLE: &str = "pgmirror_bench_sentinel";

/// DDL of the sentinel table (same on both sides).
pub const SENTINEL_DDL: &str = "CREATE TABLE pgmirror_bench_sentinel (\
    id integer PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Workload {
    /// Store OLTP mix: an order, its lines, a stock and a status update per transaction.
    Oltp,
    /// The Store mix in four statements per transaction, always the same shape: one order,
    /// three order lines, one product stock update and the order's status update.
    Store4,
    /// pgbench TPC-B.
    Tpcb,
    /// Single-row insert transactions.
    Tiny,
    /// One transaction inserting many rows.
    Bulk,
    /// One transaction updating every row of a table.
    Update,
    /// Deletes of 100 rows per transaction, removing most of a table.
    Delete,
    /// Updates, deletes and inserts on a table with REPLICA IDENTITY FULL and no key.
    FullIdentity,
    /// The initial copy of three Store tables.
    Initial,
    /// Every workload above.
    All,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const EACH: [Workload; 9] = [
        Workload::Oltp,
        Workload::Store4,
        Workload::Tpcb,
        Workload::Tiny,
        Workload::Bulk,
        Workload::Update,
        Workload::Delete,
        Workload::FullIdentity,
        Workload::Initial,
    ];

    /// The workload's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Oltp => "oltp",
            Workload::Store4 => "store4",
            Workload::Tpcb => "tpcb",
            Workload::Tiny => "tiny",
            Workload::Bulk => "bulk",
            Workload::Update => "update",
            Workload::Delete => "delete",
            Workload::FullIdentity => "full-identity",
            Workload::Initial => "initial",
            Workload::All => "all",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A size multiplier, kept as millionths so sizes stay integers (`1`, `0.05`, `2.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    ppm: u64,
}

impl Scale {
    /// Scale 1: the sizes of the issue (100k transactions, 1M rows).
    pub const ONE: Scale = Scale { ppm: 1_000_000 };

    /// `base` scaled, at least `min`.
    pub fn of(self, base: u64, min: u64) -> u64 {
        (base.saturating_mul(self.ppm) / 1_000_000).max(min)
    }

    /// The multiplier as a float, for reports.
    pub fn as_f64(self) -> f64 {
        // ppm of any sensible scale is far below 2^52: exact.
        #[allow(clippy::cast_precision_loss)]
        let p = self.ppm as f64;
        p / 1e6
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("invalid scale {s:?}: expected a positive number like 1, 0.05 or 2.5");
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 6 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
        let frac_ppm: u64 =
            if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| err())? };
        let ppm =
            int.checked_mul(1_000_000).and_then(|p| p.checked_add(frac_ppm)).ok_or_else(err)?;
        if ppm == 0 {
            return Err(err());
        }
        Ok(Scale { ppm })
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = format!("{:06}", self.ppm % 1_000_000);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            write!(f, "{}", self.ppm / 1_000_000)
        } else {
            write!(f, "{}.{frac}", self.ppm / 1_000_000)
        }
    }
}

/// Sizes of one workload at a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Rows that exist before the slots are created.
    pub base_rows: u64,
    /// Transactions (or rows, for single-transaction workloads) of the backlog.
    pub work: u64,
}

impl Workload {
    /// The sizes at `scale`.
    pub fn sizes(self, scale: Scale) -> Sizes {
        let (base_rows, work) = match self {
            Workload::Oltp | Workload::Store4 => (scale.of(10_000, 100), scale.of(100_000, 50)),
            // base_rows: pgbench's scale factor; work: transactions.
            Workload::Tpcb => (scale.of(10, 1), scale.of(100_000, 50)),
            Workload::Tiny => (0, scale.of(100_000, 50)),
            Workload::Bulk => (0, scale.of(1_000_000, 1_000)),
            Workload::Update => (scale.of(1_000_000, 1_000), 1),
            Workload::Delete => (scale.of(1_000_000, 1_000), 0),
            Workload::FullIdentity => (scale.of(10_000, 200), scale.of(2_000, 20)),
            Workload::Initial | Workload::All => (scale.of(1_000_000, 1_000), 0),
        };
        Sizes { base_rows, work }
    }

    /// DDL of the workload's tables, run on the primary and on every target (the Store and
    /// pgbench tables come from their own tools; the target gets the Store schema or the
    /// primary's DDL for pgbench).
    fn ddl(self) -> &'static str {
        match self {
            Workload::Tiny => {
                "CREATE TABLE tiny (id bigint PRIMARY KEY, v integer NOT NULL, note text)"
            }
            Workload::Bulk => {
                "CREATE TABLE bulk (id bigint PRIMARY KEY, a integer NOT NULL, b text, \
                 c timestamptz, d numeric(12,2))"
            }
            Workload::Update => {
                "CREATE TABLE upd (id bigint PRIMARY KEY, a integer NOT NULL, b text, \
                 c timestamptz, d numeric(12,2))"
            }
            Workload::Delete => {
                "CREATE TABLE del (id bigint PRIMARY KEY, a integer NOT NULL, b text, \
                 c timestamptz)"
            }
            Workload::FullIdentity => {
                "CREATE TABLE fullid (a integer NOT NULL, b text, c timestamptz); \
                 ALTER TABLE fullid REPLICA IDENTITY FULL"
            }
            Workload::Oltp
            | Workload::Store4
            | Workload::Tpcb
            | Workload::Initial
            | Workload::All => "",
        }
    }

    /// DDL for a target database, or `None` to derive it from the primary's catalog.
    pub fn target_ddl(self) -> Option<String> {
        match self {
            Workload::Oltp | Workload::Store4 | Workload::Initial => {
                Some(store::SCHEMA_SQL.to_owned())
            }
            Workload::Tpcb => None,
            _ => Some(self.ddl().to_owned()),
        }
    }

    /// Creates the tables on the primary and the rows that exist before the slots.
    ///
    /// # Errors
    /// A failed statement or pgbench run.
    pub async fn prepare(self, primary: &Cluster, db: &str, scale: Scale) -> Result<(), Error> {
        let client = primary.connect(db).await?;
        let n = self.sizes(scale).base_rows;
        match self {
            Workload::Oltp | Workload::Store4 => {
                store::create_schema(&client).await?;
                let n = u32::try_from(n).map_err(|_| too_large())?;
                store::populate(&client, &store::Scale::bench(n)).await?;
            }
            Workload::Initial | Workload::All => {
                store::create_schema(&client).await?;
                let n = u32::try_from(n).map_err(|_| too_large())?;
                let s =
                    store::Scale { customers: n, products: 1_000, orders: n, items_per_order: 1 };
                store::populate(&client, &s).await?;
            }
            Workload::Tpcb => {
                pgbench(primary, db, &["-i", "-q", "-s", &n.to_string()]).await?;
                // History rows have no key; the native subscriber and pgmirror both need an
                // identity to accept the table (only inserts reach it).
                client.batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL").await?;
            }
            Workload::Tiny | Workload::Bulk => client.batch_execute(self.ddl()).await?,
            Workload::Update => {
                client.batch_execute(self.ddl()).await?;
                client
                    .execute(
                        "INSERT INTO upd SELECT i, (i % 1000)::int, md5(i::text), \
                         timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', \
                         (i % 100000) / 100.0 FROM generate_series(1, $1::bigint) AS i",
                        &[&i64::try_from(n).map_err(|_| too_large())?],
                    )
                    .await?;
            }
            Workload::Delete => {
                client.batch_execute(self.ddl()).await?;
                client
                    .execute(
                        "INSERT INTO del SELECT i, (i % 1000)::int, md5(i::text), \
                         timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' \
                         FROM generate_series(1, $1::bigint) AS i",
                        &[&i64::try_from(n).map_err(|_| too_large())?],
                    )
                    .await?;
            }
            Workload::FullIdentity => {
                client.batch_execute(self.ddl()).await?;
                client
                    .execute(
                        "INSERT INTO fullid SELECT i, md5(i::text), \
                         timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' \
                         FROM generate_series(1, $1::bigint) AS i",
                        &[&i64::try_from(n).map_err(|_| too_large())?],
                    )
                    .await?;
            }
        }
        client.batch_execute(SENTINEL_DDL).await?;
        client.batch_execute("VACUUM ANALYZE").await?;
        Ok(())
    }

    /// Generates the backlog on the primary (after the slots exist).
    ///
    /// # Errors
    /// A failed statement or pgbench run.
    pub async fn generate(self, primary: &Cluster, db: &str, scale: Scale) -> Result<(), Error> {
        let sizes = self.sizes(scale);
        let client = primary.connect(db).await?;
        client.batch_execute("SET synchronous_commit = off").await?;
        // Sizes are integers formatted into SQL text: no quoting needed, no injection possible.
        match self {
            Workload::Oltp => oltp(primary, db, sizes.work, None).await?,
            Workload::Store4 => oltp(primary, db, sizes.work, Some(STORE4_LINES)).await?,
            Workload::Tpcb => {
                let clients = 4;
                let per_client = sizes.work.div_ceil(clients).to_string();
                pgbench(
                    primary,
                    db,
                    &["-n", "-c", &clients.to_string(), "-j", "2", "-t", &per_client],
                )
                .await?;
            }
            Workload::Tiny => {
                client
                    .batch_execute(&format!(
                        "DO $$ BEGIN FOR i IN 1..{} LOOP \
                         INSERT INTO tiny VALUES (i, i % 1000, 'row ' || i); COMMIT; \
                         END LOOP; END $$",
                        sizes.work
                    ))
                    .await?;
            }
            Workload::Bulk => {
                client
                    .batch_execute(&format!(
                        "INSERT INTO bulk SELECT i, (i % 1000)::int, md5(i::text), \
                         timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', \
                         (i % 100000) / 100.0 FROM generate_series(1, {}) AS i",
                        sizes.work
                    ))
                    .await?;
            }
            Workload::Update => {
                client.batch_execute("UPDATE upd SET a = a + 1, b = upper(b), d = d + 1").await?;
            }
            Workload::Delete => {
                // 90% of the rows, 100 per transaction.
                let batches = sizes.base_rows * 9 / 10 / 100;
                client
                    .batch_execute(&format!(
                        "DO $$ BEGIN FOR k IN 0..{} LOOP \
                         DELETE FROM del WHERE id > k * 100 AND id <= (k + 1) * 100; COMMIT; \
                         END LOOP; END $$",
                        batches.max(1) - 1
                    ))
                    .await?;
            }
            Workload::FullIdentity => {
                // Single-row transactions: update `work` rows, delete half as many, insert
                // half as many; rows are located by value (no key, no index).
                let rows = sizes.base_rows;
                let step = (rows / sizes.work).max(1);
                client
                    .batch_execute(&format!(
                        "DO $$ BEGIN \
                         FOR i IN 1..{work} LOOP \
                           UPDATE fullid SET b = b || '!' WHERE a = i * {step}; COMMIT; \
                         END LOOP; \
                         FOR i IN 1..{half} LOOP \
                           DELETE FROM fullid WHERE a = i * {step} + 1; COMMIT; \
                         END LOOP; \
                         FOR i IN 1..{half} LOOP \
                           INSERT INTO fullid VALUES ({rows} + i, 'new ' || i, now()); COMMIT; \
                         END LOOP; END $$",
                        work = sizes.work,
                        half = (sizes.work / 2).max(1),
                    ))
                    .await?;
            }
            Workload::Initial | Workload::All => {
                return Err(Error::Failed(format!("{self} has no streaming backlog")));
            }
        }
        Ok(())
    }
}

fn too_large() -> Error {
    Error::Failed("scale too large".into())
}

/// Order lines of every `store4` transaction.
const STORE4_LINES: usize = 3;

/// `n` Store OLTP transactions from 8 parallel clients; with `lines`, every order has exactly
/// that many lines (otherwise 2 to 4).
async fn oltp(primary: &Cluster, db: &str, n: u64, lines: Option<usize>) -> Result<(), Error> {
    const CLIENTS: u64 = 8;
    let mut tasks = JoinSet::new();
    for c in 0..CLIENTS {
        let share = n / CLIENTS + u64::from(c < n % CLIENTS);
        let mut client = primary.connect(db).await?;
        client.batch_execute("SET synchronous_commit = off").await?;
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(1_000 + c);
            for _ in 0..share {
                let mut plan = store::OltpPlan::generate(&mut rng);
                if let Some(n) = lines {
                    fixed_lines(&mut plan, n, &mut rng);
                }
                let tx = client.transaction().await?;
                plan.execute(&tx).await?;
                tx.commit().await?;
            }
            Ok::<_, store::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Failed(format!("an OLTP client panicked: {e}")))?
            .map_err(Error::context("OLTP transaction"))?;
    }
    Ok(())
}

/// Makes `plan` order exactly `n` lines: drops the last ones or draws more, as
/// [`store::OltpPlan::generate`] draws them.
fn fixed_lines(plan: &mut store::OltpPlan, n: usize, rng: &mut impl Rng) {
    plan.lines.truncate(n);
    while plan.lines.len() < n {
        let line_no = i32::try_from(plan.lines.len() + 1).unwrap_or(i32::MAX);
        plan.lines.push((line_no, rng.gen_range(0.0..1.0), rng.gen_range(1..=5)));
    }
}

/// Runs pgbench against `db` on the primary.
async fn pgbench(primary: &Cluster, db: &str, args: &[&str]) -> Result<(), Error> {
    let out = tokio::process::Command::new(primary.bindir().join("pgbench"))
        .args(["-h", primary.host(), "-p", &primary.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg(db)
        .env("PGOPTIONS", "-c synchronous_commit=off")
        .output()
        .await
        .map_err(Error::context("running pgbench"))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "pgbench {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Fingerprints of `tables` (row count and ordered md5 each).
///
/// # Errors
/// A missing table or a failed query.
pub async fn fingerprints(client: &Client, tables: &[String]) -> Result<Vec<(i64, String)>, Error> {
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        out.push(
            store::table_fingerprint(client, t)
                .await
                .map_err(Error::context(format!("hashing {t}")))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales() {
        let s: Scale = "0.05".parse().unwrap();
        assert_eq!(s.of(100_000, 1), 5_000);
        assert_eq!(s.of(10, 1), 1);
        assert_eq!(s.to_string(), "0.05");
        assert_eq!("2".parse::<Scale>().unwrap().of(3, 0), 6);
        assert_eq!("2.5".parse::<Scale>().unwrap().to_string(), "2.5");
        assert_eq!(".5".parse::<Scale>().unwrap().as_f64(), 0.5);
        for bad in ["", "0", "-1", "1e3", "0.0000001", "a"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_have_floors() {
        let tiny: Scale = "0.000001".parse().unwrap();
        for w in Workload::EACH {
            let s = w.sizes(tiny);
            assert!(s.base_rows > 0 || s.work > 0, "{w}");
        }
        assert_eq!(Workload::Bulk.sizes(Scale::ONE).work, 1_000_000);
        assert_eq!(Workload::Store4.sizes(Scale::ONE).work, 100_000);
    }

    #[test]
    fn store4_orders_exactly_three_lines() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut shapes = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut plan = store::OltpPlan::generate(&mut rng);
            shapes.insert(plan.lines.len());
            fixed_lines(&mut plan, STORE4_LINES, &mut rng);
            let numbers: Vec<i32> = plan.lines.iter().map(|l| l.0).collect();
            assert_eq!(numbers, [1, 2, 3]);
            assert!(plan.lines.iter().all(|l| (0.0..1.0).contains(&l.1) && (1..=5).contains(&l.2)));
        }
        // The plans drawn had 2, 3 and 4 lines: both the cut and the draw were exercised.
        assert_eq!(shapes.len(), 3, "{shapes:?}");
    }

    #[test]
    fn workload_names_parse() {
        use clap::ValueEnum;
        assert_eq!(Workload::from_str("store4", false), Ok(Workload::Store4));
        assert!(Workload::EACH.contains(&Workload::Store4), "--workload all runs store4");
        for w in Workload::EACH {
            assert_eq!(Workload::from_str(w.name(), false), Ok(w), "{w}");
        }
    }
}
