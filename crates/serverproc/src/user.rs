//! Running server programs as the right OS user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::error::IoContext;

/// The OS identity a server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// Run as the current (non-root) user.
    Current,
    /// We are root: run as this uid/gid (a service user such as `postgres` or `mysql`).
    User {
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
    },
}

impl RunAs {
    /// Decides who runs the server: ourselves, or the OS user `user` when we are root (the
    /// servers refuse to run as root, or should not).
    ///
    /// # Errors
    /// [`Error::NoSuchUser`] when we are root and `user` does not exist.
    pub fn detect(user: &str) -> Result<Self, Error> {
        if !is_root() {
            return Ok(RunAs::Current);
        }
        lookup_user(user)
            .map(|(uid, gid)| RunAs::User { uid, gid })
            .ok_or_else(|| Error::NoSuchUser { user: user.to_owned() })
    }

    /// Applies the identity to a command.
    pub fn apply(self, cmd: &mut Command) {
        if let RunAs::User { uid, gid } = self {
            cmd.uid(uid).gid(gid);
        }
    }

    /// Hands a path we created over to the server user (no-op when not root).
    ///
    /// # Errors
    /// The chown failed.
    pub fn chown(self, path: &Path) -> Result<(), Error> {
        if let RunAs::User { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    /// Recursively hands a tree over to the server user.
    ///
    /// # Errors
    /// Reading the tree or a chown failed.
    pub fn chown_tree(self, root: &Path) -> Result<(), Error> {
        if self == RunAs::Current {
            return Ok(());
        }
        self.chown(root)?;
        if fs::symlink_metadata(root).ctx(|| format!("stat {}", root.display()))?.is_dir() {
            for entry in fs::read_dir(root).ctx(|| format!("read dir {}", root.display()))? {
                let entry = entry.ctx(|| format!("read dir {}", root.display()))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn is_root() -> bool {
    // geteuid cannot fail; std has no safe wrapper, so read it from /proc instead of `unsafe`.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Looks a user up in /etc/passwd, returning (uid, gid).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// Creates a directory that only the server user can access (mode 0700).
///
/// # Errors
/// Creating, chmod-ing or chown-ing it failed.
pub fn private_dir(path: &Path, run_as: RunAs) -> Result<(), Error> {
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .ctx(|| format!("chmod {}", path.display()))?;
    run_as.chown(path)
}

/// Writes a file only the server user can read (mode 0600): configuration holding a
/// password, for instance.
///
/// # Errors
/// Writing, chmod-ing or chown-ing it failed.
pub fn private_file(path: &Path, contents: &[u8], run_as: RunAs) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("create {}", path.display()))?;
    file.write_all(contents).ctx(|| format!("write {}", path.display()))?;
    run_as.chown(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-serverproc"), None);
    }

    #[test]
    fn a_missing_service_user_is_named() {
        if !is_root() {
            return;
        }
        let err = RunAs::detect("no-such-user-serverproc").unwrap_err();
        assert!(err.to_string().contains("`no-such-user-serverproc`"), "{err}");
    }

    #[test]
    fn private_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        private_file(&path, b"x", RunAs::Current).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }
}
