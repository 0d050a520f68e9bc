//! `pgmirror.progress`: per mirror, the end LSN of the last source transaction the target
//! holds. [`PostgresTarget`](super::PostgresTarget) writes it in the same target transaction
//! as the changes, so the target's data and its progress never disagree; the initial copy
//! stores the slot's consistent point with [`store`].
//!
//! Every statement on the table is in this module. LSNs travel as `pg_lsn` in its binary form
//! (the 64-bit position) and are [`Lsn`]s on this side.

use std::sync::Arc;

use bytes::Bytes;
use pgoutput_decoder::Lsn;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, GenericClient, Statement};

use super::pipeline::StmtFuture;
use super::session::stmt_future;
use super::value::Param;
use crate::error::ApplyError;
use crate::target::CommitInfo;

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.progress (\
        mirror_name text PRIMARY KEY, \
        end_lsn pg_lsn NOT NULL, \
        commit_lsn pg_lsn, \
        commit_time timestamptz, \
        xid bigint, \
        updated_at timestamptz NOT NULL DEFAULT now())";

/// The row after a target commit holding the source transactions up to the second parameter,
/// with the five parameters numbered from `$first`.
fn upsert_sql(first: usize) -> String {
    let [name, end_lsn, commit_lsn, commit_time, xid] =
        std::array::from_fn(|i| format!("${}", first + i));
    format!(
        "INSERT INTO pgmirror.progress AS p \
        (mirror_name, end_lsn, commit_lsn, commit_time, xid, updated_at) \
        VALUES ({name}, {end_lsn}, {commit_lsn}, {commit_time}, {xid}, clock_timestamp()) \
        ON CONFLICT (mirror_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn, \
        commit_lsn = EXCLUDED.commit_lsn, commit_time = EXCLUDED.commit_time, \
        xid = EXCLUDED.xid, updated_at = EXCLUDED.updated_at"
    )
}

/// `statement` (of `n` parameters) writing the progress row too, in a `WITH`: the row's
/// parameters follow the statement's, as [`params`] gives them. The statement's own row count
/// stays the one the server reports.
pub(super) fn carried_by(statement: &str, n: usize) -> String {
    format!("WITH pgmirror_progress AS ({}) {statement}", upsert_sql(n + 1))
}

/// The parameters of `mirror`'s progress row after `commit`, in the upsert's order.
pub(super) fn params(mirror: &str, c: &CommitInfo) -> Vec<Param> {
    // The binary forms of pg_lsn, timestamptz and bigint: big-endian 64-bit integers.
    let binary = |v: [u8; 8]| Param::Binary(Bytes::copy_from_slice(&v));
    vec![
        Param::Text(Bytes::from(mirror.to_owned())),
        binary(u64::from(c.end_lsn).to_be_bytes()),
        binary(u64::from(c.commit_lsn).to_be_bytes()),
        binary(c.commit_time.0.to_be_bytes()),
        binary(i64::from(c.xid).to_be_bytes()),
    ]
}

/// The row set to a position that is no transaction's (the initial copy's consistent point).
const STORE: &str = "INSERT INTO pgmirror.progress AS p (mirror_name, end_lsn, updated_at) \
    VALUES ($1, $2, clock_timestamp()) \
    ON CONFLICT (mirror_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn, \
    commit_lsn = NULL, commit_time = NULL, xid = NULL, updated_at = EXCLUDED.updated_at";

const LOAD: &str = "SELECT end_lsn FROM pgmirror.progress WHERE mirror_name = $1";

const EXISTS: &str = "SELECT to_regclass('pgmirror.progress') IS NOT NULL";

const DELETE: &str = "DELETE FROM pgmirror.progress WHERE mirror_name = $1";

const READ: &str = "SELECT end_lsn, commit_lsn, \
        to_char(commit_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        extract(epoch FROM clock_timestamp() - commit_time)::float8 \
    FROM pgmirror.progress WHERE mirror_name = $1";

/// A mirror's row in `pgmirror.progress`, as [`read`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProgress {
    /// Resume point: the end of the last source transaction the target holds.
    pub end_lsn: Lsn,
    /// That transaction's commit LSN (none right after the initial copy).
    pub commit_lsn: Option<Lsn>,
    /// Its commit time on the source (RFC 3339, UTC, microseconds).
    pub commit_time: Option<String>,
    /// Seconds from that commit time to now, by the target's clock.
    pub commit_age_seconds: Option<f64>,
    /// When the row was last written (RFC 3339, UTC, microseconds).
    pub updated_at: String,
}

/// `mirror`'s stored progress: the end LSN of the last source transaction the target holds.
///
/// # Errors
/// Query errors, including a target without `pgmirror.progress`.
pub async fn load(
    client: &impl GenericClient,
    mirror: &str,
) -> Result<Option<Lsn>, tokio_postgres::Error> {
    let row = client.query_opt(LOAD, &[&mirror]).await?;
    Ok(row.map(|r| to_lsn(r.get(0))))
}

/// Creates `pgmirror.progress` if missing and sets `mirror`'s progress to `end_lsn`, inside
/// whatever transaction `client` is in.
///
/// # Errors
/// Query errors.
pub async fn store(
    client: &impl GenericClient,
    mirror: &str,
    end_lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(CREATE).await?;
    client.execute(STORE, &[&mirror, &to_pg(end_lsn)]).await?;
    Ok(())
}

/// Removes `mirror`'s row. Returns whether there was one (a target without the table has
/// none).
///
/// # Errors
/// Query errors.
pub async fn delete(
    client: &impl GenericClient,
    mirror: &str,
) -> Result<bool, tokio_postgres::Error> {
    if !exists(client).await? {
        return Ok(false);
    }
    Ok(client.execute(DELETE, &[&mirror]).await? > 0)
}

/// `mirror`'s whole row, for reports; `None` when there is none (or no table).
///
/// # Errors
/// Query errors.
pub async fn read(
    client: &impl GenericClient,
    mirror: &str,
) -> Result<Option<StoredProgress>, tokio_postgres::Error> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client.query_opt(READ, &[&mirror]).await?;
    Ok(row.map(|r| StoredProgress {
        end_lsn: to_lsn(r.get(0)),
        commit_lsn: r.get::<_, Option<PgLsn>>(1).map(to_lsn),
        commit_time: r.get(2),
        updated_at: r.get(3),
        commit_age_seconds: r.get(4),
    }))
}

async fn exists(client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(EXISTS, &[]).await?.get(0))
}

fn to_lsn(lsn: PgLsn) -> Lsn {
    Lsn(u64::from(lsn))
}

fn to_pg(lsn: Lsn) -> PgLsn {
    PgLsn::from(u64::from(lsn))
}

/// The upsert a [`PostgresTarget`](super::PostgresTarget) sends in every target transaction
/// it commits, prepared once.
pub(super) struct ProgressRow {
    upsert: Statement,
}

impl ProgressRow {
    /// Creates `pgmirror.progress` if missing and prepares the upsert.
    pub(super) async fn prepare(client: &Client) -> Result<Self, ApplyError> {
        client
            .batch_execute(CREATE)
            .await
            .map_err(|e| ApplyError::target("creating pgmirror.progress", e))?;
        let upsert = client
            .prepare(&upsert_sql(1))
            .await
            .map_err(|e| ApplyError::target("preparing progress update", e))?;
        Ok(ProgressRow { upsert })
    }

    /// The upsert of `mirror`'s row after `commit`, for the pipeline.
    pub(super) fn write(&self, client: &Arc<Client>, mirror: &str, c: &CommitInfo) -> StmtFuture {
        stmt_future(client, self.upsert.clone(), params(mirror, c))
    }
}
