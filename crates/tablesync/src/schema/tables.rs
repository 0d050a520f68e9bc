//! What creating one source table on the target takes: its columns (types, collations,
//! defaults, identity, generation), constraints, indexes, partitioning, replica identity and
//! triggers, read from the source catalog, and the statements that recreate each.

use std::collections::HashMap;

use pgconn::{quote_ident, quote_literal};
use tokio_postgres::Client;

use super::read::qualify;

use crate::catalog::IdentityKind;
use crate::error::{DbContext, Error};

/// One column of a relation to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ColumnSpec {
    pub(super) attnum: i32,
    pub(super) name: String,
    /// `format_type`, qualified.
    pub(super) type_sql: String,
    pub(super) type_oid: u32,
    pub(super) not_null: bool,
    pub(super) identity: Option<IdentityKind>,
    /// The generation expression of a stored generated column.
    pub(super) generated: Option<String>,
    /// The default expression (cleared by the plan when the target cannot evaluate it).
    pub(super) default: Option<String>,
    /// `pg_attrdef.oid` of the default or generation expression.
    pub(super) default_oid: Option<u32>,
    /// A non-default collation, qualified, and whether it is built in.
    pub(super) collation: Option<(String, bool)>,
    /// `SEQUENCE NAME ... START WITH ...` of an identity column, set by the plan.
    pub(super) identity_options: Option<String>,
}

/// A table, partition or exclusion constraint, check, key or foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConstraintSpec {
    pub(super) oid: u32,
    pub(super) name: String,
    /// `pg_constraint.contype`: `p`, `u`, `c`, `f`, `x` or `t`.
    pub(super) kind: char,
    /// `pg_get_constraintdef`.
    pub(super) definition: String,
    /// A copy that a partition got from its parent (created by the parent's).
    pub(super) from_parent: bool,
    pub(super) validated: bool,
    /// The referenced table of a foreign key.
    pub(super) references: Option<u32>,
    pub(super) columns: Vec<i32>,
    pub(super) referenced_columns: Vec<i32>,
    /// The index of a key constraint, qualified, and the partitioned index it belongs to.
    pub(super) index: Option<String>,
    pub(super) parent_index: Option<String>,
}

/// An index that backs no constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexSpec {
    pub(super) oid: u32,
    /// Qualified name, as `regclass` prints it.
    pub(super) name: String,
    /// The name within its schema.
    pub(super) short_name: String,
    /// `pg_get_indexdef`.
    pub(super) definition: String,
    pub(super) parent_index: Option<String>,
    /// Columns it reads (keys, expressions, predicate).
    pub(super) columns: Vec<i32>,
}

/// A source relation (ordinary or partitioned table) with what recreating it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RelSpec {
    pub(super) oid: u32,
    pub(super) schema: String,
    pub(super) name: String,
    /// `pg_get_partkeydef` of a partitioned table.
    pub(super) partition_key: Option<String>,
    /// The parent's OID and the partition bound of a partition.
    pub(super) partition_of: Option<(u32, String)>,
    /// `reloptions` as `name=value`.
    pub(super) options: Vec<String>,
    pub(super) replica_identity: char,
    pub(super) replica_index: Option<String>,
    pub(super) columns: Vec<ColumnSpec>,
    pub(super) constraints: Vec<ConstraintSpec>,
    pub(super) indexes: Vec<IndexSpec>,
    pub(super) triggers: Vec<String>,
}

impl RelSpec {
    /// `"schema"."name"`.
    pub(super) fn quoted(&self) -> String {
        qualify(&self.schema, &self.name)
    }

    /// Whether foreign keys on it must be created valid (PostgreSQL has no NOT VALID foreign
    /// key on a partitioned table).
    pub(super) fn partitioned(&self) -> bool {
        self.partition_key.is_some()
    }

    /// The column named by `attnum`.
    pub(super) fn column_name(&self, attnum: i32) -> Option<&str> {
        self.columns.iter().find(|c| c.attnum == attnum).map(|c| c.name.as_str())
    }

    /// `CREATE TABLE`, as a partition of `parent` (quoted) when it is one.
    pub(super) fn create_sql(&self, parent: Option<&str>) -> String {
        let q = self.quoted();
        let mut sql = match (&self.partition_of, parent) {
            (Some((_, bound)), Some(parent)) => {
                format!("CREATE TABLE {q} PARTITION OF {parent} {bound}")
            }
            _ => {
                let columns: Vec<String> = self.columns.iter().map(column_sql).collect();
                format!("CREATE TABLE {q} (\n    {}\n)", columns.join(",\n    "))
            }
        };
        if let Some(key) = &self.partition_key {
            sql.push_str(&format!(" PARTITION BY {key}"));
        }
        if !self.options.is_empty() {
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|o| match o.split_once('=') {
                    Some((k, v)) => format!("{k} = {}", quote_literal(v)),
                    None => o.clone(),
                })
                .collect();
            sql.push_str(&format!(" WITH ({})", opts.join(", ")));
        }
        sql
    }

    /// `ALTER TABLE ... REPLICA IDENTITY` unless it is the default.
    pub(super) fn replica_identity_sql(&self) -> Option<String> {
        let how = match (self.replica_identity, &self.replica_index) {
            ('f', _) => "FULL".to_owned(),
            ('n', _) => "NOTHING".to_owned(),
            ('i', Some(index)) if !self.partitioned() => {
                format!("USING INDEX {}", quote_ident(index))
            }
            _ => return None,
        };
        Some(format!("ALTER TABLE ONLY {} REPLICA IDENTITY {how}", self.quoted()))
    }
}

/// A column's definition in `CREATE TABLE`.
pub(super) fn column_sql(c: &ColumnSpec) -> String {
    // Types and expressions come from format_type and pg_get_expr under an empty search_path:
    // valid SQL with every name qualified.
    let mut s = format!("{} {}", quote_ident(&c.name), c.type_sql);
    if let Some((collation, _)) = &c.collation {
        s.push_str(&format!(" COLLATE {collation}"));
    }
    if let Some(expr) = &c.generated {
        s.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    } else if let Some(kind) = c.identity {
        let kind = match kind {
            IdentityKind::Always => "ALWAYS",
            IdentityKind::ByDefault => "BY DEFAULT",
        };
        s.push_str(&format!(" GENERATED {kind} AS IDENTITY"));
        if let Some(opts) = &c.identity_options {
            s.push_str(&format!(" ({opts})"));
        }
    } else if let Some(default) = &c.default {
        s.push_str(&format!(" DEFAULT {default}"));
    }
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    s
}

/// `ALTER TABLE ... ADD CONSTRAINT` for a key, check or foreign key of `table` (quoted).
/// Keys go on the table ONLY (a partition's key is attached to its parent's afterwards, as
/// pg_dump does); a foreign key is added NOT VALID unless `valid` (the rows copied later are
/// checked once, by VALIDATE, rather than row by row).
pub(super) fn constraint_sql(table: &str, c: &ConstraintSpec, valid: bool) -> String {
    let name = quote_ident(&c.name);
    match c.kind {
        'p' | 'u' => format!("ALTER TABLE ONLY {table} ADD CONSTRAINT {name} {}", c.definition),
        'f' if !valid && !c.definition.ends_with(" NOT VALID") => {
            format!("ALTER TABLE {table} ADD CONSTRAINT {name} {} NOT VALID", c.definition)
        }
        _ => format!("ALTER TABLE {table} ADD CONSTRAINT {name} {}", c.definition),
    }
}

/// `ALTER INDEX parent ATTACH PARTITION child`.
pub(super) fn attach_sql(parent: &str, child: &str) -> String {
    format!("ALTER INDEX {parent} ATTACH PARTITION {child}")
}

const RELATIONS_SQL: &str = "SELECT c.oid, n.nspname::text, c.relname::text, \
            CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END, \
            CASE WHEN c.relispartition THEN \
                 (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) END, \
            CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END, \
            coalesce(c.reloptions, '{}')::text[], c.relreplident::text, \
            (SELECT x.relname::text FROM pg_catalog.pg_index ri \
               JOIN pg_catalog.pg_class x ON x.oid = ri.indexrelid \
              WHERE ri.indrelid = c.oid AND ri.indisreplident) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = ANY($1)";

const COLUMNS_SQL: &str = "SELECT a.attrelid, a.attnum::int4, a.attname::text, \
            pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull, \
            a.attidentity::text, a.attgenerated::text, \
            pg_catalog.pg_get_expr(d.adbin, d.adrelid), d.oid, \
            CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN \
                 (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                  FROM pg_catalog.pg_collation co \
                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                  WHERE co.oid = a.attcollation) END, \
            a.attcollation < 16384 \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attrelid, a.attnum";

const CONSTRAINTS_SQL: &str = "SELECT c.oid, c.conrelid, c.conname::text, c.contype::text, \
            pg_catalog.pg_get_constraintdef(c.oid), c.conparentid <> 0, c.convalidated, \
            c.confrelid, coalesce(c.conkey, '{}')::int4[], coalesce(c.confkey, '{}')::int4[], \
            CASE WHEN c.contype IN ('p', 'u') THEN c.conindid::pg_catalog.regclass::text END, \
            (SELECT h.inhparent::pg_catalog.regclass::text FROM pg_catalog.pg_inherits h \
              WHERE h.inhrelid = c.conindid AND c.contype IN ('p', 'u')), \
            c.coninhcount > 0 AND c.contype = 'c' \
     FROM pg_catalog.pg_constraint c \
     WHERE c.conrelid = ANY($1) AND c.contype IN ('p', 'u', 'c', 'f', 'x', 't') \
     ORDER BY c.conrelid, c.contype, c.conname";

const INDEXES_SQL: &str = "SELECT i.indexrelid, i.indrelid, \
            i.indexrelid::pg_catalog.regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid), \
            (SELECT h.inhparent::pg_catalog.regclass::text FROM pg_catalog.pg_inherits h \
              WHERE h.inhrelid = i.indexrelid), \
            ARRAY(SELECT d.refobjsubid FROM pg_catalog.pg_depend d \
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                    AND d.objid = i.indexrelid \
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                    AND d.refobjid = i.indrelid AND d.refobjsubid > 0), \
            x.relname::text \
     FROM pg_catalog.pg_index i \
     JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid \
     WHERE i.indrelid = ANY($1) \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c \
                       WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
                         AND c.contype IN ('p', 'u', 'x')) \
     ORDER BY i.indrelid, i.indexrelid";

const TRIGGERS_SQL: &str = "SELECT tgrelid, tgname::text FROM pg_catalog.pg_trigger \
     WHERE tgrelid = ANY($1) AND NOT tgisinternal AND tgparentid = 0 ORDER BY tgrelid, tgname";

/// Loads the relations `oids`, keyed by OID. Call inside [`super::read::qualified`].
pub(super) async fn load(client: &Client, oids: &[u32]) -> Result<HashMap<u32, RelSpec>, Error> {
    let ctx = || "reading the definitions of the tables to create on the source".to_owned();
    let mut rels = HashMap::new();
    for r in client.query(RELATIONS_SQL, &[&oids]).await.db_context(ctx)? {
        let oid: u32 = r.get(0);
        let parent: Option<u32> = r.get(4);
        let bound: Option<String> = r.get(5);
        rels.insert(
            oid,
            RelSpec {
                oid,
                schema: r.get(1),
                name: r.get(2),
                partition_key: r.get(3),
                partition_of: parent.zip(bound),
                options: r.get(6),
                replica_identity: r.get::<_, String>(7).chars().next().unwrap_or('d'),
                replica_index: r.get(8),
                columns: Vec::new(),
                constraints: Vec::new(),
                indexes: Vec::new(),
                triggers: Vec::new(),
            },
        );
    }
    for r in client.query(COLUMNS_SQL, &[&oids]).await.db_context(ctx)? {
        let Some(rel) = rels.get_mut(&r.get::<_, u32>(0)) else { continue };
        let expr: Option<String> = r.get(8);
        let generated = !r.get::<_, String>(7).is_empty();
        let collation: Option<String> = r.get(10);
        rel.columns.push(ColumnSpec {
            attnum: r.get(1),
            name: r.get(2),
            type_sql: r.get(3),
            type_oid: r.get(4),
            not_null: r.get(5),
            identity: match r.get::<_, String>(6).as_str() {
                "a" => Some(IdentityKind::Always),
                "d" => Some(IdentityKind::ByDefault),
                _ => None,
            },
            generated: if generated { expr.clone() } else { None },
            default: if generated { None } else { expr },
            default_oid: r.get(9),
            collation: collation.map(|c| (c, r.get(11))),
            identity_options: None,
        });
    }
    for r in client.query(CONSTRAINTS_SQL, &[&oids]).await.db_context(ctx)? {
        let Some(rel) = rels.get_mut(&r.get::<_, u32>(1)) else { continue };
        let confrelid: u32 = r.get(7);
        rel.constraints.push(ConstraintSpec {
            oid: r.get(0),
            name: r.get(2),
            kind: r.get::<_, String>(3).chars().next().unwrap_or('c'),
            definition: r.get(4),
            // An inherited CHECK comes with PARTITION OF, as keys and foreign keys do from
            // the parent's.
            from_parent: r.get::<_, bool>(5) || r.get::<_, bool>(12),
            validated: r.get(6),
            references: (confrelid != 0).then_some(confrelid),
            columns: r.get(8),
            referenced_columns: r.get(9),
            index: r.get(10),
            parent_index: r.get(11),
        });
    }
    for r in client.query(INDEXES_SQL, &[&oids]).await.db_context(ctx)? {
        let Some(rel) = rels.get_mut(&r.get::<_, u32>(1)) else { continue };
        rel.indexes.push(IndexSpec {
            oid: r.get(0),
            name: r.get(2),
            definition: r.get(3),
            parent_index: r.get(4),
            columns: r.get(5),
            short_name: r.get(6),
        });
    }
    for r in client.query(TRIGGERS_SQL, &[&oids]).await.db_context(ctx)? {
        if let Some(rel) = rels.get_mut(&r.get::<_, u32>(0)) {
            rel.triggers.push(r.get(1));
        }
    }
    Ok(rels)
}

/// The partitioned tables above `oid`, root first, and the partitions below it, parents
/// first: what the target needs so that `oid` is there as on the source.
pub(super) async fn family(client: &Client, oid: u32) -> Result<(Vec<u32>, Vec<u32>), Error> {
    let ctx = || format!("reading the partitions of the table with oid {oid} on the source");
    let ancestors = client
        .query(
            "SELECT relid::oid FROM pg_catalog.pg_partition_ancestors($1::oid::pg_catalog.regclass) \
             WITH ORDINALITY AS a(relid, n) WHERE relid <> $1::oid ORDER BY n DESC",
            &[&oid],
        )
        .await
        .db_context(ctx)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let descendants = client
        .query(
            "SELECT t.relid::oid FROM pg_catalog.pg_partition_tree($1::oid::pg_catalog.regclass) t \
             JOIN pg_catalog.pg_class c ON c.oid = t.relid \
             WHERE t.relid <> $1::oid ORDER BY t.level, c.relname",
            &[&oid],
        )
        .await
        .db_context(ctx)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((ancestors, descendants))
}

/// What a default, constraint or index refers to beyond built-in objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dependency {
    /// `default` (a column default or generation expression), `constraint` or `index`, and
    /// that object's OID.
    pub(super) owner: (&'static str, u32),
    pub(super) target: DependsOn,
    /// The extension the referenced object belongs to.
    pub(super) extension: Option<String>,
}

/// The object a [`Dependency`] refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DependsOn {
    /// A function, as a qualified `regprocedure` signature.
    Function(String),
    /// A type by OID.
    Type(u32),
    /// A sequence by OID (`nextval` defaults).
    Sequence(u32),
    /// Anything else (operator, operator class, collation...), described.
    Other(String),
}

const DEPENDENCIES_SQL: &str = "SELECT \
            CASE d.classid WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN 'default' \
                           WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN 'constraint' \
                           ELSE 'index' END, \
            d.objid, \
            CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN 'function' \
                 WHEN d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass THEN 'type' \
                 WHEN d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                      AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = d.refobjid) = 'S' \
                      THEN 'sequence' \
                 WHEN d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass THEN 'relation' \
                 ELSE 'other' END, \
            d.refobjid, \
            CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
                 THEN d.refobjid::pg_catalog.regprocedure::text \
                 ELSE pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0) END, \
            (SELECT x.extname::text FROM pg_catalog.pg_depend e \
               JOIN pg_catalog.pg_extension x ON x.oid = e.refobjid \
              WHERE e.classid = d.refclassid AND e.objid = d.refobjid \
                AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                AND e.deptype = 'e') \
     FROM pg_catalog.pg_depend d \
     WHERE d.refobjid >= 16384 AND d.deptype = 'n' AND ( \
         (d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass \
          AND d.objid IN (SELECT oid FROM pg_catalog.pg_attrdef WHERE adrelid = ANY($1))) \
      OR (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass \
          AND d.objid IN (SELECT oid FROM pg_catalog.pg_constraint WHERE conrelid = ANY($1))) \
      OR (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
          AND d.objid IN (SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = ANY($1))))";

/// What the defaults, constraints and indexes of `oids` refer to (user and extension objects
/// only). Call inside [`super::read::qualified`].
pub(super) async fn dependencies(client: &Client, oids: &[u32]) -> Result<Vec<Dependency>, Error> {
    let rows = client
        .query(DEPENDENCIES_SQL, &[&oids])
        .await
        .db_context(|| "reading what the tables to create use on the source".to_owned())?;
    let mut out = Vec::new();
    for r in rows {
        let owner = match r.get::<_, &str>(0) {
            "default" => "default",
            "constraint" => "constraint",
            _ => "index",
        };
        let target = match r.get::<_, &str>(2) {
            "function" => DependsOn::Function(r.get(4)),
            "type" => DependsOn::Type(r.get(3)),
            "sequence" => DependsOn::Sequence(r.get(3)),
            // A foreign key's referenced table: handled as a foreign key.
            "relation" => continue,
            _ => DependsOn::Other(r.get(4)),
        };
        out.push(Dependency { owner: (owner, r.get(1)), target, extension: r.get(5) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, ty: &str) -> ColumnSpec {
        ColumnSpec {
            attnum: 1,
            name: name.into(),
            type_sql: ty.into(),
            type_oid: 0,
            not_null: false,
            identity: None,
            generated: None,
            default: None,
            default_oid: None,
            collation: None,
            identity_options: None,
        }
    }

    fn rel(columns: Vec<ColumnSpec>) -> RelSpec {
        RelSpec {
            oid: 1,
            schema: "app".into(),
            name: "film".into(),
            partition_key: None,
            partition_of: None,
            options: Vec::new(),
            replica_identity: 'd',
            replica_index: None,
            columns,
            constraints: Vec::new(),
            indexes: Vec::new(),
            triggers: Vec::new(),
        }
    }

    #[test]
    fn columns_keep_identity_kind_generation_defaults_and_collation() {
        let mut id = column("id", "integer");
        id.identity = Some(IdentityKind::Always);
        id.not_null = true;
        id.identity_options = Some("SEQUENCE NAME app.s START WITH 100".into());
        assert_eq!(
            column_sql(&id),
            "\"id\" integer GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME app.s START WITH 100) NOT NULL"
        );
        id.identity = Some(IdentityKind::ByDefault);
        assert!(column_sql(&id).contains("GENERATED BY DEFAULT AS IDENTITY"));
        let mut g = column("len", "integer");
        g.generated = Some("length(title)".into());
        assert_eq!(column_sql(&g), "\"len\" integer GENERATED ALWAYS AS (length(title)) STORED");
        let mut d = column("rating", "public.mpaa_rating");
        d.default = Some("'G'::public.mpaa_rating".into());
        d.collation = Some(("pg_catalog.\"C\"".into(), true));
        assert_eq!(
            column_sql(&d),
            "\"rating\" public.mpaa_rating COLLATE pg_catalog.\"C\" DEFAULT 'G'::public.mpaa_rating"
        );
    }

    #[test]
    fn tables_partitions_and_options() {
        let mut t = rel(vec![column("id", "bigint"), column("paid", "date")]);
        t.partition_key = Some("RANGE (paid)".into());
        t.options = vec!["fillfactor=70".into()];
        assert_eq!(
            t.create_sql(None),
            "CREATE TABLE \"app\".\"film\" (\n    \"id\" bigint,\n    \"paid\" date\n) \
             PARTITION BY RANGE (paid) WITH (fillfactor = '70')"
        );
        let mut p = rel(vec![column("id", "bigint")]);
        p.name = "film_2022".into();
        p.partition_of = Some((1, "FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')".into()));
        assert_eq!(
            p.create_sql(Some("\"app\".\"film\"")),
            "CREATE TABLE \"app\".\"film_2022\" PARTITION OF \"app\".\"film\" \
             FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')"
        );
        assert_eq!(p.replica_identity_sql(), None);
        p.replica_identity = 'f';
        assert_eq!(
            p.replica_identity_sql().unwrap(),
            "ALTER TABLE ONLY \"app\".\"film_2022\" REPLICA IDENTITY FULL"
        );
        p.replica_identity = 'i';
        p.replica_index = Some("film_2022_u".into());
        assert!(p.replica_identity_sql().unwrap().ends_with("USING INDEX \"film_2022_u\""));
    }

    #[test]
    fn constraints_keys_only_foreign_keys_not_valid_unless_asked() {
        let c = |kind, def: &str| ConstraintSpec {
            oid: 1,
            name: "c".into(),
            kind,
            definition: def.into(),
            from_parent: false,
            validated: true,
            references: None,
            columns: Vec::new(),
            referenced_columns: Vec::new(),
            index: None,
            parent_index: None,
        };
        let t = "\"app\".\"t\"";
        assert_eq!(
            constraint_sql(t, &c('p', "PRIMARY KEY (id)"), false),
            "ALTER TABLE ONLY \"app\".\"t\" ADD CONSTRAINT \"c\" PRIMARY KEY (id)"
        );
        let fk = c('f', "FOREIGN KEY (l) REFERENCES app.language(id)");
        assert!(constraint_sql(t, &fk, false).ends_with("(id) NOT VALID"));
        assert!(constraint_sql(t, &fk, true).ends_with("(id)"));
        let nv = c('f', "FOREIGN KEY (l) REFERENCES app.language(id) NOT VALID");
        assert!(!constraint_sql(t, &nv, false).ends_with("NOT VALID NOT VALID"));
        assert_eq!(
            constraint_sql(t, &c('c', "CHECK ((x > 0))"), false),
            "ALTER TABLE \"app\".\"t\" ADD CONSTRAINT \"c\" CHECK ((x > 0))"
        );
        assert_eq!(
            attach_sql("app.p_pkey", "app.p1_pkey"),
            "ALTER INDEX app.p_pkey ATTACH PARTITION app.p1_pkey"
        );
    }
}
