//! Connection strings from the command line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use replication::ConnConfig;

/// Set by `-W/--password`: ask on the terminal for passwords that no URL, `PGPASSWORD` or
/// password file provides, as psql's `-W` does.
static PROMPT: AtomicBool = AtomicBool::new(false);

/// Turns the password prompt on or off for the rest of the process.
pub fn set_prompt(on: bool) {
    PROMPT.store(on, Ordering::Relaxed);
}

/// Parses a `--source`/`--target` value. The error names the option but never echoes the
/// string, which may hold a password. With `-W`, a missing password is asked for on the
/// terminal (never echoed, never logged).
///
/// # Errors
/// A malformed connection string, or `-W` without a terminal to ask on.
pub fn parse(option: &str, value: &str) -> anyhow::Result<ConnConfig> {
    let cfg =
        ConnConfig::parse(value).with_context(|| format!("{option}: invalid connection string"))?;
    if !PROMPT.load(Ordering::Relaxed) || cfg.effective_password().is_some() {
        return Ok(cfg);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "-W/--password needs a terminal to ask for the {option} password; use PGPASSWORD or a \
         password file (PGPASSFILE) instead"
    );
    let password = rpassword::prompt_password(format!(
        "Password for {}@{} ({option}): ",
        cfg.user(),
        cfg.target()
    ))
    .with_context(|| format!("reading the {option} password"))?;
    Ok(cfg.with_password(Some(password)))
}
