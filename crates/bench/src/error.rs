//! What can stop a benchmark. A contender that fails does not: its failure is reported in its
//! [`RunResult`](crate::RunResult).

use std::fmt::Write as _;

/// Errors of [`run`](crate::run) and of the workloads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A throwaway cluster could not be started, reached, or given a database.
    #[error(transparent)]
    Cluster(#[from] pgcluster::Error),
    /// A statement failed.
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    /// A file or a child process.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Recording a backlog, or decoding its recording.
    #[error(transparent)]
    Recording(#[from] recording::Error),
    /// Reading a publication's tables from the catalog.
    #[error(transparent)]
    Catalog(#[from] tablesync::Error),
    /// Generating Store rows or transactions.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A connection string.
    #[error(transparent)]
    Connection(#[from] pgconn::Error),
    /// What was being done when `source` happened.
    #[error("{what}")]
    Context {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A failure of the benchmark's own: a time limit, a child that exited, a bad setting.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Wraps an error with what was being done (for `map_err`).
    pub(crate) fn context<E: Into<Error>>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
        let what = what.into();
        move |e| Error::Context { what, source: Box::new(e.into()) }
    }

    /// The error and its causes on one line: "what: why: ...".
    pub fn one_line(&self) -> String {
        let mut s = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let _ = write!(s, ": {e}");
            source = e.source();
        }
        s
    }
}
