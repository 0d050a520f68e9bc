//! Log set-up: `tracing` to stderr, one line per state change, `RUST_LOG` to change the level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `-v` raises the default level to debug; `RUST_LOG` wins.
pub fn init(verbose: u8) {
    // tokio-postgres logs every server NOTICE at info ("relation already exists, skipping").
    let default = match verbose {
        0 => "info,tokio_postgres=warn",
        1 => "debug,tokio_postgres=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests, the demo) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
