//! `pgmirror mirror`'s engine: prepare the primary and the target, copy the tables under the
//! slot's snapshot, then stream and apply for ever, retrying through outages.
//!
//! Set-up is recorded in `pgmirror.mirrors` on the target ([`registry`]) before anything is
//! created on the primary that would need cleaning up, so every crash leaves a state that the
//! next start can finish or undo:
//! - no row: nothing was created yet (or a failed set-up was undone);
//! - `copying`: the slot exists but the copy did not finish; the slot's snapshot is gone with the
//!   connection that exported it, so the slot is dropped and the copy redone from scratch;
//! - `streaming`: stream from `pgmirror.progress`.

mod copy;
pub mod lookup;
pub mod mysql;
pub mod nats;
mod options;
mod prepare;
pub mod registry;
pub mod resync;
pub mod shards;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use applier::{Applier, PostgresTarget, PostgresTargetConfig};
use pgoutput_decoder::Lsn;
use replication::{LogicalReplicationStream, ReplicationClient, StartReplication, Streaming};
use tablesync::TableDef;
use tokio_postgres::Client;

use crate::pump::pump;
use crate::retry::{Backoff, is_transient};
use crate::shutdown::Shutdown;
pub use options::MirrorOptions;
use registry::MirrorRecord;

/// Runs a mirror until `shutdown` is triggered or a fault that retrying cannot fix.
///
/// The first contact decides whether the servers are reachable at all: a source or target that
/// cannot be reached (nothing listening, an unknown host, a wrong password, a missing database)
/// fails at once with one line, as `pg_recvlogical` does, unless `retry_first_connect` asks to
/// wait for servers that start after pgmirror. Once both have answered, transient faults
/// (either server down or restarting, a lost connection) are logged and retried with capped
/// exponential backoff, and the mirror resumes from the target's stored progress.
///
/// # Errors
/// Faults that repeat: bad configuration, missing privileges, schema mismatches, a lost slot;
/// a target that is the source's own database; an unreachable server at the first contact.
pub async fn run(opts: &MirrorOptions, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    let connected = AtomicBool::new(false);
    loop {
        let attempt = async {
            // One lock for set-up and streaming: taking it a second time would race the release
            // of the first, since a dropped client's session ends on the server a moment later.
            let _lock = first_contact(opts).await?;
            connected.store(true, Ordering::Relaxed);
            let record = prepare::prepare(opts, shutdown).await?;
            Box::pin(stream(opts, &record, shutdown, &mut backoff)).await
        };
        let result = attempt.await;
        let connected_before = connected.load(Ordering::Relaxed);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<Restart>().is_some() && !shutdown.is_triggered() => {
                tracing::info!("{e}");
            }
            Err(e) if shutdown.is_triggered() => {
                tracing::info!(error = %format!("{e:#}"), "stopped");
                return Ok(());
            }
            Err(e)
                if is_transient(e.as_ref()) && (connected_before || opts.retry_first_connect) =>
            {
                if !back_off(&opts.metrics, &mut backoff, shutdown, connected_before, &e).await {
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

/// Counts and logs a fault worth retrying, then waits out the backoff; `false` when a stop
/// came first.
async fn back_off(
    metrics: &crate::metrics::Metrics,
    backoff: &mut Backoff,
    shutdown: &mut Shutdown,
    connected_before: bool,
    e: &anyhow::Error,
) -> bool {
    metrics.error();
    let delay = backoff.next_delay();
    if connected_before {
        metrics.reconnected();
        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "connection lost; reconnecting");
    } else {
        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "cannot reach the servers yet; retrying (--retry-first-connect)");
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.wait() => false,
    }
}

/// Connects to both servers, refuses a target that is the source's own database, and returns
/// the target connection that holds the mirror's lock.
async fn first_contact(opts: &MirrorOptions) -> anyhow::Result<Client> {
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    let source = pgconn::connect_sql(&opts.source).await.context("connecting to the source")?;
    crate::same_database::refuse_same_database(&source, &target).await?;
    drop(source);
    lock_mirror(target, &opts.name).await
}

/// How long a start waits for what a previous session of the mirror holds on a server (the
/// mirror's lock, the slot) before deciding that someone else holds it: the session of a killed
/// process, or the walsender of this process's previous stream (ended by a fault or a repair),
/// ends only once the server notices the closed socket, which takes a moment on a loaded
/// machine.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Asks `released` every 100 ms until it says yes or [`RELEASE_WAIT`] has passed; returns its
/// last answer.
async fn wait_for_release<F, Fut>(mut released: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        if released().await? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for_release`] for something with a holder: `holder` describes who holds it, `None`
/// once it is free. The first time it is held, says so and that it waits (a restart waits
/// for its predecessor's session to end, which is otherwise a silent pause).
async fn wait_for_holder<F, Fut>(mut holder: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
{
    let told = AtomicBool::new(false);
    wait_for_release(|| {
        let held = holder();
        let told = &told;
        async move {
            let Some(by) = held.await? else { return Ok(true) };
            if !told.swap(true, Ordering::Relaxed) {
                tracing::info!("{by}; waiting up to {} s for it to stop", RELEASE_WAIT.as_secs());
            }
            Ok(false)
        }
    })
    .await
}

/// Where a streaming session reads the source.
struct SessionSource<'a> {
    config: &'a pgconn::ConnConfig,
    /// The system identifier of the cluster the mirror was set up from.
    system_id: Option<&'a str>,
    slot: &'a str,
    publication: &'a str,
    binary: bool,
    /// Logical decoding messages too.
    messages: bool,
}

impl SessionSource<'_> {
    /// Starts replication at `progress`, once the source is the cluster the mirror was set up
    /// from, its slot still exists and no walsender of an earlier session holds it any more.
    async fn start(
        &self,
        progress: Lsn,
    ) -> anyhow::Result<(replication::LogicalReplicationStream, replication::SystemInfo)> {
        let mut repl = ReplicationClient::connect(self.config)
            .await
            .context("replication connection to the source")?;
        let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
        if let Some(expected) = self.system_id
            && expected != system.system_id.to_string()
        {
            bail!(
                "the source is a different PostgreSQL cluster (system id {}) than the one this \
                 mirror was set up from ({expected}); point --source at the original primary, \
                 or `pgmirror drop` this mirror and set it up again",
                system.system_id
            );
        }
        let slot = self.slot;
        require_slot(&mut repl, slot, progress).await?;
        // START_REPLICATION refuses a slot a walsender still holds; one held for longer than
        // the wait gets that refusal, which names the process.
        let sql = pgconn::connect_sql(self.config).await.context("connecting to the source")?;
        wait_for_slot_release(&sql, slot).await?;
        drop(sql);
        let mut start = StartReplication::new(slot.to_owned(), [self.publication.to_owned()]);
        start.start_lsn = progress;
        start.binary = self.binary;
        start.messages = self.messages;
        start.streaming =
            if repl.server_version() >= 140_000 { Streaming::On } else { Streaming::Off };
        // Report progress every second (not libpq's 10 s): the slot, `status` and `verify`
        // then see applied positions promptly, and an idle slot releases WAL sooner.
        start.status_interval = Duration::from_secs(1);
        let stream = start_replication(repl, start, progress).await?;
        Ok((stream, system))
    }
}

/// The error of a mirror whose slot is gone: what it lost and how to recover.
fn slot_lost(slot: &str, progress: Lsn) -> anyhow::Error {
    anyhow::anyhow!(
        "replication slot {slot:?} no longer exists on the source (dropped or invalidated), so \
         changes since {progress} are lost to this mirror; recover with a fresh initial copy: \
         `pgmirror drop` then `pgmirror mirror` again"
    )
}

/// How much of a transaction a mirror's walsender holds before streaming it, in kB, where the
/// source's `logical_decoding_work_mem` (64 MB by default) is larger. The target then starts
/// on a large transaction once 8 MB of it is decoded, not 64 MB (about a second sooner for a
/// 1M-row UPDATE), and the walsender keeps less of it in memory.
const STREAMING_WORK_MEM_KB: u32 = 8 * 1024;

/// START_REPLICATION of a mirror resuming at `progress`, its walsender streaming a large
/// transaction after [`STREAMING_WORK_MEM_KB`] of it. A slot dropped after it was looked up is
/// reported as one found missing.
pub(super) async fn start_replication(
    repl: ReplicationClient,
    mut start: StartReplication,
    progress: Lsn,
) -> anyhow::Result<replication::LogicalReplicationStream> {
    start.decoding_work_mem_kb = Some(STREAMING_WORK_MEM_KB);
    let slot = start.slot.clone();
    repl.start_replication(start).await.map_err(|e| {
        if e.is_slot_missing() {
            slot_lost(&slot, progress)
        } else {
            anyhow::Error::new(e).context("starting replication")
        }
    })
}

/// Fails with [`slot_lost`] unless `slot` exists.
pub(super) async fn require_slot(
    repl: &mut ReplicationClient,
    slot: &str,
    progress: Lsn,
) -> anyhow::Result<()> {
    if repl.slot_exists(slot).await.context("looking up the slot")? {
        Ok(())
    } else {
        Err(slot_lost(slot, progress))
    }
}

/// Waits (see [`wait_for_holder`]) until no walsender streams from `slot`.
pub(super) async fn wait_for_slot_release(source: &Client, slot: &str) -> anyhow::Result<()> {
    wait_for_holder(|| async {
        let pid: Option<i32> = source
            .query_opt(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1 AND active",
                &[&slot],
            )
            .await
            .context("looking up the slot")?
            .and_then(|r| r.get(0));
        Ok(pid.map(|pid| {
            format!("replication slot {slot:?} is in use by process {pid} on the source")
        }))
    })
    .await?;
    Ok(())
}

/// A target connection that holds this mirror's advisory lock, so a second pgmirror for the
/// same mirror refuses to run.
async fn lock_mirror(client: Client, name: &str) -> anyhow::Result<Client> {
    let key = format!("pgmirror:{name}");
    let held_by = format!("mirror {name:?} on this target");
    if !advisory_lock(&client, &key, &held_by)
        .await
        .context("taking the mirror's lock on the target")?
    {
        bail!(
            "another pgmirror is already running mirror {name:?} on this target; stop it first \
             (or give this one another --name)"
        );
    }
    Ok(client)
}

/// Takes the session advisory lock named `key` on `client`'s server, waiting (see
/// [`wait_for_holder`]) for a previous holder's session to end; `held_by` names what the lock
/// is for. False when another session still holds it.
async fn advisory_lock(client: &Client, key: &str, held_by: &str) -> anyhow::Result<bool> {
    wait_for_holder(|| async move {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key])
            .await?
            .get(0);
        Ok((!locked).then(|| format!("another pgmirror holds {held_by}")))
    })
    .await
}

/// One streaming session: connect, apply until stopped or disconnected.
async fn stream(
    opts: &MirrorOptions,
    record: &MirrorRecord,
    shutdown: &mut Shutdown,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let target = pgconn::connect_sql(&opts.target).await.context("connecting to the target")?;
    let mut target_cfg = PostgresTargetConfig::new(opts.name.clone());
    target_cfg.replica_role = true;
    // New tables and columns are repaired here, with the source's catalog (see `resync`).
    target_cfg.report_schema_changes = true;
    // More target sessions, for applying a large streamed transaction while it arrives.
    let target_conn = opts.target.clone();
    let target = PostgresTarget::new(target, target_cfg).await?.with_connector(move || {
        let cfg = target_conn.clone();
        async move { pgconn::connect_sql(&cfg).await }
    });
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let progress = applier.start_progress().unwrap_or(Lsn::ZERO);
    let mut resyncs = resync::start(opts, progress).await?;
    applier.set_table_floors(std::mem::take(&mut resyncs.floors));

    let (stream, backlog_end) = start_stream(opts, record, progress).await?;

    let mut sequences = spawn_sequence_sync(opts, shutdown.clone());
    let connected_at = std::time::Instant::now();
    let result = {
        let pumping = pump(&mut applier, stream, shutdown, &opts.metrics, backlog_end);
        tokio::pin!(pumping);
        let requested = resync::requested(opts);
        tokio::pin!(requested);
        let mut sequences_done = false;
        loop {
            tokio::select! {
            r = &mut pumping => break r.map_err(anyhow::Error::from),
            // A mirrored table vanished from the source: its changes would be lost silently.
            synced = &mut sequences, if !sequences_done => {
                sequences_done = true;
                if let Ok(Some(gone)) = synced {
                    break Err(gone);
                }
            }
            copied = resync::next_copy(&mut resyncs.copies) => {
                if let Err(e) = copied {
                    break Err(e);
                }
            }
            asked = &mut requested => break match asked {
                Ok(()) => Err(Restart("a table is to be copied again (pgmirror resync)").into()),
                Err(e) => Err(e),
            },
            }
        }
    };
    sequences.abort();
    if connected_at.elapsed() > Duration::from_secs(10) {
        // A session that streamed for a while was healthy: a new fault starts the backoff over.
        backoff.reset();
    }
    match result {
        Ok(()) => {
            // Last sequence values, so a replica that takes over does not reuse ids.
            if let Ok(sync) = SequenceSync::connect(opts).await {
                sync.run(opts).await;
            }
            let stats = applier.stats();
            tracing::info!(
                applied_txns = stats.applied_txns,
                changes = stats.changes,
                "stopped cleanly"
            );
            Ok(())
        }
        Err(e) => match schema_change(&e) {
            Some((schema, table, change)) => {
                // Its session's open transaction holds locks the repair's ALTER TABLE needs.
                drop(applier);
                resync::repair(opts, &schema, &table, &change).await?;
                Err(Restart("the target was repaired after a schema change on the source").into())
            }
            None => Err(e),
        },
    }
}

/// Opens the replication stream of `record`'s slot from `progress`: after checking that the
/// source is the cluster the mirror was set up from and that the slot still exists, and waiting
/// for the walsender of a previous stream to release the slot. Returns the stream and the
/// primary's WAL flush position when it started.
async fn start_stream(
    opts: &MirrorOptions,
    record: &MirrorRecord,
    progress: Lsn,
) -> anyhow::Result<(LogicalReplicationStream, Lsn)> {
    let source = SessionSource {
        config: &opts.source,
        system_id: record.source_system_id.as_deref(),
        slot: &record.slot,
        publication: &record.publication,
        binary: opts.binary,
        messages: false,
    };
    let (stream, system) = source.start(progress).await?;
    tracing::info!(slot = %record.slot, from = %progress, proto = stream.proto_version(), "streaming");
    Ok((stream, system.xlogpos))
}

/// Ends a streaming session so the next one starts at once from the stored progress (not an
/// error: no backoff, not counted).
#[derive(Debug, thiserror::Error)]
#[error("restarting the stream: {0}")]
struct Restart(&'static str);

/// The schema change the applier stopped at, if that is why `e` ended the stream.
fn schema_change(e: &anyhow::Error) -> Option<(String, String, applier::SchemaChange)> {
    e.chain().find_map(|c| {
        // The pump's error is transparent: its apply error is not a link of its own.
        let apply = c.downcast_ref::<applier::ApplyError>().or_else(|| match c
            .downcast_ref::<crate::pump::PumpError>()
        {
            Some(crate::pump::PumpError::Apply(a)) => Some(a),
            _ => None,
        });
        match apply {
            Some(applier::ApplyError::SchemaChanged { schema, table, change }) => {
                Some((schema.clone(), table.clone(), change.clone()))
            }
            _ => None,
        }
    })
}

/// Copies sequence values every `sequence_interval` while streaming. Ends with an error if a
/// mirrored table no longer exists on the source (no change of it would ever arrive again).
///
/// Keeps its two connections and the table definitions between rounds: a round is then one
/// existence check of the tables by OID, one query for their sequences and one `setval` per
/// sequence. A table gone by OID (dropped, or dropped and created again) or any error sends the
/// next round through a full resolve on fresh connections.
fn spawn_sequence_sync(
    opts: &MirrorOptions,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<Option<anyhow::Error>> {
    let opts = opts.clone();
    tokio::spawn(async move {
        let mut state: Option<SequenceSync> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(opts.sequence_interval) => {}
                () = shutdown.wait() => return None,
            }
            let synced = async {
                let sync = match state.take() {
                    Some(s) if s.tables_still_there().await? => state.insert(s),
                    _ => state.insert(SequenceSync::connect(&opts).await?),
                };
                let n = sync.run(&opts).await;
                if sync.source.is_closed() || sync.target.is_closed() {
                    state = None;
                }
                anyhow::Ok(n)
            };
            match synced.await {
                Ok(n) => tracing::debug!(sequences = n, "synced sequences"),
                Err(e)
                    if e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<tablesync::Error>(),
                            Some(tablesync::Error::TableNotFound { .. })
                        )
                    }) =>
                {
                    return Some(e.context(
                        "a mirrored table no longer exists on the source (dropped or renamed), \
                         so its changes cannot be mirrored; recreate it, or `pgmirror drop` this \
                         mirror and set it up again with the remaining tables",
                    ));
                }
                Err(e) => {
                    state = None;
                    tracing::debug!(error = %format!("{e:#}"), "sequence sync failed; will retry")
                }
            }
        }
    })
}

/// What the periodic sequence sync keeps between rounds.
struct SequenceSync {
    source: tokio_postgres::Client,
    target: tokio_postgres::Client,
    tables: Vec<TableDef>,
}

impl SequenceSync {
    async fn connect(opts: &MirrorOptions) -> anyhow::Result<Self> {
        let source = pgconn::connect_sql(&opts.source).await?;
        let target = pgconn::connect_sql(&opts.target).await?;
        let mut tables = crate::selection::resolve_tables(&source, &opts.tables).await?;
        // A pattern such as `app.*` matches tables created since set-up, which the mirror's
        // publication does not publish and the target does not have.
        let published = tablesync::publication_tables(&source, &opts.publication_name()).await?;
        tables.retain(|t| published.iter().any(|p| p.oid == t.oid));
        Ok(SequenceSync { source, target, tables })
    }

    /// Copies the current sequence values; returns how many.
    async fn run(&self, opts: &MirrorOptions) -> usize {
        copy::sync_sequences_once(opts, &self.source, &self.target, &self.tables).await
    }

    /// Whether every table resolved earlier still exists under the same OID.
    async fn tables_still_there(&self) -> anyhow::Result<bool> {
        let oids: Vec<u32> = self.tables.iter().map(|t| t.oid).collect();
        let missing: i64 = self
            .source
            .query_one(
                "SELECT count(*) FROM unnest($1::oid[]) AS t(oid) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.oid)",
                &[&oids],
            )
            .await?
            .get(0);
        Ok(missing == 0)
    }
}
