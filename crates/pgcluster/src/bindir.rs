//! Locating the PostgreSQL server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Environment variable that overrides the binary directory.
pub const BINDIR_ENV: &str = "PGMIRROR_PG_BINDIR";

/// Finds the directory holding `postgres` and `initdb`.
///
/// Order: `$PGMIRROR_PG_BINDIR`, then `PATH`, then `pg_config --bindir`, then the highest
/// version under `/usr/lib/postgresql/*/bin` (the Debian layout).
///
/// # Errors
/// [`Error::BinariesNotFound`] naming what to install when nothing is found.
pub fn find_bindir() -> Result<PathBuf, Error> {
    let mut searched = Vec::new();

    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        searched.push(format!("${BINDIR_ENV}={}", dir.display()));
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server_binaries(&dir) {
                // Resolve symlinks (e.g. /usr/local/bin/postgres -> /usr/lib/postgresql/15/bin)
                // so that psql, pg_ctl etc. are taken from the same installation.
                let real = dir.join("postgres").canonicalize().ok();
                if let Some(real_dir) = real.as_deref().and_then(Path::parent)
                    && has_server_binaries(real_dir)
                {
                    return Ok(real_dir.to_path_buf());
                }
                return Ok(dir);
            }
        }
        searched.push("PATH".to_owned());
    }

    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
        }
        searched.push("pg_config --bindir".to_owned());
    }

    if let Some(dir) = highest_debian_bindir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_owned());

    Err(Error::BinariesNotFound { searched: searched.join(", ") })
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

/// The `bin` dir of the highest numeric version under `root` that has the server binaries.
fn highest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = parse_version(&name)?;
            let bin = e.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Parses "15" or "9.6" into comparable numbers; `None` for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert!(parse_version("16").unwrap() > parse_version("15").unwrap());
        assert_eq!(parse_version("foo"), None);
    }

    #[test]
    fn picks_highest_debian_version() {
        let root = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "14", "notaversion"] {
            let bin = root.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
        }
        // 16 exists but lacks binaries, so it must be skipped.
        std::fs::create_dir_all(root.path().join("16/bin")).unwrap();
        assert_eq!(highest_debian_bindir(root.path()), Some(root.path().join("15/bin")));
    }
}
