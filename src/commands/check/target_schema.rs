//! What `pgmirror mirror` will create on the target for the mirrored tables, what it will not,
//! and what stands in its way: the target's types compared with the source's, objects that
//! cannot be created, a foreign-key cycle a checking copy cannot load.

use pgconn::ConnConfig;
use tablesync::{NotCreated, ObjectKind, SchemaPlan, TableDef};
use tokio_postgres::Client;

use crate::display::count;
use crate::preflight::Report;

/// Reads the plan, or reports why it could not be read (under `target schema`).
pub(super) async fn plan(
    source: &ConnConfig,
    target: &Client,
    tables: &[TableDef],
    report: &mut Report,
) -> Option<SchemaPlan> {
    let Ok(source) = pgconn::connect_sql(source).await else { return None };
    match tablesync::plan_target_schema(&source, target, tables).await {
        Ok(plan) => Some(plan),
        Err(e) => {
            report.fail("target schema", format!("{e:#}"), "see the error above");
            None
        }
    }
}

/// One line per kind of object, and one per problem.
pub(super) fn report(plan: &SchemaPlan, report: &mut Report) {
    types(plan, report);
    let kinds = [
        ("target sequences", ObjectKind::Sequence),
        ("target constraints", ObjectKind::Constraint),
        ("target indexes", ObjectKind::Index),
        ("foreign keys", ObjectKind::ForeignKey),
        ("column defaults", ObjectKind::Default),
    ];
    for (check, kind) in kinds {
        objects(plan, check, kind, report);
    }
    triggers(plan, report);
    for p in plan.problems.iter().filter(|p| !p.object.starts_with("type ")) {
        report.fail("target schema", format!("{} {}", p.object, p.problem), p.fix.clone());
    }
}

fn names_of(plan: &SchemaPlan, kind: ObjectKind) -> Vec<String> {
    plan.planned
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| match &p.detail {
            Some(d) if kind == ObjectKind::Type => format!("{} ({d})", p.name),
            _ => p.name.clone(),
        })
        .collect()
}

fn skipped(plan: &SchemaPlan, kind: ObjectKind) -> Vec<&NotCreated> {
    plan.not_created.iter().filter(|n| n.kind == kind).collect()
}

/// Types to create, types the target has (compared), and each difference that fails.
fn types(plan: &SchemaPlan, report: &mut Report) {
    const CHECK: &str = "target types";
    let create = names_of(plan, ObjectKind::Type);
    let matching: Vec<&str> = plan.matching.iter().map(|m| m.name.as_str()).collect();
    let mut parts = Vec::new();
    if !create.is_empty() {
        parts.push(format!("will create {}: {}", create.len(), create.join(", ")));
    }
    if !matching.is_empty() {
        let n = count(matching.len(), "exists and matches", "exist and match");
        parts.push(format!("{n}: {}", matching.join(", ")));
    }
    let problems: Vec<_> = plan.problems.iter().filter(|p| p.object.starts_with("type ")).collect();
    if parts.is_empty() && problems.is_empty() && plan.warnings.is_empty() {
        report.pass(CHECK, "the tables use no user-defined types");
    } else if !parts.is_empty() {
        report.pass(CHECK, parts.join("; "));
    }
    for p in problems {
        report.fail(CHECK, format!("{} {}", p.object, p.problem), p.fix.clone());
    }
    for w in &plan.warnings {
        report.warn(CHECK, format!("{} {}", w.object, w.problem), w.fix.clone());
    }
}

/// What of `kind` will be created, and what will not (a warning with the reasons).
fn objects(plan: &SchemaPlan, check: &str, kind: ObjectKind, report: &mut Report) {
    let create = names_of(plan, kind);
    let left_out = skipped(plan, kind);
    if create.is_empty() && left_out.is_empty() {
        return;
    }
    let mut detail = if create.is_empty() {
        "will create none".to_owned()
    } else if kind == ObjectKind::ForeignKey {
        format!("will create {}, validated after the copy: {}", create.len(), create.join(", "))
    } else {
        format!("will create {}: {}", create.len(), create.join(", "))
    };
    if left_out.is_empty() {
        report.pass(check, detail);
        return;
    }
    let why: Vec<String> = left_out.iter().map(|n| format!("{} ({})", n.name, n.reason)).collect();
    detail.push_str(&format!("; will not create {}", why.join(", ")));
    let fixes: Vec<&str> = left_out.iter().filter_map(|n| n.fix.as_deref()).collect();
    let fix = if fixes.is_empty() { "nothing to do".to_owned() } else { fixes.join(" ") };
    report.warn(check, detail, fix);
}

/// Triggers are never created; say which, and why.
fn triggers(plan: &SchemaPlan, report: &mut Report) {
    let left_out = skipped(plan, ObjectKind::Trigger);
    if left_out.is_empty() {
        return;
    }
    let names: Vec<&str> = left_out.iter().map(|n| n.name.as_str()).collect();
    report.warn(
        "triggers",
        format!(
            "will not create {}: on the target they would act a second time on changes the \
             source's triggers already made (the apply runs with session_replication_role = \
             replica where the role may, so triggers on the target do not fire for replicated \
             rows)",
            names.join(", ")
        ),
        "create them on the target when it takes over from the source",
    );
}
