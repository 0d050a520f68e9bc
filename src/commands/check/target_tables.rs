//! The mirrored tables on the target: those it has match the source and can be written, those
//! it lacks can be created; DEFERRABLE keys and unindexed REPLICA IDENTITY FULL tables are
//! pointed out.

use std::fmt::Write as _;

use pgconn::quote_ident;
use tablesync::{TableDef, TargetOptions, TargetTable};
use tokio_postgres::Client;

use crate::preflight::Report;

/// Each source table exists compatibly on the target or can be created there.
pub(super) async fn check(
    client: &Client,
    tables: &[TableDef],
    plan: Option<&tablesync::SchemaPlan>,
    report: &mut Report,
) -> anyhow::Result<()> {
    const CHECK: &str = "target tables";
    let read_only = TargetOptions { create_missing: false };
    let (mut matching, mut missing, mut with_rows) = (0_usize, Vec::new(), Vec::new());
    let mut problems = Vec::new();
    let mut no_write = Vec::new();
    let (mut full_identity, mut unindexed) = (0_usize, Vec::new());
    let mut deferrable = Vec::new();
    for t in tables {
        match tablesync::ensure_target_table(client, t, &read_only).await {
            // `Created` cannot happen with `create_missing: false`.
            Ok(TargetTable::Existing { .. } | TargetTable::Created) => {
                matching += 1;
                if t.replica_identity == tablesync::ReplicaIdentity::Full {
                    full_identity += 1;
                    if !has_plain_btree_index(client, t).await? {
                        unindexed.push(t.quoted());
                    }
                }
                let row = client
                    .query_one(
                        "SELECT pg_catalog.has_table_privilege($1::text, 'INSERT') \
                            AND pg_catalog.has_table_privilege($1::text, 'UPDATE') \
                            AND pg_catalog.has_table_privilege($1::text, 'DELETE') \
                            AND pg_catalog.has_table_privilege($1::text, 'TRUNCATE')",
                        &[&t.quoted()],
                    )
                    .await?;
                if !row.get::<_, bool>(0) {
                    no_write.push(t.quoted());
                }
                if !tablesync::target_is_empty(client, &t.qualified_name()).await? {
                    with_rows.push(t.quoted());
                }
                deferrable.extend(deferrable_constraints(client, t).await?);
            }
            Err(tablesync::Error::TableNotFound { .. }) => missing.push(t),
            Err(e) => problems.push(e.to_string()),
        }
    }
    // Missing tables are created in their schema: that needs CREATE on it (or on the database
    // when the schema does not exist yet).
    let mut cannot_create = Vec::new();
    for t in &missing {
        let allowed: bool = client
            .query_one(
                "SELECT CASE WHEN NOT EXISTS \
                    (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1::text) \
                    THEN pg_catalog.has_database_privilege(current_database(), 'CREATE') \
                    ELSE pg_catalog.has_schema_privilege($1::text, 'CREATE') END",
                &[&t.schema],
            )
            .await?
            .get(0);
        if !allowed {
            cannot_create.push(quote_ident(&t.schema));
        }
    }
    cannot_create.sort();
    cannot_create.dedup();
    let mut detail = format!("{matching} exist and match, {} will be created", missing.len());
    if let Some(plan) = plan {
        let mirrored: Vec<_> = tables.iter().map(TableDef::qualified_name).collect();
        let also: Vec<String> = plan
            .created_tables()
            .iter()
            .filter(|t| !mirrored.contains(t))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|t| t.quoted()).collect();
            let _ = write!(detail, " ({})", names.join(", "));
        }
        if !also.is_empty() {
            let _ = write!(
                detail,
                ", with the partitioned tables and partitions they belong to: {}",
                also.join(", ")
            );
        }
    }
    if !with_rows.is_empty() {
        let _ = write!(
            detail,
            "; {} already hold rows (a fresh initial copy needs --truncate-target)",
            with_rows.join(", ")
        );
    }
    if !problems.is_empty() {
        report.fail(
            CHECK,
            format!("{detail}; {} do not match", problems.len()),
            problems.join(" | "),
        );
    } else if !no_write.is_empty() {
        report.fail(
            CHECK,
            format!("{detail}; cannot write into {}", no_write.join(", ")),
            format!(
                "GRANT INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {};",
                no_write.join(", "),
                who(client).await.0
            ),
        );
    } else if !cannot_create.is_empty() {
        report.fail(
            CHECK,
            format!("{detail}; no CREATE privilege in schema {}", cannot_create.join(", ")),
            format!(
                "GRANT CREATE ON SCHEMA {} TO {}; (or create the tables beforehand)",
                cannot_create.join(", "),
                who(client).await.0
            ),
        );
    } else {
        report.pass(CHECK, detail);
    }
    row_lookup_check(full_identity, &unindexed, report);
    deferrable_check(&deferrable, report);
    Ok(())
}

/// A DEFERRABLE unique, primary key or exclusion constraint of a target table: its name and
/// the statement that makes it immediate.
struct Deferrable {
    name: String,
    fix: String,
}

/// The target table's DEFERRABLE unique, primary key and exclusion constraints.
async fn deferrable_constraints(client: &Client, t: &TableDef) -> anyhow::Result<Vec<Deferrable>> {
    let rows = client
        .query(
            "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) \
             FROM pg_catalog.pg_constraint \
             WHERE conrelid = $1::text::regclass AND condeferrable AND contype IN ('p', 'u', 'x') \
             ORDER BY conname",
            &[&t.quoted()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name = quote_ident(r.get::<_, &str>(0));
            let definition = r.get::<_, &str>(1);
            // pg_get_constraintdef ends with " DEFERRABLE" and maybe " INITIALLY DEFERRED".
            let immediate = definition.strip_suffix(" INITIALLY DEFERRED").unwrap_or(definition);
            let immediate = immediate.strip_suffix(" DEFERRABLE").unwrap_or(immediate);
            Deferrable {
                fix: format!(
                    "ALTER TABLE {} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} {immediate};",
                    t.quoted()
                ),
                name: format!("{}.{name}", t.quoted()),
            }
        })
        .collect())
}

/// DEFERRABLE unique constraints are checked again by a trigger, which the apply session
/// skips: it runs with `session_replication_role = replica`, as PostgreSQL's own subscriber
/// does. So duplicates the primary allows would reach the target unchecked.
fn deferrable_check(deferrable: &[Deferrable], report: &mut Report) {
    const CHECK: &str = "deferrable constraints";
    if deferrable.is_empty() {
        return;
    }
    let names: Vec<&str> = deferrable.iter().map(|d| d.name.as_str()).collect();
    let fixes: Vec<&str> = deferrable.iter().map(|d| d.fix.as_str()).collect();
    report.warn(
        CHECK,
        format!(
            "{} {} DEFERRABLE on the target: the apply session (session_replication_role = \
             replica, as PostgreSQL's own subscriber) skips its recheck, so it is not enforced \
             on replicated rows",
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" }
        ),
        format!("on the target: {}", fixes.join(" ")),
    );
}

/// Whether the target table has a valid b-tree index on plain columns, which the row lookups
/// of a REPLICA IDENTITY FULL table can use.
async fn has_plain_btree_index(client: &Client, t: &TableDef) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_catalog.pg_am am ON am.oid = c.relam \
                 WHERE i.indrelid = $1::text::regclass AND i.indisvalid AND am.amname = 'btree' \
                   AND i.indpred IS NULL AND i.indexprs IS NULL)",
            &[&t.quoted()],
        )
        .await?;
    Ok(row.get(0))
}

/// REPLICA IDENTITY FULL tables (matched on the target by the whole old row) that have no
/// index there: every UPDATE and DELETE of theirs scans the whole target table.
fn row_lookup_check(full_identity: usize, unindexed: &[String], report: &mut Report) {
    const CHECK: &str = "row lookups";
    if full_identity == 0 {
        return;
    }
    if unindexed.is_empty() {
        report.pass(CHECK, "every REPLICA IDENTITY FULL table has an index on the target");
        return;
    }
    let fix: Vec<String> =
        unindexed.iter().map(|t| format!("CREATE INDEX ON {t} (<a selective column>);")).collect();
    report.warn(
        CHECK,
        format!(
            "{} {} REPLICA IDENTITY FULL and no index on the target: each UPDATE and DELETE \
             there scans the whole table",
            unindexed.join(", "),
            if unindexed.len() == 1 { "has" } else { "have" }
        ),
        format!("on the target: {}", fix.join(" ")),
    );
}

/// The session's role and database, quoted, for the GRANTs of a fix.
pub(super) async fn who(client: &Client) -> (String, String) {
    match client.query_one("SELECT current_user::text, current_database()::text", &[]).await {
        Ok(row) => (quote_ident(row.get(0)), quote_ident(row.get(1))),
        Err(_) => ("CURRENT_USER".to_owned(), "<target database>".to_owned()),
    }
}
