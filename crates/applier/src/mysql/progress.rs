//! The mirrors' progress on a MySQL target: table `pgmirror_progress` (InnoDB) in the target
//! database, one row per mirror. While streaming, its `lsn` is updated in the same transaction
//! as the changes it covers, so the target holds exactly the source transactions up to it.

use pgoutput_decoder::Lsn;
use sqlx::{MySqlConnection, Row};

use super::schema::PROGRESS_TABLE;
use super::target_err;
use crate::error::ApplyError;

/// Where a mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// The initial copy began and did not finish: the next start empties the tables and copies
    /// again.
    Copying,
    /// Copied; streaming from `lsn`.
    Streaming,
}

/// A mirror's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRow {
    /// The mirror's name.
    pub name: String,
    /// Where it stands.
    pub state: MirrorState,
    /// Its slot on the source.
    pub slot: String,
    /// Its publication on the source.
    pub publication: String,
    /// Whether the mirror created the publication (and `drop` removes it).
    pub created_publication: bool,
    /// The source cluster's system id.
    pub source_system_id: Option<String>,
    /// End LSN of the last source transaction the target holds.
    pub lsn: Option<Lsn>,
    /// Target tables whose automatic statistics recalculation the initial copy turned off
    /// (see [`super::copy::pause_stats_recalc`]), to turn back on when it ends or the mirror
    /// is dropped; stored as a JSON array.
    pub stats_paused: Vec<String>,
}

fn state_name(s: MirrorState) -> &'static str {
    match s {
        MirrorState::Copying => "copying",
        MirrorState::Streaming => "streaming",
    }
}

/// Creates the progress table if it is missing.
///
/// # Errors
/// [`ApplyError::MySql`] when the statement fails (e.g. no CREATE privilege).
pub async fn ensure_table(conn: &mut MySqlConnection) -> Result<(), ApplyError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS `{PROGRESS_TABLE}` ( \
           mirror VARCHAR(64) NOT NULL PRIMARY KEY, \
           state VARCHAR(16) NOT NULL, \
           slot VARCHAR(64) NOT NULL, \
           publication VARCHAR(64) NOT NULL, \
           created_publication TINYINT(1) NOT NULL, \
           source_system_id VARCHAR(32) NULL, \
           lsn BIGINT UNSIGNED NULL, \
           updated_at DATETIME(6) NOT NULL, \
           stats_paused TEXT NULL \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    );
    sqlx::Executor::execute(&mut *conn, sql.as_str())
        .await
        .map_err(|e| target_err(format!("creating table `{PROGRESS_TABLE}`"), e))?;
    if !has_stats_paused(conn).await? {
        // A table made before the column existed.
        let sql = format!("ALTER TABLE `{PROGRESS_TABLE}` ADD COLUMN stats_paused TEXT NULL");
        sqlx::Executor::execute(conn, sql.as_str())
            .await
            .map_err(|e| target_err(format!("adding a column to `{PROGRESS_TABLE}`"), e))?;
    }
    Ok(())
}

/// Whether the progress table has the `stats_paused` column.
async fn has_stats_paused(conn: &mut MySqlConnection) -> Result<bool, ApplyError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'stats_paused'",
    )
    .bind(PROGRESS_TABLE)
    .fetch_one(conn)
    .await
    .map_err(|e| target_err("looking up the progress table's columns", e))?;
    Ok(n > 0)
}

/// Whether the progress table exists.
///
/// # Errors
/// [`ApplyError::MySql`] when the catalog cannot be read.
pub async fn table_exists(conn: &mut MySqlConnection) -> Result<bool, ApplyError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(PROGRESS_TABLE)
    .fetch_one(conn)
    .await
    .map_err(|e| target_err("looking up the progress table", e))?;
    Ok(n > 0)
}

/// The mirror's row, if any (`None` too when the table does not exist).
///
/// # Errors
/// [`ApplyError::MySql`] when the query fails.
pub async fn load(conn: &mut MySqlConnection, name: &str) -> Result<Option<MirrorRow>, ApplyError> {
    if !table_exists(conn).await? {
        return Ok(None);
    }
    let paused = if has_stats_paused(conn).await? { "CAST(stats_paused AS CHAR)" } else { "NULL" };
    let sql = format!(
        "SELECT CAST(mirror AS CHAR), CAST(state AS CHAR), CAST(slot AS CHAR), \
           CAST(publication AS CHAR), created_publication, CAST(source_system_id AS CHAR), lsn, \
           {paused} \
         FROM `{PROGRESS_TABLE}` WHERE mirror = ?"
    );
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(|e| target_err("reading the mirror's progress", e))?;
    let Some(r) = row else { return Ok(None) };
    let get = |e| target_err("reading the mirror's progress", e);
    let state: String = r.try_get(1).map_err(get)?;
    Ok(Some(MirrorRow {
        name: r.try_get(0).map_err(get)?,
        state: if state == "streaming" { MirrorState::Streaming } else { MirrorState::Copying },
        slot: r.try_get(2).map_err(get)?,
        publication: r.try_get(3).map_err(get)?,
        created_publication: r.try_get::<bool, _>(4).map_err(get)?,
        source_system_id: r.try_get(5).map_err(get)?,
        lsn: r.try_get::<Option<u64>, _>(6).map_err(get)?.map(Lsn),
        stats_paused: match r.try_get::<Option<String>, _>(7).map_err(get)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                ApplyError::TargetSchema(vec![format!(
                    "`{PROGRESS_TABLE}`.stats_paused of mirror {name:?} is not a JSON array of \
                     table names ({e}); set it to NULL"
                )])
            })?,
            None => Vec::new(),
        },
    }))
}

/// Every mirror's row.
///
/// # Errors
/// [`ApplyError::MySql`] when the query fails.
pub async fn load_all(conn: &mut MySqlConnection) -> Result<Vec<MirrorRow>, ApplyError> {
    if !table_exists(conn).await? {
        return Ok(Vec::new());
    }
    let names: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT CAST(mirror AS CHAR) FROM `{PROGRESS_TABLE}` ORDER BY mirror"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| target_err("reading the mirrors' progress", e))?;
    let mut out = Vec::new();
    for n in names {
        out.extend(load(conn, &n).await?);
    }
    Ok(out)
}

/// Writes the mirror's row (inserting or replacing it).
///
/// # Errors
/// [`ApplyError::MySql`] when the statement fails.
pub async fn save(conn: &mut MySqlConnection, row: &MirrorRow) -> Result<(), ApplyError> {
    let sql = format!(
        "REPLACE INTO `{PROGRESS_TABLE}` (mirror, state, slot, publication, \
           created_publication, source_system_id, lsn, updated_at, stats_paused) \
         VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), ?)"
    );
    let paused = (!row.stats_paused.is_empty())
        .then(|| serde_json::to_string(&row.stats_paused).unwrap_or_default());
    sqlx::query(&sql)
        .bind(&row.name)
        .bind(state_name(row.state))
        .bind(&row.slot)
        .bind(&row.publication)
        .bind(row.created_publication)
        .bind(&row.source_system_id)
        .bind(row.lsn.map(|l| l.0))
        .bind(paused)
        .execute(conn)
        .await
        .map_err(|e| target_err("recording the mirror on the target", e))?;
    Ok(())
}

/// Stores `lsn` as the mirror's progress; part of the caller's open transaction.
///
/// # Errors
/// [`ApplyError::MySql`] when the statement fails or the row is missing.
pub async fn store(conn: &mut MySqlConnection, name: &str, lsn: Lsn) -> Result<(), ApplyError> {
    let sql = format!(
        "UPDATE `{PROGRESS_TABLE}` SET lsn = ?, state = 'streaming', \
           updated_at = UTC_TIMESTAMP(6) WHERE mirror = ?"
    );
    let done = sqlx::query(&sql)
        .bind(lsn.0)
        .bind(name)
        .execute(conn)
        .await
        .map_err(|e| target_err("storing the progress", e))?;
    if done.rows_affected() == 0 {
        return Err(ApplyError::TargetSchema(vec![format!(
            "mirror {name:?} has no row in `{PROGRESS_TABLE}`; set it up again with \
             `pgmirror mirror`"
        )]));
    }
    Ok(())
}

/// Deletes the mirror's row; returns whether there was one.
///
/// # Errors
/// [`ApplyError::MySql`] when the statement fails.
pub async fn delete(conn: &mut MySqlConnection, name: &str) -> Result<bool, ApplyError> {
    if !table_exists(conn).await? {
        return Ok(false);
    }
    let done = sqlx::query(&format!("DELETE FROM `{PROGRESS_TABLE}` WHERE mirror = ?"))
        .bind(name)
        .execute(conn)
        .await
        .map_err(|e| target_err("deleting the mirror's progress", e))?;
    Ok(done.rows_affected() > 0)
}
