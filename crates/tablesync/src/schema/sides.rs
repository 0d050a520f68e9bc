//! What the plan reads: the source's definitions of what the mirror needs, and what of it
//! the target already has.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use super::sequences::{self, SeqSpec};
use super::tables::{self, Dependency, DependsOn, RelSpec};
use super::types::{self, TypeDef, TypeSet};
use crate::catalog::TableDef;
use crate::error::{DbContext, Error};
use crate::ident::QualifiedName;

/// The source's side: every relation the missing mirrored tables need (partitioned tables
/// above them, partitions below them), with their types, sequences and dependencies.
#[derive(Debug, Default)]
pub(super) struct SourceSide {
    /// Relations to create if the target lacks them, parents first.
    pub(super) order: Vec<u32>,
    /// Each relation's mirrored table (itself, or the mirrored table of its partition tree).
    pub(super) family: HashMap<u32, u32>,
    pub(super) rels: HashMap<u32, RelSpec>,
    pub(super) deps: Vec<Dependency>,
    pub(super) types: TypeSet,
    pub(super) sequences: Vec<SeqSpec>,
}

impl SourceSide {
    /// Call inside [`super::read::qualified`].
    pub(super) async fn load(
        source: &Client,
        tables: &[TableDef],
        missing: &[&TableDef],
    ) -> Result<Self, Error> {
        let mut side = SourceSide::default();
        let oids: Vec<u32> = missing.iter().map(|t| t.oid).collect();
        let in_trees: HashSet<u32> = source
            .query(
                "SELECT oid FROM pg_catalog.pg_class WHERE oid = ANY($1) \
                 AND (relispartition OR relkind = 'p')",
                &[&oids],
            )
            .await
            .db_context(|| "reading partitioning on the source".to_owned())?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut seen = HashSet::new();
        for t in missing {
            let (above, below) = if in_trees.contains(&t.oid) {
                tables::family(source, t.oid).await?
            } else {
                (Vec::new(), Vec::new())
            };
            for oid in above.into_iter().chain([t.oid]).chain(below) {
                if seen.insert(oid) {
                    side.order.push(oid);
                    side.family.insert(oid, t.oid);
                }
            }
        }
        side.rels = tables::load(source, &side.order).await?;
        // A publication's column list: the target gets the published columns only.
        for (oid, rel) in &mut side.rels {
            let Some(table) =
                side.family.get(oid).and_then(|m| tables.iter().find(|t| t.oid == *m))
            else {
                continue;
            };
            rel.columns.retain(|c| table.column(&c.name).is_some());
        }
        side.deps = tables::dependencies(source, &side.order).await?;
        let mut type_oids: Vec<u32> =
            side.rels.values().flat_map(|r| r.columns.iter().map(|c| c.type_oid)).collect();
        type_oids.extend(tables.iter().flat_map(|t| t.columns.iter().map(|c| c.type_oid)));
        let mut seq_oids = Vec::new();
        for d in &side.deps {
            match d.target {
                DependsOn::Type(oid) => type_oids.push(oid),
                DependsOn::Sequence(oid) => seq_oids.push(oid),
                _ => {}
            }
        }
        type_oids.sort_unstable();
        type_oids.dedup();
        side.types = types::load(source, &type_oids, true, "source").await?;
        side.sequences = sequences::load(source, &seq_oids, &side.order).await?;
        Ok(side)
    }

    /// The relation owning a default, constraint or index, by the dependency's owner.
    pub(super) fn owners(&self) -> HashMap<(&'static str, u32), u32> {
        let mut out = HashMap::new();
        for rel in self.rels.values() {
            for c in &rel.columns {
                if let Some(oid) = c.default_oid {
                    out.insert(("default", oid), rel.oid);
                }
            }
            for c in &rel.constraints {
                out.insert(("constraint", c.oid), rel.oid);
            }
            for i in &rel.indexes {
                out.insert(("index", i.oid), rel.oid);
            }
        }
        out
    }
}

/// A foreign key that exists on the target among the mirrored tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TargetForeignKey {
    pub(super) table: QualifiedName,
    pub(super) references: QualifiedName,
    pub(super) name: String,
    pub(super) definition: String,
    /// The copy sets it aside while loading its table (NOT VALID, on a table the role owns).
    pub(super) set_aside: bool,
}

/// The target's side: what it has of what the source side needs.
#[derive(Debug, Default)]
pub(super) struct TargetSide {
    pub(super) superuser: bool,
    /// Source OIDs of relations in [`SourceSide::order`] the target has (by name).
    pub(super) existing_rels: HashSet<u32>,
    /// The target's type for each source type OID it has one for.
    pub(super) types: HashMap<u32, TypeDef>,
    pub(super) schemas: HashSet<String>,
    /// Function signatures (of those asked) the target has.
    pub(super) functions: HashSet<String>,
    pub(super) extensions: HashSet<String>,
    /// Collations (of those asked) the target has.
    pub(super) collations: HashSet<String>,
    /// Quoted names of sequences (of those asked) the target has.
    pub(super) sequences: HashSet<String>,
    /// Foreign keys among the mirrored tables that already exist on the target.
    pub(super) foreign_keys: Vec<TargetForeignKey>,
}

impl TargetSide {
    /// Call inside [`super::read::qualified`].
    pub(super) async fn load(
        target: &Client,
        src: &SourceSide,
        tables: &[TableDef],
    ) -> Result<Self, Error> {
        let ctx = || "reading the target's catalog".to_owned();
        let mut side = TargetSide {
            superuser: target
                .query_one("SELECT current_setting('is_superuser') = 'on'", &[])
                .await
                .db_context(ctx)?
                .get(0),
            ..TargetSide::default()
        };
        let rels: Vec<&RelSpec> = src.order.iter().filter_map(|o| src.rels.get(o)).collect();
        let schemas: Vec<&str> = rels.iter().map(|r| r.schema.as_str()).collect();
        let names: Vec<&str> = rels.iter().map(|r| r.name.as_str()).collect();
        // Tables only: another relation of the name makes creating the table fail, saying so.
        let present: HashSet<(String, String)> = target
            .query(
                "SELECT n.nspname::text, c.relname::text \
                 FROM unnest($1::text[], $2::text[]) AS w(schema, name) \
                 JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema \
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.name \
                 WHERE c.relkind IN ('r', 'p')",
                &[&schemas, &names],
            )
            .await
            .db_context(ctx)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        side.existing_rels = rels
            .iter()
            .filter(|r| present.contains(&(r.schema.clone(), r.name.clone())))
            .map(|r| r.oid)
            .collect();

        let type_names: Vec<(String, String)> =
            src.types.types.values().map(|t| (t.schema.clone(), t.name.clone())).collect();
        let oids = types::target_oids(target, &type_names).await?;
        let wanted: Vec<u32> = oids.values().copied().collect();
        let theirs = types::load(target, &wanted, false, "target").await?;
        for t in src.types.types.values() {
            if let Some(found) =
                oids.get(&(t.schema.clone(), t.name.clone())).and_then(|o| theirs.types.get(o))
            {
                side.types.insert(t.oid, found.clone());
            } else if oids.contains_key(&(t.schema.clone(), t.name.clone())) {
                // An array or other alias type under that name: not comparable, but present.
                side.types.insert(
                    t.oid,
                    TypeDef { kind: types::TypeKind::Other("?".into()), ..t.clone() },
                );
            }
        }

        let mut schemas = schemas;
        schemas.extend(src.types.types.values().map(|t| t.schema.as_str()));
        schemas.extend(src.sequences.iter().map(|s| s.def.schema.as_str()));
        side.schemas = target
            .query(
                "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)",
                &[&schemas],
            )
            .await
            .db_context(ctx)?
            .iter()
            .map(|r| r.get(0))
            .collect();

        let signatures: Vec<String> = src
            .deps
            .iter()
            .filter_map(|d| match &d.target {
                DependsOn::Function(sig) if d.extension.is_none() => Some(sig.clone()),
                _ => None,
            })
            .collect();
        side.functions = existing(target, "to_regprocedure", &signatures).await?;
        // A range's SUBTYPE_DIFF goes by name.
        let diffs: Vec<String> = src
            .types
            .types
            .values()
            .filter_map(|t| match &t.kind {
                types::TypeKind::Range { diff: Some((f, false)), .. } => Some(f.clone()),
                _ => None,
            })
            .collect();
        side.functions.extend(existing(target, "to_regproc", &diffs).await?);
        side.extensions = target
            .query("SELECT extname::text FROM pg_catalog.pg_extension", &[])
            .await
            .db_context(ctx)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let collations: Vec<String> = src
            .rels
            .values()
            .flat_map(|r| r.columns.iter())
            .filter_map(|c| c.collation.as_ref().filter(|(_, builtin)| !builtin))
            .map(|(name, _)| name.clone())
            .collect();
        side.collations = existing(target, "to_regcollation", &collations).await?;
        let seqs: Vec<String> =
            src.sequences.iter().map(|s| s.def.qualified_name().quoted()).collect();
        side.sequences = existing(target, "to_regclass", &seqs).await?;
        if !side.superuser {
            side.foreign_keys = foreign_keys(target, tables).await?;
        }
        Ok(side)
    }
}

/// The names among `names` that `lookup` (`to_regclass`, `to_regprocedure`, ...) finds.
async fn existing(
    target: &Client,
    lookup: &str,
    names: &[String],
) -> Result<HashSet<String>, Error> {
    if names.is_empty() {
        return Ok(HashSet::new());
    }
    let sql =
        format!("SELECT n FROM unnest($1::text[]) AS n WHERE pg_catalog.{lookup}(n) IS NOT NULL");
    Ok(target
        .query(&sql, &[&names])
        .await
        .db_context(|| format!("looking up objects on the target ({lookup})"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Foreign keys on the target between mirrored tables (or their partitions), for the cycle
/// check of a copy that loads tables one at a time.
async fn foreign_keys(
    target: &Client,
    tables: &[TableDef],
) -> Result<Vec<TargetForeignKey>, Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = target
        .query(
            "WITH m AS ( \
               SELECT c.oid FROM unnest($1::text[], $2::text[]) AS w(schema, name) \
               JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema \
               JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.name), \
             rel AS ( \
               SELECT m.oid AS relid, m.oid AS mirrored FROM m \
               UNION SELECT t.relid::oid, m.oid FROM m \
               CROSS JOIN LATERAL pg_catalog.pg_partition_tree(m.oid) t) \
             SELECT cn.nspname::text, cr.relname::text, fn.nspname::text, fr.relname::text, \
                    k.conname::text, pg_catalog.pg_get_constraintdef(k.oid), \
                    NOT k.convalidated AND k.conparentid = 0 AND t.relkind = 'r' \
                    AND pg_catalog.pg_has_role(t.relowner, 'USAGE') \
             FROM pg_catalog.pg_constraint k \
             JOIN rel a ON a.relid = k.conrelid \
             JOIN rel b ON b.relid = k.confrelid \
             JOIN pg_catalog.pg_class t ON t.oid = k.conrelid \
             JOIN pg_catalog.pg_class cr ON cr.oid = a.mirrored \
             JOIN pg_catalog.pg_namespace cn ON cn.oid = cr.relnamespace \
             JOIN pg_catalog.pg_class fr ON fr.oid = b.mirrored \
             JOIN pg_catalog.pg_namespace fn ON fn.oid = fr.relnamespace \
             WHERE k.contype = 'f' AND a.mirrored <> b.mirrored",
            &[&schemas, &names],
        )
        .await
        .db_context(|| "reading foreign keys on the target".to_owned())?;
    Ok(rows
        .iter()
        .map(|r| TargetForeignKey {
            table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            references: QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            name: r.get(4),
            definition: r.get(5),
            set_aside: r.get(6),
        })
        .collect())
}
