//! Log set-up: `tracing` to stderr, one line per state change, `RUST_LOG` to change the level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `-v` raises the default level to debug; `RUST_LOG` wins.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests, the demo) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
