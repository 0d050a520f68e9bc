//! The target table behind each source relation, and repairing schema drift.
//!
//! A source column the target table lacks is added (`ALTER TABLE ... ADD COLUMN`, inside the
//! target transaction): builtin types are named by the target's `format_type`, other types by
//! the source's Type message or a [`TypeResolver`]. Any other difference (a target column the
//! source does not send, a changed type, a missing table) stops with [`ApplyError::Schema`]
//! before anything of that transaction is committed.

use std::collections::HashMap;
use std::sync::Arc;

use pgoutput_decoder::Relation;
use tokio_postgres::Client;

use crate::error::{ApplyError, SchemaChange};
use crate::target::TypeMap;

use super::PostgresTarget;
use pgconn::quote_ident;

use super::table::{self, ColInfo, RowType, TableInfo, UniqueHazard};

/// Names a type the target cannot name itself: a non-builtin source type OID (with its type
/// modifier) to an SQL type name, already quoted as needed. Used for `ADD COLUMN` on drift.
pub trait TypeResolver: Send + Sync {
    /// The SQL type name for a source type, if known.
    fn type_name(&self, type_oid: u32, type_modifier: i32) -> Option<String>;
}

/// What the target knows of the source's relations and types.
pub(super) struct Catalog {
    /// Per source relation id: the target table behind it, with its prepared statements.
    pub(super) tables: foldhash::HashMap<u32, TableInfo>,
    /// Non-builtin types the source announced, to name the types of columns it adds.
    types: TypeMap,
    resolver: Option<Arc<dyn TypeResolver>>,
    /// Whether schema drift is repaired here (not in a forked session: its ALTER TABLE would
    /// hold a lock the main session may need before the fork can commit).
    alters_schema: bool,
}

impl Catalog {
    pub(super) fn new() -> Self {
        Catalog {
            tables: foldhash::HashMap::default(),
            types: TypeMap::new(),
            resolver: None,
            alters_schema: true,
        }
    }

    /// For a forked session: the same resolver, and no schema repair.
    pub(super) fn for_fork(&self) -> Self {
        Catalog { resolver: self.resolver.clone(), alters_schema: false, ..Catalog::new() }
    }

    pub(super) fn set_resolver(&mut self, resolver: Arc<dyn TypeResolver>) {
        self.resolver = Some(resolver);
    }

    /// Takes in the types the source announced so far.
    pub(super) fn learn_types(&mut self, types: &TypeMap) {
        for (oid, t) in types {
            self.types.entry(*oid).or_insert_with(|| t.clone()).clone_from(t);
        }
    }
}

const ATTRIBUTES_SQL: &str = "SELECT a.attname::text, a.atttypid, \
        format_type(a.atttypid, a.atttypmod), \
        coalesce(t.typcategory = 'G' OR t.oid IN (114, 142) \
            OR (t.typcategory = 'A' AND (e.typcategory = 'G' OR e.oid IN (114, 142))), false), \
        t.typcategory = 'A', a.attidentity = 'a', a.attgenerated <> '' \
    FROM pg_catalog.pg_attribute a \
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
    LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// A table's row type and its attributes (name, type), in the order of its binary form.
const ROW_TYPE_SQL: &str = "SELECT c.reltype, a.attname::text, a.atttypid \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
    WHERE c.oid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// Per immediate unique or exclusion index of a table: whether it is an exclusion, expression
/// or partial index, and its columns by name (sorted).
const UNIQUE_INDEXES_SQL: &str = "SELECT i.indisexclusion OR i.indexprs IS NOT NULL \
        OR i.indpred IS NOT NULL, \
        coalesce(array_agg(a.attname::text ORDER BY a.attname::text) \
            FILTER (WHERE a.attname IS NOT NULL), '{}') \
    FROM pg_catalog.pg_index i \
    LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
    WHERE i.indrelid = $1::text::regclass AND (i.indisexclusion OR (i.indisunique AND i.indimmediate)) \
    GROUP BY i.indexrelid, i.indisexclusion, i.indexprs IS NOT NULL, i.indpred IS NOT NULL";

/// Source type OIDs below this are builtin and mean the same on every server.
const FIRST_NON_BUILTIN_OID: u32 = 10_000;

/// Same relation shape (everything but the xid it arrived with).
fn same_shape(a: &Relation, b: &Relation) -> bool {
    a.rel_id == b.rel_id
        && a.namespace == b.namespace
        && a.name == b.name
        && a.replica_identity == b.replica_identity
        && a.columns == b.columns
}

impl PostgresTarget {
    /// Makes sure `tables[rel.rel_id]` matches `rel`, checking (and repairing) the target
    /// table when the relation is new or changed.
    pub(super) async fn table(&mut self, rel: &Arc<Relation>) -> Result<(), ApplyError> {
        if let Some(t) = self.catalog.tables.get_mut(&rel.rel_id) {
            if Arc::ptr_eq(&t.rel, rel) {
                return Ok(());
            }
            if same_shape(&t.rel, rel) {
                // The primary resends a Relation after any cache invalidation (an ANALYZE,
                // say): the buffered run goes on, or it would be cut in two for nothing.
                t.rel = Arc::clone(rel);
                for run in self.runs.iter_mut().filter(|r| r.rel_id == rel.rel_id) {
                    run.rel = Arc::clone(rel);
                }
                return Ok(());
            }
        }
        // A run of the old shape is stale: it goes out first. (Runs of other tables may stay
        // buffered; `describe` ends an open COPY, which would leave the catalog query
        // waiting for ever.)
        self.end_table_run(rel.rel_id).await?;
        let cols = self.describe(rel).await?;
        let mut info = TableInfo::new(Arc::clone(rel), cols);
        info.unique_hazard = self.unique_hazard(&info).await?;
        info.row_type = self.row_type(&info).await?;
        self.catalog.tables.insert(rel.rel_id, info);
        Ok(())
    }

    /// What the target table's row-by-row checked unique and exclusion indexes, other than
    /// one on exactly the identity key columns, allow (see [`UniqueHazard`]).
    async fn unique_hazard(&mut self, t: &TableInfo) -> Result<UniqueHazard, ApplyError> {
        let mut key: Vec<&str> = t.key.iter().map(|&k| t.rel.columns[k].name.as_str()).collect();
        key.sort_unstable();
        self.quiesce().await?;
        let rows = self
            .session
            .client
            .query(UNIQUE_INDEXES_SQL, &[&t.name.as_ref()])
            .await
            .map_err(|e| ApplyError::target(format!("reading the indexes of {}", t.name), e))?;
        let mut guard: Vec<usize> = Vec::new();
        let mut other = false;
        for r in &rows {
            let exclusion_or_expr: bool = r.get(0);
            let cols: Vec<String> = r.get(1);
            if exclusion_or_expr || key.is_empty() {
                return Ok(UniqueHazard::RowByRow);
            }
            if cols == key {
                continue;
            }
            other = true;
            for name in &cols {
                // A column the publication leaves out never changes through it.
                if let Some(i) = t.rel.columns.iter().position(|c| &c.name == name) {
                    guard.push(i);
                }
            }
        }
        guard.sort_unstable();
        guard.dedup();
        Ok(if other { UniqueHazard::Columns(guard.into()) } else { UniqueHazard::None })
    }

    /// The target table's row type, when a table has array columns (only they need it).
    async fn row_type(&mut self, t: &TableInfo) -> Result<Option<RowType>, ApplyError> {
        if !t.cols.iter().any(|c| c.is_array) {
            return Ok(None);
        }
        self.quiesce().await?;
        let rows =
            self.session.client.query(ROW_TYPE_SQL, &[&t.name.as_ref()]).await.map_err(|e| {
                ApplyError::target(format!("reading the row type of {}", t.name), e)
            })?;
        let mut oid = 0;
        let mut attrs = Vec::with_capacity(rows.len());
        for r in &rows {
            oid = r.get(0);
            let name: String = r.get(1);
            if name == "ordinality" {
                // Would clash with `WITH ORDINALITY`'s column.
                return Ok(None);
            }
            attrs.push((t.rel.columns.iter().position(|c| c.name == name), r.get(2)));
        }
        Ok((oid != 0).then_some(RowType { oid, attrs }))
    }

    /// Reads the target table's columns, adds source columns it lacks, and matches them.
    async fn describe(&mut self, rel: &Arc<Relation>) -> Result<Vec<ColInfo>, ApplyError> {
        let name = table::qualified_name(rel);
        let schema_err = |detail: String| ApplyError::Schema { table: name.clone(), detail };
        self.quiesce().await?;
        let oid: Option<u32> = self
            .session
            .client
            .query_one("SELECT to_regclass($1)::oid", &[&name])
            .await
            .map_err(|e| ApplyError::target(format!("looking up {name}"), e))?
            .get(0);
        let changed = |change: SchemaChange| ApplyError::SchemaChanged {
            schema: rel.namespace.clone(),
            table: rel.name.clone(),
            change,
        };
        let Some(oid) = oid else {
            if self.cfg.report_schema_changes {
                return Err(changed(SchemaChange::TableMissing));
            }
            return Err(schema_err("the table does not exist on the target".into()));
        };
        for attempt in 0..2 {
            let rows = self
                .session
                .client
                .query(ATTRIBUTES_SQL, &[&oid])
                .await
                .map_err(|e| ApplyError::target(format!("reading the columns of {name}"), e))?;
            struct Attr {
                info: ColInfo,
                generated: bool,
            }
            let mut attrs: HashMap<String, Attr> = HashMap::new();
            for r in &rows {
                let col: String = r.get(0);
                let info = ColInfo {
                    quoted: quote_ident(&col),
                    type_oid: r.get(1),
                    type_name: r.get(2),
                    text_compare: r.get(3),
                    is_array: r.get(4),
                    identity_always: r.get(5),
                };
                attrs.insert(col, Attr { info, generated: r.get(6) });
            }
            let mut missing = Vec::new();
            for c in &rel.columns {
                match attrs.get(&c.name) {
                    None => missing.push(c),
                    Some(a) if a.generated => {
                        return Err(schema_err(format!(
                            "column {:?} is generated on the target",
                            c.name
                        )));
                    }
                    Some(a)
                        if c.type_oid < FIRST_NON_BUILTIN_OID && a.info.type_oid != c.type_oid =>
                    {
                        if self.cfg.report_schema_changes {
                            return Err(changed(SchemaChange::ColumnTypeChanged {
                                column: c.name.clone(),
                            }));
                        }
                        return Err(schema_err(format!(
                            "column {:?} has type {} on the target but type OID {} on the source",
                            c.name, a.info.type_name, c.type_oid
                        )));
                    }
                    Some(_) => {}
                }
            }
            for (col, a) in &attrs {
                if !a.generated && !rel.columns.iter().any(|c| &c.name == col) {
                    return Err(schema_err(format!(
                        "column {col:?} exists on the target but the source does not send it"
                    )));
                }
            }
            if missing.is_empty() {
                return Ok(rel
                    .columns
                    .iter()
                    .map(|c| attrs.remove(&c.name).expect("checked above").info)
                    .collect());
            }
            if attempt > 0 {
                return Err(schema_err("columns still missing after ADD COLUMN".into()));
            }
            if self.cfg.report_schema_changes && self.catalog.alters_schema {
                let names = missing.iter().map(|c| c.name.clone()).collect();
                return Err(changed(SchemaChange::ColumnsAdded(names)));
            }
            if !self.catalog.alters_schema {
                return Err(schema_err("columns missing, and this session adds none".into()));
            }
            // Schema drift: add the columns inside the target transaction, then look again.
            self.ensure_txn().await?;
            self.quiesce().await?;
            for c in missing {
                let ty = Self::type_name(
                    &self.session.client,
                    &self.catalog.types,
                    self.catalog.resolver.as_ref(),
                    c.type_oid,
                    c.type_modifier,
                )
                .await?
                .ok_or_else(|| {
                    schema_err(format!(
                        "cannot name type OID {} of new column {:?}",
                        c.type_oid, c.name
                    ))
                })?;
                let sql = format!("ALTER TABLE {name} ADD COLUMN {} {ty}", quote_ident(&c.name));
                tracing::info!(table = %name, column = %c.name, %ty, "adding a column the source gained");
                self.session
                    .client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| ApplyError::target(format!("adding column to {name}"), e))?;
                self.stats.columns_added += 1;
            }
        }
        unreachable!("the loop returns")
    }

    /// An SQL name for a source type. (Not a method: a `&self` held across an await would
    /// need the target to be `Sync`, and in-flight statement futures are not.)
    async fn type_name(
        client: &Client,
        types: &TypeMap,
        resolver: Option<&Arc<dyn TypeResolver>>,
        oid: u32,
        typmod: i32,
    ) -> Result<Option<String>, ApplyError> {
        if oid < FIRST_NON_BUILTIN_OID {
            let row = client
                .query_one("SELECT format_type($1, $2)", &[&oid, &typmod])
                .await
                .map_err(|e| ApplyError::target("naming a builtin type", e))?;
            return Ok(row.get(0));
        }
        if let Some(t) = types.get(&oid) {
            let ns = if t.namespace.is_empty() { "pg_catalog" } else { t.namespace.as_str() };
            return Ok(Some(format!("{}.{}", quote_ident(ns), quote_ident(&t.name))));
        }
        Ok(resolver.and_then(|r| r.type_name(oid, typmod)))
    }
}
