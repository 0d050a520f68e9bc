//! What a mirror needs on the primary before pgmirror creates anything there, checked with the
//! fix for each unmet need: the checks `pgmirror check` lists and the mirror's set-up repeats
//! before its first start, and the report they fill.

use std::fmt::Write as _;

use anyhow::Context;
use pgconn::quote_ident;
use serde::Serialize;
use tokio_postgres::Client;

use crate::display::count;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Short name of the check, e.g. `wal_level`.
    pub check: String,
    /// Whether it passed (warnings pass).
    pub ok: bool,
    /// Passed, but something deserves attention (`fix` says what).
    pub warning: bool,
    /// What was found.
    pub detail: String,
    /// For a failure or a warning: what to run or change.
    pub fix: Option<String>,
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Report {
    /// The checks.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Whether every check passed (warnings count as passed).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == name)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// One aligned line per check, each failure or warning followed by its fix.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match (c.ok, c.warning) {
                (false, _) => "✘",
                (true, true) => "!",
                (true, false) => "✔",
            };
            let _ = writeln!(out, "{mark} {:<width$}  {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "  {:<width$}  fix: {fix}", "");
            }
        }
        let failed = self.failures().count();
        let n = self.checks.len();
        if failed == 0 {
            let _ = writeln!(out, "all {} passed", count(n, "check", "checks"));
        } else {
            let checks = count(n, "check", "checks");
            let _ = writeln!(out, "{failed} of {checks} failed");
        }
        out
    }

    pub(crate) fn pass(&mut self, check: &str, detail: impl Into<String>) {
        self.push(check, true, false, detail.into(), None);
    }

    pub(crate) fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, true, true, detail.into(), Some(fix.into()));
    }

    pub(crate) fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, false, false, detail.into(), Some(fix.into()));
    }

    pub(crate) fn push(
        &mut self,
        check: &str,
        ok: bool,
        warning: bool,
        detail: String,
        fix: Option<String>,
    ) {
        self.checks.push(CheckResult { check: check.to_owned(), ok, warning, detail, fix });
    }
}

/// What creating the mirror's slot needs on the primary, checked before pgmirror creates
/// anything, with the fixes `pgmirror check` gives: `wal_level = logical`, a role with
/// REPLICATION, a free replication slot (unless `slot` exists) and a free WAL sender.
///
/// # Errors
/// The first unmet prerequisite, as one line with its fix; catalog query errors.
pub async fn ensure_source_ready(client: &Client, slot: &str) -> anyhow::Result<()> {
    let mut report = Report::default();
    settings_checks(client, &mut report).await.context("reading the source's settings")?;
    role_check(client, &mut report).await.context("reading the source role")?;
    let slot_exists = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .context("looking up the slot")?
        .is_some();
    let unmet = report.failures().find(|c| !(slot_exists && c.check == "replication slots"));
    if let Some(c) = unmet {
        anyhow::bail!(
            "the source is not ready for logical replication: {}: {}; fix: {}",
            c.check,
            c.detail,
            c.fix.as_deref().unwrap_or("see `pgmirror check`")
        );
    }
    Ok(())
}

/// The error text without the fix that [`pgconn::DbError`]'s `Display` appends (the fix
/// goes on its own line), for an SQL or a replication connection's error.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    match replication::connection_error(e).and_then(pgconn::Error::db_error) {
        Some(db) => db.message.clone(),
        None => e.to_string(),
    }
}

/// The error text of a failed statement, for a check's detail.
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

/// `wal_level`, free replication slots and free WAL senders. Senders are counted in
/// `pg_stat_replication`, which lists every walsender to any role (`pg_stat_activity` hides
/// other roles' backend types from unprivileged ones).
pub(crate) async fn settings_checks(
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int",
            &[],
        )
        .await?;
    let wal_level: String = row.get(0);
    let (max_slots, slots, max_senders, senders): (i32, i32, i32, i32) =
        (row.get(1), row.get(2), row.get(3), row.get(4));
    if wal_level == "logical" {
        report.pass("wal_level", "logical");
    } else {
        report.fail(
            "wal_level",
            format!("{wal_level}, but logical decoding needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (e.g. pg_ctl restart \
             -D <data directory>, or systemctl restart postgresql): wal_level only changes at \
             server start",
        );
    }
    let detail = format!("{slots} of {max_slots} used");
    if slots < max_slots {
        report.pass("replication slots", detail);
    } else {
        report.fail(
            "replication slots",
            format!("{detail}: none free for pgmirror's slot"),
            format!(
                "drop an unused slot (SELECT pg_drop_replication_slot(slot_name) FROM \
                 pg_replication_slots WHERE NOT active AND ...), or ALTER SYSTEM SET \
                 max_replication_slots = {} and restart PostgreSQL",
                max_slots.saturating_add(4)
            ),
        );
    }
    let detail = format!("{senders} of {max_senders} used");
    if senders < max_senders {
        report.pass("wal senders", detail);
    } else {
        report.fail(
            "wal senders",
            format!("{detail}: none free for pgmirror's replication connection"),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {} and restart PostgreSQL, or stop an idle \
                 replication client",
                max_senders.saturating_add(4)
            ),
        );
    }
    Ok(())
}

/// The role may open replication connections (REPLICATION or superuser). Returns its name.
pub(crate) async fn role_check(
    client: &Client,
    report: &mut Report,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT rolname::text, rolsuper, rolreplication FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (role, superuser, replication): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if superuser {
        report.pass("replication role", format!("{role:?} is a superuser"));
    } else if replication {
        report.pass("replication role", format!("{role:?} has REPLICATION"));
    } else {
        report.fail(
            "replication role",
            format!("{role:?} has neither REPLICATION nor superuser"),
            format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(&role)),
        );
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_aligns_and_prints_fixes() {
        let mut r = Report::default();
        r.pass("wal_level", "logical");
        r.fail("replication role", "\"bob\" has neither", "ALTER ROLE \"bob\" WITH REPLICATION;");
        r.warn("wal retention", "unlimited", "cap it");
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "✔ wal_level         logical");
        assert_eq!(lines[1], "✘ replication role  \"bob\" has neither");
        assert_eq!(lines[2], "                    fix: ALTER ROLE \"bob\" WITH REPLICATION;");
        assert_eq!(lines[3], "! wal retention     unlimited");
        assert_eq!(lines[5], "1 of 3 checks failed");
        assert!(!r.passed());
        assert_eq!(r.failures().count(), 1);
    }

    #[test]
    fn json_is_an_array_of_checks() {
        let mut r = Report::default();
        r.pass("wal_level", "logical");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"check": "wal_level", "ok": true, "warning": false, "detail": "logical", "fix": null}
            ])
        );
    }
}
