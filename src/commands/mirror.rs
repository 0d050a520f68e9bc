//! `pgmirror mirror`: keep tables of a primary mirrored onto another server.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use applier::PayloadFormat;

use crate::commands::table_args::TableArgs;
use crate::conn;
use crate::mirror::nats::NatsMirrorOptions;
use crate::mirror::{self, MirrorOptions};
use crate::shutdown::Shutdown;
use crate::target_url::{NatsUrl, TargetUrl};

/// Arguments of `pgmirror mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The primary: --source and psql's -h -p -U -d (`PG*` variables fill in the rest).
    #[command(flatten)]
    pub source: conn::SourceArgs,
    /// The replica, or the shards.
    #[command(flatten)]
    pub targets: crate::commands::shard_keys::TargetArgs,
    /// The tables to mirror.
    #[command(flatten)]
    pub tables: TableArgs,
    /// The mirror's name: its progress row on the target, and the default slot and
    /// publication names (`pgmirror_<name>`).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub name: String,
    /// The logical replication slot (default `pgmirror_<name>`).
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Skip the initial copy: stream changes from the slot's position only.
    #[arg(long)]
    pub no_initial_copy: bool,
    /// Empty target tables that already hold rows before the initial copy.
    #[arg(long)]
    pub truncate_target: bool,
    /// At start, wait (with backoff) for a source or target that cannot be reached yet, instead
    /// of failing at once: for services started before their database.
    #[arg(long)]
    pub retry_first_connect: bool,
    /// Parallel connections for the initial copy.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub copy_jobs: usize,
    /// Ask the primary for text values instead of binary ones (for exotic types).
    #[arg(long)]
    pub text: bool,
    /// Serve Prometheus metrics on /metrics and a health check on /healthz at this address:
    /// `HOST:PORT` (127.0.0.1:9187, localhost:9187) or `:PORT` for every IPv4 interface.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<crate::metrics::http::ListenAddr>,
    /// NATS target options.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `pgmirror mirror` options of a NATS target.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS: the JetStream stream to publish into (created if missing, taking subjects
    /// `<prefix>.>`).
    #[arg(long, default_value = "PGMIRROR", value_name = "NAME")]
    pub nats_stream: String,
    /// NATS: the first subject tokens; a change of table T in schema S of database D goes to
    /// `<prefix>.D.S.T`.
    #[arg(long, default_value = "pgmirror", value_name = "PREFIX")]
    pub subject_prefix: String,
    /// NATS: the payload, `json` (the object `pgmirror tail` prints) or `debezium`
    /// (Debezium's change-event envelope).
    #[arg(long, default_value = "json", value_name = "FORMAT", value_parser = parse_format)]
    pub format: PayloadFormat,
    /// NATS: replicas of a stream pgmirror creates (1 to 5; 3 in a cluster of three).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nats_replicas: usize,
    /// NATS: publish a begin and a commit message around each transaction's changes, on
    /// `<prefix>.<database>._transaction`.
    #[arg(long)]
    pub transaction_markers: bool,
}

fn parse_format(s: &str) -> Result<PayloadFormat, String> {
    match s {
        "json" => Ok(PayloadFormat::Json),
        "debezium" => Ok(PayloadFormat::Debezium),
        other => Err(format!("unknown format {other:?}: json or debezium")),
    }
}

/// Runs `pgmirror mirror` until Ctrl-C, SIGTERM or a fault that retrying cannot fix.
///
/// # Errors
/// Set-up and fatal replication errors.
pub async fn run(args: MirrorArgs) -> anyhow::Result<ExitCode> {
    let source = args.source.named_config()?;
    let target = if args.targets.sharded() {
        if let Some(shards) = args.targets.mysql()? {
            return run_mysql(args, source, shards).await;
        }
        args.targets.first()?
    } else {
        match conn::parse_target(&args.targets.target[0])? {
            TargetUrl::Postgres(target) => target,
            TargetUrl::MySql(target) => return run_mysql(args, source, vec![target]).await,
            TargetUrl::Nats(url) => return Box::pin(run_nats(args, source, url)).await,
        }
    };
    let mut opts = MirrorOptions::new(args.name, source, target, args.tables.into());
    opts.slot = args.slot;
    opts.initial_copy = !args.no_initial_copy;
    opts.truncate_target = args.truncate_target;
    opts.retry_first_connect = args.retry_first_connect;
    opts.copy_parallelism = args.copy_jobs;
    opts.binary = !args.text;
    opts.progress_bars = std::io::stderr().is_terminal();
    let _server = serve_metrics(args.metrics_addr.as_ref(), &opts.metrics).await?;
    let mut shutdown = Shutdown::on_signals();
    if args.targets.sharded() {
        let (shards, layout) = (args.targets.all()?, args.targets.layout()?);
        let opts = mirror::shards::ShardedOptions { mirror: opts, shards, layout };
        Box::pin(mirror::shards::run(&opts, &mut shutdown)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    mirror::run(&opts, &mut shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `pgmirror mirror` into MySQL/MariaDB: one database, or the shards of a sharded mirror.
async fn run_mysql(
    args: MirrorArgs,
    source: pgconn::ConnConfig,
    mut targets: Vec<applier::mysql::session::MySqlUrl>,
) -> anyhow::Result<ExitCode> {
    let sharded = args.targets.sharded();
    let layout = args.targets.layout()?;
    let mut opts = mirror::mysql::MySqlMirrorOptions::new(
        args.name,
        source,
        targets[0].clone(),
        args.tables.into(),
    );
    if sharded {
        opts.shards = std::mem::take(&mut targets);
        opts.layout = layout;
    }
    opts.slot = args.slot;
    opts.initial_copy = !args.no_initial_copy;
    opts.truncate_target = args.truncate_target;
    opts.copy_parallelism = args.copy_jobs;
    let _server = serve_metrics(args.metrics_addr.as_ref(), &opts.metrics).await?;
    let mut shutdown = Shutdown::on_signals();
    if sharded {
        Box::pin(mirror::mysql::shards::run(&opts, &mut shutdown)).await?;
    } else {
        mirror::mysql::run(&opts, &mut shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgmirror mirror` into NATS JetStream.
async fn run_nats(
    args: MirrorArgs,
    source: pgconn::ConnConfig,
    url: NatsUrl,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.truncate_target,
        "--truncate-target empties PostgreSQL tables; a NATS stream keeps its messages (purge it \
         with `nats stream purge` if that is what you want)"
    );
    let mut opts = NatsMirrorOptions::new(args.name, source, url, args.tables.into());
    opts.slot = args.slot;
    opts.initial_copy = !args.no_initial_copy;
    opts.binary = !args.text;
    opts.retry_first_connect = args.retry_first_connect;
    opts.stream = args.nats.nats_stream;
    opts.prefix = args.nats.subject_prefix;
    opts.format = args.nats.format;
    opts.replicas = args.nats.nats_replicas;
    opts.transaction_markers = args.nats.transaction_markers;
    let _server = serve_metrics(args.metrics_addr.as_ref(), &opts.metrics).await?;
    let mut shutdown = Shutdown::on_signals();
    Box::pin(mirror::nats::run(&opts, &mut shutdown)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the metrics at `--metrics-addr`, if given.
async fn serve_metrics(
    addr: Option<&crate::metrics::http::ListenAddr>,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Option<crate::metrics::http::MetricsServer>> {
    let Some(addr) = addr else { return Ok(None) };
    let server = crate::metrics::http::serve(addr, metrics.clone())
        .await
        .with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
    Ok(Some(server))
}
