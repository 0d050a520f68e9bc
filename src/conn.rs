//! Connection strings from the command line.

use anyhow::Context;
use replication::ConnConfig;

/// Parses a `--source`/`--target` value. The error names the option but never echoes the
/// string, which may hold a password.
///
/// # Errors
/// A malformed connection string.
pub fn parse(option: &str, value: &str) -> anyhow::Result<ConnConfig> {
    ConnConfig::parse(value).with_context(|| format!("{option}: invalid connection string"))
}
