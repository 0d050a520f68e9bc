//! Log set-up: `tracing` to stderr, one line per state change, `RUST_LOG` to change the level.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber. `-v` raises the default level to debug; `RUST_LOG` wins.
pub fn init(verbose: u8) {
    // tokio-postgres logs every server NOTICE at info ("relation already exists, skipping").
    let default = match verbose {
        // async-nats logs each connection event and failure itself; pgmirror reports them.
        0 => "info,tokio_postgres=warn,async_nats=off",
        1 => "debug,tokio_postgres=info,async_nats=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests, the demo) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBars)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Stderr, written above the progress bars: each log line is collected, then printed with
/// the bars hidden, so a line never lands inside a bar and no bar is left half-drawn.
struct AboveBars;

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One formatted event, printed when the formatter drops it.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            crate::bars::suspend(|| {
                let _ = io::stderr().lock().write_all(&self.0);
            });
        }
    }
}
