//! The plan: from what the source has and the target lacks, the statements that create it,
//! what is deliberately left out, and what stops the mirror before anything is created.

use std::collections::{HashMap, HashSet};

use pgconn::quote_ident;

use super::foreign_keys::{Edge, find_cycle};
use super::sides::{SourceSide, TargetSide};
use super::tables::{DependsOn, RelSpec, attach_sql, constraint_sql};
use super::types::{self, TypeDef};
use super::{NotCreated, ObjectKind, Planned, SchemaProblem};

use crate::catalog::TableDef;
use crate::ident::QualifiedName;
use crate::sequences::sequence_sql;

/// Statements by phase, in the order they run (as pg_dump orders a restore).
#[derive(Debug, Default)]
pub(super) struct Phases {
    schemas: Vec<String>,
    types: Vec<String>,
    sequences: Vec<String>,
    tables: Vec<String>,
    owned_by: Vec<String>,
    keys_and_indexes: Vec<String>,
    attach: Vec<String>,
    checks: Vec<String>,
    foreign_keys: Vec<String>,
    replica_identity: Vec<String>,
}

impl Phases {
    pub(super) fn into_statements(self) -> Vec<String> {
        [
            self.schemas,
            self.types,
            self.sequences,
            self.tables,
            self.owned_by,
            self.keys_and_indexes,
            self.attach,
            self.checks,
            self.foreign_keys,
            self.replica_identity,
        ]
        .concat()
    }
}

/// Everything [`super::SchemaPlan`] holds, built in one pass.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) planned: Vec<Planned>,
    pub(super) matching: Vec<Planned>,
    pub(super) not_created: Vec<NotCreated>,
    pub(super) problems: Vec<SchemaProblem>,
    pub(super) warnings: Vec<SchemaProblem>,
    pub(super) created_tables: Vec<QualifiedName>,
    pub(super) phases: Phases,
    /// What removes the created objects again: tables, sequences, types, schemas.
    pub(super) undo: Undo,
}

/// The objects a plan creates, to drop them again.
#[derive(Debug, Default, Clone)]
pub(super) struct Undo {
    tables: Vec<String>,
    sequences: Vec<String>,
    types: Vec<String>,
    schemas: Vec<String>,
}

impl Undo {
    /// The statements, each dependent object before what it depends on.
    pub(super) fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.tables.is_empty() {
            // One statement: foreign keys among them need no order.
            out.push(format!("DROP TABLE IF EXISTS {}", self.tables.join(", ")));
        }
        out.extend(self.sequences.iter().map(|s| format!("DROP SEQUENCE IF EXISTS {s}")));
        out.extend(self.types.iter().rev().cloned());
        out.extend(self.schemas.iter().map(|s| format!("DROP SCHEMA IF EXISTS {s}")));
        out
    }
}

/// Builds the plan from both sides.
pub(super) fn build(src: &SourceSide, dst: &TargetSide, tables: &[TableDef]) -> Outcome {
    let mut b = Builder { src, dst, tables, out: Outcome::default(), created: HashSet::new() };
    b.created = src.order.iter().copied().filter(|o| !dst.existing_rels.contains(o)).collect();
    let owners = src.owners();
    let mut missing_function: HashMap<(&str, u32), Vec<&str>> = HashMap::new();
    let mut needs_extension: HashMap<(&str, u32), Vec<&str>> = HashMap::new();
    let mut type_oids: Vec<u32> = Vec::new();
    let mut seq_oids: HashSet<u32> = HashSet::new();
    for d in &src.deps {
        let Some(rel) = owners.get(&d.owner) else { continue };
        if !b.created.contains(rel) {
            continue;
        }
        if let Some(ext) = &d.extension {
            if !dst.extensions.contains(ext) {
                needs_extension.entry(d.owner).or_default().push(ext);
            }
            continue;
        }
        match &d.target {
            DependsOn::Function(sig) if !dst.functions.contains(sig) => {
                missing_function.entry(d.owner).or_default().push(sig);
            }
            DependsOn::Type(oid) => type_oids.push(*oid),
            DependsOn::Sequence(oid) => {
                seq_oids.insert(*oid);
            }
            _ => {}
        }
    }
    let deps = Deps { missing_function, needs_extension };
    b.compare_types();
    for oid in &src.order {
        if let Some(rel) = src.rels.get(oid).filter(|_| b.created.contains(oid)) {
            type_oids.extend(rel.columns.iter().map(|c| c.type_oid));
        }
    }
    b.create_types(&type_oids);
    b.create_sequences(&seq_oids);
    for oid in &src.order {
        if let Some(rel) = src.rels.get(oid).filter(|_| b.created.contains(oid)) {
            b.create_relation(rel, &deps);
        }
    }
    b.cycle_check();
    b.create_schemas();
    b.out
}

/// Why a created object's dependencies are not all on the target.
struct Deps<'a> {
    missing_function: HashMap<(&'a str, u32), Vec<&'a str>>,
    needs_extension: HashMap<(&'a str, u32), Vec<&'a str>>,
}

impl Deps<'_> {
    /// A problem for an object that needs an extension the target lacks.
    fn extension_problem(&self, owner: (&str, u32), object: &str) -> Option<SchemaProblem> {
        let exts = self.needs_extension.get(&owner)?;
        let mut exts: Vec<&str> = exts.clone();
        exts.sort_unstable();
        exts.dedup();
        let creates: Vec<String> =
            exts.iter().map(|e| format!("CREATE EXTENSION {};", quote_ident(e))).collect();
        Some(SchemaProblem::new(
            object.to_owned(),
            format!("uses extension {}, which the target lacks", quoted_list(&exts)),
            format!("on the target: {}", creates.join(" ")),
        ))
    }

    fn missing(&self, owner: (&str, u32)) -> Option<String> {
        self.missing_function.get(&owner).map(|f| f.join(", "))
    }
}

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

struct Builder<'a> {
    src: &'a SourceSide,
    dst: &'a TargetSide,
    tables: &'a [TableDef],
    out: Outcome,
    /// Source OIDs of the relations this plan creates.
    created: HashSet<u32>,
}

impl Builder<'_> {
    fn plan(&mut self, kind: ObjectKind, name: String, detail: Option<String>) {
        self.out.planned.push(Planned { kind, name, detail });
    }

    fn skip(&mut self, kind: ObjectKind, name: String, reason: String, fix: Option<String>) {
        self.out.not_created.push(NotCreated { kind, name, reason, fix });
    }

    /// Every source type the target has under the same name, compared.
    fn compare_types(&mut self) {
        let mut theirs: Vec<(&TypeDef, &TypeDef)> = self
            .src
            .types
            .types
            .values()
            .filter(|t| t.extension.is_none())
            .filter_map(|t| self.dst.types.get(&t.oid).map(|d| (t, d)))
            .collect();
        theirs.sort_by_key(|(t, _)| t.quoted());
        for (ours, target) in theirs {
            if matches!(target.kind, types::TypeKind::Other(_)) {
                continue;
            }
            let cmp = types::compare(ours, target);
            if cmp.problems.is_empty() {
                self.out.matching.push(Planned {
                    kind: ObjectKind::Type,
                    name: ours.quoted(),
                    detail: Some(ours.describe()),
                });
            }
            self.out.problems.extend(cmp.problems);
            self.out.warnings.extend(cmp.warnings);
        }
    }

    /// The types the created relations need that the target lacks, in dependency order.
    fn create_types(&mut self, wanted: &[u32]) {
        let src = self.src;
        for t in src.types.creation_order(wanted) {
            if self.dst.types.contains_key(&t.oid) {
                continue;
            }
            if let Some(problem) = t.cannot_create() {
                self.out.problems.push(problem);
                continue;
            }
            if let types::TypeKind::Range { diff: Some((f, false)), .. } = &t.kind
                && !self.dst.functions.contains(f)
            {
                self.out.problems.push(SchemaProblem::new(
                    format!("type {}", t.quoted()),
                    format!("is a range whose SUBTYPE_DIFF function {f} the target lacks"),
                    format!("create function {f} on the target before `pgmirror mirror`"),
                ));
                continue;
            }
            self.out.phases.types.extend(t.create_sql());
            self.out.undo.types.push(t.drop_sql());
            self.plan(ObjectKind::Type, t.quoted(), Some(t.describe()));
        }
    }

    /// Sequences named by defaults or owned by columns of created relations, created under
    /// the source's name unless the target has them; identity sequences go with their column.
    fn create_sequences(&mut self, named_by_defaults: &HashSet<u32>) {
        let src = self.src;
        for seq in &src.sequences {
            let owned_by_created = seq.owner.filter(|(rel, _, _)| self.created.contains(rel));
            if seq.def.identity
                || (owned_by_created.is_none() && !named_by_defaults.contains(&seq.oid))
            {
                continue;
            }
            let name = seq.def.qualified_name().quoted();
            if self.dst.sequences.contains(&name) {
                continue;
            }
            self.out.phases.sequences.push(sequence_sql(&seq.def));
            self.out.undo.sequences.push(name.clone());
            let mut detail = None;
            if let Some((rel, attnum, _)) = owned_by_created
                && let Some(r) = src.rels.get(&rel)
                && let Some(column) = r.column_name(attnum)
            {
                self.out.phases.owned_by.push(format!(
                    "ALTER SEQUENCE {name} OWNED BY {}.{}",
                    r.quoted(),
                    quote_ident(column)
                ));
                detail = Some(format!("owned by {}.{}", r.quoted(), quote_ident(column)));
            }
            self.plan(ObjectKind::Sequence, name, detail);
        }
    }

    /// The parent to create `rel` as a partition of: quoted, when that parent is created too
    /// or already on the target.
    fn parent_of(&self, rel: &RelSpec) -> Option<String> {
        let (parent, _) = rel.partition_of.as_ref()?;
        self.src.rels.get(parent).map(RelSpec::quoted)
    }

    fn create_relation(&mut self, rel: &RelSpec, deps: &Deps<'_>) {
        let q = rel.quoted();
        let parent = self.parent_of(rel);
        let parent_created =
            rel.partition_of.as_ref().is_some_and(|(p, _)| self.created.contains(p));
        let mut rel = rel.clone();
        for c in &mut rel.columns {
            self.prepare_column(rel.oid, &q, c, deps);
        }
        self.out.phases.tables.push(rel.create_sql(parent.as_deref()));
        self.out.undo.tables.push(q.clone());
        self.out.created_tables.push(QualifiedName::new(rel.schema.clone(), rel.name.clone()));
        let kind = if parent.is_some() { ObjectKind::Partition } else { ObjectKind::Table };
        let detail = parent.as_ref().map(|p| format!("partition of {p}"));
        self.plan(kind, q.clone(), detail);
        let in_partition = rel.partition_of.is_some();
        for c in &rel.constraints {
            self.constraint(&rel, c, deps, in_partition, parent_created);
        }
        for i in &rel.indexes {
            let name = QualifiedName::new(rel.schema.clone(), i.short_name.clone()).quoted();
            if i.parent_index.is_some() && !parent_created {
                continue; // PARTITION OF an existing parent creates it
            }
            if let Some(problem) =
                deps.extension_problem(("index", i.oid), &format!("index {name}"))
            {
                self.out.problems.push(problem);
                continue;
            }
            if let Some(reason) = self.unpublished(&rel, &i.columns) {
                self.skip(ObjectKind::Index, name, reason, None);
                continue;
            }
            if let Some(f) = deps.missing(("index", i.oid)) {
                let reason = format!("it calls {f}, which the target lacks");
                let fix = format!("create {f} on the target, then {};", i.definition);
                self.skip(ObjectKind::Index, name, reason, Some(fix));
                continue;
            }
            self.out.phases.keys_and_indexes.push(i.definition.clone());
            if let Some(parent) = &i.parent_index {
                self.out.phases.attach.push(attach_sql(parent, &i.name));
            }
            self.plan(ObjectKind::Index, name, None);
        }
        for t in &rel.triggers {
            let name = format!("{q}.{}", quote_ident(t));
            let reason = "triggers are not created: on the target they would act a second \
                          time on changes the source's triggers already made"
                .to_owned();
            self.skip(ObjectKind::Trigger, name, reason, None);
        }
        if let Some(sql) = rel.replica_identity_sql() {
            self.out.phases.replica_identity.push(sql);
        }
    }

    /// Clears a default the target cannot evaluate (reported), fills identity options, and
    /// reports what stops a column from being created as on the source.
    fn prepare_column(
        &mut self,
        rel: u32,
        table: &str,
        c: &mut super::tables::ColumnSpec,
        deps: &Deps<'_>,
    ) {
        let name = format!("{table}.{}", quote_ident(&c.name));
        if let Some((collation, false)) = &c.collation
            && !self.dst.collations.contains(collation)
        {
            self.out.problems.push(SchemaProblem::new(
                format!("column {name}"),
                format!("uses collation {collation}, which the target lacks"),
                format!("create collation {collation} on the target (CREATE COLLATION ...) before `pgmirror mirror`"),
            ));
        }
        if c.identity.is_some() {
            let seq = self
                .src
                .sequences
                .iter()
                .find(|s| s.def.identity && s.owner == Some((rel, c.attnum, true)));
            c.identity_options = seq.map(super::sequences::SeqSpec::identity_options);
        }
        let Some(oid) = c.default_oid else { return };
        if let Some(problem) = deps.extension_problem(("default", oid), &format!("column {name}")) {
            self.out.problems.push(problem);
            return;
        }
        let Some(f) = deps.missing(("default", oid)) else { return };
        if let Some(expr) = &c.generated {
            self.out.problems.push(SchemaProblem::new(
                format!("column {name}"),
                format!("is generated by {expr}, which calls {f}; the target lacks it"),
                format!("create {f} on the target before `pgmirror mirror`"),
            ));
        } else if let Some(expr) = c.default.take() {
            self.skip(
                ObjectKind::Default,
                name,
                format!("its default {expr} calls {f}, which the target lacks"),
                Some(format!(
                    "create {f} on the target, then ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {expr};",
                    quote_ident(&c.name)
                )),
            );
        }
    }

    /// Why an object over `columns` cannot be created: a column the publication leaves out.
    fn unpublished(&self, rel: &RelSpec, columns: &[i32]) -> Option<String> {
        let missing = columns.iter().any(|n| rel.column_name(*n).is_none());
        missing.then(|| "it uses columns the publication's column list leaves out".to_owned())
    }

    fn constraint(
        &mut self,
        rel: &RelSpec,
        c: &super::tables::ConstraintSpec,
        deps: &Deps<'_>,
        in_partition: bool,
        parent_created: bool,
    ) {
        let q = rel.quoted();
        let name = format!("{q}.{}", quote_ident(&c.name));
        // What a partition inherits comes with PARTITION OF or its parent's constraint, except
        // keys of a created parent, which pg_dump's way creates per partition and attaches.
        let key = matches!(c.kind, 'p' | 'u');
        if in_partition && c.from_parent && !(key && parent_created) {
            return;
        }
        if let Some(problem) =
            deps.extension_problem(("constraint", c.oid), &format!("constraint {name}"))
        {
            self.out.problems.push(problem);
            return;
        }
        match c.kind {
            'x' => self.out.problems.push(SchemaProblem::new(
                format!("constraint {name}"),
                format!(
                    "is an exclusion constraint ({}), which pgmirror does not create",
                    c.definition
                ),
                format!(
                    "create table {q} on the target with its constraints before `pgmirror mirror` \
                     (pgmirror then checks it instead of creating it)"
                ),
            )),
            't' => self.skip(
                ObjectKind::Trigger,
                name,
                "constraint triggers are not created, as triggers are not".to_owned(),
                None,
            ),
            'f' => self.foreign_key(rel, c, &name),
            _ => {
                if let Some(reason) = self.unpublished(rel, &c.columns) {
                    self.skip(ObjectKind::Constraint, name, reason, None);
                    return;
                }
                if let Some(f) = deps.missing(("constraint", c.oid)) {
                    let reason = format!("it calls {f}, which the target lacks");
                    let fix =
                        format!("create {f} on the target, then {};", constraint_sql(&q, c, true));
                    self.skip(ObjectKind::Constraint, name, reason, Some(fix));
                    return;
                }
                let sql = constraint_sql(&q, c, true);
                if key {
                    self.out.phases.keys_and_indexes.push(sql);
                    if let (Some(parent), Some(index)) = (&c.parent_index, &c.index) {
                        self.out.phases.attach.push(attach_sql(parent, index));
                    }
                } else {
                    self.out.phases.checks.push(sql);
                }
                self.plan(ObjectKind::Constraint, name, Some(c.definition.clone()));
            }
        }
    }

    fn foreign_key(&mut self, rel: &RelSpec, c: &super::tables::ConstraintSpec, name: &str) {
        let q = rel.quoted();
        let Some(referenced) = c.references else { return };
        let target_rel = self.src.rels.get(&referenced);
        let outside = || {
            let mirrored = self.tables.iter().find(|t| t.oid == referenced);
            match mirrored {
                Some(t) => format!(
                    "it references {}, which already exists on the target (pgmirror adds \
                     foreign keys among the tables it creates)",
                    t.quoted()
                ),
                None => "it references a table outside the mirror".to_owned(),
            }
        };
        let reason = match target_rel {
            Some(r) if self.created.contains(&r.oid) => {
                let cols = self.unpublished(rel, &c.columns);
                cols.or_else(|| self.unpublished(r, &c.referenced_columns))
            }
            _ => Some(outside()),
        };
        if let Some(reason) = reason {
            let fix = format!(
                "mirror the referenced table too, or add it on the target yourself: {};",
                constraint_sql(&q, c, false)
            );
            self.skip(ObjectKind::ForeignKey, name.to_owned(), reason, Some(fix));
            return;
        }
        // NOT VALID: the copy loads rows without checking each (and sets it aside where the
        // target would check), then one VALIDATE checks them all. PostgreSQL has no NOT VALID
        // foreign key on partitioned tables; an empty one is created valid at no cost.
        let valid = rel.partitioned() || rel.partition_of.is_some() || !c.validated;
        self.out.phases.foreign_keys.push(constraint_sql(&q, c, valid));
        let detail = if valid {
            c.definition.clone()
        } else {
            format!("{}, validated after the copy", c.definition)
        };
        self.plan(ObjectKind::ForeignKey, name.to_owned(), Some(detail));
    }

    /// A target that checks foreign keys (not a superuser) loads tables one at a time, parents
    /// first: foreign keys it does not set aside must not form a cycle.
    fn cycle_check(&mut self) {
        if self.dst.superuser {
            return;
        }
        let mirrored = |oid: u32| {
            let m = self.src.family.get(&oid).copied().unwrap_or(oid);
            self.tables.iter().find(|t| t.oid == m).map(TableDef::qualified_name)
        };
        let mut edges: Vec<Edge> = self
            .dst
            .foreign_keys
            .iter()
            .filter(|k| !k.set_aside)
            .map(|k| Edge {
                from: k.table.clone(),
                to: k.references.clone(),
                name: k.name.clone(),
                definition: k.definition.clone(),
            })
            .collect();
        for oid in &self.src.order {
            let Some(rel) = self.src.rels.get(oid).filter(|_| self.created.contains(oid)) else {
                continue;
            };
            // Only keys created valid are checked while rows load.
            if !(rel.partitioned() || rel.partition_of.is_some()) {
                continue;
            }
            for c in rel.constraints.iter().filter(|c| c.kind == 'f' && !c.from_parent) {
                let (Some(from), Some(to)) = (mirrored(rel.oid), c.references.and_then(mirrored))
                else {
                    continue;
                };
                edges.push(Edge {
                    from,
                    to,
                    name: c.name.clone(),
                    definition: c.definition.clone(),
                });
            }
        }
        let Some(cycle) = find_cycle(&edges) else { return };
        let path: Vec<String> = cycle
            .iter()
            .map(|e| format!("{} ({})", e.from, quote_ident(&e.name)))
            .chain(cycle.first().map(|e| e.from.to_string()))
            .collect();
        let fixes: Vec<String> = cycle
            .iter()
            .map(|e| {
                let n = quote_ident(&e.name);
                format!(
                    "ALTER TABLE {} DROP CONSTRAINT {n}, ADD CONSTRAINT {n} {} NOT VALID;",
                    e.from, e.definition
                )
            })
            .collect();
        self.out.problems.push(SchemaProblem::new(
            format!("foreign keys {}", path.join(" → ")),
            "form a cycle on the target, whose role is not a superuser: the copy then loads one \
             table at a time with foreign keys checked, and the first table of the cycle \
             references rows not copied yet"
                .to_owned(),
            format!(
                "connect to the target as a superuser (the copy then runs with \
                 session_replication_role = replica), or on the target make them NOT VALID, \
                 which the copy sets aside while it loads each table and pgmirror validates \
                 afterwards: {}",
                fixes.join(" ")
            ),
        ));
    }

    /// `CREATE SCHEMA` for the schemas of created objects the target lacks.
    fn create_schemas(&mut self) {
        let mut schemas: Vec<&str> = Vec::new();
        for oid in &self.created {
            if let Some(r) = self.src.rels.get(oid) {
                schemas.push(&r.schema);
            }
        }
        let planned_types: HashSet<&str> = self
            .out
            .planned
            .iter()
            .filter(|p| matches!(p.kind, ObjectKind::Type | ObjectKind::Sequence))
            .map(|p| p.name.as_str())
            .collect();
        for t in self.src.types.types.values() {
            if planned_types.contains(t.quoted().as_str()) {
                schemas.push(&t.schema);
            }
        }
        for s in &self.src.sequences {
            if planned_types.contains(s.def.qualified_name().quoted().as_str()) {
                schemas.push(&s.def.schema);
            }
        }
        schemas.sort_unstable();
        schemas.dedup();
        for s in schemas {
            if self.dst.schemas.contains(s) {
                continue;
            }
            self.out.phases.schemas.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
            self.out.undo.schemas.push(quote_ident(s));
            self.out.planned.insert(
                0,
                Planned { kind: ObjectKind::Schema, name: quote_ident(s), detail: None },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_drops_tables_at_once_then_sequences_types_in_reverse_and_schemas() {
        let undo = Undo {
            tables: vec!["\"s\".\"a\"".into(), "\"s\".\"b\"".into()],
            sequences: vec!["\"s\".\"q\"".into()],
            types: vec![
                "DROP DOMAIN IF EXISTS \"s\".\"base\"".into(),
                "DROP TYPE IF EXISTS \"s\".\"uses_base\"".into(),
            ],
            schemas: vec!["\"s\"".into()],
        };
        assert_eq!(
            undo.statements(),
            [
                "DROP TABLE IF EXISTS \"s\".\"a\", \"s\".\"b\"",
                "DROP SEQUENCE IF EXISTS \"s\".\"q\"",
                "DROP TYPE IF EXISTS \"s\".\"uses_base\"",
                "DROP DOMAIN IF EXISTS \"s\".\"base\"",
                "DROP SCHEMA IF EXISTS \"s\"",
            ]
        );
        assert!(Undo::default().statements().is_empty());
    }

    #[test]
    fn phases_run_in_pg_dump_order() {
        let phases = Phases {
            schemas: vec!["schema".into()],
            types: vec!["type".into()],
            sequences: vec!["sequence".into()],
            tables: vec!["table".into()],
            owned_by: vec!["owned".into()],
            keys_and_indexes: vec!["key".into()],
            attach: vec!["attach".into()],
            checks: vec!["check".into()],
            foreign_keys: vec!["fk".into()],
            replica_identity: vec!["identity".into()],
        };
        assert_eq!(
            phases.into_statements(),
            [
                "schema", "type", "sequence", "table", "owned", "key", "attach", "check", "fk",
                "identity"
            ]
        );
    }
}
