//! Sequence privileges: the mirror reads each sequence of the mirrored tables on the source
//! (`SELECT`) and sets it on the target (`setval`, which needs `UPDATE`). Without them the
//! sequences stay behind, and a replica that takes over hands out ids already used.

use pgconn::{ConnConfig, quote_ident};
use tablesync::{SequenceDef, TableDef};
use tokio_postgres::Client;

use crate::display::count;
use crate::preflight::{Report, pg_error_text};

const CHECK: &str = "sequence privileges";

/// Checks both sides for every sequence the tables use; the target only when it is given and
/// reachable (its connection check reports otherwise).
pub(super) async fn check(
    source: &ConnConfig,
    target: Option<&ConnConfig>,
    tables: &[TableDef],
    report: &mut Report,
) {
    let Ok(source) = pgconn::connect_sql(source).await else { return };
    let target = match target {
        Some(cfg) => pgconn::connect_sql(cfg).await.ok(),
        None => None,
    };
    if let Err(e) = run(&source, target.as_ref(), tables, report).await {
        report.fail(CHECK, pg_error_text(&e), "see the error above");
    }
}

async fn run(
    source: &Client,
    target: Option<&Client>,
    tables: &[TableDef],
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let seqs = match tablesync::table_sequences(source, tables).await {
        Ok(seqs) => seqs,
        Err(e) => {
            report.fail(CHECK, e.to_string(), "see the error above");
            return Ok(());
        }
    };
    if seqs.is_empty() {
        report.pass(CHECK, "the tables use no sequences");
        return Ok(());
    }
    let mut fixes = Vec::new();
    let mut problems = Vec::new();
    let role = current_user(source).await?;
    let unreadable =
        lacking(source, seqs.iter().map(|s| s.qualified_name().quoted()), "SELECT").await?;
    if !unreadable.is_empty() {
        problems.push(format!("the source role cannot read {}", unreadable.join(", ")));
        fixes.push(format!(
            "on the source: GRANT SELECT ON SEQUENCE {} TO {};",
            unreadable.join(", "),
            quote_ident(&role)
        ));
    }
    if let Some(target) = target {
        let mut names = Vec::new();
        for seq in &seqs {
            if let Some(name) = target_name(target, seq).await? {
                names.push(name);
            }
        }
        let role = current_user(target).await?;
        let unsettable = lacking(target, names.into_iter(), "UPDATE").await?;
        if !unsettable.is_empty() {
            problems.push(format!("the target role cannot set {}", unsettable.join(", ")));
            fixes.push(format!(
                "on the target: GRANT UPDATE ON SEQUENCE {} TO {};",
                unsettable.join(", "),
                quote_ident(&role)
            ));
        }
    }
    let n = seqs.len();
    if problems.is_empty() {
        let sides = if target.is_some() {
            "read on the source and set on the target"
        } else {
            "read on the source"
        };
        report.pass(CHECK, format!("{} can be {sides}", count(n, "sequence", "sequences")));
    } else {
        report.fail(
            CHECK,
            format!(
                "{}: they would not be kept in step, and a replica that takes over would reuse ids",
                problems.join("; ")
            ),
            fixes.join(" "),
        );
    }
    Ok(())
}

async fn current_user(client: &Client) -> Result<String, tokio_postgres::Error> {
    Ok(client.query_one("SELECT current_user::text", &[]).await?.get(0))
}

/// The sequences among `names` (quoted, as `regclass` text) this role lacks `privilege` on.
async fn lacking(
    client: &Client,
    names: impl Iterator<Item = String>,
    privilege: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for name in names {
        let ok: bool = client
            .query_one(
                "SELECT pg_catalog.has_sequence_privilege($1::text, $2::text)",
                &[&name, &privilege],
            )
            .await?
            .get(0);
        if !ok {
            out.push(name);
        }
    }
    Ok(out)
}

/// What the target calls `seq`, if it exists there yet (pgmirror creates missing ones; an
/// identity column's sequence is named by the target itself).
async fn target_name(
    target: &Client,
    seq: &SequenceDef,
) -> Result<Option<String>, tokio_postgres::Error> {
    if let (Some((table, column)), true) = (&seq.used_by, seq.identity) {
        let row = target
            .query_one(
                "SELECT CASE WHEN to_regclass($1) IS NOT NULL \
                        THEN pg_catalog.pg_get_serial_sequence($1, $2) END",
                &[&table.quoted(), column],
            )
            .await?;
        return Ok(row.get(0));
    }
    let quoted = seq.qualified_name().quoted();
    let exists: bool =
        target.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted]).await?.get(0);
    Ok(exists.then_some(quoted))
}
