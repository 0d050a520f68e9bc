//! Keeping target sequences at the source's position.
//!
//! Sequence changes are not replicated by logical decoding, so a replica that is promoted
//! would hand out values already used on the source unless they are synced at initial copy
//! and periodically.

use tokio_postgres::Client;

use crate::catalog::{SequenceDef, refresh_sequences};
use crate::error::{DbContext, Error};
use crate::ident::{QualifiedName, quote_ident};

/// Reads the current position of each sequence on the source and sets it on the target
/// (see [`apply_sequences`]). Returns how many sequences were set.
///
/// # Errors
/// [`Error::Db`] or [`Error::TargetSequenceMissing`].
pub async fn sync_sequences(
    source: &Client,
    target: &Client,
    sequences: &[SequenceDef],
) -> Result<usize, Error> {
    let mut fresh = sequences.to_vec();
    refresh_sequences(source, &mut fresh).await?;
    apply_sequences(target, &fresh).await
}

/// Sets each sequence on the target to the `last_value`/`is_called` recorded in `sequences`.
///
/// An identity sequence is found through its column (`pg_get_serial_sequence`), since the
/// target names it itself; other sequences keep their source name and are created with the
/// source's parameters when missing. Returns how many sequences were set.
///
/// # Errors
/// [`Error::TargetSequenceMissing`] when an identity column on the target has no sequence;
/// [`Error::Db`].
pub async fn apply_sequences(target: &Client, sequences: &[SequenceDef]) -> Result<usize, Error> {
    for seq in sequences {
        let target_name = match (&seq.used_by, seq.identity) {
            (Some((table, column)), true) => identity_sequence(target, table, column).await?,
            _ => {
                let name = seq.qualified_name();
                let quoted = name.quoted();
                // Look first: periodic syncs must not need CREATE privileges.
                let exists: bool = target
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted])
                    .await
                    .db_context(|| format!("looking up sequence {name} on the target"))?
                    .get(0);
                if !exists {
                    target
                        .batch_execute(&create_sequence_sql(seq))
                        .await
                        .db_context(|| format!("creating sequence {name} on the target"))?;
                }
                quoted
            }
        };
        target
            .execute(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&target_name, &seq.last_value, &seq.is_called],
            )
            .await
            .db_context(|| format!("setting sequence {target_name} on the target"))?;
    }
    Ok(sequences.len())
}

async fn identity_sequence(
    target: &Client,
    table: &QualifiedName,
    column: &str,
) -> Result<String, Error> {
    let row = target
        .query_one("SELECT pg_catalog.pg_get_serial_sequence($1, $2)", &[&table.quoted(), &column])
        .await
        .db_context(|| format!("finding the sequence of {table}.\"{column}\" on the target"))?;
    row.get::<_, Option<String>>(0).ok_or_else(|| Error::TargetSequenceMissing {
        table: table.clone(),
        column: column.to_owned(),
    })
}

/// `CREATE SEQUENCE IF NOT EXISTS` with the source's parameters (schema created too).
pub fn create_sequence_sql(seq: &SequenceDef) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\n\
         CREATE SEQUENCE IF NOT EXISTS {name} AS {ty} INCREMENT BY {inc} MINVALUE {min} \
         MAXVALUE {max} START WITH {start} CACHE {cache} {cycle};",
        schema = quote_ident(&seq.schema),
        name = seq.qualified_name().quoted(),
        ty = seq.data_type,
        inc = seq.increment,
        min = seq.min_value,
        max = seq.max_value,
        start = seq.start,
        cache = seq.cache,
        cycle = if seq.cycle { "CYCLE" } else { "NO CYCLE" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sequence_sql_quotes_and_keeps_parameters() {
        let seq = SequenceDef {
            schema: "My Schema".into(),
            name: "s\"q".into(),
            data_type: "integer".into(),
            start: 5,
            increment: -2,
            min_value: -100,
            max_value: 10,
            cache: 3,
            cycle: true,
            last_value: 1,
            is_called: true,
            used_by: None,
            identity: false,
        };
        let sql = create_sequence_sql(&seq);
        assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS \"My Schema\";"), "{sql}");
        assert!(sql.contains("\"My Schema\".\"s\"\"q\" AS integer INCREMENT BY -2"), "{sql}");
        assert!(sql.contains("MINVALUE -100 MAXVALUE 10 START WITH 5 CACHE 3 CYCLE;"), "{sql}");
    }
}
