//! `pgmirror bench`: apply throughput of pgmirror against PostgreSQL's own subscriber, on
//! the same backlog, on two throwaway clusters.
//!
//! Method (see the performance reference): for each workload, the slots of every contender
//! and run are created first; then the backlog is generated while nothing consumes them,
//! ending with a sentinel row. The contenders then drain the same backlog one after another,
//! each into a fresh target database holding the same tables and base rows:
//! - `native`: a `CREATE SUBSCRIPTION` on an existing slot, timed from `ENABLE` until the
//!   sentinel is visible;
//! - `pg_recvlogical`: drains the slot to `/dev/null` (`--start -E <end LSN>`), the floor of
//!   what the primary can send;
//! - `pgmirror`: the `pgmirror` binary as a child process (`mirror --no-initial-copy`), timed
//!   from spawn until the sentinel is visible; its CPU time and peak RSS come from `/proc`.
//!
//! - `pgmirror N shards` (with [`BenchOptions::shards`]): the same, into N databases as shards.
//! - `pglogical` (when the pglogical extension is installed for the server binaries): a
//!   pglogical subscription started on a slot made before the backlog, timed from its creation
//!   until the sentinel is visible. Without the extension the report says it was skipped.
//!
//! The walsender's CPU time is sampled for each contender, and so is the CPU time of the
//! target's processes that applied the changes; every target is verified against
//! the primary table by table. A recording of each backlog (which also warms the WAL into the
//! page cache) gives the time spent decoding, to compare with pgmirror's CPU time.
//!
//! pgmirror takes part only as a process (the executable in [`BenchOptions::pgmirror_exe`])
//! and through what it leaves in the target, so this crate needs nothing of the `pgmirror`
//! package, which runs it as `pgmirror bench`.

#![deny(missing_docs)]

mod clusters;
mod error;
mod harness;
mod initial;
mod mariadb;
pub mod nats;
mod pglogical;
pub mod procstat;
mod report;
mod sentinel;
mod shards;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use clusters::ClusterSettings;
pub use error::Error;
pub use harness::run;
pub use report::{
    BenchReport, ContenderReport, DecodeShare, LatencyReport, PathCpu, RunResult, Stat,
    WorkloadReport, render,
};
use workload::{Scale, Workload};

/// Settings of a benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Workloads to run, in order.
    pub workloads: Vec<Workload>,
    /// Size multiplier.
    pub scale: Scale,
    /// Repetitions of each contender on each backlog.
    pub runs: u32,
    /// The pgmirror executable to run as a child.
    pub pgmirror_exe: PathBuf,
    /// Samples of the live-latency measurement (0 to skip it).
    pub latency_samples: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// How long one contender may take before its run counts as failed.
    pub run_timeout: Duration,
    /// Also run pgmirror into a throwaway MariaDB server (the `pgmirror-mariadb` contender).
    pub mariadb: bool,
    /// Run both clusters durable: `fsync` and `synchronous_commit` on, as a production server
    /// (otherwise both off). Backlogs are generated with `synchronous_commit = off` either way.
    pub durable: bool,
    /// Also run pgmirror into this many shards (databases on the replica cluster, each table
    /// sharded by its primary key), once per count given; empty: no sharded runs.
    pub shards: Vec<usize>,
}
