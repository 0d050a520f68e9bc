//! What we know about one target table: its columns matched to the source relation's, and the
//! SQL we generate for it. Every identifier is quoted; values only ever travel as parameters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use pgconn::quote_ident;
use pgoutput_decoder::{Relation, ReplicaIdentity};
use tokio_postgres::Statement;

/// `"schema"."table"` for a source relation (an empty namespace means `pg_catalog`).
pub(crate) fn qualified_name(rel: &Relation) -> String {
    let ns = if rel.namespace.is_empty() { "pg_catalog" } else { rel.namespace.as_str() };
    format!("{}.{}", quote_ident(ns), quote_ident(&rel.name))
}

/// One source column as it exists on the target.
#[derive(Debug, Clone)]
pub(crate) struct ColInfo {
    /// Quoted column name.
    pub(crate) quoted: String,
    /// Target type, as `format_type` prints it (already quoted where needed).
    pub(crate) type_name: String,
    /// Target type OID (the element OID of binary arrays).
    pub(crate) type_oid: u32,
    /// Compare as text when matching a whole row: the type has no sensible equality
    /// (json, xml, geometric types, arrays of those).
    pub(crate) text_compare: bool,
    /// The type is an array (cannot travel inside `unnest` arrays).
    pub(crate) is_array: bool,
    /// `GENERATED ALWAYS AS IDENTITY`: cannot be set by UPDATE.
    pub(crate) identity_always: bool,
}

/// Whether two values of the type that `=` calls equal always print the same: then matching a
/// whole old row needs no text comparison besides `=`. Not so for numeric (`1.0 = 1.00`),
/// floats (`0 = -0`), interval (`'1 day' = '24 hours'`) and most others.
pub(crate) fn equality_is_identity(type_oid: u32) -> bool {
    // bool, bytea, "char", name, int8, int2, int4, text, oid, bpchar, varchar, date, time,
    // timestamp, timestamptz, uuid.
    matches!(type_oid, 16..=21 | 23 | 25 | 26 | 1042 | 1043 | 1082 | 1083 | 1114 | 1184 | 2950)
}

/// `lhs` (column `c`'s value) matched to `rhs`: as text for a type without a sensible `=`;
/// with `exact`, also as text where `=` is coarser than the output (see
/// [`equality_is_identity`]), after `=` so that an index or a hash join serves it.
fn value_match(c: &ColInfo, lhs: &str, rhs: &str, exact: bool) -> String {
    let text = format!("{lhs}::text = {rhs}::text");
    if c.text_compare {
        text
    } else if exact && !equality_is_identity(c.type_oid) {
        format!("{lhs} = {rhs} AND {text}")
    } else {
        format!("{lhs} = {rhs}")
    }
}

/// How a single-row update or delete finds its row by one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Match {
    /// Not compared (not in the key, or an unchanged TOAST value under FULL identity).
    Skip,
    /// Equal to a parameter: `=`, which an index on the column can serve.
    Value,
    /// `IS NULL` (FULL identity: the old row had NULL there).
    Null,
}

/// Which statement shape, for the per-table statement cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StmtKey {
    /// Single-row insert of all columns.
    Insert,
    /// A single-row statement that also writes the progress row: a whole target transaction.
    Committing(Box<StmtKey>),
    /// Single-row update: columns set, columns matched (by key or whole row).
    Update { set: Box<[bool]>, matched: Box<[Match]> },
    /// Single-row delete: columns matched.
    Delete { matched: Box<[Match]> },
    /// `COPY` of all columns, binary or text.
    Copy { binary: bool },
    /// Multi-row insert over one array per column, of binary (element) or text values.
    BatchInsert { binary: bool },
    /// Set-based update over arrays: set columns, per-column array in binary (element) form,
    /// and whether it is guarded (see [`TableInfo::batch_update_sql`]).
    BatchUpdate { set: Box<[bool]>, binary: Box<[bool]>, guarded: bool },
    /// Set-based update over one array of the row type: set columns, guarded.
    RowUpdate { set: Box<[bool]>, guarded: bool },
    /// Set-based delete over arrays of the key columns.
    BatchDelete { binary: Box<[bool]> },
    /// Set-based delete of whole rows (REPLICA IDENTITY FULL): how each column is matched,
    /// and per matched value column whether its array is binary.
    FullBatchDelete { matched: Box<[Match]>, binary: Box<[bool]> },
    /// Set-based update of whole rows (REPLICA IDENTITY FULL): as `FullBatchDelete`, with the
    /// set columns and whether each one's array is binary.
    FullBatchUpdate {
        matched: Box<[Match]>,
        binary: Box<[bool]>,
        set: Box<[bool]>,
        set_binary: Box<[bool]>,
    },
    /// Whether a row with the key exists.
    Exists,
}

/// A target table matched to a source relation.
#[derive(Debug)]
pub(crate) struct TableInfo {
    /// The relation this was built for (compared by pointer: a new Relation message makes a
    /// new `Arc`).
    pub(crate) rel: Arc<Relation>,
    /// `"schema"."table"`.
    pub(crate) name: Arc<str>,
    /// One entry per source column, in the relation's order.
    pub(crate) cols: Vec<ColInfo>,
    /// Indices of the replica identity key columns (empty for FULL / NOTHING).
    pub(crate) key: Vec<usize>,
    /// Prepared statements.
    pub(crate) stmts: HashMap<StmtKey, Statement>,
    /// Any column is `GENERATED ALWAYS AS IDENTITY`.
    pub(crate) has_identity_always: bool,
    /// What the target's unique and exclusion indexes other than the key's allow.
    pub(crate) unique_hazard: UniqueHazard,
    /// The target table's row type, for set-based updates of array columns (which cannot
    /// travel in `unnest` arrays of their own); `None` when unknown or unusable.
    pub(crate) row_type: Option<RowType>,
    /// The target refused a single-row statement that also writes the progress row (a rule
    /// that rewrites the table's statements into several refuses a `WITH` around them): the
    /// table's one-row transactions go with `BEGIN` and `COMMIT`.
    pub(crate) carry_refused: bool,
}

/// A table's composite row type: rows of it carry any column values, arrays included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowType {
    /// `pg_class.reltype`.
    pub(crate) oid: u32,
    /// Per attribute of the row type (not dropped, in `attnum` order): the source column
    /// it holds, if any, and its type OID.
    pub(crate) attrs: Vec<(Option<usize>, u32)>,
}

/// How unique and exclusion indexes other than the identity key's constrain set-based updates.
///
/// PostgreSQL checks them row by row, as each row is written: a value moving from one row to
/// another in one statement may collide with the row that has not given it up yet, although
/// the source, changing one row at a time in its own order, never held it twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum UniqueHazard {
    /// Nothing but the key: updates of distinct keys commute.
    #[default]
    None,
    /// Plain unique indexes over these columns. A set-based update applies only the rows
    /// that keep their values in them (such rows commute with every other update); the
    /// rest go one at a time, in source order.
    Columns(Box<[usize]>),
    /// Exclusion, expression or partial indexes: every update goes one at a time.
    RowByRow,
}

impl TableInfo {
    pub(crate) fn new(rel: Arc<Relation>, cols: Vec<ColInfo>) -> Self {
        let key =
            if matches!(rel.replica_identity, ReplicaIdentity::Default | ReplicaIdentity::Index) {
                rel.columns.iter().enumerate().filter(|(_, c)| c.is_key).map(|(i, _)| i).collect()
            } else {
                Vec::new()
            };
        let has_identity_always = cols.iter().any(|c| c.identity_always);
        TableInfo {
            name: qualified_name(&rel).into(),
            rel,
            cols,
            key,
            stmts: HashMap::new(),
            has_identity_always,
            unique_hazard: UniqueHazard::None,
            row_type: None,
            carry_refused: false,
        }
    }

    /// Whether rows are found by comparing the whole old row (REPLICA IDENTITY FULL).
    pub(crate) fn full_identity(&self) -> bool {
        self.rel.replica_identity == ReplicaIdentity::Full
    }

    fn col_list(&self) -> String {
        let mut s = String::new();
        for (i, c) in self.cols.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(&c.quoted);
        }
        s
    }

    /// `INSERT INTO t (a, b) VALUES ($1, $2)`.
    pub(crate) fn insert_sql(&self) -> String {
        let mut sql = format!("INSERT INTO {} ({})", self.name, self.col_list());
        if self.has_identity_always {
            sql.push_str(" OVERRIDING SYSTEM VALUE");
        }
        sql.push_str(" VALUES (");
        for i in 0..self.cols.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", i + 1);
        }
        sql.push(')');
        sql
    }

    /// `COPY t (a, b) FROM STDIN [(FORMAT binary)]`.
    pub(crate) fn copy_sql(&self, binary: bool) -> String {
        let mut sql = format!("COPY {} ({}) FROM STDIN", self.name, self.col_list());
        if binary {
            sql.push_str(" (FORMAT binary)");
        }
        sql
    }

    /// Multi-row insert: `INSERT INTO t (a, b) SELECT * FROM unnest($1::a[], $2::b[])`.
    /// Parameters: one array per column (no array columns: they cannot be unnested).
    pub(crate) fn batch_insert_sql(&self, binary: bool) -> String {
        let mut sql = format!("INSERT INTO {} ({})", self.name, self.col_list());
        if self.has_identity_always {
            sql.push_str(" OVERRIDING SYSTEM VALUE");
        }
        let arrays: Vec<String> =
            (0..self.cols.len()).map(|i| self.array_param(i, i + 1, binary)).collect();
        let _ = write!(sql, " SELECT * FROM unnest({})", arrays.join(", "));
        sql
    }

    /// Matching by the replica identity key: its columns equal to parameters.
    pub(crate) fn key_match(&self) -> Box<[Match]> {
        let mut matched = vec![Match::Skip; self.cols.len()];
        for &k in &self.key {
            matched[k] = Match::Value;
        }
        matched.into()
    }

    /// The row-matching condition, numbering parameters from `next`.
    fn where_sql(&self, sql: &mut String, matched: &[Match], next: &mut usize) {
        if self.full_identity() {
            // One row at a time even among identical duplicates. With `tableoid`: in a
            // partitioned table two partitions may hold the same `ctid`.
            let _ =
                write!(sql, "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE ", self.name);
            self.conditions(sql, matched, next, true);
            sql.push_str(" LIMIT 1)");
        } else {
            self.conditions(sql, matched, next, false);
        }
    }

    /// `exact`: a value must also print as the old row's did, so that of rows equal under the
    /// type's `=` but different (numeric `1.0` and `1.00`) the one the source changed is.
    fn conditions(&self, sql: &mut String, matched: &[Match], next: &mut usize, exact: bool) {
        let mut first = true;
        for (c, m) in self.cols.iter().zip(matched) {
            if *m == Match::Skip {
                continue;
            }
            if !first {
                sql.push_str(" AND ");
            }
            first = false;
            if *m == Match::Null {
                let _ = write!(sql, "{} IS NULL", c.quoted);
                continue;
            }
            let n = *next;
            *next += 1;
            sql.push_str(&value_match(c, &c.quoted, &format!("${n}::{}", c.type_name), exact));
        }
        if first {
            sql.push_str("true");
        }
    }

    /// `UPDATE t SET a = $1 WHERE k = $2` (or the ctid form for FULL identity).
    pub(crate) fn update_sql(&self, set: &[bool], matched: &[Match]) -> String {
        let mut sql = format!("UPDATE {} SET ", self.name);
        let mut next = 1;
        let mut first = true;
        for (i, c) in self.cols.iter().enumerate() {
            if !set[i] {
                continue;
            }
            if !first {
                sql.push_str(", ");
            }
            first = false;
            let _ = write!(sql, "{} = ${next}", c.quoted);
            next += 1;
        }
        sql.push_str(" WHERE ");
        self.where_sql(&mut sql, matched, &mut next);
        sql
    }

    /// `DELETE FROM t WHERE k = $1` (or the ctid form).
    pub(crate) fn delete_sql(&self, matched: &[Match]) -> String {
        let mut sql = format!("DELETE FROM {} WHERE ", self.name);
        let mut next = 1;
        self.where_sql(&mut sql, matched, &mut next);
        sql
    }

    /// `SELECT EXISTS (SELECT FROM t WHERE k = $1)`.
    pub(crate) fn exists_sql(&self, matched: &[Match]) -> String {
        let mut sql = format!("SELECT EXISTS (SELECT FROM {} WHERE ", self.name);
        let mut next = 1;
        self.where_sql(&mut sql, matched, &mut next);
        sql.push(')');
        sql
    }

    /// Array parameter type of column `i`: its own array type for binary elements, `text[]`
    /// cast to it for text elements.
    fn array_param(&self, i: usize, n: usize, binary: bool) -> String {
        let c = &self.cols[i];
        if binary {
            format!("${n}::{}[]", c.type_name)
        } else {
            format!("${n}::text[]::{}[]", c.type_name)
        }
    }

    /// Set-based update of many rows by key:
    /// `UPDATE t SET a = v.c1 FROM (SELECT unnest($1) AS k0, unnest($2) AS c1, ...) AS v
    /// WHERE t.k = v.k0`. Parameters: one array per key column (old key), then one per set
    /// column.
    ///
    /// The arrays are unnested in a select list, where PostgreSQL (10 and later) walks them in
    /// step and hands each row on as it goes; `FROM unnest(...)` would first copy every row
    /// into a tuplestore (a temporary file past `work_mem`).
    ///
    /// `guard`: columns whose value a row must keep to be updated here (`IS NOT DISTINCT
    /// FROM`); the statement then returns the 1-based positions of the rows it updated, so
    /// the caller can apply the others one at a time.
    pub(crate) fn batch_update_sql(
        &self,
        set: &[bool],
        binary: &[bool],
        key_binary: &[bool],
        guard: &[usize],
    ) -> String {
        let mut columns = Vec::new();
        let mut n = 1;
        for (j, &k) in self.key.iter().enumerate() {
            columns.push(format!("unnest({}) AS k{j}", self.array_param(k, n, key_binary[j])));
            n += 1;
        }
        let mut sets = Vec::new();
        for (i, c) in self.cols.iter().enumerate() {
            if set[i] {
                columns.push(format!("unnest({}) AS c{i}", self.array_param(i, n, binary[i])));
                sets.push(format!("{} = v.c{i}", c.quoted));
                n += 1;
            }
        }
        let mut conds: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| format!("t.{} = v.k{j}", self.cols[k].quoted))
            .collect();
        for &g in guard {
            conds.push(format!("t.{} IS NOT DISTINCT FROM v.c{g}", self.cols[g].quoted));
        }
        let returning = if guard.is_empty() {
            ""
        } else {
            // 1-based positions, walked in step with the arrays.
            columns.push("generate_series(1::bigint, cardinality($1)) AS ord".into());
            " RETURNING v.ord"
        };
        format!(
            "UPDATE {} AS t SET {} FROM (SELECT {}) AS v WHERE {}{returning}",
            self.name,
            sets.join(", "),
            columns.join(", "),
            conds.join(" AND ")
        )
    }

    /// Set-based update of rows that keep their key, carried as one array of the table's row
    /// type (so array columns can travel too):
    /// `UPDATE t SET a = v.a FROM unnest($1::t[]) AS v WHERE t.k = v.k`.
    /// `guard` as for [`Self::batch_update_sql`]; the positions come from `WITH ORDINALITY`.
    pub(crate) fn row_update_sql(&self, set: &[bool], guard: &[usize]) -> String {
        let col = |i: usize| &self.cols[i].quoted;
        let sets: Vec<String> = (0..self.cols.len())
            .filter(|&i| set[i])
            .map(|i| format!("{} = v.{}", col(i), col(i)))
            .collect();
        let mut conds: Vec<String> =
            self.key.iter().map(|&k| format!("t.{} = v.{}", col(k), col(k))).collect();
        for &g in guard {
            conds.push(format!("t.{} IS NOT DISTINCT FROM v.{}", col(g), col(g)));
        }
        let (ordinality, returning) = if guard.is_empty() {
            ("", "")
        } else {
            (" WITH ORDINALITY", " RETURNING v.ordinality")
        };
        format!(
            "UPDATE {name} AS t SET {} FROM unnest($1::{name}[]){ordinality} AS v WHERE {}{returning}",
            sets.join(", "),
            conds.join(" AND "),
            name = self.name,
        )
    }

    /// Set-based delete by key: `DELETE FROM t WHERE k = ANY($1)` for a one-column key,
    /// `DELETE FROM t WHERE (k1, k2) IN (SELECT * FROM unnest($1, $2))` for a wider one.
    ///
    /// `= ANY` is one index scan over the sorted array, with no join, function scan or
    /// de-duplication above it.
    /// The rows of a run of whole old rows (REPLICA IDENTITY FULL) matched to target rows,
    /// one each: `SELECT DISTINCT ON (v.n) o.tableoid AS toid, o.ctid AS tid[, v.s0, ...] FROM
    /// unnest(...) WITH
    /// ORDINALITY AS v(c0, ..., [s0, ...,] n) JOIN t AS o ON ... ORDER BY v.n`. One array per
    /// column matched by value (`binary`: per such column, whether its array is binary), then
    /// one per column set (`set_binary`), `IS NULL` for the `Null` ones. The run holds distinct
    /// old rows, and a column also compared as text (see [`equality_is_identity`]) matches
    /// only rows that print as that old row did, so no two old rows pick the same target row
    /// (`1.0` and `1.00` are equal numerics but two rows). `=` first, so that a hash join or
    /// an index serves it.
    fn full_rows_sql(
        &self,
        matched: &[Match],
        binary: &[bool],
        set: &[bool],
        set_binary: &[bool],
    ) -> String {
        let mut arrays = Vec::new();
        let mut names = Vec::new();
        let mut conds = Vec::new();
        for (i, (c, m)) in self.cols.iter().zip(matched).enumerate() {
            match m {
                Match::Skip => {}
                Match::Null => conds.push(format!("o.{} IS NULL", c.quoted)),
                Match::Value => {
                    let j = arrays.len();
                    arrays.push(self.array_param(i, j + 1, binary[j]));
                    names.push(format!("c{j}"));
                    conds.push(value_match(
                        c,
                        &format!("o.{}", c.quoted),
                        &format!("v.c{j}"),
                        true,
                    ));
                }
            }
        }
        let mut picked = String::from("o.tableoid AS toid, o.ctid AS tid");
        let set_cols = set.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i);
        for (j, (i, &bin)) in set_cols.zip(set_binary).enumerate() {
            arrays.push(self.array_param(i, arrays.len() + 1, bin));
            names.push(format!("s{j}"));
            let _ = write!(picked, ", v.s{j}");
        }
        if conds.is_empty() {
            conds.push("true".into());
        }
        format!(
            "SELECT DISTINCT ON (v.n) {picked} FROM unnest({}) WITH ORDINALITY AS v({}, n) \
             JOIN {} AS o ON {} ORDER BY v.n",
            arrays.join(", "),
            names.join(", "),
            self.name,
            conds.join(" AND "),
        )
    }

    /// Deletes of whole old rows (REPLICA IDENTITY FULL) in one statement, each deleting one
    /// target row (see [`Self::full_rows_sql`]).
    pub(crate) fn full_batch_delete_sql(&self, matched: &[Match], binary: &[bool]) -> String {
        format!(
            "DELETE FROM {} AS t USING ({}) AS m WHERE t.tableoid = m.toid AND t.ctid = m.tid",
            self.name,
            self.full_rows_sql(matched, binary, &[], &[])
        )
    }

    /// Updates of whole old rows (REPLICA IDENTITY FULL) in one statement, each updating one
    /// target row (see [`Self::full_rows_sql`]) with its new values of the `set` columns.
    pub(crate) fn full_batch_update_sql(
        &self,
        matched: &[Match],
        binary: &[bool],
        set: &[bool],
        set_binary: &[bool],
    ) -> String {
        let assignments: Vec<String> = set
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .enumerate()
            .map(|(j, (i, _))| format!("{} = m.s{j}", self.cols[i].quoted))
            .collect();
        format!(
            "UPDATE {} AS t SET {} FROM ({}) AS m WHERE t.tableoid = m.toid AND t.ctid = m.tid",
            self.name,
            assignments.join(", "),
            self.full_rows_sql(matched, binary, set, set_binary)
        )
    }

    pub(crate) fn batch_delete_sql(&self, key_binary: &[bool]) -> String {
        if let ([k], [binary]) = (&*self.key, key_binary) {
            return format!(
                "DELETE FROM {} WHERE {} = ANY({})",
                self.name,
                self.cols[*k].quoted,
                self.array_param(*k, 1, *binary)
            );
        }
        let keys: Vec<&str> = self.key.iter().map(|&k| self.cols[k].quoted.as_str()).collect();
        let arrays: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| self.array_param(k, j + 1, key_binary[j]))
            .collect();
        format!(
            "DELETE FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))",
            self.name,
            keys.join(", "),
            arrays.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgoutput_decoder::RelationColumn;

    fn table(ri: ReplicaIdentity) -> TableInfo {
        let col = |name: &str, key| RelationColumn {
            is_key: key,
            name: name.into(),
            type_oid: 23,
            type_modifier: -1,
        };
        let rel = Relation {
            xid: None,
            rel_id: 1,
            namespace: "my\"ns".into(),
            name: "t".into(),
            replica_identity: ri,
            columns: vec![col("id", true), col("v", false), col("j", false)],
        };
        let info = |q: &str, ty: &str, tc| ColInfo {
            quoted: q.into(),
            type_name: ty.into(),
            type_oid: 23,
            text_compare: tc,
            is_array: false,
            identity_always: false,
        };
        TableInfo::new(
            Arc::new(rel),
            vec![
                info("\"id\"", "integer", false),
                info("\"v\"", "text", false),
                info("\"j\"", "json", true),
            ],
        )
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(&*table(ReplicaIdentity::Default).name, "\"my\"\"ns\".\"t\"");
    }

    #[test]
    fn statements_by_key() {
        let t = table(ReplicaIdentity::Default);
        assert_eq!(t.key, [0]);
        assert_eq!(
            t.insert_sql(),
            "INSERT INTO \"my\"\"ns\".\"t\" (\"id\", \"v\", \"j\") VALUES ($1, $2, $3)"
        );
        assert_eq!(
            t.update_sql(&[true, false, true], &[Match::Value, Match::Skip, Match::Skip]),
            "UPDATE \"my\"\"ns\".\"t\" SET \"id\" = $1, \"j\" = $2 WHERE \"id\" = $3::integer"
        );
        assert_eq!(
            t.delete_sql(&[Match::Value, Match::Skip, Match::Skip]),
            "DELETE FROM \"my\"\"ns\".\"t\" WHERE \"id\" = $1::integer"
        );
        assert_eq!(
            t.exists_sql(&t.key_match()),
            "SELECT EXISTS (SELECT FROM \"my\"\"ns\".\"t\" WHERE \"id\" = $1::integer)"
        );
        assert_eq!(
            t.batch_insert_sql(true),
            "INSERT INTO \"my\"\"ns\".\"t\" (\"id\", \"v\", \"j\") SELECT * FROM \
             unnest($1::integer[], $2::text[], $3::json[])"
        );
        assert_eq!(
            t.batch_insert_sql(false),
            "INSERT INTO \"my\"\"ns\".\"t\" (\"id\", \"v\", \"j\") SELECT * FROM \
             unnest($1::text[]::integer[], $2::text[]::text[], $3::text[]::json[])"
        );
        assert_eq!(
            t.batch_delete_sql(&[true]),
            "DELETE FROM \"my\"\"ns\".\"t\" WHERE \"id\" = ANY($1::integer[])"
        );
        assert_eq!(
            t.batch_update_sql(&[false, true, false], &[false, false, false], &[true], &[]),
            "UPDATE \"my\"\"ns\".\"t\" AS t SET \"v\" = v.c1 FROM (SELECT unnest($1::integer[]) AS k0, \
             unnest($2::text[]::text[]) AS c1) AS v WHERE t.\"id\" = v.k0"
        );
        assert_eq!(
            t.batch_update_sql(&[false, true, false], &[false, true, false], &[true], &[1]),
            "UPDATE \"my\"\"ns\".\"t\" AS t SET \"v\" = v.c1 FROM (SELECT unnest($1::integer[]) AS k0, \
             unnest($2::text[]) AS c1, generate_series(1::bigint, cardinality($1)) AS ord) AS v WHERE \
             t.\"id\" = v.k0 AND t.\"v\" IS NOT DISTINCT FROM v.c1 RETURNING v.ord"
        );
        assert_eq!(
            t.row_update_sql(&[false, true, true], &[]),
            "UPDATE \"my\"\"ns\".\"t\" AS t SET \"v\" = v.\"v\", \"j\" = v.\"j\" FROM \
             unnest($1::\"my\"\"ns\".\"t\"[]) AS v WHERE t.\"id\" = v.\"id\""
        );
        assert_eq!(
            t.row_update_sql(&[false, true, false], &[1]),
            "UPDATE \"my\"\"ns\".\"t\" AS t SET \"v\" = v.\"v\" FROM \
             unnest($1::\"my\"\"ns\".\"t\"[]) WITH ORDINALITY AS v WHERE t.\"id\" = v.\"id\" AND \
             t.\"v\" IS NOT DISTINCT FROM v.\"v\" RETURNING v.ordinality"
        );
    }

    #[test]
    fn batch_delete_by_a_wider_key_joins_the_arrays() {
        let mut t = table(ReplicaIdentity::Default);
        t.key = vec![0, 1];
        assert_eq!(
            t.batch_delete_sql(&[true, false]),
            "DELETE FROM \"my\"\"ns\".\"t\" WHERE (\"id\", \"v\") IN (SELECT * FROM \
             unnest($1::integer[], $2::text[]::text[]))"
        );
    }

    #[test]
    fn full_identity_deletes_in_one_statement() {
        let t = table(ReplicaIdentity::Full);
        assert_eq!(
            t.full_batch_delete_sql(&[Match::Value, Match::Null, Match::Value], &[true, false]),
            "DELETE FROM \"my\"\"ns\".\"t\" AS t USING (SELECT DISTINCT ON (v.n) o.tableoid AS \
             toid, o.ctid AS tid FROM unnest($1::integer[], $2::text[]::json[]) WITH ORDINALITY \
             AS v(c0, c1, n) JOIN \"my\"\"ns\".\"t\" AS o ON o.\"id\" = v.c0 AND o.\"v\" IS \
             NULL AND o.\"j\"::text = v.c1::text ORDER BY v.n) AS m WHERE t.tableoid = m.toid \
             AND t.ctid = m.tid"
        );
        assert_eq!(
            t.full_batch_update_sql(
                &[Match::Value, Match::Value, Match::Null],
                &[true, true],
                &[false, true, true],
                &[true, false]
            ),
            "UPDATE \"my\"\"ns\".\"t\" AS t SET \"v\" = m.s0, \"j\" = m.s1 FROM (SELECT \
             DISTINCT ON (v.n) o.tableoid AS toid, o.ctid AS tid, v.s0, v.s1 FROM unnest($1::integer[], $2::text[], \
             $3::text[], $4::text[]::json[]) WITH ORDINALITY AS v(c0, c1, s0, s1, n) JOIN \
             \"my\"\"ns\".\"t\" AS o ON o.\"id\" = v.c0 AND o.\"v\" = v.c1 AND o.\"j\" IS NULL \
             ORDER BY v.n) AS m WHERE t.tableoid = m.toid AND t.ctid = m.tid"
        );
        assert!(equality_is_identity(23) && !equality_is_identity(1700), "int4 yes, numeric no");
    }

    #[test]
    fn statements_full_identity() {
        let t = table(ReplicaIdentity::Full);
        assert!(t.key.is_empty());
        assert_eq!(
            t.delete_sql(&[Match::Value, Match::Value, Match::Value]),
            "DELETE FROM \"my\"\"ns\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM \"my\"\"ns\".\"t\" WHERE \
             \"id\" = $1::integer AND \"v\" = $2::text AND \"j\"::text = $3::json::text LIMIT 1)"
        );
        // NULLs match with IS NULL and take no parameter; unchanged TOAST is not compared.
        assert_eq!(
            t.update_sql(&[false, true, false], &[Match::Null, Match::Skip, Match::Value]),
            "UPDATE \"my\"\"ns\".\"t\" SET \"v\" = $1 WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM \
             \"my\"\"ns\".\"t\" WHERE \"id\" IS NULL AND \"j\"::text = $2::json::text LIMIT 1)"
        );
    }
}
