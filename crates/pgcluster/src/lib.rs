//! Throwaway local PostgreSQL clusters for tests, benchmarks and `pgmirror demo`.
//!
//! A [`Cluster`] is an initdb'ed data directory in a temporary directory, served by its own
//! postmaster on a free port of 127.0.0.1 and a private Unix socket directory, configured for
//! logical replication (`wal_level = logical`, 50 WAL senders and slots, prepared
//! transactions on). It is removed when dropped. When running as root the server runs as the
//! `postgres` OS user, since initdb refuses root.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgcluster::Error> {
//! // One shared server per test process; each test uses its own database.
//! let cluster = pgcluster::shared();
//! let db = pgcluster::unique_name("mytest");
//! cluster.create_database(&db).await?;
//! let client = cluster.connect(&db).await?;
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await?;
//! # Ok(()) }
//! ```
//!
//! Starting a cluster costs one initdb per process (about a second): later clusters copy a
//! per-process template data directory instead.
#![deny(missing_docs)]

mod bindir;
mod cluster;
mod error;
mod process;
mod template;
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};

pub use bindir::{BINDIR_ENV, find_bindir};
pub use cluster::{AuthMethod, Cluster, ClusterBuilder, KeptCluster, LogGuard, StopMode};
pub use error::Error;
pub use tls::TlsConfig;

/// The cluster shared by all tests of this test process, started on first use (trust auth,
/// [`ClusterBuilder::fast_unsafe`]).
///
/// Use it for tests that only need their own database/slot/publication (see
/// [`unique_name`]); tests that stop, restart or crash a server must start their own
/// [`Cluster`]. It is removed at process exit by an `atexit` handler, and if the process is
/// killed the postmaster receives SIGQUIT through `PR_SET_PDEATHSIG` (the temporary
/// directory is then left behind in `$TMPDIR`).
///
/// # Panics
/// If the cluster cannot be started (the message says why, e.g. which package to install).
pub fn shared() -> &'static Cluster {
    cluster::SHARED.get_or_init(|| {
        let cluster = ClusterBuilder::new()
            .fast_unsafe()
            .start()
            .unwrap_or_else(|e| panic!("pgcluster: starting the shared cluster failed: {e}"));
        cluster::register_exit_cleanup();
        cluster
    })
}

/// A process-unique, valid, lower-case identifier: the sanitized `prefix` followed by the
/// process id and a counter, at most 63 bytes. Usable unquoted as a database, slot or
/// publication name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{n}", std::process::id());
    let mut name: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert(0, 'x');
    }
    name.truncate(63 - suffix.len());
    name.push_str(&suffix);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_valid() {
        let a = unique_name("My-Test");
        let b = unique_name("My-Test");
        assert_ne!(a, b);
        assert!(a.starts_with("my_test_"), "{a}");
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63);
        assert!(unique_name("9lives").starts_with("x9lives_"));
        for n in [a, b, long] {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }
}
