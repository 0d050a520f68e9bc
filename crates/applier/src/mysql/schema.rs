//! The MySQL tables behind the source's tables: their names, columns and types, read from the
//! source's catalog; their creation, and the check of tables that already exist.

use std::collections::HashMap;

use sqlx::{MySqlConnection, Row};
use tokio_postgres::Client;

use super::types::{MySqlType, SourceType, map_type};
use super::{quote, target_err};
use crate::error::ApplyError;

/// MySQL identifiers hold at most this many characters.
const MAX_IDENT_CHARS: usize = 64;
/// The progress table's name, which no mirrored table may take.
pub const PROGRESS_TABLE: &str = "pgmirror_progress";

/// A source table to mirror, as the caller resolved it.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// Schema name as stored.
    pub schema: String,
    /// Table name as stored.
    pub name: String,
    /// `pg_class.oid`.
    pub oid: u32,
    /// The columns that identify a row (primary key or replica identity index), in key order.
    pub key: Vec<String>,
}

/// One column of a [`MySqlTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlColumn {
    /// Name, the same on both sides.
    pub name: String,
    /// The source's type, domains followed.
    pub source: SourceType,
    /// The source's type as `format_type` prints it (the base type of a domain).
    pub pg_type: String,
    /// The MySQL type.
    pub ty: MySqlType,
    /// `NOT NULL` on the source.
    pub not_null: bool,
}

/// A mirrored table: the source table and the MySQL table it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlTable {
    /// Source schema.
    pub schema: String,
    /// Source table name.
    pub name: String,
    /// The MySQL table's name (see [`target_name`]).
    pub target: String,
    /// Replicated columns (generated columns left out), in the source's order.
    pub columns: Vec<MySqlColumn>,
    /// Indexes into `columns` of the key, in key order.
    pub key: Vec<usize>,
}

impl MySqlTable {
    /// `schema.name` for messages, as PostgreSQL would quote it.
    pub fn source_display(&self) -> String {
        source_display(&self.schema, &self.name)
    }

    /// The backtick-quoted MySQL table name.
    pub fn quoted(&self) -> String {
        quote(&self.target)
    }

    /// `CREATE TABLE` for the table: mapped types, NOT NULL, the key as primary key, InnoDB,
    /// `utf8mb4` with `collation`.
    pub fn create_sql(&self, collation: &str) -> String {
        let mut cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let null = if c.not_null || self.is_key(c) { " NOT NULL" } else { "" };
                format!("{} {}{null}", quote(&c.name), c.ty.sql)
            })
            .collect();
        let key: Vec<String> = self.key.iter().map(|&i| quote(&self.columns[i].name)).collect();
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
        format!(
            "CREATE TABLE {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
            self.quoted(),
            cols.join(", ")
        )
    }

    fn is_key(&self, c: &MySqlColumn) -> bool {
        self.key.iter().any(|&i| self.columns[i].name == c.name)
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// `"schema"."name"`, as PostgreSQL quotes it.
fn source_display(schema: &str, name: &str) -> String {
    format!("{}.{}", pgconn::quote_ident(schema), pgconn::quote_ident(name))
}

/// The MySQL name of source table `schema.name`: the table's own name for `public`, else
/// `schema__name` (two underscores), so tables of several schemas share one database.
pub fn target_name(schema: &str, name: &str) -> String {
    if schema == "public" { name.to_owned() } else { format!("{schema}__{name}") }
}

/// Reads the tables' columns and types from the source's catalog and maps them, then checks
/// the names MySQL would get: a name over 64 characters, one ending in a space, two tables or
/// two columns of a table that MySQL would not tell apart (names compare case-insensitively
/// where `lower_case_table_names` is set, and column names always do), or a table without a
/// key is an error naming each.
///
/// # Errors
/// [`ApplyError::SourceCatalog`] when the catalog cannot be read; [`ApplyError::TargetSchema`]
/// listing every naming problem.
pub async fn describe(
    source: &Client,
    tables: &[SourceTable],
) -> Result<Vec<MySqlTable>, ApplyError> {
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        out.push(describe_one(source, t).await?);
    }
    let problems = name_problems(&out);
    if problems.is_empty() { Ok(out) } else { Err(ApplyError::TargetSchema(problems)) }
}

async fn describe_one(source: &Client, t: &SourceTable) -> Result<MySqlTable, ApplyError> {
    // Domains followed to their base type (a domain's typmod is its base type's).
    let rows = source
        .query(
            "WITH RECURSIVE cols AS ( \
               SELECT a.attnum, a.attname::text AS name, a.attnotnull AS not_null, \
                      a.atttypid AS oid, a.atttypmod AS typmod, 0 AS depth \
               FROM pg_catalog.pg_attribute a \
               WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                 AND a.attgenerated = '' \
               UNION ALL \
               SELECT c.attnum, c.name, c.not_null, t.typbasetype, t.typtypmod, c.depth + 1 \
               FROM cols c JOIN pg_catalog.pg_type t ON t.oid = c.oid \
               WHERE t.typtype = 'd' AND c.depth < 16) \
             SELECT DISTINCT ON (c.attnum) c.name, c.not_null, c.oid, c.typmod, \
                    t.typtype::text, CASE WHEN t.typcategory = 'A' THEN t.typelem END, \
                    t.typdelim::text, pg_catalog.format_type(c.oid, c.typmod) \
             FROM cols c JOIN pg_catalog.pg_type t ON t.oid = c.oid \
             ORDER BY c.attnum, c.depth DESC",
            &[&t.oid],
        )
        .await
        .map_err(ApplyError::SourceCatalog)?;
    let display = source_display(&t.schema, &t.name);
    let mut columns = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.get(0);
        let typtype: String = r.get(4);
        let elem: Option<u32> = r.get(5);
        let delim: String = r.get(6);
        let delim = delim.bytes().next().unwrap_or(b',');
        let source = SourceType {
            oid: r.get(2),
            typmod: r.get(3),
            typtype: typtype.bytes().next().unwrap_or(b'b'),
            array_elem: elem.map(|e| (e, delim)),
        };
        let key = t.key.contains(&name);
        let ty = map_type(&source, key);
        columns.push(MySqlColumn { name, source, ty, not_null: r.get(1), pg_type: r.get(7) });
    }
    let mut key = Vec::with_capacity(t.key.len());
    for k in &t.key {
        let Some(i) = columns.iter().position(|c| &c.name == k) else {
            return Err(ApplyError::TargetSchema(vec![format!(
                "{display}: key column {k:?} is not a replicated column"
            )]));
        };
        key.push(i);
    }
    Ok(MySqlTable {
        schema: t.schema.clone(),
        name: t.name.clone(),
        target: target_name(&t.schema, &t.name),
        columns,
        key,
    })
}

/// What stands in the way of the tables' MySQL names (see [`describe`]).
fn name_problems(tables: &[MySqlTable]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_name: HashMap<String, &MySqlTable> = HashMap::new();
    let bad = |name: &str| name.chars().count() > MAX_IDENT_CHARS || name.ends_with(' ');
    for t in tables {
        let display = t.source_display();
        if t.key.is_empty() {
            problems.push(format!(
                "{display} has no primary key or replica identity index, which a MySQL target \
                 needs to find rows; fix: add a primary key on the source"
            ));
        }
        if bad(&t.target) {
            problems.push(format!(
                "{display} would be MySQL table {} (over 64 characters or ending in a space); \
                 fix: rename the table on the source or leave it out of the mirror",
                quote(&t.target)
            ));
        }
        let folded = t.target.to_lowercase();
        if folded == PROGRESS_TABLE {
            problems.push(format!(
                "{display} would be MySQL table {}, the name of pgmirror's progress table; \
                 fix: rename it on the source or leave it out of the mirror",
                quote(&t.target)
            ));
        }
        if let Some(other) = by_name.insert(folded, t) {
            problems.push(format!(
                "{display} and {} would both be MySQL table {}; fix: rename one on the source \
                 or leave one out of the mirror",
                other.source_display(),
                quote(&t.target)
            ));
        }
        let mut cols: HashMap<String, &str> = HashMap::new();
        for c in &t.columns {
            if bad(&c.name) {
                problems.push(format!(
                    "{display}: column {:?} is not a valid MySQL column name (over 64 characters \
                     or ending in a space); fix: rename it on the source",
                    c.name
                ));
            }
            if let Some(other) = cols.insert(c.name.to_lowercase(), &c.name) {
                problems.push(format!(
                    "{display}: columns {other:?} and {:?} differ only in case, which MySQL \
                     column names ignore; fix: rename one on the source",
                    c.name
                ));
            }
        }
    }
    problems
}

/// The existing MySQL column, as `information_schema` describes it.
#[derive(Debug)]
struct Existing {
    data_type: String,
    column_type: String,
    nullable: bool,
    charset: Option<String>,
    char_len: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
}

/// Creates the tables the target lacks and checks the ones it has; returns the names of the
/// tables created.
///
/// # Errors
/// [`ApplyError::TargetSchema`] with one line per mismatch of an existing table (nothing is
/// created then); [`ApplyError::MySql`] when a statement fails.
pub async fn ensure_tables(
    conn: &mut MySqlConnection,
    tables: &[MySqlTable],
    collation: &str,
) -> Result<Vec<String>, ApplyError> {
    let (missing, problems) = check_tables(conn, tables).await?;
    if !problems.is_empty() {
        return Err(ApplyError::TargetSchema(problems));
    }
    let mut created = Vec::new();
    for t in tables.iter().filter(|t| missing.contains(&t.target)) {
        sqlx::Executor::execute(&mut *conn, t.create_sql(collation).as_str())
            .await
            .map_err(|e| target_err(format!("creating table {}", t.quoted()), e))?;
        created.push(t.target.clone());
    }
    Ok(created)
}

/// The tables the target lacks (by MySQL name), and one line per way an existing one cannot
/// hold the source's rows exactly (with its fix); nothing is changed.
///
/// # Errors
/// [`ApplyError::MySql`] when the catalog cannot be read.
pub async fn check_tables(
    conn: &mut MySqlConnection,
    tables: &[MySqlTable],
) -> Result<(Vec<String>, Vec<String>), ApplyError> {
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for t in tables {
        let existing = existing_columns(conn, &t.target).await?;
        if existing.is_empty() {
            missing.push(t.target.clone());
        } else {
            let key = primary_key(conn, &t.target).await?;
            problems.extend(mismatches(t, &existing, &key));
        }
    }
    Ok((missing, problems))
}

async fn existing_columns(
    conn: &mut MySqlConnection,
    table: &str,
) -> Result<HashMap<String, Existing>, ApplyError> {
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                IS_NULLABLE = 'YES', CAST(CHARACTER_SET_NAME AS CHAR), \
                CAST(CHARACTER_MAXIMUM_LENGTH AS UNSIGNED), CAST(NUMERIC_PRECISION AS UNSIGNED), \
                CAST(NUMERIC_SCALE AS UNSIGNED) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| target_err(format!("reading the columns of {}", quote(table)), e))?;
    let mut out = HashMap::new();
    for r in rows {
        let name: String = r.try_get(0).map_err(|e| target_err("reading columns", e))?;
        let get = |i: usize| r.try_get::<Option<u64>, _>(i).ok().flatten();
        out.insert(
            name.to_lowercase(),
            Existing {
                data_type: r.try_get::<String, _>(1).unwrap_or_default().to_lowercase(),
                column_type: r.try_get::<String, _>(2).unwrap_or_default(),
                nullable: r.try_get::<i64, _>(3).unwrap_or(1) != 0,
                charset: r.try_get(4).ok().flatten(),
                char_len: get(5),
                precision: get(6),
                scale: get(7),
            },
        );
    }
    Ok(out)
}

async fn primary_key(conn: &mut MySqlConnection, table: &str) -> Result<Vec<String>, ApplyError> {
    sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
         ORDER BY SEQ_IN_INDEX",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| target_err(format!("reading the primary key of {}", quote(table)), e))
}

/// One line per way the existing MySQL table cannot hold the source's rows exactly.
fn mismatches(t: &MySqlTable, existing: &HashMap<String, Existing>, key: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let table = t.quoted();
    for c in &t.columns {
        let col = quote(&c.name);
        let Some(e) = existing.get(&c.name.to_lowercase()) else {
            out.push(format!(
                "MySQL table {table} lacks column {col}; fix: ALTER TABLE {table} ADD COLUMN \
                 {col} {}",
                c.ty.sql
            ));
            continue;
        };
        let fix = format!("fix: ALTER TABLE {table} MODIFY {col} {}", c.ty.sql);
        if !c.ty.data_types().contains(&e.data_type.as_str()) {
            out.push(format!(
                "MySQL column {table}.{col} is {} but the source's {} needs {}; {fix}",
                e.column_type, c.pg_type, c.ty.sql
            ));
            continue;
        }
        let narrower = match c.ty.kind {
            super::types::Kind::Text { max_chars: Some(n) } => {
                e.char_len.is_some_and(|l| l < u64::from(n))
            }
            super::types::Kind::Decimal { precision, scale } => {
                e.scale.is_some_and(|s| s < u64::from(scale))
                    || e.precision
                        .zip(e.scale)
                        .is_some_and(|(p, s)| p.saturating_sub(s) < u64::from(precision - scale))
            }
            _ => false,
        };
        if narrower {
            out.push(format!(
                "MySQL column {table}.{col} is {}, narrower than {}; {fix}",
                e.column_type, c.ty.sql
            ));
        }
        if let Some(cs) = &e.charset
            && !cs.starts_with("utf8mb4")
            && matches!(c.ty.kind, super::types::Kind::Text { .. })
        {
            out.push(format!(
                "MySQL column {table}.{col} uses character set {cs}, which cannot hold every \
                 character; fix: ALTER TABLE {table} MODIFY {col} {} CHARACTER SET utf8mb4",
                c.ty.sql
            ));
        }
        if !e.nullable && !c.not_null && !t.key.iter().any(|&i| t.columns[i].name == c.name) {
            out.push(format!(
                "MySQL column {table}.{col} is NOT NULL but the source's column allows NULL; \
                 {fix}"
            ));
        }
    }
    let want: Vec<String> = t.key.iter().map(|&i| t.columns[i].name.to_lowercase()).collect();
    let have: Vec<String> = key.iter().map(|k| k.to_lowercase()).collect();
    if want != have {
        let cols: Vec<String> = t.key.iter().map(|&i| quote(&t.columns[i].name)).collect();
        out.push(format!(
            "MySQL table {table}'s primary key is ({}) but the source's key is ({}); fix: \
             ALTER TABLE {table} DROP PRIMARY KEY, ADD PRIMARY KEY ({})",
            key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "),
            cols.join(", "),
            cols.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::types::{Kind, SourceType};

    fn table(schema: &str, name: &str, cols: &[&str]) -> MySqlTable {
        let source = SourceType { oid: 23, typmod: -1, typtype: b'b', array_elem: None };
        MySqlTable {
            schema: schema.into(),
            name: name.into(),
            target: target_name(schema, name),
            columns: cols
                .iter()
                .map(|c| MySqlColumn {
                    name: (*c).into(),
                    source: source.clone(),
                    pg_type: "integer".into(),
                    ty: MySqlType { kind: Kind::Int, sql: "INT".into() },
                    not_null: false,
                })
                .collect(),
            key: vec![0],
        }
    }

    #[test]
    fn names_that_mysql_cannot_tell_apart_are_refused() {
        let long = "x".repeat(60);
        let tables = [
            table("public", "a__b", &["id"]),
            table("a", "b", &["id"]),
            table("public", "T", &["id", "Col", "col"]),
            table("public", "t", &["id"]),
            table("sales", &long, &["id"]),
            table("public", "pgmirror_progress", &["id"]),
        ];
        let problems = name_problems(&tables);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("\"a\".\"b\" and \"public\".\"a__b\" would both be"));
        assert!(problems[1].contains("\"Col\" and \"col\" differ only in case"));
        assert!(problems[4].contains("pgmirror's progress table"));
    }

    #[test]
    fn create_sql_quotes_everything() {
        let t = table("public", "we`ird", &["i`d"]);
        assert_eq!(
            t.create_sql("utf8mb4_nopad_bin"),
            "CREATE TABLE `we``ird` (`i``d` INT NOT NULL, PRIMARY KEY (`i``d`)) ENGINE=InnoDB \
             DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
        );
    }
}
