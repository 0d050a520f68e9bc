//! Foreign keys around the initial copy: the cycle that a copy checking foreign keys cannot
//! load table by table, and the validation of the keys created NOT VALID once rows are in.

use std::collections::HashMap;

use pgconn::quote_ident;
use tokio_postgres::Client;

use crate::catalog::TableDef;
use crate::error::{DbContext, Error};
use crate::ident::QualifiedName;

/// An edge of the foreign-key graph: `from` references `to` through constraint `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edge {
    pub(super) from: QualifiedName,
    pub(super) to: QualifiedName,
    pub(super) name: String,
    pub(super) definition: String,
}

/// One cycle among `edges` (self-references excluded: one table's rows all arrive before its
/// foreign keys are checked), as edges in order, if there is any.
pub(super) fn find_cycle(edges: &[Edge]) -> Option<Vec<&Edge>> {
    let mut out: HashMap<&QualifiedName, Vec<&Edge>> = HashMap::new();
    for e in edges.iter().filter(|e| e.from != e.to) {
        out.entry(&e.from).or_default().push(e);
    }
    let mut nodes: Vec<&QualifiedName> = out.keys().copied().collect();
    nodes.sort();
    // 0: unvisited, 1: on the current path, 2: done.
    let mut state: HashMap<&QualifiedName, u8> = HashMap::new();
    let mut path: Vec<&Edge> = Vec::new();
    for start in nodes {
        if let Some(cycle) = visit(start, &out, &mut state, &mut path) {
            return Some(cycle);
        }
    }
    None
}

fn visit<'a>(
    node: &'a QualifiedName,
    out: &HashMap<&'a QualifiedName, Vec<&'a Edge>>,
    state: &mut HashMap<&'a QualifiedName, u8>,
    path: &mut Vec<&'a Edge>,
) -> Option<Vec<&'a Edge>> {
    match state.get(node) {
        Some(1) => {
            let at = path.iter().position(|e| &e.from == node).unwrap_or(0);
            return Some(path[at..].to_vec());
        }
        Some(_) => return None,
        None => {}
    }
    state.insert(node, 1);
    for e in out.get(node).into_iter().flatten() {
        path.push(e);
        if let Some(cycle) = visit(&e.to, out, state, path) {
            return Some(cycle);
        }
        path.pop();
    }
    state.insert(node, 2);
    None
}

/// A foreign key left NOT VALID because its rows violate it.
#[derive(Debug)]
pub struct ValidationFailure {
    /// The table the foreign key is on.
    pub table: QualifiedName,
    /// The constraint's name.
    pub constraint: String,
    /// The server's error.
    pub error: Error,
}

impl std::fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "foreign key \"{}\" of {} stays NOT VALID on the target (it still checks new rows \
             outside replication)",
            self.constraint, self.table
        )?;
        if let Some(source) = std::error::Error::source(&self.error) {
            write!(f, ": {source}")?;
        }
        write!(
            f,
            "; fix: remove the rows it reports, then ALTER TABLE {} VALIDATE CONSTRAINT {};",
            self.table,
            quote_ident(&self.constraint)
        )
    }
}

/// Validates, after the initial copy, the NOT VALID foreign keys of the mirrored tables on the
/// target whose namesakes on the source are valid: those pgmirror created NOT VALID so that
/// the copy loads rows without checking each one. One pass over each table checks all rows.
/// Each key is tried on its own; rows the source's row filter split from their parents make
/// one fail, and it is returned (the key stays NOT VALID).
///
/// # Errors
/// [`Error::Db`] if the catalogs cannot be read.
pub async fn validate_foreign_keys(
    source: &Client,
    target: &Client,
    tables: &[TableDef],
) -> Result<Vec<ValidationFailure>, Error> {
    let pending = foreign_keys_of(target, tables, false)
        .await
        .db_context(|| "reading NOT VALID foreign keys on the target".to_owned())?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let valid_on_source = foreign_keys_of(source, tables, true)
        .await
        .db_context(|| "reading foreign keys on the source".to_owned())?;
    let mut failures = Vec::new();
    for (table, constraint) in pending {
        if !valid_on_source.contains(&(table.clone(), constraint.clone())) {
            continue;
        }
        let sql = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            table.quoted(),
            quote_ident(&constraint)
        );
        if let Err(e) = target.batch_execute(&sql).await {
            let error =
                Error::Db { context: format!("validating {constraint:?} of {table}"), source: e };
            failures.push(ValidationFailure { table, constraint, error });
        }
    }
    Ok(failures)
}

/// The foreign keys of `tables` that are (or are not) validated, by table and name.
async fn foreign_keys_of(
    client: &Client,
    tables: &[TableDef],
    validated: bool,
) -> Result<Vec<(QualifiedName, String)>, tokio_postgres::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, k.conname::text \
             FROM unnest($1::text[], $2::text[]) AS w(schema, name) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.name \
             JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid AND k.contype = 'f' \
             WHERE k.convalidated = $3 ORDER BY 1, 2, 3",
            &[&schemas, &names, &validated],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get::<_, String>(2),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, name: &str) -> Edge {
        Edge {
            from: QualifiedName::new("s", from),
            to: QualifiedName::new("s", to),
            name: name.into(),
            definition: String::new(),
        }
    }

    #[test]
    fn finds_a_cycle_and_ignores_self_references() {
        let edges = vec![
            edge("staff", "staff", "manager"),
            edge("customer", "store", "c_store"),
            edge("store", "staff", "s_manager"),
            edge("staff", "store", "st_store"),
        ];
        let cycle: Vec<&str> =
            find_cycle(&edges).unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(cycle, ["s_manager", "st_store"]);
        assert!(find_cycle(&edges[..3]).is_none());
        assert!(find_cycle(&[edge("a", "a", "self")]).is_none());
    }
}
