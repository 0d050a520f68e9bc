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
mod template;
mod tls;

pub use bindir::{BINDIR_ENV, find_bindir};
pub use cluster::{AuthMethod, Cluster, ClusterBuilder, KeptCluster, LogGuard, StopMode};
pub use error::Error;
pub use serverproc::unique_name;
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
