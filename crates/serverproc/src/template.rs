//! Per-process data-directory templates: a server's initialisation (`initdb`,
//! `mariadb-install-db`) runs once, every further server copies its result.
//!
//! Initialising takes seconds (it boots the server in a special mode, sometimes several
//! times); copying the result takes tens of milliseconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;

use crate::error::IoContext;
use crate::{Error, RunAs, private_dir};

/// A lazily built, process-wide template data directory. Keep it in a `static`, and call
/// [`Template::remove`] from the process's exit handler.
#[derive(Debug)]
pub struct Template {
    prefix: &'static str,
    state: Mutex<Option<(PathBuf, TempDir)>>,
}

impl Template {
    /// An empty template whose directory will be named `$TMPDIR/{prefix}XXXXXX`.
    pub const fn new(prefix: &'static str) -> Self {
        Template { prefix, state: Mutex::new(None) }
    }

    /// Fills `dest` (to be created) with a copy of the template made for `key` (the server
    /// binary or its directory), owned by the server user. On first use, or when `key`
    /// changed, `init` fills an empty private directory, owned by the server user, that
    /// becomes the template.
    ///
    /// # Errors
    /// `init`'s error, or a failed copy.
    pub fn copy_to<E: From<Error>>(
        &self,
        key: &Path,
        run_as: RunAs,
        dest: &Path,
        init: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|(k, _)| k != key) {
            let dir = tempdir(self.prefix)?;
            run_as.chown(dir.path())?;
            let data = dir.path().join("data");
            private_dir(&data, run_as)?;
            init(&data)?;
            *guard = Some((key.to_path_buf(), dir));
        }
        let (_, dir) = guard.as_ref().expect("template was just created");
        copy_tree(&dir.path().join("data"), dest)?;
        drop(guard);
        Ok(run_as.chown_tree(dest)?)
    }

    /// Deletes the template (from an exit handler: gives up if another thread holds it).
    pub fn remove(&self) {
        if let Ok(mut guard) = self.state.try_lock() {
            guard.take();
        }
    }
}

/// A new temporary directory `$TMPDIR/{prefix}XXXXXX`, deleted when dropped.
///
/// # Errors
/// Creating it failed.
pub fn tempdir(prefix: &str) -> Result<TempDir, Error> {
    tempfile::Builder::new().prefix(prefix).tempdir().ctx(|| "create a temporary directory")
}

/// Copies a directory tree, keeping permission bits (fs::copy keeps them for files).
///
/// # Errors
/// Reading the source or writing the copy failed.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    fs::create_dir(to).ctx(|| format!("create {}", to.display()))?;
    let perms = fs::metadata(from).ctx(|| format!("stat {}", from.display()))?.permissions();
    fs::set_permissions(to, perms).ctx(|| format!("chmod {}", to.display()))?;
    for entry in fs::read_dir(from).ctx(|| format!("read dir {}", from.display()))? {
        let entry = entry.ctx(|| format!("read dir {}", from.display()))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().ctx(|| format!("stat {}", src.display()))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).ctx(|| format!("readlink {}", src.display()))?;
            std::os::unix::fs::symlink(target, &dst)
                .ctx(|| format!("symlink {}", dst.display()))?;
        } else {
            fs::copy(&src, &dst).ctx(|| format!("copy {}", src.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_tree_keeps_contents_and_modes() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("sub")).unwrap();
        fs::write(src.path().join("sub/f"), b"hello").unwrap();
        fs::set_permissions(src.path().join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("sub/f", src.path().join("link")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let to = dst.path().join("copy");
        copy_tree(src.path(), &to).unwrap();
        assert_eq!(fs::read(to.join("sub/f")).unwrap(), b"hello");
        assert_eq!(fs::metadata(to.join("sub/f")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("sub/f"));
    }

    #[test]
    fn a_template_is_initialised_once_per_key() {
        static TEMPLATE: Template = Template::new("serverproc-test-template-");
        let out = tempfile::tempdir().unwrap();
        let mut inits = 0;
        for (i, key) in ["a", "a", "b"].into_iter().enumerate() {
            let dest = out.path().join(i.to_string());
            TEMPLATE
                .copy_to::<Error>(Path::new(key), RunAs::Current, &dest, |data| {
                    inits += 1;
                    fs::write(data.join("made-for"), key).ctx(|| "write")
                })
                .unwrap();
            assert_eq!(fs::read_to_string(dest.join("made-for")).unwrap(), key);
        }
        assert_eq!(inits, 2, "the second copy of `a` reuses the template");
        TEMPLATE.remove();
    }
}
