//! Which server and database a connection reached, as the server says: two connection strings
//! can reach the same database in many spellings (a URL or `key=value`, `localhost` or
//! `127.0.0.1`, a Unix socket or TCP, another role), so comparisons are made on this, never on
//! the strings.
//!
//! A server is told apart by its system identifier (`pg_control_system()`) and the moment its
//! postmaster started: a cluster restored from a copy of another's data directory shares the
//! system identifier, but runs under another postmaster. The database is told apart by its OID.

use tokio_postgres::Client;

/// Which server (postmaster) and database a connection reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseIdentity {
    /// `pg_control_system().system_identifier`, when the role may read it.
    pub system_id: Option<String>,
    /// `pg_postmaster_start_time()` in microseconds since the Unix epoch.
    pub postmaster_start_micros: i64,
    /// The database's OID.
    pub database_oid: u32,
    /// The database's name.
    pub database: String,
}

impl DatabaseIdentity {
    /// Whether `self` and `other` are the same database of the same running server.
    pub fn same_database(&self, other: &DatabaseIdentity) -> bool {
        let same_system = match (&self.system_id, &other.system_id) {
            (Some(a), Some(b)) => a == b,
            // Without the identifier, the start time and the database still tell them apart.
            _ => true,
        };
        same_system
            && self.postmaster_start_micros == other.postmaster_start_micros
            && self.database_oid == other.database_oid
            && self.database == other.database
    }
}

/// Asks the server behind `client` who it is.
///
/// # Errors
/// The catalog query failed.
pub async fn identify(client: &Client) -> Result<DatabaseIdentity, tokio_postgres::Error> {
    // Microseconds since the epoch: the text form of a timestamptz depends on the session's
    // TimeZone, which two connections may set differently.
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM pg_catalog.pg_postmaster_start_time()) * 1000000)::int8, \
                    d.oid, d.datname::text \
             FROM pg_catalog.pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await?;
    // pg_control_system() exists since 9.6 and may be revoked on managed services.
    let system_id = client
        .query_one("SELECT system_identifier::text FROM pg_catalog.pg_control_system()", &[])
        .await
        .ok()
        .map(|r| r.get::<_, String>(0));
    Ok(DatabaseIdentity {
        system_id,
        postmaster_start_micros: row.get(0),
        database_oid: row.get(1),
        database: row.get(2),
    })
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
    fn same_database_needs_server_and_database_to_match() {
        let a = id(Some("7"), 100, 16384, "store");
        assert!(a.same_database(&a.clone()));
        // Another database of the same server.
        assert!(!a.same_database(&id(Some("7"), 100, 16385, "other")));
        // A restored copy of the source's cluster: same identifier, another postmaster.
        assert!(!a.same_database(&id(Some("7"), 200, 16384, "store")));
        // Another cluster.
        assert!(!a.same_database(&id(Some("8"), 100, 16384, "store")));
        // One side cannot read pg_control_system(): the rest still decides.
        assert!(a.same_database(&id(None, 100, 16384, "store")));
        assert!(!a.same_database(&id(None, 100, 16385, "other")));
    }
}
