//! `pgmirror.mirrors` on the target: what each mirror created on the primary and how far its
//! set-up got, so that a restart knows whether to resume streaming or redo the initial copy,
//! and `pgmirror drop` removes exactly what pgmirror made.

use pgoutput_decoder::Lsn;
use tokio_postgres::Client;

const DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgmirror; \
    CREATE TABLE IF NOT EXISTS pgmirror.mirrors (\
        mirror_name text PRIMARY KEY, \
        slot_name text NOT NULL, \
        publication_name text NOT NULL, \
        created_slot boolean NOT NULL, \
        created_publication boolean NOT NULL, \
        state text NOT NULL CHECK (state IN ('copying', 'streaming')), \
        source_system_id text, \
        created_at timestamptz NOT NULL DEFAULT now(), \
        updated_at timestamptz NOT NULL DEFAULT now())";

/// Where a mirror's set-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// The slot exists and the initial copy started but did not finish: redo it.
    Copying,
    /// The initial copy (if any) is done: stream from the stored progress.
    Streaming,
}

impl MirrorState {
    fn as_str(self) -> &'static str {
        match self {
            MirrorState::Copying => "copying",
            MirrorState::Streaming => "streaming",
        }
    }
}

/// One mirror's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRecord {
    /// The mirror's name (key).
    pub name: String,
    /// Its slot on the primary.
    pub slot: String,
    /// The publication it streams.
    pub publication: String,
    /// pgmirror created the slot (so `drop` may remove it).
    pub created_slot: bool,
    /// pgmirror created the publication.
    pub created_publication: bool,
    /// How far set-up got.
    pub state: MirrorState,
    /// `IDENTIFY_SYSTEM`'s system id of the primary, to refuse streaming from another server.
    pub source_system_id: Option<String>,
}

impl MirrorRecord {
    /// The record of a set-up that creates `slot` and is about to copy.
    pub fn copying(
        name: &str,
        slot: &str,
        publication: String,
        created_publication: bool,
        source_system_id: u64,
    ) -> Self {
        MirrorRecord {
            name: name.to_owned(),
            slot: slot.to_owned(),
            publication,
            created_slot: true,
            created_publication,
            state: MirrorState::Copying,
            source_system_id: Some(source_system_id.to_string()),
        }
    }
}

/// Creates `pgmirror.mirrors` if missing.
///
/// # Errors
/// The target refused (no CREATE privilege on the database, say).
pub async fn ensure_table(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(DDL).await
}

/// Whether the `pgmirror` schema exists on the target.
///
/// # Errors
/// Query errors.
pub async fn schema_exists(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one("SELECT to_regnamespace('pgmirror') IS NOT NULL", &[]).await?.get(0))
}

/// Drops the `pgmirror` schema when no mirror is recorded in it and it holds nothing but
/// pgmirror's own tables (`mirrors`, `progress`, `resyncs`) without rows: what a failed first start
/// created, or what is left once the last mirror is dropped. Returns whether it was dropped;
/// another mirror's rows, or anything else in the schema, keep it.
///
/// # Errors
/// Query errors.
pub async fn drop_schema_if_unused(client: &mut Client) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let ours_only: bool = tx
        .query_one(
            "SELECT to_regnamespace('pgmirror') IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                               WHERE c.relnamespace = to_regnamespace('pgmirror') \
                                 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
                                 AND c.relname NOT IN ('mirrors', 'progress', 'resyncs', 'shard_moves'))",
            &[],
        )
        .await?
        .get(0);
    if !ours_only {
        return Ok(false);
    }
    let tables: Vec<String> = tx
        .query(
            "SELECT format('pgmirror.%I', relname) FROM pg_catalog.pg_class \
             WHERE relnamespace = 'pgmirror'::regnamespace AND relkind = 'r' ORDER BY relname",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Locked, so a mirror starting meanwhile either recorded itself already or waits.
    for table in &tables {
        tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await?;
        let rows: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        if rows > 0 {
            return Ok(false);
        }
    }
    // RESTRICT: a view or function of the user's over these tables keeps them.
    let drop = format!("DROP TABLE {}; DROP SCHEMA pgmirror", tables.join(", "));
    match tx.batch_execute(if tables.is_empty() { "DROP SCHEMA pgmirror" } else { &drop }).await {
        Ok(()) => {}
        Err(e)
            if e.code()
                == Some(&tokio_postgres::error::SqlState::DEPENDENT_OBJECTS_STILL_EXIST) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(true)
}

/// Reads a mirror's row, if any (none when `pgmirror.mirrors` does not exist).
///
/// # Errors
/// Query errors.
pub async fn load(
    client: &Client,
    name: &str,
) -> Result<Option<MirrorRecord>, tokio_postgres::Error> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT slot_name, publication_name, created_slot, created_publication, state, \
             source_system_id FROM pgmirror.mirrors WHERE mirror_name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| MirrorRecord {
        name: name.to_owned(),
        slot: r.get(0),
        publication: r.get(1),
        created_slot: r.get(2),
        created_publication: r.get(3),
        state: if r.get::<_, &str>(4) == "copying" {
            MirrorState::Copying
        } else {
            MirrorState::Streaming
        },
        source_system_id: r.get(5),
    }))
}

/// Whether the target has `pgmirror.mirrors` (no mirror has been set up there otherwise).
///
/// # Errors
/// Query errors.
pub async fn exists(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one("SELECT to_regclass('pgmirror.mirrors') IS NOT NULL", &[]).await?.get(0))
}

/// The first mirror, by name, whose slot or publication is `value`. The table must exist.
///
/// # Errors
/// Query errors.
pub async fn name_by(
    client: &Client,
    by: Lookup,
    value: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let column = match by {
        Lookup::Slot => "slot_name",
        Lookup::Publication => "publication_name",
    };
    let sql = format!(
        "SELECT mirror_name FROM pgmirror.mirrors WHERE {column} = $1 \
         ORDER BY mirror_name LIMIT 1"
    );
    Ok(client.query_opt(&sql, &[&value]).await?.map(|r| r.get(0)))
}

/// What [`name_by`] looks a mirror up by.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// The mirror's replication slot.
    Slot,
    /// The mirror's publication.
    Publication,
}

/// The only mirror's name when the table holds exactly one. The table must exist.
///
/// # Errors
/// Query errors.
pub async fn only_name(client: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT mirror_name FROM pgmirror.mirrors ORDER BY mirror_name LIMIT 2", &[])
        .await?;
    Ok((rows.len() == 1).then(|| rows[0].get(0)))
}

/// Inserts or replaces a mirror's row.
///
/// # Errors
/// Query errors.
pub async fn save(client: &Client, rec: &MirrorRecord) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO pgmirror.mirrors AS m (mirror_name, slot_name, publication_name, \
             created_slot, created_publication, state, source_system_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (mirror_name) DO UPDATE SET \
             slot_name = EXCLUDED.slot_name, publication_name = EXCLUDED.publication_name, \
             created_slot = EXCLUDED.created_slot, \
             created_publication = EXCLUDED.created_publication, state = EXCLUDED.state, \
             source_system_id = EXCLUDED.source_system_id, updated_at = now()",
            &[
                &rec.name,
                &rec.slot,
                &rec.publication,
                &rec.created_slot,
                &rec.created_publication,
                &rec.state.as_str(),
                &rec.source_system_id,
            ],
        )
        .await?;
    Ok(())
}

/// Marks the initial copy finished and stores the slot's consistent point as the mirror's
/// progress, in one target transaction: from here on, streaming starts there.
///
/// # Errors
/// Query errors (nothing is changed then).
pub async fn finish_copy(
    client: &mut Client,
    name: &str,
    consistent_point: Lsn,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    applier::progress::store(&tx, name, consistent_point).await?;
    tx.execute(
        "UPDATE pgmirror.mirrors SET state = 'streaming', updated_at = now() \
         WHERE mirror_name = $1",
        &[&name],
    )
    .await?;
    tx.commit().await
}

/// Removes the rows a shard keeps of a mirror's moves to other shards (see
/// `applier::shard`), if it has any.
///
/// # Errors
/// Query errors.
pub async fn forget_shard_moves(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    let moves: bool = client
        .query_one("SELECT to_regclass('pgmirror.shard_moves') IS NOT NULL", &[])
        .await?
        .get(0);
    if moves {
        client.execute("DELETE FROM pgmirror.shard_moves WHERE mirror_name = $1", &[&name]).await?;
    }
    Ok(())
}

/// Removes a mirror's row and its progress.
///
/// # Errors
/// Query errors.
pub async fn delete(client: &mut Client, name: &str) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    delete_row(&tx, name).await?;
    applier::progress::delete(&tx, name).await?;
    // Rows a shard keeps of moves to other shards (see `applier::shard`).
    let moves: bool =
        tx.query_one("SELECT to_regclass('pgmirror.shard_moves') IS NOT NULL", &[]).await?.get(0);
    if moves {
        tx.execute("DELETE FROM pgmirror.shard_moves WHERE mirror_name = $1", &[&name]).await?;
    }
    tx.commit().await
}

/// Removes a mirror's row alone, in the caller's transaction; true when there was one.
///
/// # Errors
/// Query errors.
pub async fn delete_row(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(tx.execute("DELETE FROM pgmirror.mirrors WHERE mirror_name = $1", &[&name]).await? > 0)
}
