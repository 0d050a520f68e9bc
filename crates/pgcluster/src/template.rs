//! A per-process initdb template: `initdb` runs once, every further cluster copies it.
//!
//! initdb takes about a second (it boots a single-user backend several times); copying its
//! ~40 MB result takes a few tens of milliseconds. The template is pristine (trust auth, no
//! settings): each cluster writes its own configuration into its copy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use tempfile::TempDir;

use crate::Error;
use crate::error::IoContext;
use crate::process::{self, RunAs};

struct Template {
    bindir: PathBuf,
    dir: TempDir,
}

static TEMPLATE: Mutex<Option<Template>> = Mutex::new(None);

/// Runs initdb into `data_dir` (which must not exist yet or be empty and owned by the server
/// user).
pub(crate) fn initdb(bindir: &Path, data_dir: &Path, run_as: RunAs) -> Result<(), Error> {
    let mut cmd = Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .env("LC_ALL", "C")
        .current_dir(data_dir.parent().unwrap_or(Path::new("/")));
    run_as.apply(&mut cmd);
    process::run(cmd, None)
}

/// Fills `data_dir` (to be created) with a fresh cluster, copying the process-wide template
/// when one exists for `bindir`, creating it on first use.
pub(crate) fn materialize(bindir: &Path, data_dir: &Path, run_as: RunAs) -> Result<(), Error> {
    let mut guard = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|t| t.bindir != bindir) {
        let dir = crate::cluster::base_tempdir("pgcluster-template-")?;
        run_as.chown(dir.path())?;
        let template_data = dir.path().join("data");
        process::private_dir(&template_data, run_as)?;
        initdb(bindir, &template_data, run_as)?;
        crate::cluster::register_exit_cleanup();
        *guard = Some(Template { bindir: bindir.to_path_buf(), dir });
    }
    let template = guard.as_ref().expect("template was just created");
    copy_tree(&template.dir.path().join("data"), data_dir)?;
    drop(guard);
    run_as.chown_tree(data_dir)
}

/// Removes the template (called at process exit).
pub(crate) fn remove() {
    if let Ok(mut guard) = TEMPLATE.try_lock() {
        guard.take();
    }
}

/// Copies a directory tree, keeping permission bits (fs::copy keeps them for files).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
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
}
