//! The refusal that protects the source from itself: a target that is the source's own database.
//!
//! pgmirror writes into the target (tables, `--truncate-target`, the `pgmirror` schema). Pointed
//! at the database it reads from, it would empty or rewrite the very tables it mirrors. Two
//! connection strings can reach the same database in many spellings (a URL or `key=value`,
//! `localhost` or `127.0.0.1`, a Unix socket or TCP, another role), so the comparison is made
//! on what the server says about itself, never on the strings.
//!
//! A server is told apart by its system identifier (`pg_control_system()`) and the moment its
//! postmaster started: a cluster restored from a copy of the source's data directory shares the
//! system identifier, but runs under another postmaster. The database is told apart by its OID
//! ([`pgconn::identify`]). Another database of the source's own server is a legitimate
//! target.

use anyhow::Context;
pub use pgconn::{DatabaseIdentity, identify};
use tokio_postgres::Client;

/// The one line that refuses a target which is the source's own database.
pub fn same_database_message(identity: &DatabaseIdentity) -> String {
    let system = identity
        .system_id
        .as_deref()
        .map_or_else(String::new, |id| format!(" (system identifier {id})"));
    format!(
        "--target is the source's own database {:?} on the same server{system}: pgmirror would \
         write into the tables it reads; point --target at another database or server \
         (nothing was changed)",
        identity.database
    )
}

/// Fails with one clear line when `target` is the database `source` reads from.
///
/// # Errors
/// The two are the same database, or a catalog query failed.
pub async fn refuse_same_database(source: &Client, target: &Client) -> anyhow::Result<()> {
    let theirs = identify(source).await.context("identifying the source database")?;
    let ours = identify(target).await.context("identifying the target database")?;
    anyhow::ensure!(!theirs.same_database(&ours), "{}", same_database_message(&ours));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(system: Option<&str>, start: i64, oid: u32, db: &str) -> DatabaseIdentity {
        DatabaseIdentity {
            system_id: system.map(str::to_owned),
            postmaster_start_micros: start,
            database_oid: oid,
            database: db.to_owned(),
        }
    }

    #[test]
    fn message_names_the_database_and_the_fix() {
        let msg = same_database_message(&id(Some("7"), 1, 5, "samedb"));
        assert!(msg.contains("\"samedb\"") && msg.contains("system identifier 7"), "{msg}");
        assert!(msg.contains("point --target at another database"), "{msg}");
    }
}
