//! User-defined types the mirrored tables use: enums, domains, composite and range types,
//! read from the catalog, created on the target in dependency order, and compared with the
//! target's own when it has them already.

use std::collections::{HashMap, HashSet};

use pgconn::{quote_ident, quote_literal};
use tokio_postgres::Client;

use super::SchemaProblem;
use super::read::qualify;

use crate::error::{DbContext, Error};

/// What a user-defined type is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TypeKind {
    /// `CREATE TYPE ... AS ENUM`, labels in sort order.
    Enum { labels: Vec<String> },
    /// `CREATE DOMAIN`.
    Domain {
        /// `format_type` of the base type with its modifier.
        base: String,
        not_null: bool,
        default: Option<String>,
        collation: Option<String>,
        checks: Vec<DomainCheck>,
    },
    /// `CREATE TYPE ... AS (...)`: attribute name, type and non-default collation.
    Composite { attributes: Vec<(String, String, Option<String>)> },
    /// `CREATE TYPE ... AS RANGE`.
    Range {
        subtype: String,
        opclass: Option<String>,
        collation: Option<String>,
        /// `SUBTYPE_DIFF` as a qualified function name, and whether it is built in.
        diff: Option<(String, bool)>,
        /// A `CANONICAL` function: only C functions can be one, so pgmirror cannot create it.
        canonical: Option<String>,
        multirange: Option<String>,
    },
    /// A base or pseudo type (`typtype`): defined in C, never created by pgmirror.
    Other(String),
}

/// One CHECK constraint of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DomainCheck {
    pub(super) name: String,
    /// `pg_get_constraintdef`, e.g. `CHECK ((VALUE > 0))`, with ` NOT VALID` if so.
    pub(super) definition: String,
}

/// A user-defined type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TypeDef {
    pub(super) oid: u32,
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) kind: TypeKind,
    /// The extension it belongs to, if any (then the target needs that extension).
    pub(super) extension: Option<String>,
    /// User-defined types this one needs first (by OID on its side).
    pub(super) needs: Vec<u32>,
}

impl TypeDef {
    /// `"schema"."name"`.
    pub(super) fn quoted(&self) -> String {
        qualify(&self.schema, &self.name)
    }

    /// A few words for listings: `enum`, `domain over integer`, ...
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            TypeKind::Enum { labels } => format!("enum of {} labels", labels.len()),
            TypeKind::Domain { base, .. } => format!("domain over {base}"),
            TypeKind::Composite { attributes } => {
                format!("composite of {} attributes", attributes.len())
            }
            TypeKind::Range { subtype, .. } => format!("range of {subtype}"),
            TypeKind::Other(t) => format!("type of kind {t:?}"),
        }
    }

    /// Why pgmirror cannot create this type, if it cannot.
    pub(super) fn cannot_create(&self) -> Option<SchemaProblem> {
        let object = format!("type {}", self.quoted());
        if let Some(ext) = &self.extension {
            return Some(SchemaProblem::new(
                object,
                format!("belongs to extension {ext:?}, which the target lacks"),
                format!("on the target: CREATE EXTENSION {};", quote_ident(ext)),
            ));
        }
        match &self.kind {
            TypeKind::Other(kind) if kind == "c" => Some(SchemaProblem::new(
                object,
                "is the row type of a table, which pgmirror does not create as a type",
                "create the table on the target before `pgmirror mirror`",
            )),
            TypeKind::Other(_) => Some(SchemaProblem::new(
                object,
                "is a base type defined in C, which pgmirror cannot create",
                "create it on the target (with the library that defines it) before `pgmirror mirror`",
            )),
            TypeKind::Range { canonical: Some(f), .. } => Some(SchemaProblem::new(
                object,
                format!(
                    "is a range type with the canonical function {f}, which pgmirror cannot create"
                ),
                "create the type on the target before `pgmirror mirror`",
            )),
            _ => None,
        }
    }

    /// The statements creating the type (one, or a domain and its NOT VALID checks).
    pub(super) fn create_sql(&self) -> Vec<String> {
        let q = self.quoted();
        match &self.kind {
            TypeKind::Enum { labels } => {
                let labels: Vec<String> = labels.iter().map(|l| quote_literal(l)).collect();
                vec![format!("CREATE TYPE {q} AS ENUM ({})", labels.join(", "))]
            }
            TypeKind::Domain { base, not_null, default, collation, checks } => {
                let mut sql = format!("CREATE DOMAIN {q} AS {base}");
                if let Some(c) = collation {
                    sql.push_str(&format!(" COLLATE {c}"));
                }
                if let Some(d) = default {
                    sql.push_str(&format!(" DEFAULT {d}"));
                }
                if *not_null {
                    sql.push_str(" NOT NULL");
                }
                let mut out = Vec::new();
                for check in checks {
                    // CREATE DOMAIN takes no NOT VALID constraint.
                    if check.definition.ends_with(" NOT VALID") {
                        out.push(format!(
                            "ALTER DOMAIN {q} ADD CONSTRAINT {} {}",
                            quote_ident(&check.name),
                            check.definition
                        ));
                    } else {
                        sql.push_str(&format!(
                            " CONSTRAINT {} {}",
                            quote_ident(&check.name),
                            check.definition
                        ));
                    }
                }
                out.insert(0, sql);
                out
            }
            TypeKind::Composite { attributes } => {
                let attrs: Vec<String> = attributes
                    .iter()
                    .map(|(name, ty, coll)| match coll {
                        Some(c) => format!("{} {ty} COLLATE {c}", quote_ident(name)),
                        None => format!("{} {ty}", quote_ident(name)),
                    })
                    .collect();
                vec![format!("CREATE TYPE {q} AS ({})", attrs.join(", "))]
            }
            TypeKind::Range { subtype, opclass, collation, diff, multirange, .. } => {
                let mut opts = vec![format!("SUBTYPE = {subtype}")];
                if let Some(o) = opclass {
                    opts.push(format!("SUBTYPE_OPCLASS = {o}"));
                }
                if let Some(c) = collation {
                    opts.push(format!("COLLATION = {c}"));
                }
                if let Some((f, _)) = diff {
                    opts.push(format!("SUBTYPE_DIFF = {f}"));
                }
                if let Some(m) = multirange {
                    opts.push(format!("MULTIRANGE_TYPE_NAME = {m}"));
                }
                vec![format!("CREATE TYPE {q} AS RANGE ({})", opts.join(", "))]
            }
            TypeKind::Other(_) => Vec::new(),
        }
    }

    /// The statement that removes the type again.
    pub(super) fn drop_sql(&self) -> String {
        match self.kind {
            TypeKind::Domain { .. } => format!("DROP DOMAIN IF EXISTS {}", self.quoted()),
            _ => format!("DROP TYPE IF EXISTS {}", self.quoted()),
        }
    }
}

/// The outcome of comparing a source type with the target's type of the same name.
#[derive(Debug, Default)]
pub(super) struct Comparison {
    /// Differences that make copied or replicated rows fail.
    pub(super) problems: Vec<SchemaProblem>,
    /// Differences that do not (a domain laxer on the target).
    pub(super) warnings: Vec<SchemaProblem>,
}

/// Compares the target's type with the source's: a missing enum label, a domain over another
/// base type, a target-only domain constraint or NOT NULL, a missing or different composite
/// attribute, or another range subtype would reject source values.
pub(super) fn compare(source: &TypeDef, target: &TypeDef) -> Comparison {
    let mut out = Comparison::default();
    let q = source.quoted();
    let object = || format!("type {q}");
    match (&source.kind, &target.kind) {
        (TypeKind::Enum { labels: want }, TypeKind::Enum { labels: have }) => {
            let missing: Vec<&String> = want.iter().filter(|l| !have.contains(l)).collect();
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(|l| quote_literal(l)).collect();
                out.problems.push(SchemaProblem::new(
                    object(),
                    format!(
                        "lacks {} {} on the target, so rows holding {} fail",
                        if missing.len() == 1 { "label" } else { "labels" },
                        list.join(", "),
                        if missing.len() == 1 { "it" } else { "them" }
                    ),
                    format!("on the target: {}", enum_fix(&q, want, have).join(" ")),
                ));
            }
        }
        (
            TypeKind::Domain { base, not_null, checks, .. },
            TypeKind::Domain { base: t_base, not_null: t_not_null, checks: t_checks, .. },
        ) => {
            if base != t_base {
                out.problems.push(SchemaProblem::new(
                    object(),
                    format!(
                        "is a domain over {base} on the source but over {t_base} on the target"
                    ),
                    format!(
                        "on the target: DROP DOMAIN {q} (and what uses it), then {};",
                        source.create_sql().join("; ")
                    ),
                ));
                return out;
            }
            if *t_not_null && !not_null {
                out.problems.push(SchemaProblem::new(
                    object(),
                    "is NOT NULL on the target but not on the source, so NULLs from the source fail",
                    format!("on the target: ALTER DOMAIN {q} DROP NOT NULL;"),
                ));
            }
            domain_checks(&q, checks, t_checks, &mut out);
        }
        (TypeKind::Composite { attributes }, TypeKind::Composite { attributes: t_attrs }) => {
            let mut fixes = Vec::new();
            for (name, ty, _) in attributes {
                match t_attrs.iter().find(|(n, _, _)| n == name) {
                    None => fixes
                        .push(format!("ALTER TYPE {q} ADD ATTRIBUTE {} {ty};", quote_ident(name))),
                    Some((_, t_ty, _)) if t_ty != ty => fixes.push(format!(
                        "ALTER TYPE {q} ALTER ATTRIBUTE {} TYPE {ty};",
                        quote_ident(name)
                    )),
                    Some(_) => {}
                }
            }
            if !fixes.is_empty() {
                out.problems.push(SchemaProblem::new(
                    object(),
                    "lacks attributes of the source's on the target, or types them differently",
                    format!("on the target: {}", fixes.join(" ")),
                ));
            }
        }
        (TypeKind::Range { subtype, .. }, TypeKind::Range { subtype: t_sub, .. }) => {
            if subtype != t_sub {
                out.problems.push(SchemaProblem::new(
                    object(),
                    format!("is a range of {subtype} on the source but of {t_sub} on the target"),
                    format!(
                        "on the target: DROP TYPE {q} (and what uses it), then {};",
                        source.create_sql().join("; ")
                    ),
                ));
            }
        }
        (TypeKind::Other(_), _) => {}
        _ => out.problems.push(SchemaProblem::new(
            object(),
            format!(
                "is a {} on the source but a {} on the target",
                source.describe(),
                target.describe()
            ),
            format!(
                "on the target: {} (and what uses it), so pgmirror creates it",
                source.drop_sql().replace(" IF EXISTS", "")
            ),
        )),
    }
    out
}

/// `ALTER TYPE ... ADD VALUE` for each label the target lacks, placed as on the source.
fn enum_fix(q: &str, want: &[String], have: &[String]) -> Vec<String> {
    let mut fixes = Vec::new();
    for (i, label) in want.iter().enumerate() {
        if have.contains(label) {
            continue;
        }
        let place = if i > 0 {
            // The previous label exists by now: it was there, or an earlier fix added it.
            format!(" AFTER {}", quote_literal(&want[i - 1]))
        } else {
            match want.iter().find(|l| have.contains(l)) {
                Some(next) => format!(" BEFORE {}", quote_literal(next)),
                None => String::new(),
            }
        };
        fixes.push(format!("ALTER TYPE {q} ADD VALUE {}{place};", quote_literal(label)));
    }
    fixes
}

/// A target-only CHECK can reject source values (a problem); a source CHECK the target lacks
/// only makes the target laxer (a warning).
fn domain_checks(q: &str, want: &[DomainCheck], have: &[DomainCheck], out: &mut Comparison) {
    let same = |a: &DomainCheck, b: &DomainCheck| {
        a.definition.trim_end_matches(" NOT VALID") == b.definition.trim_end_matches(" NOT VALID")
    };
    let extra: Vec<&DomainCheck> =
        have.iter().filter(|t| !want.iter().any(|s| same(s, t))).collect();
    let lacking: Vec<&DomainCheck> =
        want.iter().filter(|s| !have.iter().any(|t| same(s, t))).collect();
    let add = |c: &DomainCheck| {
        format!("ALTER DOMAIN {q} ADD CONSTRAINT {} {};", quote_ident(&c.name), c.definition)
    };
    if !extra.is_empty() {
        let defs: Vec<String> =
            extra.iter().map(|c| format!("{} {}", quote_ident(&c.name), c.definition)).collect();
        let mut fix: Vec<String> = extra
            .iter()
            .map(|c| format!("ALTER DOMAIN {q} DROP CONSTRAINT {};", quote_ident(&c.name)))
            .collect();
        fix.extend(lacking.iter().map(|c| add(c)));
        out.problems.push(SchemaProblem::new(
            format!("type {q}"),
            format!(
                "has the constraint {} on the target but not on the source, so it can reject rows the source holds",
                defs.join(", ")
            ),
            format!("on the target: {}", fix.join(" ")),
        ));
    } else if !lacking.is_empty() {
        let defs: Vec<&str> = lacking.iter().map(|c| c.definition.as_str()).collect();
        let fix: Vec<String> = lacking.iter().map(|c| add(c)).collect();
        out.warnings.push(SchemaProblem::new(
            format!("type {q}"),
            format!("lacks the source's {} on the target", defs.join(", ")),
            format!("on the target: {}", fix.join(" ")),
        ));
    }
}

/// Every user-defined type behind `oids` (array element types, domain base types, composite
/// attribute types, range subtypes, recursively), keyed by OID, plus the OIDs that merely
/// stand for another type (an array for its element, a multirange for its range).
#[derive(Debug, Default)]
pub(super) struct TypeSet {
    pub(super) types: HashMap<u32, TypeDef>,
    pub(super) aliases: HashMap<u32, u32>,
}

impl TypeSet {
    /// The user-defined type `oid` stands for, if any.
    pub(super) fn resolve(&self, oid: u32) -> Option<&TypeDef> {
        let mut oid = oid;
        for _ in 0..8 {
            if let Some(t) = self.types.get(&oid) {
                return Some(t);
            }
            oid = *self.aliases.get(&oid)?;
        }
        None
    }

    /// The types `wanted` resolve to, each after the types it needs (a stable depth-first
    /// order; the catalog admits no cycles).
    pub(super) fn creation_order(&self, wanted: &[u32]) -> Vec<&TypeDef> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for &oid in wanted {
            self.visit(oid, &mut seen, &mut out);
        }
        out
    }

    fn visit<'a>(&'a self, oid: u32, seen: &mut HashSet<u32>, out: &mut Vec<&'a TypeDef>) {
        let Some(t) = self.resolve(oid) else { return };
        if !seen.insert(t.oid) {
            return;
        }
        for &dep in &t.needs {
            self.visit(dep, seen, out);
        }
        out.push(t);
    }
}

/// The types behind `oids`, recursively (see [`TypeSet`]). Runs inside [`super::read::qualified`].
const TYPES_SQL: &str = "WITH RECURSIVE ts(oid) AS ( \
        SELECT unnest($1::oid[]) \
      UNION \
        SELECT d.ref FROM ts JOIN pg_catalog.pg_type t ON t.oid = ts.oid \
        CROSS JOIN LATERAL ( \
            SELECT t.typelem WHERE t.typelem <> 0 \
            UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0 \
            UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a \
                      JOIN pg_catalog.pg_class c ON c.oid = a.attrelid AND c.relkind = 'c' \
                      WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
            UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid \
            UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid \
        ) d(ref) WHERE $2 \
    ) \
    SELECT t.oid, n.nspname::text, t.typname::text, t.typtype::text, \
           CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid) \
                THEN t.typelem \
                ELSE (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid) \
           END, \
           (SELECT x.extname::text FROM pg_catalog.pg_depend d \
              JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid \
             WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid \
               AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
               AND d.deptype = 'e'), \
           pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typbasetype, t.typnotnull, \
           pg_catalog.pg_get_expr(t.typdefaultbin, 0), \
           CASE WHEN t.typtype = 'd' AND t.typcollation <> bt.typcollation THEN \
                (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                 FROM pg_catalog.pg_collation co \
                 JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                 WHERE co.oid = t.typcollation) END, \
           coalesce(c.relkind::text, '') \
    FROM ts JOIN pg_catalog.pg_type t ON t.oid = ts.oid \
    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
    LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
    LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid \
    WHERE t.oid >= 16384";

const ENUM_SQL: &str = "SELECT enumtypid, enumlabel::text FROM pg_catalog.pg_enum \
     WHERE enumtypid = ANY($1) ORDER BY enumtypid, enumsortorder";

const DOMAIN_CHECKS_SQL: &str = "SELECT contypid, conname::text, \
            pg_catalog.pg_get_constraintdef(oid) \
     FROM pg_catalog.pg_constraint WHERE contypid = ANY($1) AND contype = 'c' \
     ORDER BY contypid, conname";

const ATTRIBUTES_SQL: &str = "SELECT t.oid, a.attname::text, \
            pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid, \
            CASE WHEN a.attcollation <> at.typcollation THEN \
                 (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                  FROM pg_catalog.pg_collation co \
                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                  WHERE co.oid = a.attcollation) END \
     FROM pg_catalog.pg_type t \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid \
     JOIN pg_catalog.pg_type at ON at.oid = a.atttypid \
     WHERE t.oid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY t.oid, a.attnum";

const RANGES_SQL: &str = "SELECT r.rngtypid, pg_catalog.format_type(r.rngsubtype, NULL), \
            r.rngsubtype, \
            CASE WHEN NOT opc.opcdefault THEN pg_catalog.quote_ident(on_.nspname) || '.' \
                 || pg_catalog.quote_ident(opc.opcname) END, \
            CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN \
                 (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                  FROM pg_catalog.pg_collation co \
                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                  WHERE co.oid = r.rngcollation) END, \
            CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::pg_catalog.regprocedure::text END, \
            r.rngsubdiff::oid < 16384, \
            CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::pg_catalog.regproc::text END, \
            CASE WHEN r.rngmultitypid <> 0 THEN r.rngmultitypid::pg_catalog.regtype::text END \
     FROM pg_catalog.pg_range r \
     JOIN pg_catalog.pg_type st ON st.oid = r.rngsubtype \
     JOIN pg_catalog.pg_opclass opc ON opc.oid = r.rngsubopc \
     JOIN pg_catalog.pg_namespace on_ ON on_.oid = opc.opcnamespace \
     WHERE r.rngtypid = ANY($1)";

/// Loads the user-defined types behind `oids` (with `recursive`, also those they are built
/// from). Call inside [`super::read::qualified`].
pub(super) async fn load(
    client: &Client,
    oids: &[u32],
    recursive: bool,
    side: &str,
) -> Result<TypeSet, Error> {
    let ctx = || format!("reading user-defined types on the {side}");
    let rows = client.query(TYPES_SQL, &[&oids, &recursive]).await.db_context(ctx)?;
    let mut set = TypeSet::default();
    let mut by_kind: HashMap<char, Vec<u32>> = HashMap::new();
    for r in &rows {
        let oid: u32 = r.get(0);
        if let Some(stands_for) = r.get::<_, Option<u32>>(4).filter(|o| *o != 0) {
            set.aliases.insert(oid, stands_for);
            continue;
        }
        let typtype = r.get::<_, String>(3).chars().next().unwrap_or('b');
        let relkind: String = r.get(11);
        let kind = match typtype {
            'e' => TypeKind::Enum { labels: Vec::new() },
            'd' => TypeKind::Domain {
                base: r.get(6),
                not_null: r.get(8),
                default: r.get(9),
                collation: r.get(10),
                checks: Vec::new(),
            },
            'c' if relkind == "c" => TypeKind::Composite { attributes: Vec::new() },
            'r' => TypeKind::Range {
                subtype: String::new(),
                opclass: None,
                collation: None,
                diff: None,
                canonical: None,
                multirange: None,
            },
            other => TypeKind::Other(other.to_string()),
        };
        by_kind.entry(typtype).or_default().push(oid);
        let needs = match typtype {
            'd' => vec![r.get::<_, u32>(7)],
            _ => Vec::new(),
        };
        set.types.insert(
            oid,
            TypeDef { oid, schema: r.get(1), name: r.get(2), kind, extension: r.get(5), needs },
        );
    }
    let of = |k: char| by_kind.get(&k).cloned().unwrap_or_default();
    for r in client.query(ENUM_SQL, &[&of('e')]).await.db_context(ctx)? {
        if let Some(TypeKind::Enum { labels }) =
            set.types.get_mut(&r.get::<_, u32>(0)).map(|t| &mut t.kind)
        {
            labels.push(r.get(1));
        }
    }
    for r in client.query(DOMAIN_CHECKS_SQL, &[&of('d')]).await.db_context(ctx)? {
        if let Some(TypeKind::Domain { checks, .. }) =
            set.types.get_mut(&r.get::<_, u32>(0)).map(|t| &mut t.kind)
        {
            checks.push(DomainCheck { name: r.get(1), definition: r.get(2) });
        }
    }
    for r in client.query(ATTRIBUTES_SQL, &[&of('c')]).await.db_context(ctx)? {
        if let Some(t) = set.types.get_mut(&r.get::<_, u32>(0))
            && let TypeKind::Composite { attributes } = &mut t.kind
        {
            attributes.push((r.get(1), r.get(2), r.get(4)));
            t.needs.push(r.get(3));
        }
    }
    for r in client.query(RANGES_SQL, &[&of('r')]).await.db_context(ctx)? {
        if let Some(t) = set.types.get_mut(&r.get::<_, u32>(0)) {
            let diff = r.get::<_, Option<String>>(5).map(|f| (regproc_name(&f), r.get(6)));
            t.kind = TypeKind::Range {
                subtype: r.get(1),
                opclass: r.get(3),
                collation: r.get(4),
                diff,
                canonical: r.get(7),
                multirange: r.get(8),
            };
            t.needs.push(r.get(2));
        }
    }
    Ok(set)
}

/// `schema.f(argtypes)` (a `regprocedure`) without its argument list, as `SUBTYPE_DIFF` wants.
fn regproc_name(signature: &str) -> String {
    signature.split_once('(').map_or(signature, |(name, _)| name).to_owned()
}

/// The OIDs of the target's types with the given `(schema, name)`s.
pub(super) async fn target_oids(
    target: &Client,
    names: &[(String, String)],
) -> Result<HashMap<(String, String), u32>, Error> {
    let schemas: Vec<&str> = names.iter().map(|(s, _)| s.as_str()).collect();
    let types: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    let rows = target
        .query(
            "SELECT n.nspname::text, t.typname::text, t.oid \
             FROM unnest($1::text[], $2::text[]) AS w(schema, name) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema \
             JOIN pg_catalog.pg_type t ON t.typnamespace = n.oid AND t.typname = w.name",
            &[&schemas, &types],
        )
        .await
        .db_context(|| "looking up types on the target".to_owned())?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str, kind: TypeKind) -> TypeDef {
        TypeDef {
            oid: 0,
            schema: "app".into(),
            name: name.into(),
            kind,
            extension: None,
            needs: Vec::new(),
        }
    }

    fn domain(base: &str, not_null: bool, checks: &[(&str, &str)]) -> TypeKind {
        TypeKind::Domain {
            base: base.into(),
            not_null,
            default: Some("0".into()),
            collation: None,
            checks: checks
                .iter()
                .map(|(n, d)| DomainCheck { name: (*n).into(), definition: (*d).into() })
                .collect(),
        }
    }

    #[test]
    fn create_sql_of_each_kind() {
        let e = ty("mood", TypeKind::Enum { labels: vec!["it's".into(), "ok".into()] });
        assert_eq!(e.create_sql(), ["CREATE TYPE \"app\".\"mood\" AS ENUM ('it''s', 'ok')"]);
        let d = ty(
            "price",
            domain(
                "numeric(10,2)",
                true,
                &[("pos", "CHECK ((VALUE >= 0))"), ("nv", "CHECK ((VALUE < 9)) NOT VALID")],
            ),
        );
        assert_eq!(
            d.create_sql(),
            [
                "CREATE DOMAIN \"app\".\"price\" AS numeric(10,2) DEFAULT 0 NOT NULL \
                 CONSTRAINT \"pos\" CHECK ((VALUE >= 0))",
                "ALTER DOMAIN \"app\".\"price\" ADD CONSTRAINT \"nv\" CHECK ((VALUE < 9)) NOT VALID"
            ]
        );
        assert_eq!(d.drop_sql(), "DROP DOMAIN IF EXISTS \"app\".\"price\"");
        let c = ty(
            "addr",
            TypeKind::Composite {
                attributes: vec![
                    ("street".into(), "text".into(), None),
                    ("zip".into(), "app.tag".into(), Some("pg_catalog.\"C\"".into())),
                ],
            },
        );
        assert_eq!(
            c.create_sql(),
            [
                "CREATE TYPE \"app\".\"addr\" AS (\"street\" text, \"zip\" app.tag COLLATE pg_catalog.\"C\")"
            ]
        );
        let r = ty(
            "fr",
            TypeKind::Range {
                subtype: "double precision".into(),
                opclass: None,
                collation: None,
                diff: Some(("float8mi".into(), true)),
                canonical: None,
                multirange: Some("app.frm".into()),
            },
        );
        assert_eq!(
            r.create_sql(),
            ["CREATE TYPE \"app\".\"fr\" AS RANGE (SUBTYPE = double precision, \
              SUBTYPE_DIFF = float8mi, MULTIRANGE_TYPE_NAME = app.frm)"]
        );
        assert_eq!(r.drop_sql(), "DROP TYPE IF EXISTS \"app\".\"fr\"");
        assert_eq!(regproc_name("app.diff(double precision,double precision)"), "app.diff");
    }

    #[test]
    fn a_missing_enum_label_fails_with_statements_placing_it() {
        let src = ty("r", TypeKind::Enum { labels: vec!["G".into(), "PG".into(), "R".into()] });
        let dst = ty("r", TypeKind::Enum { labels: vec!["PG".into(), "X".into()] });
        let cmp = compare(&src, &dst);
        assert_eq!(cmp.problems.len(), 1);
        let p = cmp.problems[0].to_string();
        assert!(p.contains("lacks labels 'G', 'R' on the target"), "{p}");
        assert!(
            p.contains(
                "ALTER TYPE \"app\".\"r\" ADD VALUE 'G' BEFORE 'PG'; \
                 ALTER TYPE \"app\".\"r\" ADD VALUE 'R' AFTER 'PG';"
            ),
            "{p}"
        );
        // Extra target labels are fine.
        let cmp = compare(
            &dst,
            &ty("r", TypeKind::Enum { labels: vec!["PG".into(), "X".into(), "Y".into()] }),
        );
        assert!(cmp.problems.is_empty());
    }

    #[test]
    fn domain_differences() {
        let src = ty(
            "year",
            domain(
                "integer",
                false,
                &[("year_check", "CHECK (((VALUE >= 1901) AND (VALUE <= 2155)))")],
            ),
        );
        // A narrower target constraint fails with the ALTER DOMAIN that fixes it.
        let narrow =
            ty("year", domain("integer", false, &[("year_check", "CHECK ((VALUE >= 2000))")]));
        let cmp = compare(&src, &narrow);
        let p = cmp.problems[0].to_string();
        assert!(p.contains("ALTER DOMAIN \"app\".\"year\" DROP CONSTRAINT \"year_check\";"), "{p}");
        assert!(
            p.contains(
                "ADD CONSTRAINT \"year_check\" CHECK (((VALUE >= 1901) AND (VALUE <= 2155)));"
            ),
            "{p}"
        );
        // A laxer target only warns; the same constraint under another name matches.
        let lax = ty("year", domain("integer", false, &[]));
        let cmp = compare(&src, &lax);
        assert!(cmp.problems.is_empty() && cmp.warnings.len() == 1);
        let renamed = ty(
            "year",
            domain("integer", false, &[("other", "CHECK (((VALUE >= 1901) AND (VALUE <= 2155)))")]),
        );
        let cmp = compare(&src, &renamed);
        assert!(cmp.problems.is_empty() && cmp.warnings.is_empty());
        // Another base type, or NOT NULL only on the target.
        let cmp = compare(&src, &ty("year", domain("bigint", false, &[])));
        assert!(cmp.problems[0].to_string().contains("over integer on the source but over bigint"));
        let cmp = compare(&src, &ty("year", domain("integer", true, &src_checks(&src))));
        assert!(cmp.problems[0].to_string().contains("DROP NOT NULL"));
        // Another kind altogether.
        let cmp = compare(&src, &ty("year", TypeKind::Enum { labels: vec![] }));
        assert!(cmp.problems[0].to_string().contains("DROP DOMAIN \"app\".\"year\""));
    }

    fn src_checks(t: &TypeDef) -> Vec<(&str, &str)> {
        match &t.kind {
            TypeKind::Domain { checks, .. } => {
                checks.iter().map(|c| (c.name.as_str(), c.definition.as_str())).collect()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn creation_order_puts_what_a_type_needs_first() {
        let mut set = TypeSet::default();
        let mut tag = ty("tag", domain("text", false, &[]));
        tag.oid = 1;
        let mut addr = ty("addr", TypeKind::Composite { attributes: vec![] });
        addr.oid = 2;
        addr.needs = vec![11]; // tag[]
        let mut outer = ty("outer", domain("app.addr", false, &[]));
        outer.oid = 3;
        outer.needs = vec![2];
        for t in [tag, addr, outer] {
            set.types.insert(t.oid, t);
        }
        set.aliases.insert(11, 1);
        set.aliases.insert(13, 3);
        let order: Vec<u32> = set.creation_order(&[13, 1, 99]).iter().map(|t| t.oid).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }

    #[test]
    fn types_that_cannot_be_created_say_why() {
        let mut t = ty("citext", TypeKind::Other("b".into()));
        assert!(t.cannot_create().unwrap().to_string().contains("base type defined in C"));
        t.extension = Some("citext".into());
        let p = t.cannot_create().unwrap().to_string();
        assert!(
            p.contains("extension \"citext\"") && p.contains("CREATE EXTENSION \"citext\";"),
            "{p}"
        );
    }
}
