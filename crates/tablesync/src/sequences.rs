//! Keeping target sequences at the source's position.
//!
//! Sequence changes are not replicated by logical decoding, so a replica that is promoted
//! would hand out values already used on the source unless they are synced at initial copy
//! and periodically.

use pgconn::quote_ident;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::catalog::{SequenceDef, read_sequence};
use crate::error::{DbContext, Error};
use crate::ident::QualifiedName;

/// What a sync did: each sequence is tried on its own, so one that fails (a missing
/// privilege, say) neither hides nor stops the others.
#[derive(Debug, Default)]
pub struct SequenceReport {
    /// How many sequences were set on the target.
    pub synced: usize,
    /// The sequences that could not be read on the source or set on the target.
    pub failures: Vec<SequenceFailure>,
}

/// One sequence that could not be synced, with the fix when it is a missing privilege.
#[derive(Debug)]
pub struct SequenceFailure {
    /// The sequence, as the source names it.
    pub sequence: QualifiedName,
    /// What failed.
    pub error: Error,
    /// The statement that fixes it (a GRANT), when one is known.
    pub fix: Option<String>,
}

impl std::fmt::Display for SequenceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence {} not synced: {}", self.sequence, self.error)?;
        if let Some(source) = std::error::Error::source(&self.error) {
            write!(f, ": {source}")?;
        }
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Reads the current position of each sequence on the source and sets it on the target
/// (see [`apply_sequences`]).
pub async fn sync_sequences(
    source: &Client,
    target: &Client,
    sequences: &[SequenceDef],
) -> SequenceReport {
    let mut report = SequenceReport::default();
    let mut fresh = Vec::with_capacity(sequences.len());
    for seq in sequences {
        let mut seq = seq.clone();
        match read_sequence(source, &mut seq).await {
            Ok(()) => fresh.push(seq),
            Err(error) => {
                let fix = grant_fix(source, &error, "SELECT", &seq.qualified_name().quoted()).await;
                report.failures.push(SequenceFailure {
                    sequence: seq.qualified_name(),
                    error,
                    fix,
                });
            }
        }
    }
    let applied = apply_sequences(target, &fresh).await;
    report.synced = applied.synced;
    report.failures.extend(applied.failures);
    report
}

/// Sets each sequence on the target to the `last_value`/`is_called` recorded in `sequences`.
///
/// An identity sequence is found through its column (`pg_get_serial_sequence`), since the
/// target names it itself; other sequences keep their source name and are created with the
/// source's parameters when missing. Each sequence is tried on its own.
pub async fn apply_sequences(target: &Client, sequences: &[SequenceDef]) -> SequenceReport {
    let mut report = SequenceReport::default();
    for seq in sequences {
        match apply_sequence(target, seq).await {
            Ok(()) => report.synced += 1,
            Err((error, target_name)) => {
                let fix = match &target_name {
                    Some(name) => grant_fix(target, &error, "UPDATE", name).await,
                    None => None,
                };
                report.failures.push(SequenceFailure {
                    sequence: seq.qualified_name(),
                    error,
                    fix,
                });
            }
        }
    }
    report
}

/// Sets one sequence; on failure also returns the target's name for it, once known.
async fn apply_sequence(target: &Client, seq: &SequenceDef) -> Result<(), (Error, Option<String>)> {
    let target_name = match (&seq.used_by, seq.identity) {
        (Some((table, column)), true) => {
            identity_sequence(target, table, column).await.map_err(|e| (e, None))?
        }
        _ => {
            let name = seq.qualified_name();
            let quoted = name.quoted();
            // Look first: periodic syncs must not need CREATE privileges.
            let exists: bool = target
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted])
                .await
                .db_context(|| format!("looking up sequence {name} on the target"))
                .map_err(|e| (e, None))?
                .get(0);
            if !exists {
                target
                    .batch_execute(&create_sequence_sql(seq))
                    .await
                    .db_context(|| format!("creating sequence {name} on the target"))
                    .map_err(|e| (e, None))?;
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
        .db_context(|| format!("setting sequence {target_name} on the target"))
        .map_err(|e| (e, Some(target_name.clone())))?;
    Ok(())
}

/// `GRANT <privilege> ON SEQUENCE <name> TO <this role>;` when `error` is a missing privilege.
async fn grant_fix(client: &Client, error: &Error, privilege: &str, name: &str) -> Option<String> {
    let denied = std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::code)
        == Some(&SqlState::INSUFFICIENT_PRIVILEGE);
    if !denied {
        return None;
    }
    let role: String = client.query_one("SELECT current_user::text", &[]).await.ok()?.get(0);
    Some(format!("GRANT {privilege} ON SEQUENCE {name} TO {};", quote_ident(&role)))
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
    format!("CREATE SCHEMA IF NOT EXISTS {};\n{};", quote_ident(&seq.schema), sequence_sql(seq))
}

/// `CREATE SEQUENCE IF NOT EXISTS` with the source's parameters, as one statement.
pub(crate) fn sequence_sql(seq: &SequenceDef) -> String {
    format!(
        "CREATE SEQUENCE IF NOT EXISTS {name} AS {ty} INCREMENT BY {inc} MINVALUE {min} \
         MAXVALUE {max} START WITH {start} CACHE {cache} {cycle}",
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
