//! `pgmirror replay`: apply a recording (`pgmirror record`) into a target with the mirror's
//! applier, without a live primary.

use std::path::PathBuf;
use std::process::ExitCode;

use applier::ApplierConfig;
use clap::Args;
use recording::ReplayOptions;

use crate::conn;

/// Arguments of `pgmirror replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The target to apply into.
    #[arg(long, env = "PGMIRROR_TARGET", hide_env_values = true, value_name = "URL")]
    pub target: String,
    /// The mirror name of the progress row: a second replay under the same name applies
    /// nothing.
    #[arg(long, default_value = "replay", value_name = "NAME")]
    pub name: String,
    /// Do not create the recording's tables when the target lacks them.
    #[arg(long)]
    pub no_create_tables: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Replays the recording and prints what was applied and how fast.
///
/// # Errors
/// A bad recording or a target that rejects a change.
pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let opts = ReplayOptions {
        target: conn::parse("--target", &args.target)?,
        name: args.name,
        create_tables: !args.no_create_tables,
        applier: ApplierConfig::default(),
    };
    let s = recording::replay(&args.file, &opts).await.map_err(|e| match e {
        recording::Error::SameDatabase { database, system_id } => anyhow::anyhow!(
            "--target is the database this recording was made from ({database:?} of the server \
             with system identifier {system_id}): replaying would apply its changes there a \
             second time; point --target at another database (nothing was changed)"
        ),
        e => e.into(),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "replayed {} messages: {} transactions applied, {} skipped, {} row changes in {:.2} s \
             (decoding {:.3} s), target at {}",
            s.messages,
            s.applied_txns,
            s.skipped_txns,
            s.changes,
            s.seconds,
            s.decode_seconds,
            s.last_applied.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
