//! `status`, `drop` and `check` of a NATS mirror.

use std::fmt::Write as _;

use anyhow::Context;
use applier::nats::{forget_progress, stored_progress, subject};
use async_nats::jetstream;
use pgconn::ConnConfig;
use pgoutput_decoder::Lsn;
use replication::ReplicationClient;

use super::{BUCKET, NatsRecord, load_record, record_key};
use crate::target_url::NatsUrl;

/// A NATS mirror as `pgmirror status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsStatus {
    /// The mirror's name.
    pub name: String,
    /// What its set-up recorded.
    pub record: Option<NatsRecord>,
    /// The last end LSN the stream acknowledged and the bucket holds.
    pub acknowledged: Option<Lsn>,
    /// The stream's message count and last sequence, if it exists.
    pub stream: Option<(u64, u64)>,
    /// The slot's confirmed LSN and whether a walsender streams from it, if it exists.
    pub slot: Option<(Option<Lsn>, bool)>,
    /// The primary's current WAL position.
    pub wal_end: Option<Lsn>,
}

impl NatsStatus {
    /// Healthy: set up, copied, the slot and the stream there.
    pub fn healthy(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.copied)
            && self.slot.is_some()
            && self.stream.is_some()
    }

    /// One line per fact.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mirror        {} (NATS JetStream)", self.name);
        match &self.record {
            None => {
                out.push_str("state         not set up (no record in the NATS bucket pgmirror)\n")
            }
            Some(r) => {
                let state = if r.copied { "streaming" } else { "initial copy not finished" };
                let _ = writeln!(out, "state         {state}");
                let _ = writeln!(out, "subjects      {}.>", r.prefix);
                match self.stream {
                    Some((messages, last)) => {
                        let _ = writeln!(
                            out,
                            "stream        {}: {messages} messages, last sequence {last}",
                            r.stream
                        );
                    }
                    None => {
                        let _ = writeln!(out, "stream        {}: missing", r.stream);
                    }
                }
            }
        }
        let ack = self.acknowledged.map_or("none".to_owned(), |l| l.to_string());
        let _ = writeln!(out, "acknowledged  {ack} (last end LSN the stream stored)");
        match self.slot {
            Some((confirmed, active)) => {
                let confirmed = confirmed.map_or("none".to_owned(), |l| l.to_string());
                let active = if active { "active" } else { "inactive" };
                let _ = writeln!(out, "slot          {active}, confirmed {confirmed}");
            }
            None => out.push_str("slot          missing\n"),
        }
        if let (Some(end), Some(ack)) = (self.wal_end, self.acknowledged) {
            let _ = writeln!(out, "lag           {} bytes of WAL", end.0.saturating_sub(ack.0));
        }
        out
    }
}

/// Reads a NATS mirror's status from both sides.
///
/// # Errors
/// Connection and query errors.
pub async fn status(source: &ConnConfig, url: &NatsUrl, name: &str) -> anyhow::Result<NatsStatus> {
    let js = jetstream::new(url.connect("pgmirror status").await?);
    let record = load_record(&js, name).await?;
    let acknowledged = stored_progress(&js, BUCKET, name).await?;
    let stream = match &record {
        Some(r) => match js.get_stream(&r.stream).await {
            Ok(mut s) => {
                let info = s.info().await.context("reading the stream")?;
                Some((info.state.messages, info.state.last_sequence))
            }
            Err(_) => None,
        },
        None => None,
    };
    let sql = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let slot_name = record.as_ref().map_or_else(|| format!("pgmirror_{name}"), |r| r.slot.clone());
    let slot = sql
        .query_opt(
            "SELECT confirmed_flush_lsn::text, active FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot_name],
        )
        .await
        .context("reading pg_replication_slots")?
        .map(|r| (r.get::<_, Option<String>>(0).and_then(|l| l.parse().ok()), r.get(1)));
    let wal_end = sql
        .query_one(
            "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
                    ELSE pg_catalog.pg_current_wal_lsn()::text END",
            &[],
        )
        .await
        .context("reading the WAL position")?
        .get::<_, Option<String>>(0)
        .and_then(|l| l.parse().ok());
    Ok(NatsStatus { name: name.to_owned(), record, acknowledged, stream, slot, wal_end })
}

/// What `drop` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Dropped or deleted.
    Removed,
    /// Left alone.
    Kept,
    /// Not there.
    Absent,
}

/// One object `drop` dealt with: its kind, name, what happened and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `slot`, `publication`, `stream`, `bucket keys`.
    pub object: &'static str,
    /// Its name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why (for a kept object, how to remove it anyway).
    pub reason: String,
}

fn action(object: &'static str, name: &str, outcome: Outcome, reason: &str) -> Dropped {
    Dropped { object, name: name.to_owned(), outcome, reason: reason.to_owned() }
}

/// `removed`: `Some(true)` dropped, `Some(false)` was not there, `None` kept (not pgmirror's).
fn outcome(object: &'static str, name: &str, removed: Option<bool>) -> Dropped {
    match removed {
        Some(true) => action(object, name, Outcome::Removed, ""),
        Some(false) => action(object, name, Outcome::Absent, ""),
        None => action(object, name, Outcome::Kept, "pgmirror did not create it; pass --force"),
    }
}

/// Drops a NATS mirror: its slot, the publication and the stream when pgmirror created them
/// (or `force`), and its keys in the bucket.
///
/// # Errors
/// No record of the mirror, an active slot without `wait`, server errors.
pub async fn drop_mirror(
    source: &ConnConfig,
    url: &NatsUrl,
    name: &str,
    force: bool,
    wait: bool,
) -> anyhow::Result<Vec<Dropped>> {
    let js = jetstream::new(url.connect("pgmirror drop").await?);
    let Some(record) = load_record(&js, name).await? else {
        anyhow::bail!(
            "NATS holds no mirror named {name:?} (no key {:?} in bucket {BUCKET}); give the \
             mirror's --name",
            record_key(name)
        );
    };
    let mut report = Vec::new();
    let mut repl =
        ReplicationClient::connect(source).await.context("replication connection to the source")?;
    if !record.created_slot && !force {
        report.push(action(
            "slot",
            &record.slot,
            Outcome::Kept,
            "pgmirror did not create it (the mirror was started on an existing slot); pass \
             --force to drop it",
        ));
    } else if repl.slot_exists(&record.slot).await.context("looking up the slot")? {
        repl.drop_slot(&record.slot, wait).await.with_context(|| {
            format!(
                "dropping slot {:?} (is the mirror still running? stop it, or pass --wait)",
                record.slot
            )
        })?;
        report.push(action("slot", &record.slot, Outcome::Removed, ""));
    } else {
        report.push(action("slot", &record.slot, Outcome::Absent, "not on the source"));
    }
    repl.close().await;
    let sql = pgconn::connect_sql(source).await.context("connecting to the source")?;
    let removed = if record.created_publication || force {
        Some(tablesync::drop_publication(&sql, &record.publication).await?)
    } else {
        None
    };
    report.push(outcome("publication", &record.publication, removed));
    let removed = if record.created_stream || force {
        Some(js.delete_stream(&record.stream).await.is_ok())
    } else {
        None
    };
    report.push(outcome("stream", &record.stream, removed));
    forget_progress(&js, BUCKET, name).await?;
    let kv = js.get_key_value(BUCKET).await.context("opening the NATS bucket")?;
    kv.purge(record_key(name)).await.context("removing the mirror's record")?;
    report.push(action("bucket keys", &subject::kv_key(name), Outcome::Removed, ""));
    Ok(report)
}

/// `pgmirror check` of a NATS target: reachable, JetStream on, and the stream (if it exists)
/// takes `<prefix>.>`. One line each: `Ok(what)` or `Err(problem and fix)`.
pub async fn check(url: &NatsUrl, stream: &str, prefix: &str) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    let client = match url.connect("pgmirror check").await {
        Ok(c) => c,
        Err(e) => {
            out.push(Err(format!("{e:#}")));
            return out;
        }
    };
    out.push(Ok(format!("NATS reachable at {url}")));
    let js = jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut s) => match s.info().await {
            Ok(info) if info.config.subjects.iter().any(|p| subject::covers_prefix(p, prefix)) => {
                out.push(Ok(format!("stream {stream} takes {prefix}.>")));
            }
            Ok(info) => out.push(Err(format!(
                "stream {stream} takes {:?}, not {prefix}.>; add \"{prefix}.>\" to its subjects \
                 or give another --nats-stream or --subject-prefix",
                info.config.subjects
            ))),
            Err(e) => out.push(Err(format!("reading stream {stream}: {e}"))),
        },
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            out.push(Ok(format!("stream {stream} will be created (subjects {prefix}.>)")));
        }
        Err(e) => out.push(Err(format!(
            "JetStream is not available on this server ({e}); start nats-server with -js"
        ))),
    }
    out
}
