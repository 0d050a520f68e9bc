//! Finding and running helper programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;
use crate::error::IoContext;

/// Directories searched after `PATH`: servers live in `sbin`, which a non-root `PATH` often
/// lacks.
const EXTRA_DIRS: &[&str] =
    &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"];

/// Finds an executable by name on `PATH`, then in the usual `sbin` and `bin` directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a helper program to completion, feeding `stdin`, and fails with its output if it
/// exits unsuccessfully. Secrets are passed via stdin, never argv.
///
/// # Errors
/// [`Error::CommandFailed`] with the program's output, or [`Error::Io`] if it could not run.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Result<(), Error> {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("spawn {program}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was configured as piped");
        pipe.write_all(input).ctx(|| format!("write stdin of {program}"))?;
    }
    let out = child.wait_with_output().ctx(|| format!("wait for {program}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(Error::CommandFailed { program, status: out.status, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs() {
        assert!(find_program("sh").is_some());
        assert_eq!(find_program("no-such-program-serverproc"), None);
    }

    #[test]
    fn failures_carry_the_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read x; echo \"got $x\"; exit 3"]);
        let err = run(cmd, Some(b"input\n")).unwrap_err();
        match err {
            Error::CommandFailed { program, status, output } => {
                assert_eq!(program, "sh");
                assert_eq!(status.code(), Some(3));
                assert_eq!(output, "got input\n");
            }
            other => panic!("unexpected {other}"),
        }
        run(Command::new("true"), None).unwrap();
    }
}
