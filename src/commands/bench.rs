//! `pgmirror bench`: apply throughput against PostgreSQL's own subscriber, on throwaway
//! clusters (see the `bench` crate).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use bench::{BenchOptions, workload::Scale, workload::Workload};

/// Arguments of `pgmirror bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub workload: Vec<Workload>,
    /// Size multiplier: 1 means 100k transactions / 1M rows; CI uses a small fraction.
    #[arg(long, default_value = "1", value_name = "N")]
    pub scale: Scale,
    /// Runs of each contender on each backlog (the report shows median, min and max).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub runs: u32,
    /// Print the results as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Live-latency samples (0 skips the measurement): single-row transactions on the idle
    /// primary, each timed until visible on the target, with the CPU time per sample of the
    /// walsender, pgmirror and the target's processes.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub latency_samples: usize,
    /// Seconds one contender may take before its run counts as failed.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub timeout: u64,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run both clusters durable: `fsync = on` and `synchronous_commit = on`, as a production
    /// server (by default both are off). The report's header shows what each cluster ran with.
    #[arg(long)]
    pub durable: bool,
    /// Also run pgmirror into a throwaway MariaDB server on each streaming backlog.
    #[arg(long)]
    pub mariadb: bool,
    /// Also run pgmirror into this many shards, for each count given (comma-separated, e.g.
    /// `1,2,4`): databases on the replica cluster, each table sharded by its primary key.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub shards: Vec<usize>,
    /// Instead of the workloads: publish a backlog of single-row changes (1M at scale 1) into
    /// a throwaway NATS JetStream server, next to what a minimal client gets from the same
    /// server, and the live latency.
    #[arg(long)]
    pub nats: bool,
}

/// Runs the benchmark and prints its table (or JSON). Exits with failure when a run failed
/// or a target did not match the primary.
///
/// # Errors
/// Clusters that cannot start, a backlog that cannot be generated.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let exe = std::env::current_exe().context("locating the pgmirror executable")?;
    if args.nats {
        let opts = bench::nats::NatsBenchOptions {
            changes: args.scale.of(1_000_000, 1_000),
            pgmirror_exe: exe,
            latency_samples: args.latency_samples,
            run_timeout: std::time::Duration::from_secs(args.timeout),
            verbose: !args.quiet,
        };
        let report = bench::nats::run_nats(opts).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::nats::render_nats(&report));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = BenchOptions {
        workloads: args.workload,
        scale: args.scale,
        runs: args.runs,
        pgmirror_exe: exe,
        latency_samples: args.latency_samples,
        verbose: !args.quiet,
        run_timeout: std::time::Duration::from_secs(args.timeout),
        mariadb: args.mariadb,
        shards: args.shards,
        durable: args.durable,
    };
    let report = bench::run(opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::render(&report));
    }
    let all_verified = report.workloads.iter().flat_map(|w| &w.contenders).all(|c| c.verified);
    Ok(if all_verified { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from(["pgmirror", "bench"].iter().chain(args)).expect("parses");
        match cli.command {
            Command::Bench(args) => args,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn durable_and_store4() {
        let args = parse(&["--durable", "--workload", "store4,tiny", "--scale", "0.05"]);
        assert!(args.durable);
        assert_eq!(args.workload, [Workload::Store4, Workload::Tiny]);
        assert_eq!(args.scale.to_string(), "0.05");
        let args = parse(&[]);
        assert!(!args.durable, "not durable unless asked");
        assert_eq!(args.workload, [Workload::All]);
        assert!(Cli::try_parse_from(["pgmirror", "bench", "--durable=yes"]).is_err());
    }
}
