//! Change data capture in a few dozen lines: print every change of a publication, using the
//! `replication` crate's connection and the `pgoutput-decoder` messages it yields.
//!
//! ```sh
//! psql "postgres://postgres@localhost/store" -c "CREATE PUBLICATION my_pub FOR TABLE customers"
//! cargo run --example cdc -- "postgres://postgres@localhost/store" my_pub
//! cargo run --example cdc -- "postgres://postgres@localhost/store" my_pub --limit 10
//! ```
//!
//! The connection string may also come from `PGMIRROR_SOURCE` (then the publication is the only
//! argument), and `PG*` variables fill in what it leaves out. The example reads through a
//! *temporary* slot that the server drops when the example exits, so it only sees changes
//! committed after it started. With `--limit N` it stops after the transaction that brings it
//! to N changes.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, bail};
use pgconn::ConnConfig;
use pgoutput_decoder::{Column, LogicalMessage, OldTuple, Relation, Tuple};
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction, StartReplication};

/// What to read and when to stop.
#[derive(Debug, Clone)]
pub struct CdcOptions {
    /// The primary's connection string.
    pub source: String,
    /// The publication to print.
    pub publication: String,
    /// The temporary slot's name.
    pub slot: String,
    /// Stop after the transaction that brings the number of changes to this many.
    pub limit: Option<u64>,
}

/// Prints every change of `opts.publication` to `out`, one line each, between `BEGIN` and
/// `COMMIT` lines; returns how many changes it printed.
///
/// # Errors
/// Connection, replication and output errors.
pub async fn run(opts: &CdcOptions, out: &mut impl Write) -> anyhow::Result<u64> {
    let config = ConnConfig::parse(&opts.source).context("connection string")?;
    let mut client = ReplicationClient::connect(&config).await?;
    // Temporary: the server drops the slot when this connection ends, so nothing is left behind.
    let slot_options = CreateSlotOptions {
        temporary: true,
        snapshot: SnapshotAction::Nothing,
        ..Default::default()
    };
    client.create_slot(&opts.slot, slot_options).await?;
    let mut stream =
        client.start_replication(StartReplication::new(&opts.slot, [&opts.publication])).await?;

    // Changes name their table by OID; the server describes each table before its first change.
    let mut relations: HashMap<u32, Relation> = HashMap::new();
    let mut changes = 0u64;
    while let Some(event) = stream.next().await {
        let line = match event?.message {
            LogicalMessage::Relation(rel) => {
                relations.insert(rel.rel_id, rel);
                continue;
            }
            LogicalMessage::Begin(begin) => format!("BEGIN xid={}", begin.xid),
            LogicalMessage::Insert(i) => {
                changes += 1;
                format!("INSERT {}", row(relation(&relations, i.rel_id)?, &i.new, false))
            }
            LogicalMessage::Update(u) => {
                changes += 1;
                let rel = relation(&relations, u.rel_id)?;
                match &u.old {
                    // The key changed (or REPLICA IDENTITY FULL): show the old row too.
                    Some(old) => {
                        format!("UPDATE {} FROM {}", row(rel, &u.new, false), old_row(rel, old))
                    }
                    None => format!("UPDATE {}", row(rel, &u.new, false)),
                }
            }
            LogicalMessage::Delete(d) => {
                changes += 1;
                format!("DELETE {}", old_row(relation(&relations, d.rel_id)?, &d.old))
            }
            LogicalMessage::Truncate(t) => {
                changes += 1;
                let names: Vec<String> = t
                    .rel_ids
                    .iter()
                    .map(|id| relation(&relations, *id).map(qualified))
                    .collect::<anyhow::Result<_>>()?;
                format!("TRUNCATE {}", names.join(", "))
            }
            LogicalMessage::Commit(commit) => {
                writeln!(out, "COMMIT end_lsn={}", commit.end_lsn)?;
                out.flush()?;
                // Nothing to make durable here: the line is printed, so the slot may move on.
                stream.confirm(commit.end_lsn);
                if opts.limit.is_some_and(|limit| changes >= limit) {
                    stream.shutdown().await?;
                    return Ok(changes);
                }
                continue;
            }
            _ => continue,
        };
        writeln!(out, "{line}")?;
    }
    bail!("the server ended the replication stream")
}

fn relation(relations: &HashMap<u32, Relation>, id: u32) -> anyhow::Result<&Relation> {
    relations.get(&id).with_context(|| format!("change for undescribed relation {id}"))
}

fn qualified(rel: &Relation) -> String {
    format!("{}.{}", rel.namespace, rel.name)
}

/// `schema.table col=value ...`; with `keys_only`, just the replica identity columns.
fn row(rel: &Relation, tuple: &Tuple, keys_only: bool) -> String {
    let mut s = qualified(rel);
    for (col, value) in rel.columns.iter().zip(tuple) {
        if keys_only && !col.is_key {
            continue;
        }
        let value = match value {
            Column::Null => "null".to_owned(),
            Column::UnchangedToast => "(unchanged)".to_owned(),
            Column::Text(_) => format!("{:?}", value.as_str().unwrap_or("(not UTF-8)")),
            Column::Binary(b) => format!("(binary, {} bytes)", b.len()),
        };
        s.push_str(&format!(" {}={value}", col.name));
    }
    s
}

fn old_row(rel: &Relation, old: &OldTuple) -> String {
    match old {
        // Only the key columns are sent; the others arrive as NULL and mean nothing.
        OldTuple::Key(t) => row(rel, t, true),
        OldTuple::Full(t) => row(rel, t, false),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut limit = None;
    let mut slot = format!("cdc_example_{}", std::process::id());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--limit" => limit = Some(args.next().context("--limit N")?.parse()?),
            "--slot" => slot = args.next().context("--slot NAME")?,
            _ => positional.push(arg),
        }
    }
    let env_source = std::env::var("PGMIRROR_SOURCE").ok();
    let (source, publication) = match (positional.as_slice(), env_source) {
        ([source, publication], _) => (source.clone(), publication.clone()),
        ([publication], Some(source)) => (source, publication.clone()),
        _ => bail!("usage: cdc <connection string> <publication> [--limit N] [--slot NAME]"),
    };
    let opts = CdcOptions { source, publication, slot, limit };
    let n = run(&opts, &mut std::io::stdout()).await?;
    eprintln!("{n} changes");
    Ok(())
}
