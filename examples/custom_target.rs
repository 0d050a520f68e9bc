//! A target of your own: implement `applier::Target` and let an `Applier` feed it from a
//! replication stream. This one counts rows per table and operation and prints the counts.
//!
//! ```sh
//! psql "postgres://postgres@localhost/store" -c "CREATE PUBLICATION my_pub FOR ALL TABLES"
//! cargo run --example custom_target -- "postgres://postgres@localhost/store" my_pub --limit 100
//! ```
//!
//! It reads through a temporary slot, so it counts changes committed after it started, and stops
//! after the transaction that brings it to `--limit` changes (or on Ctrl-C without a limit).
//!
//! The `Applier` does the bookkeeping every target needs: it matches changes to their relation,
//! replays streamed and two-phase transactions at their commit, groups transactions and asks the
//! target to flush. A target that stores its progress durably (as `PostgresTarget` does, in the
//! same transaction as the rows) returns it from `load_progress` and gets exactly-once replay;
//! this one keeps nothing, so it returns `None`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use applier::{Applier, ApplierConfig, ApplyError, Change, CommitInfo, Target, TxnInfo, TypeMap};
use pgconn::ConnConfig;
use pgoutput_decoder::{Lsn, Relation};
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication};

/// Counts changes per (`schema.table`, operation).
#[derive(Debug, Default)]
pub struct CountingTarget {
    /// Counts of committed transactions.
    committed: BTreeMap<(String, &'static str), u64>,
    /// Counts of the transaction in progress, merged at its commit.
    current: BTreeMap<(String, &'static str), u64>,
    /// End LSN of the last committed transaction.
    last_commit: Option<Lsn>,
}

impl CountingTarget {
    /// Committed changes per (`schema.table`, `insert`/`update`/`delete`/`truncate`).
    pub fn counts(&self) -> &BTreeMap<(String, &'static str), u64> {
        &self.committed
    }

    /// All committed changes.
    pub fn total(&self) -> u64 {
        self.committed.values().sum()
    }
}

fn qualified(rel: &Relation) -> String {
    format!("{}.{}", rel.namespace, rel.name)
}

impl Target for CountingTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        // Nothing is stored: start wherever the slot stands.
        Ok(None)
    }

    async fn begin(&mut self, _txn: &TxnInfo) -> Result<(), ApplyError> {
        self.current.clear();
        Ok(())
    }

    async fn relation(&mut self, _rel: &Arc<Relation>, _types: &TypeMap) -> Result<(), ApplyError> {
        Ok(())
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        let keys = match &change {
            Change::Insert { rel, .. } => vec![(qualified(rel), "insert")],
            Change::Update { rel, .. } => vec![(qualified(rel), "update")],
            Change::Delete { rel, .. } => vec![(qualified(rel), "delete")],
            Change::Truncate { rels, .. } => {
                rels.iter().map(|rel| (qualified(rel), "truncate")).collect()
            }
            Change::Message(_) => Vec::new(),
        };
        for key in keys {
            *self.current.entry(key).or_default() += 1;
        }
        Ok(())
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        for (key, n) in std::mem::take(&mut self.current) {
            *self.committed.entry(key).or_default() += n;
        }
        self.last_commit = Some(commit.end_lsn);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        // Counting in memory is "durable" at once; a real target would write or fsync here.
        Ok(self.last_commit)
    }
}

/// Feeds the changes of `publication` into a [`CountingTarget`] until it has counted at least
/// `limit` changes (at a transaction boundary), and returns the target.
///
/// # Errors
/// Connection, replication and apply errors.
pub async fn run(
    source: &str,
    publication: &str,
    slot: &str,
    limit: u64,
) -> anyhow::Result<CountingTarget> {
    let config = ConnConfig::parse(source).context("connection string")?;
    let mut client = ReplicationClient::connect(&config).await?;
    let slot_options = CreateSlotOptions {
        temporary: true,
        snapshot: SnapshotAction::Nothing,
        ..Default::default()
    };
    client.create_slot(slot, slot_options).await?;
    let mut stream = client.start_replication(StartReplication::new(slot, [publication])).await?;
    let mut applier = Applier::new(CountingTarget::default(), ApplierConfig::default()).await?;

    loop {
        if applier.target().total() >= limit && applier.is_between_transactions() {
            if let Some(lsn) = applier.flush().await? {
                stream.confirm(lsn);
            }
            stream.shutdown().await?;
            return Ok(applier.into_target());
        }
        // `handle` and `idle` return the LSN that became durable in the target: confirm it, so
        // the primary may recycle the WAL before it.
        match tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
            Ok(Some(event)) => {
                if let Some(lsn) = applier.handle(event?.message).await? {
                    stream.confirm(lsn);
                }
            }
            Ok(None) => bail!("the server ended the replication stream"),
            // A quiet stream: let the applier flush what it grouped.
            Err(_) => {
                if let Some(lsn) = applier.idle().await? {
                    stream.confirm(lsn);
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, publication, limit) = match args.as_slice() {
        [source, publication] => (source, publication, u64::MAX),
        [source, publication, flag, n] if flag == "--limit" => (source, publication, n.parse()?),
        _ => bail!("usage: custom_target <connection string> <publication> [--limit N]"),
    };
    let slot = format!("custom_target_example_{}", std::process::id());
    let target = tokio::select! {
        target = run(source, publication, &slot, limit) => target?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted");
            return Ok(());
        }
    };
    println!("{:<40} {:<8} {:>10}", "table", "change", "rows");
    for ((table, op), n) in target.counts() {
        println!("{table:<40} {op:<8} {n:>10}");
    }
    println!("{:<40} {:<8} {:>10}", "total", "", target.total());
    Ok(())
}
