//! `pgmirror mirror --target nats://...`: a publication's changes into a NATS JetStream
//! stream, exactly once (see [`applier::nats`] for the messages).
//!
//! The mirror keeps two keys in the bucket (`pgmirror`): `<name>` holds the last end LSN the
//! stream acknowledged, `<name>.mirror` what the set-up created (slot, publication, stream)
//! and whether the initial copy finished. A start without that record sets up: publication
//! (for `--tables`), slot with an exported snapshot, then every existing row published as a
//! read under that snapshot, then the slot's consistent point stored as the progress. A
//! crash during the copy leaves the record unfinished: the next start drops the slot and copies
//! again (the rows of the interrupted copy stay in the stream; consumers see them twice, as
//! reads). Streaming starts at the stored progress, so there is no gap and no overlap.

pub mod ops;

use std::sync::Arc;

use anyhow::{Context, bail};
use applier::nats::{NatsTargetConfig, PayloadFormat, subject};
use applier::{Applier, ApplierConfig, NatsError, NatsTarget};
use async_nats::jetstream;
use bytes::Bytes;
use pgconn::ConnConfig;
use pgoutput_decoder::{Column, Lsn, Relation, RelationColumn, Tuple};
use replication::{CreateSlotOptions, ReplicationClient, SnapshotAction};
use serde::{Deserialize, Serialize};
use tablesync::TableDef;
use tokio_postgres::SimpleQueryMessage;

use crate::metrics::Metrics;
use crate::pump::pump;
use crate::retry::{Backoff, is_transient};
use crate::selection::TableSelection;
use crate::shutdown::Shutdown;
use crate::target_url::NatsUrl;

/// The bucket holding every mirror's progress and record.
pub const BUCKET: &str = "pgmirror";

/// Rows fetched from the source per round trip of the initial copy.
const COPY_FETCH: usize = 2000;

/// Everything a NATS mirror needs to run.
#[derive(Debug, Clone)]
pub struct NatsMirrorOptions {
    /// The mirror's name: its keys in the bucket, its message ids, the default slot and
    /// publication names (`pgmirror_<name>`).
    pub name: String,
    /// The primary.
    pub source: ConnConfig,
    /// The NATS server or cluster.
    pub target: NatsUrl,
    /// The tables, as a publication or a list.
    pub tables: TableSelection,
    /// Slot name (default `pgmirror_<name>`).
    pub slot: Option<String>,
    /// Publish the existing rows before streaming.
    pub initial_copy: bool,
    /// The stream.
    pub stream: String,
    /// The subject prefix.
    pub prefix: String,
    /// The payload format.
    pub format: PayloadFormat,
    /// Replicas of the stream and bucket when created.
    pub replicas: usize,
    /// Begin and commit marker messages.
    pub transaction_markers: bool,
    /// Binary column values from the primary.
    pub binary: bool,
    /// Retry when a server cannot be reached at the very first contact; otherwise that fails
    /// at once.
    pub retry_first_connect: bool,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
    /// Where the mirror reports what it does.
    pub metrics: Arc<Metrics>,
}

impl NatsMirrorOptions {
    /// Options with the defaults: stream `PGMIRROR`, prefix `pgmirror`, JSON, one replica.
    pub fn new(
        name: impl Into<String>,
        source: ConnConfig,
        target: NatsUrl,
        tables: TableSelection,
    ) -> Self {
        NatsMirrorOptions {
            name: name.into(),
            source,
            target,
            tables,
            slot: None,
            initial_copy: true,
            stream: "PGMIRROR".into(),
            prefix: "pgmirror".into(),
            format: PayloadFormat::Json,
            replicas: 1,
            transaction_markers: false,
            binary: true,
            retry_first_connect: false,
            applier: ApplierConfig::default(),
            metrics: Metrics::new(),
        }
    }

    fn slot_name(&self) -> String {
        self.slot.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }

    fn publication_name(&self) -> String {
        self.tables.publication.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }
}

/// What a NATS mirror's set-up created, kept in the bucket under `<name>.mirror`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatsRecord {
    /// The slot.
    pub slot: String,
    /// pgmirror created the slot (not given an existing one with `--no-initial-copy`).
    #[serde(default = "yes")]
    pub created_slot: bool,
    /// The publication.
    pub publication: String,
    /// pgmirror created the publication (from `--tables`).
    pub created_publication: bool,
    /// The stream.
    pub stream: String,
    /// pgmirror created the stream.
    pub created_stream: bool,
    /// The subject prefix.
    pub prefix: String,
    /// The initial copy finished (or was skipped): stream from the stored progress.
    pub copied: bool,
    /// The source's system identifier.
    pub source_system_id: String,
}

fn yes() -> bool {
    true
}

/// The key of a mirror's record.
pub fn record_key(name: &str) -> String {
    format!("{}.mirror", subject::kv_key(name))
}

/// Reads a mirror's record (`None`: no bucket or no record).
///
/// # Errors
/// Server errors, or a record pgmirror cannot read.
pub async fn load_record(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<Option<NatsRecord>> {
    let kv = match js.get_key_value(BUCKET).await {
        Ok(kv) => kv,
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => return Ok(None),
        Err(e) => return Err(e).context("opening the NATS bucket pgmirror"),
    };
    let Some(v) = kv.get(record_key(name)).await.context("reading the mirror's record")? else {
        return Ok(None);
    };
    serde_json::from_slice(&v).map(Some).context("the mirror's record in the NATS bucket")
}

async fn save_record(js: &jetstream::Context, name: &str, rec: &NatsRecord) -> anyhow::Result<()> {
    let kv = js.get_key_value(BUCKET).await.context("opening the NATS bucket pgmirror")?;
    let body = serde_json::to_vec(rec).context("encoding the mirror's record")?;
    kv.put(record_key(name), Bytes::from(body)).await.context("storing the mirror's record")?;
    Ok(())
}

/// Runs a NATS mirror until `shutdown` or a fault that retrying cannot fix (a full stream, a
/// stream that does not take the prefix, a lost slot). Lost connections to either side are
/// retried with backoff; each new session resumes from the stored progress.
///
/// # Errors
/// Set-up errors and faults that repeat.
pub async fn run(opts: &NatsMirrorOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    let mut connected = false;
    loop {
        let attempt = async {
            let client = opts.target.connect(&format!("pgmirror {}", opts.name)).await?;
            let sql =
                pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
            connected = true;
            // Held by `sql`, which the target keeps for its catalog lookups until it ends.
            lock_on_source(&sql, &opts.slot_name(), &opts.name).await?;
            let database: String = sql
                .query_one("SELECT current_database()", &[])
                .await
                .context("reading the source database's name")?
                .get(0);
            let mut cfg = NatsTargetConfig::new(opts.name.clone(), database);
            cfg.stream = opts.stream.clone();
            cfg.prefix = opts.prefix.clone();
            cfg.format = opts.format;
            cfg.replicas = opts.replicas;
            cfg.transaction_markers = opts.transaction_markers;
            cfg.bucket = BUCKET.into();
            let js = jetstream::new(client.clone());
            let target = NatsTarget::connect(client, cfg).await?.with_catalog(sql);
            let (record, target) = prepare(opts, &js, target, shutdown).await?;
            Box::pin(stream(opts, &record, target, shutdown)).await
        };
        let result = Box::pin(attempt).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_triggered() => {
                tracing::info!(error = %format!("{e:#}"), "stopped");
                return Ok(());
            }
            Err(e) if (connected || opts.retry_first_connect) && retryable(&e) => {
                if !super::back_off(&opts.metrics, &mut backoff, shutdown, connected, &e).await {
                    return Ok(());
                }
            }
            Err(e) => {
                opts.metrics.error();
                return Err(e);
            }
        }
    }
}

/// Takes the mirror's lock: a session advisory lock on the source named after its slot, held
/// by `client`'s session. NATS has no lock that ends with its holder's connection, and the
/// progress bucket may live on any of several servers; the source is the one place every
/// pgmirror running this mirror meets. A killed holder's session ends at once, so the wait
/// only bridges the moment its backend takes to notice. An advisory lock changes no data.
async fn lock_on_source(
    client: &tokio_postgres::Client,
    slot: &str,
    name: &str,
) -> anyhow::Result<()> {
    let key = format!("pgmirror slot:{slot}");
    let held_by = format!("mirror {name:?} (slot {slot:?}) from this source");
    let locked = super::advisory_lock(client, &key, &held_by)
        .await
        .context("taking the mirror's lock on the source")?;
    if !locked {
        bail!(
            "another pgmirror is already running mirror {name:?} (slot {slot:?}) from this \
             source; stop it first (or give this one another --name)"
        );
    }
    Ok(())
}

/// A NATS request that failed (a server down, a leader election, a timeout) or a PostgreSQL
/// connection lost; not a full stream, a bad setting or a lost slot.
fn retryable(e: &anyhow::Error) -> bool {
    for c in e.chain() {
        let nats = c.downcast_ref::<NatsError>().or_else(|| {
            match c.downcast_ref::<applier::ApplyError>() {
                Some(applier::ApplyError::Nats(n)) => Some(n),
                _ => None,
            }
        });
        if let Some(n) = nats {
            return n.is_transient();
        }
        if let Some(crate::pump::PumpError::Apply(applier::ApplyError::Nats(n))) =
            c.downcast_ref::<crate::pump::PumpError>()
        {
            return n.is_transient();
        }
        if let Some(e) = c.downcast_ref::<crate::target_url::NatsConnectError>() {
            return e.is_transient();
        }
    }
    is_transient(e.as_ref())
}

/// Sets the mirror up if its record says it is not (see the module docs).
async fn prepare(
    opts: &NatsMirrorOptions,
    js: &jetstream::Context,
    mut target: NatsTarget,
    shutdown: &Shutdown,
) -> anyhow::Result<(NatsRecord, NatsTarget)> {
    let existing = load_record(js, &opts.name).await?;
    if let Some(rec) = &existing
        && rec.copied
    {
        return Ok((rec.clone(), target));
    }
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    let slot = opts.slot_name();
    let publication = opts.publication_name();
    let tables = crate::selection::resolve_tables(&source, &opts.tables).await?;
    super::prepare::check_replica_identity(&tables)?;
    let mut repl = ReplicationClient::connect(&opts.source)
        .await
        .context("replication connection to the source")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let interrupted = existing.as_ref().filter(|r| r.created_slot).map(|r| r.slot.as_str());
    let slot_exists = super::prepare::clear_interrupted_copy(
        &mut repl,
        interrupted,
        &slot,
        opts.initial_copy,
        "NATS has",
    )
    .await?;
    if !slot_exists {
        crate::preflight::ensure_source_ready(&source, &slot).await?;
    }
    let created_publication = match &existing {
        Some(rec) => rec.created_publication,
        None if opts.tables.publication.is_none() => {
            let status =
                crate::selection::create_publication(&source, &publication, &tables).await?;
            status == tablesync::PublicationStatus::Created
        }
        None => false,
    };
    let mut record = NatsRecord {
        slot: slot.clone(),
        created_slot: !slot_exists,
        publication,
        created_publication,
        stream: opts.stream.clone(),
        created_stream: target.created_stream()
            || existing.as_ref().is_some_and(|r| r.created_stream),
        prefix: opts.prefix.clone(),
        copied: false,
        source_system_id: system.system_id.to_string(),
    };
    // Record first, then create: a crash between the two leaves a record whose slot may not
    // exist, which the next start handles; the opposite order could orphan a slot.
    save_record(js, &opts.name, &record).await?;
    if !opts.initial_copy {
        if !slot_exists {
            let o = CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..Default::default() };
            repl.create_slot(&slot, o).await.context("creating the slot")?;
        }
        record.copied = true;
        save_record(js, &opts.name, &record).await?;
        tracing::info!(slot = %slot, "slot ready; streaming without an initial copy");
        return Ok((record, target));
    }
    let (created, snapshot) = super::prepare::create_exporting_slot(&mut repl, &slot).await?;
    let mut stop = shutdown.clone();
    let rows = tokio::select! {
        r = copy_tables(&opts.source, &tables, &snapshot, created.consistent_point, &mut target) => r?,
        () = stop.wait() => bail!("stopped during the initial copy"),
    };
    target.finish_snapshot(created.consistent_point).await?;
    repl.close().await;
    record.copied = true;
    save_record(js, &opts.name, &record).await?;
    tracing::info!(rows, "initial copy published");
    Ok((record, target))
}

/// Publishes every row of `tables` as read under `snapshot`; returns how many.
async fn copy_tables(
    source: &ConnConfig,
    tables: &[TableDef],
    snapshot: &str,
    point: Lsn,
    target: &mut NatsTarget,
) -> anyhow::Result<u64> {
    let client = pgconn::connect_sql(source).await.context("connecting to the source")?;
    // The settings the replication connection prints values with, so a copied row reads
    // exactly as the same row streamed.
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; \
             SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; \
             SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3",
            pgconn::quote_literal(snapshot)
        ))
        .await
        .context("opening the slot's snapshot on the source")?;
    let mut total = 0;
    for t in tables {
        let cols: Vec<_> = t.copy_columns().collect();
        let rel = Arc::new(Relation {
            xid: None,
            rel_id: t.oid,
            namespace: t.schema.clone(),
            name: t.name.clone(),
            replica_identity: t.replica_identity,
            columns: cols
                .iter()
                .map(|c| RelationColumn {
                    is_key: t.key_columns().contains(&c.name),
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    type_modifier: -1,
                })
                .collect(),
        });
        let filter = t.row_filter.as_ref().map(|f| format!(" WHERE {f}")).unwrap_or_default();
        client
            .batch_execute(&format!(
                "DECLARE pgmirror_copy NO SCROLL CURSOR FOR SELECT {} FROM {}{filter}",
                t.copy_column_list(),
                t.quoted()
            ))
            .await
            .with_context(|| format!("reading {}", t.quoted()))?;
        let mut n = 0;
        loop {
            let batch = client
                .simple_query(&format!("FETCH {COPY_FETCH} FROM pgmirror_copy"))
                .await
                .with_context(|| format!("reading {}", t.quoted()))?;
            let mut got = 0;
            for m in batch {
                let SimpleQueryMessage::Row(r) = m else { continue };
                got += 1;
                let row = Tuple::from_columns(
                    (0..r.len())
                        .map(|i| r.get(i).map_or(Column::Null, |s| Column::Text(s.as_bytes()))),
                );
                target.publish_snapshot_row(&rel, row, point, n).await?;
                n += 1;
            }
            if got == 0 {
                break;
            }
        }
        client.batch_execute("CLOSE pgmirror_copy").await?;
        tracing::info!(table = %t.quoted(), rows = n, "published the table's rows");
        total += n;
    }
    client.batch_execute("COMMIT").await?;
    Ok(total)
}

/// One streaming session from the stored progress.
async fn stream(
    opts: &NatsMirrorOptions,
    record: &NatsRecord,
    target: NatsTarget,
    shutdown: &mut Shutdown,
) -> anyhow::Result<()> {
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let progress = applier.start_progress().unwrap_or(Lsn::ZERO);
    let source = super::SessionSource {
        config: &opts.source,
        system_id: Some(&record.source_system_id),
        slot: &record.slot,
        publication: &record.publication,
        binary: opts.binary,
        messages: true,
    };
    let (stream, system) = source.start(progress).await?;
    tracing::info!(slot = %record.slot, from = %progress, stream = %record.stream, "streaming into NATS");
    pump(&mut applier, stream, shutdown, &opts.metrics, system.xlogpos).await?;
    let stats = applier.stats();
    tracing::info!(applied_txns = stats.applied_txns, changes = stats.changes, "stopped cleanly");
    Ok(())
}
