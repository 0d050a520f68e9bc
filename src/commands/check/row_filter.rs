//! Row filters of a given publication (PostgreSQL 15+): a publication that publishes UPDATE or
//! DELETE may only filter on columns of the table's replica identity. PostgreSQL accepts such
//! a filter when the publication is created, but then refuses every UPDATE and DELETE on the
//! table on the source ("Column used in the publication WHERE expression is not part of the
//! replica identity").

use pgconn::quote_ident;
use tablesync::TableDef;
use tokio_postgres::Client;

use crate::preflight::Report;

const CHECK: &str = "row filters";

/// One published table whose filter uses columns outside its replica identity.
struct Offender {
    table: String,
    columns: Vec<String>,
}

/// Checks the row filters of `publication` on `tables`.
pub(super) async fn check(
    client: &Client,
    publication: &str,
    tables: &[TableDef],
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let supported: bool = client
        .query_one("SELECT current_setting('server_version_num')::int >= 150000", &[])
        .await?
        .get(0);
    if !supported {
        return Ok(());
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    // The filter's column references are the Var nodes of its stored expression. REPLICA
    // IDENTITY FULL covers every column; DEFAULT is the primary key; INDEX its index.
    let rows = client
        .query(
            "SELECT pr.prrelid, pr.prqual::text, c.relreplident::text, \
                    (SELECT i.indkey::int2[] FROM pg_catalog.pg_index i \
                      WHERE i.indrelid = c.oid AND CASE c.relreplident \
                        WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident \
                        ELSE false END LIMIT 1) \
             FROM pg_catalog.pg_publication p \
             JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid \
             JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid \
             WHERE p.pubname = $1 AND pr.prqual IS NOT NULL AND pr.prrelid = ANY($2) \
               AND (p.pubupdate OR p.pubdelete)",
            &[&publication, &oids],
        )
        .await?;
    let mut offenders = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        let qual: String = row.get(1);
        if row.get::<_, String>(2) == "f" {
            continue;
        }
        let identity: Vec<i16> = row.get::<_, Option<Vec<i16>>>(3).unwrap_or_default();
        let mut outside: Vec<i16> =
            referenced_columns(&qual).into_iter().filter(|a| !identity.contains(a)).collect();
        outside.sort_unstable();
        outside.dedup();
        if outside.is_empty() {
            continue;
        }
        let Some(table) = tables.iter().find(|t| t.oid == oid) else { continue };
        let names: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1 AND attnum = ANY($2) ORDER BY attnum",
                &[&oid, &outside],
            )
            .await?
            .iter()
            .map(|r| quote_ident(r.get::<_, &str>(0)))
            .collect();
        offenders.push(Offender { table: table.quoted(), columns: names });
    }
    if offenders.is_empty() {
        report.pass(
            CHECK,
            format!("publication {publication:?} filters only on replica identity columns"),
        );
        return Ok(());
    }
    let detail = offenders
        .iter()
        .map(|o| format!("{} filters on {}", o.table, o.columns.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    let fix = offenders
        .iter()
        .map(|o| format!("ALTER TABLE {} REPLICA IDENTITY FULL;", o.table))
        .collect::<Vec<_>>()
        .join(" ");
    report.fail(
        CHECK,
        format!(
            "publication {publication:?}: {detail}, outside the replica identity, so PostgreSQL \
             refuses every UPDATE and DELETE on {} on the source",
            if offenders.len() == 1 { "that table" } else { "those tables" }
        ),
        format!(
            "{fix} (or filter only on key columns: ALTER PUBLICATION {} SET TABLE ... WHERE (...))",
            quote_ident(publication)
        ),
    );
    Ok(())
}

/// The attribute numbers of the Var nodes in a stored expression (`pg_node_tree` text).
fn referenced_columns(node_tree: &str) -> Vec<i16> {
    // `:varattno ` (with the space) is the column; `:varattnosyn` is its syntactic twin.
    node_tree
        .split(":varattno ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String =
                rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            digits.parse().ok()
        })
        .filter(|a| *a > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_nodes_give_their_columns() {
        let tree = "{OPEXPR :opno 521 :args ({VAR :varno 1 :varattno 3 :vartype 23 \
                    :varattnosyn 3 :location 40} {CONST :consttype 23}) } \
                    {VAR :varno 1 :varattno 12 :varattnosyn 12}";
        assert_eq!(referenced_columns(tree), vec![3, 12]);
        assert!(referenced_columns("{CONST :consttype 16}").is_empty());
    }
}
