//! The progress row in the target, outside the apply path: for the initial copy (which sets
//! the slot's consistent point as the starting progress) and for `pgmirror drop`.

use pgoutput_decoder::Lsn;
use tokio_postgres::GenericClient;

use crate::postgres::progress::PROGRESS_DDL;

/// Creates `pgmirror.progress` if missing and sets `mirror`'s progress to `end_lsn`, inside
/// whatever transaction `client` is in.
///
/// # Errors
/// Query errors.
pub async fn store_progress(
    client: &impl GenericClient,
    mirror: &str,
    end_lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(PROGRESS_DDL).await?;
    client
        .execute(
            "INSERT INTO pgmirror.progress AS p (mirror_name, end_lsn, updated_at) \
             VALUES ($1, $2::text::pg_lsn, clock_timestamp()) \
             ON CONFLICT (mirror_name) DO UPDATE SET end_lsn = EXCLUDED.end_lsn, \
             commit_lsn = NULL, commit_time = NULL, xid = NULL, updated_at = EXCLUDED.updated_at",
            &[&mirror, &end_lsn.to_string()],
        )
        .await?;
    Ok(())
}

/// Removes `mirror`'s progress row, if the table exists.
///
/// # Errors
/// Query errors.
pub async fn delete_progress(
    client: &impl GenericClient,
    mirror: &str,
) -> Result<(), tokio_postgres::Error> {
    let exists: bool =
        client.query_one("SELECT to_regclass('pgmirror.progress') IS NOT NULL", &[]).await?.get(0);
    if exists {
        client.execute("DELETE FROM pgmirror.progress WHERE mirror_name = $1", &[&mirror]).await?;
    }
    Ok(())
}
