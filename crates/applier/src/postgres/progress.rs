//! `pgmirror.progress`: per mirror, the end LSN of the last source transaction the target
//! holds, written in the same target transaction as its changes.

pub(crate) const PROGRESS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.progress (\
        mirror_name text PRIMARY KEY, \
        end_lsn pg_lsn NOT NULL, \
        commit_lsn pg_lsn, \
        commit_time timestamptz, \
        xid bigint, \
        updated_at timestamptz NOT NULL DEFAULT now())";

pub(super) const PROGRESS_UPSERT: &str = "INSERT INTO pgmirror.progress AS p \
    (mirror_name, end_lsn, commit_lsn, commit_time, xid, updated_at) \
    VALUES ($1, $2, $3, $4, $5, clock_timestamp()) \
    ON CONFLICT (mirror_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn, \
    commit_lsn = EXCLUDED.commit_lsn, commit_time = EXCLUDED.commit_time, \
    xid = EXCLUDED.xid, updated_at = EXCLUDED.updated_at";
